"""Converters of strided views (as_strided, Tensor.unfold: movement ops where the view is a slice,
permutation or broadcast of a contiguous block, else a gather with a constant index), movedim,
unflatten, slice_scatter / select_scatter, and the *_copy forms in which functionalized graphs
spell views; and of the writes at computed positions: scatter / scatter_add / scatter_reduce,
index_add and index_put (ScatterElements, or decompose.py's ScatterND of rows)."""
from __future__ import annotations

import math

import torch
import torch.fx

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx import decompose
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.helpers import (_identity, _ints, _promote, _reshape, _transpose,
                                                contiguous_strides)
from trident.compiler.frontend.fx.indexing import _aten_slice, _norm_slice, _select
from trident.compiler.frontend.fx.linear import _t
from trident.compiler.frontend.fx.movement import (_expand, _permute, _squeeze, _transpose2,
                                                   _unsqueeze, _view)
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ------------------------------------------------------------------ strided views ----
# A view is a map from output positions to input elements. The IR's values are dense, so a view
# becomes movement ops when the map is a slice / permutation / broadcast of a contiguous block
# (they fuse into their neighbours), and a gather with a constant index otherwise.
def _strided_as_movement(cx: Ctx, x, size: list[int], stride: list[int], offset: int):
    """The view (size, stride, offset) of the contiguous elements of x as slice, reshape,
    transpose and expand, or None when it is not one."""
    n = math.prod(cx.shape(x))
    dims = sorted(((d, sz, st) for d, (sz, st) in enumerate(zip(size, stride))
                   if sz != 1 and st != 0), key=lambda t: -t[2])
    block = 1
    for _, sz, st in reversed(dims):
        if st != block:
            return None
        block *= sz
    if offset < 0 or offset + block > n or 0 in size:
        return None
    y = _reshape(cx, x, [n])
    if (offset, block) != (0, n):
        y = cx.emit("slice", [y], starts=[offset], ends=[offset + block], axes=[0], steps=[1])
    y = _reshape(cx, y, [sz for _, sz, _ in dims])
    y = _transpose(cx, y, sorted(range(len(dims)), key=lambda i: dims[i][0]))
    y = _reshape(cx, y, [sz if sz != 1 and st != 0 else 1 for sz, st in zip(size, stride)])
    return _expand(cx, y, list(size))


def _view_by_index(cx: Ctx, x, index: torch.Tensor):
    """x viewed through `index` (flat positions into x's contiguous elements): movement ops when
    `index` is a strided view of arange (its strides say which), else a gather."""
    if index.dtype == torch.int64 and index.numel() and index._base is not None:
        moved = _strided_as_movement(cx, x, list(index.shape), list(index.stride()),
                                     index.storage_offset())
        if moved is not None:
            return moved
    flat = _reshape(cx, x, [math.prod(cx.shape(x))])
    return cx.emit("gather", [flat, index.contiguous()], axis=0)


def _arange_like(cx: Ctx, x) -> torch.Tensor:
    return torch.arange(math.prod(cx.shape(x)), dtype=torch.int64).reshape(cx.shape(x))


def _input_layout(cx: Ctx) -> tuple[tuple[int, ...], int] | None:
    """(strides, storage offset) torch recorded for the first argument of the node being
    converted (export and dynamo record them), or None."""
    node = cx.fx_node
    arg = node.args[0] if node is not None and node.args else None
    meta = arg.meta.get("val", arg.meta.get("example_value")) if isinstance(arg, torch.fx.Node) \
        else None
    if not isinstance(meta, torch.Tensor):
        return None
    try:
        return tuple(int(s) for s in meta.stride()), int(meta.storage_offset())
    except (TypeError, RuntimeError):  # symbolic strides
        return None


def _storage_index(shape, strides, offset: int, size, stride, new_offset: int):
    """For an input laid out as (shape, strides, offset) in its storage, the flat index of the
    input element that each position of the view (size, stride, new_offset) reads; None when the
    view reads storage the input does not cover. (Input elements sharing storage hold the same
    value, so any of them will do.)"""
    def last(sh, st, off):
        return off + sum((d - 1) * s for d, s in zip(sh, st) if d > 0)
    storage = max(last(shape, strides, offset), last(size, stride, new_offset)) + 1
    base = torch.arange(storage, dtype=torch.int64)
    position = torch.as_strided(base, shape, strides, offset).reshape(-1)
    inverse = torch.full((storage,), -1, dtype=torch.int64)
    inverse[position] = torch.arange(position.numel(), dtype=torch.int64)
    index = inverse[torch.as_strided(base, size, stride, new_offset)]
    return None if bool((index < 0).any()) else index


