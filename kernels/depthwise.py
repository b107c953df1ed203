"""Row-streaming depthwise conv (groups == C == OC, stride 1 and no dilation along H, KH <= 7).

The pixel tile of kernels/conv.py (`depthwise_conv2d_nhwc_tile`) loads its shifted input tile
again for each of the KH x KW taps: 49 loads per output at 7x7, bound by issue and L1 far under
the memory roof (docs/performance.md, "Depthwise 7x7"). Here a program owns a strip of
BLOCK_M output columns x BLOCK_N channels over ROWS output rows and walks the input rows top to
bottom: each input row is loaded once per kernel column (KW loads) and its taps go to every
output row it touches, held in a queue of partial rows in registers. When an input row is in,
the oldest output row is complete: the caller stores it (a generated kernel runs its epilogue
there). Stride and dilation along W are plain load offsets.

Layouts: x NHWC, w [KH, KW, C] contiguous (pack_weight).
"""
from __future__ import annotations

import torch

from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import cast_for_store, cdiv, is_interpreter, next_pow2

import triton
import triton.language as tl

MAX_KH = 7  # the queue has MAX_KH - 1 slots
UNROLLED_KW = tl.constexpr(3)  # windows up to this wide run their columns unrolled
MIN_WIDTH = 56  # the narrowest output row engines stream (streams_rows)


def streams_rows(kh: int, kw: int, stride_h: int, dil_h: int, out_width: int) -> bool:
    """Does a depthwise conv with this window run on the row-streaming kernel? The kernel takes any
    window up to MAX_KH rows with stride and dilation 1 along H; engines use it where it beat the
    pixel tile on the H200 (b32, fp16, heuristic configs): the 3x3 over rows of 56 pixels or more
    (56x56 C144: 50.3 us against 55.5, cuDNN 65.1; 112x112 C96: 97.8 against 104.4). Over narrower
    rows it was level or behind (28x28 C192: 16.3-21.9 against 17.1; 14x14 C384: 12.8-14.4 against
    12.3; 7x7 C960: 10.6 against 10.2). At 5x5 it was level or behind (28x28: 40.3 against 42.6;
    14x14: 27.6 against 23.0) and at 7x7 behind at every ConvNeXt-T size (111.9 against 98.6 us at
    56x56): each output still takes KH x KW fp32 multiply-adds, and its queue of KH partial rows
    leaves too few threads a program to hide them (docs/performance.md, "Depthwise 7x7")."""
    return (kh, kw) == (3, 3) and stride_h == 1 and dil_h == 1 and out_width >= MIN_WIDTH


@triton.jit
def _tap(w_row, kh: tl.constexpr, KW: tl.constexpr, C):
    """w[kh, kw, channels] as fp32, broadcast over the tile's columns (w_row points at [0, kw, rc])."""
    return tl.load(w_row + kh * KW * C).to(tl.float32)[None, :]


@triton.jit
def _column_taps(row, row_ok, iw, W, C, rc, w_row, done, n0, n1, n2, n3, n4, n5, KH: tl.constexpr,
                 KW: tl.constexpr, SKIP: tl.constexpr):
    """One kernel column: the input row's pixels at iw times that column's KH taps, added to the
    rows they belong to. Slot j holds the output row j + 1 below `done`: kernel row KH - 2 - j.
    (A Triton loop carries named tensors, not a list of them: hence one name per slot.)"""
    ok = row_ok & (iw >= 0) & (iw < W)
    x = tl.load(row + iw[:, None] * C + rc[None, :], mask=ok[:, None], other=0).to(tl.float32)
    if SKIP < 0:
        done += x * _tap(w_row, KH - 1, KW, C)
    if KH > 1 and SKIP <= 0:
        n0 += x * _tap(w_row, KH - 2, KW, C)
    if KH > 2 and SKIP <= 1:
        n1 += x * _tap(w_row, KH - 3, KW, C)
    if KH > 3 and SKIP <= 2:
        n2 += x * _tap(w_row, KH - 4, KW, C)
    if KH > 4 and SKIP <= 3:
        n3 += x * _tap(w_row, KH - 5, KW, C)
    if KH > 5 and SKIP <= 4:
        n4 += x * _tap(w_row, KH - 6, KW, C)
    if KH > 6 and SKIP <= 5:
        n5 += x * _tap(w_row, KH - 7, KW, C)
    return done, n0, n1, n2, n3, n4, n5


