"""Converters of unary ops and activations (math_ops.py's compositions registered here too),
rounding, clamps, casts and copies."""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx import math_ops
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.helpers import _binary, _identity
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ========================================================================= elementwise ====
def _unary(op: str):
    def convert(cx: Ctx, x, inplace: bool = False):
        return cx.emit(op, [x])
    return convert


for _op, _targets in {
    "relu": [aten.relu.default, torch.relu, F.relu, torch.relu_, "relu"],
    "sigmoid": [aten.sigmoid.default, torch.sigmoid, F.sigmoid, "sigmoid"],
    "tanh": [aten.tanh.default, torch.tanh, F.tanh, "tanh"],
    "exp": [aten.exp.default, torch.exp, "exp"],
    "log": [aten.log.default, torch.log, "log"],
    "sqrt": [aten.sqrt.default, torch.sqrt, "sqrt"],
    "reciprocal": [aten.reciprocal.default, torch.reciprocal, "reciprocal"],
    "neg": [aten.neg.default, torch.neg, operator.neg, "neg", "__neg__"],
    "abs": [aten.abs.default, torch.abs, operator.abs, "abs", "__abs__"],
    "erf": [aten.erf.default, torch.erf, torch.special.erf, "erf"],
    "erfc": [aten.erfc.default, torch.erfc, torch.special.erfc, "erfc"],
    "asin": [aten.asin.default, torch.asin, torch.arcsin, "asin", "arcsin"],
    "acos": [aten.acos.default, torch.acos, torch.arccos, "acos", "arccos"],
    "atan": [aten.atan.default, torch.atan, torch.arctan, "atan", "arctan"],
    "silu": [aten.silu.default, F.silu],
    "hard_swish": [aten.hardswish.default, F.hardswish],
    "not": [aten.logical_not.default, torch.logical_not, "logical_not"],
    "sin": [aten.sin.default, torch.sin, "sin"],
    "cos": [aten.cos.default, torch.cos, "cos"],
    "tan": [aten.tan.default, torch.tan, "tan"],
    "floor": [aten.floor.default, torch.floor, "floor"],
    "ceil": [aten.ceil.default, torch.ceil, "ceil"],
    "is_nan": [aten.isnan.default, torch.isnan, "isnan"],
    "exp2": [aten.exp2.default, torch.exp2, torch.special.exp2, "exp2"],
    "log2": [aten.log2.default, torch.log2, "log2"],
}.items():
    converts(*_targets)(_unary(_op))


@converts(aten.sign.default, aten.sgn.default, torch.sign, torch.sgn, "sign", "sgn")
def _sign(cx: Ctx, x):
    """torch.sign is 0 at NaN (the IR's sign, ONNX's, keeps NaN)."""
    sign = cx.emit("sign", [x])
    if not cx.dtype(x).is_floating_point:
        return sign
    return cx.emit("where", [cx.emit("is_nan", [x]), torch.tensor(0, dtype=cx.dtype(x)), sign])


@converts(aten.bitwise_not.default, torch.bitwise_not, operator.invert, "bitwise_not")
def _bitwise_not(cx: Ctx, x):
    if cx.dtype(x) != torch.bool:
        raise UnsupportedError(f'fx node "{cx.node_name}": bitwise not of {cx.dtype(x)} '
                               "(only bool is supported)")
    return cx.emit("not", [x])


@converts(aten.rsqrt.default, torch.rsqrt, "rsqrt")
def _rsqrt(cx: Ctx, x):
    return cx.emit("reciprocal", [cx.emit("sqrt", [x])])


@converts(aten.gelu.default, F.gelu, "gelu")
def _gelu(cx: Ctx, x, approximate: str = "none"):
    return cx.emit("gelu", [x], approximate=approximate)


@converts(aten.leaky_relu.default, F.leaky_relu)
def _leaky_relu(cx: Ctx, x, negative_slope: float = 0.01, inplace: bool = False):
    return cx.emit("leaky_relu", [x], alpha=float(negative_slope))


