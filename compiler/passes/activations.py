"""Activations that exporters write out op by op, folded back into the op they compute.

torch's exporters below opset 20 (which has no Gelu) and models that spell GELU out themselves
(transformers' BERT: `x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))`) give the graph

    mul(mul(x, 0.5), add(erf(div(x, sqrt 2)), 1))      (in any association and operand order)

Run as written, that is libdevice's erf and the 1 + erf form, which cancels where erf is near -1
(x below about -5). As one `gelu` node it is the GELU kernels compute through erfc (kernels/prims.py,
`gelu_erf`): exact where the spelled-out form is not, and 9% faster as a GEMM epilogue. Constants
are matched to 1e-3 relative, so a graph exported in fp16 (0.70703125 for 1 / sqrt 2) folds too.

The tanh form, 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), is GPT-2's (transformers'
`gelu_new`, written with pow(x, 3)) and `gelu_fast`'s (x * c * (1 + 0.044715 * x * x)); it becomes
`gelu` with approximate="tanh", which kernels compute as x / (1 + exp(-2 sqrt(2 / pi) u)) (prims'
`gelu_tanh`: one exp2, where 1 + tanh cancels for negative x).

Both are matched the same way: a product of x, scalars that multiply to 0.5 and 1 + erf(a) or
1 + tanh(a), where a, read as a polynomial in x however it is written, is the form's argument.
"""
from __future__ import annotations

import math

import numpy as np
from numpy.polynomial import Polynomial

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.lookup import GraphLookup
from trident.compiler.passes.rewrite import Rebuild, rewrite

_TOLERANCE = 1e-3
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
# The argument of erf or tanh in each GELU form, as a polynomial in x, and the `approximate` it folds to.
_FORMS = {"erf": (Polynomial([0.0, math.sqrt(0.5)]), "none"),
          "tanh": (Polynomial([0.0, _SQRT_2_OVER_PI, 0.0, _SQRT_2_OVER_PI * 0.044715]), "tanh")}
_MAX_DEGREE = 3


def _is(g: GraphLookup, value: str | None, target: float) -> bool:
    c = None if value is None else g.scalar(value)
    return c is not None and math.isclose(c, target, rel_tol=_TOLERANCE)


def _one_plus(value: str, op: str, g: GraphLookup) -> str | None:
    """a, where `value` is 1 + op(a), in either order."""
    node = g.producers.get(value)
    if node is None or node.op != "add" or len(node.inputs) != 2:
        return None
    for one, term in (node.inputs, node.inputs[::-1]):
        inner = g.producers.get(term)
        if _is(g, one, 1.0) and inner is not None and inner.op == op:
            return inner.inputs[0]
    return None


def _factors(node: Node, g: GraphLookup) -> list[str]:
    """The operands of a product, through the inner muls that only this product reads."""
    out = []
    for value in node.inputs:
        inner = g.single_use(value)
        out += _factors(inner, g) if inner is not None and inner.op == "mul" else [value]
    return out


def _polynomial(value: str, x: str, g: GraphLookup, depth: int = 8) -> Polynomial | None:
    """`value` as a polynomial of degree <= 3 in the tensor x, through sums, differences, negation,
    products, division by a constant and powers 1-3 of x and scalar constants; None where anything
    else enters."""
    if value == x:
        return Polynomial([0.0, 1.0])
    c = g.scalar(value)
    if c is not None:
        return Polynomial([c])
    node = g.producers.get(value)
    if node is None or depth == 0 or node.op not in ("add", "sub", "neg", "mul", "div", "pow"):
        return None
    p = _polynomial(node.inputs[0], x, g, depth - 1)
    if p is None:
        return None
    if node.op == "neg":
        return -p
    if node.op in ("div", "pow"):
        k = g.scalar(node.inputs[1])
        if node.op == "div":
            return p / k if k else None
        return p ** int(k) if k in (1.0, 2.0, 3.0) and p.degree() * k <= _MAX_DEGREE else None
    q = _polynomial(node.inputs[1], x, g, depth - 1)
    if q is None:
        return None
    if node.op == "mul":
        return p * q if p.degree() + q.degree() <= _MAX_DEGREE else None
    return p + q if node.op == "add" else p - q


def _is_polynomial(p: Polynomial, want: Polynomial) -> bool:
    """p == want, each coefficient to _TOLERANCE (relative); want's zero coefficients exactly."""
    n = _MAX_DEGREE + 1
    got, target = (np.pad(q.coef, (0, n - len(q.coef))) for q in (p, want))
    return all(math.isclose(a, b, rel_tol=_TOLERANCE) if b else a == 0 for a, b in zip(got, target))


def _gelu_match(node: Node, g: GraphLookup) -> tuple[str, str] | None:
    """(x, approximate), where `node` (a mul) computes 0.5 * x * (1 + erf(x / sqrt 2)) or the tanh
    form, of x's shape: its factors in any order, the argument written any way."""
    factors = _factors(node, g)
    for i, factor in enumerate(factors):
        rest = factors[:i] + factors[i + 1:]
        tensors = [f for f in rest if g.scalar(f) is None]
        if len(tensors) != 1 or g.shape(tensors[0]) != g.shape(node.outputs[0]):
            continue
        x = tensors[0]
        if not math.isclose(math.prod(g.scalar(f) for f in rest if f != x), 0.5, rel_tol=_TOLERANCE):
            continue
        for op, (argument, approximate) in _FORMS.items():
            a = _one_plus(factor, op, g)
            p = None if a is None else _polynomial(a, x, g)
            if p is not None and _is_polynomial(p, argument):
                return x, approximate
    return None


def fold_gelu(graph: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt 2)), however associated, -> gelu(x); the tanh form ->
    gelu(x, approximate="tanh")."""
    g = GraphLookup(graph)
    found = {node.outputs[0]: match for node in graph.nodes if node.op == "mul"
             for match in [_gelu_match(node, g)] if match is not None}
    if not found:
        return graph

    def fold(node: Node, rb: Rebuild):
        match = found.get(node.outputs[0])
        if match is None:
            return None
        x, approximate = match
        return rb.builder.add("gelu", [rb.value(x)], {"approximate": approximate}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))
