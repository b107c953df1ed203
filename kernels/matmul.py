"""GEMM template: C[M, N] = A[M, K] @ B[K, N], fp32 accumulation (int32 for int8).

`matmul_tile` is what generated kernels call: it returns the accumulator tile and stores nothing,
so the generated epilogue (bias, activation, residual, cast) runs on registers before one store.
`matmul_kernel` + `matmul()` are the same tile with a plain store, for tests and benchmarks.

B may be row-major [K, N] or K-major [N, K] (passed as strides). Constant weights are stored
K-major: on Hopper the K-major int8 operand is what lets Triton emit wgmma (DESIGN.md: 1078 vs 233
TOPS at 8192^3).
"""
from __future__ import annotations

import torch

from trident.compiler import config as _config
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import (cast_for_store, cdiv, check_tile, dot_acc, dot_precision, drop_unfit_persistent,
                                    fp32_on_tensor_cores, fp32_tile,
                                    grouped_pid, interpreter_block, is_int8, is_interpreter, min_block_k, next_pow2,
                                    persistent_grid, tile_config, zero_acc)
from trident.kernels.prims import in_bounds
from trident.kernels.tma import gemm_descriptors, gemm_operands_fit

import triton
import triton.language as tl


@triton.jit
def matmul_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, offs_m, offs_n,
                BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                INPUT_PRECISION: tl.constexpr):
    """Accumulator tile A[offs_m, :] @ B[:, offs_n]: fp32 [BLOCK_M, BLOCK_N], or int32 for int8.

    Rows/cols at or past M/N are wrapped back into range (so loads need no M/N mask); those lanes
    hold duplicates of valid rows/cols and the caller's store mask must drop them.
    INPUT_PRECISION ("ieee" | "tf32") only matters for fp32 inputs.
    """
    rm = offs_m % M
    rn = offs_n % N
    rk = tl.arange(0, BLOCK_K)
    a_ptrs = a_ptr + rm[:, None] * stride_am + rk[None, :] * stride_ak
    b_ptrs = b_ptr + rk[:, None] * stride_bk + rn[None, :] * stride_bn
    acc = zero_acc(a_ptr, BLOCK_M, BLOCK_N)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        # Only the last iteration can be partial; with a compile-time K that BLOCK_K divides (what
        # generated kernels pass) the mask folds away.
        k_ok = in_bounds(k * BLOCK_K + rk, K, BLOCK_K)
        a = tl.load(a_ptrs, mask=k_ok[None, :], other=0)
        b = tl.load(b_ptrs, mask=k_ok[:, None], other=0)
        acc = dot_acc(a, b, acc, INPUT_PRECISION)
        a_ptrs += BLOCK_K * stride_ak
        b_ptrs += BLOCK_K * stride_bk
    return acc


@triton.jit
def matmul_tile_tma(a_desc, b_desc, K, pid_m, pid_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_K: tl.constexpr, B_K_MAJOR: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """matmul_tile's accumulator with A and B streamed by TMA (kernels/tma.py): a_desc over A [M, K],
    b_desc over B [N, K] (B_K_MAJOR) or [K, N]. Rows, columns and K past the tensors read 0."""
    if a_desc.dtype == tl.int8:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.int32)
    else:
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k in range(0, tl.cdiv(K, BLOCK_K)):
        a = a_desc.load([pid_m * BLOCK_M, k * BLOCK_K])
        if B_K_MAJOR:
            b = b_desc.load([pid_n * BLOCK_N, k * BLOCK_K]).T
        else:
            b = b_desc.load([k * BLOCK_K, pid_n * BLOCK_N])
        acc = dot_acc(a, b, acc, INPUT_PRECISION)
    return acc


@triton.jit
def matmul_store_tile(tile, a_ptr, b_ptr, c_ptr, a_desc, b_desc, M, N, K, stride_am, stride_ak, stride_bk,
                      stride_bn, stride_cm, stride_cn, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_K: tl.constexpr, GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                      TMA: tl.constexpr):
    """C tile number `tile` (in grouped order) = A @ B, stored."""
    pid_m, pid_n = grouped_pid(tile, M, N, BLOCK_M, BLOCK_N, GROUP_M)
    offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)
    if TMA:
        acc = matmul_tile_tma(a_desc, b_desc, K, pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K, stride_bk == 1,
                              INPUT_PRECISION)
    else:
        acc = matmul_tile(a_ptr, b_ptr, M, N, K, stride_am, stride_ak, stride_bk, stride_bn, offs_m, offs_n,
                          BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION)
    c_ptrs = c_ptr + offs_m[:, None] * stride_cm + offs_n[None, :] * stride_cn
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptrs, cast_for_store(acc, c_ptr), mask=mask)


