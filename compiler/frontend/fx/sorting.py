"""Converters' bodies for sorts and histograms: torch.topk, sort, argsort and msort as the IR's
topk (the sort kernel, compiler/codegen/sort.py; argmax picks for longer float rows), and
torch.histc as a compare-and-sum (one reduction kernel)."""
from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

from trident.compiler import group_kinds
from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx import axes as fx_axes


class TopK(NamedTuple):
    """What torch.topk returns: `.values` and `.indices`."""
    values: Any
    indices: Any


class Sorted(NamedTuple):
    """What torch.sort returns: `.values` and `.indices`."""
    values: Any
    indices: Any


TOPK_MAX_K = 8  # k picks are k argmax passes over the row: more run in torch


def topk(cx, x, k, dim=-1, largest=True, sorted=True):
    """torch.topk as the IR's topk: the sort kernel (codegen/sort.py) sorts rows of up to
    group_kinds.MAX_SORT_LENGTH keys stably, so ties keep their order (torch's order among equal
    values is its kernel's; sorted=False allows any order); group_kinds.sort_refusal says which
    keys it takes. A longer row of floats it takes, with largest=True and k <= TOPK_MAX_K (a
    top-5 over a vocabulary), is k argmax picks instead (_topk_picks), which run in the
    reduction kernels; anything else is the IR's topk in torch, inside the engine."""
    if cx.rank(x) == 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": topk or sort of a scalar')
    k, axis = int(k), fx_axes.axis(dim, cx.rank(x))
    n, dtype = cx.shape(x)[axis], cx.dtype(x)
    if not 0 <= k <= n:
        raise ShapeError(f'fx node "{cx.node_name}": topk of k={k} from {n} elements')
    if (n > group_kinds.MAX_SORT_LENGTH and largest and dtype.is_floating_point
            and dtype in group_kinds.SORT_DTYPES and 1 <= k <= TOPK_MAX_K):
        return _topk_picks(cx, x, k, axis)
    return TopK(*cx.emit_multi("topk", [x], k=k, axis=axis, largest=bool(largest)))


def sort(cx, x, dim=-1, descending=False, stable=False):
    """torch.sort (and its stable= form) as a topk of the whole row: stable, which an unstable
    sort may be too."""
    length = cx.shape(x)[fx_axes.axis(dim, cx.rank(x))] if cx.rank(x) else 0  # (topk refuses a scalar)
    return Sorted(*topk(cx, x, length, dim, bool(descending)))


def argsort(cx, x, dim=-1, descending=False, stable=False):
    return sort(cx, x, dim, descending, stable).indices


def msort(cx, x):
    return sort(cx, x, 0).values


def _topk_picks(cx, x, k: int, axis: int) -> TopK:
    """torch.topk(largest=True) of a float row as k picks, each an argmax over the elements not
    yet taken (taken ones read -inf), its value the one element it hits. NaN counts as the
    largest, as in torch (argmax picks it first); once only -inf is left, the first element not yet
    taken is picked, so no index repeats. Sorted, largest first."""
    n = cx.shape(x)[axis]
    iota = torch.arange(n).reshape([n if d == axis else 1 for d in range(cx.rank(x))])
    low, zero = (torch.tensor(v, dtype=cx.dtype(x)) for v in (-math.inf, 0.0))
    free, values, indices = None, [], []
    for _ in range(k):
        key = x if free is None else cx.emit("where", [free, x, low])
        pick = cx.emit("argmax", [key], axis=axis, keepdims=True)
        if free is not None:  # only -inf left: the first free element, not a taken one
            spent = cx.emit("equal", [cx.emit("reduce_max", [key], axes=[axis], keepdims=True), low])
            first_free = cx.emit("argmax", [cx.cast(free, torch.float32)], axis=axis, keepdims=True)
            pick = cx.emit("where", [spent, first_free, pick])
        hit = cx.emit("equal", [iota, pick])
        values.append(cx.emit("reduce_sum", [cx.emit("where", [hit, x, zero])], axes=[axis], keepdims=True))
        indices.append(pick)
        missed = cx.emit("not", [hit])
        free = missed if free is None else cx.emit("logical_and", [free, missed])
    if k == 1:
        return TopK(values[0], indices[0])
    return TopK(cx.emit("concat", values, axis=axis), cx.emit("concat", indices, axis=axis))


def histc(cx, x, bins=100, min=0, max=0):
    """torch.histc with given bounds (min < max) as a compare-and-sum: element v counts in bin
    floor((v - min) * bins / (max - min)) (torch's formula, in its order), v = max in the last bin;
    values outside [min, max] and NaN in none. A [elements, bins] comparison summed over the
    elements: for the few bins a mixture-of-experts layer counts its tokens in (transformers'
    offsets), one reduction kernel. Bounds taken from the data (min = max) run in torch.
    Integer input (CUDA's histc takes it: transformers counts int32 expert ids there) truncates
    the bounds to integers, as torch does, is binned in float32 (exact for the counts and bins a
    model has) and counts in its own dtype."""
    source_dtype, integer = cx.dtype(x), not cx.dtype(x).is_floating_point
    bins, (low, high) = int(bins), (float(int(v)) if integer else float(v) for v in (min, max))
    if not low < high or source_dtype == torch.bool or bins < 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": histc of {source_dtype} with bins={bins}, '
                               f"min={low}, max={high} (converted: numbers, min < max)")
    dtype = torch.float32 if integer else source_dtype
    x = cx.cast(x, dtype)
    column = cx.emit("reshape", [x], shape=[math.prod(cx.shape(x)), 1])
    edge = lambda v: torch.tensor(v, dtype=dtype)  # noqa: E731
    position = cx.emit("div", [cx.emit("mul", [cx.emit("sub", [column, edge(low)]), edge(float(bins))]),
                               edge(high - low)])
    iota = torch.arange(bins, dtype=dtype).reshape(1, bins)
    hit = cx.emit("equal", [cx.emit("floor", [position]), iota])
    at_top = cx.emit("logical_and", [cx.emit("equal", [column, edge(high)]),
                                     torch.arange(bins).reshape(1, bins) == bins - 1])
    inside = cx.emit("logical_and", [cx.emit("greater_equal", [column, edge(low)]),
                                     cx.emit("less_equal", [column, edge(high)])])
    counted = cx.emit("logical_and", [inside, cx.emit("logical_or", [hit, at_top])])
    counts = cx.emit("reduce_sum", [cx.cast(counted, source_dtype)], axes=[0], keepdims=False)
    return cx.cast(counts, source_dtype)  # (integer sums widen)
