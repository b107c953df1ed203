"""Einsum as the ops it is made of: transposes, reductions and one batched matmul.

Both frontends write torch.einsum / ONNX Einsum as the IR's `einsum` node (XLNet's and Funnel's
relative attention are einsums); this pass rewrites one of one or two operands with static
shapes as kernels' ops: each operand's letters that appear nowhere else are summed first; then the
letters both operands share and the output keeps are the batch, the ones they share and the
output drops are contracted (the matmul's K), the rest are each side's rows and columns, and the
product is laid out in the output's order. An ellipsis stands for the same leading dims in every
term. Other einsums (a letter twice in one term: a diagonal; three operands) stay one node, which
runs in torch and says so.
"""
from __future__ import annotations

import math

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite


class _Emitter:
    """What the lowering needs of a builder: emit an op, a value's shape, the node's name."""

    def __init__(self, rb: Rebuild, node: Node):
        self.rb, self.node_name = rb, node.name

    def emit(self, op: str, inputs: list, **attrs) -> str:
        return self.rb.builder.add1(op, inputs, attrs, name=self.node_name)

    def shape(self, value: str) -> tuple:
        return tuple(self.rb.builder.type_of(value).shape)

    def rank(self, value: str) -> int:
        return len(self.shape(value))


def lower_einsum(graph: Graph) -> Graph:
    """einsum nodes of one or two operands with static shapes -> transposes, sums, one matmul."""
    def lower(node: Node, rb: Rebuild):
        if node.op != "einsum" or not 1 <= len(node.inputs) <= 2:
            return None
        if not all(graph.types[v].is_static for v in list(node.inputs) + list(node.outputs)):
            return None
        cx = _Emitter(rb, node)
        try:
            out = _lower(cx, node.attrs["equation"], [rb.value(v) for v in node.inputs])
        except UnsupportedError:
            return None  # (the einsum node stays: torch runs it, and explain says so)
        return rb.builder.add("identity", [out], {}, node.name, outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, lower))


def _lower(cx, equation: str, operands):
    """torch.einsum of one or two operands as transposes, reshapes, reductions and one batched
    matmul (XLNet's and Funnel's relative attention): each operand's letters that appear nowhere
    else are summed first; then the letters both share and the output keeps are the batch, the ones
    they share and the output drops are contracted (the matmul's K), the rest are each side's rows
    and columns; the product is laid out in the output's order. An ellipsis stands for the same
    leading dims in every term."""
    inputs, output = _einsum_terms(cx, equation.replace(" ", ""), operands)
    if not 1 <= len(operands) <= 2 or any(len(set(term)) != len(term) for term in inputs + [output]):
        raise UnsupportedError(f'einsum "{cx.node_name}": "{equation}" (one or two operands, '
                               f"no letter twice in a term)")
    others = [set(output)] + [set(term) for term in inputs]
    xs, terms = [], []
    for k, (x, term) in enumerate(zip(operands, inputs)):  # sum each operand's own letters first
        elsewhere = set().union(*(o for j, o in enumerate(others) if j != k + 1))
        own = [term.index(c) for c in term if c not in elsewhere]
        if own:
            x = cx.emit("reduce_sum", [x], axes=own, keepdims=False)
            term = "".join(c for c in term if c in elsewhere)
        xs.append(x)
        terms.append(term)
    if len(xs) == 1:
        return _einsum_layout(cx, xs[0], terms[0], output)
    (a, b), (ta, tb) = xs, terms
    batch = [c for c in output if c in ta and c in tb]
    contracted = [c for c in ta if c in tb and c not in output]
    rows, cols = [c for c in ta if c not in tb], [c for c in tb if c not in ta]
    size = {c: n for t, x in ((ta, a), (tb, b)) for c, n in zip(t, cx.shape(x))}
    if any(n1 != n2 and 1 not in (n1, n2) for c in batch + contracted
           for n1, n2 in [(cx.shape(a)[ta.index(c)], cx.shape(b)[tb.index(c)])]):
        raise ShapeError(f'einsum "{cx.node_name}": "{equation}": operand sizes disagree')
    size.update({c: max(cx.shape(a)[ta.index(c)], cx.shape(b)[tb.index(c)]) for c in batch + contracted})
    sizes = lambda letters: [size[c] for c in letters]  # noqa: E731
    a = _einsum_layout(cx, a, ta, "".join(batch + rows + contracted), expand_to=size)
    b = _einsum_layout(cx, b, tb, "".join(batch + contracted + cols), expand_to=size)
    a = cx.emit("reshape", [a], shape=sizes(batch) + [math.prod(sizes(rows)), math.prod(sizes(contracted))])
    b = cx.emit("reshape", [b], shape=sizes(batch) + [math.prod(sizes(contracted)), math.prod(sizes(cols))])
    product = cx.emit("reshape", [cx.emit("matmul", [a, b])], shape=sizes(batch + rows + cols))
    return _einsum_layout(cx, product, "".join(batch + rows + cols), output)


def _einsum_terms(cx, equation: str, operands) -> tuple[list[str], str]:
    """The input terms and the output term, ellipses spelled out with letters no term uses, and
    the implicit output (every letter used once, in alphabetical order) written out."""
    lhs, _, rhs = equation.partition("->")
    inputs = lhs.split(",")
    if len(inputs) != len(operands):
        raise ShapeError(f'einsum "{cx.node_name}": "{equation}" names {len(inputs)} operands, '
                         f"got {len(operands)}")
    spare = [c for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ" if c not in equation]
    width = max((cx.rank(x) - len(term.replace("...", "")) for x, term in zip(operands, inputs)
                 if "..." in term), default=0)
    dots = "".join(spare[:width])
    spelled = [term.replace("...", dots[width - (cx.rank(x) - len(term.replace("...", ""))):])
               for x, term in zip(operands, inputs)]
    if "->" in equation:
        output = rhs.replace("...", dots)
    else:
        letters = "".join(spelled)
        output = dots + "".join(sorted(c for c in set(letters) if letters.count(c) == 1 and c not in dots))
    return spelled, output


def _einsum_layout(cx, x, term: str, target: str, expand_to: dict | None = None):
    """x with dims named by `term` transposed into `target`'s order (letters of target that term
    lacks become size-1 dims, expanded to expand_to's size where given)."""
    present = [c for c in target if c in term]
    perm = [term.index(c) for c in present]
    if perm != list(range(len(perm))):
        x = cx.emit("transpose", [x], perm=perm)
    if len(present) != len(target) or (expand_to and any(cx.shape(x)[k] != expand_to[c]
                                                         for k, c in enumerate(present))):
        shape = [cx.shape(x)[present.index(c)] if c in present else 1 for c in target]
        if shape != list(cx.shape(x)):
            x = cx.emit("reshape", [x], shape=shape)
        if expand_to:
            full = [expand_to[c] for c in target]
            if full != shape:
                x = cx.emit("expand", [x], shape=full)
    return x