@triton.jit
def matmul_kernel(a_ptr, b_ptr, c_ptr, a_desc, b_desc, M: tl.constexpr, N: tl.constexpr, K: tl.constexpr,
                  stride_am: tl.constexpr, stride_ak: tl.constexpr, stride_bk: tl.constexpr,
                  stride_bn: tl.constexpr, stride_cm: tl.constexpr, stride_cn: tl.constexpr,
                  BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                  GROUP_M: tl.constexpr, INPUT_PRECISION: tl.constexpr, PERSISTENT: tl.constexpr,
                  TMA: tl.constexpr):
    """Standalone GEMM. Grid: one program per C tile, or (PERSISTENT) fewer programs that loop
    over the tiles; flatten=True lets Triton pipeline one tile's loads under the last one's store.
    Sizes and strides are compile-time, as in a generated kernel (what an engine runs is what this
    measures): index math folds, and so does the K mask when BLOCK_K divides K. TMA: A and B come
    through a_desc / b_desc (kernels/tma.py), else through the pointers."""
    if PERSISTENT:
        tiles = tl.cdiv(M, BLOCK_M) * tl.cdiv(N, BLOCK_N)
        for tile in tl.range(tl.program_id(0), tiles, tl.num_programs(0), flatten=True):
            matmul_store_tile(tile, a_ptr, b_ptr, c_ptr, a_desc, b_desc, M, N, K, stride_am, stride_ak, stride_bk,
                              stride_bn, stride_cm, stride_cn, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M, INPUT_PRECISION,
                              TMA)
    else:
        matmul_store_tile(tl.program_id(0), a_ptr, b_ptr, c_ptr, a_desc, b_desc, M, N, K, stride_am, stride_ak,
                          stride_bk, stride_bn, stride_cm, stride_cn, BLOCK_M, BLOCK_N, BLOCK_K, GROUP_M,
                          INPUT_PRECISION, TMA)


# Streaming K per stage in bytes is what matters for shared memory: 64 fp16 = 128 int8 = 32 fp32.
def _block_k(dtype) -> int:
    return {1: 128, 2: 64}.get(dtype.itemsize, 32)


NUM_SMS_H200 = 132


def heuristic_config(M: int, N: int, K: int, dtype, out_bytes: int = 2, reads_tiles: bool = False,
                     tma: bool = False, blas: bool = False, library_alone: bool = False) -> LaunchConfig:
    """Deterministic default config for an H200 (or cheap big blocks in the interpreter).
    tma: the kernel's operands can load through TMA descriptors (kernels/tma.py); the config then
    has a TMA param (the tuner may flip it), 1 where TMA pays (_tma_pays), in the interpreter
    too, so what runs on the GPU is what CPU tests run.
    blas: the kernel can take its product from cuBLAS (kernels/blas.py); the config then has a
    BLAS param, 1 where the library pays (_library_pays; library_alone: cuBLAS's call is all the
    kernel does, no epilogue pass follows). The tile stays the kernel's own GEMM's (the tuner
    times both)."""
    tma_loads = tma and _tma_pays(dtype)
    cfg = _heuristic_tile(M, N, K, dtype, out_bytes, reads_tiles, tma_loads)
    cfg = cfg.replace(TMA=int(tma_loads)) if tma else cfg
    return cfg.replace(BLAS=int(_library_pays(M, N, K, dtype, library_alone))) if blas else cfg


