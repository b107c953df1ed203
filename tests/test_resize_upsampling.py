"""Resizes run in the pointwise kernels, as torch and onnxruntime compute them, infinities and NaN
included: nearest and half-pixel linear upsampling by whole factors as broadcasts and products
(compiler/passes/resize.py), every other static resize through tables of its taps
(compiler/passes/resample.py); crop-and-resize and heavy antialiasing stay one node torch runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from trident.compiler import build_engine
from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch, run_engine

from onnx_util import model_of

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)


def torch_steps(engines) -> list[str]:
    return [s.node.op for e in engines for s in e.plan.steps if s.kind == "torch"]


def resamples(engines) -> int:
    """How many kernels compute a resample (a kernel is named after its ops)."""
    return sum("resample" in s.name for e in engines for s in e.plan.steps if s.kind == "kernel")


# how: "broadcast" (whole factors: views and products the kernels fuse), "tables" (any other
# resize: its taps looked up in tables, compiler/passes/resample.py), "identity"
@pytest.mark.parametrize("kwargs, how", [
    (dict(scale_factor=2, mode="nearest"), "broadcast"),              # an FPN's upsampling
    (dict(scale_factor=(3, 2), mode="nearest-exact"), "broadcast"),   # half-pixel coordinates
    (dict(size=(7, 15), mode="nearest"), "broadcast"),                # the same, given as a size
    (dict(scale_factor=1.5, mode="nearest"), "tables"),               # not a whole factor
    (dict(size=(3, 2), mode="nearest"), "tables"),                    # downsampling
    (dict(size=(9, 4), mode="nearest-exact"), "tables"),
    (dict(scale_factor=2, mode="bilinear"), "broadcast"),             # a decoder's upsampling
    (dict(scale_factor=(3, 4), mode="bilinear"), "broadcast"),
    (dict(size=(14, 5), mode="bilinear"), "broadcast"),               # one axis resized
    (dict(size=(7, 5), mode="bilinear"), "identity"),                 # to its own size
    (dict(size=(7, 5), mode="bicubic", align_corners=True), "identity"),
    (dict(scale_factor=2, mode="bilinear", align_corners=True), "tables"),  # DPT's fusion stage
    (dict(size=(11, 3), mode="bilinear"), "tables"),                  # up one axis, down the other
    (dict(size=(3, 2), mode="bilinear"), "tables"),
    (dict(scale_factor=2, mode="bicubic"), "tables"),
    (dict(size=(12, 9), mode="bicubic", align_corners=True), "tables"),
    (dict(scale_factor=(1.7, 0.6), mode="bicubic"), "tables"),
])
@pytest.mark.parametrize("with_nonfinite", [False, True])
def test_torch_interpolate(kwargs, how, with_nonfinite):
    x = torch.randn(2, 3, 7, 5)
    if with_nonfinite:
        x.view(-1)[[3, 17, 40, 66]] = torch.tensor([float("inf"), float("nan"), float("-inf"), 1e30])
    x = x.to(DEVICE)

    def fn(x):
        return F.interpolate(x * 2, **kwargs) + 1

    got, reports = compile_with_reports(fn, x)
    # A resize to its own size is the identity. (torch's kernels still read neighbours at a weight
    # of 0 there, so an infinity turns them NaN.)
    want = x * 2 + 1 if how == "identity" else fn(x)
    # An infinity or a NaN reaches only outputs torch gives a non-finite value too, and every
    # output torch keeps finite matches. (torch gives some more: its kernels read neighbours at a
    # weight of 0 or of 1e-8 as their float32 coordinates round, its CUDA kernels also along an axis
    # they leave its size, and an infinity times 0 is NaN.)
    assert not (want.isfinite() & ~got.isfinite()).any()
    assert (~got.isfinite()).any() == (~want.isfinite()).any()
    finite = want.isfinite()
    # (torch computes its coordinates in float32, trident's tables and weights are float64 rounded)
    torch.testing.assert_close(got[finite], want[finite], rtol=1e-5, atol=1e-5)
    assert ops_in_torch(reports) == []
    assert (resamples(e for r in reports for e in r.engines()) > 0) == (how == "tables")


@pytest.mark.parametrize("mode, size", [("linear", 13), ("trilinear", (3, 8, 2)), ("nearest", (5, 1, 7))])
def test_other_ranks_and_fp16(mode, size):
    x = torch.randn(2, 3, 9) if mode == "linear" else torch.randn(1, 2, 4, 3, 5)
    x = x.to(DEVICE)

    def fn(x):
        return F.interpolate(x, size=size, mode=mode).relu()

    for precision, tol in (("fp32", 1e-5), ("fp16", 2e-2)):
        got, reports = compile_with_reports(fn, x, precision=precision)
        torch.testing.assert_close(got.float(), fn(x), rtol=tol, atol=tol)
        assert ops_in_torch(reports) == [] and resamples(e for r in reports for e in r.engines())


@pytest.mark.parametrize("mode", ["nearest", "bilinear", "linear"])
def test_infinities_and_nan_reach_the_outputs_torch_gives_them_to(mode):
    # bilinear at the first row: torch clamps the coordinate to 0 and reads x[0] and, weighted 0,
    # x[1], so an infinity there makes NaN; elsewhere it mixes its two taps only
    x = torch.randn(2, 3, 6, 5) if mode != "linear" else torch.randn(2, 3, 9)
    x.view(-1)[[1, 7, 12, 20, 33]] = torch.tensor([float("inf"), float("nan"), -0.0, float("-inf"), 1e30])
    x = x.to(DEVICE)

    def fn(x):
        return F.interpolate(x, scale_factor=2, mode=mode)

    got, reports = compile_with_reports(fn, x)
    torch.testing.assert_close(got, fn(x), rtol=1e-6, atol=1e-6, equal_nan=True)
    assert ops_in_torch(reports) == []


def onnx_resize(shape, scales, coordinates, nearest_mode, mode="nearest", **attrs):
    out = [int(n * s) for n, s in zip(shape, scales)]
    inits = [numpy_helper.from_array(np.array(scales, np.float32), "scales"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode=mode,
                          coordinate_transformation_mode=coordinates, nearest_mode=nearest_mode, **attrs),
         helper.make_node("Add", ["r", "one"], ["y"])],
        "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return model_of(graph, 18)


# how: as in test_torch_interpolate, or "torch" (the resize stays one, which torch runs)
@pytest.mark.parametrize("scales, coordinates, nearest_mode, mode, attrs, how", [
    ((1, 1, 2, 2), "half_pixel", "round_prefer_floor", "nearest", {}, "broadcast"),   # ONNX's defaults
    ((1, 2, 3, 1), "asymmetric", "floor", "nearest", {}, "broadcast"),
    ((1, 1, 4, 4), "pytorch_half_pixel", "round_prefer_ceil", "nearest", {}, "broadcast"),
    ((1, 1, 3, 3), "asymmetric", "round_prefer_ceil", "nearest", {}, "tables"),   # rounds up from k + 2/3
    ((1, 1, 2, 2), "align_corners", "round_prefer_floor", "nearest", {}, "tables"),
    ((1, 1, 0.6, 0.5), "half_pixel", "ceil", "nearest", {}, "tables"),
    ((1, 1, 2, 2), "half_pixel", "round_prefer_floor", "linear", {}, "broadcast"),
    ((1, 1, 3, 2), "pytorch_half_pixel", "round_prefer_floor", "linear", {}, "broadcast"),
    ((1, 1, 2, 2), "asymmetric", "round_prefer_floor", "linear", {}, "tables"),
    ((1, 1, 1.6, 0.5), "half_pixel_symmetric", "round_prefer_floor", "linear", {}, "tables"),
    ((1, 1, 2, 3), "half_pixel", "round_prefer_floor", "cubic", {"cubic_coeff_a": -0.5}, "tables"),
    ((1, 1, 1.6, 1.5), "half_pixel", "round_prefer_floor", "cubic", {"exclude_outside": 1}, "tables"),
    ((1, 1, 0.6, 0.5), "half_pixel", "round_prefer_floor", "linear", {"antialias": 1}, "tables"),
    ((1, 1, 0.2, 0.25), "half_pixel", "round_prefer_floor", "cubic", {"antialias": 1}, "torch"),  # 400 taps
])
def test_onnx_resize_matches_onnxruntime(scales, coordinates, nearest_mode, mode, attrs, how):
    ort = pytest.importorskip("onnxruntime")
    shape = (2, 3, 10, 8) if min(scales) < 0.5 else (2, 3, 5, 4)
    model = onnx_resize(shape, scales, coordinates, nearest_mode, mode, **attrs)
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    engine = build_engine(model, "fp32")
    (got,) = run_engine(engine, torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    assert torch_steps([engine]) == (["resize"] if how == "torch" else [])
    assert (resamples([engine]) > 0) == (how == "tables")


@pytest.mark.parametrize("shape, out", [
    ((2, 3, 5, 5), 3), ((2, 3, 2, 1), (3, 2)), ((2, 3, 7, 9), (4, 5)), ((1, 2, 60, 60), (7, 6)),
    ((2, 3, 13), 5),  # 1-D
])
def test_adaptive_average_pools_with_unequal_windows(shape, out):
    """As resamples with window tables (compiler/frontend/fx/pooling.py's _adaptive_average): torch's
    values, and its infinities and NaN where its windows hold them."""
    pool = F.adaptive_avg_pool2d if len(shape) == 4 else F.adaptive_avg_pool1d
    x = torch.randn(*shape)
    x.view(-1)[[2, 5]] = torch.tensor([float("inf"), float("nan")])
    x = x.to(DEVICE)

    def fn(x):
        return pool(x, out) * 2

    for precision, tol in (("fp32", 1e-5), ("fp16", 2e-2)):
        got, reports = compile_with_reports(fn, x, precision=precision)
        torch.testing.assert_close(got.float(), fn(x), rtol=tol, atol=tol, equal_nan=True)
        assert ops_in_torch(reports) == [] and resamples(e for r in reports for e in r.engines())


DENSE_HEADS = {
    # the decode head upsamples every stage to the first stage's size (x2, and x1: an identity)
    "segformer": ("SegformerForSemanticSegmentation", dict(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
        num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=32, num_labels=5), "logits", set()),
    # 4 x 4 and 2 x 2 transposed convs reassemble the tokens; its fusion stage's bilinear
    # resizes use align_corners (tap tables)
    "dpt": ("DPTForDepthEstimation", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16, reassemble_factors=[4, 2]), "predicted_depth", set()),
    # pyramid pooling: adaptive pools of the last stage (to 1, 2 and 3: windows of unequal size),
    # each resized back with bilinear to its size, the stages resized to the first's and fused
    "upernet": ("UperNetForSemanticSegmentation", dict(
        backbone_config={"model_type": "convnext", "hidden_sizes": [16, 24, 32, 40], "depths": [1, 1, 1, 1],
                         "out_features": ["stage1", "stage2", "stage3", "stage4"]},
        hidden_size=16, auxiliary_in_channels=32, num_labels=3, pool_scales=[1, 2, 3]), "logits", set()),
}


@pytest.mark.parametrize("name", sorted(DENSE_HEADS))
def test_dense_prediction_heads_of_real_models(name):
    t = pytest.importorskip("transformers")
    cls, config, field, left_in_torch = DENSE_HEADS[name]
    config_cls = getattr(t, cls.replace("ForSemanticSegmentation", "Config").replace("ForDepthEstimation", "Config"))
    torch.manual_seed(0)
    model = getattr(t, cls)(config_cls(**config)).eval().to(DEVICE)

    def fn(x):
        return getattr(model(pixel_values=x), field)

    size = 64 if name == "upernet" else 32  # (its last stage: 2 x 2, pooled to 3 x 3)
    x = torch.randn(2, 3, size, size, device=DEVICE)
    got, reports = compile_with_reports(fn, x)
    with torch.no_grad():
        torch.testing.assert_close(got, fn(x), rtol=1e-4, atol=1e-5)
    assert set(ops_in_torch(reports)) == left_in_torch
