"""NaN and infinities propagate as in torch and onnxruntime: max-like ops (ReLU, Clip, Max, Min,
HardSigmoid, MaxPool, ReduceMax) give NaN where a NaN goes in, standalone and in fused epilogues,
at fp32 and fp16."""
import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from trident.compiler import build_engine
from trident.compiler.build import compile_graph, engine_from
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, run_engine

PRECISIONS = ["fp32", "fp16"]
SPECIALS = torch.tensor([float("nan"), float("inf"), float("-inf")])


def with_specials(rng, *shape) -> torch.Tensor:
    """Random normal data with NaN, +inf and -inf sprinkled in (about one element in eight)."""
    x = torch.randn(*shape, generator=rng)
    pick = torch.randint(0, 24, shape, generator=rng)
    special = pick < 3
    x[special] = SPECIALS[pick[special]]
    assert torch.isnan(x).any() and torch.isinf(x).any()
    return x


def graph_of(shapes, body):
    b = GraphBuilder("nan")
    xs = [b.input(f"x{k}", TensorType(tuple(s), torch.float32)) for k, s in enumerate(shapes)]
    outs = body(b, *xs)
    return b.finish(outs if isinstance(outs, list) else [outs])


UNARY = {
    "relu": {}, "clip": {"min": -0.5, "max": 0.7}, "hard_sigmoid": {"alpha": 0.3, "beta": 0.4},
    "leaky_relu": {"alpha": 0.1}, "hard_swish": {}, "abs": {}, "neg": {}, "sigmoid": {}, "tanh": {},
}


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_max_like_ops_keep_nan(op, precision, rng):
    x = with_specials(rng, 6, 37)
    assert_matches_reference(graph_of([x.shape], lambda b, a: b.add1(op, [a], UNARY[op])), [x], precision)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("op", ["maximum", "minimum"])
def test_binary_max_and_min_keep_nan(op, precision, rng):
    x, y = with_specials(rng, 5, 33), with_specials(rng, 33)
    assert_matches_reference(graph_of([x.shape, y.shape], lambda b, p, q: b.add1(op, [p, q])), [x, y],
                             precision)


def test_relu_of_nan_is_nan_not_zero():
    g = graph_of([(4,)], lambda b, a: b.add1("relu", [a]))
    (y,) = run_engine(engine_from(compile_graph(g, "fp32")), torch.tensor([float("nan"), -1.0, 2.0, float("-inf")]))
    assert torch.isnan(y[0]) and y[1:].tolist() == [0.0, 2.0, 0.0]


@pytest.mark.parametrize("precision", PRECISIONS)
def test_row_reductions_keep_nan(precision, rng):
    def body(b, x):
        ax = {"axes": [1], "keepdims": True}
        return [b.add1("reduce_max", [x], ax), b.add1("softmax", [x], {"axis": 1}),
                b.add1("reduce_sum", [x], ax), b.add1("relu", [b.add1("reduce_max", [x], ax)]),
                b.add1("reduce_min", [x], ax)]
    x = torch.randn(9, 21, generator=rng)
    x[2, 5], x[4, 0], x[6, 20] = float("nan"), float("inf"), float("-inf")
    x[7, :] = float("-inf")  # a row of -inf: max -inf, softmax NaN (as torch)
    assert_matches_reference(graph_of([x.shape], body), [x], precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_epilogue_relu_and_clip_keep_nan(precision, rng):
    w = torch.randn(19, 11, generator=rng)

    def body(b, x):
        y = b.add1("matmul", [x, b.constant(w)])
        return [b.add1("relu", [y]), b.add1("clip", [y], {"min": -1.0, "max": 1.0})]
    x = torch.randn(13, 19, generator=rng)
    x[3, 4] = float("nan")
    x[5, 2] = float("inf")
    assert_matches_reference(graph_of([x.shape], body), [x], precision)


def maxpool_model(relu_first: bool):
    rng = np.random.default_rng(0)
    w = rng.standard_normal((6, 3, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("MaxPool", ["r" if relu_first else "x"], ["y"], kernel_shape=[3, 3],
                         strides=[2, 2], pads=[1, 1, 1, 1])]
    out = [6, 5, 5] if relu_first else [3, 5, 5]
    graph = h.make_graph(nodes, "pool", [h.make_tensor_value_info("x", T.FLOAT, [2, 3, 9, 9])],
                         [h.make_tensor_value_info("y", T.FLOAT, [2] + out)],
                         [h.make_tensor("w", T.FLOAT, w.shape, w.ravel())])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), torch.from_numpy(w)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("relu_first", [False, True], ids=["maxpool", "conv-relu-maxpool"])
def test_max_pool_window_with_a_nan_gives_nan(relu_first, precision, rng):
    model, w = maxpool_model(relu_first)
    x = torch.randn(2, 3, 9, 9, generator=rng)
    x[0, 1, 4, 4] = float("nan")
    x[1, 2, 0, 8] = float("inf")
    x[1, 0, 3, 3] = float("-inf")
    engine = build_engine(model, precision=precision)
    (y,) = run_engine(engine, x)
    r = torch.relu(torch.nn.functional.conv2d(x, w, padding=1)) if relu_first else x
    want = torch.nn.functional.max_pool2d(r, 3, 2, 1)
    assert torch.isnan(want).any() and torch.equal(torch.isnan(y), torch.isnan(want))
    tol = {"fp32": 1e-4, "fp16": 3e-2}[precision]
    torch.testing.assert_close(y.float(), want, rtol=tol, atol=tol, equal_nan=True)

