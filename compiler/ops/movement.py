"""Ops that move data and compute nothing: reshapes, transposes, slices, gathers."""
from __future__ import annotations

from typing import Sequence

import torch

from trident.compiler.ops.common import checked_indices
from trident.compiler.ops.registry import Kind, op


@op("reshape", Kind.MOVEMENT)
def reshape(x, *, shape: Sequence[int]):
    return x.reshape(tuple(shape))


@op("transpose", Kind.MOVEMENT)
def transpose(x, *, perm: Sequence[int]):
    return x.permute(tuple(perm))


@op("expand", Kind.MOVEMENT)
def expand(x, *, shape: Sequence[int]):
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))  # ONNX Expand broadcasts both ways
    return x.expand(target)


@op("concat", Kind.MOVEMENT, same_dtype=True)
def concat(*xs, axis: int):
    return torch.cat(xs, dim=axis)


@op("split", Kind.MOVEMENT)
def split(x, *, axis: int, sizes: Sequence[int]):
    return tuple(torch.split(x, list(sizes), dim=axis))


@op("slice", Kind.MOVEMENT)
def slice_(x, *, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int]):
    # Attributes are clamped by the frontend: 0 <= start, end within [-1, dim] and step != 0.
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index = torch.arange(start, end, step, device=x.device)
        x = x.index_select(axis, index)
    return x


@op("gather", Kind.MOVEMENT)
def gather(x, indices, *, axis: int = 0):
    flat = checked_indices(indices, x.shape[axis], "Gather").reshape(-1)
    out = x.index_select(axis, flat)
    return out.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


def _pad_index(size: int, before: int, after: int, mode: str, device):
    """Source index along one axis for each output position of a pad, and which positions read
    the input at all (constant mode fills the others)."""
    pos = torch.arange(-before, size + after, device=device)
    inside = (pos >= 0) & (pos < size)
    if mode == "edge":
        source = pos.clamp(0, size - 1)
    elif mode == "reflect":  # mirror without repeating the edge: period 2 * (size - 1)
        period = max(2 * (size - 1), 1)
        folded = torch.remainder(pos, period)
        source = torch.where(folded < size, folded, period - folded)
    elif mode == "wrap":
        source = torch.remainder(pos, size)
    else:
        source = pos.clamp(0, max(size - 1, 0))
    return source, inside


@op("pad", Kind.MOVEMENT)
def pad(x, *, pads: Sequence[int], mode: str = "constant", value: float | int | bool = 0):
    """ONNX Pad: pads = (x1_begin, x2_begin, ..., x1_end, ...) over every dim; negative pads crop
    first (as onnxruntime: reflect, edge and wrap then see the cropped tensor).
    mode: constant (fill with `value`), reflect, edge or wrap."""
    rank = x.dim()
    for axis in range(rank):  # the crops
        before, after = -min(pads[axis], 0), -min(pads[rank + axis], 0)
        if before or after:
            x = x.narrow(axis, before, max(x.shape[axis] - before - after, 0))
    fill = torch.ones((), dtype=torch.bool, device=x.device)
    for axis in range(rank):
        before, after = max(pads[axis], 0), max(pads[rank + axis], 0)
        if before == 0 and after == 0:
            continue
        size = x.shape[axis]
        source, inside = _pad_index(size, before, after, mode, x.device)
        if size == 0:  # nothing to read: every position is filled
            if mode != "constant":
                raise ValueError(f"{mode} padding of an empty dim {axis}")
            shape = list(x.shape)
            shape[axis] = source.numel()
            x = x.new_empty(shape)
        else:
            x = x.index_select(axis, source)
        if mode == "constant":
            fill = fill & inside.reshape([-1 if d == axis else 1 for d in range(rank)])
    return x.masked_fill(~fill, value) if mode == "constant" else x


@op("bitcast", Kind.MOVEMENT)
def bitcast(x, *, source: torch.dtype, to: torch.dtype):
    """The bits of x as `source` (the model's type: an fp16 engine may hold the value in fp16)
    read as `to`, of the same width (ONNX BitCast; little endian)."""
    return x.to(source).contiguous().view(to)
