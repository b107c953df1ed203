"""Elementwise math beyond the basics: rounding, trigonometry, remainders, comparisons, tests."""
from __future__ import annotations

import torch

from trident.compiler.ops.registry import Kind, op


def _float_unary(name: str, fn) -> None:
    op(name, Kind.ELEMENTWISE)(lambda x: fn(x))


for _name, _fn in {
    "floor": torch.floor, "ceil": torch.ceil, "round": torch.round,  # round: half to even
    "sin": torch.sin, "cos": torch.cos, "tan": torch.tan, "asin": torch.asin,
    "acos": torch.acos, "atan": torch.atan, "sinh": torch.sinh, "cosh": torch.cosh,
    "asinh": torch.asinh, "acosh": torch.acosh, "atanh": torch.atanh,
    "is_nan": torch.isnan, "exp2": torch.exp2, "log2": torch.log2,
    "sign_bit": torch.signbit,  # set for -0 and for NaNs that carry it (copysign's test)
}.items():
    _float_unary(_name, _fn)


@op("sign", Kind.ELEMENTWISE)
def sign(x):
    """-1, 0 or 1; NaN stays NaN (torch.sign gives 0 there, numpy and ONNX NaN)."""
    return torch.where(torch.isnan(x), x, torch.sign(x)) if x.is_floating_point() else torch.sign(x)


@op("is_inf", Kind.ELEMENTWISE)
def is_inf(x, *, positive: bool = True, negative: bool = True):
    return ((x == torch.inf) & positive) | ((x == -torch.inf) & negative)


@op("mod", Kind.ELEMENTWISE, same_dtype=True)
def mod(a, b):
    """The remainder with the divisor's sign (Python's %, ONNX Mod with fmod=0): C's fmod, plus
    the divisor where the signs differ (as numpy; torch.remainder computes floats otherwise)."""
    r = torch.fmod(a, b)
    return torch.where((r != 0) & ((r < 0) != (b < 0)), r + b, r)


# fmod: the remainder with the dividend's sign (C's fmod, ONNX Mod with fmod=1); atan2(y, x): the
# angle of (x, y); hypot: sqrt(x^2 + y^2) without overflow; copysign(a, b): |a| with b's sign bit
for _name, _fn in {"fmod": torch.fmod, "less_equal": torch.le, "greater_equal": torch.ge,
                   "atan2": torch.atan2, "hypot": torch.hypot, "copysign": torch.copysign}.items():
    op(_name, Kind.ELEMENTWISE, same_dtype=True)(lambda a, b, fn=_fn: fn(a, b))
