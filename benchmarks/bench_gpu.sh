#!/usr/bin/env bash
# The GPU session's command, one prepared script: build both kernel packages with CUDA for sm_90 (+PTX),
# smoke-test them with CUDA_LAUNCH_BLOCKING=1, run compute-sanitizer (racecheck, memcheck, synccheck) on
# the smallest cases, run the GPU tests, time them with benchmarks/bench_ops.py --device cuda, and
# collect Nsight Compute metrics of the scan kernels (bank conflicts, occupancy) when ncu is there, then
# time the scan with the forward's B/C tile staged one chunk ahead (two tiles, the default) against one
# tile staged between barriers (MAMBA_CUDA_FWD_TILES=1).
# Run from anywhere; it works in the repository root.
#
#   bash benchmarks/bench_gpu.sh                 # build smoke sanitize test bench ncu tiles (in that order)
#   bash benchmarks/bench_gpu.sh build smoke     # any subset of the stages, in the order given
#   bash benchmarks/bench_gpu.sh bench           # builds first if the CUDA kernels do not import
#
# The device tool stops a command after 10 minutes, and the whole script keeps to DEADLINE seconds
# (default 570): each stage gets min(its own timeout, the time left) and is skipped when too little is
# left. If the build is slow, split it in two calls made back to back (the machine keeps the built
# kernels while it stays warm; a fresh machine rebuilds in the bench stage):
#   bash benchmarks/bench_gpu.sh build smoke sanitize test
#   bash benchmarks/bench_gpu.sh bench ncu
#
# Logs go to LOG_DIR (default: $OUT on the device machine, else /tmp/bench_gpu-logs): build.log (the
# compiler output; the terminal shows a summary), smoke.log, sanitize-<tool>.log, test.log, bench.md
# (the tables, ready to paste into benchmarks/RESULTS.md), bench.err (tracebacks of failed
# measurements, if any), ncu.csv and tiles-<1|2>.md.
#
# Knobs (environment): PYTHON (python3), DEADLINE (570), SMOKE_TIMEOUT (90), SANITIZE_TIMEOUT (70 per
# tool), TEST_TIMEOUT (180), BENCH_TIMEOUT (240), NCU_TIMEOUT (90), TILES_TIMEOUT (120), BENCH_ARGS (extra bench_ops.py
# options, e.g. "--preset s16"), UPSTREAM_PATH (passed as --upstream-path, see bench_ops.py),
# TORCH_CUDA_ARCH_LIST (9.0; the build adds +PTX), MAX_JOBS (16 parallel compiles), NVCC_THREADS (4).
set -uo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT" || exit 1
PY=${PYTHON:-python3}
LOG_DIR=${LOG_DIR:-${OUT:-/tmp/bench_gpu-logs}}
DEADLINE=${DEADLINE:-570}
mkdir -p "$LOG_DIR"
# Import the packages (videomamba too, which is not pip-installed here) from the source tree, whatever
# pip's editable install did: the compiled .so files land in the tree.
export PYTHONPATH="$ROOT/causal-conv1d:$ROOT/mamba:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
export PYTHONUNBUFFERED=1
BUILD_TRIED=0

left() { echo $((DEADLINE - SECONDS)); }
# Seconds for a stage: its own limit, cut to what is left of the deadline.
budget() { local want=$1 l; l=$(left); echo $((l < want ? l : want)); }
stamp() { echo "== $* ($(date -u '+%Y-%m-%d %H:%M:%S') UTC, ${SECONDS} s into the script)"; }

kernels_import() { "$PY" -c "import causal_conv1d._C_cuda, mamba_ssm._C_cuda" >/dev/null 2>&1; }

