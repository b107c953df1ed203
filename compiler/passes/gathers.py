"""Gathers rewritten into what runs without a torch step.

- `gathers_as_slices`: gathers whose constant indices step evenly, as a slice and a reshape
  (views, no kernel). ONNX exporters write a strided view they cannot express (`as_strided` of a
  contiguous tensor) as a Gather with a constant index tensor: ConvNeXt's and Swin's `[768] ->
  [1, 768, 1, 1]` is a Gather by arange(768) reshaped. Indices that run start, start + step, ...
  (step > 0) pick a slice of the axis; the gather's output is that slice reshaped to the indices'
  shape.
- `gathers_along_dim_0`: a gather along another axis (`torch.index_select(x, 1, idx)`, ONNX
  Gather with axis=1) as the table-lookup kernel's gather of rows along dim 0 of x with that axis
  moved first, its index dims then moved to where the axis was: both transposes are views, read
  through their strides.
"""
from __future__ import annotations

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.rewrite import Rebuild, rewrite


def gathers_as_slices(graph: Graph) -> Graph:
    def rewrite_gather(node: Node, rb: Rebuild):
        if node.op != "gather" or len(node.inputs) != 2:
            return None
        indices = rb.constant(node.inputs[1])
        x = graph.types[node.inputs[0]]
        if indices is None or not x.is_static:
            return None
        axis = node.attrs.get("axis", 0) % x.rank
        progression = _progression(indices, x.shape[axis])
        if progression is None:
            return None
        start, step, count = progression
        taken = rb.value(node.inputs[0])
        if (start, step, count) != (0, 1, x.shape[axis]):  # else every row, in order: no slice
            taken = rb.builder.add1("slice", [taken],
                                    {"starts": [start], "ends": [start + step * (count - 1) + 1],
                                     "axes": [axis], "steps": [step]}, name=node.name + "_slice")
        out_shape = list(graph.types[node.outputs[0]].shape)
        return rb.builder.add("reshape", [taken], {"shape": out_shape}, node.name,
                              outputs=node.outputs)

    return rewrite(graph, rewrite_gather)


def gathers_along_dim_0(graph: Graph) -> Graph:
    def rewrite_gather(node: Node, rb: Rebuild):
        if node.op != "gather" or len(node.inputs) != 2:
            return None
        x, indices = (graph.types[v] for v in node.inputs)
        axis = node.attrs.get("axis", 0) % max(x.rank, 1)
        if axis == 0 or not (x.is_static and indices.is_static):
            return None
        first = [axis] + [d for d in range(x.rank) if d != axis]
        moved = rb.builder.add1("transpose", [rb.value(node.inputs[0])], {"perm": first}, node.name + "_axis_first")
        rows = rb.builder.add1("gather", [moved, rb.value(node.inputs[1])], {"axis": 0}, node.name + "_rows")
        m = indices.rank  # the rows' dims: the index's, then x's others; the index's go to `axis`
        back = [m + j for j in range(axis)] + list(range(m)) + [m + j for j in range(axis, x.rank - 1)]
        return rb.builder.add("transpose", [rows], {"perm": back}, node.name, outputs=node.outputs)

    return rewrite(graph, rewrite_gather)

def _progression(indices: torch.Tensor, size: int) -> tuple[int, int, int] | None:
    """(start, step, count) when the indices, negative ones counted from the end, run evenly
    forward inside [0, size); else None."""
    if indices.dtype not in (torch.int32, torch.int64) or indices.numel() == 0:
        return None
    flat = indices.flatten().to(torch.int64)
    flat = torch.where(flat < 0, flat + size, flat)
    if int(flat.min()) < 0 or int(flat.max()) >= size:
        return None   # out of range: the gather's own check says so
    start, count = int(flat[0]), flat.numel()
    step = int(flat[1] - flat[0]) if count > 1 else 1
    if step <= 0 or not torch.equal(flat, start + step * torch.arange(count)):
        return None
    return start, step, count
