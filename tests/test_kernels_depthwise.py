"""The row-streaming depthwise kernel (kernels/depthwise.py): every window it takes (1-7 rows, any
width, stride and dilation along W, uneven pads) against torch at fp32, fp16 and int8, with shapes
that no block divides, size-1 and empty dims, NaN and inf; in engines with a fused epilogue; and
its autotuning space. Every kernel these tests run is also compiled for sm_90 (compiles_for_hopper)."""
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trident.compiler.autotune import problem_of
from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates, full_space, prune
from trident.compiler.build import build_engine
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.testing import run_engine
from trident.kernels.depthwise import depthwise_rows, heuristic_config, pack_weight, streams_rows

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"

# (N, C, H, W, KH, KW, pads (top, left, bottom, right), stride_w, dil_w, (BLOCK_M, BLOCK_N, ROWS, warps))
CASES = {
    "3x3": (2, 24, 9, 11, 3, 3, (1, 1, 1, 1), 1, 1, (8, 16, 4, 1)),
    "3x3_wide_blocks": (1, 40, 13, 6, 3, 3, (1, 1, 1, 1), 1, 1, (32, 64, 16, 2)),
    "7x7": (2, 20, 10, 9, 7, 7, (3, 3, 3, 3), 1, 1, (16, 32, 4, 1)),
    "5x5_stride_w": (1, 16, 7, 13, 5, 5, (2, 2, 2, 2), 2, 1, (8, 16, 2, 1)),
    "3x3_dilated_w": (1, 12, 6, 14, 3, 3, (1, 2, 1, 2), 1, 2, (8, 16, 4, 1)),
    "even_uneven_pads": (1, 12, 10, 5, 4, 2, (1, 0, 2, 1), 1, 1, (8, 16, 4, 1)),
    "1xk": (2, 8, 1, 15, 1, 7, (0, 3, 0, 3), 1, 1, (8, 16, 1, 1)),
    "kx1": (1, 9, 12, 3, 6, 1, (2, 0, 3, 0), 1, 1, (8, 16, 8, 1)),
    "one_pixel_one_channel": (1, 1, 1, 1, 3, 3, (1, 1, 1, 1), 1, 1, (8, 16, 1, 1)),
    "no_padding": (1, 17, 8, 8, 3, 3, (0, 0, 0, 0), 1, 1, (8, 16, 4, 1)),
}


def _reference(x, w, b, pads, stride_w, dil_w):
    top, left, bottom, right = pads
    return F.conv2d(F.pad(x.double(), (left, right, top, bottom)), w.double(), None if b is None else b.double(),
                    (1, stride_w), 0, (1, dil_w), groups=x.shape[1])


def _run(x, w, b, pads, stride_w, dil_w, blocks, out_dtype=None):
    n, c, h, wd = x.shape
    kh, kw = w.shape[2:]
    oh = h + pads[0] + pads[2] - kh + 1
    ow = (wd + pads[1] + pads[3] - dil_w * (kw - 1) - 1) // stride_w + 1
    y = torch.empty((n, c, oh, ow), device=x.device, dtype=out_dtype or x.dtype, memory_format=torch.channels_last)
    bm, bn, rows, warps = blocks
    cfg = LaunchConfig.of(warps, 1, BLOCK_M=bm, BLOCK_N=bn, ROWS=rows)
    return depthwise_rows(x.contiguous(memory_format=torch.channels_last), pack_weight(w), b, y, pads[:2], stride_w,
                          dil_w, cfg)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("case", sorted(CASES))
def test_rows_kernel_matches_torch(case, dtype):
    n, c, h, wd, kh, kw, pads, stride_w, dil_w, blocks = CASES[case]
    g = torch.Generator().manual_seed(hash(case) % 1000)
    x = torch.randn(n, c, h, wd, generator=g).to(DEVICE, dtype)
    w = (torch.randn(c, 1, kh, kw, generator=g) / kh).to(DEVICE, dtype)
    b = torch.randn(c, generator=g).to(DEVICE, dtype)
    got = _run(x, w, b, pads, stride_w, dil_w, blocks)
    ref = _reference(x, w, b, pads, stride_w, dil_w)
    assert got.shape == ref.shape
    tol = 1e-5 if dtype == torch.float32 else 2e-3  # fp16: the output's rounding
    torch.testing.assert_close(got.double(), ref, rtol=tol, atol=tol * ref.abs().max().item())


def test_rows_kernel_propagates_nan_and_inf_to_the_windows_that_see_them():
    x = torch.randn(1, 4, 9, 10, device=DEVICE)
    x[0, 1, 4, 5] = float("nan")
    x[0, 2, 0, 0] = float("inf")
    w = torch.rand(4, 1, 3, 3, device=DEVICE) + 0.5  # positive: an inf stays inf
    got = _run(x, w, None, (1, 1, 1, 1), 1, 1, (8, 16, 4, 1))
    ref = _reference(x, w, None, (1, 1, 1, 1), 1, 1)
    assert torch.equal(got.isnan(), ref.isnan()) and got.isnan().sum() == 9
    assert torch.equal(got.isinf(), ref.isinf()) and got.isinf().sum() == 4
    finite = ref.isfinite()
    torch.testing.assert_close(got.double()[finite], ref[finite], rtol=1e-5, atol=1e-5)


