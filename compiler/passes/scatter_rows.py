"""A ScatterND, as a ScatterElements of rows the scatter kernel runs.

A ScatterND whose indices name k coordinates (`indices` [..., k]) writes whole slices of its
target past its first k dims: `x[rows] = updates` (k = 1: torch's index_put of one index tensor,
ONNX exports of row writes into a cache), `x[b, t] = v` (k = 2). With the target seen as [R, C]
(R the first k dims as one, C the elements of a row) and the updates as [U, C], that is a
ScatterElements along dim 0 whose index is each index's flat row (passes/flat_index.py: an
index with a coordinate out of its dim lands past the rows) spread over the columns:
codegen/scatter.py holds each column of R positions and applies its U updates in order, so a repeated row takes the last update (ScatterND leaves the order open) or
accumulates (add, mul, max, min). The index is checked before uncaptured runs as every
ScatterElements' is, and negative rows count from the end, as ScatterND's do.

Rewritten only where the kernel takes the result (group_kinds.scatter_refusal: rows of up to
MAX_ROW, up to MAX_SCATTER_UPDATES updates); other ScatterNDs, and the permutation inverses
passes/permutations.py made sorts, are left as they are.
"""
from __future__ import annotations

import math

from trident.compiler import group_kinds
from trident.compiler.ir import Graph, Node, TensorType
from trident.compiler.passes.flat_index import flat_rows
from trident.compiler.passes.rewrite import Rebuild, rewrite


def scatter_rows(graph: Graph) -> Graph:
    def rewrite_scatter(node: Node, rb: Rebuild):
        if node.op != "scatter_nd":
            return None
        x, indices, updates = (graph.types[v] for v in node.inputs)
        if not (x.is_static and indices.is_static and indices.rank and 0 < indices.shape[-1] <= x.rank):
            return None
        depth = indices.shape[-1]
        rows, columns = math.prod(x.shape[:depth]), math.prod(x.shape[depth:])
        places = list(indices.shape[:-1])
        count = math.prod(places)
        if x.dtype != updates.dtype or group_kinds.scatter_types_refusal(
                TensorType((rows, columns), x.dtype), TensorType((count, columns), indices.dtype), 0) is not None:
            return None
        add = rb.builder.add
        target, index, values = (rb.value(v) for v in node.inputs)
        if depth > 1:  # one flat row per index (passes/flat_index.py)
            index = flat_rows(rb.builder, index, list(x.shape[:depth]), places, rows, node.name)
        (table,) = add("reshape", [target], {"shape": [rows, columns]}, node.name + "_rows")
        (index,) = add("reshape", [index], {"shape": [count, 1]}, node.name + "_row_index")
        (index,) = add("expand", [index], {"shape": [count, columns]}, node.name + "_spread")
        (values,) = add("reshape", [values], {"shape": [count, columns]}, node.name + "_updates")
        (written,) = add("scatter_elements", [table, index, values],
                         {"axis": 0, "reduction": node.attrs.get("reduction", "none")}, node.name + "_scatter")
        return add("reshape", [written], {"shape": list(x.shape)}, node.name, outputs=node.outputs)

    return rewrite(graph, rewrite_scatter)

