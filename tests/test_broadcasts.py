"""compiler/passes/broadcasts.py: broadcasts stay views, moved past the elementwise ops that would
write them out; every rewrite is checked against the reference executor on the graph as it was."""
import math

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.passes.broadcasts import simplify_broadcasts
from trident.compiler.reference import run_reference
from trident.compiler.testing import assert_matches_reference, run_engine

B, H, L = 2, 3, 13


def padding_bias_graph(neutral=True, op="logical_and"):
    """transformers' SDPA padding mask as exported: and(all-True [1, 1, L, 1], keep [B, 1, 1, L]),
    expanded to [B, 1, L, L], where(., 0, -inf), added to the scores [B, H, L, L]."""
    b = GraphBuilder("padding")
    scores = b.input("scores", TensorType((B, H, L, L), torch.float32))
    ids = b.input("attention_mask", TensorType((B, L), torch.int64))
    keep = b.add1("cast", [ids], {"dtype": torch.bool})
    keep = b.add1("reshape", [keep], {"shape": [B, 1, 1, L]})
    fill = neutral if op == "logical_and" else not neutral
    constant = torch.full((1, 1, L, 1), fill, dtype=torch.bool)
    if not neutral:
        constant[0, 0, 3] = not fill
    both = b.add1(op, [b.constant(constant, "rows"), keep])
    both = b.add1("expand", [both], {"shape": [B, 1, L, L]})
    zero, minus_inf = (b.constant(torch.tensor([x]), n) for x, n in ((0.0, "zero"), (-math.inf, "minus_inf")))
    bias = b.add1("where", [both, zero, minus_inf])
    return b.finish([b.add1("add", [scores, bias])])


def inputs(rng):
    ids = torch.ones(B, L, dtype=torch.int64)
    ids[1, 9:] = 0
    return [torch.randn(B, H, L, L, generator=rng), ids]


def shapes_of(graph, op):
    return [tuple(graph.types[n.outputs[0]].shape) for n in graph.nodes if n.op == op]


def check_same_function(before, after, rng):
    xs = inputs(rng)
    torch.testing.assert_close(run_reference(after, xs)[0], run_reference(before, xs)[0], rtol=0, atol=0)


def test_padding_mask_bias_is_computed_per_key_and_expanded(rng):
    for op in ("logical_and", "logical_or"):
        graph = padding_bias_graph(op=op)
        simple = simplify_broadcasts(graph)
        assert not any(n.op in ("logical_and", "logical_or") for n in simple.nodes)
        assert shapes_of(simple, "where") == [(B, 1, 1, L)]      # B * L values, not B * L * L
        assert shapes_of(simple, "expand") == [(B, 1, L, L)]     # one view
        check_same_function(graph, simple, rng)
        assert_matches_reference(simple, inputs(rng), max_kernels=2)


def inverted_mask_graph():
    """transformers 4.x's SDPA padding mask: keep [B, 1, 1, L] expanded to [B, 1, L, L], cast to
    fp32, 1 - it, then masked_fill(inverted, inverted.bool(), min): the expanded mask is read twice."""
    b = GraphBuilder("inverted")
    scores = b.input("scores", TensorType((B, H, L, L), torch.float32))
    ids = b.input("attention_mask", TensorType((B, L), torch.int64))
    keep = b.add1("reshape", [ids], {"shape": [B, 1, 1, L]})
    keep = b.add1("expand", [keep], {"shape": [B, 1, L, L]})
    keep = b.add1("cast", [keep], {"dtype": torch.float32})
    inverted = b.add1("sub", [b.constant(torch.tensor(1.0), "one"), keep])
    hidden = b.add1("cast", [inverted], {"dtype": torch.bool})
    lowest = b.constant(torch.tensor(torch.finfo(torch.float32).min), "lowest")
    bias = b.add1("where", [hidden, lowest, inverted])
    return b.finish([b.add1("add", [scores, bias])])


def test_an_elementwise_op_of_two_views_of_one_expand_is_computed_small(rng):
    graph = inverted_mask_graph()
    simple = simplify_broadcasts(graph)
    assert shapes_of(simple, "where") == [(B, 1, 1, L)]
    assert shapes_of(simple, "expand") == [(B, 1, L, L)]
    check_same_function(graph, simple, rng)
    assert_matches_reference(simple, inputs(rng), max_kernels=2)