def test_rows_kernel_int8_is_exact():
    g = torch.Generator().manual_seed(3)
    x = torch.randint(-128, 128, (2, 19, 7, 9), generator=g, dtype=torch.int8).to(DEVICE)
    w = torch.randint(-128, 128, (19, 1, 3, 3), generator=g, dtype=torch.int8).to(DEVICE)
    assert pack_weight(w).dtype == torch.int8
    got = _run(x, w, None, (1, 1, 1, 1), 1, 1, (8, 16, 4, 1), out_dtype=torch.int32)
    assert torch.equal(got.long(), _reference(x.float(), w.float(), None, (1, 1, 1, 1), 1, 1).round().long())


def test_rows_kernel_with_no_images_launches_nothing():
    x = torch.randn(0, 8, 5, 5, device=DEVICE)
    got = _run(x, torch.randn(8, 1, 3, 3, device=DEVICE), None, (1, 1, 1, 1), 1, 1, (8, 16, 4, 1))
    assert got.shape == (0, 8, 5, 5)


def test_rows_kernel_refuses_windows_taller_than_its_queue():
    x = torch.randn(1, 4, 12, 12, device=DEVICE)
    with pytest.raises(ValueError, match="a window of 8 rows"):
        _run(x, torch.randn(4, 1, 8, 3, device=DEVICE), None, (0, 1, 0, 1), 1, 1, (8, 16, 4, 1))


def test_rows_kernel_refuses_tensors_not_in_nhwc():
    x = torch.randn(1, 4, 6, 6, device=DEVICE)  # NCHW-contiguous
    y = torch.empty(1, 4, 6, 6, device=DEVICE, memory_format=torch.channels_last)
    with pytest.raises(ValueError, match="channels-last"):
        depthwise_rows(x, pack_weight(torch.randn(4, 1, 3, 3, device=DEVICE)), None, y, (1, 1), 1, 1)


def test_the_rows_kernel_takes_the_windows_it_was_measured_faster_on():
    assert streams_rows(3, 3, 1, 1, 56) and streams_rows(3, 3, 1, 1, 112)
    assert not streams_rows(3, 3, 2, 1, 56) and not streams_rows(3, 3, 1, 2, 56)
    assert not streams_rows(7, 7, 1, 1, 56) and not streams_rows(5, 5, 1, 1, 56)
    assert not streams_rows(3, 3, 1, 1, 28)


class _InvertedResidual(nn.Module):
    """MobileNet's depthwise step: conv 3x3 (groups = C) + bias, ReLU6, plus the block's input."""

    def __init__(self, c: int, k: int):
        super().__init__()
        self.dw = nn.Conv2d(c, c, k, padding=k // 2, groups=c)

    def forward(self, x):
        return x + F.relu6(self.dw(x))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_runs_a_3x3_depthwise_on_the_rows_kernel_with_its_epilogue(precision):
    torch.manual_seed(0)
    model = _InvertedResidual(24, 3).eval()
    x = torch.randn(2, 24, 11, 59)  # rows wide enough to stream (MIN_WIDTH), not a multiple of the blocks
    engine = build_engine(model, precision, example_inputs=(x,))
    (conv,) = [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "depthwise"]
    assert "= depthwise_row_step(" in conv.source
    assert "relu6 = clip(dw" in conv.source and "add = add(" in conv.source  # fused: run per output row
    fresh = torch.randn(2, 24, 11, 59)
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0].float().cpu()
    tol = 1e-5 if precision == "fp32" else 2e-3
    torch.testing.assert_close(got, ref, rtol=tol, atol=tol * ref.abs().max().item())


@pytest.mark.parametrize("k, width", [(7, 57), (3, 20)])
def test_engine_keeps_other_depthwise_convs_on_the_pixel_tile(k, width):
    model = _InvertedResidual(16, k).eval()
    engine = build_engine(model, "fp32", example_inputs=(torch.randn(1, 16, 5, width),))
    sources = [s.source for s in engine.plan.kernel_steps()]
    assert any("depthwise_conv2d_nhwc_tile(" in s for s in sources)
    assert not any("depthwise_row_step(" in s for s in sources)


def test_rows_problems_tune_over_configs_the_kernel_accepts():
    torch.manual_seed(0)
    engine = build_engine(_InvertedResidual(144, 3).eval(), "fp16", example_inputs=(torch.randn(2, 144, 56, 56),))
    (step,) = [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "depthwise"]
    problem = problem_of(step.source)
    assert problem["tile"] == "depthwise_row_step" and (problem["OH"], problem["OW"]) == (56, 56)
    base = step.config
    assert base == heuristic_config(2, 56, 56, 144)
    for level in ("fast", "full"):
        configs = candidates(problem, base, level)
        assert configs[0] == base and len(configs) > 2
        assert all(config_error(c, problem, base) is None for c in configs)
    assert len(prune(full_space(problem, base), problem)) < len(full_space(problem, base))
