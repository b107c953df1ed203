"""Nearest-neighbour upsampling by whole factors, as a broadcast.

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
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

_HALF_PIXEL = ("half_pixel", "pytorch_half_pixel", "half_pixel_symmetric")


def upsample_nearest_as_broadcast(graph: Graph) -> Graph:
    def lower(node: Node, rb: Rebuild):
        factors = _whole_factors(node, graph)
        if factors is None:
            return None
        shape = list(graph.types[node.inputs[0]].shape)
        split, expanded = [], []
        for n, s in zip(shape, factors):
            split += [n, 1] if s > 1 else [n]
            expanded += [n, s] if s > 1 else [n]
        x = rb.builder.add1("reshape", [rb.value(node.inputs[0])], {"shape": split}, name=node.name)
        x = rb.builder.add1("expand", [x], {"shape": expanded}, name=node.name)
        out = [n * s for n, s in zip(shape, factors)]
        return rb.builder.add("reshape", [x], {"shape": out}, node.name, outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, lower))


def _whole_factors(node: Node, graph: Graph) -> list[int] | None:
    """Each axis' whole upsampling factor, if this resize repeats elements exactly; else None."""
    if node.op != "resize" or len(node.inputs) != 1:
        return None
    a = node.attrs
    x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
    if a.get("mode") != "nearest" or a.get("roi") or not (x.is_static and y.is_static):
        return None
    coordinates, rounding = a.get("coordinate_transformation_mode"), a.get("nearest_mode")
    if not ((coordinates == "asymmetric" and rounding == "floor") or
            (coordinates in _HALF_PIXEL and rounding in ("round_prefer_floor", "round_prefer_ceil"))):
        return None
    factors = []
    for n, m, scale in zip(x.shape, y.shape, a["scales"]):
        if n == 0 or m % n or not math.isclose(scale, m // n, rel_tol=0, abs_tol=1e-9):
            return None
        factors.append(m // n)
    return factors if any(s > 1 for s in factors) else None


__all__ = ["upsample_nearest_as_broadcast"]
