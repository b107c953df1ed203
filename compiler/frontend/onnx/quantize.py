"""Converters of ONNX QuantizeLinear / DequantizeLinear and the integer ops: MatMulInteger,
ConvInteger, QLinearMatMul, QLinearConv, DynamicQuantizeLinear."""
from __future__ import annotations

import torch
from onnx import TensorProto

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.linear import window
from trident.compiler.frontend.onnx.registry import DTYPES, dtype_name, converter


def _quant_axis(cx: NodeContext, x: str, scale: str) -> int:
    """The axis a per-channel scale runs along (0 for a per-tensor scale, where it is unused)."""
    xt, st = cx.type_of(x), cx.type_of(scale)
    if st.rank == 0 or (st.rank == 1 and st.shape[0] == 1):
        return 0
    if st.rank != 1:
        raise cx.error(UnsupportedError, f"scale of shape {st} (blocked quantization) is not "
                                         f"supported; use a scalar or 1-D scale")
    axis = cx.axis(cx.int_attr("axis", 1), xt.rank)
    if st.shape[0] != xt.shape[axis]:
        raise cx.error(ShapeError, f"scale has {st.shape[0]} values, but axis {axis} of {xt} "
                                   f"has {xt.shape[axis]}")
    return axis


def _check_block_size(cx: NodeContext) -> None:
    if cx.int_attr("block_size", 0):
        raise cx.error(UnsupportedError, "blocked quantization (block_size) is not supported")


@converter("QuantizeLinear")
def _quantize_linear(cx):
    _check_block_size(cx)
    precision = cx.int_attr("precision", 0)
    if precision not in (0, TensorProto.FLOAT):
        raise cx.error(UnsupportedError, f"precision {dtype_name(precision)} (trident divides "
                                         f"in float32)")
    x, scale = cx.input(0), cx.input(1)
    if cx.has(2):
        zero_point = cx.input(2)
    else:
        to = cx.int_attr("output_dtype", 0) or TensorProto.UINT8
        zero_point = cx.scalar(0, _quant_dtype(cx, to))
    if cx.type_of(zero_point).dtype not in (torch.int8, torch.uint8):
        raise cx.error(UnsupportedError, f"quantizing to {cx.type_of(zero_point).dtype}: trident "
                                         f"quantizes to int8 and uint8")
    return [cx.emit("quantize_linear", x, scale, zero_point, axis=_quant_axis(cx, x, scale))]


def _quant_dtype(cx: NodeContext, elem_type: int) -> torch.dtype:
    dtype = DTYPES.get(elem_type)
    if dtype not in (torch.int8, torch.uint8, torch.int32):
        raise cx.error(UnsupportedError, f"quantized type {dtype_name(elem_type)}: trident "
                                         f"supports INT8 and UINT8")
    return dtype


@converter("DequantizeLinear")
def _dequantize_linear(cx):
    _check_block_size(cx)
    x, scale = cx.input(0), cx.input(1)
    zero_point = cx.input(2) if cx.has(2) else cx.scalar(0, cx.type_of(x).dtype)
    y = cx.emit("dequantize_linear", x, scale, zero_point, axis=_quant_axis(cx, x, scale))
    to = cx.int_attr("output_dtype", 0)
    if to:
        dtype = DTYPES.get(to)
        if dtype is None:
            raise cx.error(UnsupportedError, f"output_dtype {dtype_name(to)}")
        if dtype != cx.type_of(y).dtype:
            y = cx.emit("cast", y, dtype=dtype)
    return [y]


# ---- integer matmul / conv and the QLinear ops ---------------------------------------------
def _zero_point_inputs(cx: NodeContext, *slots: int) -> list[str]:
    """Zero points in order; an absent one before a given one becomes a scalar 0."""
    present = [cx.has(i) for i in slots]
    if not any(present):
        return []
    last = max(k for k, p in enumerate(present) if p)
    dtype = cx.type(0).dtype
    return [cx.input(i) if cx.has(i) else cx.scalar(0, dtype) for i in slots[:last + 1]]


@converter("MatMulInteger")
def _matmul_integer(cx):
    return [cx.emit("integer_matmul", cx.input(0), cx.input(1), *_zero_point_inputs(cx, 2, 3))]


def _integer_conv(cx: NodeContext, x: str, w: str, zero_points: list[str]) -> str:
    kernel = list(cx.static_shape(w, "the weight")[2:])
    kernel, strides, dilations, pads = window(cx, x, kernel)
    return cx.emit("integer_conv", x, w, *zero_points, strides=strides, pads=pads,
                   dilations=dilations, groups=cx.int_attr("group", 1))


