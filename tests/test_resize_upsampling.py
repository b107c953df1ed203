"""Nearest and half-pixel linear upsampling by whole factors run in the pointwise kernels
(compiler/passes/resize.py), as torch and onnxruntime compute them, infinities and NaN included;
every other resize stays one node that torch runs."""
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


@pytest.mark.parametrize("kwargs, as_broadcast", [
    (dict(scale_factor=2, mode="nearest"), True),              # an FPN's upsampling
    (dict(scale_factor=(3, 2), mode="nearest-exact"), True),   # half-pixel coordinates
    (dict(size=(7, 15), mode="nearest"), True),                # the same, given as a size
    (dict(scale_factor=1.5, mode="nearest"), False),           # not a whole factor
    (dict(size=(3, 2), mode="nearest"), False),                # downsampling
    (dict(scale_factor=2, mode="bilinear"), True),             # a decoder's upsampling
    (dict(scale_factor=(3, 4), mode="bilinear"), True),
    (dict(size=(14, 5), mode="bilinear"), True),               # one axis resized
    (dict(size=(7, 5), mode="bilinear"), True),                # to its own size: nothing to do
    (dict(size=(7, 5), mode="bicubic", align_corners=True), True),
    (dict(scale_factor=2, mode="bilinear", align_corners=True), False),  # not periodic
    (dict(scale_factor=2, mode="bicubic"), False),
])
def test_torch_interpolate(kwargs, as_broadcast):
    x = torch.randn(2, 3, 7, 5, device=DEVICE)

    def fn(x):
        return F.interpolate(x * 2, **kwargs) + 1

    got, reports = compile_with_reports(fn, x)
    # (torch computes linear coordinates in float32, the weights here are float64 rounded)
    torch.testing.assert_close(got, fn(x), rtol=1e-5, atol=1e-5)
    assert ops_in_torch(reports) == ([] if as_broadcast else ["resize"])


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


def onnx_resize(shape, scales, coordinates, nearest_mode, mode="nearest"):
    out = [int(n * s) for n, s in zip(shape, scales)]
    inits = [numpy_helper.from_array(np.array(scales, np.float32), "scales"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode=mode,
                          coordinate_transformation_mode=coordinates, nearest_mode=nearest_mode),
         helper.make_node("Add", ["r", "one"], ["y"])],
        "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return model_of(graph, 18)


@pytest.mark.parametrize("scales, coordinates, nearest_mode, mode, as_broadcast", [
    ((1, 1, 2, 2), "half_pixel", "round_prefer_floor", "nearest", True),   # ONNX's defaults
    ((1, 2, 3, 1), "asymmetric", "floor", "nearest", True),
    ((1, 1, 4, 4), "pytorch_half_pixel", "round_prefer_ceil", "nearest", True),
    ((1, 1, 3, 3), "asymmetric", "round_prefer_ceil", "nearest", False),   # rounds up from k + 2/3
    ((1, 1, 2, 2), "align_corners", "round_prefer_floor", "nearest", False),
    ((1, 1, 2, 2), "half_pixel", "round_prefer_floor", "linear", True),
    ((1, 1, 3, 2), "pytorch_half_pixel", "round_prefer_floor", "linear", True),
    ((1, 1, 2, 2), "asymmetric", "round_prefer_floor", "linear", False),
])
def test_onnx_resize_matches_onnxruntime(scales, coordinates, nearest_mode, mode, as_broadcast):
    ort = pytest.importorskip("onnxruntime")
    model = onnx_resize((2, 3, 5, 4), scales, coordinates, nearest_mode, mode)
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 4)).astype(np.float32)
    engine = build_engine(model, "fp32")
    (got,) = run_engine(engine, torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-6)
    assert torch_steps([engine]) == ([] if as_broadcast else ["resize"])


DENSE_HEADS = {
    # the decode head upsamples every stage to the first stage's size (x2, and x1: an identity)
    "segformer": ("SegformerForSemanticSegmentation", dict(
        num_encoder_blocks=2, depths=[1, 1], sr_ratios=[2, 1], hidden_sizes=[16, 32],
        num_attention_heads=[1, 2], patch_sizes=[7, 3], strides=[4, 2], mlp_ratios=[2, 2],
        decoder_hidden_size=32, num_labels=5), "logits", set()),
    # 4 x 4 and 2 x 2 transposed convs reassemble the tokens; its fusion stage's bilinear
    # resizes use align_corners, which stay in torch
    "dpt": ("DPTForDepthEstimation", dict(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        image_size=32, patch_size=8, backbone_out_indices=[0, 1], neck_hidden_sizes=[16, 32],
        fusion_hidden_size=16, reassemble_factors=[4, 2]), "predicted_depth", {"resize"}),
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

    x = torch.randn(2, 3, 32, 32, device=DEVICE)
    got, reports = compile_with_reports(fn, x)
    with torch.no_grad():
        torch.testing.assert_close(got, fn(x), rtol=1e-4, atol=1e-5)
    assert set(ops_in_torch(reports)) == left_in_torch
