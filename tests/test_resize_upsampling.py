"""Nearest upsampling by whole factors runs as a broadcast in the pointwise kernels
(compiler/passes/resize.py), exactly as torch and onnxruntime compute it; every other resize
stays one node that torch runs."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper, numpy_helper

from trident.compiler import build_engine
from trident.compiler.testing import compile_with_reports, run_engine

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
    (dict(scale_factor=2, mode="bilinear"), False),            # linear: torch runs it
])
def test_torch_interpolate(kwargs, as_broadcast):
    x = torch.randn(2, 3, 7, 5)
    x[0, 0, 0, :3] = torch.tensor([float("nan"), float("inf"), -0.0])

    def fn(x):
        return F.interpolate(x * 2, **kwargs) + 1

    got, reports = compile_with_reports(fn, x)
    torch.testing.assert_close(got, fn(x), rtol=1e-6, atol=1e-6, equal_nan=True)
    steps = torch_steps(e for r in reports for e in r.engines())
    assert steps == ([] if as_broadcast else ["resize"])


def onnx_resize(shape, scales, coordinates, nearest_mode):
    out = [int(n * s) for n, s in zip(shape, scales)]
    inits = [numpy_helper.from_array(np.array(scales, np.float32), "scales"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    graph = helper.make_graph(
        [helper.make_node("Resize", ["x", "", "scales"], ["r"], mode="nearest",
                          coordinate_transformation_mode=coordinates, nearest_mode=nearest_mode),
         helper.make_node("Add", ["r", "one"], ["y"])],
        "resize", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return model_of(graph, 18)


@pytest.mark.parametrize("scales, coordinates, nearest_mode, as_broadcast", [
    ((1, 1, 2, 2), "half_pixel", "round_prefer_floor", True),   # ONNX's defaults
    ((1, 2, 3, 1), "asymmetric", "floor", True),
    ((1, 1, 4, 4), "pytorch_half_pixel", "round_prefer_ceil", True),
    ((1, 1, 3, 3), "asymmetric", "round_prefer_ceil", False),   # rounds up from k + 2/3
    ((1, 1, 2, 2), "align_corners", "round_prefer_floor", False),
])
def test_onnx_resize_matches_onnxruntime(scales, coordinates, nearest_mode, as_broadcast):
    ort = pytest.importorskip("onnxruntime")
    model = onnx_resize((2, 3, 5, 4), scales, coordinates, nearest_mode)
    x = np.random.default_rng(3).standard_normal((2, 3, 5, 4)).astype(np.float32)
    engine = build_engine(model, "fp32")
    (got,) = run_engine(engine, torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got.numpy(), want)
    assert torch_steps([engine]) == ([] if as_broadcast else ["resize"])
