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
from trident.compiler.passes.rewrite import Rebuild, rewrite

_TOLERANCE = 1e-3


def _scalar(graph: Graph, value: str) -> float | None:
    tensor = graph.constants.get(value)
    if tensor is None or tensor.numel() != 1 or not tensor.dtype.is_floating_point:
        return None
    return float(tensor.reshape(()))


def _is(graph: Graph, value: str, target: float) -> bool:
    c = _scalar(graph, value)
    return c is not None and math.isclose(c, target, rel_tol=_TOLERANCE)


def _erf_argument(node: Node | None, graph: Graph) -> str | None:
    """x, where `node` computes x / sqrt(2) or x * (1 / sqrt(2))."""
    if node is None:
        return None
    a, b = node.inputs[:2] if len(node.inputs) == 2 else (None, None)
    if node.op == "div" and _is(graph, b, math.sqrt(2)):
        return a
    if node.op == "mul":
        for x, c in ((a, b), (b, a)):
            if _is(graph, c, math.sqrt(0.5)):
                return x
    return None


def _one_plus_erf(value: str, graph: Graph, producers) -> str | None:
    """x, where `value` is 1 + erf(x / sqrt 2)."""
    node = producers.get(value)
    if node is None or node.op != "add" or len(node.inputs) != 2:
        return None
    for one, term in (node.inputs, node.inputs[::-1]):
        erf = producers.get(term)
        if _is(graph, one, 1.0) and erf is not None and erf.op == "erf":
            return _erf_argument(producers.get(erf.inputs[0]), graph)
    return None


def _factors(node: Node, graph: Graph, producers, consumers) -> list[str]:
    """The operands of a product, through the inner muls that only this product reads."""
    out = []
    for value in node.inputs:
        inner = producers.get(value)
        if (inner is not None and inner.op == "mul" and len(consumers.get(value, [])) == 1
                and value not in graph.outputs):
            out += _factors(inner, graph, producers, consumers)
        else:
            out.append(value)
    return out


def _gelu_input(node: Node, graph: Graph, producers, consumers) -> str | None:
    """x, where `node` (a mul) computes x * 0.5 * (1 + erf(x / sqrt 2)) of x's shape."""
    factors = _factors(node, graph, producers, consumers)
    if len(factors) != 3:
        return None
    for half in [f for f in factors if _is(graph, f, 0.5)]:
        rest = list(factors)
        rest.remove(half)
        for e, x in (rest, rest[::-1]):
            if _one_plus_erf(e, graph, producers) == x and graph.types[x].shape == graph.types[node.outputs[0]].shape:
                return x
    return None


def fold_gelu(graph: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt 2)), however associated, -> gelu(x)."""
    producers, consumers = graph.producers(), graph.consumers()
    found = {node.outputs[0]: x for node in graph.nodes if node.op == "mul"
             for x in [_gelu_input(node, graph, producers, consumers)] if x is not None}
    if not found:
        return graph

    def fold(node: Node, rb: Rebuild):
        x = found.get(node.outputs[0])
        if x is None:
            return None
        return rb.builder.add("gelu", [rb.value(x)], {"approximate": "none"}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))
