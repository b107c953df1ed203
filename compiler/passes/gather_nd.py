"""GatherND as a Gather of rows along dim 0, which the table-lookup kernel runs.

GatherND(x, indices; batch_dims=b) with indices [..., k] reads, for each index, the slice of x at
its k coordinates after the b batch dims it shares with x (`logits[arange(B), last_token]`,
exported by torch as a GatherND of k = 2). With x seen as rows [prod(batch) * prod(addressed),
rest...], that slice is one row, at the flat index

    batch_row * prod(addressed) + sum_j coordinate_j * stride_j

(the strides row-major over the addressed dims, each coordinate first counted from the end when
negative). A coordinate out of its dim could land on another valid row once flattened; where any
coordinate of an index is out of range, the flat index is set past the rows instead, so the
gather's own check (before uncaptured runs; the kernel clamps) reports it, as GatherND would.
The index math runs in a pointwise kernel ahead of the lookup.

Lowered where the types are static; GatherNDs of one coordinate and no batch dims are Gathers
already (frontend/onnx/indexing.py).
"""
from __future__ import annotations

import math

import torch

from trident.compiler.ir import Graph, Node
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
    name = node.name
    coordinates = b.add1("cast", [rb.value(node.inputs[1])], {"dtype": torch.int64}, name + "_int64")
    flat, outside = None, None
    for j, size in enumerate(addressed):
        c = b.add1("slice", [coordinates], {"starts": [j], "ends": [j + 1], "axes": [len(places)], "steps": [1]},
                   f"{name}_coordinate{j}")
        c = b.add1("reshape", [c], {"shape": places}, f"{name}_coordinate{j}")
        c = b.add1("where", [b.add1("less", [c, _int(b, 0)], {}, name + "_negative"),
                             b.add1("add", [c, _int(b, size)], {}, name + "_from_end"), c], {}, name + "_wrapped")
        out_of_range = b.add1("logical_or", [b.add1("less", [c, _int(b, 0)], {}, name + "_below"),
                                             b.add1("less", [_int(b, size - 1), c], {}, name + "_above")],
                              {}, name + "_out_of_range")
        stride = math.prod(addressed[j + 1:])
        term = c if stride == 1 else b.add1("mul", [c, _int(b, stride)], {}, name + "_term")
        flat = term if flat is None else b.add1("add", [flat, term], {}, name + "_flat")
        outside = out_of_range if outside is None else b.add1("logical_or", [outside, out_of_range], {},
                                                              name + "_outside")
    if batch:  # each index's own batch row
        first = torch.arange(math.prod(batch), dtype=torch.int64) * math.prod(addressed)
        first = first.reshape(batch + [1] * (len(places) - batch_dims))
        flat = b.add1("add", [flat, b.constant(first, name + "_batch_rows")], {}, name + "_flat")
    flat = b.add1("where", [outside, _int(b, rows), flat], {}, name + "_checked")
    table = b.add1("reshape", [rb.value(node.inputs[0])], {"shape": [rows] + rest}, name + "_rows")
    return b.add("gather", [table, flat], {"axis": 0}, name, outputs=node.outputs)


def _int(builder, value: int) -> str:
    return builder.constant(torch.tensor(value, dtype=torch.int64), "int")
