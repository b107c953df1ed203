"""Matmul and convolution, float and int8."""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.ops.common import pad_spatial
from trident.compiler.ops.registry import Kind, op


def _dequantize_acc(acc, x_scale: float, w_scale, bias, channel_shape, dtype):
    """int8 layers' epilogue, in the order the kernels compute it (fp32): acc * (sx * sw[n]) + b.
    `acc` holds exact integer sums (float64); rounding it to fp32 is the kernel's int32 -> fp32."""
    scale = (w_scale.to(torch.float32) * torch.tensor(x_scale, dtype=torch.float32)).reshape(channel_shape)
    y = acc.to(torch.float32) * scale
    if bias is not None:
        y = y + bias.to(torch.float32).reshape(channel_shape)
    return y.to(dtype)


def _check_int8(*tensors):
    if any(t.dtype != torch.int8 for t in tensors):
        raise ShapeError(f"int8 layer: activation and weight must be int8, got "
                         f"{', '.join(str(t.dtype) for t in tensors)}")


@op("qmatmul", Kind.MATMUL)
def qmatmul(a, w, w_scale, bias=None, *, x_scale: float, dtype: torch.dtype = torch.float32):
    """int8 linear layer: a int8 [..., K] times w int8 [N, K] (stored K-major), int32 accumulation,
    dequantized per output channel: (a @ w.T) * (x_scale * w_scale[n]) + bias[n] in `dtype`."""
    _check_int8(a, w)
    acc = torch.matmul(a.to(torch.float64), w.to(torch.float64).t())  # exact for any real K
    return _dequantize_acc(acc, x_scale, w_scale, bias, (-1,), dtype)


@op("qconv", Kind.CONV)
def qconv(x, w, w_scale, bias=None, *, strides: Sequence[int], pads: Sequence[int],
          dilations: Sequence[int], groups: int = 1, x_scale: float, dtype: torch.dtype = torch.float32):
    """int8 convolution: x int8 NCHW, w int8 [OC, C/groups, KH, KW]; then qmatmul's epilogue."""
    _check_int8(x, w)
    acc = conv(x.to(torch.float64), w.to(torch.float64), strides=strides, pads=pads,
               dilations=dilations, groups=groups)
    return _dequantize_acc(acc, x_scale, w_scale, bias, (1, -1) + (1,) * (x.dim() - 2), dtype)


@op("matmul", Kind.MATMUL, same_dtype=True)
def matmul(a, b, bias=None):
    """torch.matmul semantics (batched, broadcast); `bias` is a [N] vector added to each row."""
    out = _integer_matmul(a, b) if not a.dtype.is_floating_point else torch.matmul(a, b)
    return out if bias is None else out + bias


@op("grouped_mm", Kind.MATMUL)
def grouped_mm(x, w, offs):
    """Rows of x [S, K] sorted by group, offs [E] where each group's rows end: rows
    [offs[e-1], offs[e]) times w[e] ([E, K, N]); rows past offs[E-1] are 0 (transformers'
    grouped_mm_fallback). Offsets are clamped into [0, S] and made non-decreasing first, as the
    kernel does (kernels/grouped_mm.py). Each group's product is taken for every row and kept
    where the row is the group's: no offset is read on the host, so a CUDA graph can hold it."""
    S, E = x.shape[0], w.shape[0]
    out = torch.zeros(S, w.shape[2], dtype=torch.float32, device=x.device)
    if E == 0:
        return out.to(x.dtype)
    ends = torch.cummax(offs.to(torch.int64).clamp(0, S), 0).values
    starts = torch.cat([ends.new_zeros(1), ends[:-1]])
    row = torch.arange(S, device=x.device)[:, None]
    for e in range(E):
        inside = (row >= starts[e]) & (row < ends[e])
        out = torch.where(inside, x.float() @ w[e].float(), out)
    return out.to(x.dtype)


def _integer_matmul(a, b):
    """CUDA has no integer GEMM in torch: there the product is taken in float64 (exact while
    every partial sum stays below 2^53, as it does for 8- and 16-bit operands)."""
    if a.is_cuda:
        return torch.matmul(a.to(torch.float64), b.to(torch.float64)).to(a.dtype)
    return torch.matmul(a, b)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@op("conv", Kind.CONV, same_dtype=True)
