"""Fused attention on Hopper (sm_90): FlashAttention-3's forward, warp-specialized, in Gluon.

kernels/attention.py's Triton program is FlashAttention-2: every warp loads, multiplies and runs
the softmax in turn, so the tensor cores idle while the exponentials run (docs/attention.md).
This kernel splits the work between warp groups, as FlashAttention-3 and cuDNN do on Hopper:

- a loader partition (the default one, 4 warps, its registers handed to the others: setmaxnreg)
  issues TMA copies: each query tile's Q, then its K and V blocks into a ring of STAGES buffers,
  each K (V) waiting until both consumers have released its slot (`k_empty`, `v_empty`). A K
  slot is free once its QK^T is done, a block before the V beside it, so the next K is on its way
  while this block's PV still runs;
- two consumer warp groups (4 warps each, 240 registers) own one half of the query tile each
  (64 rows). Each copies its Q half into registers (releasing the buffer for the next tile's) and
  runs QK^T and PV as asynchronous wgmma with the online softmax between them; with OVERLAP, block
  j's QK^T and block j-1's PV are in flight together, so the group's softmax runs beside its own
  PV (FlashAttention-3's intra-warpgroup pipelining). The two groups' instruction streams are
  independent, so one group's softmax can also run while the other's matrix multiplies do; with
  PINGPONG they take turns issuing their wgmmas, block by block (FlashAttention-3's ping-pong,
  a tuning candidate: docs/attention.md).

The kernel is persistent (one program per SM, walking query tiles), so the loader streams the next
tile's Q, K and V while the consumers finish this one.

Every operand is read through a 5-D TMA descriptor over its [B, W, H, L, D] view (the strides of
kernels/attention.py's plan, so head-split and QKV-split views need no copy). TMA bounds each copy
by the descriptor's shape: rows past Lq or Lk read zeros and never the next head, so the kernel
reads nothing outside its operands; scores of keys past Lk are masked to -inf, and rows past Lq
are never stored.

What it takes (`why_not`): fp16 / bf16, one head dim D = DV up to 256, no mask or one that is the
same for every query row (a padding mask: bool or additive, one value per key, staged by the loader
beside each K block), causal or not (either alignment), grouped-query heads, any lengths; 16-byte
aligned base pointers and strides, unit stride along D. A head dim between the kernel's blocks
(32, 64, 128, 256) runs at the next one up: TMA reads zeros past D (they add nothing to QK^T and
give output columns that are not stored), as the program pads its head-dim block. Past 128 the
queries stay in shared memory. Everything else runs kernels/attention.py's program.
"""
from __future__ import annotations

import torch

import triton
from triton.language import PropagateNan

from trident.kernels.common import is_interpreter

from trident.kernels.gluon_hopper import HAVE_GLUON, LOADER_WARPS, SMEM_LIMIT, shared_layout, sm_count

if HAVE_GLUON:
    from trident.kernels.gluon_hopper import (CONSUMER_REGISTERS, CONSUMER_WARPS, TensorDescriptor, as_block, gl,
                                              gluon, mbarrier, partition_barrier, tma_load, warpgroup_mma,
                                              warpgroup_mma_wait, wgmma_layout)

KERNEL_HEAD_DIMS = (32, 64, 128, 256)  # the head-dim blocks compiled; a head dim between runs at the next
MAX_HEAD_DIM = KERNEL_HEAD_DIMS[-1]
# Past this head dim the queries stay in shared memory (a wgmma operand from there): in registers, a
# group's 64 x 256 queries (64 a thread) beside its 64 x 256 fp32 output (128) would not fit.
Q_IN_REGISTERS_UP_TO = 128
DTYPES = (torch.float16, torch.bfloat16)
BLOCK_M = 128  # two consumer warp groups of 64 rows
LOG2E = 1.4426950408889634


