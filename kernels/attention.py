"""Fused attention: O = softmax(Q K^T * scale + mask) V in one pass (FlashAttention-2's forward).

Each program owns BLOCK_M query rows of one (batch, head) and walks the keys BLOCK_N at a time,
keeping a running row max m, a running row sum l and an unnormalized fp32 output tile (the "online
softmax"): the [Lq, Lk] scores never reach memory, so memory is O(sequence). Scores are kept in
the log2 domain (exp2 is the GPU's native exponential; scale * log2(e) is folded into one factor).

Layout (everything through strides, so head-split transposes and QKV splits need no copy):
  q     [B, W, H,    Lq, D]     k [B, W, H_KV, Lk, D]     v [B, W, H_KV, Lk, DV]     o [B, W, H, Lq, DV]
  mask  broadcast to [B, W, H, Lq, Lk] (stride 0 on broadcast dims): bool (True = attend) or additive
Two batch dims, so a mask can vary along an inner one and repeat along the outer (Swin's window
masks: [1, windows, 1, L, L] over [images, windows, heads, L, L]); rank-3 and rank-4 operands are
[B, 1, 1, L, D] and [B, 1, H, L, D], their W index folds away.
Grouped-query attention: query head h reads K/V head h // (H // H_KV).
Causal: key j is visible to query i iff j <= i + causal_offset; torch's is_causal (top-left) is
offset 0, the KV-cache decoder's bottom-right alignment is Lk - Lq (`causal_offset`).
A row that sees no key at all (fully masked) is zero, as torch's SDPA gives.
ZERO_NAN_ROWS: the `where(isnan(p), 0, p)` guard torch's exporters write after a boolean-masked
softmax. A row whose probabilities are NaN (a NaN or +inf among the scores it sees: its running sum
l is then NaN, p = exp2(NaN) or exp2(inf - inf) at that key) gets the guard's 0 * V summed over the
keys: 0, or NaN in a column where V holds a NaN or inf (read only for tiles that have such a row).

The K loop runs in two parts: key blocks every row of the tile sees in full (no mask work beyond a
user mask), then the blocks on the causal diagonal and the key tail (masked). Causal blocks past the
diagonal are never visited.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from trident.compiler.ir.launch import LaunchConfig
from trident.kernels import attention_hopper
from trident.kernels.common import (cdiv, dot_acc, dot_precision, fp32_on_tensor_cores, interpreter_block,
                                    is_interpreter, next_pow2)
from trident.kernels.prims import in_bounds

import triton
import triton.language as tl

LOG2E = tl.constexpr(1.4426950408889634)
FINITE_FLOOR = tl.constexpr(-3.0e38)  # above fp32's lowest (-3.4e38), far below any real score

MASK_NONE, MASK_BOOL, MASK_ADD = 0, 1, 2
MAX_HEAD_DIM = 256


@triton.jit
def _mask_block(mask_ptrs, cols, Lk, other, MASK_PER_KEY: tl.constexpr, BOUNDARY: tl.constexpr):
    """The mask's values for one key block, shaped to broadcast against its scores: a [1, BLOCK_N]
    row where one mask row serves every query (MASK_PER_KEY), else the [BLOCK_M, BLOCK_N] tile."""
    if MASK_PER_KEY:
        if BOUNDARY:
            values = tl.load(mask_ptrs, mask=cols < Lk, other=other)
        else:
            values = tl.load(mask_ptrs)
        values = values[None, :]
    else:
        if BOUNDARY:
            values = tl.load(mask_ptrs, mask=(cols < Lk)[None, :], other=other)
        else:
            values = tl.load(mask_ptrs)
    return values


@triton.jit
def _key_block(acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptrs, start_n, offs_m, offs_n, Lk, d_ok, dv_ok,
               causal_offset, SCALE: tl.constexpr, MASK_KIND: tl.constexpr, MASK_PER_KEY: tl.constexpr,
               CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """Fold keys [start_n, start_n + BLOCK_N) into the running (acc, l, m) of the query tile.

    BOUNDARY blocks mask keys past Lk and, when CAUSAL, keys right of the diagonal; other blocks
    are fully visible (only a user mask applies), so they skip that work."""
    cols = start_n + offs_n
    if BOUNDARY:
        n_ok = cols < Lk
        k = tl.load(k_ptrs, mask=d_ok[:, None] & n_ok[None, :], other=0)
    else:
        k = tl.load(k_ptrs, mask=d_ok[:, None], other=0)
    qk = dot_acc(q, k, tl.zeros((q.shape[0], k.shape[1]), dtype=tl.float32), INPUT_PRECISION)
    qk_scale = SCALE * LOG2E
    if (MASK_KIND == 0) and (not BOUNDARY) and (SCALE >= 0):
        # Every score is live: the max of the scaled scores is the scaled max, and the scaling
        # and the max subtraction are one FMA per score.
        m_new = tl.maximum(m_i, tl.max(qk, 1) * qk_scale)
        p = tl.math.exp2(qk * qk_scale - m_new[:, None])
        m_sub = m_new
    else:
        s = qk * qk_scale
        if MASK_KIND == 2:
            bias = _mask_block(mask_ptrs, cols, Lk, 0.0, MASK_PER_KEY, BOUNDARY).to(tl.float32)
            # A huge finite bias (finfo(float32).min, as transformers writes masks) would overflow
            # to -inf in the log2 domain: kept finite, a row masked that way everywhere averages
            # its values, as torch computes it; only a true -inf disables a key. (A NaN bias stays
            # NaN, as in torch: the GPU's max would otherwise return the floor.)
            s += tl.where(bias == float("-inf"), bias,
                          tl.maximum(bias * LOG2E, FINITE_FLOOR, propagate_nan=tl.PropagateNan.ALL))
        if MASK_KIND == 1:
            keep = _mask_block(mask_ptrs, cols, Lk, 0, MASK_PER_KEY, BOUNDARY)
            s = tl.where(keep != 0, s, float("-inf"))
        if BOUNDARY:
            visible = n_ok[None, :]
            if CAUSAL:
                visible = visible & (cols[None, :] <= offs_m[:, None] + causal_offset)
            s = tl.where(visible, s, float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 1))
        # A row with no visible key yet keeps m = -inf; subtracting 0 instead keeps its p and
        # alpha at exp2(-inf) = 0 rather than NaN.
        m_sub = tl.where(m_new == float("-inf"), 0.0, m_new)
        p = tl.math.exp2(s - m_sub[:, None])
    alpha = tl.math.exp2(m_i - m_sub)
    l_i = l_i * alpha + tl.sum(p, 1)
    if BOUNDARY:
        v = tl.load(v_ptrs, mask=n_ok[:, None] & dv_ok[None, :], other=0)
    else:
        v = tl.load(v_ptrs, mask=dv_ok[None, :], other=0)
    acc = dot_acc(p.to(v.dtype), v, acc * alpha[:, None], INPUT_PRECISION)
    return acc, l_i, m_new


@triton.jit
def _key_loop(acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptrs, lo, hi, offs_m, offs_n, Lk, d_ok, dv_ok,
              causal_offset, stride_kn, stride_vn, stride_mn, SCALE: tl.constexpr, MASK_KIND: tl.constexpr,
              MASK_PER_KEY: tl.constexpr, CAUSAL: tl.constexpr, BOUNDARY: tl.constexpr, BLOCK_N: tl.constexpr,
              INPUT_PRECISION: tl.constexpr):
    """_key_block over the key blocks [lo, hi) (lo, hi multiples of BLOCK_N, or hi = the end),
    the pointers those of block lo (_block_pointers). They are loop-carried (advanced by a scalar),
    as Triton pipelines best, and not returned: see attention_program."""
    for start_n in range(lo, hi, BLOCK_N):
        start_n = tl.multiple_of(start_n, BLOCK_N)
        acc, l_i, m_i = _key_block(acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptrs, start_n, offs_m, offs_n, Lk,
                                   d_ok, dv_ok, causal_offset, SCALE, MASK_KIND, MASK_PER_KEY, CAUSAL,
                                   BOUNDARY, INPUT_PRECISION)
        k_ptrs += BLOCK_N * stride_kn
        v_ptrs += BLOCK_N * stride_vn
        mask_ptrs += BLOCK_N * stride_mn
    return acc, l_i, m_i


@triton.jit
def _block_pointers(k_head, v_head, mask_head, lo, rows, offs_n, offs_d, offs_dv, sk_n, sk_d, sv_n, sv_d, sm_m, sm_n,
                    MASK_KIND: tl.constexpr, MASK_PER_KEY: tl.constexpr):
    """The K^T, V and mask tiles' pointers for the key block starting at lo, from one (batch,
    head)'s scalar base pointers. (lo is a 64-bit step: lo * stride can pass 2^31 elements.)"""
    lo = lo + tl.zeros((), dtype=tl.int64)  # (lo may be a constant 0)
    k_ptrs = k_head + lo * sk_n + offs_n[None, :] * sk_n + offs_d[:, None] * sk_d  # K^T
    v_ptrs = v_head + lo * sv_n + offs_n[:, None] * sv_n + offs_dv[None, :] * sv_d
    if MASK_KIND == 0:
        mask_ptrs = mask_head  # never read: no tile of pointers to carry through the loops
    elif MASK_PER_KEY:
        # One mask row serves every query (a padding mask): a vector per key block, where a tile
        # would load each value BLOCK_M times, element by element when the row's start is not
        # 16-byte aligned (a run-time or odd sequence length).
        mask_ptrs = mask_head + lo * sm_n + offs_n * sm_n
    else:
        mask_ptrs = mask_head + lo * sm_n + rows[:, None] * sm_m + offs_n[None, :] * sm_n
    return k_ptrs, v_ptrs, mask_ptrs


