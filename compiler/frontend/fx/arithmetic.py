"""Converters of binary arithmetic (add, sub, mul, div with its rounding modes, floor division,
pow, fmax / fmin ...), comparisons, where, and the logical and bitwise ops."""
from __future__ import annotations

import operator

import torch

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.elementwise import _trunc
from trident.compiler.frontend.fx.helpers import _binary, _promote
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ----------------------------------------------------------------------- arithmetic ----
@converts(aten.add.Tensor, aten.add.Scalar, torch.add, operator.add, operator.iadd, "add",
          "__add__", "__radd__")
def _add(cx: Ctx, a, b, alpha=1):
    if isinstance(a, (tuple, list)):  # split(...) + chunk(...): sequences of results concatenate
        return type(a)(a) + type(a)(b)
    if alpha != 1:
        b = _binary(cx, "mul", b, alpha)
    return _binary(cx, "add", a, b)


@converts(aten.sub.Tensor, aten.sub.Scalar, torch.sub, operator.sub, operator.isub, "sub",
          "__sub__")
def _sub(cx: Ctx, a, b, alpha=1):
    if alpha != 1:
        b = _binary(cx, "mul", b, alpha)
    return _binary(cx, "sub", a, b)


@converts(aten.rsub.Scalar, aten.rsub.Tensor, torch.rsub, "__rsub__")
def _rsub(cx: Ctx, a, b, alpha=1):
    return _sub(cx, b, a, alpha)


@converts(aten.remainder.Tensor, aten.remainder.Scalar, torch.remainder, operator.mod, operator.imod,
          "remainder", "__mod__")
def _remainder(cx: Ctx, a, b):
    return _binary(cx, "mod", a, b)  # the divisor's sign, as Python's % and torch.remainder


@converts(aten.fmod.Tensor, aten.fmod.Scalar, torch.fmod, "fmod")
def _fmod(cx: Ctx, a, b):
    return _binary(cx, "fmod", a, b)  # the dividend's sign, as C's fmod


@converts(aten.mul.Tensor, aten.mul.Scalar, torch.mul, torch.multiply, operator.mul, operator.imul, "mul",
          "multiply", "__mul__", "__rmul__")
def _mul(cx: Ctx, a, b):
    return _binary(cx, "mul", a, b)


@converts(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, torch.div, torch.true_divide,
          operator.truediv, operator.itruediv, "div", "__truediv__")
def _div(cx: Ctx, a, b, rounding_mode: str | None = None):
    if rounding_mode is None:
        return _float_binary(cx, "div", a, b)
    a, b = _promote(cx, a, b)
    floating = cx.dtype(a).is_floating_point
    if rounding_mode == "trunc":  # the IR's integer division truncates
        return _trunc(cx, cx.emit("div", [a, b])) if floating else cx.emit("div", [a, b])
    if rounding_mode == "floor":
        return _floor_div_float(cx, a, b) if floating else _floor_div_int(cx, a, b)
    raise UnsupportedError(f'fx node "{cx.node_name}": division with rounding_mode="{rounding_mode}"')


@converts(aten.floor_divide.default, aten.floor_divide.Scalar, torch.floor_divide, operator.floordiv,
          "floor_divide", "__floordiv__")
def _floor_divide(cx: Ctx, a, b):
    if not isinstance(a, (Val, torch.Tensor)) and not isinstance(b, (Val, torch.Tensor)):
        return a // b  # shape arithmetic on Python numbers
    return _div(cx, a, b, rounding_mode="floor")


def _remainder_across_zero(cx: Ctx, remainder, b, zero):
    """Where a truncated quotient is one above the floor: the remainder is nonzero and its sign
    differs from the divisor's."""
    nonzero = cx.emit("not", [cx.emit("equal", [remainder, zero])])
    differs = cx.emit("logical_xor", [cx.emit("less", [remainder, zero]), cx.emit("less", [b, zero])])
    return cx.emit("logical_and", [nonzero, differs])


def _floor_div_int(cx: Ctx, a, b):
    """Integers: the truncated quotient, one less where the remainder crosses zero."""
    quotient, remainder = cx.emit("div", [a, b]), cx.emit("fmod", [a, b])
    one_less = _remainder_across_zero(cx, remainder, b, torch.tensor(0, dtype=cx.dtype(a)))
    return cx.emit("sub", [quotient, cx.cast(one_less, cx.dtype(a))])


