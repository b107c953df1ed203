"""Converters of slicing and indexing: slices, flips, x[idx] (ints, slices, None, Ellipsis, a list,
index tensors), embeddings, index_select, gather, cumsum, cumprod.

x[i0, i1, ...]: index tensors on adjacent axes, full slices elsewhere, as one table gather.

transformers builds an SDPA padding mask as `padding_mask[batch_arange[:, None, None, None],
kv_arange[None, None, None, :]]`, and sequence-classification heads pool with
`logits[torch.arange(batch), last_token]`. Both are advanced indexing with several index tensors;
with them on adjacent axes, torch broadcasts the indices and puts their shape where those axes were.
That is one gather of x with the indexed axes flattened into one, at the flat index
sum(i_m * stride_m): a `gather` when every index is a constant (a slice or a view where it is one),
else a `gather_elements`, which computes in a kernel whatever produced x.

Safety: an index out of its axis's range must not read another row (torch raises). Constant
indices are checked here, at import. A run-time index out of its range is replaced by one whose
term alone reaches past the flat range, so the flat index lands outside it too, where the gather's
own run-time check reports it (SuperPoint's `scores[keypoints[0], keypoints[1]]`). (Negative
indices count from the end, as in torch.)
"""
from __future__ import annotations

import math
import operator
from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.helpers import _full_index, _norm_slice, _reshape, contiguous_strides
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ----------------------------------------------------------------- slicing, indexing ----
def _slice_and_reshape(cx: Ctx, x, slices: list[tuple[int, int, int, int]], shape: list[int]):
    """Apply (axis, start, end, step) slices, then reshape to `shape` (drops/adds unit dims)."""
    for axis, start, end, step in slices:
        if step <= 0:
            raise UnsupportedError(f'fx node "{cx.node_name}": slice step {step}')
    # A full slice is dropped, except of a constant: folded, it keeps the name "<weight>.slice"
    # at every size, which a shape-generic build matches across its probes (a position table
    # sliced to the sequence is the whole table at the profile's max).
    if not isinstance(x, torch.Tensor):
        slices = [s for s in slices if (s[1], s[2], s[3]) != (0, cx.shape(x)[s[0]], 1)]
    if slices:
        x = cx.emit("slice", [x], starts=[s[1] for s in slices], ends=[s[2] for s in slices],
                    axes=[s[0] for s in slices], steps=[s[3] for s in slices])
    return _reshape(cx, x, shape)


@converts(aten.slice.Tensor)
def _aten_slice(cx: Ctx, x, dim=0, start=None, end=None, step=1):
    axis = _axis(dim, cx.rank(x))
    shape = list(cx.shape(x))
    s = _norm_slice(shape[axis], start, end, step)
    shape[axis] = len(range(*s))
    return _slice_and_reshape(cx, x, [(axis, *s)], shape)


@converts(aten.flip.default, torch.flip, "flip")
def _flip(cx: Ctx, x, *dims, **named):
    """A slice with step -1 along each dim (as ONNX exporters write it), which
    compiler/passes/resample.py reverses in the pointwise kernels. dims positional (a list or each
    its own argument) or named (`x.flip(dims=...)`, `torch.flip(x, dims=...)`)."""
    if set(named) - {"dims"}:
        raise UnsupportedError(f'fx node "{cx.node_name}": flip with {sorted(named)}')
    dims = named["dims"] if "dims" in named else dims
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
    shape, rank = list(cx.shape(x)), cx.rank(x)
    axes = sorted({_axis(d, rank) for d in dims})
    if not axes or any(shape[a] == 0 for a in axes):
        return x
    return cx.emit("slice", [x], starts=[shape[a] - 1 for a in axes], ends=[-1] * len(axes),
                   axes=axes, steps=[-1] * len(axes))


@converts(aten.select.int, torch.select, "select")
def _select(cx: Ctx, x, dim, index):
    return _getitem_tensor(cx, x, (slice(None),) * _axis(dim, cx.rank(x)) + (int(index),))


@converts(aten.narrow.default, torch.narrow, "narrow")
def _narrow(cx: Ctx, x, dim, start, length):
    return _aten_slice(cx, x, dim, start, start + length)


