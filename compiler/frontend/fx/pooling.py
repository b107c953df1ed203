"""Converters of pooling (max, average, adaptive average and max) and of F.interpolate (one IR
resize)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.context import Ctx, Missing
from trident.compiler.frontend.fx.helpers import _reshape, _tuple_n, as_batch
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ============================================================================ pooling ====
def _pool_args(kernel_size, stride, padding, n: int):
    kernel = _tuple_n(kernel_size, n)
    strides = kernel if stride is None or stride == [] or stride == () else _tuple_n(stride, n)
    return kernel, strides, _tuple_n(padding, n) * 2


def _max_pool(n: int, with_indices: bool):
    def convert(cx: Ctx, input, kernel_size, stride=None, padding=0, dilation=1,
                ceil_mode=False, return_indices=False):
        kernel, strides, pads = _pool_args(kernel_size, stride, padding, n)
        input, undo = as_batch(cx, input, n)
        y = undo(cx.emit("max_pool", [input], kernel=kernel, strides=strides, pads=pads,
                         dilations=_tuple_n(dilation, n), ceil_mode=bool(ceil_mode)))
        return (y, Missing("max-pool indices")) if with_indices or return_indices else y
    return convert


converts(aten.max_pool2d_with_indices.default)(_max_pool(2, True))
converts(aten.max_pool2d.default, F.max_pool2d, torch.max_pool2d)(_max_pool(2, False))
converts(aten.max_pool1d.default, F.max_pool1d, torch.max_pool1d)(_max_pool(1, False))


def _avg_pool(n: int):
    def convert(cx: Ctx, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        if divisor_override is not None:
            raise UnsupportedError(f'fx node "{cx.node_name}": avg pool with divisor_override')
        kernel, strides, pads = _pool_args(kernel_size, stride, padding, n)
        input, undo = as_batch(cx, input, n)
        return undo(cx.emit("avg_pool", [input], kernel=kernel, strides=strides, pads=pads,
                            ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad)))
    return convert


converts(aten.avg_pool2d.default, F.avg_pool2d, torch._C._nn.avg_pool2d)(_avg_pool(2))
converts(aten.avg_pool1d.default, F.avg_pool1d, torch.avg_pool1d)(_avg_pool(1))


@converts(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default,
          F.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(cx: Ctx, input, output_size):
    spatial = cx.shape(input)[-2:]
    out = [s if o is None else int(o) for s, o in zip(spatial, _tuple_n(output_size, 2)
                                                      if output_size is not None else spatial)]
    rank = cx.rank(input)
    if out == [1, 1]:  # global average pooling: a mean over H, W
        return cx.emit("reduce_mean", [input], axes=[rank - 2, rank - 1], keepdims=True)
    if all(s % o == 0 for s, o in zip(spatial, out)):  # equal windows: a plain average pool
        k = [s // o for s, o in zip(spatial, out)]
        return cx.emit("avg_pool", [input], kernel=k, strides=k, pads=[0] * 4)
    return _adaptive_average(cx, input, [rank - 2, rank - 1], spatial, out)


def _adaptive_average(cx: Ctx, input, axes: list[int], sizes, outs):
    """An adaptive average pool whose windows differ in size, as one IR resample (the pointwise
    kernels look each output's window up in tables): along each axis, output o averages input
    [floor(o·n / m), ceil((o + 1)·n / m)). A window shorter than the longest repeats its first
    element, that element's weight split evenly between its copies: exact when the copies
    number a power of two (halving is exact), and an infinity stays an infinity (no weight of
    0). Windows of other lengths are refused."""
    tables, used = [], []
    for axis, n, m in zip(axes, sizes, outs):
        if n == m:
            continue
        starts = [o * n // m for o in range(m)]
        ends = [-((-(o + 1) * n) // m) for o in range(m)]
        taps = max(e - s for s, e in zip(starts, ends))
        columns = torch.zeros(taps, m, dtype=torch.int32)
        weights = torch.zeros(taps, m, dtype=torch.float64)
        for o, (start, end) in enumerate(zip(starts, ends)):
            copies = 1 + taps - (end - start)
            if copies & (copies - 1):
                raise UnsupportedError(f'fx node "{cx.node_name}": adaptive average pool from '
                                       f"{tuple(sizes)} to {list(outs)} (windows of lengths "
                                       f"{end - start} and {taps})")
            members = list(range(start, end)) + [start] * (copies - 1)
            columns[:, o] = torch.tensor(members, dtype=torch.int32)
            weights[:, o] = 1.0 / (end - start)
            weights[0, o] = weights[end - start:, o] = 1.0 / (end - start) / copies
        tables += [columns, weights.to(torch.float32)]
        used.append(axis)
    if not used:
        return input
    return cx.emit("resample", [input] + tables, axes=used, nearest=False)


@converts(aten.adaptive_avg_pool1d.default, torch.adaptive_avg_pool1d)  # (F.adaptive_avg_pool1d is it)
def _adaptive_avg_pool1d(cx: Ctx, input, output_size):
    """Over [..., L] to [..., out]: windows of L / out positions each, a mean over each window
    (SigLIP's attention-pooling head and Swin's pooler take out = 1: a mean over the sequence)."""
    shape = list(cx.shape(input))
    length, (out,) = shape[-1], _tuple_n(output_size, 1)
    if out < 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": adaptive average pool to {out}')
    if length % out:
        return _adaptive_average(cx, input, [len(shape) - 1], [length], [out])
    windows = _reshape(cx, input, shape[:-1] + [out, length // out])
    return cx.emit("reduce_mean", [windows], axes=[len(shape)], keepdims=False)


# torch's interpolation modes as ONNX Resize's: mode, and the coordinate mapping without
# align_corners. torch's nearest floors (x_out / scale); nearest-exact rounds the pixel centre;
# linear and cubic map pixel centres (half_pixel, which the IR's linear resize clamps at the edges as
# torch does; pytorch_half_pixel would put an output of length 1 at the first pixel, not the centre).
_INTERPOLATION = {"nearest": ("nearest", "asymmetric"), "nearest-exact": ("nearest", "half_pixel"),
                  "linear": ("linear", "half_pixel"), "bilinear": ("linear", "half_pixel"),
                  "trilinear": ("linear", "half_pixel"), "bicubic": ("cubic", "half_pixel")}


@converts(F.interpolate)
def _interpolate(cx: Ctx, input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    """One IR resize: output sizes and the scales of the coordinate mapping resolved as torch
    resolves them (a given scale_factor maps coordinates unless recompute_scale_factor)."""
    if mode not in _INTERPOLATION:
        raise UnsupportedError(f'fx node "{cx.node_name}": interpolate in mode {mode!r}')
    if antialias:  # (torch's antialiasing filter is not ONNX Resize's: 0.15 apart on a 5x6 -> 3x2)
        raise UnsupportedError(f'fx node "{cx.node_name}": interpolate with antialias=True')
    shape = list(cx.shape(input))
    spatial = len(shape) - 2
    if size is not None:
        out = _tuple_n(size, spatial)
        scales = [o / i for o, i in zip(out, shape[2:])]
    else:
        factors = [float(f) for f in (scale_factor if isinstance(scale_factor, (list, tuple))
                                      else [scale_factor] * spatial)]
        out = [math.floor(i * f) for i, f in zip(shape[2:], factors)]
        scales = [o / i for o, i in zip(out, shape[2:])] if recompute_scale_factor else factors
    if any(o < 1 for o in out):
        raise ShapeError(f'fx node "{cx.node_name}": interpolate of {shape} to spatial size {out}')
    kind, coordinates = _INTERPOLATION[mode]
    if align_corners and kind != "nearest":
        coordinates = "align_corners"
    return cx.emit("resize", [input], sizes=shape[:2] + out, scales=[1.0, 1.0] + scales, mode=kind,
                   coordinate_transformation_mode=coordinates,
                   nearest_mode="round_prefer_ceil" if mode == "nearest-exact" else "floor",
                   cubic_coeff_a=-0.75, exclude_outside=False, extrapolation_value=0.0,
                   antialias=False, roi=None)


@converts(F.adaptive_max_pool2d)
def _adaptive_max_pool2d(cx: Ctx, input, output_size, return_indices=False):
    spatial = cx.shape(input)[-2:]
    out = [s if o is None else int(o) for s, o in zip(spatial, _tuple_n(output_size, 2))]
    if out == [1, 1]:  # global max pooling: a max over H, W
        rank = cx.rank(input)
        y = cx.emit("reduce_max", [input], axes=[rank - 2, rank - 1], keepdims=True)
    elif all(s % o == 0 for s, o in zip(spatial, out)):
        k = [s // o for s, o in zip(spatial, out)]
        y = cx.emit("max_pool", [input], kernel=k, strides=k, pads=[0] * 4, dilations=[1, 1])
    else:
        raise UnsupportedError(f'fx node "{cx.node_name}": adaptive max pool from {spatial} '
                               f"to {out} (windows of unequal size)")
    return (y, Missing("max-pool indices")) if return_indices else y


@converts(aten.adaptive_max_pool2d.default)
def _aten_adaptive_max_pool2d(cx: Ctx, input, output_size):
    return _adaptive_max_pool2d(cx, input, output_size, return_indices=True)


# torch's grid sampler enums (aten.grid_sampler's ints) and F.grid_sample's names, as the IR's.
_GRID_MODES = {"bilinear": "linear", "nearest": "nearest", "bicubic": "cubic", 0: "linear", 1: "nearest",
               2: "cubic"}
_GRID_PADDINGS = {"zeros": "zeros", "border": "border", "reflection": "reflection", 0: "zeros", 1: "border",
                  2: "reflection"}


@converts(F.grid_sample)
def _grid_sample(cx: Ctx, input, grid, mode="bilinear", padding_mode="zeros", align_corners=None):
    """F.grid_sample: a per-element move in the pointwise kernels for 4-D inputs, bilinear or
    nearest (codegen/grid_sample.py); bicubic and 5-D inputs run in torch, inside the engine."""
    if mode not in _GRID_MODES or padding_mode not in _GRID_PADDINGS:
        raise UnsupportedError(f'fx node "{cx.node_name}": grid_sample with mode={mode!r}, '
                               f"padding_mode={padding_mode!r}")
    grid = cx.cast(grid, cx.dtype(input))
    return cx.emit("grid_sample", [input, grid], mode=_GRID_MODES[mode], padding_mode=_GRID_PADDINGS[padding_mode],
                   align_corners=bool(align_corners))


@converts(aten.grid_sampler.default, aten.grid_sampler_2d.default)
def _aten_grid_sampler(cx: Ctx, input, grid, interpolation_mode: int, padding_mode: int, align_corners: bool):
    return _grid_sample(cx, input, grid, interpolation_mode, padding_mode, align_corners)