@converts(F.rrelu, torch.rrelu)
def _rrelu(cx: Ctx, x, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False,
           inplace: bool = False):
    """In eval mode a leaky relu with the mean slope; training mode draws random slopes."""
    if training:
        raise UnsupportedError(f'fx node "{cx.node_name}": rrelu in training mode (random slopes)')
    return _leaky_relu(cx, x, (float(lower) + float(upper)) / 2)


@converts(aten.hardsigmoid.default, F.hardsigmoid)
def _hardsigmoid(cx: Ctx, x, inplace: bool = False):
    return cx.emit("hard_sigmoid", [x], alpha=1.0 / 6.0, beta=0.5)  # relu6(x + 3) / 6


@converts(aten.hardtanh.default, F.hardtanh)
def _hardtanh(cx: Ctx, x, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    return cx.emit("clip", [x], min=float(min_val), max=float(max_val))


@converts(aten.relu6.default, F.relu6)
def _relu6(cx: Ctx, x, inplace: bool = False):
    return cx.emit("clip", [x], min=0.0, max=6.0)


converts(F.elu)(math_ops.elu)
converts(aten.elu.default)(math_ops.aten_elu)
converts(F.selu, torch.selu)(math_ops.selu)
converts(F.celu, torch.celu)(math_ops.celu)
converts(F.softplus, aten.softplus.default)(math_ops.softplus)
converts(F.logsigmoid)(math_ops.log_sigmoid)
converts(F.mish, aten.mish.default)(math_ops.mish)
converts(F.softsign)(math_ops.softsign)
converts(F.hardshrink, torch.hardshrink, aten.hardshrink.default, "hardshrink")(math_ops.hardshrink)
converts(F.softshrink, aten.softshrink.default)(math_ops.softshrink)
converts(F.glu, aten.glu.default)(math_ops.glu)
converts(torch.log1p, torch.special.log1p, aten.log1p.default, "log1p")(math_ops.log1p)
converts(torch.expm1, torch.special.expm1, aten.expm1.default, "expm1")(math_ops.expm1)
converts(torch.log10, aten.log10.default, "log10")(math_ops.log10)
converts(torch.signbit, aten.signbit.default, "signbit")(math_ops.signbit)
converts(torch.isclose, aten.isclose.default, "isclose")(math_ops.isclose)
converts(F.cosine_similarity, torch.cosine_similarity, aten.cosine_similarity.default)(math_ops.cosine_similarity)
converts(torch.var, aten.var.correction, aten.var.dim, "var")(math_ops.variance)
converts(torch.std, aten.std.correction, aten.std.dim, "std")(math_ops.std)


@converts(aten.isinf.default, torch.isinf, "isinf")
def _isinf(cx: Ctx, x):
    return cx.emit("is_inf", [x], positive=True, negative=True)


@converts(aten.round.default, aten.round.decimals, torch.round, "round")
def _round(cx: Ctx, x, *, decimals: int = 0):
    """Half to even; with decimals, as torch computes it: round(x * 10^d) / 10^d, or for d < 0
    round(x / 10^-d) * 10^-d (the power rounded to x's dtype)."""
    if not decimals:
        return cx.emit("round", [x])
    power = torch.tensor(10.0 ** abs(int(decimals)), dtype=cx.dtype(x))
    if decimals > 0:
        return cx.emit("div", [cx.emit("round", [cx.emit("mul", [x, power])]), power])
    return cx.emit("mul", [cx.emit("round", [cx.emit("div", [x, power])]), power])


@converts(aten.trunc.default, torch.trunc, torch.fix, "trunc", "fix")
def _trunc(cx: Ctx, x):
    """Towards zero: ceil below 0, floor elsewhere (NaN and infinities stay)."""
    if not cx.dtype(x).is_floating_point:
        return x
    negative = _binary(cx, "less", x, 0.0)
    return cx.emit("where", [negative, cx.emit("ceil", [x]), cx.emit("floor", [x])])


@converts(torch.square, "square")
def _square(cx: Ctx, x):
    return _binary(cx, "mul", x, x)


@converts(aten.clamp.default, aten.clamp.Tensor, torch.clamp, torch.clip, "clamp", "clip")
def _clamp(cx: Ctx, x, min=None, max=None):
    if isinstance(min, (Val, torch.Tensor)) or isinstance(max, (Val, torch.Tensor)):
        if min is not None:
            x = _binary(cx, "maximum", x, min)
        return x if max is None else _binary(cx, "minimum", x, max)
    if min is None and max is None:
        return x
    as_num = float if cx.dtype(x).is_floating_point else int
    return cx.emit("clip", [x], min=None if min is None else as_num(min),
                   max=None if max is None else as_num(max))


@converts(aten.clamp_min.default, torch.clamp_min, "clamp_min")
def _clamp_min(cx: Ctx, x, min):
    return _clamp(cx, x, min=min)


@converts(aten.clamp_max.default, torch.clamp_max, "clamp_max")
def _clamp_max(cx: Ctx, x, max):
    return _clamp(cx, x, max=max)


# --------------------------------------------------------------------------- casts ----
@converts(aten._to_copy.default)
def _to_copy(cx: Ctx, x, dtype=None, layout=None, device=None, pin_memory=None,
             non_blocking=False, memory_format=None):
    return x if dtype is None else cx.cast(x, dtype)


@converts(aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.to.other, "to")
def _to(cx: Ctx, x, *args, **kwargs):
    """x.to(dtype) / x.to(device, dtype) / x.to(other): only the dtype matters here."""
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, (Val, torch.Tensor)):
            dtype = cx.dtype(a)
    return x if dtype is None else cx.cast(x, dtype)


