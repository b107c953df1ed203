"""The ONNX frontend, op by op: import small models built with onnx.helper, run them with the
reference executor, and compare with onnxruntime (the oracle) on fresh random inputs."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

from onnx_util import F32, assert_close, make_model, node, random_inputs, run_ort
from trident.compiler.frontend.onnx import import_onnx, supported_onnx_ops
from trident.compiler.reference import run_reference

ort = pytest.importorskip("onnxruntime")

FP32 = dict(rtol=1e-5, atol=1e-6)  # the reference and onnxruntime both compute in fp32


def check(model: onnx.ModelProto, feeds: dict | None = None, tol: dict = FP32, seed: int = 0,
          **import_kwargs):
    """Import `model`, run it with the reference executor and with onnxruntime, compare."""
    feeds = feeds or random_inputs(model, np.random.default_rng(seed))
    graph = import_onnx(model, **import_kwargs)
    graph.verify()
    ours = run_reference(graph, [torch.from_numpy(np.array(feeds[n])) for n in graph.inputs])
    theirs = run_ort(model, feeds)
    assert len(ours) == len(theirs)
    for k, (a, b) in enumerate(zip(ours, theirs)):
        assert_close(a, b, tol["rtol"], tol["atol"], f"output {k}")
    return graph


X234 = {"x": (F32, [2, 3, 4])}


def i64(*values):
    return np.array(values, dtype=np.int64)


# ---------------------------------------------------------------------------- elementwise ----
@pytest.mark.parametrize("op", ["Sqrt", "Reciprocal", "Neg", "Abs", "Exp", "Log", "Relu",
                                "Sigmoid", "Tanh", "Erf", "HardSwish"])
def test_unary(op):
    x = np.abs(np.random.default_rng(1).standard_normal([2, 3, 4])).astype(F32) + 0.5
    check(make_model([node(op, ["x"])], X234, ["y"]), {"x": x})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Pow", "Equal", "Less", "Greater"])
@pytest.mark.parametrize("shape_b", [[2, 3, 4], [4], [3, 1], [1, 1, 1]])
def test_binary_broadcast(op, shape_b):
    rng = np.random.default_rng(2)
    a = rng.uniform(0.5, 2.0, [2, 3, 4]).astype(F32)
    b = rng.uniform(0.5, 2.0, shape_b).astype(F32)
    check(make_model([node(op, ["a", "b"])], {"a": (F32, [2, 3, 4]), "b": (F32, shape_b)}, ["y"]),
          {"a": a, "b": b})


def test_integer_arithmetic_truncates_like_onnxruntime():
    for op in ("Div", "Add", "Mul"):
        rng = np.random.default_rng(3)
        a = rng.integers(-20, 20, [4, 5]).astype(np.int32)
        sign = rng.choice([-1, 1], [4, 5]).astype(np.int32)
        b = rng.integers(1, 7, [4, 5]).astype(np.int32) * sign
        check(make_model([node(op, ["a", "b"])], {"a": (np.int32, [4, 5]),
                                                   "b": (np.int32, [4, 5])}, ["y"]),
              {"a": a, "b": b})


def test_not_where():
    model = make_model([node("Not", ["c"], ["nc"]), node("Where", ["nc", "a", "b"])],
                       {"c": (np.bool_, [3, 4]), "a": (F32, [3, 4]), "b": (F32, [1, 4])}, ["y"])
    check(model)


@pytest.mark.parametrize("attrs", [{}, {"alpha": 0.3}])
def test_leaky_relu(attrs):
    check(make_model([node("LeakyRelu", ["x"], **attrs)], X234, ["y"]))


@pytest.mark.parametrize("attrs", [{}, {"alpha": 0.5, "beta": 0.25}])
def test_hard_sigmoid(attrs):
    check(make_model([node("HardSigmoid", ["x"], **attrs)], X234, ["y"]))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_opset20(approximate):
    check(make_model([node("Gelu", ["x"], approximate=approximate)], X234, ["y"], opset=20))


@pytest.mark.parametrize("bounds", [("lo", "hi"), ("lo", ""), ("", "hi"), ()])
def test_clip_opset13_bounds(bounds):
    inits = {"lo": np.array(-0.5, F32), "hi": np.array(0.7, F32)}
    model = make_model([node("Clip", ["x", *bounds])], X234, ["y"],
                       {k: v for k, v in inits.items() if k in bounds})
    check(model)


def test_clip_runtime_bounds_and_int():
    # bounds that are graph inputs become max/min nodes, not an error
    model = make_model([node("Clip", ["x", "lo", "hi"])],
                       {"x": (F32, [3, 4]), "lo": (F32, []), "hi": (F32, [])}, ["y"])
    check(model, {"x": np.linspace(-2, 2, 12, dtype=F32).reshape(3, 4),
                  "lo": np.array(-1.0, F32), "hi": np.array(0.5, F32)})
    model = make_model([node("Clip", ["x", "lo", "hi"])], {"x": (np.int32, [3, 4])}, ["y"],
                       {"lo": np.array(-2, np.int32), "hi": np.array(3, np.int32)})
    check(model)


@pytest.mark.parametrize("to", [T.FLOAT16, T.INT32, T.INT64, T.BOOL, T.UINT8, T.FLOAT])
def test_cast(to):
    x = np.random.default_rng(4).uniform(-40, 40, [3, 5]).astype(F32)
    check(make_model([node("Cast", ["x"], to=to)], {"x": (F32, [3, 5])}, ["y"]), {"x": x})


# --------------------------------------------------------------------------- matmul/gemm ----
@pytest.mark.parametrize("shapes", [([3, 4], [4, 5]), ([2, 3, 4], [4, 5]),
                                    ([2, 1, 3, 4], [5, 4, 2]), ([4], [4, 5]), ([3, 4], [4]),
                                    ([4], [4])])
def test_matmul_batched_broadcast(shapes):
    a, b = shapes
    check(make_model([node("MatMul", ["a", "b"])], {"a": (F32, a), "b": (F32, b)}, ["y"]))


@pytest.mark.parametrize("trans_a,trans_b", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("alpha,beta", [(1.0, 1.0), (0.5, 2.0), (1.5, 0.0)])
@pytest.mark.parametrize("c_shape", [[5], [3, 5], [1, 5], None])
def test_gemm(trans_a, trans_b, alpha, beta, c_shape):
    rng = np.random.default_rng(5)
    a_shape = [4, 3] if trans_a else [3, 4]
    w = rng.standard_normal([5, 4] if trans_b else [4, 5]).astype(F32)
    inits = {"w": w}
    inputs = ["a", "w"]
    if c_shape is not None:
        inits["c"] = rng.standard_normal(c_shape).astype(F32)
        inputs.append("c")
    model = make_model([node("Gemm", inputs, transA=trans_a, transB=trans_b, alpha=alpha,
                             beta=beta)], {"a": (F32, a_shape)}, ["y"], inits)
    graph = check(model)
    # the transpose of the constant weight is folded at import: only A's transpose remains
    assert sum(n.op == "transpose" for n in graph.nodes) == trans_a


# ----------------------------------------------------------------------------------- conv ----
@pytest.mark.parametrize("attrs,x_shape,w_shape", [
    ({}, [1, 3, 8, 8], [4, 3, 3, 3]),
    ({"strides": [2, 2], "pads": [1, 1, 1, 1]}, [2, 3, 9, 9], [4, 3, 3, 3]),
    ({"dilations": [2, 2], "pads": [2, 1, 0, 3]}, [1, 2, 10, 10], [3, 2, 3, 3]),
    ({"group": 2}, [1, 4, 7, 7], [6, 2, 3, 3]),
    ({"group": 4}, [1, 4, 7, 7], [4, 1, 3, 3]),  # depthwise
    ({"auto_pad": "SAME_UPPER", "strides": [2, 2]}, [1, 2, 7, 8], [3, 2, 4, 4]),
    ({"auto_pad": "SAME_LOWER", "strides": [2, 2]}, [1, 2, 7, 8], [3, 2, 4, 4]),
    ({"auto_pad": "VALID", "strides": [3, 1]}, [1, 2, 10, 6], [3, 2, 3, 3]),
    ({"strides": [2], "pads": [1, 2]}, [2, 3, 11], [4, 3, 3]),  # 1-D
    ({"pads": [1, 0, 1, 0, 1, 1]}, [1, 2, 4, 5, 5], [2, 2, 2, 3, 3]),  # 3-D
])
@pytest.mark.parametrize("bias", [True, False])
def test_conv(attrs, x_shape, w_shape, bias):
    rng = np.random.default_rng(6)
    inits = {"w": rng.standard_normal(w_shape).astype(F32)}
    if bias:
        inits["b"] = rng.standard_normal([w_shape[0]]).astype(F32)
    model = make_model([node("Conv", ["x", "w"] + (["b"] if bias else []), **attrs)],
                       {"x": (F32, x_shape)}, ["y"], inits)
    check(model, tol=dict(rtol=1e-4, atol=1e-5))


# -------------------------------------------------------------------------------- pooling ----
@pytest.mark.parametrize("op", ["MaxPool", "AveragePool"])
@pytest.mark.parametrize("attrs", [
    {"kernel_shape": [2, 2]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "pads": [1, 1, 1, 1]},
    {"kernel_shape": [3, 3], "strides": [2, 2], "ceil_mode": 1},
    {"kernel_shape": [3, 2], "strides": [2, 2], "pads": [1, 0, 1, 1], "ceil_mode": 1},
    {"kernel_shape": [3, 3], "auto_pad": "SAME_UPPER", "strides": [2, 2]},
    {"kernel_shape": [2, 3], "auto_pad": "SAME_LOWER", "strides": [2, 2]},
    {"kernel_shape": [3, 3], "auto_pad": "VALID", "strides": [2, 1]},
])
def test_pool(op, attrs):
    check(make_model([node(op, ["x"], **attrs)], {"x": (F32, [2, 3, 7, 8])}, ["y"]))


def test_avg_pool_count_include_pad_and_max_pool_dilations():
    check(make_model([node("AveragePool", ["x"], kernel_shape=[3, 3], pads=[1, 1, 1, 1],
                           count_include_pad=1)], {"x": (F32, [1, 2, 5, 5])}, ["y"]))
    check(make_model([node("MaxPool", ["x"], kernel_shape=[2, 2], dilations=[2, 2])],
                     {"x": (F32, [1, 2, 7, 7])}, ["y"]))
    check(make_model([node("MaxPool", ["x"], kernel_shape=[3], strides=[2], pads=[1, 1])],
                     {"x": (F32, [2, 3, 9])}, ["y"]))  # 1-D


@pytest.mark.parametrize("op", ["GlobalAveragePool", "GlobalMaxPool"])
def test_global_pool(op):
    check(make_model([node(op, ["x"])], {"x": (F32, [2, 3, 5, 4])}, ["y"]))


# -------------------------------------------------------------------------- normalization ----
@pytest.mark.parametrize("axis", [-1, 1, 2, 0])
def test_softmax(axis):
    check(make_model([node("Softmax", ["x"], axis=axis)], X234, ["y"]))


@pytest.mark.parametrize("axis", [-1, 1, -2])
@pytest.mark.parametrize("with_stats", [False, True])
def test_layer_norm(axis, with_stats):
    rng = np.random.default_rng(7)
    norm_shape = [2, 3, 4][axis:]
    inits = {"s": rng.standard_normal(norm_shape).astype(F32),
             "b": rng.standard_normal(norm_shape).astype(F32)}
    outs = ["y", "mean", "inv_std"] if with_stats else ["y"]
    model = make_model([node("LayerNormalization", ["x", "s", "b"], outs, axis=axis,
                             epsilon=1e-3)], X234, outs, inits)
    check(model, tol=dict(rtol=1e-4, atol=1e-5))


def test_batch_norm():
    rng = np.random.default_rng(8)
    c = 3
    inits = {"s": rng.standard_normal(c).astype(F32), "b": rng.standard_normal(c).astype(F32),
             "m": rng.standard_normal(c).astype(F32), "v": rng.uniform(0.5, 2, c).astype(F32)}
    model = make_model([node("BatchNormalization", ["x", "s", "b", "m", "v"], epsilon=1e-3)],
                       {"x": (F32, [2, c, 4, 5])}, ["y"], inits)
    check(model, tol=dict(rtol=1e-4, atol=1e-5))


REDUCE_CASES = [([1], 1, 0), ([0, -1], 0, 0), (None, 1, 0), (None, 0, 0), ([], 1, 1)]


def _axes_as_input(op, opset):  # ReduceSum took axes as an input at 13, the others at 18
    return op == "ReduceSum" or opset >= 18


@pytest.mark.parametrize("op,opset,axes,keepdims,noop", [
    (op, opset, *case) for op in ("ReduceMean", "ReduceSum", "ReduceMax") for opset in (13, 18)
    for case in REDUCE_CASES if _axes_as_input(op, opset) or not case[2]])
def test_reduce(op, opset, axes, keepdims, noop):
    attrs = {"keepdims": keepdims}
    if noop:
        attrs["noop_with_empty_axes"] = 1
    inits, inputs = {}, ["x"]
    if axes is not None and _axes_as_input(op, opset):
        inits["axes"] = np.array(axes, np.int64)
        inputs.append("axes")
    elif axes:
        attrs["axes"] = axes
    check(make_model([node(op, inputs, **attrs)], X234, ["y"], inits, opset=opset))


# ------------------------------------------------------------------------------- movement ----
@pytest.mark.parametrize("shape,allowzero", [([4, 6], 0), ([0, -1], 0), ([-1, 2, 2], 0),
                                             ([2, 0, 4], 0), ([24], 0), ([2, 12], 1)])
def test_reshape(shape, allowzero):
    check(make_model([node("Reshape", ["x", "s"], allowzero=allowzero)], X234, ["y"],
                     {"s": i64(*shape)}, opset=14))


def test_reshape_allowzero_empty():
    model = make_model([node("Reshape", ["x", "s"], allowzero=1)], {"x": (F32, [0, 3])}, ["y"],
                       {"s": i64(3, 0)}, opset=14)
    check(model, {"x": np.zeros([0, 3], F32)})


@pytest.mark.parametrize("axis", [0, 1, 2, 3, -1, -3])
def test_flatten(axis):
    check(make_model([node("Flatten", ["x"], axis=axis)], X234, ["y"]))


@pytest.mark.parametrize("perm", [None, [0, 2, 1], [2, 0, 1]])
def test_transpose(perm):
    attrs = {"perm": perm} if perm else {}
    check(make_model([node("Transpose", ["x"], **attrs)], X234, ["y"]))


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_concat(axis):
    shape_b = [2, 3, 4]
    shape_b[axis] = 5
    check(make_model([node("Concat", ["x", "b", "x"], axis=axis)],
                     {"x": (F32, [2, 3, 4]), "b": (F32, shape_b)}, ["y"]))


@pytest.mark.parametrize("opset,split,attrs,n", [
    (13, [1, 3], {"axis": 2}, 2), (13, None, {"axis": 1}, 3), (13, [2, 0, 2], {"axis": -1}, 3),
    (18, None, {"axis": 2, "num_outputs": 3}, 3),  # 7 -> 3, 3, 1: the last part is smaller
    (18, [1, 1, 2], {"axis": 2}, 3),
])
def test_split(opset, split, attrs, n):
    inputs = ["x"] + (["s"] if split else [])
    outs = [f"y{k}" for k in range(n)]
    x_shape = [2, 3, 7] if attrs.get("num_outputs") else [2, 3, 4]
    model = make_model([node("Split", inputs, outs, **attrs)], {"x": (F32, x_shape)}, outs,
                       {"s": i64(*split)} if split else {}, opset=opset)
    check(model)


@pytest.mark.parametrize("starts,ends,axes,steps", [
    ([0, 1], [2, 3], None, None),
    ([-3], [-1], [2], None),
    ([1], [1000], [1], [1]),
    ([-1000], [2], [-1], [2]),
    ([3], [0], [2], [-1]),
    ([-1], [-1000], [1], [-2]),
    ([10], [-10], [2], [-1]),
    ([0, 0, 0], [2, 3, 4], [0, 1, 2], [1, 1, 1]),  # a no-op
    ([1], [1], [0], None),  # empty
])
def test_slice(starts, ends, axes, steps):
    inits = {"st": i64(*starts), "en": i64(*ends)}
    inputs = ["x", "st", "en"]
    if axes is not None:
        inits["ax"] = i64(*axes)
        inputs.append("ax")
    if steps is not None:
        if axes is None:
            inputs.append("")
        inits["sp"] = i64(*steps)
        inputs.append("sp")
    check(make_model([node("Slice", inputs)], X234, ["y"], inits))


@pytest.mark.parametrize("indices,axis", [(i64(0, 2, -1), 1), (i64(1), 0),
                                          (np.array([[0, 3], [-4, 1]], np.int32), 2),
                                          (np.array(-1, np.int64), 2)])
def test_gather(indices, axis):
    check(make_model([node("Gather", ["x", "i"], axis=axis)], X234, ["y"], {"i": indices}))


def test_gather_runtime_indices():
    model = make_model([node("Gather", ["x", "i"], axis=1)],
                       {"x": (F32, [2, 3, 4]), "i": (np.int64, [5])}, ["y"])
    check(model, {"x": np.random.default_rng(9).standard_normal([2, 3, 4]).astype(F32),
                  "i": i64(0, 2, -1, 1, -3)})


@pytest.mark.parametrize("axes", [[0], [1, -1], [-1], [0, 3]])
def test_unsqueeze(axes):
    check(make_model([node("Unsqueeze", ["x", "a"])], {"x": (F32, [3, 4])}, ["y"],
                     {"a": i64(*axes)}))


@pytest.mark.parametrize("axes", [[0], [-1, 0], None])
def test_squeeze(axes):
    inits = {"a": i64(*axes)} if axes else {}
    check(make_model([node("Squeeze", ["x", "a"] if axes else ["x"])],
                     {"x": (F32, [1, 3, 1])}, ["y"], inits))


@pytest.mark.parametrize("shape", [[2, 3, 4], [3, 1], [2, 1, 1, 1], [1]])
def test_expand(shape):
    check(make_model([node("Expand", ["x", "s"])], {"x": (F32, [3, 1])}, ["y"],
                     {"s": i64(*shape)}))


# --------------------------------------------------------------------- values at import ----
@pytest.mark.parametrize("attrs", [{}, {"start": 1}, {"end": -1}, {"start": -2, "end": 10}])
def test_shape_start_end(attrs):
    model = make_model([node("Shape", ["x"], ["s"], **attrs), node("Cast", ["s"], to=T.FLOAT)],
                       X234, ["y"], opset=15)
    check(model)


@pytest.mark.parametrize("value", [
    dict(value=numpy_helper.from_array(np.arange(6, dtype=F32).reshape(2, 3))),
    dict(value_float=2.5), dict(value_floats=[1.0, 2.0, 3.0]), dict(value_int=7),
    dict(value_ints=[1, 2, 3]),
    dict(sparse_value=h.make_sparse_tensor(numpy_helper.from_array(np.array([5.0, 6.0], F32)),
                                           numpy_helper.from_array(i64(1, 4)), [2, 3])),
])
def test_constant_forms(value):
    model = make_model([node("Constant", [], ["c"], **value), node("Identity", ["c"])], {}, ["y"])
    graph = check(model, {})
    assert graph.nodes[-1].op == "identity"  # a constant output still gets a node


@pytest.mark.parametrize("value", [None, numpy_helper.from_array(np.array([3], np.int32)),
                                   numpy_helper.from_array(np.array([1.5], F32))])
def test_constant_of_shape(value):
    attrs = {"value": value} if value is not None else {}
    model = make_model([node("ConstantOfShape", ["s"], ["c"], **attrs), node("Add", ["c", "c"])],
                       {}, ["y"], {"s": i64(2, 3)})
    check(model, {})


@pytest.mark.parametrize("start,limit,delta,dtype", [(0, 10, 3, np.int64), (10, 2, -2, np.int32),
                                                     (1.0, 2.0, 0.25, F32), (5, 1, 1, np.int64)])
def test_range(start, limit, delta, dtype):
    inits = {"a": np.array(start, dtype), "b": np.array(limit, dtype), "c": np.array(delta, dtype)}
    check(make_model([node("Range", ["a", "b", "c"])], {}, ["y"], inits), {})


def test_identity_dropout_alias_without_nodes():
    model = make_model([node("Identity", ["x"], ["i"]), node("Dropout", ["i"], ["d", "mask"]),
                        node("Relu", ["d"], ["y"])], X234, ["y", "mask"], opset=13)
    graph = check(model)
    # Identity and Dropout are aliases; the mask is a constant, given a node as a graph output
    assert [n.op for n in graph.nodes] == ["relu", "identity"]


def test_graph_output_that_is_an_input():
    model = make_model([node("Relu", ["x"])], X234, ["y", "x"])
    graph = check(model)
    assert graph.outputs[0] == "y"


# -------------------------------------------------------------------------- quantization ----
@pytest.mark.parametrize("zp_dtype", [np.int8, np.uint8])
@pytest.mark.parametrize("per_axis", [False, True])
@pytest.mark.parametrize("opset", [13, 19, 21])
def test_quantize_dequantize(zp_dtype, per_axis, opset):
    rng = np.random.default_rng(10)
    if per_axis:
        scale = rng.uniform(0.01, 0.05, [3]).astype(F32)
        zp = rng.integers(-3 if zp_dtype == np.int8 else 100, 4 if zp_dtype == np.int8 else 120,
                          [3]).astype(zp_dtype)
    else:
        scale, zp = np.array(0.02, F32), np.array(3, zp_dtype)
    model = make_model([node("QuantizeLinear", ["x", "s", "z"], ["q"], axis=1),
                        node("DequantizeLinear", ["q", "s", "z"], ["y"], axis=1)],
                       {"x": (F32, [2, 3, 4])}, ["q", "y"], {"s": scale, "z": zp}, opset=opset)
    check(model)


def test_quantize_without_zero_point_is_uint8():
    model = make_model([node("QuantizeLinear", ["x", "s"])], X234, ["y"],
                       {"s": np.array(0.05, F32)})
    check(model)


# ------------------------------------------------------------- folding and symbolic dims ----
def shape_subgraph_model(batch="N"):
    """Flatten written the way exporters do: Shape -> Gather -> Unsqueeze -> Concat -> Reshape."""
    nodes = [node("Shape", ["x"], ["s"]), node("Gather", ["s", "zero"], ["n"], axis=0),
             node("Unsqueeze", ["n", "ax"], ["n1"]), node("Concat", ["n1", "minus1"], ["shape"],
                                                         axis=0),
             node("Reshape", ["x", "shape"], ["flat"]), node("Relu", ["flat"], ["y"])]
    inits = {"zero": np.array(0, np.int64), "ax": i64(0), "minus1": i64(-1)}
    return make_model(nodes, {"x": (F32, [batch, 3, 4])}, ["y"], inits)


def test_shape_subgraph_folds_to_a_constant_shape():
    graph = check(shape_subgraph_model(batch=2))
    assert [n.op for n in graph.nodes] == ["reshape", "relu"]
    assert graph.nodes[0].attrs["shape"] == [2, 12]
    assert not graph.constants  # the folded shape values are gone too


def test_symbolic_batch_dim():
    model = make_model([node("MatMul", ["x", "w"], ["m"]), node("Softmax", ["m"], ["y"])],
                       {"x": (F32, ["batch", 3, 4])}, ["y"],
                       {"w": np.random.default_rng(11).standard_normal([4, 5]).astype(F32)})
    graph = import_onnx(model)
    assert graph.types["x"].shape == ("batch", 3, 4)
    assert graph.types["y"].shape == ("batch", 3, 5)
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    for n in (1, 5):  # one graph serves every batch size
        x = np.random.default_rng(n).standard_normal([n, 3, 4]).astype(F32)
        (ours,) = run_reference(graph, [torch.from_numpy(x)])
        np.testing.assert_allclose(ours.numpy(), session.run(None, {"x": x})[0], **FP32)
    fixed = import_onnx(model, batch_size=4)
    assert fixed.types["x"].shape == (4, 3, 4) and fixed.types["y"].shape == (4, 3, 5)


def test_symbolic_batch_through_shape_subgraph_needs_batch_size():
    from trident.compiler.errors import UnsupportedError

    with pytest.raises(UnsupportedError, match="batch_size"):
        import_onnx(shape_subgraph_model())
    graph = import_onnx(shape_subgraph_model(), batch_size=3)
    assert graph.nodes[0].attrs["shape"] == [3, 12]


def test_symbolic_flatten_keeps_the_symbol():
    model = make_model([node("Flatten", ["x"])], {"x": (F32, ["n", 3, 4])}, ["y"])
    graph = import_onnx(model)
    assert graph.types[graph.outputs[0]].shape == ("n", 12)


def test_constant_inputs_bind_graph_inputs():
    model = make_model([node("Reshape", ["x", "shape"])],
                       {"x": (F32, [2, 3, 4]), "shape": (np.int64, [2])}, ["y"])
    graph = import_onnx(model, constant_inputs={"shape": i64(6, 4)})
    assert graph.inputs == ["x"]
    assert graph.types["y"].shape == (6, 4)


def test_names_are_kept():
    model = make_model([h.make_node("Relu", ["x"], ["r"], name="my_relu"),
                        h.make_node("Gemm", ["r", "w"], ["y"])], {"x": (F32, [2, 3])}, ["y"],
                       {"w": np.ones([3, 4], F32)})
    graph = import_onnx(model)
    assert graph.nodes[0].name == "my_relu" and graph.nodes[0].outputs == ("r",)
    assert graph.nodes[-1].name == "Gemm_1" and graph.outputs == ["y"]


def test_supported_ops_cover_the_foundation_list():
    required = """Conv Gemm MatMul Add Sub Mul Div Pow Sqrt Reciprocal Neg Abs Exp Log Relu
    LeakyRelu Sigmoid Tanh Erf Gelu HardSigmoid HardSwish Clip Softmax LayerNormalization
    BatchNormalization MaxPool AveragePool GlobalAveragePool Flatten Reshape Transpose Concat
    Split Slice Gather Unsqueeze Squeeze ReduceMean ReduceSum ReduceMax Cast Shape Constant
    ConstantOfShape Identity Dropout Where Expand Equal Less Greater Not Range QuantizeLinear
    DequantizeLinear""".split()
    assert set(required) <= set(supported_onnx_ops())
    assert supported_onnx_ops() == sorted(supported_onnx_ops())
