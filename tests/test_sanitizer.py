"""The bounds sanitizer (compiler/sanitizer.py) catches loads and stores outside a launch's tensors,
names the kernel, the nearest argument and the offset, and lets in-bounds kernels through."""
import pytest
import torch

from trident.compiler import config, sanitizer
from trident.compiler.errors import OutOfBoundsError, TridentError

import triton  # noqa: E402  (after trident: the interpreter is switched on without a GPU)
import triton.language as tl  # noqa: E402

pytestmark = pytest.mark.skipif(not config.INTERPRET, reason="checks Triton's interpreter")


@triton.jit
def copy_kernel(src, dst, N: tl.constexpr, BLOCK: tl.constexpr, MASKED: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    if MASKED:
        tl.store(dst + offs, tl.load(src + offs, mask=offs < N), mask=offs < N)
    else:
        tl.store(dst + offs, tl.load(src + offs))


@triton.jit
def shifted_store_kernel(dst, SHIFT: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(dst + offs + SHIFT, offs.to(tl.float32))


@triton.jit
def strided_kernel(src, dst, COLS: tl.constexpr, STRIDE: tl.constexpr):
    # reads COLS columns of each of 4 rows through the row stride
    r = tl.arange(0, 4)[:, None]
    c = tl.arange(0, COLS)[None, :]
    tl.store(dst + r * COLS + c, tl.load(src + r * STRIDE + c))


@pytest.fixture(autouse=True)
def sanitized():
    with sanitizer.active():
        yield


def inside(big: torch.Tensor, start: int, n: int) -> torch.Tensor:
    """A view of n elements of `big`: accesses just past it stay in valid memory."""
    return big[start:start + n]


def test_in_bounds_kernels_pass():
    src, dst = torch.randn(100), torch.empty(100)
    copy_kernel[(4,)](src, dst, 100, BLOCK=32, MASKED=True)
    assert torch.equal(src, dst)
    copy_kernel[(2,)](src[:64], dst[:64], 64, BLOCK=32, MASKED=False)


def test_unmasked_store_past_the_end_is_caught_naming_kernel_argument_and_offset():
    big = torch.zeros(256)
    before = len(sanitizer.findings())
    with pytest.raises(OutOfBoundsError) as info:
        copy_kernel[(4,)](torch.randn(128), inside(big, 64, 100), 100, BLOCK=32, MASKED=False)
    message = str(info.value)
    assert isinstance(info.value, TridentError)
    assert "copy_kernel" in message and "program (3, 0, 0)" in message
    # the 4th program reads src[96:128] (in bounds) and stores dst[96:128]: 28 lanes past the end
    assert "store" in message and "28 of 32 live lanes" in message and "dst (float32[100]" in message
    assert len(sanitizer.findings()) == before + 1
    assert big[164:].eq(0).all()  # nothing was written past the view


def test_store_reports_the_offset_past_the_end():
    big = torch.zeros(64)
    with pytest.raises(OutOfBoundsError) as info:
        shifted_store_kernel[(1,)](inside(big, 0, 16), SHIFT=3, BLOCK=16)
    message = str(info.value)
    assert "store of 4 bytes" in message and "3 of 16 live lanes" in message
    assert "dst (float32[16]" in message and "element offset 16, 0 elements past its end" in message
    assert big[16:].eq(0).all()


def test_store_before_the_start_is_caught():
    big = torch.zeros(64)
    with pytest.raises(OutOfBoundsError, match="element offset -2, 2 elements before its start"):
        shifted_store_kernel[(1,)](inside(big, 8, 16), SHIFT=-2, BLOCK=16)
    assert big[:8].eq(0).all()


def test_gap_between_the_rows_of_a_strided_view_is_out_of_bounds():
    base = torch.randn(4, 8)
    out = torch.empty(4, 2)
    strided_kernel[(1,)](base[:, :2], out, COLS=2, STRIDE=8)  # exactly the view's elements
    assert torch.equal(out, base[:, :2])
    wide = torch.empty(4, 4)
    with pytest.raises(OutOfBoundsError, match="between its elements"):
        strided_kernel[(1,)](base[:, :2], wide, COLS=4, STRIDE=8)  # columns 2, 3 are not in the view


def test_masked_off_lanes_are_not_checked():
    src, dst = torch.randn(10), torch.empty(10)
    copy_kernel[(1,)](src, dst, 10, BLOCK=64, MASKED=True)  # 54 masked lanes point past the end
    assert torch.equal(src, dst)


def test_off_means_no_checks():
    big = torch.zeros(64)
    with sanitizer.active(False):
        shifted_store_kernel[(1,)](inside(big, 0, 16), SHIFT=3, BLOCK=16)
    assert big[16:19].tolist() == [13.0, 14.0, 15.0]


def test_an_engine_kernel_writing_out_of_bounds_fails_the_run(tmp_path):
    """A generated kernel whose store mask is wrong: the engine run raises, naming the kernel."""
    from trident.compiler.build import compile_graph, engine_from
    from trident.compiler.ir import GraphBuilder, TensorType

    b = GraphBuilder("bad_mask")
    x = b.input("x", TensorType((5, 7), torch.float32))
    g = b.finish([b.add1("relu", [x])])
    program = compile_graph(g, "fp32")
    (step,) = [s for s in program.steps if s.kind == "kernel"]
    store_mask = "mask=(xmask))"  # the store's (the load's has `other=0` after it)
    assert step.kernel.source.count(store_mask) == 1
    step.kernel.source = step.kernel.source.replace(store_mask, "mask=xoffs < 36)")
    engine = engine_from(program, kernel_dir=tmp_path)
    with pytest.raises(OutOfBoundsError, match=rf"{step.kernel.name}.*out0"):
        engine(torch.randn(5, 7))