@converts("type")
def _type(cx: Ctx, x, dtype=None, non_blocking=False):
    if not isinstance(dtype, torch.dtype):
        raise UnsupportedError(f'fx node "{cx.node_name}": Tensor.type({dtype!r})')
    return cx.cast(x, dtype)


@converts(aten.type_as.default, "type_as")
def _type_as(cx: Ctx, x, other):
    return cx.cast(x, cx.dtype(other))


for _method, _dtype in {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
                        "int": torch.int32, "long": torch.int64, "bool": torch.bool}.items():
    converts(_method)(lambda cx, x, memory_format=None, _d=_dtype: cx.cast(x, _d))

converts(aten.alias.default, aten.detach.default, torch.detach, "detach")(_identity)
# An autograd flag (MRA sets it on its attention inputs): nothing an inference engine computes.
converts("requires_grad_")(lambda cx, x, requires_grad=True: x)


@converts(aten.clone.default, aten.lift_fresh_copy.default, torch.clone, "clone")
def _clone(cx: Ctx, x, *, memory_format=None):
    """A graph value as it is (values are never written in place); a constant the import holds
    copied, as torch copies it, so a slice assignment into the copy finds dense memory of its
    own (transformers 4.x's BLOOM and BioGPT clone an expanded mask, then write into it)."""
    if not isinstance(x, torch.Tensor):
        return x
    copy = x.clone(memory_format=torch.contiguous_format)
    cx.note_made(copy)
    return copy


@converts(aten.copy.default, aten.copy_.default, "copy_")
def _copy(cx: Ctx, target, src, non_blocking=False):
    """target.copy_(src), once fx_mutation has pointed target's later readers at its result (a
    write into a graph input or a view that others read keeps the graph in torch there), and
    aten.copy, its functional form: src broadcast to target's shape, in target's dtype."""
    value = cx.cast(src, cx.dtype(target))
    shape = list(cx.shape(target))
    return value if list(cx.shape(value)) == shape else cx.emit("expand", [value], shape=shape)


@converts(aten.contiguous.default, "contiguous")
def _contiguous(cx: Ctx, x, memory_format=None):
    """As clone where a constant is not contiguous (torch copies it then); else itself."""
    return x if not isinstance(x, torch.Tensor) or x.is_contiguous() else _clone(cx, x)
