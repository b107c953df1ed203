"""Converters of the normalizations (batch, layer, RMS, instance norm; group norm, vector norms,
F.normalize, weight norm and cdist through decompose.py) and of softmax / log-softmax."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx import decompose
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx, Missing
from trident.compiler.frontend.fx.helpers import _ints, _promote
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ====================================================================== normalization ====
def _filled_if_none(t, shape, dtype, fill: float):
    return torch.full(tuple(shape), fill, dtype=dtype) if t is None else t


def _bn(cx: Ctx, x, weight, bias, mean, var, eps: float):
    c = (cx.shape(x)[1],)
    dt = cx.dtype(x)
    weight, bias = _filled_if_none(weight, c, dt, 1.0), _filled_if_none(bias, c, dt, 0.0)
    args = _promote(cx, x, weight, bias, mean, var, dtype=dt)
    return cx.emit("batch_norm", args, epsilon=float(eps))


@converts(aten._native_batch_norm_legit_no_training.default)
def _native_bn(cx: Ctx, input, weight, bias, running_mean, running_var, momentum, eps):
    y = _bn(cx, input, weight, bias, running_mean, running_var, eps)
    return (y, Missing("batch-norm saved mean"), Missing("batch-norm saved inverse std"))


@converts(aten.batch_norm.default)
def _aten_bn(cx: Ctx, input, weight, bias, running_mean, running_var, training, momentum, eps,
             cudnn_enabled=True):
    return _f_batch_norm(cx, input, running_mean, running_var, weight, bias, training,
                         momentum, eps)


@converts(F.batch_norm, torch.batch_norm)
def _f_batch_norm(cx: Ctx, input, running_mean, running_var, weight=None, bias=None,
                 training=False, momentum=0.1, eps=1e-5, *rest):
    if running_mean is None and running_var is None:  # batch statistics, and nothing to update
        return decompose.batch_norm_batch_stats(cx, input, weight, bias, eps)
    if training or running_mean is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": batch norm in training mode '
                               "(call model.eval() before compiling)")
    return _bn(cx, input, weight, bias, running_mean, running_var, eps)


@converts(aten._native_batch_norm_legit.no_stats)
def _native_bn_batch_stats(cx: Ctx, input, weight, bias, training, momentum, eps):
    y = decompose.batch_norm_batch_stats(cx, input, weight, bias, eps)
    return (y, Missing("batch-norm saved mean"), Missing("batch-norm saved inverse std"))


converts(torch.norm, aten.norm.ScalarOpt_dim, aten.norm.Scalar, "norm")(decompose.tensor_norm)
converts(torch.linalg.vector_norm, aten.linalg_vector_norm.default)(decompose.vector_norm)
converts(F.normalize)(decompose.normalize)
converts(torch._weight_norm, aten._weight_norm.default)(decompose.weight_norm)
converts(aten.group_norm.default, F.group_norm, torch.group_norm)(decompose.group_norm)
converts(torch.cdist, aten.cdist.default, aten._cdist_forward.default)(decompose.cdist)


def _ln(cx: Ctx, x, normalized_shape, weight, bias, eps):
    shape = _ints([normalized_shape])
    axis = cx.rank(x) - len(shape)
    dt = cx.dtype(x)
    weight = _promote(cx, _filled_if_none(weight, shape, dt, 1.0), dtype=dt)[0]
    inputs = [x, weight] + ([] if bias is None else _promote(cx, bias, dtype=dt))
    return cx.emit("layer_norm", inputs, axis=axis, epsilon=float(eps))


@converts(aten.native_layer_norm.default)
def _native_ln(cx: Ctx, input, normalized_shape, weight, bias, eps):
    return (_ln(cx, input, normalized_shape, weight, bias, eps),
            Missing("layer-norm saved mean"), Missing("layer-norm saved inverse std"))


@converts(aten.layer_norm.default, F.layer_norm, torch.layer_norm)
def _layer_norm(cx: Ctx, input, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    return _ln(cx, input, normalized_shape, weight, bias, eps)


@converts(F.rms_norm, torch.rms_norm, aten.rms_norm.default)
def _rms_norm(cx: Ctx, input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x²) + eps) * weight over the last dims; eps defaults to the dtype's."""
    shape = _ints([normalized_shape])
    dt = cx.dtype(input)
    eps = torch.finfo(dt).eps if eps is None else float(eps)
    weight = _promote(cx, _filled_if_none(weight, shape, dt, 1.0), dtype=dt)[0]
    return cx.emit("rms_norm", [input, weight], axis=cx.rank(input) - len(shape), epsilon=eps)


@converts(F.instance_norm, torch.instance_norm)
def _instance_norm(cx: Ctx, input, running_mean=None, running_var=None, weight=None, bias=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5, cudnn_enabled=False):
    """Each (sample, channel) normalized over its positions: a group norm with a group per
    channel. With running statistics instead (use_input_stats=False), a batch norm."""
    if not use_input_stats:
        return _bn(cx, input, weight, bias, running_mean, running_var, eps)
    return decompose.group_norm(cx, input, cx.shape(input)[1], weight, bias, eps)


def _aten_softmax_like(op: str):
    """aten._softmax / aten._log_softmax: half_to_float computes an fp16 input into fp32."""
    def convert(cx: Ctx, x, dim, half_to_float):
        y = cx.emit(op, [x], axis=_axis(dim, cx.rank(x)))
        return cx.cast(y, torch.float32) if half_to_float else y
    return convert


def _softmax_like(op: str):
    def convert(cx: Ctx, input, dim=None, _stacklevel=3, dtype=None):
        # F.softmax(x, dim, _stacklevel, dtype), but torch.softmax(x, dim, dtype), aten's and
        # x.softmax(dim, dtype): a dtype third is the dtype
        if isinstance(_stacklevel, torch.dtype):
            dtype = _stacklevel
        if dim is None:
            raise UnsupportedError(f'fx node "{cx.node_name}": {op} without dim')
        if dtype is not None:
            input = cx.cast(input, dtype)
        return cx.emit(op, [input], axis=_axis(dim, cx.rank(input)))
    return convert


converts(aten._softmax.default)(_aten_softmax_like("softmax"))
converts(aten._log_softmax.default)(_aten_softmax_like("log_softmax"))
_softmax = converts(aten.softmax.int, torch.softmax, F.softmax, "softmax")(_softmax_like("softmax"))
converts(aten.log_softmax.int, torch.log_softmax, F.log_softmax,
         "log_softmax")(_softmax_like("log_softmax"))
