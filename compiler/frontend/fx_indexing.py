"""x[i0, i1, ...]: index tensors on adjacent axes, full slices elsewhere, as one table gather.

transformers builds an SDPA padding mask as `padding_mask[batch_arange[:, None, None, None],
kv_arange[None, None, None, :]]`, and sequence-classification heads pool with
`logits[torch.arange(batch), last_token]`. Both are advanced indexing with several index tensors;
with them on adjacent axes, torch broadcasts the indices and puts their shape where those axes were.
That is one gather of x with the indexed axes flattened into one, at the flat index
sum(i_m * stride_m): a `gather` when every index is a constant (a slice or a view where it is one),
else a `gather_elements`, which computes in a kernel whatever produced x.

Safety: an index out of its axis's range must not read another row (torch raises). Constant
indices are checked here, at import. At most one index may be known only at run time: its axis goes
first in the flattening, so an out-of-range value lands outside the flat range too, where the gather's
own run-time check reports it. (Negative indices count from the end, as in torch.)

The frontend's Ctx is passed in (this module does not import the frontend back).
"""
from __future__ import annotations

import math
from typing import Sequence

import torch

from trident.compiler.errors import ShapeError, UnsupportedError


def gather_adjacent(cx, x, axis: int, indices: Sequence, is_runtime) -> object:
    """x indexed by `indices` on axes axis .. axis + len(indices) - 1 (full slices elsewhere)."""
    shape = list(cx.shape(x))
    sizes = shape[axis:axis + len(indices)]
    runtime = [m for m, index in enumerate(indices) if is_runtime(index)]
    if len(runtime) > 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": advanced indexing with {len(runtime)} index '
                               "tensors known only at run time (one is supported)")
    order = runtime + [m for m in range(len(indices)) if m not in runtime]
    if order != list(range(len(indices))):  # the run-time index's axis first
        perm = list(range(axis)) + [axis + m for m in order] + list(range(axis + len(indices), len(shape)))
        x = cx.emit("transpose", [x], perm=perm)
        indices, sizes = [indices[m] for m in order], [sizes[m] for m in order]
    strides = [1] * len(sizes)
    for m in range(len(sizes) - 2, -1, -1):
        strides[m] = strides[m + 1] * sizes[m + 1]
    flat = _constant_part(cx, indices[len(runtime):], sizes[len(runtime):], strides[len(runtime):])
    rows = shape[:axis] + [strides[0] * sizes[0]] + shape[axis + len(indices):]
    x = cx.emit("reshape", [x], shape=rows)
    if not runtime:  # a constant gather: a slice or a view where it is one (gathers_as_slices)
        return cx.emit("gather", [x, flat], axis=axis)
    flat = _add_runtime_index(cx, indices[0], sizes[0], strides[0], flat)
    return _element_gather(cx, x, axis, flat)


def _element_gather(cx, rows, axis: int, flat):
    """rows[..., flat[s...], ...] as a GatherElements (a kernel, whatever computed `rows`): the flat
    index as one dim, expanded over the others, then the index's shape restored."""
    pre, post = list(cx.shape(rows)[:axis]), list(cx.shape(rows)[axis + 1:])
    index_shape = list(cx.shape(flat))
    n = math.prod(index_shape)
    index = cx.emit("reshape", [flat], shape=[1] * len(pre) + [n] + [1] * len(post))
    index = cx.emit("expand", [index], shape=pre + [n] + post)
    out = cx.emit("gather_elements", [rows, index], axis=axis)
    return cx.emit("reshape", [out], shape=pre + index_shape + post)


def _constant_part(cx, indices: Sequence[torch.Tensor], sizes: Sequence[int], strides: Sequence[int]):
    """sum(index * stride) of the constant indices (each checked against its axis), int64."""
    total = torch.zeros((), dtype=torch.int64)
    for index, size, stride in zip(indices, sizes, strides):
        index = index.detach().cpu().to(torch.int64)
        bad = (index < -size) | (index >= size)
        if bool(bad.any()):
            raise ShapeError(f'fx node "{cx.node_name}": index {int(index[bad][0])} is out of range for an '
                             f"axis of size {size}")
        total = total + torch.where(index < 0, index + size, index) * stride
    return total


def _add_runtime_index(cx, index, size: int, stride: int, constant: torch.Tensor):
    """index (negatives counted from the end) * stride + constant, as IR ops. An index below -size
    becomes size: out of range upwards, where the gather's check reports it (a negative flat index
    would count back from the table's end, into another row)."""
    dtype = cx.dtype(index)
    if dtype.is_floating_point or dtype == torch.bool:
        raise UnsupportedError(f'fx node "{cx.node_name}": an index tensor of {dtype}')
    index = cx.emit("cast", [index], dtype=torch.int64) if dtype != torch.int64 else index
    zero, size_t = torch.tensor(0, dtype=torch.int64), torch.tensor(size, dtype=torch.int64)
    index = cx.emit("where", [cx.emit("less", [index, zero]), cx.emit("add", [index, size_t]), index])
    index = cx.emit("where", [cx.emit("less", [index, zero]), size_t, index])
    if stride != 1:
        index = cx.emit("mul", [index, torch.tensor(stride, dtype=torch.int64)])
    if constant.dim() or int(constant):
        index = cx.emit("add", [index, constant])
    return index
