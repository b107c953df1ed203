"""Col2Im (F.fold, ONNX Col2Im) as a sum of shifted planes, which run in the pointwise kernels.

`col2im` (ops/resample.py) adds each of L sliding blocks' values into a (padded) image. Its
input [N, C * prod(block), L] holds, for every block element k (an offset k_d * dilation_d in each
spatial dim d), a plane [N, C, n_1, ..., n_s] of the L = prod(n) block positions, which lie
stride_d apart. So the image is

    sum over k of place_k(plane_k)

where place_k spreads a plane to its stride (stride_d - 1 zeros after each value: a pad of a new
unit axis, merged back) and moves it to its offset in the padded image (a slice of what would
reach past the image's end, then a pad). The padding is sliced off at the end. All of
it is slices, reshapes, pads and adds: no scatter, no atomics, and the same sum in the same
order every run. Lowered where the input's type is static; the others stay the torch step they
are.
"""
from __future__ import annotations

import itertools
import math

from trident.compiler.ir import Graph, Node
from trident.compiler.ops.resample import col2im_geometry
from trident.compiler.passes.rewrite import Rebuild, rewrite


def lower_col2im(graph: Graph) -> Graph:
    def rewrite_col2im(node: Node, rb: Rebuild):
        if node.op != "col2im" or not graph.types[node.inputs[0]].is_static:
            return None
        return [_planes(rb, node, rb.value(node.inputs[0]), graph.types[node.inputs[0]].shape)]

    return rewrite(graph, rewrite_col2im)


def _planes(rb: Rebuild, node: Node, x: str, shape) -> str:
    a = node.attrs
    image, block, strides, dilations, pads = (list(a[k]) for k in
                                              ("image_shape", "block_shape", "strides", "dilations", "pads"))
    spatial = len(image)
    padded, counts = col2im_geometry(image, block, strides, pads, dilations)
    spread = [count * step for count, step in zip(counts, strides)]
    n, c = shape[0], shape[1] // math.prod(block)

    def add(op: str, inputs: list[str], attrs: dict, what: str) -> str:
        return rb.builder.add1(op, inputs, attrs, f"{node.name}_{what}")

    planes = add("reshape", [x], {"shape": [n, c, math.prod(block)] + counts}, "planes")
    total = None
    for tap, offsets in enumerate(itertools.product(*(range(k) for k in block))):
        plane = add("slice", [planes], {"starts": [tap], "ends": [tap + 1], "axes": [2], "steps": [1]}, "tap")
        plane = add("reshape", [plane], {"shape": [n, c] + counts}, "plane")
        for d in range(spatial):
            plane = _spread(add, plane, [n, c] + spread[:d] + counts[d:], 2 + d, strides[d])
        begin = [k * dl for k, dl in zip(offsets, dilations)]
        # the spread zeros that would reach past the padded image's end, cropped
        kept = [min(s, p - b) for s, p, b in zip(spread, padded, begin)]
        if kept != spread:
            plane = _slice(add, plane, [0] * spatial, kept, "kept")
        end = [p - b - k for p, b, k in zip(padded, begin, kept)]
        plane = add("pad", [plane], {"pads": [0, 0] + begin + [0, 0] + end, "mode": "constant", "value": 0},
                    "placed")
        total = plane if total is None else add("add", [total, plane], {}, "sum")
    if any(pads):
        total = _slice(add, total, pads[:spatial], [p - e for p, e in zip(padded, pads[spatial:])], "image")
    return total


def _slice(add, x: str, starts: list[int], ends: list[int], what: str) -> str:
    """x[:, :, starts[0]:ends[0], ...] (the pointwise kernels read a slice in place; a pad that
    crops would run in torch)."""
    axes = list(range(2, 2 + len(starts)))
    return add("slice", [x], {"starts": starts, "ends": ends, "axes": axes, "steps": [1] * len(starts)}, what)


def _spread(add, x: str, shape: list[int], axis: int, step: int) -> str:
    """x (of `shape`) with step - 1 zeros after each value along axis."""
    if step == 1:
        return x
    unit = shape[:axis + 1] + [1] + shape[axis + 1:]
    pads = [0] * (2 * len(unit))
    pads[len(unit) + axis + 1] = step - 1
    y = add("pad", [add("reshape", [x], {"shape": unit}, "unit")], {"pads": pads, "mode": "constant", "value": 0},
            "spread")
    return add("reshape", [y], {"shape": shape[:axis] + [shape[axis] * step] + shape[axis + 1:]}, "merged")
