"""Max and average pooling over 1-3 spatial dims, MaxPool's indices and MaxUnpool."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.ops.common import checked_indices, lowest, pad_spatial, split_pads
from trident.compiler.ops.registry import Kind, op


def _pool_nd(x, spatial: int):
    """torch's pooling functions exist for 1-3 dims; lift 1-D problems to 2-D."""
    if spatial not in (1, 2, 3):
        raise UnsupportedError(f"pooling over {spatial} spatial dims (1-3 are supported)")
    if x.dim() != spatial + 2:  # (torch would also take an unbatched [C, *spatial])
        raise ShapeError(f"pooling over {spatial} spatial dims of a {x.dim()}-D input "
                         f"(expected [N, C, {spatial} spatial dims])")
    return x.unsqueeze(-2) if spatial == 1 else x


@op("max_pool", Kind.POOL)
def max_pool(x, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             dilations: Sequence[int], ceil_mode: bool = False):
    spatial = len(kernel)
    lift = spatial == 1
    xp = _pool_nd(pad_spatial(x, pads, value=lowest(x.dtype)), spatial)
    fn = {2: F.max_pool2d, 3: F.max_pool3d}[max(spatial, 2)]
    k, s, d = ([1] if lift else []) + list(kernel), ([1] if lift else []) + list(strides), \
        ([1] if lift else []) + list(dilations)
    y = fn(xp, k, s, 0, d, ceil_mode=ceil_mode)
    y = y.squeeze(-2) if lift else y
    return _drop_windows_on_end_pad(y, x, strides, pads) if ceil_mode else y


@op("avg_pool", Kind.POOL)
def avg_pool(x, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             ceil_mode: bool = False, count_include_pad: bool = False,
             dilations: Sequence[int] | None = None):
    # Sum-pool the zero-padded input and divide by a sum-pool of the taps that count: the image
    # alone, or image plus explicit padding. Windows that overhang because of ceil_mode count
    # neither, which is ONNX's rule.
    spatial = len(kernel)
    _pool_nd(x, spatial)  # (the checks)
    ones = torch.ones_like(x[:1, :1])
    counted = pad_spatial(ones, pads, value=1.0 if count_include_pad else 0.0)
    dilations = list(dilations or [1] * spatial)
    window_sum = _window_sum if any(d != 1 for d in dilations) else _pooled_sum
    total = window_sum(pad_spatial(x, pads), kernel, strides, dilations, ceil_mode)
    count = window_sum(counted, kernel, strides, dilations, ceil_mode)
    y = total / count
    return _drop_windows_on_end_pad(y, x, strides, pads) if ceil_mode else y


def _pooled_sum(x, kernel, strides, dilations, ceil_mode: bool):
    """Window sums through torch's average pooling (1-D lifted to 2-D)."""
    spatial = len(kernel)
    lift = spatial == 1
    fn = {2: F.avg_pool2d, 3: F.avg_pool3d}[max(spatial, 2)]
    k, s = ([1] if lift else []) + list(kernel), ([1] if lift else []) + list(strides)
    y = fn(_pool_nd(x, spatial), k, s, 0, ceil_mode=ceil_mode, divisor_override=1)
    return y.squeeze(-2) if lift else y


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


def _window_sum(x, kernel, strides, dilations, ceil_mode: bool):
    """Dilated window sums (torch's pooling has no dilation): a convolution of every channel with
    a kernel of ones; ceil_mode's last windows see zeros past the end."""
    spatial = len(kernel)
    if spatial not in _CONV:
        raise UnsupportedError(f"pooling over {spatial} spatial dims (1-3 are supported)")
    extra = []
    for size, k, s, d in zip(x.shape[2:], kernel, strides, dilations):
        reach = d * (k - 1) + 1
        steps = -(-(size - reach) // s) if ceil_mode else (size - reach) // s
        extra.append(max(0, steps * s + reach - size))
    padded = F.pad(x, [v for e in reversed(extra) for v in (0, e)])
    channels = padded.reshape((-1, 1) + tuple(padded.shape[2:]))
    ones = torch.ones((1, 1) + tuple(kernel), dtype=x.dtype, device=x.device)
    y = _CONV[spatial](channels, ones, None, tuple(strides), 0, tuple(dilations))
    return y.reshape(tuple(x.shape[:2]) + tuple(y.shape[2:]))


def _drop_windows_on_end_pad(y, x, strides: Sequence[int], pads: Sequence[int]):
    """With ceil_mode, ONNX (like torch's own padding) drops a last window that would start in
    the end padding; the input here is padded before pooling, so torch keeps it: crop it."""
    begin, _ = split_pads(pads)
    for i, (size, s, b) in enumerate(zip(x.shape[2:], strides, begin)):
        out = y.shape[2 + i]
        if out > 0 and (out - 1) * s >= size + b:
            y = y.narrow(2 + i, 0, out - 1)
    return y


@op("max_pool_with_indices", Kind.OPAQUE)
def max_pool_with_indices(x, *, kernel: Sequence[int], strides: Sequence[int],
                          pads: Sequence[int], dilations: Sequence[int], ceil_mode: bool = False,
                          column_major: bool = False):
    """MaxPool and ONNX's Indices output: each maximum's flat index in x (over N, C and the
    spatial dims, the spatial ones in row-major order, or column-major for 2-D storage_order=1)."""
    spatial = len(kernel)
    fn = {1: F.max_pool1d, 2: F.max_pool2d, 3: F.max_pool3d}.get(spatial)
    if fn is None:
        raise UnsupportedError(f"pooling over {spatial} spatial dims (1-3 are supported)")
    xp = pad_spatial(x, pads, value=lowest(x.dtype))
    y, plane = fn(xp, list(kernel), list(strides), 0, list(dilations), ceil_mode=ceil_mode,
                  return_indices=True)
    begin, _ = split_pads(pads)
    padded, sizes = xp.shape[2:], x.shape[2:]
    coords, rest = [], plane
    for size in reversed(padded):  # the padded plane's index -> coordinates in x
        coords.insert(0, torch.remainder(rest, size))
        rest = torch.div(rest, size, rounding_mode="floor")
    coords = [c - b for c, b in zip(coords, begin)]
    if column_major:
        coords, sizes = coords[::-1], list(sizes)[::-1]
    flat = torch.zeros_like(plane)
    for c, size in zip(coords, sizes):
        flat = flat * size + c
    channel = torch.arange(x.shape[0] * x.shape[1], device=x.device).reshape(
        x.shape[0], x.shape[1], *([1] * spatial))
    y = _drop_windows_on_end_pad(y, x, strides, pads) if ceil_mode else y
    flat = (channel * math.prod(sizes) + flat)
    flat = _drop_windows_on_end_pad(flat, x, strides, pads) if ceil_mode else flat
    return y, flat


@op("max_unpool", Kind.OPAQUE)
def max_unpool(x, indices, *, unpooled_shape: Sequence[int], output_shape: Sequence[int]):
    """Each value of x written at its flat index (MaxPool's Indices) into zeros of the unpooled
    shape; a larger output_shape extends that with zeros at the end of each dim (as ONNX's
    reference places it)."""
    count = math.prod(unpooled_shape)
    flat = checked_indices(indices.reshape(-1), count, "MaxUnpool")
    out = torch.zeros(count, dtype=x.dtype, device=x.device)
    out = out.scatter(0, flat, x.reshape(-1)).reshape(tuple(unpooled_shape))
    grow = [v for have, want in zip(reversed(unpooled_shape), reversed(output_shape))
            for v in (0, want - have)]
    return F.pad(out, grow) if any(grow) else out
