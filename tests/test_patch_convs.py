"""Patch embeddings (a conv whose kernel is its stride) run as one GEMM over the image's patches
(compiler/passes/patches.py): the rewrite's rules, and engines against torch / onnxruntime at
fp32, fp16 and int8, through fx and ONNX, with odd sizes, batch 1, one channel, non-square patches."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from onnx_util import check_engine, make_model, node, torch_steps
from trident.compiler.autotune import problem_of
from trident.compiler.build import BuildTrace, build_engine
from trident.compiler.passes.patches import lower_patch_convs
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import run_engine

pytestmark = pytest.mark.compiles_for_hopper

TOLERANCE = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 2e-2)}


class Stem(nn.Module):
    """A ViT-style stem: patch conv, tokens (flatten + transpose), a class token, LayerNorm."""

    def __init__(self, c=3, dim=16, patch=(4, 4), bias=True):
        super().__init__()
        self.conv = nn.Conv2d(c, dim, patch, patch, bias=bias)
        self.cls = nn.Parameter(torch.randn(1, 1, dim))
        self.norm = nn.LayerNorm(dim)

    def forward(self, x):
        tokens = self.conv(x).flatten(2).transpose(1, 2)
        return self.norm(torch.cat([self.cls.expand(x.shape[0], -1, -1), tokens], 1))


def templates(engine) -> list[str]:
    return [problem_of(s.source).get("template") for s in engine.plan.kernel_steps()]


def conv_graph(c=3, h=8, w=12, kernel=(4, 4), strides=None, pads=(0, 0, 0, 0), dilations=(1, 1), groups=1):
    b = GraphBuilder("patches")
    x = b.input("x", TensorType((2, c, h, w), torch.float32))
    weight = b.constant(torch.randn(6, c // groups, *kernel), "w")
    y = b.add1("conv", [x, weight], {"strides": list(strides or kernel), "pads": list(pads),
                                     "dilations": list(dilations), "groups": groups})
    return b.finish([y])


def test_patch_convs_become_one_matmul():
    ops = [n.op for n in lower_patch_convs(conv_graph()).nodes]
    assert "conv" not in ops and ops.count("matmul") == 1
    assert [n.op for n in lower_patch_convs(conv_graph(kernel=(2, 3))).nodes].count("matmul") == 1


@pytest.mark.parametrize("case", [dict(strides=(2, 2)), dict(pads=(1, 1, 1, 1)), dict(dilations=(2, 2)),
                                  dict(c=8), dict(c=4, groups=2), dict(h=10), dict(kernel=(1, 1))])
def test_other_convs_stay_convs(case):
    # overlapping or padded windows, dilation, wide inputs, groups, a size the patches do not
    # divide (the conv drops the rest: not a reshape), 1x1 kernels (the conv tile is a GEMM there)
    assert "conv" in [n.op for n in lower_patch_convs(conv_graph(**case)).nodes]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("c, size, patch, batch, bias", [(3, (8, 12), (4, 4), 2, True), (1, (9, 10), (3, 5), 1, False),
                                                         (4, (14, 14), (7, 7), 3, True)])
def test_stem_engine_matches_torch(c, size, patch, batch, bias, precision):
    torch.manual_seed(0)
    model = Stem(c, 24, patch, bias).eval()
    x = torch.randn(batch, c, *size)
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=(x,), trace=trace)
    assert torch_steps(engine) == [] and "conv" not in templates(engine)
    assert templates(engine).count("matmul") == 1
    # the tokens are the GEMM's rows: no copy between it and the LayerNorm
    assert len(engine.plan.kernel_steps()) <= (3 if precision == "fp32" else 4)
    fresh = torch.randn(batch, c, *size)
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0]
    rtol, atol = TOLERANCE[precision]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol)


class TubeletStem(nn.Module):
    """A video transformer's stem (VideoMAE, ViViT): [B, T, C, H, W] frames, t x p x q tubelets."""

    def __init__(self, c=3, dim=16, tubelet=(2, 4, 4)):
        super().__init__()
        self.conv = nn.Conv3d(c, dim, tubelet, tubelet)

    def forward(self, video):
        return self.conv(video.permute(0, 2, 1, 3, 4)).flatten(2).transpose(1, 2) * 2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("c, frames, size, tubelet, batch", [(3, 4, (8, 12), (2, 4, 4), 2), (1, 3, (6, 5), (3, 2, 5), 1)])