def epilogue_spills(cfg: LaunchConfig) -> bool:
    """Would a generated GEMM's GELU or residual epilogue spill on this tile, run on the whole tile
    at once? Where each thread holds 128 or more fp32 accumulators (128x256 on 8 warps, 128x128 on
    4), ptxas (sm_90) spills 0.5-0.8 KB a thread for it, and none with the epilogue on the tile's
    column halves in turn (SPLIT_EPILOGUE). Whether that is faster varies (H200, the tuner's timings:
    ViT-B/16's 768 -> 3072 + GELU 72.7 against 76.0 us, DINOv2's 134.2 against 125.2), so the
    heuristic leaves the epilogue whole and the tuner times both."""
    return cfg.BLOCK_M * cfg.BLOCK_N >= 128 * 32 * cfg.num_warps


def _library_pays(M: int, N: int, K: int, dtype, library_alone: bool) -> bool:
    """Is cuBLAS's product faster than the fused Triton tile? Where cuBLAS does the whole job (no
    epilogue, or a bias it adds itself), yes on every zoo shape the H200 timed (ViT-B/16's QKV
    38.1 against 43.3 us, BERT's 93.4 against 95.3). Where a Triton pass over its product must
    follow (GELU, residual), the pass costs about what the library saves at K = 96-768
    (docs/performance.md, "Library GEMMs"): those start on Triton's tile and the tuner decides.
    From K = LIBRARY_PASS_K on, what cuBLAS saves grows with K and the pass does not (it reads
    and writes the output once): ViT-B/16's 3072 -> 768 + residual took 50.2 us through cuBLAS and
    the pass against 61.8 on its heuristic tile ("Split epilogues"). At fp32 the tile runs on the
    FMA units and the library pays from a much shallower K (LIBRARY_PASS_K_FP32). In the
    interpreter too, so CPU tests run what the GPU runs."""
    pass_k = LIBRARY_PASS_K_FP32 if dtype == torch.float32 else LIBRARY_PASS_K
    return _config.LIBRARY_GEMM and M * N * K > 0 and (library_alone or K >= pass_k)


# The K from which cuBLAS's product plus an epilogue pass starts ahead of the fused Triton tile:
# cuBLAS's K loop at ~640 TFLOP/s against ~450 saves 2MNK x 6.6e-16 s, the pass costs about
# 6MN bytes / 3 TB/s = 2e-12 MN s: even at K = 1,500-2,000.
LIBRARY_PASS_K = 2048
# At fp32, cuBLAS's SGEMM (~51 TFLOP/s on an H200) against the FMA tile's 0.58x of it saves
# 2MNK x 1.4e-14 s, the pass costs 8MN bytes / 3 TB/s = 2.7e-12 MN s: even near K = 100.
LIBRARY_PASS_K_FP32 = 128


def _tma_pays(dtype) -> bool:
    """Does this tile run faster with its operands through TMA? (16-bit tiles: H200 measurements in
    docs/performance.md, "TMA"; int8 tiles keep the pointer loads their sweep measured.)"""
    return dtype.itemsize == 2


