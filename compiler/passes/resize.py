"""Upsampling by whole factors, nearest and half-pixel linear, as ops the pointwise kernels fuse.

Resize has no kernel template (it runs in torch); its commonest form, an FPN's, HRNet's or a
U-Net's nearest upsampling by 2, repeats each element s times along each resized axis: a reshape
that gives each resized axis a unit dim after it, an expand of that dim to s, and a reshape that
merges the two, which the pointwise kernels compute (a copy of a broadcast view, fused with what
reads it).

That is exact when every output index o = k·s + r reads input k:
- asymmetric coordinates (torch's `nearest`) map o to o / s = k + r / s, which floors to k;
- half-pixel coordinates (`nearest-exact`, ONNX's default) map o to k + (r + ½) / s - ½, strictly
  between k - ½ and k + ½, which rounds to k either way a tie would go.
Other combinations (asymmetric with rounding, half-pixel with floor or ceil, align_corners,
crop-and-resize, a factor that is not whole, downsampling) stay one resize node.

Half-pixel linear upsampling (torch's bilinear with align_corners=False, ONNX's default linear
Resize) is periodic too: output k·s + r mixes x[k] with one neighbour at weights that depend on r
alone (and on whether k is the first row, where torch clamps the coordinate). Each resized axis
becomes two edge-padded shifted views of x, three products with constant weights over a phase
axis, a sum and a reshape (`_linear_upsampling`), computed in torch's order: the last axis first,
x[k - 1] or x[k] first, a zero weight on the partner torch also reads, so an infinity or a NaN
reaches the outputs torch gives it to. The weights are float64 rounded to the dtype; torch
computes its coordinates in float32, so the two differ in the last bits at factors 3, 5, ...
"""
from __future__ import annotations

import math

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

_HALF_PIXEL = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric")


def upsample_by_whole_factors(graph: Graph) -> Graph:
    def lower(node: Node, rb: Rebuild):
        if _is_identity(node, graph):  # (SegFormer resizes its first stage to its own size)
            return rb.builder.add("identity", [rb.value(node.inputs[0])], {}, node.name,
                                  outputs=node.outputs)
        factors = _linear_factors(node, graph)
        if factors is not None:
            return _linear_upsampling(node, rb, factors)
        factors = _nearest_factors(node, graph)
        return None if factors is None else _nearest_upsampling(node, graph, rb, factors)

    return eliminate_dead_code(rewrite(graph, lower))


def _nearest_upsampling(node: Node, graph: Graph, rb: Rebuild, factors: list[int]) -> list[str]:
    shape = list(graph.types[node.inputs[0]].shape)
    split, expanded = [], []
    for n, s in zip(shape, factors):
        split += [n, 1] if s > 1 else [n]
        expanded += [n, s] if s > 1 else [n]
    x = rb.builder.add1("reshape", [rb.value(node.inputs[0])], {"shape": split}, name=node.name)
    x = rb.builder.add1("expand", [x], {"shape": expanded}, name=node.name)
    out = [n * s for n, s in zip(shape, factors)]
    return rb.builder.add("reshape", [x], {"shape": out}, node.name, outputs=node.outputs)


def _nearest_factors(node: Node, graph: Graph) -> list[int] | None:
    """Each axis' whole upsampling factor, if this resize repeats elements exactly; else None."""
    if not _static_resize(node, graph, "nearest"):
        return None
    a = node.attrs
    coordinates, rounding = a.get("coordinate_transformation_mode"), a.get("nearest_mode")
    if not ((coordinates == "asymmetric" and rounding == "floor") or
            (coordinates in _HALF_PIXEL and rounding in ("round_prefer_floor", "round_prefer_ceil"))):
        return None
    return _factors(node, graph)


def _is_identity(node: Node, graph: Graph) -> bool:
    """A resize to the input's own size at scale 1: every mode and coordinate mapping reads each
    pixel at its own position (crop-and-resize's region aside)."""
    if not _static_resize(node, graph):
        return False
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    return (tuple(x.shape) == tuple(y.shape) and x.dtype == y.dtype
            and node.attrs.get("coordinate_transformation_mode") != "tf_crop_and_resize"
            and all(math.isclose(s, 1.0, rel_tol=0, abs_tol=1e-12) for s in node.attrs["scales"]))


def _static_resize(node: Node, graph: Graph, mode: str | None = None) -> bool:
    """A resize of static shapes with no region of interest (in `mode`, if given)."""
    if node.op != "resize" or len(node.inputs) != 1 or mode not in (None, node.attrs.get("mode")):
        return False
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    return not node.attrs.get("roi") and x.is_static and y.is_static


