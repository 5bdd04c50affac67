"""The CUDA emulator catches the bugs it exists for: each test breaks a copy of the selective-scan
CUDA sources on purpose (text substitution before the emulator compiles it) and checks that a
small emulated scan then fails, while the same build with no mutation enabled passes.

Mutations (all in one build, chosen at launch by CUDA_EMU_MUTATION):
1. the backward's dB/dC reduction rows single- instead of double-buffered: a warp that runs ahead
   overwrites rows that other warps are still summing (a race only a drifting schedule shows);
2. the forward's barrier between staging the B/C tile and using it removed (with the next
   chunk's tile staged during the state loop, the only barrier per chunk);
3. an off-by-one tail: rows written one step past the end of the sequence (a global-memory write
   out of bounds, seen by the poisoned guards around the tensors);
4. the backward's adjoint carries cleared one element too far (a shared-memory write out of
   bounds, seen by the emulator's guard zones);
5. the forward's next B/C tile staged into the buffer the current chunk is reading (one buffer
   where two are needed).
Every test builds against the CPU emulator (marker ``slow``; CUDA_EMU_TESTS=0 skips).
"""

from __future__ import annotations

import os

import pytest
import torch

from causal_conv1d.kernel_infra.testing import emu_build
from causal_conv1d.kernel_infra.testing.kernel_backends import Guard, emulated_module, mutated_module

pytestmark = pytest.mark.slow

MUTATIONS = {
    "selective_scan_bwd.cuh": [
        (
            "float* red = sh.red + (n & 1) * (2 * warps * kTileStride);",
            "float* red = sh.red + (emu::mutation() == 1 ? 0 : (n & 1)) * (2 * warps * kTileStride);",
        ),
        (
            "for (int n = lane; n < N; n += 32) sh.rcarry[n] = 0.f;",
            "for (int n = lane; n < N + (emu::mutation() == 4); n += 32) sh.rcarry[n] = 0.f;",
        ),
    ],
    "selective_scan_fwd.cuh": [
        (
            "    // chunk, whose buffer now receives the next tile.\n    __syncthreads();",
            "    // chunk, whose buffer now receives the next tile.\n    if (emu::mutation() != 2) __syncthreads();",
        ),
        (
            "float* next_b = tiles + (prefetch ? ((j + 1) & 1) * tile_floats : 0);",
            "float* next_b = tiles + (prefetch ? ((j + (emu::mutation() != 5)) & 1) * tile_floats : 0);",
        ),
    ],
    "scan_common.cuh": [
        (
            "if (t0 + k < len) row[t0 + k] = from_f32<T>(vals[k]);",
            "if (t0 + k < len + (emu::mutation() == 3)) row[t0 + k] = from_f32<T>(vals[k]);",
        )
    ],
}


@pytest.fixture(scope="module")
def mutants():
    if os.environ.get("CUDA_EMU_TESTS", "1") == "0":
        pytest.skip("CUDA_EMU_TESTS=0")
    reason = emu_build.available()
    if reason is not None:
        pytest.skip(reason)
    return mutated_module("mamba_ssm", MUTATIONS)


def _inputs(seed=0, batch=1, dim=4, dstate=4, seqlen=300):
    """A scan that covers a full chunk and a tail chunk, with 4 warps (channels) per block."""
    g = torch.Generator().manual_seed(seed)
    u = torch.randn(batch, dim, seqlen, generator=g)
    delta = 0.5 * torch.rand(batch, dim, seqlen, generator=g)
    A = -0.5 * torch.rand(dim, dstate, generator=g)
    B = torch.randn(batch, 1, dstate, seqlen, generator=g)
    C = torch.randn(batch, 1, dstate, seqlen, generator=g)
    D = torch.randn(dim, generator=g)
    z = torch.randn(batch, dim, seqlen, generator=g)
    bias = 0.5 * torch.rand(dim, generator=g)
    dout = torch.randn(batch, dim, seqlen, generator=g)
    return u, delta, A, B, C, D, z, bias, dout


def _scan(module, inputs) -> tuple[dict[str, torch.Tensor], list[str]]:
    """Forward and backward through the module's bindings with every tensor guarded: the results,
    and the names of tensors whose surroundings were written."""
    guard = Guard()
    u, delta, A, B, C, D, z, bias, dout = inputs
    batch, dim, seqlen = u.shape
    rows = {name: guard(name, t) for name, t in dict(u=u, delta=delta, B=B, C=C, z=z, dout=dout).items()}
    flat = {name: guard(name, t, rows=False) for name, t in dict(A=A, D=D, bias=bias).items()}
    nc = module.num_chunks(seqlen)
    out = guard("out", torch.zeros_like(u))
    states = guard("states", torch.zeros(batch, dim, nc, A.shape[1]), rows=False)
    args = (rows["u"], rows["delta"], flat["A"], rows["B"], rows["C"], flat["D"], rows["z"], flat["bias"], True, False)
    module.fwd(*args, out, states)
    grads = dict(
        du=guard("du", torch.zeros_like(u)),
        ddelta=guard("ddelta", torch.zeros_like(u)),
        dA=guard("dA", torch.zeros_like(A), rows=False),
        dB=guard("dB", torch.zeros_like(B), rows=False),
        dC=guard("dC", torch.zeros_like(C), rows=False),
        dD=guard("dD", torch.zeros_like(D), rows=False),
        dz=guard("dz", torch.zeros_like(u)),
        ddelta_bias=guard("ddelta_bias", torch.zeros_like(bias), rows=False),
    )
    module.bwd(*args, rows["dout"], states, *grads.values(), None)
    results = dict(out=out.clone(), states=states.clone(), **{k: v.clone() for k, v in grads.items()})
    return results, guard.check()