build() {
    # Switch names from causal-conv1d/causal_conv1d/build.py (read by both setup.py files):
    # <PREFIX>_FORCE_CUDA_BUILD builds the CUDA extension even if detection fails; it honours TORCH_CUDA_ARCH_LIST.
    export MAMBA_FORCE_CUDA_BUILD=TRUE CAUSAL_CONV1D_FORCE_CUDA_BUILD=TRUE
    export TORCH_CUDA_ARCH_LIST=${TORCH_CUDA_ARCH_LIST:-9.0}
    export MAX_JOBS=${MAX_JOBS:-16} NVCC_THREADS=${NVCC_THREADS:-4}
    # causal-conv1d first: mamba's setup.py uses its build rules. --no-deps/--no-index: the machine is offline.
    BUILD_TRIED=1
    for pkg in causal-conv1d mamba; do
        stamp "build $pkg"
        local start=$SECONDS
        if ! timeout -k 10 "$(budget 600)" "$PY" -m pip install --no-build-isolation --no-deps --no-index -v -e "$pkg" \
            >>"$LOG_DIR/build.log" 2>&1; then
            echo "BUILD FAILED: $pkg after $((SECONDS - start)) s; the end of $LOG_DIR/build.log:"
            tail -n 40 "$LOG_DIR/build.log"
            return 1
        fi
        echo "built $pkg in $((SECONDS - start)) s"
    done
    grep -h "building kernels" "$LOG_DIR/build.log" | sort -u
    if ! kernels_import; then
        echo "BUILD DONE BUT THE CUDA KERNELS DO NOT IMPORT:"
        "$PY" -c "import causal_conv1d._C_cuda, mamba_ssm._C_cuda"
        return 1
    fi
    echo "CUDA kernels import"
}

run_tests() {
    local t
    t=$(budget "${TEST_TIMEOUT:-180}")
    if ((t < 30)); then
        echo "SKIPPED the tests: ${t} s left of DEADLINE=${DEADLINE}"
        return 1
    fi
    stamp "GPU tests (timeout ${t} s)"
    # --continue-on-collection-errors: a test module whose optional dependency is missing here must not
    # stop -x before the kernel tests run.
    timeout -k 10 "$t" "$PY" -m pytest -m gpu -x -q -p no:cacheprovider --continue-on-collection-errors \
        causal-conv1d/tests mamba/tests videomamba/tests 2>&1 | tee "$LOG_DIR/test.log"
    local rc=${PIPESTATUS[0]}
    ((rc == 124)) && echo "TESTS TIMED OUT after ${t} s"
    return "$rc"
}

bench() {
    ensure_built || echo "Benchmarking whatever backends exist."
    local t
    t=$(budget "${BENCH_TIMEOUT:-240}")
    if ((t < 60)); then
        echo "SKIPPED the benchmark: ${t} s left of DEADLINE=${DEADLINE}"
        return 1
    fi
    local extra=()
    [[ -n ${UPSTREAM_PATH:-} ]] && extra+=(--upstream-path "$UPSTREAM_PATH")
    stamp "bench_ops.py --device cuda ${BENCH_ARGS:-} (timeout ${t} s)"
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of options
    timeout -k 10 "$t" "$PY" benchmarks/bench_ops.py --device cuda ${BENCH_ARGS:-} "${extra[@]}" \
        2> >(tee "$LOG_DIR/bench.err" >&2) | tee "$LOG_DIR/bench.md"
    local rc=${PIPESTATUS[0]}
    ((rc == 124)) && echo "BENCHMARK TIMED OUT after ${t} s"
    return "$rc"
}

ensure_built() {
    if ! kernels_import && ((!BUILD_TRIED)); then
        echo "The CUDA kernels do not import (a fresh machine?): building first."
        build || return 1
    fi
}

smoke() {
    ensure_built || return 1
    local t
    t=$(budget "${SMOKE_TIMEOUT:-90}")
    ((t < 20)) && { echo "SKIPPED the smoke test: ${t} s left"; return 1; }
    stamp "smoke test, CUDA_LAUNCH_BLOCKING=1 (timeout ${t} s)"
    CUDA_LAUNCH_BLOCKING=1 timeout -k 10 "$t" "$PY" benchmarks/gpu_smoke.py 2>&1 | tee "$LOG_DIR/smoke.log"
    return "${PIPESTATUS[0]}"
}

