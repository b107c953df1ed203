"""The sm_90 compile check (compiler/target_check.py) finds what the interpreter lets through:
a kernel that reads, after its loop, a name the loop's body bound runs in Triton's interpreter and
is refused by Triton's compiler; the same kernel with the store inside the loop compiles."""
import importlib.util

import pytest
import torch

from trident.compiler import config
from trident.compiler.target_check import LaunchRecorder, compile_for_target

# (its kernel that does not compile is the point: the suite's own check leaves this module out)
pytestmark = pytest.mark.compiles_for_hopper(False)

KERNEL = '''
import triton
import triton.language as tl


@triton.jit
def kernel(x, y, N: tl.constexpr, BLOCK: tl.constexpr):
    for start in range(0, N, BLOCK):
        offs = start + tl.arange(0, BLOCK)
        v = tl.load(x + offs, mask=offs < N)
{store}
'''
INSIDE = "        tl.store(y + offs, v * 2, mask=offs < N)"
AFTER = "    tl.store(y + offs, v * 2, mask=offs < N)"  # offs and v were bound in the loop


def run_and_compile(tmp_path, store: str):
    path = tmp_path / f"loop_{len(store)}.py"  # (@triton.jit reads its source from a file)
    path.write_text(KERNEL.format(store=store))
    spec = importlib.util.spec_from_file_location(f"trident_kernels.{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    x, y = torch.randn(40), torch.empty(40)
    recorder = LaunchRecorder()
    with recorder.active():
        module.kernel[(1,)](x, y, N=40, BLOCK=16)
    (launch,) = recorder.launches
    assert dict(launch.types) == {"x": "*fp32", "y": "*fp32"}
    assert dict(launch.constexprs) == {"N": 40, "BLOCK": 16}
    return compile_for_target(recorder.launches)


@pytest.mark.skipif(not config.INTERPRET, reason="records the interpreter's launches")
def test_a_name_bound_in_a_loop_and_read_after_it_does_not_compile(tmp_path):
    (failure,) = run_and_compile(tmp_path, AFTER)
    assert "is not defined" in failure.error and failure.function == "kernel"
    assert run_and_compile(tmp_path, INSIDE) == []