@triton.jit
def depthwise_row_step(x_ptr, w_ptr, n_img, ih, iw0, H, W, C, rc, q0, q1, q2, q3, q4, q5,
                       KH: tl.constexpr, KW: tl.constexpr, dil_w, SKIP: tl.constexpr):
    """Input row `ih` of image `n_img` through the window. Returns (done, q0..q5): `done` is the
    output row this input row completes, q0..q5 the partial rows after it, q0 the next to finish
    (slots past KH - 2 stay zero). SKIP: the queue is filling and rows before the program's first
    output row need no taps: skip `done` and the first SKIP slots (-1: a full step)."""
    done = q0
    n0 = q1
    n1 = q2
    n2 = q3
    n3 = q4
    n4 = q5
    n5 = tl.zeros_like(q0)
    ih_lanes = tl.zeros_like(iw0) + ih  # a vector: the interpreter cannot mask with a scalar & a vector
    row_ok = (ih_lanes >= 0) & (ih_lanes < H)
    row = x_ptr + (n_img * H + ih) * W * C
    if KW <= UNROLLED_KW:
        for kw in tl.static_range(KW):
            done, n0, n1, n2, n3, n4, n5 = _column_taps(row, row_ok, iw0 + kw * dil_w, W, C, rc, w_ptr + kw * C + rc,
                                                        done, n0, n1, n2, n3, n4, n5, KH, KW, SKIP)
    else:
        # Unrolled, a wide window's loads are all scheduled up front and the queue spills (ptxas,
        # sm_90: 255 registers and 184-1,400 bytes of stack at 7x7 against 197 and none).
        for kw in range(KW):
            done, n0, n1, n2, n3, n4, n5 = _column_taps(row, row_ok, iw0 + kw * dil_w, W, C, rc, w_ptr + kw * C + rc,
                                                        done, n0, n1, n2, n3, n4, n5, KH, KW, SKIP)
    return done, n0, n1, n2, n3, n4, n5


@triton.jit
def depthwise_rows_fill(x_ptr, w_ptr, n_img, oh0, pad_h, iw0, H, W, C, rc, KH: tl.constexpr,
                        KW: tl.constexpr, dil_w, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """The queue before output row oh0: the KH - 1 input rows above its last tap, each with only
    the taps of rows oh0 onward. Returns (q0..q5) for depthwise_row_step; the next input row is
    oh0 - pad_h + KH - 1."""
    q0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    q1 = q0
    q2 = q0
    q3 = q0
    q4 = q0
    q5 = q0
    for s in tl.static_range(KH - 1):
        _, q0, q1, q2, q3, q4, q5 = depthwise_row_step(x_ptr, w_ptr, n_img, oh0 - pad_h + s, iw0, H, W, C, rc,
                                                       q0, q1, q2, q3, q4, q5, KH, KW, dil_w, KH - 2 - s)
    return q0, q1, q2, q3, q4, q5


@triton.jit
def depthwise_rows_kernel(x_ptr, w_ptr, bias_ptr, y_ptr, N, H, W, C, OH, OW, stride_w, pad_h, pad_w, dil_w,
                          KH: tl.constexpr, KW: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                          ROWS: tl.constexpr, HAS_BIAS: tl.constexpr):
    """Standalone row-streaming depthwise conv: grid = (N * cdiv(OH, ROWS), cdiv(OW, BLOCK_M),
    cdiv(C, BLOCK_N)); the images go on the grid's first dim, the one without CUDA's 65,535 limit.
    A generated kernel has the same body with its epilogue at the store (compiler/codegen/
    kernels.py, _depthwise_rows_head)."""
    pid_r = tl.program_id(0)
    n_img = pid_r // tl.cdiv(OH, ROWS)
    oh0 = (pid_r % tl.cdiv(OH, ROWS)) * ROWS
    offs_w = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)
    rc = offs_n % C  # channels past C wrap into range; their lanes are never stored
    iw0 = offs_w * stride_w - pad_w
    c_ok = offs_n < C
    bias = tl.zeros((BLOCK_N,), dtype=tl.float32)
    if HAS_BIAS:
        bias = tl.load(bias_ptr + offs_n, mask=c_ok, other=0).to(tl.float32)
    q0, q1, q2, q3, q4, q5 = depthwise_rows_fill(x_ptr, w_ptr, n_img, oh0, pad_h, iw0, H, W, C, rc, KH, KW, dil_w,
                                                 BLOCK_M, BLOCK_N)
    for r in range(KH - 1, ROWS + KH - 1):
        done, q0, q1, q2, q3, q4, q5 = depthwise_row_step(x_ptr, w_ptr, n_img, oh0 - pad_h + r, iw0, H, W, C, rc,
                                                          q0, q1, q2, q3, q4, q5, KH, KW, dil_w, -1)
        oh = oh0 + r - (KH - 1)
        offs_m = (n_img * OH + oh) * OW + offs_w
        mask = ((offs_w < OW) & (tl.zeros_like(offs_w) + oh < OH))[:, None] & c_ok[None, :]
        tl.store(y_ptr + offs_m[:, None] * C + offs_n[None, :], cast_for_store(done + bias[None, :], y_ptr), mask=mask)


