"""Converters of the ONNX Reduce* ops and ArgMax / ArgMin.

ReduceL1, L2, LogSum, LogSumExp and SumSquare are sums with elementwise ops around them: they
become reduce_sum plus those ops, which fuse into the reduction's kernel (prologue and epilogue).
"""
from __future__ import annotations

from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter

_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max",
           "ReduceMin": "reduce_min", "ReduceProd": "reduce_prod"}
_COMPOSITE = ("ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare")


def _axes(cx: NodeContext, axes: list[int] | None) -> list[int] | None:
    """The reduced axes, sorted; None for noop_with_empty_axes with no axes (the identity)."""
    rank = cx.type(0).rank
    if not axes:
        if cx.flag("noop_with_empty_axes", 0):
            return None
        axes = list(range(rank))
    return sorted(set(cx.axis(a, rank, "axes") for a in axes))


def _reduce(cx: NodeContext, axes: list[int] | None) -> list[str]:
    x = cx.input(0)
    axes = _axes(cx, axes)
    keepdims = cx.flag("keepdims", 1)
    if cx.op_type in _COMPOSITE:
        return [_composite(cx, x, axes, keepdims)]
    if axes is None:
        return [x]
    return [_in_input_type(cx, cx.emit(_REDUCE[cx.op_type], x, axes=axes, keepdims=keepdims), x)]


def _sum(cx: NodeContext, x: str, axes: list[int] | None, keepdims: bool) -> str:
    return x if axes is None else _in_input_type(cx, cx.emit("reduce_sum", x, axes=axes, keepdims=keepdims), x)


def _in_input_type(cx: NodeContext, y: str, x: str) -> str:
    """ONNX reductions keep their input's type; the IR's sum and product of integers are int64,
    as torch's are (the same bits modulo the narrower type: a cast back wraps as ONNX's does)."""
    dtype = cx.type_of(x).dtype
    return y if cx.type_of(y).dtype == dtype else cx.emit("cast", y, dtype=dtype)


def _composite(cx: NodeContext, x: str, axes: list[int] | None, keepdims: bool) -> str:
    op = cx.op_type
    if op == "ReduceL1":
        return _sum(cx, cx.emit("abs", x), axes, keepdims)
    if op == "ReduceSumSquare":
        return _sum(cx, cx.emit("mul", x, x), axes, keepdims)
    if op == "ReduceL2":
        return cx.emit("sqrt", _sum(cx, cx.emit("mul", x, x), axes, keepdims))
    if op == "ReduceLogSum":
        return cx.emit("log", _sum(cx, x, axes, keepdims))
    return _log_sum_exp(cx, x, axes, keepdims)


def _log_sum_exp(cx: NodeContext, x: str, axes: list[int] | None, keepdims: bool) -> str:
    """log(sum(exp(x - m))) + m with m the max (0 where it is infinite, so rows of -inf give
    -inf and rows holding +inf give +inf rather than NaN)."""
    if axes is None:
        return x
    dtype = cx.type_of(x).dtype
    peak = cx.emit("reduce_max", x, axes=axes, keepdims=True)
    zero = cx.scalar(0, dtype)
    peak = cx.emit("where", cx.emit("is_inf", peak), zero, peak)
    total = cx.emit("reduce_sum", cx.emit("exp", cx.emit("sub", x, peak)), axes=axes,
                    keepdims=keepdims)
    if not keepdims:
        peak = cx.reshape(peak, [d if isinstance(d, int) else None
                                 for d in cx.type_of(total).shape])
    return cx.emit("add", cx.emit("log", total), peak)


@converter("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", *_COMPOSITE)
def _reduce_axes_attr(cx):
    return _reduce(cx, cx.ints_attr("axes"))


@converter("ReduceSum", constant_inputs=(1,))
@converter("ReduceMean", "ReduceMax", "ReduceMin", "ReduceProd", *_COMPOSITE, since=18,
           constant_inputs=(1,))
def _reduce_axes_input(cx):
    return _reduce(cx, cx.const_ints(1, "axes"))


@converter("ArgMax", "ArgMin")
def _arg_extreme(cx):
    x = cx.input(0)
    axis = cx.axis(cx.int_attr("axis", 0), cx.type_of(x).rank)
    return [cx.emit("argmax" if cx.op_type == "ArgMax" else "argmin", x, axis=axis,
                    keepdims=cx.flag("keepdims", 1),
                    select_last_index=cx.flag("select_last_index", 0))]
