"""The inverse of a sort's permutation, written as a scatter, as a sort of the permutation.

transformers' mixture-of-experts layers put their rows back in token order so:

    inverse = torch.empty_like(perm); inverse[perm] = torch.arange(n)

a ScatterND of 0..n-1 at the rows `perm` names. Where `perm` is the index output of a full sort
(a topk whose k is its whole axis), it holds every row once, so the scatter writes every element
of its target and gives the permutation's inverse, which is also the order that sorts `perm`: its
argsort, one launch of the sort kernel (its int64 keys are indices: group_kinds._is_index), where
a scatter would run in torch.
"""
from __future__ import annotations

import torch

from trident.compiler.group_kinds import through_views
from trident.compiler.ir import Graph, Node
from trident.compiler.passes.rewrite import Rebuild, rewrite

_VIEWS = ("reshape", "identity")


def invert_permutations(graph: Graph) -> Graph:
    producers = graph.producers()

    def rewrite_scatter(node: Node, rb: Rebuild):
        if node.op != "scatter_nd" or node.attrs.get("reduction", "none") != "none":
            return None
        target, rows, values = node.inputs
        t = graph.types[target]
        if t.rank != 1 or not t.is_static or t.dtype not in (torch.int32, torch.int64):
            return None
        n = t.shape[0]
        permutation = _full_sort_order(rows, n, graph, producers)
        counting = rb.constant(values)
        if permutation is None or counting is None or counting.dtype.is_floating_point or \
                not torch.equal(counting.flatten().to(torch.int64), torch.arange(n)):
            return None
        _, order = rb.builder.add("topk", [rb.value(permutation)], {"k": n, "axis": 0, "largest": False},
                                  name=node.name + "_argsort")
        if t.dtype == torch.int64:
            return rb.builder.add("identity", [order], {}, node.name, outputs=node.outputs)
        return rb.builder.add("cast", [order], {"dtype": t.dtype}, node.name, outputs=node.outputs)

    return rewrite(graph, rewrite_scatter)


def _full_sort_order(rows: str, n: int, graph: Graph, producers: dict[str, Node]) -> str | None:
    """The 1-D permutation of n rows that `rows` ([n, 1] row indices) is a view of, when it is a
    full sort's index output; else None."""
    value = through_views(rows, producers, _VIEWS)
    sort = producers.get(value)
    if sort is None or sort.op != "topk" or value != sort.outputs[1] or sort.attrs["k"] != n:
        return None
    return value if tuple(graph.types[value].shape) == (n,) else None