@converts(aten.as_strided.default, torch.as_strided, "as_strided")
def _as_strided(cx: Ctx, x, size, stride, storage_offset=None):
    size, stride = _ints([size]), _ints([stride])
    if isinstance(x, torch.Tensor):
        return torch.as_strided(x, size, stride, storage_offset).clone()
    layout = _input_layout(cx)
    if layout is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": as_strided needs the input\'s strides, '
                               "which only torch.export and dynamo graphs record")
    strides, offset = layout
    new_offset = offset if storage_offset is None else int(storage_offset)
    shape = cx.shape(x)
    contiguous = all(a == b for a, b, d in zip(strides, contiguous_strides(shape), shape)
                     if d != 1)
    if contiguous and new_offset >= offset:
        try:  # a view of arange: its strides tell _view_by_index which movement ops it is
            index = torch.as_strided(torch.arange(math.prod(shape), dtype=torch.int64), size,
                                     stride, new_offset - offset)
            return _view_by_index(cx, x, index)
        except RuntimeError:  # beyond the input's elements: the general map says where
            pass
    index = _storage_index(shape, strides, offset, size, stride, new_offset)
    if index is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": as_strided{(size, stride, new_offset)}'
                               f" reads storage outside its input (strides {strides}, offset "
                               f"{offset})")
    return _view_by_index(cx, x, index)


@converts(aten.unfold.default, "unfold")
def _unfold(cx: Ctx, x, dimension, size, step):
    if isinstance(x, torch.Tensor):
        return x.unfold(dimension, size, step).clone()
    return _view_by_index(cx, x, _arange_like(cx, x).unfold(dimension, size, step))


@converts(aten.movedim.int, aten.movedim.intlist, torch.movedim, torch.moveaxis, "movedim",
          "moveaxis")
def _movedim(cx: Ctx, x, source, destination):
    rank = cx.rank(x)
    source = [_axis(d, rank) for d in _ints([source])]
    destination = [_axis(d, rank) for d in _ints([destination])]
    perm = [-1] * rank
    for s, d in zip(source, destination):
        perm[d] = s
    rest = iter(d for d in range(rank) if d not in source)
    return _transpose(cx, x, [p if p >= 0 else next(rest) for p in perm])


@converts(aten.unflatten.int, torch.unflatten, "unflatten")
def _unflatten(cx: Ctx, x, dim, sizes):
    shape = list(cx.shape(x))
    d = _axis(dim, len(shape))
    return _reshape(cx, x, shape[:d] + _ints([sizes]) + shape[d + 1:])


@converts(aten.slice_scatter.default, torch.slice_scatter, "slice_scatter")
def _slice_scatter(cx: Ctx, input, src, dim=0, start=None, end=None, step=1):
    """input with input[start:end] along dim replaced by src (what functionalization turns a
    slice assignment into): the pieces before and after, concatenated around src."""
    axis = _axis(dim, cx.rank(input))
    size = cx.shape(input)[axis]
    start, end, step = _norm_slice(size, start, end, step)
    if step != 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": slice_scatter with step {step}')
    src = _promote(cx, src, dtype=cx.dtype(input))[0]
    pieces = [_aten_slice(cx, input, axis, 0, start), src, _aten_slice(cx, input, axis, end, size)]
    pieces = [p for p in pieces if cx.shape(p)[axis] > 0]
    return pieces[0] if len(pieces) == 1 else cx.emit("concat", pieces, axis=axis)


@converts(aten.select_scatter.default, torch.select_scatter, "select_scatter")
def _select_scatter(cx: Ctx, input, src, dim, index):
    axis = _axis(dim, cx.rank(input))
    i = _axis(int(index), cx.shape(input)[axis])
    return _slice_scatter(cx, input, _unsqueeze(cx, src, axis), axis, i, i + 1)


# torch's scatter reductions as ScatterElements' (ops/indexing.py); "mean" has none there.
_SCATTER_REDUCTIONS = {None: "none", "add": "add", "sum": "add", "multiply": "mul", "prod": "mul",
                       "amax": "max", "amin": "min"}


@converts(aten.scatter.src, aten.scatter.value, aten.scatter.reduce, aten.scatter.value_reduce,
          torch.scatter, "scatter")
def _scatter(cx: Ctx, input, dim, index, src=None, *, value=None, reduce=None):
    """input with src (or one value) written along dim where index says: the IR's
    scatter_elements, which torch runs inside the engine with its indices checked (GroupViT's hard
    assignment writes ones into zeros at its argmax so)."""
    return _scatter_elements(cx, input, dim, index, value if src is None else src, reduce)


@converts(aten.scatter_add.default, torch.scatter_add, "scatter_add")
def _scatter_add(cx: Ctx, input, dim, index, src):
    return _scatter_elements(cx, input, dim, index, src, "add")


@converts(aten.scatter_reduce.two, torch.scatter_reduce, "scatter_reduce")
def _scatter_reduce(cx: Ctx, input, dim, index, src, reduce, *, include_self=True):
    if not include_self:
        raise UnsupportedError(f'fx node "{cx.node_name}": scatter_reduce with include_self=False')
    return _scatter_elements(cx, input, dim, index, src, reduce)


