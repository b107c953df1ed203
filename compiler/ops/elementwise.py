"""Elementwise ops: math, activations, comparisons, casts, (de)quantization."""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError
from trident.compiler.ops.registry import Kind, op


def _unary(name: str, fn: Callable) -> None:
    op(name, Kind.ELEMENTWISE)(lambda x: fn(x))


for _name, _fn in {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "reciprocal": torch.reciprocal, "relu": torch.relu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "erf": torch.erf, "erfc": torch.erfc, "silu": F.silu, "hard_swish": F.hardswish,
    "not": torch.logical_not, "identity": lambda x: x,
}.items():
    _unary(_name, _fn)


@op("gelu", Kind.ELEMENTWISE)
def gelu(x, *, approximate: str = "none"):
    return F.gelu(x, approximate=approximate)


@op("leaky_relu", Kind.ELEMENTWISE)
def leaky_relu(x, *, alpha: float = 0.01):
    return F.leaky_relu(x, alpha)


@op("hard_sigmoid", Kind.ELEMENTWISE)
def hard_sigmoid(x, *, alpha: float = 0.2, beta: float = 0.5):
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@op("clip", Kind.ELEMENTWISE)
def clip(x, *, min: float | None = None, max: float | None = None):
    return torch.clamp(x, min, max)


@op("cast", Kind.ELEMENTWISE)
def cast(x, *, dtype: torch.dtype):
    if x.dtype.is_floating_point and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)  # ONNX and C truncate toward zero when casting float -> int
    return x.to(dtype)


def _binary(name: str, fn: Callable, same_dtype: bool = True) -> None:
    op(name, Kind.ELEMENTWISE, same_dtype)(lambda a, b: fn(a, b))


def _div(a, b):
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


_binary("add", torch.add)
_binary("sub", torch.sub)
_binary("mul", torch.mul)
_binary("div", _div)
_binary("maximum", torch.maximum)
_binary("minimum", torch.minimum)
_binary("equal", torch.eq)
_binary("less", torch.lt)
_binary("greater", torch.gt)
_binary("pow", lambda a, b: torch.pow(a, b).to(a.dtype), same_dtype=False)


@op("where", Kind.ELEMENTWISE)
def where_(cond, a, b):
    if a.dtype != b.dtype:
        raise ShapeError(f"where: branches have dtypes {a.dtype} and {b.dtype}")
    return torch.where(cond, a, b)


def _per_axis(t, axis: int, rank: int):
    """Shape a per-channel parameter (scale, zero point) to broadcast along `axis`."""
    if t.dim() == 0:
        return t
    return t.reshape([-1 if d == axis else 1 for d in range(rank)])


@op("quantize_linear", Kind.ELEMENTWISE)
def quantize_linear(x, scale, zero_point, *, axis: int = 1, narrow: bool = False):
    """ONNX QuantizeLinear. narrow=True (trident's own symmetric int8, as TensorRT) clamps to
    [-127, 127] instead of the type's full range; frontends never set it."""
    info = torch.iinfo(zero_point.dtype)
    s = _per_axis(scale, axis, x.dim()).to(torch.float32)
    zp = _per_axis(zero_point, axis, x.dim()).to(torch.float32)
    q = torch.round(x.to(torch.float32) / s) + zp  # round half to even, as ONNX specifies
    return torch.clamp(q, info.min + int(narrow), info.max).to(zero_point.dtype)


@op("dequantize_linear", Kind.ELEMENTWISE)
def dequantize_linear(x, scale, zero_point, *, axis: int = 1, dtype: torch.dtype | None = None):
    """ONNX DequantizeLinear; `dtype` (opset 21's output_dtype) defaults to the scale's. Inside a
    fused kernel the value stays in fp32 registers whatever its dtype, as every fused value."""
    s = _per_axis(scale, axis, x.dim())
    zp = _per_axis(zero_point, axis, x.dim()).to(torch.float32)
    return ((x.to(torch.float32) - zp) * s.to(torch.float32)).to(dtype or scale.dtype)
