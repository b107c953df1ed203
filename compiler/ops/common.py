"""Helpers the reference functions of several op families share."""
from __future__ import annotations

import math
from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.errors import InputError


def split_pads(pads: Sequence[int]) -> tuple[list[int], list[int]]:
    n = len(pads) // 2
    return list(pads[:n]), list(pads[n:])


def pad_spatial(x, pads: Sequence[int], value: float = 0.0):
    """Apply ONNX-order pads (x1_begin, x2_begin, ..., x1_end, x2_end, ...) to the spatial dims."""
    begin, end = split_pads(pads)
    if not any(begin) and not any(end):
        return x
    torch_pads = []
    for b, e in zip(reversed(begin), reversed(end)):  # F.pad starts from the last dim
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value)


def lowest(dtype: torch.dtype):
    """The identity of max: what max over nothing (or over padding) is."""
    if dtype == torch.bool:
        return False
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


def highest(dtype: torch.dtype):
    """The identity of min."""
    if dtype == torch.bool:
        return True
    return math.inf if dtype.is_floating_point else torch.iinfo(dtype).max


def reduced_shape(x, axes: Sequence[int], keepdims: bool) -> list[int]:
    return [1 if a in axes else d for a, d in enumerate(x.shape) if keepdims or a not in axes]


def index_out_of_range(indices: torch.Tensor, size: int) -> int | None:
    """The first index of `indices` outside [-size, size) (the lowest, else the highest), or None.
    Reads the values back: not inside CUDA-graph capture."""
    if indices.numel() == 0:
        return None
    low, high = (int(v) for v in torch.stack(torch.aminmax(indices)).tolist())
    return low if low < -size else high if high >= size else None


def checked_indices(indices, size: int, what: str):
    """`indices` as int64 in [0, size), negative ones counted from the end.

    An out-of-range index is an error, raised wherever the values can be read without stalling
    a CUDA graph capture (the CPU, the engine's first run). Either way indices are clamped, so
    a captured replay fed out-of-range indices reads and writes only inside the tensor."""
    indices = indices.to(torch.int64)
    capturing = indices.is_cuda and torch.cuda.is_current_stream_capturing()
    if indices.device.type != "meta" and not capturing:
        bad = index_out_of_range(indices, size)
        if bad is not None:
            raise InputError(f"{what}: index {bad} is out of range for a dim of size {size}")
    return torch.where(indices < 0, indices + size, indices).clamp(0, max(size - 1, 0))
