"""Compile Triton kernels for an H100 (sm_90) with Triton's own ptxas, without a GPU.

Triton's interpreter (TRITON_INTERPRET=1, how the suite runs the kernels on CPU) compiles nothing,
so a kernel that only fails in the compiler would pass every interpreted test. `compile_for_sm90`
compiles the named kernels in a subprocess (the interpreter setting of the test process turns every
``@triton.jit`` function into an interpreted one) and reports each kernel's resource usage.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile

# Exit status of the subprocess when the installed Triton has another compile API: the test skips.
API_DIFFERS = 3

# One kernel to compile: (function name in the module, {pointer argument: Triton type such as "*bf16"},
# {constexpr argument: value}, num_warps). Arguments named in neither are int32 scalars.
KernelSpec = tuple[str, dict[str, str], dict[str, object], int]


def compile_for_sm90(module: str, specs: list[KernelSpec]) -> dict[str, str]:
    """{kernel name: "REG:<registers per thread> STACK:<bytes>"} (STACK > 0 means spills; "?" when
    Triton ships no cuobjdump). Skips the calling test if this Triton's compile API differs; a
    compile error fails it with the compiler's message."""
    import pytest

    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    run = subprocess.run(
        [sys.executable, "-m", __name__, module, json.dumps(specs)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if run.returncode == API_DIFFERS:
        pytest.skip(f"this Triton's compile API differs: {run.stdout.strip()}")
    assert run.returncode == 0, run.stderr[-4000:]
    return json.loads(run.stdout.strip().splitlines()[-1])


def _resource_usage(triton, cubin: bytes) -> str:
    tool = os.path.join(os.path.dirname(triton.__file__), "backends", "nvidia", "bin", "cuobjdump")
    if not os.path.exists(tool):
        return "?"
    with tempfile.NamedTemporaryFile(suffix=".cubin", delete=False) as f:
        f.write(cubin)
    try:
        out = subprocess.run([tool, "-res-usage", f.name], capture_output=True, text=True).stdout
    finally:
        os.unlink(f.name)
    return " ".join(word for line in out.splitlines() if "REG:" in line for word in line.split()[:2])


def _main(module_name: str, specs_json: str) -> int:
    try:
        import triton
        from triton.backends.compiler import GPUTarget
        from triton.compiler import ASTSource
    except Exception as exc:
        print(exc)
        return API_DIFFERS
    module = __import__(module_name, fromlist=["_"])
    report = {}
    for name, pointers, constexprs, warps in json.loads(specs_json):
        fn = getattr(module, name)
        signature = {a: "constexpr" if a in constexprs else pointers.get(a, "i32") for a in fn.arg_names}
        try:
            source = ASTSource(
                fn=fn,
                signature=signature,
                constexprs={(fn.arg_names.index(k),): v for k, v in constexprs.items()},
            )
        except TypeError as exc:
            print(exc)
            return API_DIFFERS
        kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": warps})
        report[name] = _resource_usage(triton, kernel.asm["cubin"])
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(_main(sys.argv[1], sys.argv[2]))
