"""Ops that read or write through index tensors, sort, or scan. GatherElements is computed per
element in pointwise kernels (codegen/moves.py), CumSum by the scan generator (codegen/scan.py)
and TopK by the sort generator (codegen/sort.py); the others have no kernel and run through torch
(`explain` lists them). Every index is bounds-checked first."""
from __future__ import annotations

import math
import torch

from trident.compiler.ops.common import checked_indices
from trident.compiler.ops.registry import Kind, op

_SCATTER_REDUCE = {"add": "sum", "mul": "prod", "max": "amax", "min": "amin"}


@op("gather_elements", Kind.MOVEMENT)
def gather_elements(x, indices, *, axis: int):
    """out[i][j][k] = x[indices[i][j][k]][j][k] (axis 0): torch.gather with ONNX's negative indices."""
    return torch.gather(x, axis, checked_indices(indices, x.shape[axis], "GatherElements"))


@op("scatter_elements", Kind.OPAQUE)
def scatter_elements(x, indices, updates, *, axis: int, reduction: str = "none"):
    """x with updates written at indices along `axis` (reduced into x's value with `reduction`)."""
    index = checked_indices(indices, x.shape[axis], "ScatterElements")
    if reduction == "none":
        return x.scatter(axis, index, updates)
    return x.scatter_reduce(axis, index, updates, _SCATTER_REDUCE[reduction], include_self=True)


def _rows(x, indices, batch_dims: int, what: str):
    """GatherND / ScatterND addressing: the last dim of `indices` names the `depth` dims of x
    after its `batch_dims` shared leading dims. Returns x viewed as rows [count, rest...] and
    the flat row (int64) each index names."""
    depth = indices.shape[-1]
    batch, lead = x.shape[:batch_dims], x.shape[batch_dims:batch_dims + depth]
    rest = tuple(x.shape[batch_dims + depth:])
    idx = indices.reshape(math.prod(batch), -1, depth) if indices.numel() else \
        indices.reshape(math.prod(batch), 0, depth)
    flat = torch.arange(math.prod(batch), device=x.device).reshape(-1, 1)
    for k, size in enumerate(lead):
        flat = flat * size + checked_indices(idx[..., k], size, what)
    rows = x.reshape((math.prod(batch) * math.prod(lead),) + rest)
    return rows, flat.reshape(-1)


@op("scatter_nd", Kind.OPAQUE)
def scatter_nd(x, indices, updates, *, reduction: str = "none"):
    rows, flat = _rows(x, indices, 0, "ScatterND")
    values = updates.reshape((flat.numel(),) + tuple(rows.shape[1:]))
    if reduction == "none":
        out = rows.index_copy(0, flat, values)
    elif reduction == "add":
        out = rows.index_add(0, flat, values)
    else:
        out = rows.index_reduce(0, flat, values, _SCATTER_REDUCE[reduction], include_self=True)
    return out.reshape(x.shape)


@op("gather_nd", Kind.MOVEMENT)
def gather_nd(x, indices, *, batch_dims: int = 0):
    rows, flat = _rows(x, indices, batch_dims, "GatherND")
    return rows.index_select(0, flat).reshape(tuple(indices.shape[:-1]) + tuple(rows.shape[1:]))


@op("topk", Kind.SORT)
def topk(x, *, k: int, axis: int, largest: bool = True):
    """The k largest (or smallest) values along `axis`, sorted, and their int64 indices; of
    equal values the lower index comes first (a stable sort)."""
    values, indices = torch.sort(x, dim=axis, descending=largest, stable=True)
    return values.narrow(axis, 0, k), indices.narrow(axis, 0, k)


def _scan(fn, x, axis: int, exclusive: bool, reverse: bool, identity):
    if reverse:
        x = torch.flip(x, [axis])
    out = fn(x, dim=axis)
    if exclusive and x.shape[axis]:  # shift by one: out[i] covers x[0..i-1]
        first = torch.full_like(x.narrow(axis, 0, 1), identity)
        out = torch.cat([first, out.narrow(axis, 0, x.shape[axis] - 1)], dim=axis)
    return torch.flip(out, [axis]) if reverse else out


@op("cumsum", Kind.SCAN)
def cumsum(x, *, axis: int, exclusive: bool = False, reverse: bool = False):
    return _scan(torch.cumsum, x, axis, exclusive, reverse, 0).to(x.dtype)


@op("cumprod", Kind.SCAN)
def cumprod(x, *, axis: int, exclusive: bool = False, reverse: bool = False):
    return _scan(torch.cumprod, x, axis, exclusive, reverse, 1).to(x.dtype)


@op("linear_scan", Kind.SCAN)
def linear_scan(a, b, *, axis: int):
    """The first-order linear recurrence h[t] = a[t] * h[t-1] + b[t] along `axis`, h[-1] = 0
    (a selective state space's scan: Mamba). Computed in fp32 (as the scan kernel does) by
    doubling: after the step of stride s, each position has combined the 2s positions ending
    at it, so log2(length) steps of whole-tensor math."""
    coef, h = a.float().movedim(axis, 0).clone(), b.float().movedim(axis, 0).clone()
    stride = 1
    while stride < h.shape[0]:
        h[stride:] = coef[stride:] * h[:-stride] + h[stride:]
        coef[stride:] = coef[stride:] * coef[:-stride]
        stride *= 2
    return h.movedim(0, axis).to(b.dtype)


@op("reverse_sequence", Kind.MOVEMENT)
def reverse_sequence(x, lengths, *, time_axis: int, batch_axis: int):
    """Reverse the first lengths[b] steps of every batch entry b along the time axis."""
    steps = x.shape[time_axis]
    t = torch.arange(steps, device=x.device).reshape(
        [-1 if d == time_axis else 1 for d in range(x.dim())])
    n = lengths.to(torch.int64).clamp(0, steps).reshape(
        [-1 if d == batch_axis else 1 for d in range(x.dim())])
    source = torch.where(t < n, n - 1 - t, t).expand(x.shape)
    return torch.gather(x, time_axis, source)