def _floor_div_float(cx: Ctx, a, b):
    """Floats, as torch computes them (Python's //): (a - fmod(a, b)) / b, one less where the
    remainder's sign differs from b's, rounded to the nearest integer below or at it; a / b where
    b is 0, and 0 with the quotient's sign where it is 0."""
    dtype = cx.dtype(a)
    zero, one, half = (torch.tensor(v, dtype=dtype) for v in (0.0, 1.0, 0.5))
    remainder = cx.emit("fmod", [a, b])
    div = cx.emit("div", [cx.emit("sub", [a, remainder]), b])
    off = _remainder_across_zero(cx, remainder, b, zero)
    div = cx.emit("where", [off, cx.emit("sub", [div, one]), div])
    floor = cx.emit("floor", [div])
    rounds_up = cx.emit("greater", [cx.emit("sub", [div, floor]), half])
    floor = cx.emit("where", [rounds_up, cx.emit("add", [floor, one]), floor])
    quotient = cx.emit("div", [a, b])
    floor = cx.emit("where", [cx.emit("equal", [div, zero]), cx.emit("mul", [zero, quotient]), floor])
    return cx.emit("where", [cx.emit("equal", [b, zero]), quotient, floor])


def _float_binary(cx: Ctx, op: str, a, b):
    """An op whose integer operands give floats (torch promotes them to the default dtype)."""
    a, b = _promote(cx, a, b)
    if not cx.dtype(a).is_floating_point:
        a, b = _promote(cx, a, b, dtype=torch.get_default_dtype())
    return cx.emit(op, [a, b])


@converts(aten.atan2.default, torch.atan2, torch.arctan2, "atan2", "arctan2")
def _atan2(cx: Ctx, y, x):
    return _float_binary(cx, "atan2", y, x)


@converts(aten.hypot.default, torch.hypot, "hypot")
def _hypot(cx: Ctx, a, b):
    return _float_binary(cx, "hypot", a, b)


@converts(aten.copysign.Tensor, aten.copysign.Scalar, torch.copysign, "copysign")
def _copysign(cx: Ctx, a, b):
    return _float_binary(cx, "copysign", a, b)


@converts(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar, torch.pow,
          operator.pow, "pow", "__pow__")
def _pow(cx: Ctx, a, b):
    return _binary(cx, "pow", a, b)


def _nan_ignoring(op: str):
    """fmax / fmin: `op` (maximum / minimum, which keep NaN), but the other operand where one is
    NaN (NaN only where both are)."""
    def convert(cx: Ctx, a, b):
        a, b = _promote(cx, a, b)
        both = cx.emit(op, [a, b])
        if not cx.dtype(a).is_floating_point:
            return both
        return cx.emit("where", [cx.emit("is_nan", [a]), b, cx.emit("where", [cx.emit("is_nan", [b]), a, both])])
    return convert


converts(aten.fmax.default, torch.fmax, "fmax")(_nan_ignoring("maximum"))
converts(aten.fmin.default, torch.fmin, "fmin")(_nan_ignoring("minimum"))


@converts(aten.maximum.default, torch.maximum, "maximum")
def _maximum(cx: Ctx, a, b):
    return _binary(cx, "maximum", a, b)


@converts(aten.minimum.default, torch.minimum, "minimum")
def _minimum(cx: Ctx, a, b):
    return _binary(cx, "minimum", a, b)


def _size_arithmetic(op: str, python):
    """torch.sym_max / sym_min of sizes (Python numbers at import), or of an int the engine takes
    at run time (a 0-d tensor: dynamo_shapes.run_time_numbers)."""
    def convert(cx: Ctx, a, b):
        if isinstance(a, (Val, torch.Tensor)) or isinstance(b, (Val, torch.Tensor)):
            return _binary(cx, op, a, b)
        return python(a, b)
    return convert


for _name, _op, _python in (("sym_max", "maximum", max), ("sym_min", "minimum", min)):
    if hasattr(torch, _name):
        converts(getattr(torch, _name))(_size_arithmetic(_op, _python))


if hasattr(torch, "sym_sum"):
    @converts(torch.sym_sum)
    def _sym_sum(cx: Ctx, values):
        """A sum of sizes (a decoder's past length plus its new tokens)."""
        total = 0
        for v in values:
            run_time = any(isinstance(t, (Val, torch.Tensor)) for t in (total, v))
            total = _binary(cx, "add", total, v) if run_time else total + v
        return total