def _heuristic_tile(M: int, N: int, K: int, dtype, out_bytes: int, reads_tiles: bool,
                    tma_loads: bool = False) -> LaunchConfig:
    """heuristic_config's tile (tma_loads: its operands come through TMA descriptors).

    The 16- and 8-bit tiles are the winners of `trident bench sweep` on an H200 over square, BERT
    and ResNet-50 1x1-conv GEMMs (docs/performance.md, "GEMM tiles"): fp16 wants
    128x256 on two warpgroups, persistent; int8: see _int8_config.
    out_bytes: the widest output element the kernel stores. The epilogue's layout change stages the
    whole tile in shared memory, so a 4-byte output (fp32, int32) rules out the 128x256 tile.
    reads_tiles: the epilogue loads an operand as big as the output (a residual), see below.
    """
    if is_interpreter():
        return tile_config(interpreter_block(M), interpreter_block(N),
                            interpreter_block(K, lo=min_block_k(dtype.itemsize)),
                            GROUP_M=8, num_warps=4, num_stages=1)
    bk = max(min_block_k(dtype.itemsize), min(_block_k(dtype), next_pow2(K)))
    if dtype.itemsize == 4:
        return _fp32_config(M, N, bk)
    if M <= 64:
        # Skinny GEMM (small-batch linear layers): few rows, so spend the tile on N and K.
        return tile_config(max(16, next_pow2(M)), 64 if N <= 4096 else 128, bk, 8, 4, 4)
    if is_int8(dtype):
        return _int8_config(M, N, K, bk, out_bytes)
    if reads_tiles and N >= 128 and cdiv(M, 128) * cdiv(N, 128) >= 2 * NUM_SMS_H200:
        # A residual (and layer scale) loaded in the epilogue next to 128 fp32 accumulators per
        # thread (128x256 on 8 warps, 128x128 on 4) is too much for the registers; 128x128 on 8
        # warps keeps 64. DINOv2's 3072->768 + layer scale + residual at 10,960 tokens: 108.6 us
        # against 175.5 (128x256, 3 stages) and 163.7 (128x128 on 4 warps, 4 stages); its
        # 768->768: 38.0 against 63.1 and 63.3. A fourth stage: 92.6 against 105.9 us on
        # 3072->768 + residual, faster on 9 of 10 shapes timed (docs/performance.md, "TMA").
        # Where 128x128 tiles fill their last round of two per SM poorly (ViT-B/16 at 6,304 tokens:
        # 300 tiles in two rounds of 264), 64x128 tiles on one warpgroup fill it better: 61.2
        # against 69.0 us (3072->768), 22.3 against 26.3 (768->768).
        slots = 2 * NUM_SMS_H200
        if _last_round_fill(cdiv(M, 64) * cdiv(N, 128), slots) > _last_round_fill(cdiv(M, 128) * cdiv(N, 128), slots) + 0.1:
            return tile_config(64, 128, bk, 8, 4, 4, PERSISTENT=2)
        if tma_loads and N % 256 == 0 and K >= 2048 and out_bytes <= 2:
            # Without its operand addresses in registers the 128x256 tile holds the epilogue
            # (ptxas: 1.2 KB spilled a thread against 2.2), and a deep K loop pays for it: DINOv2's
            # 3072->768 + layer scale + residual, generated kernels as the tuner times them, 88.8 us
            # against 102.5 for 128x128 on 8 warps (TMA or not).
            return tile_config(128, 256, bk, 8, 8, 3, PERSISTENT=1)
        return tile_config(128, 128, bk, 8, 8, 4, PERSISTENT=2)
    if reads_tiles and N >= 128 and cdiv(M, 128) * cdiv(N, 128) >= NUM_SMS_H200:
        # Under two rounds of 128x128 tiles, 64-row ones on one warpgroup: ConvNeXt-T's stage-3
        # 1536 -> 384 + layer scale + residual (6,272 rows: 147 tiles of 128x128) took 17.8 us on
        # 64x128, 4 warps, 3 stages against 29.6 on 128x128, 8 warps, 3 stages, persistent (the
        # tuner's fast level on the H200, cold L2; docs/performance.md, "Autotuning").
        return tile_config(64, 128, bk, 8, 4, 3)
    if cdiv(M, 128) * cdiv(N, 128) < NUM_SMS_H200:
        # Too few 128x128 tiles to fill the SMs: 64-row tiles (and half the shared memory, which a
        # fused fp32-input cast needs: its A tile is loaded as fp32).
        return tile_config(64, 128 if N >= 128 else 64, bk, 8, 4, 4)
    # ResNet-50's 1x1 convs at b256 (sizes compile-time, as in generated kernels):
    # 128x256 persistent wins even for K = 64-128 (64->256 149 us, 128->512 88 us, against 168 and
    # 110 for the half-depth 128x128 tile that short K loops used to get).
    wide_tiles = cdiv(M, 128) * cdiv(N, 256)
    k_steps = cdiv(K, bk)
    if N >= 256 and out_bytes <= 2 and wide_tiles >= NUM_SMS_H200 // 2:
        if cdiv(N, 256) * 256 > 1.1 * N:
            # A 256-wide tile that pads N by more than a tenth computes the padding (N = 384: a
            # third of its second tile): ConvNeXt-T's 96->384 + GELU at 100,352 pixels took 106.9 us
            # on 128x256, 90.4 on 128x128 with 8 warps, 168 with 4 (the GELU wants the registers).
            # A K loop of two steps fills no third stage; with two, the tile's 96 KB of shared
            # memory leaves room for a second program per SM, whose K loop runs while this one's
            # epilogue does: 69.1 us against 79.3 for the same GEMM + GELU with three.
            return tile_config(128, 128, bk, 8, 8, 2 if k_steps <= 2 else 3, PERSISTENT=2)
        if M >= 8192 and wide_tiles < 2 * NUM_SMS_H200:
            # Under two waves of 128x256 tiles (2048->512 at 7x7: 196 tiles, 1.48 waves) leave SMs idle
            # in the last wave; 128x128 tiles two per SM even it out: 46.5 us against 51.6 (cuDNN 37.9),
            # and a fifth stage where K is deep: 0.86x cuBLAS against 0.82x.
            return tile_config(128, 128, bk, 8, 4, 5 if k_steps >= 16 else 4, PERSISTENT=2)
        # A fourth stage pays from K = 1024 (1024->256 at 14x14: 1.04x cuBLAS against 0.93x; BERT's
        # 3072->768: 0.84x against 0.79x); at 8192^3 it is even (1.005x against 1.011x).
        return tile_config(128, 256, bk, 8, 8, 4 if k_steps >= 16 else 3, PERSISTENT=1)
    if cdiv(K, bk) < 4:  # a K loop this short leaves a persistent, flattened pipeline nothing to overlap
        return tile_config(128, 128 if N >= 128 else 64, bk, 8, 4, 3)
    if N >= 128:
        return tile_config(128, 128, bk, 8, 4, 4, PERSISTENT=2)
    return tile_config(128, 64, bk, 8, 4, 3)


