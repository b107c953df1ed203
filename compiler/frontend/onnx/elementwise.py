"""Converters of elementwise ONNX ops (math, activations, comparisons, casts)."""
from __future__ import annotations

import torch

from trident.compiler.errors import ModelError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import (DTYPES, Converter, dtype_name,
                                                     supported_dtype_names, converter)


_UNARY = {"Sqrt": "sqrt", "Reciprocal": "reciprocal", "Neg": "neg", "Abs": "abs", "Exp": "exp",
          "Log": "log", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf",
          "HardSwish": "hard_swish", "Not": "not"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
           "Equal": "equal", "Less": "less", "Greater": "greater"}


def _unary_converter(ir_op: str) -> Converter:
    return lambda cx: [cx.emit(ir_op, cx.input(0))]


def _binary_converter(ir_op: str) -> Converter:
    return lambda cx: [cx.emit(ir_op, cx.input(0), cx.input(1))]


def elementwise_table(unary: dict[str, str] | None = None,
                      binary: dict[str, str] | None = None) -> None:
    """Register ONNX ops that map one-to-one onto an IR op of the same inputs, no attributes."""
    for onnx_op, ir_op in (unary or {}).items():
        converter(onnx_op)(_unary_converter(ir_op))
    for onnx_op, ir_op in (binary or {}).items():
        converter(onnx_op)(_binary_converter(ir_op))


elementwise_table(_UNARY, _BINARY)


def chain(ir_op: str) -> Converter:
    """Variadic ONNX ops (Max, Min, Sum) as a left fold of a binary IR op."""
    def convert(cx: NodeContext):
        values = [cx.input(i) for i in range(cx.num_inputs)]
        if not values:
            raise cx.error(ModelError, "needs at least one input")
        acc = values[0]
        for v in values[1:]:
            acc = cx.emit(ir_op, acc, v)
        return [acc]
    return convert


converter("Max")(chain("maximum"))
converter("Min")(chain("minimum"))
converter("Sum")(chain("add"))


@converter("LeakyRelu")
def _leaky_relu(cx):
    return [cx.emit("leaky_relu", cx.input(0), alpha=cx.float_attr("alpha", 0.01))]


@converter("HardSigmoid")
def _hard_sigmoid(cx):
    return [cx.emit("hard_sigmoid", cx.input(0), alpha=cx.float_attr("alpha", 0.2),
                    beta=cx.float_attr("beta", 0.5))]


@converter("Gelu", since=20)
def _gelu(cx):
    approximate = cx.str_attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise cx.error(ModelError, f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return [cx.emit("gelu", cx.input(0), approximate=approximate)]


@converter("Clip", constant_inputs=(1, 2))
def _clip(cx):
    x = cx.input(0)
    dtype = cx.type(0).dtype
    bounds = {}
    for slot, key in ((1, "min"), (2, "max")):
        if cx.has(slot) and cx.input(slot) not in cx.imp.builder.graph.constants:
            # A bound computed at run time is still elementwise: max(x, lo) / min(x, hi).
            x = cx.emit("maximum" if key == "min" else "minimum", x, cx.input(slot))
            continue
        value = cx.const_scalar(slot, key)
        if value is not None:
            bounds[key] = value if dtype.is_floating_point else int(value)
    if not bounds:
        return [x]
    return [cx.emit("clip", x, **bounds)]


@converter("Where")
def _where(cx):
    return [cx.emit("where", cx.input(0), cx.input(1), cx.input(2))]


@converter("Cast")
def _cast(cx):
    to = cx.int_attr("to")
    if to is None:
        raise cx.error(ModelError, "attribute 'to' is required")
    dtype = DTYPES.get(to)
    if dtype is None:
        raise cx.error(UnsupportedError, f"cast of '{cx.proto.input[0]}' to {dtype_name(to)} "
                                         f"(output '{cx.proto.output[0]}'): trident supports "
                                         f"{supported_dtype_names()}")
    x = cx.input(0)
    return [x if cx.type_of(x).dtype == dtype else cx.emit("cast", x, dtype=dtype)]


@converter("CastLike")
def _cast_like(cx):
    x, dtype = cx.input(0), cx.type(1).dtype
    return [x if cx.type_of(x).dtype == dtype else cx.emit("cast", x, dtype=dtype)]


@converter("Identity")
def _identity(cx):
    return [cx.input(0)]  # an alias: no node; graph outputs get one at the end if needed


@converter("Dropout", constant_inputs=(1, 2))
def _dropout(cx):
    training = cx.const_scalar(2, "training_mode")
    if training:
        ratio = cx.const_scalar(1, "ratio")
        if ratio is None or ratio != 0:
            raise cx.error(UnsupportedError, "Dropout in training mode (random masks) is not "
                                             "supported; trident is an inference compiler")
    x = cx.input(0)
    outs: list[str | None] = [x]
    if len(cx.proto.output) > 1 and cx.proto.output[1]:
        shape = cx.static_shape(x, "Dropout's mask output")
        outs.append(cx.constant(torch.ones(shape, dtype=torch.bool), "mask"))
    return outs


@converter("BitCast", since=26)
def _bit_cast(cx):
    to = cx.int_attr("to")
    dtype = DTYPES.get(to) if to is not None else None
    if dtype is None:
        raise cx.error(UnsupportedError, f"BitCast to {dtype_name(to or 0)}: trident supports "
                                         f"{supported_dtype_names()}")
    x = cx.input(0)
    source = cx.type_of(x).dtype
    if dtype.itemsize != source.itemsize:
        raise cx.error(ModelError, f"BitCast of {cx.type_of(x)} to {dtype}: the widths differ")
    return [cx.emit("bitcast", x, source=source, to=dtype)]