def conv(x, w, b=None, *, strides: Sequence[int], pads: Sequence[int],
         dilations: Sequence[int], groups: int = 1):
    spatial = x.dim() - 2
    if spatial not in _CONV:
        raise UnsupportedError(f"conv with {spatial} spatial dims (1-3 are supported)")
    if w.shape[1] * groups != x.shape[1]:
        raise ShapeError(f"conv: input has {x.shape[1]} channels, weight expects "
                         f"{w.shape[1]} x {groups} groups")
    if b is not None and tuple(b.shape) != (w.shape[0],):  # (torch's meta conv does not check)
        raise ShapeError(f"bias (input 2) has shape {list(b.shape)}; expected "
                         f"[{w.shape[0]}], one value per output channel of the weight {list(w.shape)}")
    return _CONV[spatial](pad_spatial(x, pads), w, b, tuple(strides), 0, tuple(dilations), groups)


_CONV_TRANSPOSE = {1: F.conv_transpose1d, 2: F.conv_transpose2d, 3: F.conv_transpose3d}


@op("conv_transpose", Kind.CONV, same_dtype=True)
def conv_transpose(x, w, b=None, *, strides: Sequence[int], pads: Sequence[int],
                   dilations: Sequence[int], output_padding: Sequence[int], groups: int = 1):
    """ONNX ConvTranspose with resolved pads (begin..., end...; negative ones add zeros): the
    full transposed convolution, output_padding zeros appended at the end, then the pads cropped.
    w: [C, OC / groups, k...]."""
    spatial = x.dim() - 2
    if spatial not in _CONV_TRANSPOSE:
        raise UnsupportedError(f"conv_transpose with {spatial} spatial dims (1-3 are supported)")
    if w.shape[0] != x.shape[1]:
        raise ShapeError(f"conv_transpose: input has {x.shape[1]} channels, weight {w.shape[0]}")
    y = _CONV_TRANSPOSE[spatial](x, w, None, tuple(strides), 0, 0, groups, tuple(dilations))
    begin, end = pads[:spatial], pads[spatial:]
    crop = []
    for k in reversed(range(spatial)):  # F.pad lists the last dim first; negative pads crop
        crop += [-begin[k], output_padding[k] - end[k]]
    y = F.pad(y, crop)
    return y if b is None else y + b.reshape((1, -1) + (1,) * spatial)


@op("einsum", Kind.OPAQUE)
def einsum(*xs, equation: str):
    return torch.einsum(equation, *xs)


@op("det", Kind.OPAQUE)
def det(x):
    return torch.linalg.det(x)


@op("integer_matmul", Kind.OPAQUE)
def integer_matmul(a, b, a_zero_point=None, b_zero_point=None):
    """ONNX MatMulInteger: (a - a_zero_point) @ (b - b_zero_point), exact, in int32. The zero
    points are per tensor, per row of a, or per column of b."""
    a = a.to(torch.int32) - (0 if a_zero_point is None else _row_zero_point(a_zero_point, a))
    b = b.to(torch.int32) - (0 if b_zero_point is None else b_zero_point.to(torch.int32))
    return _integer_matmul(a, b).to(torch.int32)


def _row_zero_point(zero_point, a):
    zp = zero_point.to(torch.int32)
    return zp.reshape(-1, 1) if zp.dim() == 1 and zp.numel() > 1 else zp


@op("integer_conv", Kind.OPAQUE)
def integer_conv(x, w, x_zero_point=None, w_zero_point=None, *, strides: Sequence[int],
                 pads: Sequence[int], dilations: Sequence[int], groups: int = 1):
    """ONNX ConvInteger: the convolution of (x - x_zero_point) and (w - w_zero_point), exact, in
    int32 (taken in float64, exact for 8-bit operands)."""
    xs = x.to(torch.float64) - (0 if x_zero_point is None else x_zero_point.to(torch.float64))
    ws = w.to(torch.float64)
    if w_zero_point is not None:
        zp = w_zero_point.to(torch.float64)
        ws = ws - (zp.reshape((-1,) + (1,) * (w.dim() - 1)) if zp.numel() > 1 else zp)
    return conv(xs, ws, strides=strides, pads=pads, dilations=dilations,
                groups=groups).to(torch.int32)
