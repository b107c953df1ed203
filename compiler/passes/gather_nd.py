"""GatherND as a Gather of rows along dim 0, which the table-lookup kernel runs.

GatherND(x, indices; batch_dims=b) with indices [..., k] reads, for each index, the slice of x at
its k coordinates after the b batch dims it shares with x (`logits[arange(B), last_token]`,
exported by torch as a GatherND of k = 2). With x seen as rows [prod(batch) * prod(addressed),
rest...], that slice is one row, at the flat index

    batch_row * prod(addressed) + sum_j coordinate_j * stride_j

(passes/flat_index.py: negative coordinates count from the end; an index with a coordinate out of
its dim is set past the rows, so the gather's own check reports it, as GatherND would). The index
math runs in a pointwise kernel ahead of the lookup.

Lowered where the types are static; GatherNDs of one coordinate and no batch dims are Gathers
already (frontend/onnx/indexing.py).

A GatherND whose constant coordinates each give a place's own position along one of its dims is
x itself, rearranged: transformers builds its padding mask as `mask[arange(b)[:, None, None, None],
arange(s)[None, None, None, :]]`, exported as a GatherND of those aranges, stacked. It becomes
views and a broadcast of x (`_as_views`): no kernel, and no constant that depends on the sizes (the
flat rows of the lowering do, through the strides, and no probe's rows are a slice of the max
sizes' rows, so a shape-generic engine could not be built).
"""
from __future__ import annotations

import math

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.flat_index import flat_rows
from trident.compiler.passes.rewrite import Rebuild, rewrite


def lower_gather_nd(graph: Graph) -> Graph:
    def rewrite_gather(node: Node, rb: Rebuild):
        if node.op != "gather_nd":
            return None
        x, indices = (graph.types[v] for v in node.inputs)
        if not (x.is_static and indices.is_static and indices.rank and indices.shape[-1]) \
                or indices.dtype not in (torch.int32, torch.int64):
            return None
        batch_dims = node.attrs.get("batch_dims", 0)
        return (batch_dims == 0 and _as_views(rb, node, x)) or _as_gather(rb, node, x, indices, batch_dims)

    return rewrite(graph, rewrite_gather)


def _as_gather(rb: Rebuild, node: Node, x, indices, batch_dims: int) -> list[str]:
    b = rb.builder
    depth = indices.shape[-1]
    batch, addressed = list(x.shape[:batch_dims]), list(x.shape[batch_dims:batch_dims + depth])
    rest, places = list(x.shape[batch_dims + depth:]), list(indices.shape[:-1])
    rows = math.prod(batch) * math.prod(addressed)
    first_row = None
    if batch:  # each index's own batch row
        first = torch.arange(math.prod(batch), dtype=torch.int64) * math.prod(addressed)
        first_row = b.constant(first.reshape(batch + [1] * (len(places) - batch_dims)), node.name + "_batch_rows")
    flat = flat_rows(b, rb.value(node.inputs[1]), addressed, places, rows, node.name, first_row)
    table = b.add1("reshape", [rb.value(node.inputs[0])], {"shape": [rows] + rest}, node.name + "_rows")
    return b.add("gather", [table, flat], {"axis": 0}, node.name, outputs=node.outputs)


def _as_views(rb: Rebuild, node: Node, x) -> list[str] | None:
    """x with its addressed dims moved to the places whose positions the coordinates are, where
    every coordinate is one (else None)."""
    coordinates = rb.constant(node.inputs[1])
    if coordinates is None or coordinates.numel() == 0:
        return None
    depth, places = coordinates.shape[-1], list(coordinates.shape[:-1])
    sizes, rest = list(x.shape[:depth]), list(x.shape[depth:])
    targets = _position_dims(coordinates, sizes)
    if targets is None:
        return None
    b, name = rb.builder, node.name
    kept = [j for j, d in enumerate(targets) if d is not None]
    y = rb.value(node.inputs[0])
    if len(kept) < depth:  # coordinates that are 0 in a dim of 1
        y = b.add1("reshape", [y], {"shape": [sizes[j] for j in kept] + rest}, name + "_kept")
    order = sorted(range(len(kept)), key=lambda i: targets[kept[i]])
    if order != sorted(order):
        perm = order + list(range(len(kept), len(kept) + len(rest)))
        y = b.add1("transpose", [y], {"perm": perm}, name + "_to_places")
    used = {targets[j] for j in kept}
    spread = [places[d] if d in used else 1 for d in range(len(places))] + rest
    out = places + rest
    if spread == out:
        return b.add("reshape", [y], {"shape": out}, name, outputs=node.outputs)
    y = b.add1("reshape", [y], {"shape": spread}, name + "_at_places")
    return b.add("expand", [y], {"shape": out}, name, outputs=node.outputs)


def _position_dims(coordinates: torch.Tensor, sizes: list[int]) -> list[int | None] | None:
    """For each coordinate j, the place dim d whose position it is everywhere (an arange over all of
    x's dim j along d, broadcast over the other dims; each d once), or None where it is 0 in a dim
    of 1; None when some coordinate is neither."""
    places = list(coordinates.shape[:-1])
    free, targets = set(range(len(places))), []
    for j, size in enumerate(sizes):
        c = coordinates[..., j].to(torch.int64)
        c = torch.where(c < 0, c + size, c)
        d = next((d for d in sorted(free) if places[d] == size and torch.equal(c, _positions(places, d))), None)
        if d is None and not (size == 1 and bool((c == 0).all())):
            return None
        free.discard(d)
        targets.append(d)
    return targets


def _positions(places: list[int], d: int) -> torch.Tensor:
    along = [n if e == d else 1 for e, n in enumerate(places)]
    return torch.arange(places[d], dtype=torch.int64).reshape(along).expand(places)