def _getitem_tensor(cx: Ctx, x, idx):
    """x[idx] for ints, slices, None, Ellipsis, one list of ints, and one index tensor with full
    slices elsewhere."""
    if isinstance(idx, list) and any(k is None or k is Ellipsis or isinstance(k, slice) for k in idx):
        idx = tuple(idx)  # a list holding slices indexes as a tuple does (torch keeps numpy's old rule)
    idx = _list_index(cx, x, idx if isinstance(idx, tuple) else (idx,))
    tensor_pos = [i for i, k in enumerate(idx) if isinstance(k, (Val, torch.Tensor))]
    if tensor_pos:
        return _index_with_tensor(cx, x, idx, tensor_pos)
    shape = cx.shape(x)
    idx = _full_index(cx, idx, len(shape))
    slices, out_shape, axis = [], [], 0
    for k in idx:
        if k is None:
            out_shape.append(1)
            continue
        size = shape[axis]
        if isinstance(k, bool) or not isinstance(k, (int, slice)):
            raise UnsupportedError(f'fx node "{cx.node_name}": index {k!r}')
        if isinstance(k, int):
            i = _axis(k, size)
            slices.append((axis, i, i + 1, 1))
        else:
            s = _norm_slice(size, k.start, k.stop, k.step)
            slices.append((axis, *s))
            out_shape.append(len(range(*s)))
        axis += 1
    return _slice_and_reshape(cx, x, slices, out_shape)


def _list_index(cx: Ctx, x, idx: tuple) -> tuple:
    """One Python list of ints in an index (Falcon's fused_qkv[..., [-2], :]) as what it selects: a
    slice where its entries are an evenly spaced ascending run, else a constant index tensor;
    negative entries count from the end. (Several lists index jointly: left to the tensor path.)"""
    lists = [k for k in idx if isinstance(k, list)]
    if len(lists) != 1 or not lists[0] or any(isinstance(k, (Val, torch.Tensor)) for k in idx) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in lists[0]):
        return idx
    shape = cx.shape(x)
    idx = _full_index(cx, idx, len(shape))
    axis = [k for k in idx if k is not None].index(lists[0])
    size = shape[axis]
    if any(not -size <= i < size for i in lists[0]):
        raise ShapeError(f'fx node "{cx.node_name}": index {lists[0]} is out of range for a dim of size {size}')
    entries = [i % size for i in lists[0]]
    step = entries[1] - entries[0] if len(entries) > 1 else 1
    if step > 0 and entries == list(range(entries[0], entries[0] + step * len(entries), step)):
        selected = slice(entries[0], entries[-1] + 1, step)
    else:
        selected = torch.tensor(entries)
    return tuple(selected if k is lists[0] else k for k in idx)


def split_advanced(cx: Ctx, idx: tuple, rank: int, what: str) -> tuple[tuple, list, list[int]]:
    """An index of ints, slices and index tensors, as torch reads it: (basic, kept, advanced).
    `basic` applies first (basic indexing: an int drops its dim, unlike numpy's, where an int
    beside index tensors is one more of them), with full slices at the tensors' axes; `kept` is
    the index past its ints (one item per dim left), `advanced` where the tensors sit in it."""
    if None in idx or sum(k is Ellipsis for k in idx) > 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": {what} with None or several Ellipsis')
    idx = _full_index(cx, tuple(idx), rank)
    basic = tuple(k if isinstance(k, (int, slice)) else slice(None) for k in idx)
    kept = [k for k in idx if not isinstance(k, int)]
    return basic, kept, [a for a, k in enumerate(kept) if not isinstance(k, slice)]


def adjacent(axes: list[int]) -> bool:
    """Do the index tensors sit side by side (their result then takes their place, else it goes
    first)?"""
    return axes == list(range(axes[0], axes[0] + len(axes)))


def _index_with_tensor(cx: Ctx, x, idx, tensor_pos: list[int]):
    """Advanced indexing, as torch defines it (split_advanced): the index tensors broadcast, and
    their shape takes the place of their axes where those are adjacent, else goes first."""
    basic, kept, advanced = split_advanced(cx, idx, cx.rank(x), "advanced indexing")
    indices = [kept[a] for a in advanced]
    if any(cx.dtype(k) == torch.bool for k in indices):
        raise UnsupportedError(f'fx node "{cx.node_name}": boolean mask indexing (data-dependent shape)')
    x = _getitem_tensor(cx, x, basic)
    if not adjacent(advanced):  # separated: first
        rest = [a for a in range(len(kept)) if a not in advanced]
        x, advanced = cx.emit("transpose", [x], perm=advanced + rest), list(range(len(advanced)))
    if len(indices) == 1:
        return cx.emit("gather", [x, indices[0]], axis=advanced[0])
    return gather_adjacent(cx, x, advanced[0], indices, lambda index: isinstance(index, Val))


@converts(operator.getitem)
def _getitem(cx: Ctx, obj, idx):
    if isinstance(obj, (Val, torch.Tensor)):
        return _getitem_tensor(cx, obj, idx)
    return obj[idx]  # multi-result nodes (split, max_pool2d_with_indices) and shapes


