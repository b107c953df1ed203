"""A Gather by constant indices that step evenly (what exporters write for an `as_strided` view)
is a slice and a reshape: no kernel, no torch step. Other constant indices stay a gather.
Checked against onnxruntime on fresh random data."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, compiled_ops, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)


def gather_model(x_shape, indices, axis, then_relu=True):
    nodes = [node("Gather", ["x", "idx"], ["g"], axis=axis)]
    nodes.append(node("Relu", ["g"], ["y"]) if then_relu else node("Identity", ["g"], ["y"]))
    return make_model(nodes, {"x": (F32, x_shape)}, ["y"], {"idx": np.asarray(indices, np.int64)})


@pytest.mark.parametrize("x_shape, indices, axis", [
    ((768,), np.arange(768).reshape(1, 768, 1, 1), 0),     # ConvNeXt's [768] -> [1, 768, 1, 1]
    ((5, 9), np.arange(1, 9, 3), 1),                        # a stride and an offset
    ((7, 3), [[-3, -2, -1]], 0),                            # negative: from the end
    ((4, 6, 2), np.array(4), 1),                            # one index: the axis goes
    ((1, 5), [0], 0),                                       # size-1 dims
])
def test_even_steps_are_a_slice(x_shape, indices, axis):
    model = gather_model(x_shape, indices, axis)
    engine = check_engine(model)
    assert "gather" not in compiled_ops(model) and not torch_steps(engine)


@pytest.mark.parametrize("indices", [[2, 0, 1], [0, 0, 1], [3, 1]])
def test_other_constant_indices_stay_a_gather(indices):
    model = gather_model((4, 3), indices, 0)
    check_engine(model)
    assert "gather" in compiled_ops(model)


def test_a_batch_one_classifier_keeps_its_matmul_a_matrix():
    """[C] -> [1, C] -> Gemm (Swin's pooled features, once its as_strided gather is a view): the
    reshape stays in front of the matmul (moved past it, the matmul would be a vector's, which
    no template takes)."""
    rng = np.random.default_rng(0)
    model = make_model(
        [node("Reshape", ["x", "shape"], ["flat"]), node("Gemm", ["flat", "w", "b"], ["y"], transB=1)],
        {"x": (F32, (6,))}, ["y"],
        {"shape": np.array([1, 6], np.int64), "w": rng.standard_normal((5, 6)).astype(F32),
         "b": rng.standard_normal(5).astype(F32)})
    engine = check_engine(model)
    assert not torch_steps(engine)
