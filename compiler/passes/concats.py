"""Concats of many pieces as a two-level tree of concats of a few.

A concat computes in a pointwise kernel where each lane tries every piece with a masked load
(codegen/moves.py), which pays off up to fusion.MAX_CONCAT_PIECES pieces. DenseNet concatenates
up to 32 feature maps, then runs batch norm and ReLU on the result: written as concats of at
most MAX_CONCAT_PIECES pieces each, then one concat of those, the inner concats are kernels of
their own and the outer one fuses with the batch norm and ReLU that follow. The data crosses
memory as often as with one torch.cat and a separate batch-norm kernel (each element is read and
written twice), with no op left in torch.
"""
from __future__ import annotations

from trident.compiler.fusion import MAX_CONCAT_PIECES
from trident.compiler.ir import Graph, Node
from trident.compiler.passes.rewrite import Rebuild, rewrite


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
