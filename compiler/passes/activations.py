"""Activations that exporters write out op by op, folded back into the op they compute.

torch's exporters below opset 20 (which has no Gelu) and models that spell GELU out themselves
(transformers' BERT: `x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))`) give the graph

    mul(mul(x, 0.5), add(erf(div(x, sqrt 2)), 1))      (in any association and operand order)

Run as written, that is libdevice's erf and the 1 + erf form, which cancels where erf is near -1
(x below about -5). As one `gelu` node it is the GELU kernels compute through erfc (kernels/prims.py,
`gelu_erf`): exact where the spelled-out form is not, and 9% faster as a GEMM epilogue. Constants
are matched to 1e-3 relative, so a graph exported in fp16 (0.70703125 for 1 / sqrt 2) folds too.

The tanh form, 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3))), is GPT-2's (transformers'
`gelu_new`, written with pow(x, 3)) and `gelu_fast`'s (x * c * (1 + 0.044715 * x * x)): the
argument of the tanh is matched as a polynomial in x, however written, and the product becomes
`gelu` with approximate="tanh", which kernels compute as x / (1 + exp(-2 sqrt(2 / pi) u)) (prims'
`gelu_tanh`: one exp2, where 1 + tanh cancels for negative x).
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.lookup import GraphLookup
from trident.compiler.passes.rewrite import Rebuild, rewrite

_TOLERANCE = 1e-3
_SQRT_2_OVER_PI = math.sqrt(2 / math.pi)
_CUBIC = 0.044715  # the tanh form's x^3 coefficient inside the tanh's argument
_MAX_DEGREE = 3


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


def _one_plus(value: str, op: str, g: GraphLookup) -> str | None:
    """a, where `value` is 1 + op(a) (erf or tanh), in either order."""
    node = g.producers.get(value)
    if node is None or node.op != "add" or len(node.inputs) != 2:
        return None
    for one, term in (node.inputs, node.inputs[::-1]):
        inner = g.producers.get(term)
        if _is(g, one, 1.0) and inner is not None and inner.op == op:
            return inner.inputs[0]
    return None


def _one_plus_erf(value: str, g: GraphLookup) -> str | None:
    """x, where `value` is 1 + erf(x / sqrt 2)."""
    argument = _one_plus(value, "erf", g)
    return None if argument is None else _erf_argument(g.producers.get(argument), g)


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


Terms = dict[int, float]  # a polynomial's coefficients by degree


def _add_terms(a: Terms, b: Terms, sign: float = 1.0) -> Terms:
    out = dict(a)
    for degree, c in b.items():
        out[degree] = out.get(degree, 0.0) + sign * c
    return out


def _mul_terms(a: Terms, b: Terms) -> Terms | None:
    """a * b, or None past _MAX_DEGREE."""
    out: Terms = {}
    for da, ca in a.items():
        for db, cb in b.items():
            if da + db > _MAX_DEGREE:
                return None
            out[da + db] = out.get(da + db, 0.0) + ca * cb
    return out


def _polynomial(value: str, x: str, g: GraphLookup, depth: int = 8) -> Terms | None:
    """`value` as a polynomial of degree <= 3 in the tensor x ({degree: coefficient}), through sums,
    differences, negation, products, division by a constant and powers 1-3 of x and scalar
    constants; None where anything else enters."""
    if value == x:
        return {1: 1.0}
    c = g.scalar(value)
    if c is not None:
        return {0: c}
    node = g.producers.get(value)
    if node is None or depth == 0 or node.op not in ("add", "sub", "neg", "mul", "div", "pow"):
        return None
    terms = _polynomial(node.inputs[0], x, g, depth - 1)
    if terms is None:
        return None
    if node.op == "neg":
        return {d: -c for d, c in terms.items()}
    if node.op in ("div", "pow"):
        k = g.scalar(node.inputs[1])
        if node.op == "div":
            return {d: c / k for d, c in terms.items()} if k else None
        if k not in (1.0, 2.0, 3.0):
            return None
        power: Terms | None = terms
        for _ in range(int(k) - 1):
            power = _mul_terms(power, terms) if power is not None else None
        return power
    other = _polynomial(node.inputs[1], x, g, depth - 1)
    if other is None:
        return None
    return _mul_terms(terms, other) if node.op == "mul" else \
        _add_terms(terms, other, 1.0 if node.op == "add" else -1.0)


def _is_terms(terms: Terms, want: Terms) -> bool:
    """terms == want to _TOLERANCE (relative, per coefficient), zero coefficients aside."""
    for degree in set(terms) | set(want):
        got, target = terms.get(degree, 0.0), want.get(degree, 0.0)
        if target == 0.0 and got != 0.0 or target != 0.0 and not math.isclose(got, target, rel_tol=_TOLERANCE):
            return False
    return True


def _tanh_gelu_input(node: Node, g: GraphLookup) -> str | None:
    """x, where `node` (a mul) computes 0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 x^3))) of
    x's shape: its factors in any order, the tanh's argument written any way."""
    factors = _factors(node, g)
    for i, factor in enumerate(factors):
        argument = _one_plus(factor, "tanh", g)
        rest = factors[:i] + factors[i + 1:]
        tensors = [f for f in rest if g.scalar(f) is None]
        if argument is None or len(tensors) != 1 or g.shape(tensors[0]) != g.shape(node.outputs[0]):
            continue
        x = tensors[0]
        half = math.prod(g.scalar(f) for f in rest if f != x)
        terms = _polynomial(argument, x, g)
        if math.isclose(half, 0.5, rel_tol=_TOLERANCE) and terms is not None and \
                _is_terms(terms, {1: _SQRT_2_OVER_PI, 3: _SQRT_2_OVER_PI * _CUBIC}):
            return x
    return None


def fold_gelu(graph: Graph) -> Graph:
    """x * 0.5 * (1 + erf(x / sqrt 2)), however associated, -> gelu(x); the tanh form ->
    gelu(x, approximate="tanh")."""
    g = GraphLookup(graph)
    found = {}
    for node in graph.nodes:
        if node.op != "mul":
            continue
        x = _gelu_input(node, g)
        if x is not None:
            found[node.outputs[0]] = (x, "none")
        elif (x := _tanh_gelu_input(node, g)) is not None:
            found[node.outputs[0]] = (x, "tanh")
    if not found:
        return graph

    def fold(node: Node, rb: Rebuild):
        match = found.get(node.outputs[0])
        if match is None:
            return None
        x, approximate = match
        return rb.builder.add("gelu", [rb.value(x)], {"approximate": approximate}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))