def _differences(results, expected) -> list[str]:
    return [name for name, t in results.items() if not torch.allclose(t, expected[name], rtol=1e-5, atol=1e-5)]


@pytest.fixture(scope="module")
def expected(mutants):
    """The unmutated kernels' results (CUDA_EMU_MUTATION unset), from the suite's own emulator build."""
    results, written = _scan(emulated_module("mamba_ssm"), _inputs())
    assert written == [] and all(torch.isfinite(t).all() for t in results.values())
    return results


def test_mutant_build_without_mutation_matches(mutants, expected, monkeypatch):
    monkeypatch.setenv("CUDA_EMU_MUTATION", "0")
    results, written = _scan(mutants, _inputs())
    assert written == [] and _differences(results, expected) == []


@pytest.mark.parametrize("mutation", [1, 2, 5], ids=["single_buffer_red", "missing_barrier", "single_buffer_tile"])
def test_race_is_caught(mutants, expected, mutation, monkeypatch):
    monkeypatch.setenv("CUDA_EMU_MUTATION", str(mutation))
    results, _ = _scan(mutants, _inputs())
    assert _differences(results, expected), "the emulator ran the racy kernel as if it were correct"


def test_global_write_past_the_end_is_caught(mutants, expected, monkeypatch):
    monkeypatch.setenv("CUDA_EMU_MUTATION", "3")
    _, written = _scan(mutants, _inputs())
    assert {"out", "du", "ddelta", "dz"} <= set(written)


def test_shared_write_past_the_end_is_caught(mutants, expected, monkeypatch):
    monkeypatch.setenv("CUDA_EMU_MUTATION", "4")
    with pytest.raises(RuntimeError, match="shared memory written out of bounds"):
        _scan(mutants, _inputs())


def test_forward_with_one_tile_matches(mutants, expected, monkeypatch):
    """Where two B/C tiles do not fit the device's shared memory, the forward stages one tile per
    chunk between two barriers instead of prefetching: bit-identical results."""
    monkeypatch.setenv("CUDA_EMU_MUTATION", "0")
    monkeypatch.setenv("CUDA_EMU_SMEM_LIMIT", str(12 * 1024))
    plan = mutants.launch_plan(4, 1, 4, 300)
    assert plan["fwd_tiles"] == 1 and plan["fwd_warps"] == 4
    u, delta, A, B, C, D, z, bias, _ = _inputs()
    out, states = torch.zeros_like(u), torch.zeros(1, 4, mutants.num_chunks(300), 4)
    mutants.fwd(u, delta, A, B, C, D, z, bias, True, False, out, states)
    assert torch.equal(out, expected["out"]) and torch.equal(states, expected["states"])


def test_launch_plan_follows_the_device_shared_memory(mutants, monkeypatch):
    """launch_plan and the launches use the device's opt-in shared memory (the emulator's
    CUDA_EMU_SMEM_LIMIT): N = 40 fits 8 backward warps on an H100, 4 on an A100."""
    monkeypatch.setenv("CUDA_EMU_SMEM_LIMIT", str(227 * 1024))
    h100 = mutants.launch_plan(64, 1, 40, 300)
    monkeypatch.setenv("CUDA_EMU_SMEM_LIMIT", str(163 * 1024))
    a100 = mutants.launch_plan(64, 1, 40, 300)
    assert h100["smem_limit"] == 227 * 1024 and a100["smem_limit"] == 163 * 1024
    # Two forward tiles (181 KB at N = 40) fit an H100, not an A100, which stages one at a time.
    assert h100["fwd_tiles"] == 2 and a100["fwd_tiles"] == 1 and a100["fwd_smem"] <= 163 * 1024
    # At N = 36 two tiles would fit an A100 only with 4 warps (fewer threads than a chunk's steps,
    # no overlap): one tile with 8 warps instead.
    assert mutants.launch_plan(64, 1, 36, 300)["fwd_tiles"] == 1
    assert h100["bwd_warps"] == 8 and a100["bwd_warps"] == 4
    assert a100["bwd_smem"] <= 163 * 1024 < h100["bwd_smem"]
    monkeypatch.setenv("CUDA_EMU_SMEM_LIMIT", str(48 * 1024))
    u, delta, A, B, C, D, z, bias, _ = _inputs(dstate=64, seqlen=8)
    with pytest.raises(RuntimeError, match="needs more shared memory"):
        mutants.fwd(u, delta, A, B, C, D, z, bias, True, False, torch.empty_like(u), torch.empty(1, 4, 1, 64))