def test_a_constant_that_is_not_neutral_stays(rng):
    for op in ("logical_and", "logical_or"):
        graph = padding_bias_graph(neutral=False, op=op)
        simple = simplify_broadcasts(graph)
        assert [n.op for n in simple.nodes].count(op) == 1
        check_same_function(graph, simple, rng)


def test_expand_chains_collapse_and_outputs_stay_dense(rng):
    b = GraphBuilder("expands")
    x = b.input("x", TensorType((B, 1, L), torch.float32))
    same = b.add1("expand", [x], {"shape": [B, 1, L]})
    wide = b.add1("expand", [b.add1("expand", [same], {"shape": [B, 4, L]})], {"shape": [3, B, 4, L]})
    scaled = b.add1("mul", [wide, b.constant(torch.tensor(2.0), "two")])
    total = b.add1("add", [scaled, b.input("z", TensorType((3, B, 4, L), torch.float32))])
    out = b.add1("expand", [x], {"shape": [B, 5, L]})  # a graph output: left as it is
    graph = b.finish([total, out])
    simple = simplify_broadcasts(graph)
    expands = [n for n in simple.nodes if n.op == "expand"]
    assert [tuple(simple.types[n.outputs[0]].shape) for n in expands] == [(3, B, 4, L), (B, 5, L)]
    assert shapes_of(simple, "mul") == [(B, 1, L)]
    xs = [torch.randn(B, 1, L, generator=rng), torch.randn(3, B, 4, L, generator=rng)]
    for got, want in zip(run_reference(simple, xs), run_reference(graph, xs)):
        torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_where_of_a_constant_condition_picks_its_branch(rng):
    # torch's traced `and` of an all-True mask row and the padding mask: where(c, keep, False).
    for fill in (True, False):
        b = GraphBuilder("where")
        ids = b.input("attention_mask", TensorType((B, L), torch.int64))
        keep = b.add1("reshape", [b.add1("cast", [ids], {"dtype": torch.bool})], {"shape": [B, 1, 1, L]})
        rows = b.constant(torch.full((1, 1, L, 1), fill), "rows")
        picked = b.add1("where", [rows, keep, b.constant(torch.tensor(False), "no")])
        graph = b.finish([b.add1("not", [picked])])
        simple = simplify_broadcasts(graph)
        assert not any(n.op == "where" for n in simple.nodes)
        ids_value = torch.ones(B, L, dtype=torch.int64)
        ids_value[1, 9:] = 0
        torch.testing.assert_close(run_reference(simple, [ids_value])[0], run_reference(graph, [ids_value])[0])
    kept = padding_bias_graph()  # where(keep, 0, -inf): a condition known only at run time stays
    assert [n.op for n in simplify_broadcasts(kept).nodes].count("where") == 1


class _BatchedMatmul(torch.nn.Module):
    def forward(self, a, b):
        return torch.relu(a @ b)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("a_shape, b_shape", [
    ((2, 3, 8, 16), (2, 1, 16, 8)),   # one K/V head for every query head (multi-query attention)
    ((2, 1, 8, 16), (2, 3, 16, 8)),   # A broadcast over B's heads
    ((3, 8, 16), (2, 3, 16, 8)),      # A of lower rank
    ((2, 3, 8, 16), (3, 16, 8)),      # B of lower rank
    ((1, 3, 5, 7), (2, 1, 7, 4)),     # both broadcast, odd sizes
    ((2, 3, 1, 16), (1, 3, 16, 5)),   # one row
    ((2, 3, 0, 16), (2, 1, 16, 8)),   # no rows
])
def test_batched_matmul_whose_operands_broadcast_runs_as_a_kernel(a_shape, b_shape, precision):
    # Each operand's size-1 batch dims are read with no stride (codegen's broadcast_dims): one
    # kernel, fresh data, the bounds sanitizer on; it ran in torch before.
    engine = build_engine(_BatchedMatmul(), precision, example_inputs=(torch.randn(a_shape), torch.randn(b_shape)))
    assert [s.kind for s in engine.plan.steps if s.kind == "torch"] == []
    a, b = torch.randn(a_shape), torch.randn(b_shape)
    got = run_engine(engine, a, b)[0].float()
    tol = 1e-5 if precision == "fp32" else 2e-2
    torch.testing.assert_close(got, _BatchedMatmul()(a, b), rtol=tol, atol=tol)