def pack_weight(w: torch.Tensor) -> torch.Tensor:
    """PyTorch's depthwise weight [C, 1, KH, KW] as the kernel reads it: [KH, KW, C], fp32 for
    float weights (each tap is read once per input row, and a 16-bit one would be converted each
    time: 37.8 against 41.3 us for a 3x3 at 56x56, C 144, b32 on the H200), int8 kept exact."""
    if w.dim() != 4 or w.shape[1] != 1:
        raise ValueError(f"depthwise weight must be [C, 1, KH, KW], got {tuple(w.shape)}")
    packed = w[:, 0].permute(1, 2, 0).contiguous()
    return packed if packed.dtype == torch.int8 else packed.float()


def heuristic_config(n: int, oh: int, ow: int, c: int) -> LaunchConfig:
    """BLOCK_M output columns x BLOCK_N channels over ROWS output rows, 16 outputs a thread (the
    queue of KH partial rows is then 48-112 registers).

    In the interpreter: big blocks (cheap there). On the GPU (H200, 3x3, b32, fp16, the kernel as
    it stands): 16 columns x 32 channels on one warp, 8 rows a program, was the best or level with
    the best of the candidates at every width it streams: 50.3 us at 56x56 C144 (the 32 x 32 block
    on 2 warps: 58.4; the pixel tile 55.5; cuDNN 65.1), 97.8 at 112x112 C96 (128.6; 104.4; 175.5),
    30.9 at 112x112 C32 (43.8; 35.4; 56.6)."""
    if is_interpreter():
        return LaunchConfig.of(4, 1, BLOCK_M=max(8, min(32, next_pow2(ow))), BLOCK_N=max(8, min(64, next_pow2(c))),
                               ROWS=max(1, min(16, next_pow2(oh))))
    block_m = max(8, min(16, next_pow2(ow)))
    block_n = max(16, min(512 // block_m, next_pow2(c)))
    warps = max(1, block_m * block_n // 512)
    return LaunchConfig.of(warps, 1, BLOCK_M=block_m, BLOCK_N=block_n, ROWS=max(1, min(8, next_pow2(oh))))


def candidate_configs(n: int, oh: int, ow: int, c: int) -> list[LaunchConfig]:
    """The heuristic's pick first, then the neighbours the H200 ranked next (all 16 outputs a thread)."""
    cands = [heuristic_config(n, oh, ow, c)]
    for bm, bn, warps, rows in ((8, 64, 1, 8), (32, 32, 2, 8), (32, 64, 4, 8), (32, 32, 2, 16), (64, 32, 4, 16)):
        if bn <= max(16, next_pow2(c)) and bm <= max(8, next_pow2(ow)):
            cfg = LaunchConfig.of(warps, 1, BLOCK_M=bm, BLOCK_N=bn, ROWS=min(rows, next_pow2(oh)))
            if cfg not in cands:
                cands.append(cfg)
    return cands


def depthwise_rows(x: torch.Tensor, w_packed: torch.Tensor, bias: torch.Tensor | None, y: torch.Tensor,
                   padding: tuple[int, int], stride_w: int, dil_w: int, config: LaunchConfig | None = None):
    """y = depthwise conv of x, both NHWC in memory (logical NCHW), w_packed from pack_weight
    (any [KH, KW, C] tensor works). padding: (top, left); the bottom and right follow from y."""
    N, C, H, W = x.shape
    _, _, OH, OW = y.shape
    KH, KW, _ = w_packed.shape
    if not 1 <= KH <= MAX_KH:
        raise ValueError(f"depthwise_rows: a window of {KH} rows; the kernel's queue holds at most {MAX_KH}")
    if not (x.is_contiguous(memory_format=torch.channels_last) and y.is_contiguous(memory_format=torch.channels_last)
            and w_packed.is_contiguous()):
        raise ValueError("depthwise_rows: x and y must be channels-last (NHWC) and w_packed contiguous")
    if y.numel() == 0:
        return y
    cfg = config or heuristic_config(N, OH, OW, C)
    grid = (N * cdiv(OH, cfg["ROWS"]), cdiv(OW, cfg["BLOCK_M"]), cdiv(C, cfg["BLOCK_N"]))
    depthwise_rows_kernel[grid](x, w_packed, bias if bias is not None else y, y, N, H, W, C, OH, OW, stride_w,
                                padding[0], padding[1], dil_w, KH=KH, KW=KW, BLOCK_M=cfg["BLOCK_M"],
                                BLOCK_N=cfg["BLOCK_N"], ROWS=cfg["ROWS"], HAS_BIAS=bias is not None,
                                num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return y
