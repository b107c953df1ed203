"""2-D max / average pooling templates on NHWC (channels-last) activations.

x is [N, H, W, C] contiguous; a tile covers BLOCK_M output pixels (flat n*OH*OW + oh*OW + ow) by
BLOCK_C channels, so every load is BLOCK_C contiguous channels of one input pixel. The tiles return
fp32 [BLOCK_M, BLOCK_C] and store nothing (generated kernels add the epilogue); out-of-range
pixels/channels wrap to duplicates that the caller's store mask drops.

Semantics follow ONNX MaxPool / AveragePool: pads are (top, left, bottom, right); with ceil_mode the
last window may overhang the padded input, but must start inside the image or the top/left pad.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from trident.kernels.common import (cdiv, interpreter_block, is_interpreter, next_pow2, nhwc_window_origin,
                                    normalize_padding, pair)
from trident.kernels.prims import maximum

import triton
import triton.language as tl


@triton.jit
def max_pool2d_nhwc_tile(x_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                         offs_m, offs_c, KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr,
                         BLOCK_C: tl.constexpr):
    """Max over each window; taps outside the image count as -inf (so padding never wins), and
    a NaN in the window gives NaN (torch, onnxruntime)."""
    x_off, ih0, iw0 = nhwc_window_origin(offs_m, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w)
    rc = offs_c % C
    acc = tl.full((BLOCK_M, BLOCK_C), float("-inf"), dtype=tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ih0 + kh * dil_h
            iw = iw0 + kw * dil_w
            in_img = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            row = x_off + ((kh * dil_h) * W + kw * dil_w) * C
            x = tl.load(x_ptr + row[:, None] + rc[None, :], mask=in_img[:, None], other=0)
            # -inf is applied after the fp32 cast: as a load `other` it would not fit int8.
            x = tl.where(in_img[:, None], x.to(tl.float32), float("-inf"))
            acc = maximum(acc, x)
    return acc


@triton.jit
def avg_pool2d_nhwc_tile(x_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, pad_b, pad_r,
                         offs_m, offs_c, KH: tl.constexpr, KW: tl.constexpr, COUNT_INCLUDE_PAD: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Mean over each window (ONNX AveragePool).

    The divisor is the number of in-image taps, or with COUNT_INCLUDE_PAD the taps inside the padded
    box [-pad_h, H+pad_b) x [-pad_w, W+pad_r): explicit padding counts, a ceil_mode overhang past it
    does not.
    """
    x_off, ih0, iw0 = nhwc_window_origin(offs_m, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w)
    rc = offs_c % C
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ih0 + kh
            iw = iw0 + kw
            in_img = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            row = x_off + (kh * W + kw) * C
            x = tl.load(x_ptr + row[:, None] + rc[None, :], mask=in_img[:, None], other=0)
            acc += x.to(tl.float32)
    # The window is a box, so its tap count is a product of clipped extents (no per-tap counting).
    # Windows always start inside the padded box (ih0 >= -pad_h), so only the far end clips.
    if COUNT_INCLUDE_PAD:
        rows = tl.minimum(ih0 + KH, H + pad_b) - ih0
        cols = tl.minimum(iw0 + KW, W + pad_r) - iw0
    else:
        rows = tl.minimum(ih0 + KH, H) - tl.maximum(ih0, 0)
        cols = tl.minimum(iw0 + KW, W) - tl.maximum(iw0, 0)
    count = tl.maximum(rows * cols, 1)  # a window wholly in padding/overhang averages to 0, not NaN
    return acc / count.to(tl.float32)[:, None]