def test_tubelet_convs_become_one_matmul(c, frames, size, tubelet, batch, precision):
    torch.manual_seed(2)
    model = TubeletStem(c, 24, tubelet).eval()
    x = torch.randn(batch, frames, c, *size)
    engine = build_engine(model, precision, example_inputs=(x,))
    assert torch_steps(engine) == [] and templates(engine).count("matmul") == 1
    fresh = torch.randn(batch, frames, c, *size)
    fresh[0, 0, 0, 1, 1] = float("inf")  # its tubelet only: every channel of one token
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0]
    rtol, atol = TOLERANCE[precision]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol, equal_nan=True)
    assert (~got[0].isfinite()).any(dim=1).sum() == 1


def test_nan_and_inf_pixels_reach_their_patches_only():
    torch.manual_seed(1)
    model = nn.Conv2d(3, 5, 4, 4).eval()
    x = torch.randn(2, 3, 8, 8)
    engine = build_engine(model, "fp32", example_inputs=(x,))
    x[0, 1, 5, 2] = float("nan")
    x[1, 0, 0, 7] = float("inf")
    with torch.no_grad():
        ref = model(x)
    got = run_engine(engine, x)[0]
    torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5, equal_nan=True)
    # one patch of each image, every output channel: NaN in the first, +-inf in the second
    assert got[0].isnan().sum() == 5 and got[1].isinf().sum() == 5 and got.isfinite().sum() == got.numel() - 10


def test_int8_stem_is_calibrated_and_close():
    torch.manual_seed(2)
    model = nn.Sequential(nn.Conv2d(3, 16, 4, 4), nn.ReLU(), nn.Flatten(), nn.Linear(16 * 4, 10)).eval()
    calibration = [torch.randn(4, 3, 8, 8) for _ in range(4)]
    engine = build_engine(model, "int8", (calibration[0],), calibration=calibration)
    assert torch_steps(engine) == []
    x = torch.randn(4, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    got = run_engine(engine, x)[0].float()
    assert ((got - ref).norm() / ref.norm()) < 5e-2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_onnx_patch_conv(precision):
    rng = np.random.default_rng(3)
    w = rng.standard_normal((8, 3, 2, 4)).astype(np.float32)
    b = rng.standard_normal(8).astype(np.float32)
    model = make_model([node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[2, 4], strides=[2, 4]),
                        node("Relu", ["c"], ["y"])], {"x": (np.float32, [2, 3, 6, 12])}, ["y"], {"w": w, "b": b})
    engine = check_engine(model, precision=precision, tol=TOLERANCE[precision])
    assert torch_steps(engine) == [] and "conv" not in templates(engine)


# ----------------------------------------------- transposed: each pixel writes its block ----
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("c, oc, size, kernel, batch, bias, lowered", [
    (6, 4, (5, 7), (2, 2), 2, True, True),     # a U-Net decoder's 2 x 2 upsampling
    (3, 5, (3, 2), (4, 4), 1, False, True),    # DPT's 4 x 4 reassembly
    (4, 4, (3, 3), (2, 3), 1, True, True),     # non-square blocks
    (4, 6, (5, 6), (3, 3), 2, True, False),    # overlapping blocks (stride 2): stays in torch
])
def test_patch_conv_transposes_become_one_matmul(c, oc, size, kernel, batch, bias, lowered, precision):
    torch.manual_seed(0)
    stride = kernel if lowered else (2, 2)
    model = nn.Sequential(nn.ConvTranspose2d(c, oc, kernel, stride, bias=bias), nn.ReLU()).eval()
    x = torch.randn(batch, c, *size)
    engine = build_engine(model, precision, example_inputs=(x,))
    assert torch_steps(engine) == ([] if lowered else ["conv_transpose"])
    if lowered:
        assert templates(engine).count("matmul") == 1
    fresh = torch.randn(batch, c, *size)
    fresh[0, 0, 1, 1] = float("nan")  # reaches its own block only, in every output channel
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0]
    rtol, atol = TOLERANCE[precision]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol, equal_nan=True)
