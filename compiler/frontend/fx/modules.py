"""Converters of call_module leaves (torch.fx.symbolic_trace keeps nn.Conv2d, nn.Linear, nn.ReLU ...
as calls of the module): each the functional converter of what the module computes, on its
attributes."""
from __future__ import annotations

import torch.nn as nn

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx import decompose
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.elementwise import (_gelu, _hardsigmoid, _hardtanh, _leaky_relu,
                                                      _unary)
from trident.compiler.frontend.fx.indexing import _f_embedding
from trident.compiler.frontend.fx.linear import _conv, _linear
from trident.compiler.frontend.fx.movement import _flatten, _im2col
from trident.compiler.frontend.fx.normalization import _f_batch_norm, _ln, _softmax
from trident.compiler.frontend.fx.pooling import (_adaptive_avg_pool1d, _adaptive_avg_pool2d,
                                                  _avg_pool, _max_pool)
from trident.compiler.frontend.fx.registry import MODULES, converts_module
from trident.compiler.frontend.fx.shapes import _dropout


# ============================================================== call_module converters ====
@converts_module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _m_conv(cx: Ctx, m, x):
    if m.padding_mode != "zeros":
        raise UnsupportedError(f'fx node "{cx.node_name}": conv padding_mode "{m.padding_mode}"')
    return _conv(cx, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


@converts_module(nn.Linear)
def _m_linear(cx: Ctx, m, x):
    return _linear(cx, x, m.weight, m.bias)


@converts_module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _m_bn(cx: Ctx, m, x):
    return _f_batch_norm(cx, x, m.running_mean, m.running_var, m.weight, m.bias,
                        m.training or not m.track_running_stats, m.momentum, m.eps)


@converts_module(nn.LayerNorm)
def _m_ln(cx: Ctx, m, x):
    return _ln(cx, x, m.normalized_shape, m.weight, m.bias, m.eps)


@converts_module(nn.Embedding)
def _m_embedding(cx: Ctx, m, x):
    return _f_embedding(cx, x, m.weight, m.padding_idx, m.max_norm)


for _cls, _make in {
    nn.ReLU: lambda m: _unary("relu"), nn.Sigmoid: lambda m: _unary("sigmoid"),
    nn.Tanh: lambda m: _unary("tanh"), nn.SiLU: lambda m: _unary("silu"),
    nn.Hardswish: lambda m: _unary("hard_swish"),
}.items():
    MODULES[_cls] = lambda cx, m, x, _op=_make(None): _op(cx, x)

MODULES[nn.GELU] = lambda cx, m, x: _gelu(cx, x, m.approximate)
MODULES[nn.LeakyReLU] = lambda cx, m, x: _leaky_relu(cx, x, m.negative_slope)
MODULES[nn.Hardsigmoid] = lambda cx, m, x: _hardsigmoid(cx, x)
MODULES[nn.Hardtanh] = lambda cx, m, x: _hardtanh(cx, x, m.min_val, m.max_val)
MODULES[nn.ReLU6] = lambda cx, m, x: _hardtanh(cx, x, 0.0, 6.0)
MODULES[nn.Softmax] = lambda cx, m, x: _softmax(cx, x, m.dim)
MODULES[nn.Identity] = lambda cx, m, x, *a, **k: x
MODULES[nn.Dropout] = lambda cx, m, x: _dropout(cx, x, m.p, m.training)
MODULES[nn.Flatten] = lambda cx, m, x: _flatten(cx, x, m.start_dim, m.end_dim)
MODULES[nn.MaxPool1d] = lambda cx, m, x: _max_pool(1, False)(
    cx, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
MODULES[nn.MaxPool2d] = lambda cx, m, x: _max_pool(2, False)(
    cx, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
MODULES[nn.AvgPool1d] = lambda cx, m, x: _avg_pool(1)(
    cx, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
MODULES[nn.AvgPool2d] = lambda cx, m, x: _avg_pool(2)(
    cx, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
    m.divisor_override)
MODULES[nn.AdaptiveAvgPool2d] = lambda cx, m, x: _adaptive_avg_pool2d(cx, x, m.output_size)
MODULES[nn.AdaptiveAvgPool1d] = lambda cx, m, x: _adaptive_avg_pool1d(cx, x, m.output_size)
MODULES[nn.Unfold] = lambda cx, m, x: _im2col(cx, x, m.kernel_size, m.dilation, m.padding, m.stride)
MODULES[nn.GroupNorm] = lambda cx, m, x: decompose.group_norm(cx, x, m.num_groups, m.weight, m.bias, m.eps)