def _last_round_fill(tiles: int, slots: int) -> float:
    """The share of `slots` programs busy over the rounds `tiles` take (1.0: every round full)."""
    return tiles / (cdiv(tiles, slots) * slots)


def _int8_config(M: int, N: int, K: int, bk: int, out_bytes: int) -> LaunchConfig:
    """int8 tiles, from H200 measurements (sweep, and ResNet-50's fused 1x1 convs at batch 256).

    An int8 MMA is so fast that only a deep K makes the tile compute-bound; elsewhere the epilogue
    (dequantize, residual, requantize) and the memory stream decide, and a 128x64 tile on one
    warpgroup wins: 247 vs 282 us (64->256 + int8 residual), 55 vs 78 us (512->2048 + residual)."""
    if K >= 4096 and N >= 1024:  # 8192^3: 1405 TOPS with an int8 output (sweep); an int32 output's
        # 64 KB epilogue tile leaves room for one program per SM: 1224 TOPS on one warpgroup.
        if out_bytes <= 2:
            return tile_config(128, 128, bk, 8, 8, 3, PERSISTENT=2)
        return tile_config(128, 128, bk, 8, 4, 3)
    if cdiv(M, 128) * cdiv(N, 128) < 2 * NUM_SMS_H200:
        return tile_config(64, 128, bk, 8, 4, 3)  # BERT's 768-wide outputs: more, smaller tiles
    if M < 8192:  # transformer-sized token counts
        return tile_config(128, 128, min(bk, 64), 8, 4, 3)
    return tile_config(128, 64, bk if N <= 128 and K >= 256 else min(bk, 64), 8, 4, 3)


def _fp32_config(M: int, N: int, bk: int) -> LaunchConfig:
    """fp32 tiles. On the tensor cores (TRIDENT_FP32_DOTS=tf32x3 or tf32): 128x128 on two warpgroups,
    32-deep K steps, 3 stages (no spill, ptxas sm_90; 4 warps spill; with 3xTF32 dots 0.65-0.74x
    cuBLAS's SGEMM on an H100: GEMMs keep IEEE dots by default), 64-row tiles on one warpgroup where
    too few 128x128 fill the SMs. True fp32 (FMA units, see common.FP32_TILE_LADDER): with SMs to spare a
    128x128 tile with a 16-deep K step: 8192^3 in 37.2 ms against 46.7 for 128x256x32 (cuBLAS 21.5;
    fp32 sweep)."""
    if fp32_on_tensor_cores(torch.float32, "gemm"):
        if cdiv(M, 128) * cdiv(N, 128) >= NUM_SMS_H200:
            return tile_config(128, 128, bk, 8, 8, 3)
        return tile_config(64, 128 if N >= 128 else 64, bk, 8, 4, 3)
    if cdiv(M, 128) * cdiv(N, 128) >= NUM_SMS_H200:
        return tile_config(128, 128, 16, 8, 4, 4)
    bm, bn = fp32_tile(M, N)
    return tile_config(bm, bn, bk, 8, 4, 4)


