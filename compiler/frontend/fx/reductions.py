"""Converters of reductions: mean, sum, amax, prod, any / all, amin, min / max (with their
indices), var_mean / std_mean, logsumexp, argmax / argmin through decompose.py, and topk / sort / argsort /
msort / histc through sorting.py."""
from __future__ import annotations

from typing import Any, NamedTuple

import torch

from trident.compiler.frontend.fx import decompose, math_ops, sorting
from trident.compiler.frontend.fx.arithmetic import _as_bool, _maximum, _minimum
from trident.compiler.frontend.fx.axes import axes as _axes
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.helpers import _binary, _scalar
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ========================================================================= reductions ====
def _reducer(op: str):
    def convert(cx: Ctx, input, dim=None, keepdim=False, *, dtype=None, axis=None):
        if dtype is not None:
            input = cx.cast(input, dtype)
        dim = axis if axis is not None else dim  # (torch takes numpy's name too: I-BERT's mean)
        return cx.emit(op, [input], axes=_axes(cx, input, dim), keepdims=bool(keepdim))
    return convert


_mean = converts(aten.mean.dim, aten.mean.default, torch.mean, "mean")(_reducer("reduce_mean"))
converts(aten.sum.dim_IntList, aten.sum.default, torch.sum, "sum")(_reducer("reduce_sum"))
converts(aten.amax.default, torch.amax, "amax")(_reducer("reduce_max"))
converts(aten.prod.dim_int, aten.prod.default, torch.prod, "prod")(_reducer("reduce_prod"))


def _any_of(cx: Ctx, hit, dim, keepdim: bool):
    """Is any element of bool `hit` True along dim? A max of it as 0.0 / 1.0: float reductions run
    in the kernels."""
    ones = cx.cast(hit, torch.float32)
    most = cx.emit("reduce_max", [ones], axes=_axes(cx, hit, dim), keepdims=bool(keepdim))
    return _binary(cx, "greater", most, 0.0)


@converts(aten.any.default, aten.any.dim, aten.any.dims, torch.any, "any")
def _any(cx: Ctx, input, dim=None, keepdim=False):
    return _any_of(cx, _as_bool(cx, input), dim, keepdim)


@converts(aten.all.default, aten.all.dim, aten.all.dims, torch.all, "all")
def _all(cx: Ctx, input, dim=None, keepdim=False):
    """No element is zero (NaN counts as nonzero, as in torch)."""
    return cx.emit("not", [_any_of(cx, cx.emit("not", [_as_bool(cx, input)]), dim, keepdim)])


class MaxResult(NamedTuple):
    """What torch.max(x, dim) returns: `.values` and `.indices` (an argmax: the first extreme,
    NaN counting as one, as torch; left out by dead-code elimination where nothing reads it)."""
    values: Any
    indices: Any


def _extreme_indices(cx: Ctx, op: str, x, dim, keepdim: bool):
    return cx.emit(op, [x], axis=_axis(dim, cx.rank(x)), keepdims=bool(keepdim))


def _reduce_min(cx: Ctx, x, axes: list[int], keepdim: bool):
    """A float min as -max(-x): a max loops over rows of any length (reduce_min keeps its row in
    registers). An integer min is reduce_min: -x wraps at the type's minimum (-(-128) is -128 in
    int8), so -max(-x) would miss it."""
    if not cx.dtype(x).is_floating_point:
        return cx.emit("reduce_min", [x], axes=axes, keepdims=keepdim)
    neg = cx.emit("neg", [x])
    return cx.emit("neg", [cx.emit("reduce_max", [neg], axes=axes, keepdims=keepdim)])


@converts(aten.amin.default, torch.amin, "amin")
def _amin(cx: Ctx, input, dim=None, keepdim=False):
    return _reduce_min(cx, input, _axes(cx, input, dim), bool(keepdim))


@converts(aten.min.dim, aten.min.default, aten.min.other, torch.min, "min")
def _min(cx: Ctx, input, dim=None, keepdim=False):
    if isinstance(dim, (Val, torch.Tensor)):  # torch.min(a, b) is the elementwise minimum
        return _minimum(cx, input, dim)
    y = _reduce_min(cx, input, _axes(cx, input, dim), bool(keepdim))
    return y if dim is None else MaxResult(y, _extreme_indices(cx, "argmin", input, dim, keepdim))


@converts(aten.max.dim, aten.max.default, aten.max.other, torch.max, "max")
def _max(cx: Ctx, input, dim=None, keepdim=False):
    if isinstance(dim, (Val, torch.Tensor)):  # torch.max(a, b) is the elementwise maximum
        return _maximum(cx, input, dim)
    y = cx.emit("reduce_max", [input], axes=_axes(cx, input, dim), keepdims=bool(keepdim))
    return y if dim is None else MaxResult(y, _extreme_indices(cx, "argmax", input, dim, keepdim))


# (a bool dim is the old positional `unbiased` flag: the mean is then over every dim)
@converts(torch.var_mean, aten.var_mean.correction, aten.var_mean.dim)
def _var_mean(cx: Ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    variance = math_ops.variance(cx, x, dim, unbiased, keepdim, correction=correction)
    return variance, _mean(cx, x, None if isinstance(dim, bool) else dim, keepdim)


@converts(torch.std_mean, aten.std_mean.correction, aten.std_mean.dim)
def _std_mean(cx: Ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    deviation = math_ops.std(cx, x, dim, unbiased, keepdim, correction=correction)
    return deviation, _mean(cx, x, None if isinstance(dim, bool) else dim, keepdim)


@converts(aten.logsumexp.default, torch.logsumexp, "logsumexp")
def _logsumexp(cx: Ctx, input, dim, keepdim=False):
    """log Σ exp(x) along dim as torch computes it: log Σ exp(x - m) + m with m the max, taken as
    0 where it is infinite (a row of -inf gives -inf, a row holding +inf gives +inf, not NaN). A
    converter of its own, not torch's decomposition: under dynamic shapes that decomposition
    cannot be traced, and the call stayed in torch."""
    if not cx.dtype(input).is_floating_point:
        input = cx.cast(input, torch.get_default_dtype())  # (torch's logsumexp of integers)
    axes = _axes(cx, input, dim)
    peak = cx.emit("reduce_max", [input], axes=axes, keepdims=True)
    peak = cx.emit("where", [cx.emit("is_inf", [peak]), _scalar(cx, 0.0, peak), peak])
    total = cx.emit("reduce_sum", [cx.emit("exp", [cx.emit("sub", [input, peak])])], axes=axes, keepdims=True)
    out = cx.emit("add", [cx.emit("log", [total]), peak])
    if keepdim:
        return out
    return cx.emit("reshape", [out], shape=[n for a, n in enumerate(cx.shape(out)) if a not in axes])


converts(aten.argmax.default, torch.argmax, "argmax")(decompose.arg_extreme("argmax"))
converts(aten.topk.default, torch.topk, "topk")(sorting.topk)
converts(aten.sort.default, aten.sort.stable, torch.sort, "sort")(sorting.sort)
converts(aten.argsort.default, aten.argsort.stable, torch.argsort, "argsort")(sorting.argsort)
converts(aten.msort.default, torch.msort, "msort")(sorting.msort)
converts(aten.histc.default, torch.histc, "histc")(sorting.histc)
converts(aten.argmin.default, torch.argmin, "argmin")(decompose.arg_extreme("argmin"))
