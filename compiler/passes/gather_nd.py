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
        return _as_gather(rb, node, x, indices, node.attrs.get("batch_dims", 0))

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