if HAVE_GLUON:
    _LOG2E = gl.constexpr(LOG2E)
    _FINITE_FLOOR = gl.constexpr(-3.0e38)  # kernels/attention.py's: above fp32's lowest, below any real score
    _NAN_PROPAGATES = gl.constexpr(PropagateNan.ALL)
    _Q_IN_REGISTERS_UP_TO = gl.constexpr(Q_IN_REGISTERS_UP_TO)
    # What the loader found in a key block of a per-key mask (docs/attention.md, "Padding masks"):
    _MIXED = gl.constexpr(0)  # keys of both kinds, or biases: the scores take them
    _LIVE = gl.constexpr(1)  # every key attends with bias 0: the unmasked step
    _DEAD = gl.constexpr(2)  # no key attends (-inf everywhere): the block adds nothing

    @gluon.jit
    def _tile(t, num_m, tiles, H, W, H_KV, Lk, causal_offset, CAUSAL: gl.constexpr, TILE: gl.constexpr,
              BLOCK_N: gl.constexpr):
        """Tile t's (b, w, h, h_kv, first query row, key blocks every row sees whole, key blocks).
        Query tiles of one head are neighbours (their K and V stay in L2); causal ones run longest
        first, and in snake order: program p takes the p-th tile of even laps and the p-th from
        the end of odd ones, so the one with the heaviest tile of a lap gets the lightest of the
        next (the busiest program does about 3% more than the mean, against 5.5% at 16K queries
        and 21% at 2K dealt round-robin)."""
        if CAUSAL:
            programs = gl.num_programs(0)
            lap = t // programs
            lane = t - lap * programs
            in_lap = gl.minimum(programs, tiles - lap * programs)
            t = lap * programs + gl.where(lap % 2 == 1, in_lap - 1 - lane, lane)
        pid_bh = t // num_m
        pid_m = t % num_m
        if CAUSAL:
            pid_m = num_m - 1 - pid_m
        h = pid_bh % H
        bw = pid_bh // H
        start_m = pid_m * TILE
        if CAUSAL:
            end = gl.minimum(gl.maximum(start_m + TILE + causal_offset, 0), Lk)
            n_full = gl.minimum(gl.maximum(start_m + causal_offset + 1, 0) // BLOCK_N, end // BLOCK_N)
        else:
            end = Lk
            n_full = Lk // BLOCK_N
        return bw // W, bw % W, h, h // (H // H_KV), start_m, n_full, gl.cdiv(end, BLOCK_N)

    @gluon.jit
    def _key_block(it, j, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, next_turn, acc, l_i, m_i,
                   offs_m, offs_n, Lk, causal_offset, bias_smem, kinds_smem, QK_SCALE: gl.constexpr,
                   STAGES: gl.constexpr, BLOCK_N: gl.constexpr, CAUSAL: gl.constexpr, BOUNDARY: gl.constexpr,
                   FIRST: gl.constexpr, PINGPONG: gl.constexpr, MASK_KIND: gl.constexpr):
        """Fold key block j (the program's it-th block: its ring slot) into this warp group's running
        (acc, l per quad lane, m), releasing its K and then its V slot as soon as each is read.
        BOUNDARY blocks mask keys past Lk and right of the causal diagonal; a per-key mask applies
        to every block."""
        s_layout: gl.constexpr = wgmma_layout(BLOCK_N)
        slot = it % STAGES
        phase = (it // STAGES) & 1
        mbarrier.wait(k_ready.index(slot), phase)
        _take_turn(turn, it, FIRST, PINGPONG)
        qk = _issue_qk(q, k_smem.index(slot), s_layout)
        _pass_turn(next_turn, PINGPONG)
        qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
        if not BOUNDARY and (MASK_KIND != 0 or QK_SCALE >= 0):
            p, alpha, l_i, m_new = _full_block_softmax(qk, bias_smem, kinds_smem, slot, k_empty.index(slot), l_i, m_i,
                                                       QK_SCALE, MASK_KIND)
        else:
            if MASK_KIND != 0:
                bias = _bias(bias_smem, slot, s_layout)
            mbarrier.arrive(k_empty.index(slot), count=1)
            s = qk * QK_SCALE
            if MASK_KIND != 0:
                s = s + bias[None, :]
            if BOUNDARY:
                cols = j * BLOCK_N + offs_n
                visible = (cols < Lk)[None, :]
                if CAUSAL:
                    visible = visible & (cols[None, :] <= offs_m[:, None] + causal_offset)
                s = gl.where(visible, s, float("-inf"))
            p, alpha, l_i, m_new = _guarded_step(s, gl.max(s, 1), l_i, m_i)
        acc = _rescaled(acc, alpha)
        p16 = _pv_operand(p, acc, q.dtype)
        mbarrier.wait(v_ready.index(slot), phase)
        acc = warpgroup_mma(p16, v_smem.index(slot), acc, is_async=True)
        acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
        mbarrier.arrive(v_empty.index(slot), count=1)
        return acc, l_i, m_new

    @gluon.jit
    def _take_turn(turn, it, FIRST: gl.constexpr, PINGPONG: gl.constexpr):
        """With PINGPONG, wait until the other group has issued its matrix multiplies of key block
        `it` (the first group: of block it - 1). The two groups then issue in turn, so one group's
        softmax can run while the other's wgmmas do, rather than both multiplying at once and then
        both taking their exponentials with the tensor cores idle (FlashAttention-3's ping-pong;
        its named barriers are mbarriers here)."""
        if PINGPONG:
            if FIRST:  # block 0 waits for the phase before a fresh barrier's first: it passes
                mbarrier.wait(turn, (it & 1) ^ 1)
            else:
                mbarrier.wait(turn, it & 1)

    @gluon.jit
    def _pass_turn(next_turn, PINGPONG: gl.constexpr):
        if PINGPONG:
            mbarrier.arrive(next_turn, count=1)

    @gluon.jit
    def _issue_qk(q, k_slot, s_layout: gl.constexpr):
        """A key block's QK^T as an asynchronous wgmma: the group's query rows (registers or shared
        memory) against the K slot's keys, into a fresh fp32 tile."""
        ROWS: gl.constexpr = q.shape[0]
        BLOCK_N: gl.constexpr = k_slot.shape[0]
        scores = gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout)
        return warpgroup_mma(q, k_slot.permute((1, 0)), scores, use_acc=False, is_async=True)

    @gluon.jit
    def _fold(a, b, SUM: gl.constexpr):
        if SUM:
            return a + b
        return gl.maximum(a, b)

    @gluon.jit
    def _halve(y, SUM: gl.constexpr):
        """[rows, lanes, n] -> [rows, lanes, n / 2]: neighbouring pairs in a thread folded."""
        a, b = gl.split(gl.reshape(y, [y.shape[0], y.shape[1], y.shape[2] // 2, 2]))
        return _fold(a, b, SUM)

    @gluon.jit
    def _per_lane(x, SUM: gl.constexpr):
        """[rows, 64 or 128] wgmma accumulator -> [rows, 4]: the max (or sum) of the columns each
        lane of a row's quad holds, as a tree inside the thread. A thread holds a row's columns
        8i + 2t + {0, 1} (t: its lane in the quad); gl.max and gl.sum fold them in one chain of
        dependent instructions (32 at 128 keys), and whatever needs the result waits for the whole
        chain. Here: pairs, then halves of the i's (5 levels at 128 keys). The reshapes only rename
        registers (no data moves)."""
        ROWS: gl.constexpr = x.shape[0]
        GROUPS: gl.constexpr = x.shape[1] // 8
        gl.static_assert(GROUPS == 8 or GROUPS == 16)
        a, b = gl.split(gl.reshape(x, [ROWS, GROUPS, 4, 2]))
        y = gl.permute(_fold(a, b, SUM), [0, 2, 1])  # [rows, 4 lanes, GROUPS in the thread]
        y = _halve(_halve(_halve(y, SUM), SUM), SUM)
        if GROUPS == 16:
            y = _halve(y, SUM)
        return gl.reshape(y, [ROWS, 4])

    @gluon.jit
    def _row_max(x):
        """gl.max(x, 1), the quad's shuffles after _per_lane's tree."""
        return gl.max(_per_lane(x, False), 1)

    @gluon.jit
    def _rescaled_sums(l_lanes, alpha, p):
        """The running row sums, per lane of the quad ([rows, 4]: each lane's share of its row),
        rescaled by alpha, plus block p's. The quad's lanes are added once, after the last block
        (so no shuffles per block)."""
        alpha = gl.convert_layout(alpha, gl.SliceLayout(1, l_lanes.type.layout), assert_trivial=True)
        return l_lanes * alpha[:, None] + _per_lane(p, True)

    @gluon.jit
    def _rescaled(acc, alpha):
        """acc (the blocks before a block, at the old max) rescaled by alpha to that block's max."""
        return acc * gl.convert_layout(alpha, gl.SliceLayout(1, acc.type.layout))[:, None]

    @gluon.jit
    def _pv_operand(p, acc, dtype: gl.constexpr):
        """p in fp16/bf16 as the PV wgmma's register operand (acc: that wgmma's accumulator)."""
        return gl.convert_layout(p.to(dtype), gl.DotOperandLayout(operand_index=0, parent=acc.type.layout, k_width=2))

    @gluon.jit
    def _stage_bias(bias_slot, kind_slot, mask_row, start_n, Lk, sm_n, BLOCK_N: gl.constexpr,
                    MASK_KIND: gl.constexpr):
        """The loader's copy of a per-key mask's values for keys [start_n, start_n + BLOCK_N) into a
        ring slot, as what the consumers add to the scores in the log2 domain: -inf for a False key
        (bool) or a -inf bias, else bias * log2(e) kept above _FINITE_FLOOR, as the program keeps it
        (a row masked everywhere by transformers' finite minimum then averages its values, as torch
        computes it). Keys past Lk read nothing (the consumers mask them). Beside it, the block's
        kind (_LIVE, _DEAD or _MIXED over its keys before Lk), so that a consumer skips the bias
        where it changes nothing: every block of a padding mask but the one where the padding
        starts is live or dead."""
        layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
        cols = start_n + gl.arange(0, BLOCK_N, layout=layout)
        inside = cols < Lk
        values = gl.load(mask_row + cols.to(gl.int64) * sm_n, mask=inside, other=0)
        if MASK_KIND == 1:
            bias = gl.where(values != 0, 0.0, float("-inf"))
        else:
            values = values.to(gl.float32)
            bias = gl.where(values == float("-inf"), values,  # a NaN stays NaN, as in torch
                            gl.maximum(values * _LOG2E, _FINITE_FLOOR, propagate_nan=_NAN_PROPAGATES))
        bias_slot.store(bias)
        live = gl.min(gl.where(inside & (bias != 0.0), 0, 1), 0)  # NaN is neither live nor dead
        dead = gl.min(gl.where(inside & (bias != float("-inf")), 0, 1), 0)
        kind = gl.where(live == 1, _LIVE, gl.where(dead == 1, _DEAD, _MIXED))
        kind_slot.store(gl.zeros([1], gl.int32, layout) + kind)
        partition_barrier()  # every loader thread's values are in before the K copy's arrive announces them

    @gluon.jit
    def _block_kind(kinds_smem, slot):
        """The kind the loader found for ring slot `slot`'s key block (the same in every thread)."""
        layout: gl.constexpr = gl.BlockedLayout([1], [32], [gl.num_warps()], [0])
        return gl.max(kinds_smem.index(slot).load(layout), 0)

    @gluon.jit
    def _masked_softmax_step(qk, bias_smem, kinds_smem, slot, k_empty_slot, l_i, m_i, QK_SCALE: gl.constexpr):
        """The online softmax of a key block under a per-key mask (every key before Lk and the
        causal diagonal), by the kind the loader found: a live block takes the unmasked step, a
        dead one leaves the row's state as it was (p = 0, alpha = 1), a mixed one adds the biases.
        Reads what it needs of the slot, then releases its K (the loader refills both)."""
        s_layout: gl.constexpr = qk.type.layout
        kind = _block_kind(kinds_smem, slot)
        if kind == _MIXED or (kind == _LIVE and QK_SCALE < 0):  # a live block's bias is 0
            bias = _bias(bias_smem, slot, s_layout)
            mbarrier.arrive(k_empty_slot, count=1)
            p, alpha, l_new, m_new = _biased_softmax_step(qk, bias, l_i, m_i, QK_SCALE)
        elif kind == _LIVE:
            mbarrier.arrive(k_empty_slot, count=1)
            p, alpha, l_new, m_new = _softmax_step(qk, l_i, m_i, QK_SCALE)
        else:
            mbarrier.arrive(k_empty_slot, count=1)
            p = gl.zeros_like(qk)
            alpha = gl.full_like(m_i, 1.0)
            l_new = l_i
            m_new = m_i
        return p, alpha, l_new, m_new

    @gluon.jit
    def _bias(bias_smem, slot, s_layout: gl.constexpr):
        """Slot `slot`'s per-key bias as a row of the scores' layout (read before the slot's K is
        released: the loader refills both once it is)."""
        return bias_smem.index(slot).load(gl.SliceLayout(0, s_layout))

    @gluon.jit
    def _guarded_step(s, row_max, l_i, m_i):
        """The online softmax of a block of scaled scores s (log2 domain; row_max: their max per
        row) where some may be -inf (masked keys): a row that has seen no live key yet keeps
        m = -inf, and subtracting 0 there keeps its p and alpha at 0."""
        m_new = gl.maximum(m_i, row_max)
        m_sub = gl.where(m_new == float("-inf"), 0.0, m_new)
        p = gl.exp2(s - m_sub[:, None])
        alpha = gl.exp2(m_i - m_sub)
        return p, alpha, _rescaled_sums(l_i, alpha, p), m_new

    @gluon.jit
    def _biased_softmax_step(qk, bias, l_i, m_i, QK_SCALE: gl.constexpr):
        """_softmax_step with a per-key bias (log2 domain) added to the scaled scores (the row max
        as _softmax_step takes it, a tree in the thread)."""
        s = qk * QK_SCALE + bias[None, :]
        return _guarded_step(s, gl.convert_layout(_row_max(s), m_i.type.layout, assert_trivial=True), l_i, m_i)

    @gluon.jit
    def _softmax_step(qk, l_i, m_i, QK_SCALE: gl.constexpr):
        """The online softmax of a fully visible block: (p, alpha, l, m). Scaling and subtracting
        the max are one FMA per score (QK_SCALE >= 0: the max of scaled scores is the scaled max)."""
        m_new = gl.maximum(m_i, gl.convert_layout(_row_max(qk), m_i.type.layout, assert_trivial=True) * QK_SCALE)
        p = gl.exp2(qk * QK_SCALE - m_new[:, None])
        alpha = gl.exp2(m_i - m_new)
        return p, alpha, _rescaled_sums(l_i, alpha, p), m_new

    @gluon.jit
    def _full_block_softmax(qk, bias_smem, kinds_smem, slot, k_empty_slot, l_i, m_i, QK_SCALE: gl.constexpr,
                            MASK_KIND: gl.constexpr):
        """The softmax of a block every row sees whole (no boundary), releasing its K slot: the
        biased step under a per-key mask, the plain one without."""
        if MASK_KIND != 0:
            p, alpha, l_i, m_i = _masked_softmax_step(qk, bias_smem, kinds_smem, slot, k_empty_slot, l_i, m_i,
                                                      QK_SCALE)
        else:
            mbarrier.arrive(k_empty_slot, count=1)
            p, alpha, l_i, m_i = _softmax_step(qk, l_i, m_i, QK_SCALE)
        return p, alpha, l_i, m_i

    @gluon.jit
    def _full_blocks_overlapped(it0, n_full, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn, next_turn,
                                acc, l_i, m_i, bias_smem, kinds_smem, QK_SCALE: gl.constexpr, STAGES: gl.constexpr,
                                BLOCK_N: gl.constexpr, FIRST: gl.constexpr, PINGPONG: gl.constexpr,
                                MASK_KIND: gl.constexpr):
        """Key blocks [0, n_full) (ring positions it0 + j) with block j's QK^T and block j-1's PV
        in flight together, so this group's softmax of block j runs beside its own PV
        (FlashAttention-3's intra-warpgroup pipelining). Needs QK_SCALE >= 0 without a mask."""
        s_layout: gl.constexpr = wgmma_layout(BLOCK_N)
        if n_full > 0:
            slot = it0 % STAGES
            mbarrier.wait(k_ready.index(slot), (it0 // STAGES) & 1)
            _take_turn(turn, it0, FIRST, PINGPONG)
            qk = _issue_qk(q, k_smem.index(slot), s_layout)
            _pass_turn(next_turn, PINGPONG)
            qk = warpgroup_mma_wait(num_outstanding=0, deps=(qk,))
            p, alpha, l_i, m_i = _full_block_softmax(qk, bias_smem, kinds_smem, slot, k_empty.index(slot), l_i, m_i,
                                                     QK_SCALE, MASK_KIND)
            mbarrier.wait(v_ready.index(slot), (it0 // STAGES) & 1)  # every block's V: after its softmax
            p16 = _pv_operand(p, acc, q.dtype)
            for it in range(it0 + 1, it0 + n_full):
                slot = it % STAGES
                prev = (it - 1) % STAGES
                mbarrier.wait(k_ready.index(slot), (it // STAGES) & 1)
                _take_turn(turn, it, FIRST, PINGPONG)
                qk = _issue_qk(q, k_smem.index(slot), s_layout)
                acc = warpgroup_mma(p16, v_smem.index(prev), acc, is_async=True)
                _pass_turn(next_turn, PINGPONG)
                qk = warpgroup_mma_wait(num_outstanding=1, deps=(qk,))  # this QK^T, not the PV issued after it
                p, alpha, l_i, m_i = _full_block_softmax(qk, bias_smem, kinds_smem, slot, k_empty.index(slot), l_i,
                                                         m_i, QK_SCALE, MASK_KIND)
                # This block's V (the next PV's operand) is waited for here, between the softmax
                # and the PV wait below: the wait is a branch, and without one ptxas hoisted the PV
                # wait above the exponentials (the softmax ran after this group's PV, not beside
                # it). Not the next block's K: with two stages its V slot is the one freed below.
                mbarrier.wait(v_ready.index(slot), (it // STAGES) & 1)
                acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
                mbarrier.arrive(v_empty.index(prev), count=1)
                # acc holds the blocks before this one at the old max: rescale it to this one's.
                acc = _rescaled(acc, alpha)
                p16 = _pv_operand(p, acc, q.dtype)
            last = it0 + n_full - 1
            acc = warpgroup_mma(p16, v_smem.index(last % STAGES), acc, is_async=True)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            mbarrier.arrive(v_empty.index(last % STAGES), count=1)
        return acc, l_i, m_i

    @gluon.jit
    def _consume(q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turns, o_ptr, so_b,
                 so_w, so_h, so_m, bias_smem, kinds_smem, num_m, tiles, H, W, H_KV, Lq, Lk, D,
                 causal_offset, QK_SCALE: gl.constexpr, CAUSAL: gl.constexpr, STAGES: gl.constexpr,
                 BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr, ROWS: gl.constexpr, OVERLAP: gl.constexpr,
                 PINGPONG: gl.constexpr, MASK_KIND: gl.constexpr, GROUP: gl.constexpr):
        """One consumer warp group: rows [start_m + GROUP * ROWS, + ROWS) of each of the program's
        query tiles."""
        s_layout: gl.constexpr = wgmma_layout(BLOCK_N)
        o_layout: gl.constexpr = wgmma_layout(HEAD_DIM)
        q_smem = q_smem.index(GROUP)
        turn = turns.index(GROUP)
        next_turn = turns.index(1 - GROUP)
        FIRST: gl.constexpr = GROUP == 0
        it = 0  # key blocks consumed so far: the ring position
        count = 0  # tiles done so far: Q's phase
        for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
            b, w, h, h_kv, start_m, n_full, n_end = _tile(t, num_m, tiles, H, W, H_KV, Lk, causal_offset, CAUSAL,
                                                         2 * ROWS, BLOCK_N)
            first = start_m + GROUP * ROWS
            offs_m = first + gl.arange(0, ROWS, layout=gl.SliceLayout(1, s_layout))
            offs_n = gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, s_layout))
            acc = gl.zeros([ROWS, HEAD_DIM], gl.float32, o_layout)
            l_i = _per_lane(gl.zeros([ROWS, BLOCK_N], gl.float32, s_layout), True)  # [ROWS, 4]: per quad lane
            m_i = gl.full([ROWS], float("-inf"), gl.float32, gl.SliceLayout(1, s_layout))
            mbarrier.wait(q_ready, count & 1)
            if HEAD_DIM <= _Q_IN_REGISTERS_UP_TO:
                # The queries as the first wgmma operand in registers: their buffer is free at once, and
                # the loader fetches the next tile's while this one runs (from shared memory, the next
                # tile waited for them: 0.030 against 0.033 ms at 512 keys, 1.64 against 1.74 at 8,192).
                q = q_smem.load(gl.DotOperandLayout(operand_index=0, parent=s_layout, k_width=2))
                mbarrier.arrive(q_empty, count=1)
            else:
                q = q_smem  # read by each QK^T from shared memory: released after the tile's last
            if OVERLAP and (QK_SCALE >= 0 or MASK_KIND != 0):
                acc, l_i, m_i = _full_blocks_overlapped(it, n_full, q, k_smem, v_smem, k_ready, v_ready, k_empty,
                                                        v_empty, turn, next_turn, acc, l_i, m_i, bias_smem, kinds_smem,
                                                        QK_SCALE, STAGES, BLOCK_N, FIRST, PINGPONG, MASK_KIND)
            else:
                for j in range(0, n_full):
                    acc, l_i, m_i = _key_block(it + j, j, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty,
                                               turn, next_turn, acc, l_i, m_i, offs_m, offs_n, Lk, causal_offset,
                                               bias_smem, kinds_smem, QK_SCALE, STAGES, BLOCK_N, CAUSAL, False,
                                               FIRST, PINGPONG, MASK_KIND)
            for j in range(n_full, n_end):
                acc, l_i, m_i = _key_block(it + j, j, q, k_smem, v_smem, k_ready, v_ready, k_empty, v_empty, turn,
                                           next_turn, acc, l_i, m_i, offs_m, offs_n, Lk, causal_offset, bias_smem,
                                           kinds_smem, QK_SCALE, STAGES, BLOCK_N, CAUSAL, True, FIRST, PINGPONG,
                                           MASK_KIND)
            it += n_end
            count += 1
            if HEAD_DIM > _Q_IN_REGISTERS_UP_TO:
                mbarrier.arrive(q_empty, count=1)  # every QK^T of the tile has been waited for
            # A row that sees no key has l = 0 and acc = 0: dividing by 1 gives torch's 0, not 0/0.
            l_o = gl.convert_layout(gl.sum(l_i, 1), gl.SliceLayout(1, o_layout))
            out = acc / gl.where(l_o > 0.0, l_o, 1.0)[:, None]
            rows = first + gl.arange(0, ROWS, layout=gl.SliceLayout(1, o_layout))
            cols = gl.arange(0, HEAD_DIM, layout=gl.SliceLayout(0, o_layout))
            base = b.to(gl.int64) * so_b + w.to(gl.int64) * so_w + h.to(gl.int64) * so_h
            ptrs = o_ptr + base + rows[:, None].to(gl.int64) * so_m + cols[None, :]
            gl.store(ptrs, out.to(o_ptr.dtype.element_ty), mask=(rows < Lq)[:, None] & (cols < D)[None, :])

    @gluon.jit
    def _load(q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, bias_smem, kinds_smem, q_ready, q_empty, k_ready,
              v_ready, k_empty, v_empty, mask_ptr, sm_b, sm_w, sm_h, sm_n, num_m, tiles, H, W, H_KV, Lk, causal_offset,
              CAUSAL: gl.constexpr, STAGES: gl.constexpr, BLOCK_N: gl.constexpr, HEAD_DIM: gl.constexpr,
              ROWS: gl.constexpr, MASK_KIND: gl.constexpr):
        """The loader: per tile, Q's two halves once both consumers are done with the last tile's (have
        copied it into registers, or past head dim 128 run its last QK^T), then its K and V blocks into
        the ring, running ahead into the next tile's. A per-key mask's block goes into the ring beside
        its K (announced by the K's barrier)."""
        it = 0
        count = 0
        for t in range(gl.program_id(0), tiles, gl.num_programs(0)):
            b, w, h, h_kv, start_m, n_full, n_end = _tile(t, num_m, tiles, H, W, H_KV, Lk, causal_offset, CAUSAL,
                                                         2 * ROWS, BLOCK_N)
            # a per-key mask's values for this (batch, window, head); mask_ptr is o's without a mask
            mask_row = mask_ptr + b.to(gl.int64) * sm_b + w.to(gl.int64) * sm_w + h.to(gl.int64) * sm_h
            # A fresh barrier counts as having completed the phase before its first: round 0 passes.
            mbarrier.wait(q_empty, (count & 1) ^ 1)
            mbarrier.expect(q_ready, 2 * q_desc.block_type.nbytes)
            for g in gl.static_range(2):
                tma_load(q_desc, [b, w, h, start_m + g * ROWS, 0], q_ready, as_block(q_smem.index(g), q_desc))
            for j in range(0, n_end):
                slot = it % STAGES
                empty_phase = ((it // STAGES) & 1) ^ 1
                mbarrier.wait(k_empty.index(slot), empty_phase)
                if MASK_KIND != 0:
                    _stage_bias(bias_smem.index(slot), kinds_smem.index(slot), mask_row, j * BLOCK_N, Lk, sm_n,
                                BLOCK_N, MASK_KIND)
                mbarrier.expect(k_ready.index(slot), k_desc.block_type.nbytes)
                tma_load(k_desc, [b, w, h_kv, j * BLOCK_N, 0], k_ready.index(slot),
                         as_block(k_smem.index(slot), k_desc))
                mbarrier.wait(v_empty.index(slot), empty_phase)
                mbarrier.expect(v_ready.index(slot), v_desc.block_type.nbytes)
                tma_load(v_desc, [b, w, h_kv, j * BLOCK_N, 0], v_ready.index(slot),
                         as_block(v_smem.index(slot), v_desc))
                it += 1
            count += 1

    @gluon.jit
    def attention_hopper_kernel(q_desc, k_desc, v_desc, o_ptr, so_b, so_w, so_h, so_m, mask_ptr, sm_b, sm_w, sm_h,
                                sm_n, W, H, H_KV, Lq, Lk, D, causal_offset, tiles, QK_SCALE: gl.constexpr,
                                CAUSAL: gl.constexpr, STAGES: gl.constexpr, BLOCK_N: gl.constexpr,
                                HEAD_DIM: gl.constexpr, OVERLAP: gl.constexpr, PINGPONG: gl.constexpr,
                                MASK_KIND: gl.constexpr = 0):
        """Persistent: program p runs query tiles p, p + programs, ... (128 rows of one (batch,
        window, head) each); the loader streams K and V across tile boundaries."""
        ROWS: gl.constexpr = 64
        num_m = gl.cdiv(Lq, 2 * ROWS)
        dtype: gl.constexpr = q_desc.dtype
        q_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([ROWS, HEAD_DIM], dtype)
        kv_layout: gl.constexpr = gl.NVMMASharedLayout.get_default_for([BLOCK_N, HEAD_DIM], dtype)
        q_smem = gl.allocate_shared_memory(dtype, [2, ROWS, HEAD_DIM], q_layout)
        k_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
        v_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_N, HEAD_DIM], kv_layout)
        # a per-key mask's blocks, as log2-domain biases (one slot beside each K; a token one without a mask)
        BIAS_SLOTS: gl.constexpr = STAGES if MASK_KIND != 0 else 1
        BIAS_N: gl.constexpr = BLOCK_N if MASK_KIND != 0 else 1
        bias_smem = gl.allocate_shared_memory(gl.float32, [BIAS_SLOTS, BIAS_N], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        kinds_smem = gl.allocate_shared_memory(gl.int32, [BIAS_SLOTS, 1], gl.SwizzledSharedLayout(1, 1, 1, [0]))
        q_ready = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        q_empty = gl.allocate_shared_memory(gl.int64, [1], mbarrier.MBarrierLayout())
        k_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_ready = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        k_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        v_empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        turns = gl.allocate_shared_memory(gl.int64, [2, 1], mbarrier.MBarrierLayout())  # PINGPONG's order
        mbarrier.init(q_ready, count=1)
        mbarrier.init(q_empty, count=2)  # both consumer groups release the Q buffer and every K/V slot
        for i in gl.static_range(STAGES):
            mbarrier.init(k_ready.index(i), count=1)
            mbarrier.init(v_ready.index(i), count=1)
            mbarrier.init(k_empty.index(i), count=2)
            mbarrier.init(v_empty.index(i), count=2)
        for g in gl.static_range(2):
            mbarrier.init(turns.index(g), count=1)
        gl.warp_specialize([
            (_load, (q_desc, k_desc, v_desc, q_smem, k_smem, v_smem, bias_smem, kinds_smem, q_ready, q_empty, k_ready,
                     v_ready, k_empty, v_empty, mask_ptr, sm_b, sm_w, sm_h, sm_n, num_m, tiles, H, W, H_KV, Lk,
                     causal_offset, CAUSAL, STAGES, BLOCK_N, HEAD_DIM, ROWS, MASK_KIND)),
            (_consume, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turns, o_ptr,
                        so_b, so_w, so_h, so_m, bias_smem, kinds_smem, num_m, tiles, H, W, H_KV, Lq, Lk, D,
                        causal_offset, QK_SCALE, CAUSAL, STAGES, BLOCK_N, HEAD_DIM, ROWS, OVERLAP, PINGPONG,
                        MASK_KIND, 0)),
            (_consume, (q_smem, k_smem, v_smem, q_ready, q_empty, k_ready, v_ready, k_empty, v_empty, turns, o_ptr,
                        so_b, so_w, so_h, so_m, bias_smem, kinds_smem, num_m, tiles, H, W, H_KV, Lq, Lk, D,
                        causal_offset, QK_SCALE, CAUSAL, STAGES, BLOCK_N, HEAD_DIM, ROWS, OVERLAP, PINGPONG,
                        MASK_KIND, 1)),
        ], [CONSUMER_WARPS, CONSUMER_WARPS], [CONSUMER_REGISTERS, CONSUMER_REGISTERS])


# ------------------------------------------------------------------------------- launch ----
def available(device: torch.device) -> bool:
    """Gluon's Hopper module and a compute-capability 9.x device (not the interpreter)."""
    return (HAVE_GLUON and device.type == "cuda" and not is_interpreter()
            and torch.cuda.get_device_capability(device)[0] == 9)


def why_not(plan, dtype, zero_nan_rows: bool = False, pointers=()) -> str | None:
    """Why this kernel cannot run a problem (kernels/attention.py's plan_launch), or None: what the
    template takes and what TMA demands of the operands' strides and, where given, of the data
    pointers of q, k, v and o (16-byte aligned: known only at launch)."""
    if dtype not in DTYPES:
        return f"dtype {dtype}"
    if plan.D != plan.DV or kernel_head_dim(plan.D) is None:
        return f"head dims {plan.D}/{plan.DV}"
    if plan.mask_kind and not plan.mask_per_key:
        return "a mask that varies along the query rows"
    if zero_nan_rows:
        return "the NaN-row guard"
    if plan.Lk == 0:
        return "no keys"
    elem = dtype.itemsize
    for name, shape, strides in zip("qkvo", _shapes(plan), (plan.strides[0], plan.strides[1], plan.strides[2],
                                                           plan.strides[4])):
        if strides[4] != 1 or any(s * elem % 16 for s in strides[:4]):
            return f"{name}'s strides {list(strides)}"
        if any(n > 1 and s == 0 for n, s in zip(shape, strides)):
            return f"{name} is broadcast (stride 0) along a dim"
    return why_not_at_launch(dtype, pointers)


def why_not_at_launch(dtype, pointers) -> str | None:
    """The part of why_not a generated kernel checks per launch (its operands' dtype, and which
    of q, k, v, o does not start 16-byte aligned, as TMA wants); the rest is settled when it is
    generated."""
    if dtype not in DTYPES:
        return f"dtype {dtype}"
    for name, pointer in zip("qkvo", pointers):
        if pointer % 16:
            return f"{name} does not start 16-byte aligned"
    return None


def kernel_head_dim(head_dim: int) -> int | None:
    """The head-dim block the kernel runs a head dim at (the next of KERNEL_HEAD_DIMS), or None
    past the largest."""
    return next((d for d in KERNEL_HEAD_DIMS if head_dim <= d), None)


def smem_bytes(cfg, head_dim: int, elem_bytes: int = 2, masked: bool = False) -> int:
    """The Q tile and num_stages K and V blocks at the kernel's head-dim block, and with a mask its
    fp32 bias beside each K block (the barriers take a few bytes more)."""
    bias = cfg.num_stages * cfg.BLOCK_N * 4 if masked else 0
    return (BLOCK_M + 2 * cfg.num_stages * cfg.BLOCK_N) * kernel_head_dim(head_dim) * elem_bytes + bias


def why_unfit(cfg, head_dim: int = MAX_HEAD_DIM, masked: bool = False) -> str | None:
    """Why a WS config cannot run at this head dim (with a per-key mask), or None."""
    if kernel_head_dim(head_dim) is None:
        return f"head dim {head_dim} is past the {MAX_HEAD_DIM} it takes"
    if cfg.BLOCK_M != BLOCK_M or cfg.BLOCK_N not in (64, 128) or (cfg.num_stages or 0) < 2:
        return f"takes BLOCK_M={BLOCK_M}, BLOCK_N of 64 or 128 and 2+ stages"
    if smem_bytes(cfg, head_dim, masked=masked) > SMEM_LIMIT:
        return "shared memory"
    return None


def _shapes(plan) -> tuple[tuple[int, ...], ...]:
    """q, k, v and o as [B, W, H, L, D]."""
    return ((plan.B, plan.W, plan.H, plan.Lq, plan.D), (plan.B, plan.W, plan.H_KV, plan.Lk, plan.D),
            (plan.B, plan.W, plan.H_KV, plan.Lk, plan.DV), (plan.B, plan.W, plan.H, plan.Lq, plan.DV))


def _descriptor_strides(shape, strides) -> list[int]:
    """TMA wants every stride nonzero: a size-1 dim (stride 0 from as_5d's padding) takes the
    packed stride over the dims inside it, which is never used to step."""
    out = list(strides)
    for i in range(len(shape) - 2, -1, -1):
        if shape[i] == 1 and out[i] == 0:
            out[i] = out[i + 1] * shape[i + 1]
    return out


def _descriptor(t: torch.Tensor, shape, strides, rows: int):
    """TMA over t's [B, W, H, L, D] view, in blocks of `rows` rows of the kernel's head-dim block
    (past D, past L and past the view's other dims it reads zeros)."""
    block = (1, 1, 1, rows, kernel_head_dim(shape[4]))
    return TensorDescriptor(t, list(shape), _descriptor_strides(shape, strides), list(block),
                            shared_layout(block, t.dtype))


def launch(q, k, v, o, plan, scale: float, config: dict, mask: torch.Tensor | None = None) -> None:
    """o = attention(q, k, v, mask) for a plan why_not accepted, with a WS config's launch dict
    (kernels/attention.py's hopper_config: BLOCK_N keys per step, num_stages K/V blocks in flight,
    OVERLAP). mask: the plan's per-key mask (read at the plan's strides), or None."""
    if (mask is None) != (not plan.mask_kind):
        given = "none" if mask is None else "one"
        raise ValueError(f"the plan's mask kind is {plan.mask_kind}, and {given} was given")
    block_n = config["BLOCK_N"]
    qs, ks, vs, _ = _shapes(plan)
    q_desc = _descriptor(q, qs, plan.strides[0], BLOCK_M // 2)
    k_desc = _descriptor(k, ks, plan.strides[1], block_n)
    v_desc = _descriptor(v, vs, plan.strides[2], block_n)
    so = plan.strides[4]
    tiles = triton.cdiv(plan.Lq, BLOCK_M) * plan.heads
    grid = (min(tiles, sm_count(q.device)),)
    sm = plan.strides[3]  # [B, W, H, Lq (0: per key), Lk]
    attention_hopper_kernel[grid](
        q_desc, k_desc, v_desc, o, so[0], so[1], so[2], so[3], o if mask is None else mask, sm[0], sm[1], sm[2],
        sm[4], plan.W, plan.H, plan.H_KV, plan.Lq, plan.Lk, plan.D, plan.causal_offset or 0, tiles,
        QK_SCALE=scale * LOG2E, CAUSAL=plan.causal_offset is not None, STAGES=config["num_stages"], BLOCK_N=block_n,
        HEAD_DIM=kernel_head_dim(plan.D), OVERLAP=bool(config.get("OVERLAP", 0)),
        PINGPONG=bool(config.get("PINGPONG", 0)), MASK_KIND=plan.mask_kind, num_warps=LOADER_WARPS)
