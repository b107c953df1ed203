"""Reductions over a set of axes."""
from __future__ import annotations

import math
from typing import Sequence

import torch

from trident.compiler.ops.common import highest, lowest, reduced_shape
from trident.compiler.ops.registry import Kind, op


@op("reduce_sum", Kind.REDUCTION)
def reduce_sum(x, *, axes: Sequence[int], keepdims: bool = True):
    return torch.sum(x, dim=tuple(axes), keepdim=keepdims) if axes else x.clone()


@op("reduce_mean", Kind.REDUCTION)
def reduce_mean(x, *, axes: Sequence[int], keepdims: bool = True, correction: int = 0):
    """The sum over `axes` divided by their length N; by max(N - correction, 0) where a correction
    is given (a variance with Bessel's: inf or NaN at N <= correction, as torch.var)."""
    if not correction:
        return torch.mean(x, dim=tuple(axes), keepdim=keepdims) if axes else x.clone()
    count = math.prod(x.shape[a] for a in axes)
    total = torch.sum(x, dim=tuple(axes), keepdim=keepdims) if axes else x
    return total / max(count - correction, 0)


@op("reduce_max", Kind.REDUCTION)
def reduce_max(x, *, axes: Sequence[int], keepdims: bool = True):
    if not axes:
        return x.clone()
    if any(x.shape[a] == 0 for a in axes):  # torch refuses; ONNX gives max's identity
        return torch.full(reduced_shape(x, axes, keepdims), lowest(x.dtype), dtype=x.dtype,
                          device=x.device)
    return torch.amax(x, dim=tuple(axes), keepdim=keepdims)


@op("reduce_min", Kind.REDUCTION)
def reduce_min(x, *, axes: Sequence[int], keepdims: bool = True):
    if not axes:
        return x.clone()
    if any(x.shape[a] == 0 for a in axes):
        return torch.full(reduced_shape(x, axes, keepdims), highest(x.dtype), dtype=x.dtype,
                          device=x.device)
    return torch.amin(x, dim=tuple(axes), keepdim=keepdims)


@op("reduce_prod", Kind.REDUCTION)
def reduce_prod(x, *, axes: Sequence[int], keepdims: bool = True):
    for a in sorted(axes, reverse=True):  # torch.prod takes one dim at a time
        x = torch.prod(x, dim=a, keepdim=keepdims)
    return x if axes else x.clone()


def _arg_extreme(fn, x, axis: int, keepdims: bool, select_last_index: bool):
    if x.shape[axis] == 0:
        raise ValueError(f"arg-reduction over dim {axis} of size 0")
    if select_last_index:  # the last of equal extremes: search the reversed axis
        flipped = fn(torch.flip(x, [axis]), dim=axis, keepdim=keepdims)
        return x.shape[axis] - 1 - flipped
    return fn(x, dim=axis, keepdim=keepdims)


@op("argmax", Kind.REDUCTION)
def argmax(x, *, axis: int, keepdims: bool = True, select_last_index: bool = False):
    """The index (int64) of the first (or last) largest value along `axis`; NaN is largest."""
    return _arg_extreme(torch.argmax, x, axis, keepdims, select_last_index)


@op("argmin", Kind.REDUCTION)
def argmin(x, *, axis: int, keepdims: bool = True, select_last_index: bool = False):
    return _arg_extreme(torch.argmin, x, axis, keepdims, select_last_index)