@converts(aten.index.Tensor)
def _aten_index(cx: Ctx, x, indices):
    # In aten.index a None entry keeps that dimension whole (unlike Python's x[None]).
    return _getitem_tensor(cx, x, tuple(slice(None) if i is None else i for i in indices))


@converts(aten.one_hot.default, F.one_hot, torch._C._nn.one_hot)
def _one_hot(cx: Ctx, x, num_classes: int = -1):
    """Rows of the identity (int64) at x: a gather, whose run-time check reports a class past
    num_classes as torch raises; a negative class is sent past the table too (torch refuses it,
    where a gather would count it from the end). MoE routers (Switch, NLLB-MoE) mask with it."""
    if num_classes is None or int(num_classes) < 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": one_hot without num_classes (its width '
                               "is the data's maximum)")
    n = int(num_classes)
    if cx.dtype(x) != torch.int64:
        raise UnsupportedError(f'fx node "{cx.node_name}": one_hot of {cx.dtype(x)} (torch takes int64)')
    zero, past = torch.tensor(0, dtype=torch.int64), torch.tensor(n, dtype=torch.int64)
    x = cx.emit("where", [cx.emit("less", [x, zero]), past, x])
    return cx.emit("gather", [torch.eye(n, dtype=torch.int64), x], axis=0)


@converts(aten.embedding.default, torch.embedding)
def _aten_embedding(cx: Ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False,
                    sparse=False):
    return cx.emit("gather", [weight, indices], axis=0)


@converts(F.embedding)
def _f_embedding(cx: Ctx, input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False):
    if max_norm is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": embedding with max_norm')
    return cx.emit("gather", [weight, input], axis=0)


@converts(aten.index_select.default, torch.index_select, "index_select")
def _index_select(cx: Ctx, x, dim, index):
    return cx.emit("gather", [x, index], axis=_axis(dim, cx.rank(x)))


@converts(aten.gather.default, torch.gather, "gather")
def _gather_elements(cx: Ctx, x, dim, index, sparse_grad=False):
    return cx.emit("gather_elements", [x, index], axis=_axis(dim, cx.rank(x)))


def _running(op: str):
    """torch.cumsum / cumprod: the scan generator's running sum or product along dim."""
    def convert(cx: Ctx, x, dim, dtype=None):
        if dtype is None and not cx.dtype(x).is_floating_point:
            dtype = torch.int64  # torch sums and multiplies integers and booleans in int64
        if dtype is not None:
            x = cx.cast(x, dtype)
        return cx.emit(op, [x], axis=_axis(dim, cx.rank(x)))
    return convert


converts(aten.cumsum.default, torch.cumsum, "cumsum")(_running("cumsum"))
converts(aten.cumprod.default, torch.cumprod, "cumprod")(_running("cumprod"))


# -------------------------------------------------- several index tensors, one gather ----
def gather_adjacent(cx, x, axis: int, indices: Sequence, is_runtime) -> object:
    """x indexed by `indices` on axes axis .. axis + len(indices) - 1 (full slices elsewhere)."""
    shape = list(cx.shape(x))
    sizes = shape[axis:axis + len(indices)]
    batched = _batched_gather(cx, x, axis, indices, is_runtime)
    if batched is not None:
        return batched
    flat = flat_index(cx, indices, sizes, is_runtime)
    rows = shape[:axis] + [math.prod(sizes)] + shape[axis + len(indices):]
    x = cx.emit("reshape", [x], shape=rows)
    if isinstance(flat, torch.Tensor):  # a constant gather: a slice or a view where it is one
        return cx.emit("gather", [x, flat], axis=axis)
    return _element_gather(cx, x, axis, flat)


ANYWHERE = -1  # an index into an axis of size 1: every entry picks its one row


def _identity_dim(index: torch.Tensor, shape: Sequence[int], size: int) -> int | None:
    """The dim of the broadcast index shape `shape` along which the constant `index` is
    arange(size) (1 on every other dim), if it is one such; ANYWHERE for an axis of size 1 that
    every entry picks (0 or -1: a batch of one's arange)."""
    values = index.detach().cpu().reshape(-1).to(torch.int64)
    if size == 1:
        return ANYWHERE if bool(((values == 0) | (values == -1)).all()) else None
    lead = len(shape) - index.dim()
    spread = [lead + d for d, n in enumerate(index.shape) if n != 1]
    if len(spread) != 1 or shape[spread[0]] != size:
        return None
    return spread[0] if torch.equal(values, torch.arange(size)) else None


