"""Small helpers shared by the kernel templates: program-id ordering and launch arithmetic."""
from __future__ import annotations

import functools
import os

import torch

from trident.compiler import config as _config  # noqa: F401  (sets TRITON_INTERPRET before triton loads)
from trident.compiler.ir.launch import LaunchConfig

import triton
import triton.language as tl


@triton.jit
def grouped_pid(pid, M, N, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, GROUP_M: tl.constexpr):
    """Map a flat program id to (pid_m, pid_n) in GROUP_M-tall column-major super-rows.

    Programs that run together then share GROUP_M row blocks of A and a few column blocks of B,
    so both stay in L2 (Triton matmul tutorial, "L2 cache optimizations").
    """
    num_pid_m = tl.cdiv(M, BLOCK_M)
    num_pid_n = tl.cdiv(N, BLOCK_N)
    num_pid_in_group = GROUP_M * num_pid_n
    group_id = pid // num_pid_in_group
    first_pid_m = group_id * GROUP_M
    # The last group may be shorter than GROUP_M when num_pid_m is not a multiple of it.
    group_size_m = tl.minimum(num_pid_m - first_pid_m, GROUP_M)
    pid_m = first_pid_m + ((pid % num_pid_in_group) % group_size_m)
    pid_n = (pid % num_pid_in_group) // group_size_m
    return pid_m, pid_n


def persistent_grid(tiles: int, programs_per_sm: int) -> int:
    """Programs to launch for `tiles` output tiles: all of them, or a persistent k-per-SM grid."""
    if programs_per_sm <= 0:
        return tiles
    return max(1, min(tiles, programs_per_sm * num_sms()))


def persistent_pipeline_fits(num_stages: int, k_iters: int) -> bool:
    """A persistent (flattened) pipeline deeper than its K loop asks for twice the shared memory
    (256 KB seen on the H200 at K = 64): such configs are never tried."""
    return num_stages <= k_iters


def drop_unfit_persistent(cands: list, k_iters) -> list:
    """A candidate list without the persistent configs whose pipeline is deeper than their K loop
    (k_iters(config) -> K steps), deduplicated. The first (the heuristic's pick) always stays:
    its persistent short-K tiles were measured."""
    keep = cands[:1] + [c for c in cands[1:]
                        if not c.PERSISTENT or persistent_pipeline_fits(c.num_stages, k_iters(c))]
    return list(dict.fromkeys(keep))


# Of the H200's 227 KB of shared memory per block, what a tile's operand pipeline may take: the
# epilogue's layout change needs the rest.
PIPELINE_SMEM_BUDGET = 200 * 1024


def pipeline_smem_bytes(cfg, elem_bytes: int) -> int:
    """Shared memory of a tile config's operand pipeline: num_stages A and B tiles."""
    return cfg.num_stages * (cfg.BLOCK_M + cfg.BLOCK_N) * cfg.BLOCK_K * elem_bytes


# True-fp32 dots run on the FMA units (no tensor cores without TF32), where a tile gains little
# from its size and everything from keeping SMs busy: take the largest tile of this ladder that
# still gives FP32_MIN_PROGRAMS programs. From the fp32 sweep at batch 1 on an H200
# (docs/performance.md, "FP32"; 27 ResNet-50 conv and BERT b1 GEMM shapes): the
# best configs ran 64-128 programs; this rule, with BLOCK_K 32 on 4 warps and 4 stages, sums to
# 1.63 ms over the shapes against 1.46 for each shape's best and 4.11 for the 64- and 128-row
# tiles the heuristics had (cuDNN / cuBLAS in fp32: 1.16).
FP32_TILE_LADDER = ((64, 128), (64, 64), (32, 64), (32, 32), (16, 64), (16, 32))
FP32_MIN_PROGRAMS = 96


def fp32_tile(M: int, N: int) -> tuple[int, int]:
    """(BLOCK_M, BLOCK_N) of a true-fp32 tile over an M x N output (see FP32_TILE_LADDER)."""
    bm, bn = next(((bm, bn) for bm, bn in FP32_TILE_LADDER if cdiv(M, bm) * cdiv(N, bn) >= FP32_MIN_PROGRAMS),
                  FP32_TILE_LADDER[-1])
    return min(bm, max(16, next_pow2(M))), min(bn, max(16, next_pow2(N)))


