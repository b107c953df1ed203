"""Converters of matrix products (matmul, mm, bmm, linear, addmm, baddbmm, grouped_mm), matrix
transposes, convolutions and transposed convolutions."""
from __future__ import annotations

import operator

import torch
import torch.nn as nn
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.arithmetic import _add, _mul
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.helpers import (_binary, as_batch, _common_dtype, _promote, _reshape,
                                                  _transpose, _tuple_n)
from trident.compiler.frontend.fx.registry import converts, converts_module, converts_operator

aten = torch.ops.aten


# ============================================================================== matmul ====
@converts(aten.mm.default, aten.bmm.default, aten.matmul.default, torch.mm, torch.bmm,
          torch.matmul, operator.matmul, "matmul", "mm", "bmm", "__matmul__")
def _matmul(cx: Ctx, a, b):
    """torch.matmul; a 1-D operand is a one-row (first) or one-column (second) matrix whose dim
    the result drops, as torch defines it."""
    vector_a, vector_b = cx.rank(a) == 1, cx.rank(b) == 1
    if vector_a:
        a = _reshape(cx, a, [1, cx.shape(a)[0]])
    if vector_b:
        b = _reshape(cx, b, [cx.shape(b)[0], 1])
    y = _binary(cx, "matmul", a, _unbroadcast_weight(cx, a, b))
    if vector_a or vector_b:
        shape = list(cx.shape(y))
        drop = ([len(shape) - 2] if vector_a else []) + ([len(shape) - 1] if vector_b else [])
        y = _reshape(cx, y, [n for k, n in enumerate(shape) if k not in drop])
    return y


# Grouped products (a mixture-of-experts layer's tokens sorted by expert): torch's and F's
# grouped_mm, and transformers' own fallback operator for them (integrations/moe.py).
# (torch before 2.8 has neither)
_GROUPED_MM = [f for f in (getattr(torch, "_grouped_mm", None), getattr(F, "grouped_mm", None),
                           getattr(getattr(aten, "_grouped_mm", None), "default", None)) if f is not None]


@converts(*_GROUPED_MM)
def _grouped_mm(cx: Ctx, mat_a, mat_b, offs=None, bias=None, out_dtype=None):
    """x [S, K] (rows sorted by group) times w [E, K, N] group by group, offs [E] ending each
    group's rows: kernels/grouped_mm.py. The other forms (3-D x, 2-D w, a bias, another output
    dtype) run in torch."""
    if offs is None or bias is not None or out_dtype not in (None, cx.dtype(mat_a)):
        raise UnsupportedError(f'fx node "{cx.node_name}": grouped_mm with offs={offs is not None}, '
                               f"bias={bias is not None}, out_dtype={out_dtype} (converted: offs, "
                               "no bias, the operands' dtype)")
    return _grouped_rows(cx, mat_a, mat_b, offs)


@converts_operator("transformers::grouped_mm_fallback")
def _grouped_mm_fallback(cx: Ctx, input, weight, offs):
    return _grouped_rows(cx, input, weight, offs)


def _grouped_rows(cx: Ctx, x, w, offs):
    shapes = [list(cx.shape(v)) for v in (x, w, offs)]
    if cx.rank(x) != 2 or cx.rank(w) != 3 or cx.rank(offs) != 1 or shapes[0][1] != shapes[1][1] \
            or shapes[2][0] != shapes[1][0] or cx.dtype(x) != cx.dtype(w):
        raise UnsupportedError(f'fx node "{cx.node_name}": grouped_mm of {shapes[0]} {cx.dtype(x)} rows, '
                               f"{shapes[1]} {cx.dtype(w)} weights and {shapes[2]} offsets (converted: "
                               "[S, K] rows, [E, K, N] weights of their dtype, [E] offsets)")
    return cx.emit("grouped_mm", [x, w, offs])


def _unbroadcast_weight(cx: Ctx, a, b):
    """A constant B expanded over batch dims that A has anyway (F.linear on a 3-D input that is
    not contiguous becomes bmm(A, W^T.expand(L, K, N))) as the 2-D weight it is: one [K, N]
    operand, which matmul broadcasts, instead of L copies and an L-batched GEMM."""
    if not isinstance(b, torch.Tensor) or b.dim() < 3 or cx.rank(a) < b.dim():
        return b
    batch = b.shape[:-2]
    if any(s != 1 and st != 0 for s, st in zip(batch, b.stride()[:-2])):
        return b  # really differs along a batch dim
    a_batch = cx.shape(a)[cx.rank(a) - b.dim():-2]
    if any(s not in (1, t) for s, t in zip(batch, a_batch)):
        return b  # B's batch dims would widen the result
    weight = b[(0,) * len(batch)]
    if id(b) in cx.hints:  # keep the weight's name: "attn.in_proj_weight.transpose"
        cx.hints[id(weight)] = (weight, cx.hints[id(b)][1].removesuffix(".expand"))
    return weight