def _factors(node: Node, graph: Graph) -> list[int] | None:
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    factors = []
    for n, m, scale in zip(x.shape, y.shape, node.attrs["scales"]):
        if n == 0 or m % n or not math.isclose(scale, m // n, rel_tol=0, abs_tol=1e-9):
            return None
        factors.append(m // n)
    return factors if any(s > 1 for s in factors) else None


# ---------------------------------------------------------------- linear upsampling ----
def _linear_factors(node: Node, graph: Graph) -> list[int] | None:
    """The whole factors of a half-pixel linear upsampling (torch's bilinear without
    align_corners), or None."""
    if not _static_resize(node, graph, "linear"):
        return None
    a = node.attrs
    if a.get("coordinate_transformation_mode") not in _HALF_PIXEL or a.get("exclude_outside"):
        return None
    return _factors(node, graph)


def _linear_upsampling(node: Node, rb: Rebuild, factors: list[int]) -> list[str]:
    """Along each resized axis (the last first, as torch's kernels interpolate), output k·s + r
    sits at k + δ_r with δ_r = (r + ½) / s - ½: it mixes x[k] with x[k - 1] (δ_r < 0) or x[k + 1]
    (δ_r ≥ 0, a zero weight included, as torch computes it), the neighbours clamped at the edges.
    Each phase r's weights are constants over a new axis of size s after the resized one, which a
    reshape then merges: shifted views, products and sums the pointwise kernels fuse."""
    x = rb.value(node.inputs[0])
    for axis in reversed(range(len(factors))):
        if factors[axis] > 1:
            x = _upsample_axis(rb, node.name, x, axis, factors[axis])
    return rb.builder.add("identity", [x], {}, node.name, outputs=node.outputs)


def _upsample_axis(rb: Rebuild, name: str, x: str, axis: int, s: int) -> str:
    b = rb.builder
    t = b.type_of(x)
    shape, rank = list(t.shape), len(t.shape)
    n = shape[axis]

    def neighbour(step: int) -> str:  # x[k - 1] or x[k + 1], clamped to the edge
        pads = [0] * (2 * rank)
        pads[axis if step < 0 else rank + axis] = 1
        padded = b.add1("pad", [x], {"pads": pads, "mode": "edge", "value": 0}, name=name)
        start = 0 if step < 0 else 1
        return b.add1("slice", [padded], {"starts": [start], "ends": [start + n], "axes": [axis],
                                          "steps": [1]}, name=name)

    # per (k, r): the weights of x[k - 1], x[k], x[k + 1] and which of the outer two torch reads
    # (it clamps a negative source coordinate to 0: at k = 0 it reads x[0] and, weighted 0, x[1])
    table = [[_phase(k, (r + 0.5) / s - 0.5) for r in range(s)] for k in range(n)]
    phase = [1] * (rank + 1)
    phase[axis], phase[axis + 1] = n, s

    def constant(i: int, dtype) -> str:
        values = torch.tensor([[p[i] for p in row] for row in table], dtype=dtype)
        return b.constant(values.reshape(phase), f"{name}.phases")

    def at_phases(v: str) -> str:
        return b.add1("reshape", [v], {"shape": shape[:axis + 1] + [1] + shape[axis + 1:]}, name=name)

    zero = b.constant(torch.zeros((), dtype=t.dtype), f"{name}.zero")
    before = b.add1("mul", [at_phases(neighbour(-1)), constant(0, t.dtype)], name=name)
    middle = b.add1("mul", [at_phases(x), constant(1, t.dtype)], name=name)
    after = b.add1("mul", [at_phases(neighbour(+1)), constant(2, t.dtype)], name=name)
    before = b.add1("where", [constant(3, torch.bool), before, zero], name=name)
    after = b.add1("where", [constant(4, torch.bool), after, zero], name=name)
    summed = b.add1("add", [b.add1("add", [before, middle], name=name), after], name=name)
    return b.add1("reshape", [summed], {"shape": shape[:axis] + [n * s] + shape[axis + 1:]}, name=name)


def _phase(k: int, delta: float) -> tuple[float, float, float, bool, bool]:
    """(weight of x[k - 1], of x[k], of x[k + 1], reads x[k - 1], reads x[k + 1])."""
    if delta < 0 and k > 0:
        return -delta, 1.0 + delta, 0.0, True, False
    if delta < 0:
        return 0.0, 1.0, 0.0, False, True
    return 0.0, 1.0 - delta, delta, False, True


__all__ = ["upsample_by_whole_factors"]