# ----------------------------------------------------------------------- comparisons ----
def _compare(op: str, negate: bool = False):
    # ne, le and ge are the negations of equal, greater and less. (With NaNs le/ge differ from
    # not-greater/not-less; models compare masks and indices, not NaNs.)
    def convert(cx: Ctx, a, b):
        out = _binary(cx, op, a, b)
        return cx.emit("not", [out]) if negate else out
    return convert


for _op, _neg, _targets in [
    ("equal", False, [aten.eq.Tensor, aten.eq.Scalar, torch.eq, operator.eq, "eq", "__eq__"]),
    ("equal", True, [aten.ne.Tensor, aten.ne.Scalar, torch.ne, operator.ne, "ne", "__ne__"]),
    ("less", False, [aten.lt.Tensor, aten.lt.Scalar, torch.lt, operator.lt, "lt", "__lt__"]),
    ("greater", False, [aten.gt.Tensor, aten.gt.Scalar, torch.gt, operator.gt, "gt", "__gt__"]),
    ("greater", True, [aten.le.Tensor, aten.le.Scalar, torch.le, operator.le, "le", "__le__"]),
    ("less", True, [aten.ge.Tensor, aten.ge.Scalar, torch.ge, operator.ge, "ge", "__ge__"]),
]:
    converts(*_targets)(_compare(_op, _neg))


@converts(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar,
          torch.where)
def _where(cx: Ctx, condition, input, other):
    condition = _promote(cx, condition, dtype=torch.bool)[0]
    a, b = _promote(cx, input, other)
    return cx.emit("where", [condition, a, b])


@converts("where")
def _where_method(cx: Ctx, input, condition, other):
    """x.where(condition, other) is torch.where(condition, x, other): the tensor it is called on
    is the values, not the condition (Longformer masks its scores so)."""
    return _where(cx, condition, input, other)


def _as_bool(cx: Ctx, v):
    """Truth value as torch's logical ops take it: bool as is, anything else != 0."""
    if isinstance(v, (Val, torch.Tensor)) and cx.dtype(v) != torch.bool:
        return cx.emit("not", [_binary(cx, "equal", v, 0)])
    return _promote(cx, v, dtype=torch.bool)[0]


def _bool_only(cx: Ctx, what: str, *vs) -> None:
    if any(isinstance(v, (Val, torch.Tensor)) and cx.dtype(v) != torch.bool for v in vs):
        raise UnsupportedError(f'fx node "{cx.node_name}": bitwise {what} of integers '
                               "(only bool tensors)")


# The IR has no and/or/xor; on booleans they are selections and a comparison.
@converts(aten.logical_and.default, torch.logical_and, "logical_and")
def _logical_and(cx: Ctx, a, b):
    return cx.emit("where", [_as_bool(cx, a), _as_bool(cx, b), torch.tensor(False)])


@converts(aten.logical_or.default, torch.logical_or, "logical_or")
def _logical_or(cx: Ctx, a, b):
    return cx.emit("where", [_as_bool(cx, a), torch.tensor(True), _as_bool(cx, b)])


@converts(aten.logical_xor.default, torch.logical_xor, "logical_xor")
def _logical_xor(cx: Ctx, a, b):
    return cx.emit("not", [cx.emit("equal", [_as_bool(cx, a), _as_bool(cx, b)])])


@converts(aten.bitwise_and.Tensor, aten.bitwise_and.Scalar, torch.bitwise_and, operator.and_,
          "bitwise_and", "__and__")
def _bitwise_and(cx: Ctx, a, b):
    _bool_only(cx, "and", a, b)
    return _logical_and(cx, a, b)


@converts(aten.bitwise_or.Tensor, aten.bitwise_or.Scalar, torch.bitwise_or, operator.or_,
          "bitwise_or", "__or__")
def _bitwise_or(cx: Ctx, a, b):
    _bool_only(cx, "or", a, b)
    return _logical_or(cx, a, b)


@converts(aten.bitwise_xor.Tensor, aten.bitwise_xor.Scalar, torch.bitwise_xor, operator.xor,
          "bitwise_xor", "__xor__")
def _bitwise_xor(cx: Ctx, a, b):
    _bool_only(cx, "xor", a, b)
    return _logical_xor(cx, a, b)


@converts(aten.masked_fill.Scalar, aten.masked_fill.Tensor, torch.masked_fill, "masked_fill")
def _masked_fill(cx: Ctx, x, mask, value):
    value = _promote(cx, value, dtype=cx.dtype(x))[0]
    return _where(cx, mask, value, x)
