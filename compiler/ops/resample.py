"""Resampling: ONNX Resize (nearest / linear / cubic, every coordinate mode, antialias),
GridSample, AffineGrid and Col2Im, which run through torch (Col2Im of a static input is lowered to
pads and adds first: compiler/passes/col2im.py), and `resample`, a resize with its taps settled into
tables, which the pointwise kernels compute (compiler/passes/resample.py).

Resize is separable: each resized axis has, per output index, the input indices of its taps and
their interpolation weights, built from the attributes alone (so shape inference on meta tensors
builds them too), applied along that axis.
The weights follow ONNX's definition exactly: the source coordinate of each output index, the n
input pixels around it (n = 2 for nearest and linear, 4 for cubic, more for antialiased
downsampling), edge pixels repeated past the border unless exclude_outside drops them.
"""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.ops.registry import Kind, op


def source_coordinates(out: int, size: int, scale: float, mode: str, roi: tuple[float, float],
                        device):
    """The input coordinate (float64) each output index maps to, and which fall outside the
    input (tf_crop_and_resize extrapolates those)."""
    y = torch.arange(out, dtype=torch.float64, device=device)
    width = scale * size  # the real-valued output width ONNX's formulas use
    outside = None
    if mode == "align_corners":
        x = torch.zeros_like(y) if width == 1 else y * (size - 1) / (width - 1)
    elif mode == "asymmetric":
        x = y / scale
    elif mode == "tf_crop_and_resize":
        start, end = roi
        x = (torch.full_like(y, (end - start) * (size - 1) / 2) if width == 1
             else y * (end - start) * (size - 1) / (width - 1)) + start * (size - 1)
        outside = (x < 0) | (x > size - 1)
    elif mode == "pytorch_half_pixel":
        x = torch.full_like(y, -0.5) if width == 1 else (y + 0.5) / scale - 0.5
    elif mode == "half_pixel":
        x = (y + 0.5) / scale - 0.5
    elif mode == "half_pixel_symmetric":
        offset = size / 2 * (1 - out / width)
        x = offset + (y + 0.5) / scale - 0.5
    else:
        raise ValueError(f"coordinate_transformation_mode {mode!r}")
    return x, outside


def _nearest_weights(ratio, nearest_mode: str):
    upper = {"round_prefer_floor": ratio > 0.5, "round_prefer_ceil": ratio >= 0.5,
             "floor": torch.zeros_like(ratio, dtype=torch.bool),
             "ceil": torch.ones_like(ratio, dtype=torch.bool)}[nearest_mode]
    upper = upper | (ratio == 1)  # an exact pixel position: the pixel itself
    return torch.stack([~upper, upper], -1).to(torch.float64)


def cubic_kernel(x, a: float):
    """The cubic convolution kernel with coefficient a, at distances x."""
    x = x.abs()
    near = ((a + 2) * x - (a + 3)) * x * x + 1
    far = ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return torch.where(x <= 1, near, torch.where(x < 2, far, torch.zeros_like(x)))


def _weights(ratio, scale: float, mode: str, nearest_mode: str, a: float, antialias: bool):
    """[out, n] weights of the n taps from the first one; and the first tap's offset from
    ceil(x) - 1 (the pixel at or left of the coordinate)."""
    if mode == "nearest":
        return _nearest_weights(ratio, nearest_mode), 0
    reach = 1 if mode == "linear" else 2
    s = min(scale, 1.0) if antialias else 1.0  # antialiasing widens the kernel by 1 / scale
    first = math.floor(-reach / s) + 1
    taps = torch.arange(first, 2 - first, dtype=torch.float64, device=ratio.device)
    distance = (taps[None, :] - ratio[:, None]) * s
    weights = (1 - distance.abs()).clamp(0, 1) if mode == "linear" else cubic_kernel(distance, a)
    if antialias:
        weights = weights / weights.sum(-1, keepdim=True)
    return weights, first


