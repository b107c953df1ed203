"""A ScatterND, as a ScatterElements of rows the scatter kernel runs.

A ScatterND whose indices name k coordinates (`indices` [..., k]) writes whole slices of its
target past its first k dims: `x[rows] = updates` (k = 1: torch's index_put of one index tensor,
ONNX exports of row writes into a cache), `x[b, t] = v` (k = 2). With the target seen as [R, C]
(R the first k dims as one, C the elements of a row) and the updates as [U, C], that is a
ScatterElements along dim 0 whose index is each index's flat row (passes/flat_index.py: an
index with a coordinate out of its dim lands past the rows) spread over the columns:
codegen/scatter.py holds each column of R positions and applies its U updates in order, so a
repeated row takes the last update (ScatterND leaves the order open) or accumulates (add, mul,
max, min). The index is checked before uncaptured runs as every
ScatterElements' is, and negative rows count from the end, as ScatterND's do.

Rewritten so where the kernel takes the result (group_kinds.scatter_refusal: rows of up to
MAX_ROW, up to MAX_SCATTER_UPDATES updates). A plain ScatterND of more updates (a prefill's keys
written into a cache, Informer's sparse queries) finds each row's last writer instead: the
largest update number whose index names the row, a max over a [rows, updates] comparison that
fusion keeps in registers (a reduction of up to MAX_ROW updates), then a gather of the winners'
rows beside the target's. The indices pass through a checked gather first, so one out of range
is the gather's error, as the scatter's would be. Other ScatterNDs (accumulating ones of many
updates, comparisons past LAST_WRITER_BUDGET), and the permutation inverses passes/permutations.py
made sorts, are left as they are.
"""
from __future__ import annotations

import math

import torch

from trident.compiler import group_kinds
from trident.compiler.ir import Graph, Node, TensorType
from trident.compiler.passes.flat_index import flat_rows
from trident.compiler.passes.rewrite import Rebuild, rewrite

# The most row x update comparisons the last-writer lowering makes (one pass over them, about a
# 32 K cache's rows against a 2 K prefill); past it the ScatterND runs in torch.
LAST_WRITER_BUDGET = 1 << 26


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
        if x.dtype != updates.dtype:
            return None
        refusal = group_kinds.scatter_types_refusal(
            TensorType((rows, columns), x.dtype), TensorType((count, columns), indices.dtype), 0)
        if refusal is not None and not _last_writer_takes(node, rows, count, x.dtype):
            return None
        add = rb.builder.add
        target, index, values = (rb.value(v) for v in node.inputs)
        if depth > 1:  # one flat row per index (passes/flat_index.py)
            index = flat_rows(rb.builder, index, list(x.shape[:depth]), places, rows, node.name)
        if refusal is not None:
            return _last_writer(rb, node, target, index, values, rows, columns, count)
        (table,) = add("reshape", [target], {"shape": [rows, columns]}, node.name + "_rows")
        (index,) = add("reshape", [index], {"shape": [count, 1]}, node.name + "_row_index")
        (index,) = add("expand", [index], {"shape": [count, columns]}, node.name + "_spread")
        (values,) = add("reshape", [values], {"shape": [count, columns]}, node.name + "_updates")
        (written,) = add("scatter_elements", [table, index, values],
                         {"axis": 0, "reduction": node.attrs.get("reduction", "none")}, node.name + "_scatter")
        return add("reshape", [written], {"shape": list(x.shape)}, node.name, outputs=node.outputs)

    return rewrite(graph, rewrite_scatter)


def _last_writer_takes(node: Node, rows: int, count: int, dtype) -> bool:
    return (node.attrs.get("reduction", "none") == "none" and count <= group_kinds.MAX_ROW
            and rows * count <= LAST_WRITER_BUDGET and dtype in group_kinds.POINTWISE_DTYPES)


def _last_writer(rb: Rebuild, node: Node, target: str, index: str, values: str, rows: int,
                 columns: int, count: int):
    """x[index[j]] = updates[j], j in order, as a gather: each row takes the row of its last
    writer (the largest j naming it), or keeps its own."""
    b, name = rb.builder, node.name
    add1 = b.add1

    def numbers(n, shape):
        return b.constant(torch.arange(n, dtype=torch.int64).reshape(shape), "numbers")

    def integer(value):
        return b.constant(torch.tensor(value, dtype=torch.int64), "int")

    index = add1("reshape", [index], {"shape": [count]}, name + "_row_index")
    # counted from the end where negative, and checked: an index out of range is the gather's error
    index = add1("gather", [numbers(rows, [rows]), index], {"axis": 0}, name + "_checked")
    index = add1("reshape", [index], {"shape": [1, count]}, name + "_row_index")
    named = add1("equal", [index, numbers(rows, [rows, 1])], {}, name + "_names_row")
    writers = add1("where", [named, numbers(count, [1, count]), integer(-1)], {}, name + "_writers")
    last = add1("reduce_max", [writers], {"axes": [1], "keepdims": False}, name + "_last_writer")
    written = add1("less", [integer(-1), last], {}, name + "_written")
    last = add1("where", [written, last, integer(0)], {}, name + "_winner")
    table = add1("reshape", [target], {"shape": [rows, columns]}, name + "_rows")
    updates = add1("reshape", [values], {"shape": [count, columns]}, name + "_updates")
    taken = add1("gather", [updates, last], {"axis": 0}, name + "_taken")
    written = add1("reshape", [written], {"shape": [rows, 1]}, name + "_written")
    result = add1("where", [written, taken, table], {}, name + "_scatter")
    return b.add("reshape", [result], {"shape": list(b.type_of(target).shape)}, name, outputs=node.outputs)