@functools.lru_cache(maxsize=None)
def num_sms() -> int:
    """Streaming multiprocessors of the current GPU (H200's 132 where there is none)."""
    if not torch.cuda.is_available():
        return 132
    return torch.cuda.get_device_properties(torch.cuda.current_device()).multi_processor_count


def cdiv(a: int, b: int) -> int:
    """Ceiling division for Python ints (grid sizes)."""
    return -(-a // b)


def next_pow2(x: int) -> int:
    """Smallest power of two >= x (and >= 1)."""
    return 1 << max(0, int(x) - 1).bit_length()


def is_interpreter() -> bool:
    """True when Triton kernels run in the CPU interpreter (TRITON_INTERPRET=1)."""
    # Read the environment, not trident.compiler.config.INTERPRET, so a test that flips the
    # variable after import still sees the truth Triton acts on.
    return os.environ.get("TRITON_INTERPRET", "0").strip().lower() not in ("", "0", "false", "no", "off")


def interpreter_block(size: int, lo: int = 16, hi: int = 64) -> int:
    """Block size for the interpreter: big enough to cover the problem in few programs.

    The interpreter pays per program and per op, not per element, so fewer, larger blocks are
    cheaper; `lo` keeps tl.dot legal (every dot dim >= 16).
    """
    return max(lo, min(hi, next_pow2(size)))


# How each template multiplies fp32 operands unless TRIDENT_FP32_DOTS says otherwise (compiler/config.py;
# docs/performance.md, "FP32"; H100, triton.testing.do_bench): convolutions and attention as 3xTF32 on the
# tensor cores (ResNet-50's 3x3 convs at b32 1.3-2.9x cuDNN in true fp32; attention over 1,370 tokens 1.8x
# torch's SDPA, which computes 3xTF32 itself), within a few fp32 ulps; GEMMs (and 1x1 convs, which run as
# GEMMs) in IEEE fp32, where cuBLAS's SGEMM ran 1.4-1.5x the best 3xTF32 tile timed.
FP32_DOTS_BY_TEMPLATE = {"gemm": "ieee", "conv": "tf32x3", "attention": "tf32x3"}


def dot_precision(dtype, template: str) -> str:
    """tl.dot's input_precision for `template`'s ("gemm", "conv", "attention") operands of `dtype`:
    for fp32, TRIDENT_FP32_DOTS or the template's own; "ieee" (unused) for the others."""
    if dtype != torch.float32:
        return "ieee"
    return _config.FP32_DOTS or FP32_DOTS_BY_TEMPLATE[template]


def fp32_on_tensor_cores(dtype, template: str) -> bool:
    """fp32 operands whose dots run on the tensor cores (TF32 or 3xTF32): tiles shaped as for 16-bit
    ones, not for the FMA units."""
    return dtype == torch.float32 and dot_precision(dtype, template) != "ieee"


def is_int8(dtype) -> bool:
    """True for torch int8 inputs, whose dots accumulate (and launchers return) int32."""
    return dtype == torch.int8


def min_block_k(elem_bytes: int) -> int:
    """The smallest K block tl.dot takes for inputs of this width: 8-bit MMAs need K >= 32 on NVIDIA."""
    return 32 if elem_bytes == 1 else 16


def tile_config(BLOCK_M: int, BLOCK_N: int, BLOCK_K: int, GROUP_M: int = 8, num_warps: int = 4,
                num_stages: int = 3, PERSISTENT: int = 0) -> LaunchConfig:
    """Launch config of a tiled template (matmul, conv). For depthwise conv, BLOCK_N is the
    channel block and BLOCK_K / GROUP_M are unused.

    PERSISTENT 0: one program per output tile. k > 0: a persistent grid of k programs per SM, each
    looping over tiles, so the software pipeline prefetches the next tile's operands during this
    tile's epilogue (what pays for GEMMs with a short K loop and a big output, e.g. 1x1 convs)."""
    return LaunchConfig.of(num_warps, num_stages, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K,
                           GROUP_M=GROUP_M, PERSISTENT=PERSISTENT)


def check_tile(cfg: LaunchConfig, dtype) -> None:
    """Raise ValueError for a tile config tl.dot cannot compile (dims < 16, non powers of 2)."""
    min_k = min_block_k(dtype.itemsize)
    for name, low in (("BLOCK_M", 16), ("BLOCK_N", 16), ("BLOCK_K", min_k)):
        value = cfg[name]
        if value < low or value != next_pow2(value):
            raise ValueError(f"{name}={value}: must be a power of two >= {low} for {dtype}")


def pair(v) -> tuple[int, int]:
    """int | (h, w) -> (h, w)."""
    return (int(v), int(v)) if isinstance(v, int) else (int(v[0]), int(v[1]))


def normalize_padding(padding) -> tuple[int, int, int, int]:
    """int | (ph, pw) | (top, left, bottom, right) -> (top, left, bottom, right)."""
    if isinstance(padding, int):
        return (padding,) * 4
    padding = tuple(int(p) for p in padding)
    if len(padding) == 2:
        return padding + padding
    if len(padding) == 4:
        return padding
    raise ValueError(f"padding must be int, (h, w) or (top, left, bottom, right); got {padding}")


# A global must be a tl.constexpr for @triton.jit code to read it.
INTERPRETER = tl.constexpr(is_interpreter())


@triton.jit
def zero_acc(x_ptr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    """Zero accumulator for operands read through x_ptr: int32 for int8, else fp32."""
    # Compile-time test on the pointer's element type: only one branch is traced.
    if x_ptr.dtype.element_ty == tl.int8:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    return acc


@triton.jit
def dot_acc(a, b, acc, INPUT_PRECISION: tl.constexpr):
    """acc + a @ b with the dot flavour each dtype needs (all branches compile-time)."""
    if a.dtype == tl.int8:
        # Triton 3.6 defaults out_dtype to fp32 and rejects an int32 acc without this.
        out = tl.dot(a, b, acc, out_dtype=tl.int32)
    elif a.dtype == tl.float32:
        out = tl.dot(a, b, acc, input_precision=INPUT_PRECISION)
    elif a.dtype == tl.bfloat16:
        if INTERPRETER:
            # Triton's interpreter multiplies bf16 bit patterns as integers; upcast there only.
            out = tl.dot(a.to(tl.float32), b.to(tl.float32), acc, input_precision="ieee")
        else:
            out = tl.dot(a, b, acc)
    else:
        # fp16: input_precision means nothing here, so it is not passed.
        out = tl.dot(a, b, acc)
    return out


@triton.jit
def cast_for_store(acc, ptr):
    """acc in the element type `ptr` stores; int8 saturates (an int8 conv's accumulator holds integers)."""
    if ptr.dtype.element_ty == tl.int8:
        acc = tl.minimum(tl.maximum(acc, -128), 127)
    return acc.to(ptr.dtype.element_ty)


@triton.jit
def window_origin(offs_m, N, OH, OW, stride_h, stride_w, pad_h, pad_w):
    """For output pixels offs_m (flat n*OH*OW + oh*OW + ow): (n, ih0, iw0) of each window's top-left
    tap. Pixels past N*OH*OW wrap back into range (duplicate lanes the caller's store mask drops)."""
    rm = offs_m % (N * OH * OW)
    ow = rm % OW
    t = rm // OW
    return t // OH, (t % OH) * stride_h - pad_h, ow * stride_w - pad_w


@triton.jit
def nhwc_window_origin(offs_m, N, H, W, C, OH, OW, stride_h, stride_w, pad_h, pad_w):
    """For output pixels offs_m (flat n*OH*OW + oh*OW + ow), the top-left input tap of each window.

    Returns (x_off, ih0, iw0): x_off is the NHWC element offset of x[n, ih0, iw0, 0] (may point
    outside the image when ih0/iw0 < 0; callers mask taps with ih0/iw0). Pixels past N*OH*OW wrap
    back into range, so their lanes are duplicates the caller's store mask must drop.
    """
    rm = offs_m % (N * OH * OW)
    ow = rm % OW
    t = rm // OW
    oh = t % OH
    n = t // OH
    ih0 = oh * stride_h - pad_h
    iw0 = ow * stride_w - pad_w
    x_off = ((n * H + ih0) * W + iw0) * C
    return x_off, ih0, iw0