def axis_taps(size: int, out: int, scale: float, roi, attrs: dict, device):
    """Per output index of one axis: the input indices of its taps and their weights ([out, n],
    float64), and the rows to extrapolate. Built on the input's device from the attributes alone
    (no host copy: CUDA graphs capture it)."""
    x, outside = source_coordinates(out, size, scale, attrs["coordinate_transformation_mode"],
                                     roi, device)
    base = torch.ceil(x) - 1
    ratio = x - base  # in (0, 1]
    weights, first = _weights(ratio, scale, attrs["mode"], attrs["nearest_mode"],
                              attrs["cubic_coeff_a"], attrs["antialias"])
    taps = base[:, None] + first + torch.arange(weights.shape[1], dtype=torch.float64,
                                                device=device)
    if attrs["exclude_outside"]:
        weights = torch.where((taps < 0) | (taps > size - 1), 0.0, weights)
        total = weights.sum(-1, keepdim=True)
        weights = weights / torch.where(total == 0, 1.0, total)
    columns = taps.clamp(0, size - 1).to(torch.int64)  # past the border: the edge pixel
    return columns, weights, outside


def _apply(x, axis: int, columns, weights, nearest: bool):
    """Each output element from its taps alone (as torch's kernels compute it): an infinity or a
    NaN reaches only the outputs whose taps read it, not a whole row of a dense matrix product."""
    if nearest:  # one tap per row: a gather, exact for any dtype
        return x.index_select(axis, columns.gather(1, weights.argmax(1, keepdim=True))[:, 0])
    moved = torch.movedim(x, axis, -1)
    picked = moved[..., columns]  # [..., out, n]
    return torch.movedim((picked * weights.to(x.dtype)).sum(-1), -1, axis)


@op("resize", Kind.OPAQUE)
def resize(x, *, sizes: Sequence[int], scales: Sequence[float], mode: str = "nearest",
           coordinate_transformation_mode: str = "half_pixel",
           nearest_mode: str = "round_prefer_floor", cubic_coeff_a: float = -0.75,
           exclude_outside: bool = False, extrapolation_value: float = 0.0,
           antialias: bool = False, roi: Sequence[float] | None = None):
    """ONNX Resize with every axis' output size and scale resolved (the frontend applies `axes`
    and keep_aspect_ratio_policy); roi: (starts..., ends...) over every axis."""
    attrs = dict(mode=mode, coordinate_transformation_mode=coordinate_transformation_mode,
                 nearest_mode=nearest_mode, cubic_coeff_a=cubic_coeff_a,
                 exclude_outside=exclude_outside, antialias=antialias)
    rank = x.dim()
    dtype = x.dtype
    y = x if mode == "nearest" or dtype == torch.float64 else x.to(torch.float64)
    extrapolate = torch.zeros((), dtype=torch.bool, device=x.device)
    for axis in range(rank):
        span = (roi[axis], roi[rank + axis]) if roi else (0.0, 1.0)
        if sizes[axis] == x.shape[axis] and math.isclose(scales[axis], 1.0) and span == (0.0, 1.0):
            continue  # this axis is untouched
        columns, weights, outside = axis_taps(x.shape[axis], sizes[axis], scales[axis], span,
                                               attrs, x.device)
        y = _apply(y, axis, columns, weights, mode == "nearest")
        if outside is not None:
            extrapolate = extrapolate | outside.reshape([-1 if d == axis else 1
                                                         for d in range(rank)])
    if coordinate_transformation_mode == "tf_crop_and_resize":
        y = y.masked_fill(extrapolate, extrapolation_value)
    if dtype.is_floating_point or dtype == y.dtype:
        return y.to(dtype)
    info = torch.iinfo(dtype)  # integers: round half to even, saturate
    return torch.round(y).clamp(info.min, info.max).to(dtype)


