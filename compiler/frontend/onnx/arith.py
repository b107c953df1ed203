"""Converters of ONNX elementwise math beyond the basics: rounding, trigonometry, tests for
NaN / inf, remainders, comparisons, logical and bitwise ops, and Mean."""
from __future__ import annotations

from trident.compiler.errors import ModelError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.elementwise import chain, elementwise_table
from trident.compiler.frontend.onnx.registry import converter

elementwise_table(
    unary={"Floor": "floor", "Ceil": "ceil", "Round": "round", "Sign": "sign", "Sin": "sin",
           "Cos": "cos", "Tan": "tan", "Asin": "asin", "Acos": "acos", "Atan": "atan",
           "Sinh": "sinh", "Cosh": "cosh", "Asinh": "asinh", "Acosh": "acosh",
           "Atanh": "atanh", "IsNaN": "is_nan", "BitwiseNot": "bitwise_not"},
    binary={"LessOrEqual": "less_equal", "GreaterOrEqual": "greater_equal",
            "And": "logical_and", "Or": "logical_or", "Xor": "logical_xor",
            "BitwiseAnd": "bitwise_and", "BitwiseOr": "bitwise_or", "BitwiseXor": "bitwise_xor"})


@converter("IsInf")
def _is_inf(cx):
    return [cx.emit("is_inf", cx.input(0), positive=cx.flag("detect_positive", 1),
                    negative=cx.flag("detect_negative", 1))]


@converter("Mod")
def _mod(cx):
    return [cx.emit("fmod" if cx.flag("fmod", 0) else "mod", cx.input(0), cx.input(1))]


@converter("BitShift")
def _bit_shift(cx):
    direction = cx.str_attr("direction", "")
    if direction not in ("LEFT", "RIGHT"):
        raise cx.error(ModelError, f"direction must be LEFT or RIGHT, got {direction!r}")
    return [cx.emit("shift_left" if direction == "LEFT" else "shift_right", cx.input(0),
                    cx.input(1))]


@converter("Mean")
def _mean(cx: NodeContext):
    (total,) = chain("add")(cx)
    dtype = cx.type_of(total).dtype
    if cx.num_inputs == 1:
        return [total]
    return [cx.emit("div", total, cx.scalar(cx.num_inputs, dtype))]