@converts(aten.linear.default, F.linear)
def _linear(cx: Ctx, input, weight, bias=None):
    # y = x W^T + b. A constant W is transposed here, at import (emit folds it), so the IR
    # holds a plain [in, out] matmul operand.
    w_t = _transpose(cx, weight, [1, 0]) if cx.rank(weight) == 2 else weight
    y = _matmul(cx, input, w_t)
    return y if bias is None else _add(cx, y, bias)


@converts(aten.addmm.default, torch.addmm, "addmm")
def _addmm(cx: Ctx, input, mat1, mat2, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2); beta = 0 ignores input, NaN included, as torch does."""
    y = _matmul(cx, mat1, mat2)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    if beta == 0:
        return y
    return _add(cx, y, input if beta == 1 else _mul(cx, input, beta))


@converts(aten.baddbmm.default, torch.baddbmm, "baddbmm")
def _baddbmm(cx: Ctx, input, batch1, batch2, *, beta=1, alpha=1):
    """The batched addmm (BLOOM's ALiBi scores)."""
    return _addmm(cx, input, batch1, batch2, beta, alpha)


@converts(aten.t.default, torch.t, "t")
def _t(cx: Ctx, x):
    return x if cx.rank(x) < 2 else _transpose(cx, x, [1, 0])


def _matrix_transpose(cx: Ctx, x):
    """x.mT (and x.mH of a real tensor): the last two dims swapped."""
    rank = cx.rank(x)
    if rank < 2:
        raise ShapeError(f'fx node "{cx.node_name}": .mT of a {rank}-D tensor')
    return _transpose(cx, x, list(range(rank - 2)) + [rank - 1, rank - 2])


# ================================================================================ conv ====
def _conv_pads(cx: Ctx, padding, weight, dilation: list[int], n: int) -> list[int]:
    """Padding as the IR wants it: (begin..., end...). 'same' puts the odd pixel at the end."""
    if padding == "valid":
        return [0] * (2 * n)
    if padding == "same":
        k = cx.shape(weight)[2:]
        total = [d * (kk - 1) for d, kk in zip(dilation, k)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return _tuple_n(padding, n) * 2


def _conv(cx: Ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n = cx.rank(weight) - 2
    strides, dilations = _tuple_n(stride, n), _tuple_n(dilation, n)
    pads = _conv_pads(cx, padding, weight, dilations, n)
    if isinstance(padding, str) and padding == "same" and any(s != 1 for s in strides):
        raise UnsupportedError(f'fx node "{cx.node_name}": padding="same" needs stride 1')
    dtype = _common_dtype(cx, [input, weight])
    input, undo = as_batch(cx, input, n)
    inputs = _promote(cx, input, weight)
    if bias is not None:
        inputs += _promote(cx, bias, dtype=dtype)
    return undo(cx.emit("conv", inputs, strides=strides, pads=pads, dilations=dilations,
                        groups=int(groups)))


converts(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
         aten.conv2d.padding, torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d,
         F.conv3d)(_conv)


@converts(aten.convolution.default)
def _convolution(cx: Ctx, input, weight, bias, stride, padding, dilation, transposed,
                 output_padding, groups):
    if transposed:
        return _conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups,
                               dilation)
    return _conv(cx, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(cx: Ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                    groups=1, dilation=1):
    """One IR conv_transpose (ONNX's: the same weight layout [C, OC / groups, k...]; torch's
    padding crops both ends of each spatial dim). It runs in torch inside the engine (DPT's
    reassemble stage, U-Net decoders) instead of sending its whole partition there."""
    n = cx.rank(weight) - 2
    if isinstance(padding, str):
        raise UnsupportedError(f'fx node "{cx.node_name}": transposed convolution with padding '
                               f"{padding!r}")
    dtype = _common_dtype(cx, [input, weight])
    input, undo = as_batch(cx, input, n)
    inputs = _promote(cx, input, weight) + ([] if bias is None else _promote(cx, bias, dtype=dtype))
    return undo(cx.emit("conv_transpose", inputs, strides=_tuple_n(stride, n),
                        pads=_tuple_n(padding, n) * 2, dilations=_tuple_n(dilation, n),
                        output_padding=_tuple_n(output_padding, n), groups=int(groups)))


converts(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, aten.conv_transpose1d.default,
         aten.conv_transpose2d.input, aten.conv_transpose3d.input)(_conv_transpose)


def _m_conv_transpose(cx: Ctx, m, x, output_size=None):
    if output_size is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": {type(m).__name__} with output_size')
    return _conv_transpose(cx, x, m.weight, m.bias, m.stride, m.padding, m.output_padding,
                           m.groups, m.dilation)


converts_module(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)(_m_conv_transpose)
