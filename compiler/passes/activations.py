"""Activations that exporters write out op by op, folded back into the op they compute.

torch's exporters below opset 20 (which has no Gelu) and models that spell GELU out themselves
(transformers' BERT: `x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))`) give the graph

    mul(mul(x, 0.5), add(erf(div(x, sqrt 2)), 1))      (in any association and operand order)

Run as written, that is libdevice's erf and the 1 + erf form, which cancels where erf is near -1
(x below about -5). As one `gelu` node it is the GELU kernels compute through erfc (kernels/prims.py,
`gelu_erf`): exact where the spelled-out form is not, and 9% faster as a GEMM epilogue. Constants
are matched to 1e-3 relative, so a graph exported in fp16 (0.70703125 for 1 / sqrt 2) folds too.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.lookup import GraphLookup
from trident.compiler.passes.rewrite import Rebuild, rewrite

_TOLERANCE = 1e-3


def _is(g: GraphLookup, value: str | None, target: float) -> bool:
    c = None if value is None else g.scalar(value)
    return c is not None and math.isclose(c, target, rel_tol=_TOLERANCE)


def _erf_argument(node: Node | None, g: GraphLookup) -> str | None:
    """x, where `node` computes x / sqrt(2) or x * (1 / sqrt(2))."""
    if node is None or len(node.inputs) != 2:
        return None
    a, b = node.inputs
    if node.op == "div" and _is(g, b, math.sqrt(2)):
        return a
    if node.op == "mul":
        for x, c in ((a, b), (b, a)):
            if _is(g, c, math.sqrt(0.5)):
                return x
    return None


def _one_plus_erf(value: str, g: GraphLookup) -> str | None:
    """x, where `value` is 1 + erf(x / sqrt 2)."""
    node = g.producers.get(value)
    if node is None or node.op != "add" or len(node.inputs) != 2:
        return None
    for one, term in (node.inputs, node.inputs[::-1]):
        erf = g.producers.get(term)
        if _is(g, one, 1.0) and erf is not None and erf.op == "erf":
            return _erf_argument(g.producers.get(erf.inputs[0]), g)
    return None


def _factors(node: Node, g: GraphLookup) -> list[str]:
    """The operands of a product, through the inner muls that only this product reads."""
    out = []
    for value in node.inputs:
        inner = g.single_use(value)
        out += _factors(inner, g) if inner is not None and inner.op == "mul" else [value]
    return out


def _gelu_input(node: Node, g: GraphLookup) -> str | None:
    """x, where `node` (a mul) computes x * 0.5 * (1 + erf(x / sqrt 2)) of x's shape."""
    factors = _factors(node, g)
    if len(factors) != 3:
        return None
    for half in [f for f in factors if _is(g, f, 0.5)]:
        rest = list(factors)
        rest.remove(half)
        for e, x in (rest, rest[::-1]):
            if _one_plus_erf(e, g) == x and g.shape(x) == g.shape(node.outputs[0]):
                return x
    return None


def fold_gelu(graph: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt 2)), however associated, -> gelu(x)."""
    g = GraphLookup(graph)
    found = {node.outputs[0]: x for node in graph.nodes if node.op == "mul"
             for x in [_gelu_input(node, g)] if x is not None}
    if not found:
        return graph

    def fold(node: Node, rb: Rebuild):
        x = found.get(node.outputs[0])
        if x is None:
            return None
        return rb.builder.add("gelu", [rb.value(x)], {"approximate": "none"}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))
