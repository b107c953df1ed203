"""2-D convolution templates on NHWC (channels-last) activations, as implicit GEMM.

Layouts (what the engine stores; `pack_conv_weight` / `pack_depthwise_weight` produce the weights):
  x       [N, H, W, C] contiguous (a channels_last NCHW tensor has exactly this storage)
  w       [OC, KH, KW, C_PER_GROUP] contiguous: row oc is the GEMM's K-major column, K = (kh, kw, c)
  w (dw)  [KH, KW, C] contiguous for depthwise (groups == C == OC): one contiguous channel vector per tap
  y       [N*OH*OW, OC] row-major (= NHWC)

GEMM view, per group g: M = N*OH*OW output pixels, N = OC_PER_GROUP output channels, K = KH*KW*C_PER_GROUP.
The tiles return the accumulator (fp32, int32 for int8) and store nothing; generated kernels add the
epilogue. `conv2d_nhwc()` is the standalone launcher used by tests and benchmarks.
"""
from __future__ import annotations

import torch

from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import (cast_for_store, cdiv, dot_acc, dot_precision, drop_unfit_persistent,
                                    fp32_on_tensor_cores, fp32_tile, grouped_pid,
                                    interpreter_block, is_int8, is_interpreter, min_block_k, next_pow2,
                                    nhwc_window_origin, normalize_padding, pair, persistent_grid,
                                    persistent_pipeline_fits, tile_config, window_origin, zero_acc)
from trident.kernels.matmul import NUM_SMS_H200, matmul
from trident.kernels.depthwise import depthwise_rows, streams_rows
from trident.kernels.depthwise import pack_weight as pack_rows_weight
from trident.kernels.pool import pad_nhwc
from trident.kernels.prims import in_bounds

import triton
import triton.language as tl


@triton.jit
def _conv_k_step(i, c_blocks, KW: tl.constexpr, W, C, C_PER_GROUP, dil_h, dil_w, BLOCK_K: tl.constexpr):
    """Step i of conv2d_nhwc_tile's K walk (tap by tap, BLOCK_K channels at a time): the tap (kh, kw),
    the first channel c0, and the step's offsets from the window origin in x and in a weight row."""
    tap = i // c_blocks
    c0 = (i - tap * c_blocks) * BLOCK_K
    kh = tap // KW
    kw = tap - kh * KW
    return kh, kw, c0, ((kh * dil_h) * W + kw * dil_w) * C + c0, tap * C_PER_GROUP + c0


