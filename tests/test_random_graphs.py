"""Hypothesis builds random graphs (elementwise chains, broadcasts, reductions) and checks the
compiled engine against the reference executor."""
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference

UNARY = ["relu", "sigmoid", "tanh", "neg", "abs", "gelu", "silu", "exp"]
BINARY = ["add", "sub", "mul", "maximum", "minimum"]
REDUCE = ["softmax", "reduce_sum", "reduce_mean", "reduce_max", "layer_norm"]


@st.composite
def random_graph(draw):
    rank = draw(st.integers(1, 3))
    shape = tuple(draw(st.lists(st.integers(1, 9), min_size=rank, max_size=rank)))
    b = GraphBuilder("random")
    x = b.input("x", TensorType(shape, torch.float32))
    values = [x]
    for _ in range(draw(st.integers(1, 6))):
        kind = draw(st.sampled_from(["unary", "binary", "broadcast"]))
        a = draw(st.sampled_from(values))
        if kind == "unary":
            out = b.add1(draw(st.sampled_from(UNARY)), [a])
        elif kind == "binary":
            out = b.add1(draw(st.sampled_from(BINARY)), [a, draw(st.sampled_from(values))])
        else:  # a broadcast operand: ones on a random subset of the dims
            kept = tuple(d if draw(st.booleans()) else 1 for d in shape)
            const = b.constant(torch.randn(kept, generator=torch.Generator().manual_seed(len(values))))
            out = b.add1(draw(st.sampled_from(BINARY)), [a, const])
        out = b.add1("tanh", [out])  # keep magnitudes near 1 so exp cannot overflow
        values.append(out)
    if draw(st.booleans()):
        op = draw(st.sampled_from(REDUCE))
        axis = draw(st.integers(0, rank - 1))
        if op == "softmax":
            attrs = {"axis": axis}
        elif op == "layer_norm":
            n = shape[axis:]
            values.append(b.add1(op, [values[-1], b.constant(torch.ones(n)), b.constant(torch.zeros(n))],
                                 {"axis": axis, "epsilon": 1e-5}))
            attrs = None
        else:
            attrs = {"axes": (axis,), "keepdims": draw(st.booleans())}
        if attrs is not None:
            values.append(b.add1(op, [values[-1]], attrs))
        values.append(b.add1("sigmoid", [values[-1]]))
    return b.finish([values[-1]]), shape


@settings(max_examples=15, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(random_graph(), st.sampled_from(["fp32", "fp16"]), st.integers(0, 2**31 - 1))
def test_random_graph_matches_reference(graph_and_shape, precision, seed):
    graph, shape = graph_and_shape
    x = torch.randn(shape, generator=torch.Generator().manual_seed(seed))
    assert_matches_reference(graph, [x], precision)