@triton.jit
def _nonfinite_columns(v_head, offs_n, offs_dv, dv_ok, Lk, sv_n, sv_d, BLOCK_N: tl.constexpr):
    """Per value column: does any of the head's Lk values hold a NaN or an inf (0 * it is NaN)?"""
    bad = tl.zeros((offs_dv.shape[0],), dtype=tl.int32)
    for start_n in range(0, Lk, BLOCK_N):
        rows = start_n + offs_n
        v = tl.load(v_head + rows[:, None] * sv_n + offs_dv[None, :] * sv_d,
                    mask=(rows < Lk)[:, None] & dv_ok[None, :], other=0).to(tl.float32)
        bad = tl.maximum(bad, tl.max(((v != v) | (tl.abs(v) == float("inf"))).to(tl.int32), 0))
    return bad > 0


@triton.jit
def _key_range(start_m, Lk, causal_offset, CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr,
               BLOCK_N: tl.constexpr):
    """(full, end): key blocks [0, full) are visible to every row of the tile; [full, end) need
    masking; keys from `end` on are visible to no row (causal) or do not exist."""
    if CAUSAL:
        # Rows start_m .. start_m + BLOCK_M - 1 see keys up to row + causal_offset. (Clamped at 0
        # before dividing: integer division rounds negatives differently on the GPU and in numpy.)
        end = tl.minimum(tl.maximum(start_m + BLOCK_M + causal_offset, 0), Lk)
        full = tl.maximum(start_m + causal_offset + 1, 0) // BLOCK_N * BLOCK_N
        full = tl.minimum(full, end // BLOCK_N * BLOCK_N)
    else:
        end = Lk
        full = Lk // BLOCK_N * BLOCK_N
    return full, end


@triton.jit
def _live_keys(mask_head, Lk, sm_n, MASK_KIND: tl.constexpr, SCAN: tl.constexpr):
    """(first, stop): the keys a per-key mask keeps (True, or a bias above -inf, NaN included) lie
    in [first, stop); (Lk, 0) where it keeps none."""
    first = Lk + tl.zeros((), dtype=tl.int32)
    stop = tl.zeros((), dtype=tl.int32)
    for start in range(0, Lk, SCAN):
        cols = start + tl.arange(0, SCAN)
        inside = cols < Lk
        values = tl.load(mask_head + cols.to(tl.int64) * sm_n, mask=inside, other=0)
        if MASK_KIND == 1:
            live = inside & (values != 0)
        else:
            live = inside & (values.to(tl.float32) != float("-inf"))
        first = tl.minimum(first, tl.min(tl.where(live, cols, Lk), 0))
        stop = tl.maximum(stop, tl.max(tl.where(live, cols + 1, 0), 0))
    return first, stop


@triton.jit
def _live_key_blocks(mask_head, full, end, Lk, sm_n, MASK_KIND: tl.constexpr, BLOCK_N: tl.constexpr):
    """The key loops' bounds (lo, full, mid, end: [lo, full) unmasked by position, [mid, end) masked)
    cut to the blocks holding a key a per-key mask keeps: the others add nothing to any row (a
    padded sequence's tail, a left-padded one's head), so a padded batch entry costs its length."""
    first, stop = _live_keys(mask_head, Lk, sm_n, MASK_KIND, 1024)
    end = tl.minimum(end, stop)
    first_block = first // BLOCK_N * BLOCK_N
    lo = tl.minimum(first_block, full)
    mid = tl.maximum(full, first_block)
    full = tl.maximum(lo, tl.minimum(full, tl.cdiv(end, BLOCK_N) * BLOCK_N))
    return lo, full, mid, end


@triton.jit
def attention_program(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, pid, B, W, H, H_KV, Lq, Lk, D, DV,
                      sq_b, sq_w, sq_h, sq_m, sq_d, sk_b, sk_w, sk_h, sk_n, sk_d, sv_b, sv_w, sv_h, sv_n, sv_d,
                      sm_b, sm_w, sm_h, sm_m, sm_n, so_b, so_w, so_h, so_m, so_d, causal_offset,
                      SCALE: tl.constexpr, MASK_KIND: tl.constexpr, MASK_PER_KEY: tl.constexpr,
                      CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                      BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                      ZERO_NAN_ROWS: tl.constexpr, PAIRED: tl.constexpr):
    """Program `pid`'s query tiles of one (batch, head), computed and stored: one tile, or under
    PAIRED (causal) tiles j and n - 1 - j of the head's n (see pairs_tiles), so every program sees
    n + 1 key blocks. pid walks a head's tiles fastest, so the tiles running together share one
    head's K and V in L2; causal tiles go longest first (the last wave then holds short ones)."""
    num_m = tl.cdiv(Lq, BLOCK_M)
    if PAIRED:
        first = pid // ((num_m + 1) // 2) * num_m
        j = pid % ((num_m + 1) // 2)
        longer, shorter = first + num_m - 1 - j, first + j
    elif CAUSAL:
        longer = pid // num_m * num_m + num_m - 1 - pid % num_m
        shorter = longer
    else:
        longer = pid
        shorter = pid
    for t in tl.static_range(2 if PAIRED else 1):
        if (t == 0) or (shorter != longer):  # (an odd count's middle tile is alone)
            _attention_tile(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, longer if t == 0 else shorter, B, W, H, H_KV, Lq,
                            Lk, D, DV, sq_b, sq_w, sq_h, sq_m, sq_d, sk_b, sk_w, sk_h, sk_n, sk_d, sv_b, sv_w, sv_h,
                            sv_n, sv_d, sm_b, sm_w, sm_h, sm_m, sm_n, so_b, so_w, so_h, so_m, so_d, causal_offset,
                            SCALE, MASK_KIND, MASK_PER_KEY, CAUSAL, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV,
                            INPUT_PRECISION, ZERO_NAN_ROWS)


@triton.jit
def _attention_tile(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, tile, B, W, H, H_KV, Lq, Lk, D, DV,
                    sq_b, sq_w, sq_h, sq_m, sq_d, sk_b, sk_w, sk_h, sk_n, sk_d, sv_b, sv_w, sv_h, sv_n, sv_d,
                    sm_b, sm_w, sm_h, sm_m, sm_n, so_b, so_w, so_h, so_m, so_d, causal_offset,
                    SCALE: tl.constexpr, MASK_KIND: tl.constexpr, MASK_PER_KEY: tl.constexpr,
                    CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                    BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                    ZERO_NAN_ROWS: tl.constexpr):
    """Query tile `tile` (head-major: tile // n is the (batch, head), tile % n the tile of its n),
    computed and stored. Split here, not by the caller: a paired program's two tiles then share
    no value the compiler could compute once and keep live through the first (its block-0 K/V
    pointer tiles: 255 against 168 registers at 64x64, head dim 64, Triton 3.6)."""
    num_m = tl.cdiv(Lq, BLOCK_M)
    pid_bh = tile // num_m
    pid_m = tile % num_m
    h = pid_bh % H
    bw = pid_bh // H
    b = (bw // W).to(tl.int64)
    w = (bw % W).to(tl.int64)
    h_kv = (h // (H // H_KV)).to(tl.int64)
    h = h.to(tl.int64)
    start_m = pid_m * BLOCK_M
    offs_m = start_m + tl.arange(0, BLOCK_M)
    offs_n = tl.arange(0, BLOCK_N)
    offs_d = tl.arange(0, BLOCK_D)
    offs_dv = tl.arange(0, BLOCK_DV)
    d_ok = in_bounds(offs_d, D, BLOCK_D)
    dv_ok = in_bounds(offs_dv, DV, BLOCK_DV)
    # Rows past Lq read row Lq - 1 (their results are never stored): loads need no row mask.
    rows = tl.minimum(offs_m, Lq - 1)
    q = tl.load(q_ptr + b * sq_b + w * sq_w + h * sq_h + rows[:, None] * sq_m + offs_d[None, :] * sq_d,
                mask=d_ok[None, :], other=0)
    k_head = k_ptr + b * sk_b + w * sk_w + h_kv * sk_h
    v_head = v_ptr + b * sv_b + w * sv_w + h_kv * sv_h
    mask_head = mask_ptr + b * sm_b + w * sm_w + h * sm_h
    acc = tl.zeros((BLOCK_M, BLOCK_DV), dtype=tl.float32)
    l_i = tl.zeros((BLOCK_M,), dtype=tl.float32)
    m_i = tl.full((BLOCK_M,), float("-inf"), dtype=tl.float32)
    full, end = _key_range(start_m, Lk, causal_offset, CAUSAL, BLOCK_M, BLOCK_N)
    lo = 0
    mid = full
    if MASK_PER_KEY and (MASK_KIND != 0) and (not ZERO_NAN_ROWS):  # (the guard's 0 * V reads every key)
        lo, full, mid, end = _live_key_blocks(mask_head, full, end, Lk, sm_n, MASK_KIND, BLOCK_N)
    # Each loop builds its pointer tiles from the scalar bases. Handing the first loop's advanced
    # tiles to the second kept both loops' tiles in registers (a pointer per element: 218 against
    # 107 registers for a 64x64 causal tile at head dim 64, Triton 3.6), which halved the programs
    # an SM holds and made causal rows slower than full ones.
    k_ptrs, v_ptrs, mask_ptrs = _block_pointers(k_head, v_head, mask_head, lo, rows, offs_n, offs_d, offs_dv, sk_n,
                                                sk_d, sv_n, sv_d, sm_m, sm_n, MASK_KIND, MASK_PER_KEY)
    acc, l_i, m_i = _key_loop(
        acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptrs, lo, full, offs_m, offs_n, Lk, d_ok, dv_ok, causal_offset,
        sk_n, sv_n, sm_n, SCALE, MASK_KIND, MASK_PER_KEY, CAUSAL, False, BLOCK_N, INPUT_PRECISION)
    if mid < end:
        # Guarded, not merely empty: with run-time lengths a pipelined loop costs its prologue
        # and waits even when it runs no iteration (BERT's attention at sequence 128, where
        # every key block is full: 10.0 against 6.8 us with the lengths as constants).
        k_ptrs, v_ptrs, mask_ptrs = _block_pointers(k_head, v_head, mask_head, mid, rows, offs_n, offs_d, offs_dv,
                                                    sk_n, sk_d, sv_n, sv_d, sm_m, sm_n, MASK_KIND, MASK_PER_KEY)
        acc, l_i, m_i = _key_loop(
            acc, l_i, m_i, q, k_ptrs, v_ptrs, mask_ptrs, mid, end, offs_m, offs_n, Lk, d_ok, dv_ok,
            causal_offset, sk_n, sv_n, sm_n, SCALE, MASK_KIND, MASK_PER_KEY, CAUSAL, True, BLOCK_N,
            INPUT_PRECISION)
    # A fully masked row has l = 0 and acc = 0: dividing by 1 instead gives torch's 0, not 0/0.
    out = acc / tl.where(l_i > 0.0, l_i, 1.0)[:, None]
    if ZERO_NAN_ROWS:
        nan_row = l_i != l_i
        out = tl.where(nan_row[:, None], 0.0, out)
        if tl.max(nan_row.to(tl.int32), 0) > 0:
            bad = _nonfinite_columns(v_head, offs_n, offs_dv, dv_ok, Lk, sv_n, sv_d, BLOCK_N)
            out = tl.where(nan_row[:, None] & bad[None, :], float("nan"), out)
    o_ptrs = o_ptr + b * so_b + w * so_w + h * so_h + offs_m[:, None] * so_m + offs_dv[None, :] * so_d
    tl.store(o_ptrs, out.to(o_ptr.dtype.element_ty), mask=(offs_m[:, None] < Lq) & dv_ok[None, :])


@triton.jit
def attention_kernel(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, B: tl.constexpr, W: tl.constexpr, H: tl.constexpr,
                     H_KV: tl.constexpr, Lq: tl.constexpr, Lk: tl.constexpr, D: tl.constexpr, DV: tl.constexpr,
                     sq_b: tl.constexpr, sq_w: tl.constexpr, sq_h: tl.constexpr, sq_m: tl.constexpr,
                     sq_d: tl.constexpr, sk_b: tl.constexpr, sk_w: tl.constexpr, sk_h: tl.constexpr,
                     sk_n: tl.constexpr, sk_d: tl.constexpr, sv_b: tl.constexpr, sv_w: tl.constexpr,
                     sv_h: tl.constexpr, sv_n: tl.constexpr, sv_d: tl.constexpr, sm_b: tl.constexpr,
                     sm_w: tl.constexpr, sm_h: tl.constexpr, sm_m: tl.constexpr, sm_n: tl.constexpr,
                     so_b: tl.constexpr, so_w: tl.constexpr, so_h: tl.constexpr, so_m: tl.constexpr,
                     so_d: tl.constexpr,
                     causal_offset: tl.constexpr, SCALE: tl.constexpr, MASK_KIND: tl.constexpr,
                     CAUSAL: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                     BLOCK_D: tl.constexpr, BLOCK_DV: tl.constexpr, INPUT_PRECISION: tl.constexpr,
                     ZERO_NAN_ROWS: tl.constexpr, PAIRED: tl.constexpr):
    """Standalone launch of attention_program. Sizes and strides are compile-time, as in a
    generated kernel (what an engine runs is what this measures)."""
    attention_program(q_ptr, k_ptr, v_ptr, mask_ptr, o_ptr, tl.program_id(0), B, W, H, H_KV, Lq, Lk, D, DV,
                      sq_b, sq_w, sq_h, sq_m, sq_d, sk_b, sk_w, sk_h, sk_n, sk_d, sv_b, sv_w, sv_h, sv_n, sv_d,
                      sm_b, sm_w, sm_h, sm_m, sm_n, so_b, so_w, so_h, so_m, so_d, causal_offset,
                      SCALE, MASK_KIND, sm_m == 0, CAUSAL, BLOCK_M, BLOCK_N, BLOCK_D, BLOCK_DV, INPUT_PRECISION,
                      ZERO_NAN_ROWS, PAIRED)


# ------------------------------------------------------------------------------ configs ----
def attention_config(BLOCK_M: int, BLOCK_N: int, num_warps: int = 4, num_stages: int = 3) -> LaunchConfig:
    """The template's launch config: a query tile of BLOCK_M rows, key steps of BLOCK_N."""
    return LaunchConfig.of(num_warps, num_stages, BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N)


def hopper_config(BLOCK_N: int = 128, num_stages: int = 3, overlap: bool = True,
                  pingpong: bool = False) -> LaunchConfig:
    """A config of kernels/attention_hopper.py's warp-specialized kernel (WS=1): 128-row query
    tiles (64 a consumer warp group), BLOCK_N keys per step, num_stages K/V blocks in flight;
    OVERLAP: each consumer group keeps one block's QK^T and the last block's PV in flight together;
    PINGPONG: the groups issue their matrix multiplies in turn (one group's softmax beside the
    next one's wgmmas)."""
    switches = {"PINGPONG": 1} if pingpong else {}
    return LaunchConfig.of(4, num_stages, BLOCK_M=128, BLOCK_N=BLOCK_N, WS=1, OVERLAP=int(overlap), **switches)


def check_config(cfg: LaunchConfig, head_dim: int = attention_hopper.MAX_HEAD_DIM, masked: bool = False) -> None:
    """Raise ValueError for blocks tl.dot cannot take (< 16, not powers of two), or a
    warp-specialized config that does not fit at this head dim (with a mask)."""
    if cfg.get("WS"):
        why = attention_hopper.why_unfit(cfg, head_dim, masked)
        if why:
            raise ValueError(f"warp-specialized attention config {cfg}: {why}")
        return
    for name in ("BLOCK_M", "BLOCK_N"):
        value = cfg[name]
        if value < 16 or value != next_pow2(value):
            raise ValueError(f"{name}={value}: must be a power of two >= 16")


def head_block(head_dim: int) -> int:
    """The padded head-dim block: a power of two >= 16 (dims like 80 or 96 are masked to size)."""
    return max(16, next_pow2(head_dim))


def smem_bytes(cfg: LaunchConfig, head_dim: int, head_dim_v: int, elem_bytes: int, mask_bytes: int = 0) -> int:
    """Shared memory of a config: the Q tile and num_stages K and V tiles, plus what Triton stages
    beside them in one reused buffer: the P tile (padded head dims and those past 128) or the mask
    tiles in flight (num_stages - 1 of them). Matches Triton 3.9's sm_90 compiles of
    attention_kernel exactly at head dims 64-256, with and without bool / fp16 / fp32 masks, and
    over-estimates Triton 3.6's. Causal or not alike: the two key loops share their buffers (each
    builds its pointer tiles, attention_program). A per-key mask (MASK_PER_KEY) stages a BLOCK_N
    vector, not a tile: counted as a tile, conservatively. fp32 on the tensor cores stages a second
    Q tile: what Triton 3.6 asked of 128x64 and 64x64 configs with 3xTF32 dots at head dim 128 on
    an H100 (262,144 bytes each, 64 and 32 KB past the rest)."""
    bd, bdv = head_block(head_dim), head_block(head_dim_v)
    p_tile = cfg.BLOCK_M * cfg.BLOCK_N * elem_bytes if bd != head_dim or bd > 128 else 0
    masks = (cfg.num_stages - 1) * cfg.BLOCK_M * cfg.BLOCK_N * mask_bytes
    staged = cfg.num_stages * cfg.BLOCK_N * (bd + bdv)
    q_tiles = 2 if elem_bytes == 4 and fp32_on_tensor_cores(torch.float32, "attention") else 1
    return (q_tiles * cfg.BLOCK_M * bd + staged) * elem_bytes + max(p_tile, masks)


SMEM_LIMIT = 227 * 1024  # an H100 / H200 block's shared memory
# fp32 values per thread a tile holds in registers (the output tile and one score tile): past this
# ptxas spilled (128x64 on 4 warps at head dim 128: 255 registers and a stack; 128x32 at 256).
TILE_VALUES_PER_THREAD = 176


def why_unfit(cfg: LaunchConfig, head_dim: int, head_dim_v: int, elem_bytes: int, mask_bytes: int = 0,
              smem_limit: int = SMEM_LIMIT) -> str | None:
    """Why a config cannot run well at these head dims (shared memory, registers), or None."""
    if smem_bytes(cfg, head_dim, head_dim_v, elem_bytes, mask_bytes) > smem_limit:
        return "shared memory"
    values = cfg.BLOCK_M * (head_block(head_dim_v) + cfg.BLOCK_N) / (32 * cfg.num_warps)
    if values > TILE_VALUES_PER_THREAD:
        return "registers"
    return None


# Short key rows at head dim <= 64 (vision transformers' 197-577 tokens) want smaller steps than
# FlashAttention's 128x64: a 64-key step past 197 keys is mostly padding, and a key loop of a few
# steps spreads a 128-row tile's fixed cost (Q load, pipeline fill, epilogue) over little work.
# H200, fp16, non-causal, head-split views of one QKV tensor (docs/attention.md, "Short
# sequences"): at 32 x 12 heads x 197 tokens 128x32 on 4 warps, 4 stages took 29.3 us against
# 32.5 for 128x64 (SDPA 28.4); at 8 x 16 x 577 64x64 on 4 warps, 3 stages took 42.5 against 49.4
# (SDPA 44.6); at 8 x 12 x 1370 the two were level (122.3, 124.5).
SHORT_KEYS = 256
MEDIUM_KEYS = 1024


# Causal query tiles see 1 .. n key blocks. One program per tile leaves the longest tiles' tails to
# the last waves; paired (PAIRED=1), a program computes tiles j and n - 1 - j of one head and every
# program sees n + 1 blocks. That pays where there are more tiles than the GPU holds at once (H200,
# fp16, head dim 64, 64x64 tiles: 128 heads x 512 keys 26.6 -> 21.9 us, 64 x 2,048 keys 113.7 ->
# 98.0 us); with fewer it only lengthens the longest program. rows: query rows over all heads.
PAIR_MIN_ROWS = 65536
# Paired 64x64 programs (4 warps, 3 stages) against the other tiles and the warp-specialized
# kernel, causal: the fastest up to these key counts per head dim (H200, fp16; past them the
# warp-specialized kernel is ahead or was not compared). Head dim 64: 98.0 against 110.0 us at
# 2,048 keys (64 heads); head dim 128: 39.3 against 44.0 (128x64 paired) and 48.3 us at 512 keys
# (128 heads), 54.4 against 56.8 us (warp-specialized) at 1,024 (64 heads).
PAIRED_PROGRAM_KEYS = {64: 2048, 128: 1024}


def program_count(Lq: int, block_m: int, heads: int, paired: bool = False) -> int:
    """Programs to launch (the grid of the program and of generated kernels): one per query tile
    of each head, or one per pair of them (PAIRED)."""
    tiles = cdiv(Lq, block_m)
    return (cdiv(tiles, 2) if paired else tiles) * heads


def pairs_tiles(causal: bool, rows: int | None) -> bool:
    """Should a causal problem of `rows` query rows (over all heads) pair its query tiles?"""
    return causal and rows is not None and rows >= PAIR_MIN_ROWS


def heuristic_config(Lq: int, Lk: int, head_dim: int, dtype, head_dim_v: int | None = None,
                     mask_bytes: int = 0, causal: bool = False, hopper: bool = False,
                     rows: int | None = None) -> LaunchConfig:
    """Deterministic default for an H200 (or cheap big blocks in the interpreter).

    fp16/bf16 follow FlashAttention-2 / Triton's tutorial on Hopper: 128-row query tiles (two
    warpgroups from head dim 128 on, so the fp32 output tile stays in registers: 139 registers at
    128x64 on 8 warps, where 4 warps spill), 64-key steps, 3-4 stages; past head dim 128 the
    pipeline keeps 2 stages (Q alone is 64 KB at 256). A mask's tiles in flight take shared memory
    too: the config then gives up stages, then key and query block, until it fits.
    mask_bytes: the mask's element size (0: no mask). fp32: see _fp32_config.
    hopper: the problem fits kernels/attention_hopper.py's kernel on this device (its `why_not`);
    it is the pick where it measured ahead (see hopper_pays). rows: query rows over all heads
    (None: unknown), for pairs_tiles."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    widest = max(head_dim, head_dim_v)
    paired = pairs_tiles(causal, rows)
    short_paired = paired and dtype != torch.float32 and any(
        widest <= d and Lk <= keys for d, keys in PAIRED_PROGRAM_KEYS.items())
    if hopper and hopper_pays(Lk, widest) and not short_paired:
        # Three K/V stages, overlapped, causal or not: at causal head dim 64 and 2,048 keys on an
        # H100 too, where two stages without overlap took 3-5% longer (docs/attention.md): the first
        # of hopper_candidates, or past head dim 128, where only 64-key blocks in two stages fit, those.
        return hopper_candidates(widest, mask_bytes > 0)[0]
    cfg = _program_heuristic(Lq, Lk, head_dim, head_dim_v, dtype, mask_bytes, causal, short_paired)
    return cfg.replace(PAIRED=1) if paired else cfg


def _program_heuristic(Lq: int, Lk: int, head_dim: int, head_dim_v: int, dtype, mask_bytes: int, causal: bool,
                       short_paired: bool) -> LaunchConfig:
    """heuristic_config's pick for this module's program."""
    widest = max(head_dim, head_dim_v)
    if is_interpreter():
        return attention_config(interpreter_block(Lq), interpreter_block(Lk), 4, 1)
    small_m = max(16, min(128, next_pow2(Lq)))
    short_rows = widest <= 64 and not causal and small_m == 128  # (see SHORT_KEYS)
    if dtype == torch.float32:
        cfg = _fp32_config(widest, small_m)
    elif short_rows and Lk <= SHORT_KEYS:
        cfg = attention_config(128, 32, 4, 4)
    elif (short_rows and Lk <= MEDIUM_KEYS) or short_paired:
        cfg = attention_config(64, 64, 4, 3)
    elif widest <= 64:
        cfg = attention_config(small_m, 64, 4, 4)
    else:
        cfg = attention_config(small_m, 64, 8 if small_m == 128 else 4, 3 if widest <= 128 else 2)
    return _fit(cfg, head_dim, head_dim_v, dtype.itemsize, mask_bytes)


# Where the warp-specialized kernel measured ahead of this module's program (H200, fp16, CUDA-graph
# replays behind an L2 flush, docs/attention.md "The warp-specialized kernel"): from 1,024 keys
# (2,048 keys, d64: 0.158 against 0.166 ms, causal 0.110 against 0.132; 8,192 keys, d128: 1.64
# against 2.22). At 512 keys (0.030 against 0.027) a 128-row tile's fixed cost is spread over four
# key blocks. Past head dim 32 (H100, 4,096 keys: d40 0.65 against 0.67 ms, d80 0.82 against 1.08);
# at 32 the program's 128x64 tile took 0.46 ms against its 0.50: with so little to multiply, its
# softmax and waits are the whole block.
HOPPER_KEYS = 1024
HOPPER_MIN_HEAD_DIM = 33


def hopper_pays(Lk: int, head_dim: int) -> bool:
    return Lk >= HOPPER_KEYS and head_dim >= HOPPER_MIN_HEAD_DIM


def hopper_candidates(head_dim: int, masked: bool = False) -> list[LaunchConfig]:
    """The warp-specialized configs worth timing (shared memory allowing); past head dim 128, where
    none of them fits, 64-key blocks in two stages."""
    configs = [hopper_config(128, 3, True), hopper_config(128, 2, False), hopper_config(128, 2, True),
               hopper_config(128, 4, True), hopper_config(64, 4, True), hopper_config(128, 3, True, pingpong=True)]
    fits = [c for c in configs if attention_hopper.why_unfit(c, head_dim, masked) is None]
    narrow = [hopper_config(64, 2, True), hopper_config(64, 2, False)]
    return fits or [c for c in narrow if attention_hopper.why_unfit(c, head_dim, masked) is None]


def _fit(cfg: LaunchConfig, head_dim: int, head_dim_v: int, elem_bytes: int, mask_bytes: int) -> LaunchConfig:
    while why_unfit(cfg, head_dim, head_dim_v, elem_bytes, mask_bytes) is not None:
        if cfg.num_stages > 2:
            cfg = cfg.replace(num_stages=cfg.num_stages - 1)
        elif cfg.BLOCK_N > 16:
            cfg = cfg.replace(BLOCK_N=cfg.BLOCK_N // 2)
        elif cfg.BLOCK_M > 16:
            cfg = cfg.replace(BLOCK_M=cfg.BLOCK_M // 2, num_warps=4)
        else:
            break  # 16x16: as small as tl.dot goes (fp32 past head dim 128 spills there too)
    return cfg


def _fp32_config(head_dim: int, small_m: int) -> LaunchConfig:
    """fp32 tiles. True fp32 dots ("ieee") run on the FMA units, which hold a whole head-dim slice of
    both operands in registers: tiles must shrink as the head dim grows. From ptxas on sm_90 (Triton
    3.9): 32x64 on 8 warps takes 130 registers at head dim 32, 32x32 218 at 64; from 128 on every
    tile spills, 16x16 the least (exact fp32 attention at those head dims is correct, not fast)."""
    if fp32_on_tensor_cores(torch.float32, "attention"):
        # 3xTF32 (or TF32) dots: 128x64 on two warpgroups, two stages (H100, do_bench: 0.83 ms over
        # 8 x 12 x 1,370 x d64 against 0.98 for 64x64 on one and SDPA's 1.46; at head dim 128, where
        # it needs 256 KB of shared memory, _fit takes 32-key steps: 0.86 ms at 4 x 16 x 1,024,
        # SDPA 0.78). docs/performance.md, "FP32".
        m = min(128, small_m)
        return attention_config(m, 64, 8 if m == 128 else 4, 2)
    if head_dim <= 32:
        return attention_config(min(32, small_m), 64, 8, 2)
    if head_dim <= 64:
        return attention_config(min(32, small_m), 32, 8, 2)
    return attention_config(16, 16, 4, 2)


def candidate_configs(Lq: int, Lk: int, head_dim: int, dtype, head_dim_v: int | None = None,
                      mask_bytes: int = 0, causal: bool = False, hopper: bool = False,
                      rows: int | None = None) -> list[LaunchConfig]:
    """A short list for autotuning: the heuristic's pick first, then the usual FlashAttention tiles
    that fit (see why_unfit; paired where pairs_tiles says so, and the first of them also
    unpaired), then (hopper: the problem fits that kernel here) the warp-specialized kernel's
    configs."""
    head_dim_v = head_dim if head_dim_v is None else head_dim_v
    if fp32_on_tensor_cores(dtype, "attention"):
        rest = [attention_config(64, 64, 4, 2), attention_config(64, 32, 4, 3), attention_config(128, 64, 8, 2),
                attention_config(64, 32, 4, 2), attention_config(128, 32, 8, 2)]
    elif dtype == torch.float32:
        rest = [attention_config(32, 32, 8, 2), attention_config(64, 16, 8, 2), attention_config(16, 32, 4, 2),
                attention_config(32, 64, 8, 2), attention_config(16, 16, 4, 2)]
    else:
        rest = [attention_config(128, 64, 8, 3), attention_config(128, 128, 8, 3), attention_config(128, 64, 4, 4),
                attention_config(128, 32, 4, 4), attention_config(64, 64, 4, 3), attention_config(128, 128, 8, 2),
                attention_config(64, 32, 4, 4), attention_config(128, 64, 8, 4), attention_config(64, 128, 4, 3),
                attention_config(128, 64, 8, 2), attention_config(128, 32, 8, 2), attention_config(64, 32, 4, 3),
                attention_config(64, 64, 4, 2)]
    fits = [c for c in rest if why_unfit(c, head_dim, head_dim_v, dtype.itemsize, mask_bytes) is None
            and c.BLOCK_M <= max(16, next_pow2(Lq))]
    if pairs_tiles(causal, rows) and fits:
        fits = [c.replace(PAIRED=1) for c in fits] + fits[:1]
    if hopper:
        fits += hopper_candidates(max(head_dim, head_dim_v), mask_bytes > 0)
    first = heuristic_config(Lq, Lk, head_dim, dtype, head_dim_v, mask_bytes, causal, hopper, rows)
    return list(dict.fromkeys([first] + fits))


def attention_flops(bh: int, Lq: int, Lk: int, head_dim: int, head_dim_v: int, causal: bool) -> float:
    """2 * (QK^T + PV) multiply-adds; a causal problem counts half (as FlashAttention reports)."""
    flops = 2.0 * bh * Lq * Lk * (head_dim + head_dim_v)
    return flops / 2 if causal else flops


# ------------------------------------------------------------------------- launch math ----
@dataclass(frozen=True)
class AttentionLaunch:
    """Everything attention_program takes besides pointers and blocks, for one problem: sizes,
    5-D strides (q, k, v, mask, o as [B, W, H, L, D]) and the mask kind."""
    B: int
    W: int
    H: int
    H_KV: int
    Lq: int
    Lk: int
    D: int
    DV: int
    strides: tuple[tuple[int, ...], ...]  # q, k, v, mask, o
    mask_kind: int
    causal_offset: int | None  # None: not causal

    @property
    def mask_per_key(self) -> bool:
        """One mask row for every query (the mask broadcasts over query rows: a padding mask)."""
        return self.mask_kind != MASK_NONE and self.strides[3][3] == 0

    @property
    def heads(self) -> int:
        """(batch, head) pairs: the programs per query-tile row."""
        return self.B * self.W * self.H

    def grid(self, block_m: int, paired: bool = False) -> int:
        return program_count(self.Lq, block_m, self.heads, paired)

    @property
    def rows(self) -> int:
        """Query rows over every head: what pairs_tiles weighs."""
        return self.heads * self.Lq

    def sizes(self) -> dict[str, int]:
        """attention_program's size arguments by name."""
        return {"B": self.B, "W": self.W, "H": self.H, "H_KV": self.H_KV, "Lq": self.Lq, "Lk": self.Lk,
                "D": self.D, "DV": self.DV, "causal_offset": self.causal_offset or 0}

    def stride_args(self) -> dict[str, int]:
        """attention_program's stride arguments by name: sq_b, sq_w, sq_h, sq_m, sq_d, sk_b, ..."""
        axes = (("sq", "bwhmd"), ("sk", "bwhnd"), ("sv", "bwhnd"), ("sm", "bwhmn"), ("so", "bwhmd"))
        return {f"{prefix}_{axis}": stride for (prefix, names), four in zip(axes, self.strides)
                for axis, stride in zip(names, four)}


RANKS = (3, 4, 5)


def as_5d(shape, strides) -> tuple[tuple[int, ...], tuple[int, ...]]:
    """An operand as [B, W, H, L, D]: rank 3 [N, L, D] is [N, 1, 1, L, D], rank 4 [N, H, L, D] is
    [N, 1, H, L, D] (size-1 dims read stride 0)."""
    shape, strides = tuple(shape), tuple(strides)
    if len(shape) not in RANKS:
        raise ValueError(f"attention operands are rank 3 to 5, got shape {list(shape)}")
    pad = 5 - len(shape)
    shape = shape[:1] + (1,) * pad + shape[1:]
    strides = strides[:1] + (0,) * pad + strides[1:]
    return shape, strides


def broadcast_strides(shape, strides, target) -> tuple[int, ...]:
    """Strides that read a tensor broadcast to `target` (missing and size-1 dims read stride 0)."""
    shape, strides = tuple(shape), tuple(strides)
    if len(shape) > len(target):
        raise ValueError(f"mask of shape {list(shape)} has more dims than the scores {list(target)}")
    pad = len(target) - len(shape)
    shape, strides = (1,) * pad + shape, (0,) * pad + strides
    out = []
    for size, stride, want in zip(shape, strides, target):
        if size not in (1, want):
            raise ValueError(f"mask of shape {list(shape[pad:])} does not broadcast to the scores {list(target)}")
        out.append(0 if size == 1 else stride)
    return tuple(out)


def causal_offset(causal: str | None, Lq: int, Lk: int) -> int | None:
    """The diagonal offset of a causal mask: "top_left" (torch's is_causal) 0, "bottom_right"
    (a decoder over a KV cache: the last query sees every key) Lk - Lq; None when not causal."""
    if causal is None:
        return None
    if causal == "top_left":
        return 0
    if causal == "bottom_right":
        return Lk - Lq
    raise ValueError(f"causal must be None, 'top_left' or 'bottom_right', got {causal!r}")


def plan_launch(q, k, v, mask, o, causal: str | None) -> AttentionLaunch:
    """The launch of one problem from its operands' (shape, strides, dtype) triples (mask may be
    None). Raises ValueError for operands that do not form an attention problem."""
    rank = len(q[0])
    if any(len(x[0]) != rank for x in (k, v, o)):
        raise ValueError(f"attention operands differ in rank: q {list(q[0])}, k {list(k[0])}, v {list(v[0])}")
    (qs, qst), (ks, kst), (vs, vst), (os_, ost) = (as_5d(s, st) for s, st, _ in (q, k, v, o))
    B, W, H, Lq, D = qs
    H_KV, Lk, DV = ks[2], ks[3], vs[4]
    if ks[:2] != (B, W) or vs[:4] != ks[:4] or ks[4] != D:
        raise ValueError(f"attention operands do not fit: q {list(q[0])}, k {list(k[0])}, v {list(v[0])}")
    if H_KV == 0 or H % H_KV:
        raise ValueError(f"{H} query heads cannot share {H_KV} key/value heads")
    if os_ != (B, W, H, Lq, DV):
        raise ValueError(f"attention output has shape {list(o[0])}, expected {list(q[0][:-1]) + [DV]}")
    if max(D, DV) > MAX_HEAD_DIM:
        raise ValueError(f"head dim {max(D, DV)} is past the {MAX_HEAD_DIM} the template takes")
    kind, mst = MASK_NONE, (0,) * 5
    if mask is not None:
        shape, strides, dtype = mask
        kind = MASK_BOOL if dtype == torch.bool else MASK_ADD
        scores = tuple(q[0][:-1]) + (Lk,)  # the mask broadcasts to the scores at q's own rank
        mst = as_5d(scores, broadcast_strides(shape, strides, scores))[1]
    return AttentionLaunch(B, W, H, H_KV, Lq, Lk, D, DV, (qst, kst, vst, mst, ost), kind,
                           causal_offset(causal, Lq, Lk))


def default_scale(head_dim: int) -> float:
    return 1.0 / math.sqrt(head_dim) if head_dim else 1.0


def hopper_fits(plan: AttentionLaunch, q, k, v, o, zero_nan_rows: bool = False) -> bool:
    """Can kernels/attention_hopper.py's kernel run this problem on these tensors here?"""
    return (attention_hopper.available(q.device) and attention_hopper.why_not(
        plan, q.dtype, zero_nan_rows, [t.data_ptr() for t in (q, k, v, o)]) is None)


def _mask_bytes(mask: torch.Tensor | None) -> int:
    return 0 if mask is None else mask.element_size()


def plan_tensors(q, k, v, mask, o, causal: str | None) -> AttentionLaunch:
    """plan_launch for tensors (mask may be None)."""
    return plan_launch(_triple(q), _triple(k), _triple(v), None if mask is None else _triple(mask), _triple(o),
                       causal)


def _triple(t: torch.Tensor):
    return tuple(t.shape), tuple(t.stride()), t.dtype


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None, *,
              scale: float | None = None, causal: str | None = None, config: LaunchConfig | None = None,
              precision: str | None = None, zero_nan_rows: bool = False) -> torch.Tensor:
    """torch SDPA's forward: softmax(q k^T * scale + mask) v, one kernel launch.

    q [B, H, Lq, D] (or [N, Lq, D], or [B, W, H, Lq, D]), k [B, H_KV, Lk, D], v [B, H_KV, Lk, DV];
    H_KV dividing H is grouped-query attention. mask: bool (True = attend) or additive, broadcastable to the scores.
    causal: None, "top_left" (torch's is_causal) or "bottom_right" (KV-cache alignment).
    precision: "ieee" | "tf32x3" | "tf32" for fp32 inputs (default: common.dot_precision(dtype, "attention")).
    zero_nan_rows: rows whose probabilities are NaN give zeros (the exporters' IsNaN guard)."""
    if not (q.dtype == k.dtype == v.dtype) or q.dtype not in (torch.float16, torch.bfloat16, torch.float32):
        raise ValueError(f"attention wants q, k, v of one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    o = torch.empty(q.shape[:-1] + v.shape[-1:], device=q.device, dtype=q.dtype)
    plan = plan_tensors(q, k, v, mask, o, causal)
    if o.numel() == 0:
        return o
    hopper = hopper_fits(plan, q, k, v, o, zero_nan_rows)
    cfg = config or heuristic_config(plan.Lq, plan.Lk, plan.D, q.dtype, plan.DV, _mask_bytes(mask),
                                     plan.causal_offset is not None, hopper, plan.rows)
    check_config(cfg, max(plan.D, plan.DV), mask is not None)
    scale = default_scale(plan.D) if scale is None else float(scale)
    if cfg.get("WS"):
        if hopper:
            attention_hopper.launch(q, k, v, o, plan, scale, cfg.to_dict(), mask)
            return o
        # Not on this device or these operands (a view that starts off 16 bytes, say): the program.
        cfg = heuristic_config(plan.Lq, plan.Lk, plan.D, q.dtype, plan.DV, _mask_bytes(mask),
                               plan.causal_offset is not None, rows=plan.rows)
    paired = bool(cfg.get("PAIRED", 0))
    attention_kernel[(plan.grid(cfg.BLOCK_M, paired),)](
        q, k, v, q if mask is None else mask, o, **plan.sizes(), **plan.stride_args(), SCALE=scale,
        MASK_KIND=plan.mask_kind,
        CAUSAL=plan.causal_offset is not None, BLOCK_M=cfg.BLOCK_M, BLOCK_N=cfg.BLOCK_N,
        BLOCK_D=head_block(plan.D), BLOCK_DV=head_block(plan.DV),
        INPUT_PRECISION=precision or dot_precision(q.dtype, "attention"), ZERO_NAN_ROWS=zero_nan_rows, PAIRED=paired,
        num_warps=cfg.num_warps, num_stages=cfg.num_stages)
    return o
