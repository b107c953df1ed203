"""ONNX reductions and normalizations through build_engine and the reduction kernels, against
onnxruntime: ReduceMin/Prod/L1/L2/LogSum/LogSumExp/SumSquare, ArgMax/ArgMin, LogSoftmax, Hardmax,
RMSNormalization, Instance/Group/Lp/MeanVariance normalization, LRN."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, group_kinds, make_model, node, torch_steps

pytest.importorskip("onnxruntime")

SHAPE = [2, 5, 7]


REDUCE = ["ReduceMin", "ReduceMax", "ReduceProd", "ReduceL1", "ReduceL2", "ReduceLogSum",
          "ReduceLogSumExp", "ReduceSumSquare", "ReduceMean", "ReduceSum"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("axes, keepdims", [([1], 1), ([2], 0), ([0, 2], 1), (None, 0)])
@pytest.mark.parametrize("op", REDUCE)
def test_reduce(op, axes, keepdims, precision):
    rng = np.random.default_rng(1)
    low = 0.5 if op == "ReduceLogSum" else -2.0  # the log of a positive sum
    x = rng.uniform(low, 2.0, SHAPE).astype(F32)
    if op == "ReduceProd":
        x = rng.uniform(0.7, 1.4, SHAPE).astype(F32) * rng.choice([-1, 1], SHAPE).astype(F32)
    inputs, inits = ["x"], {}
    if axes is not None:
        inputs.append("axes")
        inits["axes"] = np.array(axes, np.int64)
    model = make_model([node(op, inputs, keepdims=keepdims)], {"x": (F32, SHAPE)}, ["y"],
                       initializers=inits, opset=18)
    tol = (2e-2, 2e-2) if precision == "fp16" else (1e-4, 1e-5)
    engine = check_engine(model, {"x": x}, precision, tol=tol)
    assert not torch_steps(engine), torch_steps(engine)


@pytest.mark.parametrize("op", ["ReduceL2", "ReduceSumSquare", "ReduceLogSumExp"])
def test_reduce_noop_with_empty_axes_keeps_the_elementwise_part(op):
    model = make_model([node(op, ["x"], noop_with_empty_axes=1)], {"x": (F32, SHAPE)}, ["y"],
                       opset=18)
    check_engine(model)


def test_reduce_log_sum_exp_of_infinite_rows():
    x = np.random.default_rng(2).standard_normal(SHAPE).astype(F32)
    x[0, :, 0] = -np.inf  # a row of -inf: -inf, not NaN
    x[1, 2, 1] = np.inf
    model = make_model([node("ReduceLogSumExp", ["x", "axes"], keepdims=0)], {"x": (F32, SHAPE)},
                       ["y"], initializers={"axes": np.array([1], np.int64)}, opset=18)
    expected = np.log(np.sum(np.exp(x.astype(np.float64)), axis=1)).astype(F32)
    check_engine(model, {"x": x}, expected=[expected])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("select_last_index", [0, 1])
@pytest.mark.parametrize("axis, keepdims", [(1, 1), (2, 0), (-1, 1), (0, 0)])
@pytest.mark.parametrize("op", ["ArgMax", "ArgMin"])
def test_arg_extremes_with_ties(op, axis, keepdims, select_last_index, precision):
    x = np.random.default_rng(3).integers(-2, 3, SHAPE).astype(F32)  # many ties
    model = make_model([node(op, ["x"], axis=axis, keepdims=keepdims,
                             select_last_index=select_last_index)], {"x": (F32, SHAPE)}, ["y"])
    engine = check_engine(model, {"x": x}, precision)
    assert "reduction" in group_kinds(model, precision) and not torch_steps(engine)


@pytest.mark.parametrize("op, largest", [("ArgMax", True), ("ArgMin", False)])
def test_arg_extremes_count_nan_as_the_extreme(op, largest):
    x = np.random.default_rng(4).standard_normal(SHAPE).astype(F32)
    x[0, 3, :] = np.nan
    x[1, 1, 2] = np.nan
    model = make_model([node(op, ["x"], axis=1)], {"x": (F32, SHAPE)}, ["y"])
    expected = (np.argmax if largest else np.argmin)(x, axis=1, keepdims=True)  # numpy: NaN wins
    check_engine(model, {"x": x}, expected=[expected])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("axis", [0, 1, -1])
@pytest.mark.parametrize("op", ["LogSoftmax", "Hardmax"])
def test_log_softmax_and_hardmax(op, axis, precision):
    model = make_model([node(op, ["x"], axis=axis)], {"x": (F32, SHAPE)}, ["y"])
    tol = (1e-2, 2e-2) if precision == "fp16" else (1e-4, 1e-5)
    x = np.random.default_rng(5).standard_normal(SHAPE).astype(F32) * 4
    engine = check_engine(model, {"x": x}, precision, tol=tol)
    assert not torch_steps(engine), torch_steps(engine)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("axis, scale_shape", [(-1, [7]), (1, [5, 7]), (1, [7])])
def test_rms_normalization(axis, scale_shape, precision):
    model = make_model([node("RMSNormalization", ["x", "s"], axis=axis, epsilon=1e-3)],
                       {"x": (F32, SHAPE), "s": (F32, scale_shape)}, ["y"], opset=23)
    rng = np.random.default_rng(6)
    x, s = rng.standard_normal(SHAPE).astype(F32), rng.standard_normal(scale_shape).astype(F32)
    norm = np.sqrt(np.mean(x.astype(np.float64) ** 2, axis=tuple(range(axis % 3, 3)),
                           keepdims=True) + 1e-3)
    engine = check_engine(model, {"x": x, "s": s}, precision, expected=[(x / norm * s).astype(F32)],
                          tol=(2e-2, 2e-2) if precision == "fp16" else None)
    assert "reduction" in group_kinds(model, precision) and not torch_steps(engine)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_instance_normalization(precision):
    shape = [2, 3, 5, 6]
    model = make_model([node("InstanceNormalization", ["x", "s", "b"], epsilon=1e-4)],
                       {"x": (F32, shape), "s": (F32, [3]), "b": (F32, [3])}, ["y"])
    engine = check_engine(model, precision=precision)
    assert not torch_steps(engine)


def test_group_normalization():
    shape = [2, 6, 3, 5]
    model = make_model([node("GroupNormalization", ["x", "s", "b"], num_groups=2, epsilon=1e-3)],
                       {"x": (F32, shape), "s": (F32, [6]), "b": (F32, [6])}, {"y": (F32, shape)},
                       opset=21)
    rng = np.random.default_rng(7)
    feeds = {"x": rng.standard_normal(shape).astype(F32), "s": rng.standard_normal([6]).astype(F32),
             "b": rng.standard_normal([6]).astype(F32)}
    rows = feeds["x"].reshape(2, 2, -1).astype(np.float64)
    normed = ((rows - rows.mean(-1, keepdims=True)) / np.sqrt(rows.var(-1, keepdims=True) + 1e-3))
    expected = (normed.reshape(shape) * feeds["s"].reshape(-1, 1, 1)
                + feeds["b"].reshape(-1, 1, 1)).astype(F32)
    engine = check_engine(model, feeds, expected=[expected])
    assert not torch_steps(engine)


@pytest.mark.parametrize("p, axis", [(1, -1), (2, 1), (2, 0)])
def test_lp_normalization(p, axis):
    check_engine(make_model([node("LpNormalization", ["x"], p=p, axis=axis)],
                            {"x": (F32, SHAPE)}, ["y"]))


def test_mean_variance_normalization():
    check_engine(make_model([node("MeanVarianceNormalization", ["x"], axes=[0, 2, 3])],
                            {"x": (F32, [2, 3, 4, 5])}, ["y"]))


@pytest.mark.parametrize("size", [1, 3, 5])
def test_lrn(size):
    model = make_model([node("LRN", ["x"], size=size, alpha=0.02, beta=0.6, bias=1.5)],
                       {"x": (F32, [2, 6, 3, 4])}, ["y"])
    engine = check_engine(model)
    assert torch_steps(engine) == ["lrn"]


def test_softmax_cross_entropy_fuses_log_softmax_and_runs_the_loss_in_torch():
    model = make_model([node("SoftmaxCrossEntropyLoss", ["s", "t"], ["loss", "logp"],
                             reduction="mean")],
                       {"s": (F32, [4, 5, 3]), "t": (np.int64, [4, 3])}, ["loss", "logp"])
    rng = np.random.default_rng(8)
    feeds = {"s": rng.standard_normal([4, 5, 3]).astype(F32),
             "t": rng.integers(0, 5, [4, 3]).astype(np.int64)}
    engine = check_engine(model, feeds)
    assert torch_steps(engine) == ["nll_loss"]


@pytest.mark.parametrize("reduction", ["none", "sum", "mean"])
@pytest.mark.parametrize("weighted, ignore_index", [(False, None), (True, None), (True, 2)])
def test_negative_log_likelihood_loss(reduction, weighted, ignore_index):
    attrs = {"reduction": reduction}
    if ignore_index is not None:
        attrs["ignore_index"] = ignore_index
    inputs = {"x": (F32, [3, 5, 2]), "t": (np.int64, [3, 2])}
    if weighted:
        inputs["w"] = (F32, [5])
    model = make_model([node("NegativeLogLikelihoodLoss", list(inputs), **attrs)], inputs, ["y"])
    rng = np.random.default_rng(9)
    feeds = {"x": rng.standard_normal([3, 5, 2]).astype(F32),
             "t": rng.integers(0, 5, [3, 2]).astype(np.int64),
             "w": rng.uniform(0.5, 2, [5]).astype(F32)}
    feeds["t"][0, 0] = 2
    check_engine(model, {k: feeds[k] for k in inputs})


@pytest.mark.parametrize("axes, keepdims", [([0, 1, 2], 0), ([0], 0), ([2], 0), ([1], 1)])
def test_reduction_epilogue_over_the_input_shape(axes, keepdims):
    """x / max(x): fused into the reduction's kernel where the reduced value broadcasts row by
    row (keepdims, or leading axes), a kernel of its own elsewhere; right either way."""
    model = make_model([node("ReduceMax", ["x", "axes"], ["m"], keepdims=keepdims),
                        node("Div", ["x", "m"])], {"x": (F32, [5, 5, 5])}, ["y"],
                       initializers={"axes": np.array(axes, np.int64)}, opset=18)
    x = np.random.default_rng(10).uniform(0.5, 2, [5, 5, 5]).astype(F32)
    engine = check_engine(model, {"x": x})
    fused = keepdims or axes == list(range(len(axes)))
    assert engine.num_kernels == (1 if fused else 2)
