"""Resizes the pointwise kernels compute: each static resize upsample_by_whole_factors left
(align_corners, factors that are not whole, downsampling, cubic, antialiased) becomes `resample`,
its taps settled at build time. So does a slice with negative steps (a flip), whose one tap per
output is its mirror image.

A resize is separable, and what it reads depends on the output index alone: along each resized
axis, output o mixes a few input indices with fixed weights (compiler/ops/resample.py's
axis_taps, ONNX's definition, computed in float64). Those go into two small tables per axis,
[taps, out] input indices (int32) and weights (fp32); each lane of the kernel looks its taps up at
its output index and loads x there (codegen/moves.py), so the resize costs no kernel of its own
and the elementwise ops after it fuse behind it. The axes are interpolated the last first, as
torch's kernels do.

Left as resizes (torch runs them): crop-and-resize and a region of interest, symbolic shapes,
integer linear and cubic (their rounding), empty tensors, and more than MAX_TAPS loads per
output element (antialiased downsampling by large factors).
"""
from __future__ import annotations

import inspect
import math

import torch

from trident.compiler.group_kinds import POINTWISE_DTYPES
from trident.compiler.ir import Graph, Node
from trident.compiler.ops import resample as resample_ops
from trident.compiler.passes.rewrite import Rebuild, rewrite

# Loads per output element (the product of the taps of the resized axes); bilinear takes 4,
# bicubic 16.
MAX_TAPS = 64
_DEFAULTS = {name: p.default for name, p in inspect.signature(resample_ops.resize).parameters.items()
             if p.default is not inspect.Parameter.empty}
_FLOATS = (torch.float32, torch.float16, torch.bfloat16)  # linear and cubic (integers round)


def resample_with_tap_tables(graph: Graph) -> Graph:
    def lower(node: Node, rb: Rebuild):
        if node.op == "slice":
            return _reversed_slice(node, graph, rb)
        tables = _tap_tables(node, graph)
        if tables is None:
            return None
        axes, inputs = zip(*tables)
        constants = [rb.builder.constant(t, f"{node.name}.taps") for pair in inputs for t in pair]
        return rb.builder.add("resample", [rb.value(node.inputs[0]), *constants],
                              {"axes": list(axes), "nearest": node.attrs["mode"] == "nearest"},
                              node.name, outputs=node.outputs)

    return rewrite(graph, lower)


def _reversed_slice(node: Node, graph: Graph, rb: Rebuild):
    """A slice with negative steps (torch.flip, x[::-1] in an ONNX export), which no view can be:
    the same elements taken in ascending order (a view), then reversed along those axes by a
    nearest resample whose one tap per output reads its mirror image. None for other slices."""
    a = node.attrs
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    if (all(step > 0 for step in a["steps"]) or not (x.is_static and y.is_static)
            or 0 in y.shape or x.dtype not in POINTWISE_DTYPES):
        return None
    rank = len(x.shape)
    starts, ends, steps, reversed_axes = [], [], [], []
    for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
        if step < 0:
            n = len(range(start, end, step))
            start, end, step = start + (n - 1) * step, start + 1, -step
            reversed_axes.append(axis % rank)
        starts.append(start)
        ends.append(end)
        steps.append(step)
    ascending = rb.builder.add1("slice", [rb.value(node.inputs[0])],
                                {"starts": starts, "ends": ends, "axes": list(a["axes"]),
                                 "steps": steps}, name=node.name)
    mirrors = [rb.builder.constant(torch.arange(y.shape[axis] - 1, -1, -1, dtype=torch.int32)[None, :],
                                   f"{node.name}.mirror") for axis in reversed_axes]
    return rb.builder.add("resample", [ascending, *mirrors], {"axes": reversed_axes, "nearest": True},
                          node.name, outputs=node.outputs)


def _tap_tables(node: Node, graph: Graph):
    """[(axis, (columns,) or (columns, weights))] per resized axis, the last axis first; None when
    this resize stays one."""
    if node.op != "resize" or len(node.inputs) != 1 or node.attrs.get("roi"):
        return None
    attrs = {**_DEFAULTS, **node.attrs}
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    nearest = attrs["mode"] == "nearest"
    if (not (x.is_static and y.is_static) or 0 in x.shape or 0 in y.shape
            or attrs["coordinate_transformation_mode"] == "tf_crop_and_resize"
            or attrs["mode"] not in ("nearest", "linear", "cubic")
            or x.dtype not in (POINTWISE_DTYPES if nearest else _FLOATS)):
        return None
    tables, loads = [], 1
    for axis in reversed(range(len(x.shape))):
        size, out, scale = x.shape[axis], y.shape[axis], attrs["scales"][axis]
        if size == out and math.isclose(scale, 1.0):
            continue  # untouched, as the resize reference skips it
        columns, weights = _axis_taps(size, out, scale, attrs)
        table = [columns.T.to(torch.int32).contiguous()]
        if weights is not None:
            table.append(weights.T.to(torch.float32).contiguous())
        tables.append((axis, tuple(table)))
        loads *= columns.shape[1]
    return tables if tables and loads <= MAX_TAPS else None


def _axis_taps(size: int, out: int, scale: float, attrs: dict):
    """[out, taps] input indices and weights (None for nearest) of one resized axis.

    Linear and cubic taps start at the pixel at or left of the coordinate, as torch's kernels
    pick them (ONNX's definition starts one pixel further left at a whole coordinate, where that
    tap's weight is 0), and linear clamps a coordinate before the first pixel to it, as torch
    does: on finite values both conventions give the same sums, and an infinity or a NaN reaches
    the outputs torch gives it to. Antialiased and exclude_outside taps (ONNX only) are ONNX's."""
    mode = attrs["mode"]
    if mode == "nearest" or (attrs["antialias"] and scale < 1) or attrs["exclude_outside"]:
        columns, weights, _ = resample_ops.axis_taps(size, out, scale, (0.0, 1.0), attrs, "cpu")
        if mode == "nearest":  # the tap of weight 1
            return columns.gather(1, weights.argmax(1, keepdim=True)), None
        return columns, weights
    x, _ = resample_ops.source_coordinates(out, size, scale, attrs["coordinate_transformation_mode"],
                                           (0.0, 1.0), "cpu")
    if mode == "linear":
        x = x.clamp_min(0.0)
    offsets = torch.arange(0, 2) if mode == "linear" else torch.arange(-1, 3)
    taps = x.floor()[:, None] + offsets.to(torch.float64)
    distance = taps - x[:, None]
    weights = 1 - distance.abs() if mode == "linear" else \
        resample_ops.cubic_kernel(distance, attrs["cubic_coeff_a"])
    return taps.clamp(0, size - 1).to(torch.int64), weights


__all__ = ["resample_with_tap_tables", "MAX_TAPS"]