@triton.jit
def pad_nhwc_tile(x_ptr, N, C, H, W, OH, OW, pad_t, pad_l, sx_n, sx_c, sx_h, sx_w, offs_m, offs_c):
    """fp32 [BLOCK_M, BLOCK_C] of x zero-padded: output pixel (n, oh, ow), channel c reads
    x[n, c, oh - pad_t, ow - pad_l] when that is inside x (c < C included), else 0.

    x is read through its strides (sx_*, in elements), so any layout works: a network's NCHW fp32
    input becomes the padded NHWC tensor a conv's row tile wants in one pass, with a cast or
    quantization fused behind (both map 0 to 0, so padding before them is the same)."""
    rm = offs_m % (N * OH * OW)
    ow = rm % OW
    t = rm // OW
    ih = t % OH - pad_t
    iw = ow - pad_l
    inside = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
    pixel = (t // OH) * sx_n + ih * sx_h + iw * sx_w
    mask = inside[:, None] & (offs_c < C)[None, :]
    x = tl.load(x_ptr + pixel[:, None] + (offs_c * sx_c)[None, :], mask=mask, other=0)
    return x.to(tl.float32)


@triton.jit
def pad_nhwc_kernel(x_ptr, y_ptr, N: tl.constexpr, C: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                    OH: tl.constexpr, OW: tl.constexpr, OC: tl.constexpr, pad_t: tl.constexpr, pad_l: tl.constexpr,
                    sx_n: tl.constexpr, sx_c: tl.constexpr, sx_h: tl.constexpr, sx_w: tl.constexpr,
                    BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Standalone pad_nhwc: y [N, OH, OW, OC] contiguous; grid = cdiv(N*OH*OW, BLOCK_M).
    Geometry and strides are compile-time: the per-pixel divisions by OW and OH become multiplies
    (with runtime sizes the ResNet-50 stem's pad at b256 took 144 us, for 185 MB moved)."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.arange(0, BLOCK_C)
    x = pad_nhwc_tile(x_ptr, N, C, H, W, OH, OW, pad_t, pad_l, sx_n, sx_c, sx_h, sx_w, offs_m, offs_c)
    mask = (offs_m < N * OH * OW)[:, None] & (offs_c < OC)[None, :]
    tl.store(y_ptr + offs_m[:, None] * OC + offs_c[None, :], x.to(y_ptr.dtype.element_ty), mask=mask)


def pad_nhwc(x: torch.Tensor, padding, channels: int | None = None, out_dtype=None) -> torch.Tensor:
    """Zero-pad logical-NCHW x (any memory format) by (top, left, bottom, right), and its channels
    up to `channels`; returns logical NCHW in channels_last memory format, as the conv tiles read.
    out_dtype (default x's) is a plain cast: a float -> int8 cast needs quantizing instead."""
    N, C, H, W = x.shape
    pt, pl, pb, pr = normalize_padding(padding)
    channels = C if channels is None else channels
    if channels < C or min(pt, pl, pb, pr) < 0:
        raise ValueError(f"pad_nhwc: pads {(pt, pl, pb, pr)} and channels {channels} must not crop {tuple(x.shape)}")
    OH, OW = H + pt + pb, W + pl + pr
    y = torch.empty((N, channels, OH, OW), device=x.device, dtype=out_dtype or x.dtype,
                    memory_format=torch.channels_last)
    block_c = next_pow2(channels)
    block_m = interpreter_block(N * OH * OW, hi=4096) if is_interpreter() else max(16, 4096 // block_c)
    sx_n, sx_c, sx_h, sx_w = x.stride()
    pad_nhwc_kernel[(cdiv(N * OH * OW, block_m),)](x, y, N, C, H, W, OH, OW, channels, pt, pl,
                                                   sx_n, sx_c, sx_h, sx_w, BLOCK_M=block_m, BLOCK_C=block_c,
                                                   num_warps=4 if is_interpreter() else 8)
    return y


@triton.jit
def pool2d_nhwc_kernel(x_ptr, y_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, pad_b, pad_r,
                       dil_h, dil_w, KH: tl.constexpr, KW: tl.constexpr, IS_MAX: tl.constexpr,
                       COUNT_INCLUDE_PAD: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr):
    """Standalone pool: grid = (cdiv(N*OH*OW, BLOCK_M), cdiv(C, BLOCK_C)); y is NHWC."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    if IS_MAX:
        acc = max_pool2d_nhwc_tile(x_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                                   offs_m, offs_c, KH, KW, BLOCK_M, BLOCK_C)
    else:
        acc = avg_pool2d_nhwc_tile(x_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, pad_b, pad_r,
                                   offs_m, offs_c, KH, KW, COUNT_INCLUDE_PAD, BLOCK_M, BLOCK_C)
    mask = (offs_m[:, None] < N * OH * OW) & (offs_c[None, :] < C)
    tl.store(y_ptr + offs_m[:, None] * C + offs_c[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)


@dataclass(frozen=True)
class PoolConfig:
    BLOCK_M: int
    BLOCK_C: int
    num_warps: int = 4


def heuristic_config(M: int, C: int) -> PoolConfig:
    """M = N*OH*OW. Memory-bound: 64 contiguous channels x 64 pixels per program on the GPU."""
    if is_interpreter():
        return PoolConfig(interpreter_block(M), interpreter_block(C))
    return PoolConfig(64, max(16, min(64, next_pow2(C))), 4)


def pool_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int, ceil_mode: bool) -> int:
    """Output extent (PyTorch/ONNX): with ceil_mode the last window must start before size + pad_lo."""
    span = size + pad_lo + pad_hi - dil * (k - 1) - 1
    out = (cdiv(span, stride) if ceil_mode else span // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + pad_lo:
        out -= 1
    return out


def _pool(x, kernel, stride, padding, dilation, ceil_mode, is_max, count_include_pad, config):
    if x.dim() != 4:
        raise ValueError(f"pooling wants a 4-D NCHW tensor, got {tuple(x.shape)}")
    N, C, H, W = x.shape
    (KH, KW) = pair(kernel)
    (sh, sw) = pair(stride if stride is not None else kernel)
    (dh, dw) = pair(dilation)
    pt, pl, pb, pr = normalize_padding(padding)
    OH = pool_out_size(H, KH, sh, pt, pb, dh, ceil_mode)
    OW = pool_out_size(W, KW, sw, pl, pr, dw, ceil_mode)
    if OH <= 0 or OW <= 0:
        raise ValueError(f"pool output would be {OH}x{OW}")
    x = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty((N, C, OH, OW), device=x.device, dtype=x.dtype, memory_format=torch.channels_last)
    M = N * OH * OW
    if M == 0 or C == 0:
        return y
    cfg = config or heuristic_config(M, C)
    grid = (cdiv(M, cfg.BLOCK_M), cdiv(C, cfg.BLOCK_C))
    pool2d_nhwc_kernel[grid](x, y, N, H, W, C, OH, OW, sh, sw, pt, pl, pb, pr, dh, dw, KH=KH, KW=KW,
                             IS_MAX=is_max, COUNT_INCLUDE_PAD=count_include_pad, BLOCK_M=cfg.BLOCK_M,
                             BLOCK_C=cfg.BLOCK_C, num_warps=cfg.num_warps)
    return y


def max_pool2d_nhwc(x: torch.Tensor, kernel, stride=None, padding=(0, 0, 0, 0), dilation=(1, 1),
                    ceil_mode: bool = False, config: PoolConfig | None = None) -> torch.Tensor:
    """Max pool of logical-NCHW x; padding (top, left, bottom, right). Returns channels_last NCHW."""
    return _pool(x, kernel, stride, padding, dilation, ceil_mode, True, False, config)


def avg_pool2d_nhwc(x: torch.Tensor, kernel, stride=None, padding=(0, 0, 0, 0), ceil_mode: bool = False,
                    count_include_pad: bool = False, config: PoolConfig | None = None) -> torch.Tensor:
    """ONNX AveragePool of logical-NCHW x; padding (top, left, bottom, right). Returns channels_last NCHW."""
    if not x.dtype.is_floating_point:
        raise ValueError(f"avg_pool2d_nhwc supports floating inputs only, got {x.dtype}")
    return _pool(x, kernel, stride, padding, (1, 1), ceil_mode, False, count_include_pad, config)