@op("resample", Kind.MOVEMENT)
def resample(x, *tables, axes: Sequence[int], nearest: bool):
    """A resize with its taps settled: `tables` holds, per axis of `axes` in the order they are
    interpolated, the input index of each tap of each output index ([taps, out], int32) and, unless
    `nearest` (one tap, no weight), the taps' weights ([taps, out], fp32). Along an axis, output o is
    the sum over taps t of weights[t, o] * x[columns[t, o]], in fp32 (the kernel's order)."""
    y = x if nearest else x.float()
    step = 1 if nearest else 2
    for i, axis in enumerate(axes):
        columns = tables[step * i].long()
        if nearest:
            y = y.index_select(axis, columns[0])
            continue
        picked = torch.movedim(y, axis, -1)[..., columns]  # [..., taps, out]
        terms = picked * tables[step * i + 1].float()
        summed = terms[..., 0, :]
        for t in range(1, terms.shape[-2]):  # tap by tap, as the kernel adds them
            summed = summed + terms[..., t, :]
        y = torch.movedim(summed, -1, axis)
    return y.to(x.dtype)


@op("grid_sample", Kind.MOVEMENT)
def grid_sample(x, grid, *, mode: str = "linear", padding_mode: str = "zeros",
                align_corners: bool = False):
    """ONNX GridSample on 2-D (and, for linear / nearest, 3-D) images: torch's grid_sample,
    whose modes, padding and corner conventions are ONNX's."""
    torch_mode = {"linear": "bilinear", "cubic": "bicubic", "nearest": "nearest"}[mode]
    return F.grid_sample(x, grid.to(x.dtype), mode=torch_mode, padding_mode=padding_mode,
                         align_corners=align_corners)


@op("affine_grid", Kind.OPAQUE)
def affine_grid(theta, *, size: Sequence[int], align_corners: bool = False):
    """The sampling grid [N, (D,) H, W, 2 or 3] of affine matrices theta [N, 2, 3] / [N, 3, 4]."""
    return F.affine_grid(theta, list(size), align_corners=align_corners)


def col2im_geometry(image_shape, block_shape, strides, pads, dilations) -> tuple[list[int], list[int]]:
    """(the padded image's size, the number of block positions) along each spatial dim of a Col2Im
    (pads: ONNX's begins, then ends)."""
    spatial = len(image_shape)
    padded = [size + pads[d] + pads[spatial + d] for d, size in enumerate(image_shape)]
    counts = [(p - (dl * (k - 1) + 1)) // s + 1 for p, k, s, dl in zip(padded, block_shape, strides, dilations)]
    return padded, counts


@op("col2im", Kind.OPAQUE)
def col2im(x, *, image_shape: Sequence[int], block_shape: Sequence[int], strides: Sequence[int],
           pads: Sequence[int], dilations: Sequence[int]):
    """ONNX Col2Im (N-D fold): x [N, C * prod(block), L] holds L sliding blocks; each block's values
    are added into the (padded) image at their positions, then the padding is cropped."""
    spatial = len(image_shape)
    padded, counts = col2im_geometry(image_shape, block_shape, strides, pads, dilations)
    if x.dim() != 3 or x.shape[1] % math.prod(block_shape) or x.shape[2] != math.prod(counts):
        raise ValueError(f"Col2Im input {list(x.shape)}: expected [N, C * {math.prod(block_shape)}, "
                         f"{math.prod(counts)}] ({' x '.join(map(str, counts))} blocks)")
    # The flat padded-image index of every (block element k, block position n): dims
    # [k_1, ..., k_s, n_1, ..., n_s], built in row-major order one spatial dim at a time.
    flat = torch.zeros([1] * (2 * spatial), dtype=torch.int64, device=x.device)
    for d in range(spatial):
        offset = torch.arange(block_shape[d], device=x.device) * dilations[d]
        start = torch.arange(counts[d], device=x.device) * strides[d]
        shape = [1] * (2 * spatial)
        shape[d], shape[spatial + d] = block_shape[d], counts[d]
        flat = flat * padded[d] + (offset[:, None] + start[None, :]).reshape(shape)
    batch, channels = x.shape[0], x.shape[1] // math.prod(block_shape)
    values = x.reshape(batch, channels, -1)
    out = torch.zeros(batch, channels, math.prod(padded), dtype=x.dtype, device=x.device)
    out.scatter_add_(2, flat.reshape(1, 1, -1).expand(batch, channels, -1), values)
    out = out.reshape([batch, channels] + padded)
    for d in range(spatial):
        out = out.narrow(2 + d, pads[d], image_shape[d])
    return out