@triton.jit
def conv2d_nhwc_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, OC, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                     group, C_PER_GROUP, OC_PER_GROUP, offs_m, offs_n,
                     KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Accumulator [BLOCK_M, BLOCK_N] for output pixels offs_m and in-group output channels offs_n.

    K is walked tap by tap, BLOCK_K channels at a time, so every A load is BLOCK_K contiguous
    channels of one input pixel. Best when C_PER_GROUP >= BLOCK_K; for tiny C_PER_GROUP (the RGB
    stem, ResNeXt's 4-channel groups) `conv2d_nhwc_small_c_tile` wastes less of each dot.
    Out-of-range pixels/channels wrap (duplicate lanes): the caller masks its store at
    y[offs_m, group * OC_PER_GROUP + offs_n] (row stride OC; OC itself is unused here).
    """
    x_off, ih0, iw0 = nhwc_window_origin(offs_m, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w)
    x_off += group * C_PER_GROUP
    rn = offs_n % OC_PER_GROUP
    w_off = (group * OC_PER_GROUP + rn) * (KH * KW * C_PER_GROUP)
    rk = tl.arange(0, BLOCK_K)
    acc = zero_acc(x_ptr, BLOCK_M, BLOCK_N)
    c_blocks = tl.cdiv(C_PER_GROUP, BLOCK_K)
    # Unpadded windows never leave the image. With the geometry constant (generated kernels and
    # conv2d_nhwc pass it so) this and the channel masks below fold away, with their predicate math:
    # ResNet-50's 3x3 and strided 1x1 convs, 0.82 -> 0.90x cuDNN (geometric mean, H200, b256).
    inside = ((pad_h == 0) & (pad_w == 0) & ((OH - 1) * stride_h + (KH - 1) * dil_h < H)
              & ((OW - 1) * stride_w + (KW - 1) * dil_w < W))
    # The operand pointers are loop-carried and advance by a scalar per step, as in matmul_tile.
    # Recomputed from the step index instead, they kept a persistent kernel's flattened loop from
    # pipelining its loads at all (plain loads, 1.6-2x slower, Triton 3.6 on the H200).
    a_ptrs = x_ptr + x_off[:, None] + rk[None, :]
    b_ptrs = w_ptr + w_off[None, :] + rk[:, None]
    # One flat loop (not nested tap/channel loops) so Triton software-pipelines across taps even
    # when a tap has a single channel block (C_PER_GROUP <= BLOCK_K, common in ResNets).
    for i in range(0, KH * KW * c_blocks):
        kh, kw, c0, a_off, b_off = _conv_k_step(i, c_blocks, KW, W, C, C_PER_GROUP, dil_h, dil_w, BLOCK_K)
        ih = ih0 + kh * dil_h
        iw = iw0 + kw * dil_w
        in_img = tl.where(inside, True, (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W))
        c_ok = in_bounds(c0 + rk, C_PER_GROUP, BLOCK_K)
        a = tl.load(a_ptrs, mask=in_img[:, None] & c_ok[None, :], other=0)
        b = tl.load(b_ptrs, mask=c_ok[:, None], other=0)
        acc = dot_acc(a, b, acc, INPUT_PRECISION)
        _, _, _, a_next, b_next = _conv_k_step(i + 1, c_blocks, KW, W, C, C_PER_GROUP, dil_h, dil_w, BLOCK_K)
        a_ptrs += a_next - a_off
        b_ptrs += b_next - b_off
    return acc


@triton.jit
def conv2d_nhwc_small_c_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, OC, stride_h, stride_w, pad_h, pad_w, dil_h,
                             dil_w, group, C_PER_GROUP, OC_PER_GROUP, offs_m, offs_n,
                             KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                             BLOCK_K: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                             sx_n, sx_h, sx_w, sx_c, CHANNELS_OUTER: tl.constexpr):
    """Same contract as conv2d_nhwc_tile, but K is walked flat in BLOCK_K steps.

    Each K block mixes taps, so the A load is a 2-D gather with per-element index math; worth it
    only when C_PER_GROUP is much smaller than BLOCK_K (e.g. a 7x7 stem on 3 channels: K = 147 in
    5 blocks of 32 instead of 49 blocks of 16 that are 3/16 full).
    x is read through explicit strides (sx_*, in elements, for dims n, h, w, c) and cast to the
    weight's dtype in registers, so a stem can read the user's NCHW fp32 input directly: the layout
    change and the fp16 cast cost no kernel of their own.
    K order: (kh, kw, c) with pack_conv_weight's [OC, KH, KW, C] weights when channels are the
    innermost dim of x (NHWC); with CHANNELS_OUTER, (c, kh, kw) with PyTorch's [OC, C, KH, KW]
    weights, so that neighbouring K lanes read neighbouring pixels of an NCHW input instead of
    addresses a whole channel plane apart.
    """
    n, ih0, iw0 = window_origin(offs_m, N, OH, OW, stride_h, stride_w, pad_h, pad_w)
    x_off = n * sx_n + ih0 * sx_h + iw0 * sx_w + group * C_PER_GROUP * sx_c
    rn = offs_n % OC_PER_GROUP
    K_TOTAL = KH * KW * C_PER_GROUP
    w_off = (group * OC_PER_GROUP + rn) * K_TOTAL
    rk = tl.arange(0, BLOCK_K)
    acc = zero_acc(x_ptr, BLOCK_M, BLOCK_N)
    for k0 in range(0, K_TOTAL, BLOCK_K):
        k = k0 + rk
        if CHANNELS_OUTER:
            c = k // (KH * KW)
            tap = k - c * (KH * KW)
        else:
            tap = k // C_PER_GROUP
            c = k - tap * C_PER_GROUP
        kh = tap // KW
        kw = tap - kh * KW
        ih = ih0[:, None] + (kh * dil_h)[None, :]
        iw = iw0[:, None] + (kw * dil_w)[None, :]
        k_ok = k < K_TOTAL
        mask = k_ok[None, :] & (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
        a_col = (kh * dil_h) * sx_h + (kw * dil_w) * sx_w + c * sx_c
        a = tl.load(x_ptr + x_off[:, None] + a_col[None, :], mask=mask, other=0)
        # The weight row is laid out in exactly this K order: a plain K offset.
        b = tl.load(w_ptr + w_off[None, :] + k[:, None], mask=k_ok[:, None], other=0)
        a = a.to(b.dtype)
        acc = dot_acc(a, b, acc, INPUT_PRECISION)
    return acc


@triton.jit
def conv2d_nhwc_row_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, stride_h, stride_w, OC, offs_m, offs_n,
                         KH: tl.constexpr, ROW: tl.constexpr, ROW_K: tl.constexpr,
                         BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Accumulator [BLOCK_M, BLOCK_N] of a few-channel conv over an already padded NHWC x.

    In NHWC a window row (KW neighbouring pixels x C channels, ROW = KW*C values) is contiguous,
    so with the padding applied beforehand (`pad_nhwc`, which also rounds the channels up to 4 or
    8) each filter row kh is one contiguous load per output pixel: K is walked one row per step,
    ROW_K (ROW rounded up to a power of two) wide. That replaces the small-C tile's per-element
    gather (index math, four bound checks per value), which made the RGB stem gather-bound.
    H200, b256 stem, conv alone: 1281 -> 686 us fp16, 1193 -> 574 us int8, measured with the tail
    zeroed by a select after an unmasked load (no tail handling at all: 627 us fp16). This masked
    form was timed through conv2d_nhwc only: 794 us with pad_nhwc (from NHWC fp16) and the
    per-call weight packing, against cuDNN's 556 us.
    w is pack_conv_weight_rows' [OC, KH, ROW_K]. Out-of-range pixels/channels wrap: the caller
    masks its store.
    """
    rm = offs_m % (N * OH * OW)
    ow = rm % OW
    t = rm // OW
    x_off = ((t // OH * H + (t % OH) * stride_h) * W + ow * stride_w) * C
    rk = tl.arange(0, ROW_K)
    w_off = (offs_n % OC) * (KH * ROW_K)
    acc = zero_acc(x_ptr, BLOCK_M, BLOCK_N)
    for kh in range(KH):
        # The mask stops the row at ROW: past it lie the next pixel's values (an inf there
        # times a zero weight would be a NaN) or the end of the tensor.
        a = tl.load(x_ptr + x_off[:, None] + kh * W * C + rk[None, :], mask=rk[None, :] < ROW, other=0)
        b = tl.load(w_ptr + w_off[None, :] + kh * ROW_K + rk[:, None])
        acc = dot_acc(a, b, acc, INPUT_PRECISION)
    return acc


@triton.jit
def depthwise_conv2d_nhwc_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w, dil_h, dil_w,
                               offs_m, offs_c, KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr,
                               BLOCK_C: tl.constexpr):
    """Depthwise conv (groups == C == OC, multiplier 1): fp32 [BLOCK_M pixels, BLOCK_C channels].

    w is [KH, KW, C] contiguous (see pack_depthwise_weight), so each tap reads one contiguous channel
    vector. No tensor cores: a per-tap multiply-add in fp32 (exact for int8 inputs, since
    KH*KW*127*127 < 2**24). Out-of-range pixels/channels wrap: the caller masks its store.
    """
    x_off, ih0, iw0 = nhwc_window_origin(offs_m, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w)
    rc = offs_c % C
    acc = tl.zeros((BLOCK_M, BLOCK_C), dtype=tl.float32)
    for kh in tl.static_range(KH):
        for kw in tl.static_range(KW):
            ih = ih0 + kh * dil_h
            iw = iw0 + kw * dil_w
            in_img = (ih >= 0) & (ih < H) & (iw >= 0) & (iw < W)
            a_row = x_off + ((kh * dil_h) * W + kw * dil_w) * C
            x = tl.load(x_ptr + a_row[:, None] + rc[None, :], mask=in_img[:, None], other=0)
            w = tl.load(w_ptr + (kh * KW + kw) * C + rc)
            acc += x.to(tl.float32) * w.to(tl.float32)[None, :]
    return acc


@triton.jit
def conv2d_nhwc_store_tile(tile, group, x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC, stride_h,
                           stride_w, pad_h, pad_w, dil_h, dil_w, C_PER_GROUP, OC_PER_GROUP,
                           KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                           BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                           SMALL_C: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Output tile number `tile` (grouped order) of conv group `group`, plus bias, stored."""
    M = N * OH * OW
    pid_m, pid_n = grouped_pid(tile, M, OC_PER_GROUP, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if SMALL_C:
        acc = conv2d_nhwc_small_c_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, OC, stride_h, stride_w, pad_h, pad_w,
                                       dil_h, dil_w, group, C_PER_GROUP, OC_PER_GROUP, offs_m, offs_n,
                                       KH, KW, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION,
                                       H * W * C, W * C, C, 1, False)
    else:
        acc = conv2d_nhwc_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, OC, stride_h, stride_w, pad_h, pad_w,
                               dil_h, dil_w, group, C_PER_GROUP, OC_PER_GROUP, offs_m, offs_n,
                               KH, KW, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION)
    oc = group * OC_PER_GROUP + offs_n
    n_ok = offs_n < OC_PER_GROUP
    if HAS_BIAS:
        acc += tl.load(bias_ptr + oc, mask=n_ok, other=0).to(acc.dtype)[None, :]
    mask = (offs_m[:, None] < M) & n_ok[None, :]
    tl.store(y_ptr + offs_m[:, None] * OC + oc[None, :], cast_for_store(acc, y_ptr), mask=mask)


@triton.jit
def conv2d_nhwc_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                       C: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, OC: tl.constexpr, stride_h: tl.constexpr,
                       stride_w: tl.constexpr, pad_h: tl.constexpr, pad_w: tl.constexpr, dil_h: tl.constexpr,
                       dil_w: tl.constexpr, C_PER_GROUP: tl.constexpr, OC_PER_GROUP: tl.constexpr,
                       KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                       BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                       SMALL_C: tl.constexpr, HAS_BIAS: tl.constexpr, PERSISTENT: tl.constexpr):
    """Standalone conv: grid = (tiles of [N*OH*OW, OC_PER_GROUP] or a persistent grid, groups).
    The geometry is compile-time, as in a generated kernel: the tile's masks fold away where
    they cannot be false (what an engine runs is what this measures)."""
    group = tl.program_id(1)
    if PERSISTENT:
        tiles = tl.cdiv(N * OH * OW, BLOCK_M) * tl.cdiv(OC_PER_GROUP, BLOCK_N)
        for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=True):
            conv2d_nhwc_store_tile(tile, group, x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC, stride_h,
                                   stride_w, pad_h, pad_w, dil_h, dil_w, C_PER_GROUP, OC_PER_GROUP, KH, KW,
                                   BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, INPUT_PRECISION, SMALL_C, HAS_BIAS)
    else:
        conv2d_nhwc_store_tile(tl.program_id(0), group, x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC,
                               stride_h, stride_w, pad_h, pad_w, dil_h, dil_w, C_PER_GROUP, OC_PER_GROUP, KH, KW,
                               BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, INPUT_PRECISION, SMALL_C, HAS_BIAS)


@triton.jit
def conv2d_nhwc_rows_store_tile(tile, x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC, stride_h, stride_w,
                                KH: tl.constexpr, ROW: tl.constexpr, ROW_K: tl.constexpr, BLOCK_M: tl.constexpr,
                                BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                                HAS_BIAS: tl.constexpr):
    """Row-tile output tile number `tile` (grouped order), plus bias, stored."""
    M = N * OH * OW
    pid_m, pid_n = grouped_pid(tile, M, OC, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = conv2d_nhwc_row_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, stride_h, stride_w, OC, offs_m, offs_n,
                               KH, ROW, ROW_K, BLOCK_M, BLOCK_N, INPUT_PRECISION)
    n_ok = offs_n < OC
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_n, mask=n_ok, other=0).to(acc.dtype)[None, :]
    mask = (offs_m[:, None] < M) & n_ok[None, :]
    tl.store(y_ptr + offs_m[:, None] * OC + offs_n[None, :], cast_for_store(acc, y_ptr), mask=mask)


@triton.jit
def conv2d_nhwc_rows_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N: tl.constexpr, H: tl.constexpr, W: tl.constexpr,
                            C: tl.constexpr, OH: tl.constexpr, OW: tl.constexpr, OC: tl.constexpr,
                            stride_h: tl.constexpr, stride_w: tl.constexpr,
                            KH: tl.constexpr, ROW: tl.constexpr, ROW_K: tl.constexpr, BLOCK_M: tl.constexpr,
                            BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                            HAS_BIAS: tl.constexpr, PERSISTENT: tl.constexpr):
    """Standalone row-tile conv (x padded NHWC, w packed); grid = tiles of [N*OH*OW, OC], or (PERSISTENT)
    fewer programs looping over them, so that one tile's 7-step K loop overlaps the last one's store."""
    if PERSISTENT:
        tiles = tl.cdiv(N * OH * OW, BLOCK_M) * tl.cdiv(OC, BLOCK_N)
        for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=True):
            conv2d_nhwc_rows_store_tile(tile, x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC, stride_h,
                                        stride_w, KH, ROW, ROW_K, BLOCK_M, BLOCK_N, GROUP_M, INPUT_PRECISION,
                                        HAS_BIAS)
    else:
        conv2d_nhwc_rows_store_tile(tl.program_id(0), x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, OC,
                                    stride_h, stride_w, KH, ROW, ROW_K, BLOCK_M, BLOCK_N, GROUP_M,
                                    INPUT_PRECISION, HAS_BIAS)


@triton.jit
def depthwise_conv2d_nhwc_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, stride_h, stride_w,
                                 pad_h, pad_w, dil_h, dil_w, KH: tl.constexpr, KW: tl.constexpr,
                                 BLOCK_M: tl.constexpr, BLOCK_C: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Standalone depthwise conv: grid = (cdiv(N*OH*OW, BLOCK_M), cdiv(C, BLOCK_C))."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_c = tl.program_id(1) * BLOCK_C + tl.arange(0, BLOCK_C)
    acc = depthwise_conv2d_nhwc_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w,
                                     dil_h, dil_w, offs_m, offs_c, KH, KW, BLOCK_M, BLOCK_C)
    c_ok = offs_c < C
    if HAS_BIAS:
        acc += tl.load(bias_ptr + offs_c, mask=c_ok, other=0).to(tl.float32)[None, :]
    mask = (offs_m[:, None] < N * OH * OW) & c_ok[None, :]
    tl.store(y_ptr + offs_m[:, None] * C + offs_c[None, :], cast_for_store(acc, y_ptr), mask=mask)


def _pointwise_conv(x, w_packed, bias, y, config, input_precision):
    """1x1 conv through the matmul template: x NHWC as [N*H*W, C], w packed [OC, 1, 1, C] K-major."""
    n, c, h, w = x.shape
    oc = w_packed.shape[0]
    out = matmul(x.permute(0, 2, 3, 1).reshape(n * h * w, c), w_packed.reshape(oc, c), b_k_major=True,
                 out_dtype=y.dtype, config=config, input_precision=input_precision)
    if bias is not None:
        out += bias.to(out.dtype)
    return out.view(n, h, w, oc).permute(0, 3, 1, 2)


def _row_conv(x, w, bias, has_bias: bool, y, stride, padding, config, input_precision):
    """A few-channel conv as pad_nhwc (padding, channels up to 4 or 8) + the row tile.
    w is PyTorch's [OC, C, KH, KW] (the standalone launcher packs it per call)."""
    N, C, H, W = x.shape
    OC, _, KH, KW = w.shape
    _, _, OH, OW = y.shape
    cp = row_channels(C)
    rk = row_k(KW, cp, x.dtype)
    xp = pad_nhwc(x, padding, cp)
    M = N * OH * OW
    cfg = config or row_tile_config(x.dtype)
    grid = (persistent_grid(cdiv(M, cfg.BLOCK_M) * cdiv(OC, cfg.BLOCK_N), cfg.PERSISTENT),)
    conv2d_nhwc_rows_kernel[grid](xp, pack_conv_weight_rows(w, cp, rk), bias, y, N, xp.shape[2], xp.shape[3], cp,
                                  OH, OW, OC, stride[0], stride[1], KH=KH, ROW=KW * cp, ROW_K=rk,
                                  BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N, GROUP_M=cfg.GROUP_M,
                                  INPUT_PRECISION=input_precision, HAS_BIAS=has_bias,
                                  PERSISTENT=cfg.PERSISTENT > 0,
                                  num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y


# ----------------------------------------------------------------------------------------------
# Configs


def use_small_c_tile(c_per_group: int, block_k: int) -> bool:
    """Pick conv2d_nhwc_small_c_tile over conv2d_nhwc_tile: when a channel block would be <= half full."""
    return 2 * c_per_group <= block_k


def heuristic_config(M: int, oc_per_group: int, c_per_group: int, kh: int, kw: int, dtype,
                     depthwise: bool = False, out_bytes: int = 2) -> LaunchConfig:
    """Default config of the implicit-GEMM tiles (1x1 stride-1 convs are GEMMs: matmul's heuristic).

    M = N*OH*OW. On the GPU: the winners of `trident bench sweep` over ResNet-50's convs at batch
    256 on an H200 (docs/performance.md, "Convolutions"), re-timed for 16-bit inputs once
    the tile's masks folded away and the tile went persistent (`_fp16_conv_config`). In the
    interpreter: few, big programs (cheap there).
    out_bytes: the widest output element; a 4-byte output's epilogue tile rules out 128x256.
    """
    min_k = min_block_k(dtype.itemsize)
    if is_interpreter():
        if depthwise:
            return tile_config(interpreter_block(M), interpreter_block(oc_per_group), 16, 8, 4, 1)
        k = c_per_group if c_per_group >= 16 else kh * kw * c_per_group  # what one block must cover
        return tile_config(interpreter_block(M), interpreter_block(oc_per_group),
                          interpreter_block(k, lo=min_k), 8, 4, 1)
    if depthwise:
        # Bandwidth-bound: 64 contiguous channels (128 B at fp16) per pixel row, 64 pixels; a
        # channel block that does not divide C leaves part of its last block idle, so C = 96
        # (ConvNeXt-T's first stage) takes 32 channels and 128 pixels: 99.5 us against 129.4 on
        # its 7x7 at b32 (H200, cuDNN 90.8); C = 192-768 measured level or within 10% either way.
        # At 7x7 in engines (ConvNeXt-T at b32, timed by the tuner's fast level on the H200, cold
        # L2) shorter pixel blocks won: 32 x 64 at C = 192, 384, 768 (41.3, 24.9, 14.5 us against 50.5, 30.8, 17.9 on
        # 64 x 64), 64 x 32 at C = 96 (73.6 against 79.1 on 128 x 32).
        block_c = max(16, min(64, next_pow2(oc_per_group)))
        wide_window = kh * kw >= 49
        if oc_per_group % block_c and oc_per_group % 32 == 0:
            return tile_config(64 if wide_window else 128, 32, 16, 8, 4, 2)
        return tile_config(32 if wide_window and block_c == 64 else 64, block_c, 16, 8, 4, 2)
    elem = dtype.itemsize
    int8 = elem == 1
    bk_full = {1: 128, 2: 64}.get(elem, 32)  # 128 bytes of K per row per stage
    # Channel-walking tile: a K block should not overhang C_PER_GROUP (zero-filled MMA work).
    bk = max(min_k, min(bk_full, next_pow2(c_per_group)))
    if use_small_c_tile(c_per_group, bk):
        # The stem: K walked flat, a gather per element. Tall tiles amortize the gather's index
        # math over more rows: ResNet-50's 7x7/2 stem at b256 in the engine, 256x64 vs the next
        # best, 1062 vs 1397 us (fp16, fused fp32 NCHW read) and 623 vs 985 us (int8). Small
        # batches keep 64-row tiles, so that there are enough of them for the SMs.
        if cdiv(M, 256) < NUM_SMS_H200:
            return tile_config(64, 64, 32, 8, 4, 3)
        return tile_config(256, 64, 32, 8, 4, 3)
    if elem == 4 and fp32_on_tensor_cores(dtype, "conv"):
        # 3xTF32 (or TF32) dots: 128x64 tiles of 32-deep K steps on one warpgroup, 3 stages, were the
        # fastest of four tiles on three of ResNet-50's four 3x3 convs at b32 and within 5% on the
        # fourth (H100, do_bench; 0.119-0.193 ms against cuDNN's true fp32 0.159-0.361 and 0.143-0.347
        # for 128x128 of 16-deep steps on 8 warps: docs/performance.md, "FP32"). Small problems take
        # 64-row tiles, so that more of them fill the SMs.
        return tile_config(128 if M >= 8192 else 64, max(16, min(64, next_pow2(oc_per_group))), bk, 8, 4, 3)
    if M < 8192:  # small batches: more, smaller tiles to fill the SMs
        if elem == 4:  # FMA-bound true fp32: see common.FP32_TILE_LADDER
            return tile_config(*fp32_tile(M, oc_per_group), bk, 8, 4, 4)
        return tile_config(64, max(16, min(128, next_pow2(oc_per_group))), bk, 8, 4, 4)
    if elem == 4:
        return _fp32_conv_config(oc_per_group, kh * kw, bk)
    if int8:
        if oc_per_group <= 64:
            return tile_config(256, max(16, next_pow2(oc_per_group)), min(bk, 64), 8, 4, 3)
        return tile_config(128, 128, max(min_k, bk_full // 2) if kh * kw == 1 else bk, 8, 4, 3)
    return _fp16_conv_config(oc_per_group, c_per_group, kh * kw, bk, wide=oc_per_group >= 256 and out_bytes <= 2)


def _fp32_conv_config(oc_per_group: int, taps: int, bk: int) -> LaunchConfig:
    """True-fp32 tiles at large M: a 16-deep K step (FMA-bound dots gain nothing from deeper ones).
    ResNet-50 at b256 on an H200 (docs/performance.md, "FP32"; ms, against the 128x128x32 tile on
    8 warps before): strided 1x1s on 128x128, 1.85 against 2.48; 3x3s up to 256 channels on 256x64,
    2.13 against 2.66. 512-channel 3x3s keep the old tile (2.65 against 2.70-2.75)."""
    bn = max(16, min(128, next_pow2(oc_per_group)))
    if taps == 1:
        return tile_config(128, bn, 16, 8, 4, 3)
    if oc_per_group <= 256:
        return tile_config(256, min(bn, 64), 16, 8, 4, 3)
    return tile_config(128, bn, bk, 8, 8 if bn == 128 else 4, 3)


def _fp16_conv_config(oc_per_group: int, c_per_group: int, taps: int, bk: int, wide: bool) -> LaunchConfig:
    """16-bit tiles at large M, persistent: one tile's loads then overlap the last one's epilogue,
    which pays most where the K loop is short. ResNet-50 at b256 on an H200 (docs/performance.md,
    "Convolutions"; us, against the best one-program-per-tile config):
    strided 1x1 256->512 124 against 149, 3x3 on 128 channels 104 against 109, 64 channels 149 against 156.
    wide: a 128x256 tile on two warpgroups (256+ output channels, a 2-byte output)."""
    k_steps = taps * cdiv(c_per_group, bk)
    if oc_per_group <= 64:
        cfg = tile_config(128, max(16, next_pow2(oc_per_group)), bk, 8, 4, 3, PERSISTENT=2)
    elif taps > 1 and c_per_group >= 512:  # 3x3 on 512 channels: 98 us, against 103 for 128x256
        cfg = tile_config(128, 128, bk, 8, 4, 4, PERSISTENT=1)
    elif wide:
        cfg = tile_config(128, 256, bk, 8, 8, 3, PERSISTENT=1)
    else:
        cfg = tile_config(128, 128, bk, 8, 4, 3, PERSISTENT=2)
    if not persistent_pipeline_fits(cfg.num_stages, k_steps):
        cfg = cfg.replace(PERSISTENT=0)
    return cfg


def row_tile_config(dtype) -> LaunchConfig:
    """The row tile's config: its grid over ResNet-50's stem at b256 on an H200 (64/128/256 rows x
    4/8 warps x 2-4 stages): 128x64 for int8 (569 us); 256-row tiles lose (916+ us). For fp16,
    persistent: its K loop is 7 window rows, too short to hide a tile's store, so 4 programs per
    SM loop over the tiles; 128x64 tiles, conv2d_nhwc with the pad: 631 us -> 523 us (cuDNN 551).
    BLOCK_K is unused (the tile's K block is a window row)."""
    if is_interpreter():
        return tile_config(128, 64, 32, 8, 4, 1)
    return tile_config(128, 64, 32, 8, 4, 3) if is_int8(dtype) else tile_config(128, 64, 32, 8, 4, 3, PERSISTENT=4)


def row_tile_candidates(dtype) -> list[LaunchConfig]:
    """A short list for timing the row tile: its config first, then the grid's runners-up."""
    return list(dict.fromkeys([row_tile_config(dtype), tile_config(128, 64, 32, 8, 4, 3, PERSISTENT=3),
                               tile_config(128, 64, 32, 8, 4, 3), tile_config(64, 64, 32, 8, 4, 3)]))


def candidate_configs(M: int, oc_per_group: int, c_per_group: int, kh: int, kw: int, dtype) -> list[LaunchConfig]:
    """A short list for autotuning: the heuristic's pick first, then the sweep's frequent winners."""
    h = heuristic_config(M, oc_per_group, c_per_group, kh, kw, dtype)
    bk, bn, min_k = h.BLOCK_K, min(h.BLOCK_N, 128), min_block_k(dtype.itemsize)
    other_k = max(min_k, bk // 2) if bk > min_k else min(bk * 2, max(min_k, next_pow2(c_per_group)))
    if fp32_on_tensor_cores(dtype, "conv"):
        wide = max(16, min(128, next_pow2(oc_per_group)))
        return list(dict.fromkeys([h, tile_config(128, wide, bk, 8, 8, 3), tile_config(64, wide, bk, 8, 4, 3),
                                   tile_config(128, bn, bk, 8, 4, 3), tile_config(64, bn, bk, 8, 4, 3),
                                   tile_config(128, wide, 16, 8, 8, 4)]))
    if dtype.itemsize == 4:  # the fp32 sweeps' runners-up (batch 1 and 256)
        return list(dict.fromkeys([h, tile_config(32, 32, bk, 8, 4, 4), tile_config(16, 64, bk, 8, 4, 4),
                                   tile_config(16, 32, bk, 8, 4, 3), tile_config(32, 64, bk, 8, 4, 3),
                                   tile_config(64, 64, 16, 8, 2, 4), tile_config(128, bn, 16, 8, 4, 3),
                                   tile_config(256, min(bn, 64), 16, 8, 4, 3), tile_config(128, bn, bk, 8, 4, 3)]))
    cands = [h, tile_config(128, bn, bk, 8, 4, 3), tile_config(128, bn, bk, 8, 4, 4)]
    if not is_int8(dtype):
        cands += [tile_config(128, bn, bk, 8, 4, 3, PERSISTENT=2),
                  tile_config(128, bn, bk, 8, 4, 4, PERSISTENT=1)]
        if oc_per_group >= 256:
            cands += [tile_config(128, 256, bk, 8, 8, 3, PERSISTENT=1), tile_config(128, 256, bk, 8, 8, 3)]
    cands += [tile_config(128, bn, other_k, 8, 4, 3), tile_config(128, bn, bk, 8, 8, 3), tile_config(64, bn, bk, 8, 4, 3),
              tile_config(128, bn, other_k, 8, 4, 4), tile_config(256, min(bn, 64), bk, 8, 4, 3)]
    if not is_int8(dtype):  # int8 with an int32 output: a 256x128 epilogue does not fit shared memory
        cands.append(tile_config(256, bn, bk, 8, 8, 3))
    return drop_unfit_persistent(cands, lambda c: kh * kw * cdiv(c_per_group, c.BLOCK_K))


# ----------------------------------------------------------------------------------------------
# Weight packing and launchers


def pack_conv_weight(w: torch.Tensor, groups: int = 1) -> torch.Tensor:
    """PyTorch [OC, C/groups, KH, KW] -> contiguous [OC, KH, KW, C/groups] (K-major rows, K = kh, kw, c).

    Group g's output channels are rows g*OC/groups ... already, so the layout does not depend on
    groups; the argument only validates the shape.
    """
    if w.dim() != 4 or w.shape[0] % groups:
        raise ValueError(f"conv weight {tuple(w.shape)} does not split into {groups} groups")
    return w.permute(0, 2, 3, 1).contiguous()


def row_channels(c: int) -> int:
    """The channels pad_nhwc gives a row-tile conv's input: 4 or 8 (aligned pixel rows)."""
    return 4 if c <= 4 else 8


def uses_row_tile(c: int, kw: int, groups: int, dilation) -> bool:
    """conv2d_nhwc_row_tile (after pad_nhwc) suits few-channel, ungrouped, undilated convs whose
    window row fits one K block: the RGB stem (7 x 4 channels -> 32-wide rows)."""
    return groups == 1 and c <= 8 and tuple(pair(dilation)) == (1, 1) and kw * row_channels(c) <= 64


def row_k(kw: int, c_padded: int, dtype) -> int:
    """The K block of one window row: KW * C rounded up to a power of two (>= the MMA's minimum)."""
    return max(min_block_k(dtype.itemsize), next_pow2(kw * c_padded))


def pack_conv_weight_rows(w: torch.Tensor, c_padded: int, k_block: int) -> torch.Tensor:
    """PyTorch [OC, C, KH, KW] -> contiguous [OC, KH, k_block]: row kh holds (kw, c) in NHWC order
    with c zero-padded to c_padded, then zeros up to k_block (what conv2d_nhwc_row_tile reads)."""
    oc, c, kh, kw = w.shape
    if c > c_padded or kw * c_padded > k_block:
        raise ValueError(f"pack_conv_weight_rows: weight {tuple(w.shape)} does not fit {c_padded} channels "
                         f"x {kw} taps in {k_block}")
    out = w.new_zeros((oc, kh, k_block))
    rows = torch.nn.functional.pad(w.permute(0, 2, 3, 1), (0, c_padded - c))  # [OC, KH, KW, Cp]
    out[:, :, :kw * c_padded] = rows.reshape(oc, kh, kw * c_padded)
    return out


def pack_depthwise_weight(w: torch.Tensor) -> torch.Tensor:
    """PyTorch depthwise weight [C, 1, KH, KW] -> contiguous [KH, KW, C]."""
    if w.dim() != 4 or w.shape[1] != 1:
        raise ValueError(f"depthwise weight must be [C, 1, KH, KW], got {tuple(w.shape)}")
    return w[:, 0].permute(1, 2, 0).contiguous()


def conv_out_size(size: int, k: int, stride: int, pad_lo: int, pad_hi: int, dil: int) -> int:
    return (size + pad_lo + pad_hi - dil * (k - 1) - 1) // stride + 1


def is_depthwise(c: int, oc: int, groups: int) -> bool:
    return groups > 1 and groups == c == oc


def is_pointwise_gemm(kh: int, kw: int, stride, padding, groups: int) -> bool:
    """A 1x1, stride-1, unpadded conv over NHWC is exactly a GEMM: [N*H*W, C] @ [C, OC].

    The plain matmul tile runs it faster than the implicit-GEMM tile (no per-tap window math)."""
    return kh == kw == 1 and tuple(pair(stride)) == (1, 1) and not any(normalize_padding(padding)) \
        and groups == 1


def conv2d_nhwc(x: torch.Tensor, w: torch.Tensor, bias: torch.Tensor | None = None, stride=(1, 1),
                padding=(0, 0, 0, 0), dilation=(1, 1), groups: int = 1, config: LaunchConfig | None = None,
                input_precision: str | None = None, prepacked: bool = False, out_dtype=None) -> torch.Tensor:
    """Conv2d of logical-NCHW x (any memory format) with PyTorch-layout w [OC, C/groups, KH, KW].

    padding is (top, left, bottom, right) (or int / (h, w)). Returns logical NCHW in channels_last
    memory format; int8 inputs give int32 (bias, if any, must then be int32).
    prepacked: w is already pack_conv_weight's [OC, KH, KW, C/groups] (or, for depthwise,
    pack_depthwise_weight's [KH, KW, C]), as an engine stores it; skips the per-call reformat.
    out_dtype: y's dtype (default x's, int32 for int8); int8 output from int8 saturates the accumulator.
    input_precision: "ieee" | "tf32x3" | "tf32" for fp32 inputs; default: common.dot_precision(dtype,
    "conv"), or "gemm" for a 1x1 conv (it runs as a GEMM).
    """
    if x.dim() != 4 or w.dim() not in ((3, 4) if prepacked else (4,)) or (prepacked and not w.is_contiguous()):
        raise ValueError(f"conv2d_nhwc: bad ranks x {tuple(x.shape)}, w {tuple(w.shape)} (prepacked={prepacked})")
    N, C, H, W = x.shape
    if not prepacked:
        OC, cpg, KH, KW = w.shape
    elif w.dim() == 3:  # pack_depthwise_weight's [KH, KW, C]
        (KH, KW, OC), cpg = w.shape, 1
    else:
        OC, KH, KW, cpg = w.shape
    if prepacked and is_depthwise(C, OC, groups) != (w.dim() == 3):
        raise ValueError("prepacked depthwise weights must come from pack_depthwise_weight (and only those)")
    if C % groups or OC % groups or cpg != C // groups:
        raise ValueError(f"x {tuple(x.shape)}, w {tuple(w.shape)} and groups={groups} do not match")
    (sh, sw), (dh, dw) = pair(stride), pair(dilation)
    pt, pl, pb, pr = normalize_padding(padding)
    OH, OW = conv_out_size(H, KH, sh, pt, pb, dh), conv_out_size(W, KW, sw, pl, pr, dw)
    if OH <= 0 or OW <= 0:
        raise ValueError(f"conv output would be {OH}x{OW}")
    if out_dtype is None:
        out_dtype = torch.int32 if is_int8(x.dtype) else x.dtype
    if out_dtype == torch.int8 and not is_int8(x.dtype):
        raise ValueError("conv2d_nhwc: int8 output needs int8 inputs (requantize float outputs yourself)")
    x = x.contiguous(memory_format=torch.channels_last)  # storage is now NHWC contiguous
    y = torch.empty((N, OC, OH, OW), device=x.device, dtype=out_dtype, memory_format=torch.channels_last)
    M = N * OH * OW
    if M == 0 or OC == 0:
        return y
    has_bias = bias is not None
    bias_arg = bias.contiguous() if has_bias else y  # dummy pointer, never read when HAS_BIAS is False
    if is_depthwise(C, OC, groups):
        if streams_rows(KH, KW, sh, dh, OW) and (config is None or config.get("ROWS") is not None):
            return depthwise_rows(x, w if prepacked else pack_rows_weight(w), bias, y, (pt, pl), sw, dw, config)
        cfg = config or heuristic_config(M, C, 1, KH, KW, x.dtype, depthwise=True)
        grid = (cdiv(M, cfg.BLOCK_M), cdiv(C, cfg.BLOCK_N))
        w = w if prepacked else pack_depthwise_weight(w)
        depthwise_conv2d_nhwc_kernel[grid](x, w, bias_arg, y, N, H, W, C, OH, OW,
                                           sh, sw, pt, pl, dh, dw, KH=KH, KW=KW, BLOCK_M=cfg.BLOCK_M,
                                           BLOCK_C=cfg.BLOCK_N, HAS_BIAS=has_bias,
                                           num_warps=cfg.num_warps, num_stages=cfg.num_stages)
        return y

    if is_pointwise_gemm(KH, KW, stride, padding, groups) and (dh, dw) == (1, 1):
        return _pointwise_conv(x, w if prepacked else pack_conv_weight(w, groups), bias, y, config,
                               input_precision or dot_precision(x.dtype, "gemm"))  # (it runs as a GEMM)
    input_precision = input_precision or dot_precision(x.dtype, "conv")

    if uses_row_tile(cpg, KW, groups, (dh, dw)):
        # prepacked weights are pack_conv_weight's [OC, KH, KW, C]: back to [OC, C, KH, KW]
        return _row_conv(x, w.permute(0, 3, 1, 2) if prepacked else w, bias_arg, has_bias, y, (sh, sw),
                         (pt, pl, pb, pr), config, input_precision)

    ocpg = OC // groups
    cfg = config or heuristic_config(M, ocpg, cpg, KH, KW, x.dtype)
    if cfg.BLOCK_M < 16 or cfg.BLOCK_N < 16 or cfg.BLOCK_K < min_block_k(x.dtype.itemsize):
        raise ValueError(f"{cfg}: tl.dot needs blocks >= 16 (BLOCK_K >= 32 for int8)")
    grid = (persistent_grid(cdiv(M, cfg.BLOCK_M) * cdiv(ocpg, cfg.BLOCK_N), cfg.PERSISTENT), groups)
    w = w if prepacked else pack_conv_weight(w, groups)
    conv2d_nhwc_kernel[grid](x, w, bias_arg, y, N, H, W, C, OH, OW, OC, sh, sw, pt, pl,
                             dh, dw, cpg, ocpg, KH=KH, KW=KW, BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N,
                             BLOCK_K=cfg.BLOCK_K, GROUP_M=cfg.GROUP_M, INPUT_PRECISION=input_precision,
                             SMALL_C=use_small_c_tile(cpg, cfg.BLOCK_K), HAS_BIAS=has_bias,
                             PERSISTENT=cfg.PERSISTENT > 0, num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y
