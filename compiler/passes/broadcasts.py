"""Keep broadcasts as views, out of the elementwise ops that would materialize them.

transformers builds the padding mask of an SDPA as and(all-True [1, 1, L, 1], mask [B, 1, 1, L]),
expands it to [B, 1, L, L] and turns it into a 0 / -inf bias: as written, a [B, 1, L, L] fp32 tensor
that every head's attention reads in full (400 MB a layer for BERT-base at batch 32, sequence 512).
Rewritten here it is the bias of the [B, 1, 1, L] mask, expanded by a stride-0 view: the attention
kernel reads it as one row per key block (`MASK_PER_KEY`), the mask kernel writes B * L values.

Rules, in one walk over the graph (each sees the rewritten producers of its inputs):
  and(x, all True) / or(x, all False)      -> x, expanded to the op's output shape
  where(all True, a, b) / where(all False, a, b) -> a / b, expanded (torch's and of a traced mask)
  expand(x) to x's own shape               -> x;   expand(expand(x)) -> expand(x)
  elementwise(expand(x), scalar constants) -> expand(elementwise(x, scalars)), also with several
    operands expanded from one shape: op(expand(x), expand(y)) -> expand(op(x, y))
"""
from __future__ import annotations

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.ops.registry import OPS, Kind
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

# and(x, c) is x where c is all True; or(x, c) is x where c is all False
_NEUTRAL = {"logical_and": True, "logical_or": False}


def _expanded(rb: Rebuild, value: str, shape: tuple, name: str) -> str:
    if rb.shape(value) == shape:
        return value
    return rb.builder.add1("expand", [value], {"shape": list(shape)}, name=name)


def _drop_neutral(node: Node, rb: Rebuild, out_shape: tuple) -> list[str] | None:
    neutral = _NEUTRAL[node.op]
    for k, other in ((0, 1), (1, 0)):
        c = rb.constant(node.inputs[k])
        kept = rb.value(node.inputs[other])
        if (c is not None and c.dtype == torch.bool and bool((c == neutral).all())
                and rb.builder.type_of(kept).dtype == torch.bool):
            return [_expanded(rb, kept, out_shape, node.name)]
    return None


def _constant_choice(node: Node, rb: Rebuild, out_shape: tuple) -> list[str] | None:
    """where(c, a, b) with a constant c that is all True (all False): a (b), expanded."""
    c = rb.constant(node.inputs[0])
    if c is None or c.dtype != torch.bool or not c.numel() or not (bool(c.all()) or not bool(c.any())):
        return None
    chosen = rb.value(node.inputs[1] if bool(c.all()) else node.inputs[2])
    return [_expanded(rb, chosen, out_shape, node.name)]


def _sink_expand(node: Node, rb: Rebuild, out_shape: tuple) -> list[str] | None:
    """elementwise(expand(x), expand(y).., scalars..) -> expand(elementwise(x, y.., scalars..)),
    where x, y.. have one shape (transformers 4.x's masked_fill(inverted, inverted.bool(), min)
    reads its expanded mask twice)."""
    inputs = [rb.value(i) for i in node.inputs]
    scalars = [rb.constant(i) is not None and rb.constant(i).numel() == 1 for i in node.inputs]
    expands = [rb.producer(v) for v in inputs]
    spread = [k for k, e in enumerate(expands) if e is not None and e.op == "expand" and not scalars[k]]
    if not spread or len(spread) + sum(scalars) != len(inputs):
        return None
    sources = [expands[k].inputs[0] for k in spread]
    if len({rb.shape(v) for v in sources}) != 1:
        return None
    for k, source in zip(spread, sources):
        inputs[k] = source
    small = rb.builder.add1(node.op, inputs, node.attrs, name=node.name)
    return [_expanded(rb, small, out_shape, f"{node.name}.expand")]


def simplify_broadcasts(graph: Graph) -> Graph:
    """Apply the module's rules (dead producers are dropped)."""
    def simplify(node: Node, rb: Rebuild) -> list[str] | None:
        if len(node.outputs) != 1 or node.outputs[0] in graph.outputs:
            return None  # (an engine's outputs stay dense tensors of their own)
        out_shape = tuple(graph.types[node.outputs[0]].shape)
        if not all(isinstance(d, int) for d in out_shape):
            return None
        if node.op in _NEUTRAL:
            return _drop_neutral(node, rb, out_shape)
        if node.op == "where" and (chosen := _constant_choice(node, rb, out_shape)) is not None:
            return chosen
        if node.op == "expand":
            source = rb.value(node.inputs[0])
            inner = rb.producer(source)
            if inner is not None and inner.op == "expand":
                source = inner.inputs[0]
            return [_expanded(rb, source, out_shape, node.name)]
        definition = OPS.get(node.op)
        if definition is not None and definition.kind == Kind.ELEMENTWISE:
            return _sink_expand(node, rb, out_shape)
        return None

    return eliminate_dead_code(rewrite(graph, simplify))
