"""GridSample of 4-D inputs in the pointwise kernels (compiler/codegen/grid_sample.py) against
torch's grid_sample: bilinear and nearest, every padding mode, both corner conventions, grid
points far outside [-1, 1] and NaN, odd sizes, one-pixel inputs, fp16; through torch.compile
(F.grid_sample; transformers' Deformable DETR) and ONNX GridSample (against onnxruntime). Bicubic
and 5-D inputs run in torch.
The bounds sanitizer is on (conftest): no grid makes a lane read outside the input."""
from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, compile_with_reports, ops_in_torch, relative_error

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
MODES = list(itertools.product(["linear", "nearest"], ["zeros", "border", "reflection"], [False, True]))


def sample_graph(shape, grid_shape, mode, padding, align, dtype=torch.float32):
    b = GraphBuilder("grid_sample")
    x = b.input("x", TensorType(tuple(shape), dtype))
    grid = b.input("grid", TensorType(tuple(grid_shape), dtype))
    out = b.add1("grid_sample", [x, grid], {"mode": mode, "padding_mode": padding, "align_corners": align})
    return b.finish([b.add1("mul", [out, out])])  # (an elementwise op after it fuses behind it)


def grid_points(shape, rng, spread=1.6):
    """Points over [-spread, spread]: inside, on the edges and outside the image."""
    return (torch.rand(shape, generator=rng) * 2 - 1) * spread


@pytest.mark.parametrize("mode, padding, align", MODES)
@pytest.mark.parametrize("shape, grid_shape", [((2, 3, 7, 9), (2, 5, 6, 2)), ((1, 2, 1, 1), (1, 3, 4, 2)),
                                               ((1, 1, 13, 2), (1, 1, 17, 2))])
def test_against_the_reference(shape, grid_shape, mode, padding, align, rng):
    x, grid = torch.randn(shape, generator=rng), grid_points(grid_shape, rng)
    engine = assert_matches_reference(sample_graph(shape, grid_shape, mode, padding, align), [x, grid])
    assert [s.kind for s in engine.plan.steps] == ["kernel"]


@pytest.mark.parametrize("mode, padding, align", MODES)
def test_far_points_and_nan(mode, padding, align, rng):
    """Points a hundred images away and NaN: bilinear NaN gives NaN, as torch; nothing reads
    outside the input (the sanitizer)."""
    grid = grid_points((1, 4, 5, 2), rng, spread=150.0)
    grid[0, 0, 0, 0] = float("nan")
    grid[0, 1, 1, 1] = float("inf")
    x = torch.randn(1, 2, 6, 5, generator=rng)
    want = F.grid_sample(x, grid, mode={"linear": "bilinear"}.get(mode, mode), padding_mode=padding,
                         align_corners=align)
    graph = sample_graph((1, 2, 6, 5), (1, 4, 5, 2), mode, padding, align)
    from trident.compiler.testing import compile_and_run
    _, (got,) = compile_and_run(graph, [x, grid])
    finite = torch.isfinite(grid).all(-1)[:, None]  # (torch's own value at inf is its kernel's)
    torch.testing.assert_close(torch.where(finite, got.cpu(), 0), torch.where(finite, want * want, 0),
                               rtol=1e-5, atol=1e-5, equal_nan=True)


def test_fp16(rng):
    x, grid = torch.randn(2, 4, 9, 11, generator=rng), grid_points((2, 7, 8, 2), rng)
    assert_matches_reference(sample_graph((2, 4, 9, 11), (2, 7, 8, 2), "linear", "zeros", False), [x, grid],
                             precision="fp16")


def test_through_torch_compile(rng):
    """Deformable DETR's form: bilinear, zeros, align_corners=False, on a value map from a conv."""
    conv = torch.nn.Conv2d(3, 8, 3, padding=1).eval().to(DEV)

    def sample(x, grid):
        return F.grid_sample(conv(x), grid, mode="bilinear", padding_mode="zeros", align_corners=False)

    x, grid = torch.randn(2, 3, 10, 12, generator=rng).to(DEV), grid_points((2, 6, 7, 2), rng).to(DEV)
    got, reports = compile_with_reports(sample, x, grid)
    torch.testing.assert_close(got, sample(x, grid), rtol=1e-5, atol=1e-5)
    assert ops_in_torch(reports) == []


def test_bicubic_runs_in_torch(rng):
    x, grid = torch.randn(1, 2, 5, 5, generator=rng).to(DEV), grid_points((1, 3, 3, 2), rng).to(DEV)
    fn = lambda a, g: F.grid_sample(a, g, mode="bicubic", align_corners=False)  # noqa: E731
    got, reports = compile_with_reports(fn, x, grid)
    torch.testing.assert_close(got, fn(x, grid))
    assert ops_in_torch(reports) == ["grid_sample"]


@pytest.mark.parametrize("mode, padding, align", [("bilinear", "zeros", 0), ("nearest", "border", 1),
                                                  ("bilinear", "reflection", 0)])
def test_onnx_grid_sample_against_onnxruntime(mode, padding, align):
    model = make_model([node("GridSample", ["x", "g"], mode=mode, padding_mode=padding, align_corners=align)],
                       {"x": (np.float32, [1, 3, 6, 7]), "g": (np.float32, [1, 4, 5, 2])}, ["y"], opset=16)
    rng = np.random.default_rng(8)
    feeds = {"x": rng.standard_normal([1, 3, 6, 7]).astype(np.float32),
             "g": rng.uniform(-1.3, 1.3, [1, 4, 5, 2]).astype(np.float32)}
    engine = check_engine(model, feeds)
    assert torch_steps(engine) == []


def test_deformable_detr_through_torch_compile():
    """transformers' Deformable DETR (tiny, a ResNet backbone): its multi-scale deformable
    attention samples the value maps with F.grid_sample; every op in a kernel."""
    t = pytest.importorskip("transformers")
    backbone = t.ResNetConfig(embedding_size=16, hidden_sizes=[16, 32, 32, 32], depths=[1, 1, 1, 1],
                              out_features=["stage2", "stage3", "stage4"])
    config = t.DeformableDetrConfig(
        use_timm_backbone=False, backbone_config=backbone, use_pretrained_backbone=False, d_model=32,
        encoder_layers=1, decoder_layers=1, encoder_attention_heads=2, decoder_attention_heads=2,
        encoder_ffn_dim=64, decoder_ffn_dim=64, num_queries=10, num_feature_levels=3,
        encoder_n_points=2, decoder_n_points=2)
    torch.manual_seed(0)
    model = t.DeformableDetrModel(config).eval().to(DEV)
    x = torch.randn(1, 3, 64, 64).to(DEV)

    def detect(pixels):
        return model(pixel_values=pixels).last_hidden_state

    with torch.no_grad():
        want = detect(x)
    got, reports = compile_with_reports(detect, x)
    assert relative_error(got, want) < 1e-5
    assert ops_in_torch(reports) == []