@converter("ConvInteger")
def _conv_integer(cx):
    return [_integer_conv(cx, cx.input(0), cx.input(1), _zero_point_inputs(cx, 2, 3))]


def _requantize(cx: NodeContext, acc: str, scale: str, y_scale: str, y_zero_point: str,
                channel_rank: int | None = None) -> str:
    """QLinear ops' output: round_half_even(acc * (scale / y_scale)) + y_zero_point, saturated
    to the zero point's type, in float32 (as onnxruntime and the ONNX reference compute it)."""
    f32 = torch.float32
    multiplier = cx.emit("div", scale, y_scale)  # in the scales' own type (fp16 scales: fp16)
    if cx.type_of(multiplier).dtype != f32:
        multiplier = cx.emit("cast", multiplier, dtype=f32)
    if channel_rank is not None and cx.type_of(multiplier).numel() > 1:  # per output channel
        multiplier = cx.reshape(multiplier, [-1] + [1] * (channel_rank - 2))
    y = cx.emit("mul", cx.emit("cast", acc, dtype=f32), multiplier)
    y = cx.emit("add", cx.emit("round", y), cx.emit("cast", y_zero_point, dtype=f32))
    dtype = cx.type_of(y_zero_point).dtype
    info = torch.iinfo(dtype)
    return cx.emit("cast", cx.emit("clip", y, min=float(info.min), max=float(info.max)),
                   dtype=dtype)


def _row_param(cx: NodeContext, value: str) -> str:
    """A per-row (1-D, several values) parameter of QLinearMatMul's a, shaped [M, 1]."""
    t = cx.type_of(value)
    return cx.reshape(value, [-1, 1]) if t.rank == 1 and t.numel() > 1 else value


@converter("QLinearMatMul")
def _qlinear_matmul(cx):
    a, a_scale, a_zp = cx.input(0), cx.input(1), cx.input(2)
    b, b_scale, b_zp = cx.input(3), cx.input(4), cx.input(5)
    acc = cx.emit("integer_matmul", a, b, a_zp, b_zp)
    scale = cx.emit("mul", _row_param(cx, a_scale), b_scale)
    return [_requantize(cx, acc, scale, cx.input(6), cx.input(7))]


@converter("QLinearConv")
def _qlinear_conv(cx):
    x, x_scale, x_zp = cx.input(0), cx.input(1), cx.input(2)
    w, w_scale, w_zp = cx.input(3), cx.input(4), cx.input(5)
    acc = _integer_conv(cx, x, w, [x_zp, w_zp])
    rank = cx.type_of(x).rank
    if cx.has(8):  # int32 bias, one per output channel
        acc = cx.emit("add", acc, cx.reshape(cx.input(8), [-1] + [1] * (rank - 2)))
    scale = cx.emit("mul", x_scale, w_scale)
    return [_requantize(cx, acc, scale, cx.input(6), cx.input(7), channel_rank=rank)]


@converter("DynamicQuantizeLinear")
def _dynamic_quantize_linear(cx):
    """uint8 quantization with a scale and zero point from the input's own range (which always
    includes 0): ONNX's formula, op for op, in float32."""
    x = cx.input(0)
    f32, rank = torch.float32, cx.type_of(x).rank
    zero, levels = cx.scalar(0.0, f32), cx.scalar(255.0, f32)
    high = cx.emit("maximum", cx.emit("reduce_max", x, axes=list(range(rank)), keepdims=False), zero)
    low = cx.emit("minimum", cx.emit("reduce_min", x, axes=list(range(rank)), keepdims=False), zero)
    spread = cx.emit("sub", high, low)
    spread = cx.emit("where", cx.emit("equal", spread, zero), cx.scalar(1.0, f32), spread)
    scale = cx.emit("div", spread, levels)
    zero_point = cx.emit("round", cx.emit("clip", cx.emit("sub", zero, cx.emit("div", low, scale)),
                                          min=0.0, max=255.0))
    y = cx.emit("add", cx.emit("round", cx.emit("div", x, scale)), zero_point)
    y = cx.emit("cast", cx.emit("clip", y, min=0.0, max=255.0), dtype=torch.uint8)
    return [y, scale, cx.emit("cast", zero_point, dtype=torch.uint8)]