sanitize() {
    ensure_built || return 1
    local sanitizer tool t rc status=0
    sanitizer=$(command -v compute-sanitizer || ls /usr/local/cuda*/bin/compute-sanitizer 2>/dev/null | head -n 1)
    if [[ -z $sanitizer ]]; then
        echo "SKIPPED compute-sanitizer: not installed"
        return 0
    fi
    for tool in racecheck synccheck memcheck; do
        t=$(budget "${SANITIZE_TIMEOUT:-70}")
        ((t < 20)) && { echo "SKIPPED $tool: ${t} s left"; status=1; continue; }
        stamp "compute-sanitizer --tool $tool on gpu_smoke.py --tiny (timeout ${t} s)"
        # Triton is not under test here: the dispatchers are forced to cuda/ref by the smoke script.
        timeout -k 10 "$t" "$sanitizer" --tool "$tool" --error-exitcode 3 "$PY" benchmarks/gpu_smoke.py --tiny \
            >"$LOG_DIR/sanitize-$tool.log" 2>&1
        rc=$?
        tail -n 4 "$LOG_DIR/sanitize-$tool.log"
        ((rc == 0)) || { echo "$tool: exit status $rc (see sanitize-$tool.log)"; status=1; }
    done
    return "$status"
}

ncu_metrics() {
    ensure_built || return 1
    local ncu t
    ncu=$(command -v ncu || ls /usr/local/cuda*/bin/ncu 2>/dev/null | head -n 1)
    if [[ -z $ncu ]]; then
        echo "SKIPPED ncu: not installed"
        return 0
    fi
    t=$(budget "${NCU_TIMEOUT:-90}")
    ((t < 30)) && { echo "SKIPPED ncu: ${t} s left"; return 1; }
    stamp "ncu: shared-memory bank conflicts and occupancy of the scan kernels (timeout ${t} s)"
    # One launch of each scan kernel at the smoke test's shapes.
    timeout -k 10 "$t" "$ncu" --kernel-name regex:scan_ --launch-count 4 --csv \
        --metrics l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_ld.sum,l1tex__data_bank_conflicts_pipe_lsu_mem_shared_op_st.sum,l1tex__data_pipe_lsu_wavefronts_mem_shared.sum,sm__warps_active.avg.pct_of_peak_sustained_active,launch__registers_per_thread,launch__occupancy_limit_registers,launch__occupancy_limit_shared_mem,gpu__time_duration.sum \
        "$PY" benchmarks/gpu_smoke.py >"$LOG_DIR/ncu.csv" 2>&1
    local rc=$?
    grep -E '"scan_|Metric' "$LOG_DIR/ncu.csv" | head -n 40
    return "$rc"
}

fwd_tiles() {
    ensure_built || return 1
    local t tiles status=0
    t=$(budget "${TILES_TIMEOUT:-120}")
    ((t < 40)) && { echo "SKIPPED the forward-tile comparison: ${t} s left"; return 1; }
    for tiles in 1 2; do
        stamp "selective scan, s16 bf16, MAMBA_CUDA_FWD_TILES=$tiles (timeout $((t / 2)) s)"
        MAMBA_CUDA_FWD_TILES=$tiles timeout -k 10 $((t / 2)) "$PY" benchmarks/bench_ops.py --device cuda \
            --ops selective_scan --preset s16 --dtypes bf16 --ref-max-batch 0 2>&1 | tee "$LOG_DIR/tiles-$tiles.md"
        ((PIPESTATUS[0] == 0)) || status=1
    done
    return "$status"
}

stamp "start: logs in $LOG_DIR"
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv,noheader || true
nvcc --version | tail -n 2 || true
"$PY" -c "import sys, torch; print('python', sys.version.split()[0], '| torch', torch.__version__, '| CUDA', torch.version.cuda)"

stages=("$@")
((${#stages[@]})) || stages=(build smoke sanitize test bench ncu tiles)
status=0
for stage in "${stages[@]}"; do
    case $stage in
        build) build || status=1 ;;
        smoke) smoke || status=1 ;;
        sanitize) sanitize || status=1 ;;
        test) run_tests || status=1 ;;
        bench) bench || status=1 ;;
        ncu) ncu_metrics || status=1 ;;
        tiles) fwd_tiles || status=1 ;;
        *) echo "unknown stage '$stage' (build, smoke, sanitize, test, bench, ncu, tiles)"; exit 2 ;;
    esac
done
stamp "done (exit status $status)"
exit "$status"