def candidate_configs(M: int, N: int, K: int, dtype) -> list[LaunchConfig]:
    """A short list for autotuning: the heuristic's pick first, then the sweep's frequent winners."""
    min_k = min_block_k(dtype.itemsize)
    bk = max(min_k, min(_block_k(dtype), next_pow2(K)))
    half = max(min_k, bk // 2)
    if fp32_on_tensor_cores(dtype, "gemm"):
        cands = [heuristic_config(M, N, K, dtype), tile_config(128, 128, bk, 8, 8, 3),
                 tile_config(64, 128, bk, 8, 4, 3), tile_config(128, 128, 16, 8, 8, 4),
                 tile_config(64, 64, bk, 8, 4, 3), tile_config(32, 64, bk, 8, 4, 3)]
    elif dtype.itemsize == 4:  # the fp32 sweep's runners-up at batch 1
        cands = [heuristic_config(M, N, K, dtype), tile_config(128, 128, 16, 8, 4, 4),
                 tile_config(64, 64, 16, 8, 2, 4), tile_config(32, 64, bk, 8, 4, 3),
                 tile_config(32, 32, bk, 8, 4, 4), tile_config(16, 64, bk, 8, 4, 4),
                 tile_config(16, 32, bk, 8, 4, 4)]
    elif is_int8(dtype):
        # No 256-wide int8 tiles: with an int32 output their epilogue's layout change alone needs
        # 128 KB of shared memory on top of the pipeline (and the sweep never picked one).
        cands = [heuristic_config(M, N, K, dtype), tile_config(128, 128, bk, 8, 8, 3, PERSISTENT=2),
                 tile_config(128, 128, half, 8, 4, 3), tile_config(128, 128, half, 8, 4, 4),
                 tile_config(64, 128, bk, 8, 4, 3), tile_config(128, 64, bk, 8, 4, 3),
                 tile_config(128, 128, bk, 8, 4, 3)]
    else:
        cands = [heuristic_config(M, N, K, dtype), tile_config(128, 256, bk, 8, 8, 3, PERSISTENT=1),
                 tile_config(128, 128, bk, 8, 8, 3, PERSISTENT=2),
                 # 80 KB of shared memory and 128 registers a thread: two programs per SM, one's
                 # epilogue beside the other's K loop
                 tile_config(128, 128, bk, 8, 8, 2, PERSISTENT=2),
                 tile_config(128, 128, bk, 8, 4, 4, PERSISTENT=2),
                 tile_config(128, 128, half, 8, 4, 4), tile_config(64, 128, bk, 8, 4, 3),
                 tile_config(128, 64, bk, 8, 4, 3), tile_config(256, 128, bk, 8, 8, 3, PERSISTENT=1)]
    return drop_unfit_persistent(cands, lambda c: cdiv(K, c.BLOCK_K))


def ws_config(tile: LaunchConfig, block_m: int, block_n: int, stages: int, block_k: int = 64,
              coalesced: bool = False) -> LaunchConfig:
    """A generated kernel's config for its warp-specialized path (kernels/gemm_hopper.py: WS=1),
    with the kernel's other switches off. The path's loader is the 4 warps of num_warps.
    coalesced: the epilogue in rows of 8 values a thread (WS_COALESCED), not wgmma's layout."""
    switches = {k: 0 for k in ("TMA", "BLAS", "SPLIT_EPILOGUE", "PERSISTENT") if tile.get(k) is not None}
    return tile.replace(num_warps=4, num_stages=stages, BLOCK_M=block_m, BLOCK_N=block_n, BLOCK_K=block_k,
                        GROUP_M=8, **switches, WS=1, WS_COALESCED=int(coalesced))


def ws_heuristic(M: int, N: int, K: int, tile: LaunchConfig, library_alone: bool) -> LaunchConfig:
    """The config of a GEMM kernel that has the warp-specialized path: with TRIDENT_WS_GEMM=1, that
    path on 128 x 128 tiles, six K blocks in flight (192 KB of shared memory for the ring) and the
    epilogue in rows of 8 values (H100, ViT-B/16's GEMMs: the best WS tile on fc2 and QKV, within
    7% of the best on the attention projection and on fc1 with its GELU), except where
    cuBLAS's call is the whole kernel (no epilogue, or a bias it adds), which stays on the library;
    else the Triton tile (WS=0). No WS tile leads the library or the Triton tile on those GEMMs (on
    the 768 -> 3072 GELU GEMMs one is level with the Triton tile: docs/performance.md); the tuner
    times them all."""
    if not _config.WS_GEMM or (library_alone and tile.get("BLAS")):
        return tile.replace(WS=0)
    return ws_config(tile, 128, 128, 6, coalesced=True)


# (BLOCK_M, BLOCK_N, stages, BLOCK_K, coalesced epilogue) of the warp-specialized tiles the tuner
# times: each fits its ring in shared memory and a consumer group's accumulator in 128 registers a
# thread.
WS_TILES = ((128, 128, 6, 64, False), (128, 128, 6, 64, True), (128, 64, 8, 64, False), (64, 256, 5, 64, False),
            (128, 128, 8, 32, False), (64, 256, 8, 32, True), (64, 128, 8, 64, False))


def ws_candidates(tile: LaunchConfig) -> list[LaunchConfig]:
    """What the tuner times of the warp-specialized path beside the Triton tiles."""
    return [ws_config(tile, *t) for t in WS_TILES]


def matmul(a: torch.Tensor, b: torch.Tensor, *, b_k_major: bool = False, out_dtype=None,
           config: LaunchConfig | None = None, input_precision: str | None = None) -> torch.Tensor:
    """a [M, K] @ b, where b is [K, N], or [N, K] when b_k_major. int8 inputs give int32.

    input_precision: "ieee" | "tf32x3" | "tf32" for fp32 inputs; default: common.dot_precision(dtype, "gemm").
    """
    if a.dim() != 2 or b.dim() != 2:
        raise ValueError(f"matmul wants 2-D operands, got {tuple(a.shape)} and {tuple(b.shape)}")
    if a.dtype != b.dtype:
        raise ValueError(f"matmul operands must share a dtype, got {a.dtype} and {b.dtype}")
    M, K = a.shape
    N, Kb = (b.shape[0], b.shape[1]) if b_k_major else (b.shape[1], b.shape[0])
    if K != Kb:
        raise ValueError(f"matmul K mismatch: a {tuple(a.shape)}, b {tuple(b.shape)} (b_k_major={b_k_major})")
    if out_dtype is None:
        out_dtype = torch.int32 if is_int8(a.dtype) else a.dtype
    if input_precision is None:
        input_precision = dot_precision(a.dtype, "gemm")
    c = torch.empty((M, N), device=a.device, dtype=out_dtype)
    if M == 0 or N == 0:
        return c
    if K == 0:
        return c.zero_()
    stride_bk, stride_bn = (b.stride(1), b.stride(0)) if b_k_major else (b.stride(0), b.stride(1))
    tma = gemm_operands_fit(a.element_size(), a.stride(0), a.stride(1), stride_bk, stride_bn)
    cfg = config or heuristic_config(M, N, K, a.dtype, c.element_size(), tma=tma)
    check_tile(cfg, a.dtype)
    if cfg.get("TMA") and not tma:
        raise ValueError(f"TMA config for operands TMA cannot describe: a strides {a.stride()}, "
                         f"b strides {b.stride()} ({a.dtype})")
    a_desc, b_desc, launch = gemm_descriptors(a, b, M, N, K, a.stride(0), stride_bk, stride_bn, cfg.to_dict())
    grid = (persistent_grid(cdiv(M, cfg.BLOCK_M) * cdiv(N, cfg.BLOCK_N), cfg.PERSISTENT),)
    matmul_kernel[grid](a, b, c, a_desc, b_desc, M, N, K, a.stride(0), a.stride(1), stride_bk, stride_bn,
                        c.stride(0), c.stride(1),
                        BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N, BLOCK_K=cfg.BLOCK_K, GROUP_M=cfg.GROUP_M,
                        INPUT_PRECISION=input_precision, PERSISTENT=cfg.PERSISTENT > 0, TMA=launch.get("TMA", 0),
                        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return c
