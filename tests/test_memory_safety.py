"""Generated kernels touch only their tensors' elements (the bounds sanitizer is on for the whole
suite, tests/conftest.py): reduction epilogues that broadcast back to the row, shapes that are not
multiples of the blocks, and empty extents (zero-length axes, empty batches), each compared with
torch or the reference executor."""
import numpy as np
import pytest
import torch
from onnx import TensorProto as T
from onnx import helper as h

from trident.compiler import build_engine, config, sanitizer
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, run_engine

PRECISIONS = ["fp32", "fp16"]


def onnx_model(nodes, inputs, outputs, opset=18):
    graph = h.make_graph(nodes, "m", [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in inputs],
                         [h.make_tensor_value_info(n, T.FLOAT, s) for n, s in outputs])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def graph_of(shapes, body, name="t"):
    b = GraphBuilder(name)
    xs = [b.input(f"x{k}", TensorType(tuple(s), torch.float32)) for k, s in enumerate(shapes)]
    outs = body(b, *xs)
    return b.finish(outs if isinstance(outs, list) else [outs])


def test_sanitizer_is_on_for_the_suite():
    assert sanitizer.enabled() == config.INTERPRET


# ------------------------------------------------------- epilogues broadcast to the row ----
def test_reduce_max_sub_exp_reproducer_twenty_times(rng):
    """ReduceMax over axis 1 of [64, 17], Sub, Exp: stored with the row mask only, it wrote 15
    lanes past the buffer per launch (heap corruption in the interpreter)."""
    model = onnx_model([h.make_node("ReduceMax", ["x", "axes"], ["m"], keepdims=1),
                        h.make_node("Sub", ["x", "m"], ["d"]), h.make_node("Exp", ["d"], ["y"])],
                       [("x", [64, 17]), ("axes", [1])], [("y", [64, 17])])
    model.graph.input.pop()  # axes is an initializer
    model.graph.initializer.append(h.make_tensor("axes", T.INT64, [1], [1]))
    engine = build_engine(model, precision="fp32")
    for _ in range(20):
        x = torch.randn(64, 17, generator=rng)
        (y,) = run_engine(engine, x)
        torch.testing.assert_close(y, torch.exp(x - x.amax(1, keepdim=True)), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape,axis", [((64, 17), 1), ((3, 5, 19), 2), ((5, 19, 3), 1), ((7, 33), 0)])
def test_row_statistics_broadcast_back_to_the_row(shape, axis, precision, rng):
    """The bodies exporters emit for softmax, LayerNorm and MVN: x - max(x), x - mean(x),
    (x - mean) / sqrt(mean((x - mean)^2) + eps), each fused after the row reduction."""
    def body(b, x):
        ax = {"axes": [axis], "keepdims": True}
        shifted = b.add1("sub", [x, b.add1("reduce_max", [x], ax)])
        e = b.add1("exp", [shifted])
        softmax = b.add1("div", [e, b.add1("reduce_sum", [e], ax)])
        centred = b.add1("sub", [x, b.add1("reduce_mean", [x], ax)])
        var = b.add1("reduce_mean", [b.add1("mul", [centred, centred])], ax)
        eps = b.constant(torch.tensor(1e-5))
        normed = b.add1("div", [centred, b.add1("sqrt", [b.add1("add", [var, eps])])])
        return [softmax, normed, b.add1("sub", [x, b.add1("reduce_mean", [x], ax)])]
    x = torch.randn(*shape, generator=rng)
    assert_matches_reference(graph_of([shape], body), [x], precision)


def test_reduction_without_keepdims_and_a_row_broadcast_epilogue(rng):
    def body(b, x, y):
        s = b.add1("reduce_sum", [x], {"axes": [1], "keepdims": False})   # [6, 9]
        return b.add1("add", [b.add1("relu", [s]), y])                   # + [5, 6, 9]
    x, y = torch.randn(6, 13, 9, generator=rng), torch.randn(5, 6, 9, generator=rng)
    assert_matches_reference(graph_of([x.shape, y.shape], body), [x, y], "fp32")


# ------------------------------------------------------------------------ empty extents ----
@pytest.mark.parametrize("op,fill", [("reduce_sum", 0.0), ("reduce_mean", float("nan")),
                                     ("reduce_max", float("-inf"))])
@pytest.mark.parametrize("shape,axes", [((4, 0), [1]), ((3, 0, 5), [1]), ((2, 5, 0), [1, 2])])
def test_reduction_over_a_zero_length_axis(op, fill, shape, axes):
    g = graph_of([shape], lambda b, x: b.add1("relu", [b.add1(op, [x], {"axes": axes, "keepdims": True})]))
    engine = build_engine_of(g)
    (y,) = run_engine(engine, torch.randn(*shape))
    expected_shape = tuple(1 if d in axes else s for d, s in enumerate(shape))
    assert tuple(y.shape) == expected_shape
    want = torch.full(expected_shape, fill).relu()
    torch.testing.assert_close(y, want, equal_nan=True)


def build_engine_of(graph, precision="fp32"):
    from trident.compiler.build import compile_graph, engine_from

    return engine_from(compile_graph(graph, precision))


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("body,shapes", [
    (lambda b, x: b.add1("exp", [b.add1("add", [x, x])]), [(0, 7)]),
    (lambda b, x: b.add1("softmax", [x], {"axis": -1}), [(3, 0)]),
    (lambda b, x: b.add1("softmax", [x], {"axis": -1}), [(0, 9)]),
    (lambda b, x: b.add1("sub", [x, b.add1("reduce_max", [x], {"axes": [1], "keepdims": True})]), [(0, 9)]),
    (lambda b, x, w: b.add1("relu", [b.add1("matmul", [x, w])]), [(0, 8), (8, 5)]),
    (lambda b, x, w: b.add1("matmul", [x, w]), [(2, 0, 8), (2, 8, 5)]),
], ids=["pointwise", "softmax-empty-row", "softmax-no-rows", "row-epilogue-no-rows",
        "matmul-empty-m", "batched-matmul-empty-m"])
def test_empty_tensors_give_empty_results(body, shapes, precision, rng):
    g = graph_of(shapes, body)
    inputs = [torch.randn(*s, generator=rng) for s in shapes]
    assert_matches_reference(g, inputs, precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_with_zero_length_k_gives_the_bias(precision, rng):
    bias = torch.randn(5, generator=rng)

    def body(b, x, w):
        return b.add1("relu", [b.add1("add", [b.add1("matmul", [x, w]), b.constant(bias)])])
    x, w = torch.randn(6, 0), torch.randn(0, 5)
    assert_matches_reference(graph_of([x.shape, w.shape], body), [x, w], precision)


def test_empty_batch_through_conv_and_pool(rng):
    """An ONNX CNN with a batch of 0: every kernel launches nothing and the outputs are empty."""
    w = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
    nodes = [h.make_node("Conv", ["x", "w"], ["c"], pads=[1, 1, 1, 1]),
             h.make_node("Relu", ["c"], ["r"]),
             h.make_node("MaxPool", ["r"], ["y"], kernel_shape=[2, 2], strides=[2, 2])]
    model = onnx_model(nodes, [("x", [0, 3, 8, 8])], [("y", [0, 4, 4, 4])])
    model.graph.initializer.append(h.make_tensor("w", T.FLOAT, w.shape, w.ravel()))
    engine = build_engine(model, precision="fp32")
    (y,) = run_engine(engine, torch.randn(0, 3, 8, 8))
    assert tuple(y.shape) == (0, 4, 4, 4)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_matmul_rows_of_a_strided_slice_with_unit_dims(precision, rng):
    # LeViT's subsampled queries: a [2, 2, 2, C] tensor sliced [:, ::2, ::2] is [2, 1, 1, C] with
    # strides [4C, 4C, 2C, 1]. Its rows are 4C apart; the size-1 dims' strides (2C) walk elements
    # that are not the view's (the GEMM read the wrong row, outside the view, before).
    class Subsample(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.linear = torch.nn.Linear(24, 16)

        def forward(self, x):
            return self.linear(x.reshape(2, 2, 2, 24)[:, ::2, ::2])

    torch.manual_seed(0)
    model = Subsample().eval()
    engine = build_engine(model, precision, example_inputs=(torch.randn(2, 4, 24),))
    fresh = torch.randn(2, 4, 24)
    with torch.no_grad():
        ref = model(fresh)
    tol = 1e-5 if precision == "fp32" else 2e-2
    torch.testing.assert_close(run_engine(engine, fresh)[0].float(), ref, rtol=tol, atol=tol)