def _batched_gather(cx, x, axis: int, indices: Sequence, is_runtime):
    """x[arange(b)[:, None], idx] (transformers' padding masks at run-time key positions): each
    constant index an arange laid along a dim of its own, and one run-time index. That is a
    GatherElements of x along the run-time index's axis, x's other indexed axes aligned with the
    dims their aranges lie along (expanded over the rest): no flat index, so no integer that
    depends on x's sizes beyond its axis length (a shape-generic engine fits that one). None where
    the indices are not so."""
    runtime = [m for m, index in enumerate(indices) if is_runtime(index)]
    if len(runtime) != 1 or len(indices) < 2 or cx.dtype(indices[runtime[0]]).is_floating_point:
        return None  # (the flat index refuses a float index)
    shape = list(cx.shape(x))
    sizes = shape[axis:axis + len(indices)]
    out = list(torch.broadcast_shapes(*[tuple(cx.shape(i)) for i in indices]))
    dims = {m: _identity_dim(i, out, sizes[m]) for m, i in enumerate(indices) if m != runtime[0]}
    laid = [d for d in dims.values() if d != ANYWHERE]
    if None in dims.values() or len(set(laid)) != len(laid):
        return None
    pre, post, rt = shape[:axis], shape[axis + len(indices):], runtime[0]
    # x's indexed axes in the order of their dims (those of size 1 vanish in the reshape), the
    # run-time one last, in one more dim
    order = sorted(dims, key=dims.get) + [rt]
    perm = list(range(axis)) + [axis + m for m in order] + list(range(axis + len(indices), len(shape)))
    if perm != list(range(len(shape))):
        x = cx.emit("transpose", [x], perm=perm)
    aligned = [1] * len(out)
    for m, d in dims.items():
        if d != ANYWHERE:
            aligned[d] = sizes[m]
    x = cx.emit("reshape", [x], shape=pre + aligned + [sizes[rt]] + post)
    x = cx.emit("expand", [x], shape=pre + out + [sizes[rt]] + post)
    index = indices[rt]
    lead = [1] * (len(out) - cx.rank(index))
    index = cx.emit("reshape", [index], shape=[1] * len(pre) + lead + list(cx.shape(index)) + [1] * (1 + len(post)))
    index = cx.emit("expand", [index], shape=pre + out + [1] + post)
    if cx.dtype(index) != torch.int64:
        index = cx.emit("cast", [index], dtype=torch.int64)
    picked = cx.emit("gather_elements", [x, index], axis=len(pre) + len(out))
    return cx.emit("reshape", [picked], shape=pre + out + post)


def flat_index(cx, indices: Sequence, sizes: Sequence[int], is_runtime=lambda i: isinstance(i, Val)):
    """The index into axes of `sizes` flattened (row-major) that `indices` (broadcast together)
    pick: an int64 constant where every index is one, else an IR value, which an index out of
    its axis sends past the flat range (an error where it is used, never another row)."""
    strides = list(contiguous_strides(sizes))
    runtime = [m for m, index in enumerate(indices) if is_runtime(index)]
    constant = [m for m in range(len(indices)) if m not in runtime]
    flat = _constant_part(cx, [indices[m] for m in constant], [sizes[m] for m in constant],
                          [strides[m] for m in constant])
    for m in runtime:
        flat = _add_runtime_index(cx, indices[m], sizes[m], strides[m], math.prod(sizes), flat)
    return flat


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


def _add_runtime_index(cx, index, size: int, stride: int, total: int, flat: torch.Tensor):
    """index (negatives counted from the end) * stride + flat, as IR ops. An index out of
    [-size, size) becomes one whose term alone reaches `total` (the flat range), so the flat index
    is out of range too, where the gather's check reports it, and never another row's."""
    dtype = cx.dtype(index)
    if dtype.is_floating_point or dtype == torch.bool:
        raise UnsupportedError(f'fx node "{cx.node_name}": an index tensor of {dtype}')
    index = cx.emit("cast", [index], dtype=torch.int64) if dtype != torch.int64 else index
    zero, size_t = torch.tensor(0, dtype=torch.int64), torch.tensor(size, dtype=torch.int64)
    outside = torch.tensor(-(-total // stride), dtype=torch.int64)  # (>= size)
    index = cx.emit("where", [cx.emit("less", [index, zero]), cx.emit("add", [index, size_t]), index])
    index = cx.emit("where", [cx.emit("less", [index, zero]), outside, index])
    index = cx.emit("where", [cx.emit("greater", [index, size_t - 1]), outside, index])
    if stride != 1:
        index = cx.emit("mul", [index, torch.tensor(stride, dtype=torch.int64)])
    if not isinstance(flat, torch.Tensor) or flat.dim() or int(flat):
        index = cx.emit("add", [index, flat])
    return index
