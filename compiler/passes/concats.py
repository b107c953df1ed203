"""Concat rewrites: negated pieces as a sign after the concat, and wide concats as trees.

`fold_negated_pieces`: rotary embeddings' rotate_half (Llama, GPT-NeoX, Mistral) writes
cat(-x2, x1). A concat is not an elementwise op, so it cannot be the epilogue of the neg, which
then runs as a kernel of its own over half of q and of k in every layer. As
mul(cat(x2, x1), sign), with sign -1 over the negated pieces and +1 elsewhere along the axis, the
sign is one more multiply in the concat's pointwise kernel (x * -1 is -x exactly: signed zeros,
infinities and NaNs included).

`split_wide_concats`: concats of many pieces as a two-level tree of concats of a few.

A concat computes in a pointwise kernel where each lane tries every piece with a masked load
(codegen/moves.py), which pays off up to group_kinds.MAX_CONCAT_PIECES pieces. DenseNet concatenates
up to 32 feature maps, then runs batch norm and ReLU on the result: written as concats of at
most MAX_CONCAT_PIECES pieces each, then one concat of those, the inner concats are kernels of
their own and the outer one fuses with the batch norm and ReLU that follow. The data crosses
memory as often as with one torch.cat and a separate batch-norm kernel (each element is read and
written twice), with no op left in torch.
"""
from __future__ import annotations

import torch

from trident.compiler.group_kinds import MAX_CONCAT_PIECES
from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.lookup import GraphLookup
from trident.compiler.passes.rewrite import Rebuild, rewrite


def fold_negated_pieces(graph: Graph) -> Graph:
    """concat(..., neg(a), ...) of a float type -> mul(concat(..., a, ...), sign): see above."""
    g = GraphLookup(graph)

    def fold(node: Node, rb: Rebuild):
        if node.op != "concat" or not graph.types[node.outputs[0]].dtype.is_floating_point:
            return None
        negated = [_negation(g.single_use(v)) for v in node.inputs]
        if not any(negated):
            return None
        rank = len(g.shape(node.outputs[0]))
        axis = node.attrs["axis"] % rank
        if axis != rank - 1:  # the sign is a constant as long as the axis: keep it off dims a profile varies
            return None
        signs = [torch.full((g.shape(v)[axis],), -1.0 if n else 1.0) for v, n in zip(node.inputs, negated)]
        sign = torch.cat(signs).reshape([-1 if d == axis else 1 for d in range(rank)])
        pieces = [rb.value(n.inputs[0] if n else v) for v, n in zip(node.inputs, negated)]
        cat = rb.builder.add1("concat", pieces, dict(node.attrs), name=f"{node.name}_unsigned")
        dtype = graph.types[node.outputs[0]].dtype
        return rb.builder.add("mul", [cat, rb.builder.constant(sign.to(dtype), f"{node.name}_sign")], name=node.name,
                              outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, fold))


def _negation(node: Node | None) -> Node | None:
    return node if node is not None and node.op == "neg" else None


def split_wide_concats(graph: Graph) -> Graph:
    def split(node: Node, rb: Rebuild):
        if node.op != "concat" or len(node.inputs) <= MAX_CONCAT_PIECES:
            return None
        pieces = [rb.value(v) for v in node.inputs]
        axis = node.attrs["axis"]
        while len(pieces) > MAX_CONCAT_PIECES:
            pieces = [_concat(rb, pieces[i:i + MAX_CONCAT_PIECES], axis, f"{node.name}_part{i}")
                      for i in range(0, len(pieces), MAX_CONCAT_PIECES)]
        return rb.builder.add("concat", pieces, dict(node.attrs), node.name, outputs=node.outputs)

    return rewrite(graph, split)


def _concat(rb: Rebuild, pieces: list[str], axis: int, name: str) -> str:
    if len(pieces) == 1:
        return pieces[0]
    return rb.builder.add1("concat", pieces, {"axis": axis}, name=name)