def _scatter_elements(cx: Ctx, input, dim, index, src, reduce):
    if reduce not in _SCATTER_REDUCTIONS or cx.rank(index) != cx.rank(input):
        raise UnsupportedError(f'fx node "{cx.node_name}": scatter with reduce={reduce!r} of a rank '
                               f"{cx.rank(index)} index into rank {cx.rank(input)} "
                               f"(converted: {sorted(k for k in _SCATTER_REDUCTIONS if k)}, one rank)")
    shape, dtype = list(cx.shape(index)), cx.dtype(input)
    updates = _promote(cx, src, dtype=dtype)[0]
    if cx.rank(updates):  # torch reads src only where index has elements
        for d, n in enumerate(shape):
            if cx.shape(updates)[d] != n:
                updates = _aten_slice(cx, updates, d, 0, n)
    updates = cx.emit("expand", [updates], shape=shape)
    return cx.emit("scatter_elements", [input, cx.cast(index, torch.int64), updates],
                   axis=_axis(dim, cx.rank(input)), reduction=_SCATTER_REDUCTIONS[reduce])


@converts(aten.index_put.default, aten.index_put_.default, torch.index_put, "index_put")
def _index_put(cx: Ctx, target, indices, values, accumulate=False):
    """aten.index_put: decompose.index_put's ScatterND of rows, except that accumulating into
    rows is index_add's adding scatter (the scatter kernel where few rows are named)."""
    rows = indices[0] if len(indices) == 1 and indices[0] is not None else None
    if not accumulate or rows is None or decompose._row_index(cx, rows) is None:
        return decompose.index_put(cx, target, indices, values, accumulate)
    shape = [cx.shape(rows)[0]] + list(cx.shape(target))[1:]
    return _index_add(cx, target, 0, rows, cx.emit("expand", [cx.cast(values, cx.dtype(target))], shape=shape))


@converts(aten.index_copy.default, torch.index_copy, "index_copy")
def _index_copy(cx: Ctx, input, dim, index, source):
    """input with source's slices at the positions index (1-D) names along dim (transformers'
    static caches write a step's keys and values so): `input[:, ..., index] = source`."""
    axis = _axis(dim, cx.rank(input))
    if cx.rank(index) > 1 or cx.rank(source) != cx.rank(input):
        raise UnsupportedError(f'fx node "{cx.node_name}": index_copy of a rank {cx.rank(index)} index and a '
                               f"rank {cx.rank(source)} source into rank {cx.rank(input)}")
    if cx.rank(index) == 0:
        index = _reshape(cx, index, [1])
    return decompose.assign(cx, input, (slice(None),) * axis + (index,), source)


@converts(aten.index_add.default, torch.index_add, "index_add")
def _index_add(cx: Ctx, input, dim, index, source, *, alpha=1):
    """input with source's slices added in at the positions index (1-D) names along dim: a
    ScatterElements that adds, its index spread over source's shape (the scatter kernel where a row
    takes few of them)."""
    axis = _axis(dim, cx.rank(input))
    if cx.rank(index) != 1 or cx.rank(source) != cx.rank(input):
        raise UnsupportedError(f'fx node "{cx.node_name}": index_add of a rank {cx.rank(index)} index and a '
                               f"rank {cx.rank(source)} source into rank {cx.rank(input)}")
    if alpha != 1:
        source = cx.emit("mul", [cx.cast(source, cx.dtype(input)), cx.cast(alpha, cx.dtype(input))])
    shape = list(cx.shape(source))
    along = [shape[d] if d == axis else 1 for d in range(len(shape))]
    spread = cx.emit("expand", [_reshape(cx, cx.cast(index, torch.int64), along)], shape=shape)
    return _scatter_elements(cx, input, axis, spread, source, "add")


def _aten_overloads(*names: str) -> list:
    """aten overloads by "op.overload" name, skipping those this torch does not have."""
    found = []
    for name in names:
        packet, _, overload = name.partition(".")
        found.append(getattr(getattr(aten, packet, None), overload or "default", None))
    return [f for f in found if f is not None]


# Functionalized graphs spell views as copies; each computes what its view does.
for _convert, _names in [
    (_view, ["view_copy.default"]), (_permute, ["permute_copy.default"]),
    (_expand, ["expand_copy.default"]), (_unsqueeze, ["unsqueeze_copy.default"]),
    (_squeeze, ["squeeze_copy.dim", "squeeze_copy.dims", "squeeze_copy.default"]),
    (_aten_slice, ["slice_copy.Tensor"]), (_transpose2, ["transpose_copy.int"]),
    (_t, ["t_copy.default"]), (_identity, ["alias_copy.default", "detach_copy.default"]),
    (_select, ["select_copy.int"]), (_unfold, ["unfold_copy.default"]),
    (_as_strided, ["as_strided_copy.default"]),
]:
    converts(*_aten_overloads(*_names))(_convert)
