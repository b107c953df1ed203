"""A warp-specialized GEMM on Hopper (sm_90), in Gluon: the product and the generated epilogue.

kernels/matmul.py's Triton tile runs its K loop and then its epilogue (bias, GELU, residual,
casts) with the tensor cores idle, and without warp specialization its loads and its wgmma share
one instruction stream: on ViT-B/16's, BERT's and ConvNeXt's Linear shapes it reaches 50-60% of
cuBLAS (docs/performance.md, "Library GEMMs"). This kernel splits the work as CUTLASS's
"ping-pong" kernels do:

- a loader partition (the default one, 4 warps, its registers handed to the others) walks the
  program's output tiles in order and issues TMA copies of each tile's A and B blocks into one
  ring of STAGES slots, running ahead into the next tile while this one's K loop runs; a slot is
  refilled once the group that read it has released it (`empty`);
- two consumer warp groups (4 warps each, 240 registers) take the program's tiles in turn (group
  0 the even ones, group 1 the odd ones). Each runs its tile's K loop as asynchronous wgmma (one
  in flight while the next block's wait) and then the epilogue.

The ring is filled in tile order, so a group's K loop starts as the other's nears its end: the
two K loops take turns on the tensor cores, and each group's epilogue runs beside the other's K
loop (the ping-pong), which is the time the Triton tile loses. The ring is one, so all of its
slots are in flight whichever group reads them: with a ring per group, the loader waited on the
group at work and the other ring sat full, STAGES of the 2 x STAGES slots loading, and each K loop
waited on its loads (the kernel trailed the Triton tile on every ViT-B/16 GEMM, docs/performance.md).

A slot announces each fill on the barrier of the group it is for (`ready`, one per group and
slot): an mbarrier wait names a phase by its parity only, so a group waiting on a barrier that
also counted the other group's fills could take a fill two phases old for the one it waits for.
On its own barriers a group sees every fill, and it keeps their parities in a bit mask.

The epilogue is the generated kernel's own `@triton.jit` function (compiler/codegen/kernels.py's
`epilogue`), called on the accumulator in its wgmma layout with row and column offsets in that
layout's slices: every fused op a generated GEMM has runs here unchanged, and its stores keep
their masks. Operands are read through 2-D TMA descriptors: rows, columns and K past the tensors
read as zeros, so no operand is read outside its extent.

What it takes (`why_not`): fp16 / bf16 operands of one dtype, a 2-D problem (batch dims folded
into M), A row-major with 16-byte aligned row stride, B K-major ([N, K], nn.Linear's weight) or
row-major ([K, N]) likewise; 16-byte aligned base pointers (checked at launch). Everything else
runs the Triton tile.
"""
from __future__ import annotations

import torch

import triton

from trident.kernels.common import is_interpreter
from trident.kernels.tma import ALIGN_BYTES, strides_fit

from trident.kernels.gluon_hopper import HAVE_GLUON, LOADER_WARPS, SMEM_LIMIT, shared_layout, sm_count

if HAVE_GLUON:
    from trident.kernels.gluon_hopper import (CONSUMER_REGISTERS, CONSUMER_WARPS, TensorDescriptor, gl, gluon,
                                              mbarrier, tma_load, warpgroup_mma, warpgroup_mma_wait, wgmma_layout)

DTYPES = (torch.float16, torch.bfloat16)
# A consumer group's accumulator is BLOCK_M x BLOCK_N fp32 over 128 threads: at most 128 registers
# a thread, so the epilogue's temporaries fit the 240 each consumer gets.
MAX_ACC_REGISTERS = 128


if HAVE_GLUON:
    # A tile at least four times this wide runs its epilogue on column quarters.
    MIN_EPILOGUE_COLUMNS = gl.constexpr(32)

    @gluon.constexpr_function
    def epilogue_layout(cols, coalesced):
        """A consumer group's layout for the epilogue of a [rows, cols] accumulator block: wgmma's
        own (a thread holds pairs of columns, so its loads and stores move 4 bytes each), or,
        coalesced, rows of 8 consecutive values a thread (16-byte loads and stores; the block
        moves there through shared memory)."""
        if not coalesced:
            return wgmma_layout(cols)
        across = min(cols // 8, 32)
        return gl.BlockedLayout(size_per_thread=[1, 8], threads_per_warp=[32 // across, across],
                                warps_per_cta=[4, 1], order=[1, 0])

    @gluon.jit
    def _tile_coords(t, num_m, num_n, GROUP_M: gl.constexpr):
        """Output tile t's (row block, column block): GROUP_M row blocks share each column block in
        turn, so a wave of programs reads a few B column blocks and A row blocks from L2."""
        in_group = GROUP_M * num_n
        first_m = (t // in_group) * GROUP_M
        rows = gl.minimum(num_m - first_m, GROUP_M)
        return first_m + (t % in_group) % rows, (t % in_group) // rows

    @gluon.jit
    def _ring_slot(tile, kk, k_tiles, STAGES: gl.constexpr):
        """The ring slot of the program's tile-th output tile's kk-th K block, and the fill's
        number in that slot (the program's earlier tiles took tile * k_tiles fills of the ring)."""
        it = tile * k_tiles + kk
        return it % STAGES, it // STAGES

    @gluon.jit
    def _load(a_desc, b_desc, a_smem, b_smem, ready, empty, M, N, K, B_K_MAJOR: gl.constexpr,
              BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
              GROUP_M: gl.constexpr):
        """The loader: every K block of the program's tiles, in order, into the ring, each announced
        on the ready barrier of the group that owns its tile."""
        num_m = gl.cdiv(M, BLOCK_M)
        num_n = gl.cdiv(N, BLOCK_N)
        k_tiles = gl.cdiv(K, BLOCK_K)
        pid = gl.program_id(0)
        programs = gl.num_programs(0)
        for i in range(0, gl.cdiv(num_m * num_n - pid, programs)):
            pid_m, pid_n = _tile_coords(pid + i * programs, num_m, num_n, GROUP_M)
            for kk in range(k_tiles):
                slot, fill = _ring_slot(i, kk, k_tiles, STAGES)
                # A fresh barrier counts as having completed the phase before its first: round 0 passes.
                mbarrier.wait(empty.index(slot), (fill & 1) ^ 1)
                announce = ready.index((i % 2) * STAGES + slot)
                mbarrier.expect(announce, a_desc.block_type.nbytes + b_desc.block_type.nbytes)
                tma_load(a_desc, [pid_m * BLOCK_M, kk * BLOCK_K], announce, a_smem.index(slot))
                if B_K_MAJOR:
                    tma_load(b_desc, [pid_n * BLOCK_N, kk * BLOCK_K], announce, b_smem.index(slot))
                else:
                    tma_load(b_desc, [kk * BLOCK_K, pid_n * BLOCK_N], announce, b_smem.index(slot))

    @gluon.jit
    def _b_operand(b_smem, slot, B_K_MAJOR: gl.constexpr):
        """Slot's B block as wgmma's [BLOCK_K, BLOCK_N] operand (a K-major block, transposed in place)."""
        if B_K_MAJOR:
            block = b_smem.index(slot).permute((1, 0))
        else:
            block = b_smem.index(slot)
        return block

    @gluon.jit
    def _consume(a_smem, b_smem, ready, empty, M, N, K, epilogue_args, EPILOGUE: gl.constexpr,
                 B_K_MAJOR: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr,
                 STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr, GROUP: gl.constexpr):
        """Consumer group GROUP: the program's tiles GROUP, GROUP + 2, ..., each K loop then
        EPILOGUE(epilogue_args, acc, offs_m, offs_n, BLOCK_M, BLOCK_N)."""
        layout: gl.constexpr = wgmma_layout(BLOCK_N)
        num_m = gl.cdiv(M, BLOCK_M)
        num_n = gl.cdiv(N, BLOCK_N)
        k_tiles = gl.cdiv(K, BLOCK_K)
        pid = gl.program_id(0)
        programs = gl.num_programs(0)
        phases = 0  # bit s: the parity of the next fill of slot s for this group
        for i in range(GROUP, gl.cdiv(num_m * num_n - pid, programs), 2):
            pid_m, pid_n = _tile_coords(pid + i * programs, num_m, num_n, GROUP_M)
            acc = gl.zeros([BLOCK_M, BLOCK_N], gl.float32, layout)
            for kk in range(k_tiles):
                slot, _ = _ring_slot(i, kk, k_tiles, STAGES)
                mbarrier.wait(ready.index(GROUP * STAGES + slot), (phases >> slot) & 1)
                phases ^= 1 << slot
                acc = warpgroup_mma(a_smem.index(slot), _b_operand(b_smem, slot, B_K_MAJOR), acc, is_async=True)
                # One wgmma in flight: the one before it has finished reading its slot.
                acc = warpgroup_mma_wait(num_outstanding=1, deps=(acc,))
                previous, _ = _ring_slot(i, gl.maximum(kk - 1, 0), k_tiles, STAGES)
                mbarrier.arrive(empty.index(previous), count=1, pred=kk > 0)
            acc = warpgroup_mma_wait(num_outstanding=0, deps=(acc,))
            # The last block's slot, computed again rather than carried out of the loop: with the
            # slot as a value the loop hands on, ptxas (sm_90a; Triton 3.6's and 3.9's) serialized
            # every wgmma of the kernel (ptxas -v: "wgmma.mma_async instructions are serialized due
            # to non wgmma instructions reading accumulator registers"), each waiting for the one
            # before it to finish (tests/test_gemm_hopper.py checks the SASS).
            last, _ = _ring_slot(i, k_tiles - 1, k_tiles, STAGES)
            mbarrier.arrive(empty.index(last), count=1, pred=k_tiles > 0)
            if BLOCK_N >= 4 * MIN_EPILOGUE_COLUMNS:
                _epilogue_in_quarters(EPILOGUE, epilogue_args, acc, pid_m, pid_n, BLOCK_M, BLOCK_N, COALESCED)
            else:
                out_layout: gl.constexpr = epilogue_layout(BLOCK_N, COALESCED)
                offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, out_layout))
                offs_n = pid_n * BLOCK_N + gl.arange(0, BLOCK_N, layout=gl.SliceLayout(0, out_layout))
                EPILOGUE(epilogue_args, gl.convert_layout(acc, out_layout), offs_m, offs_n, BLOCK_M, BLOCK_N)

    @gluon.jit
    def _epilogue_in_quarters(EPILOGUE: gl.constexpr, epilogue_args, acc, pid_m, pid_n, BLOCK_M: gl.constexpr,
                              BLOCK_N: gl.constexpr, COALESCED: gl.constexpr):
        """EPILOGUE on the accumulator's four column quarters in turn. Called on a whole 128 x 128
        tile (or a 64 x 256 one), the generated GELU and residual epilogues spill: their pointer
        tensors and loads sit beside 128 accumulators a thread. On halves the residual one still
        does (56 bytes a thread, Triton 3.6, sm_90); on quarters neither does. Each call is told the
        tile's width, not the quarter's: the generated epilogue drops its column mask where N is a
        multiple of the width it is given, and a quarter can fall past N where the tile does not
        (N = 96 on 128-wide tiles: the last quarter read past the bias)."""
        QUARTER: gl.constexpr = BLOCK_N // 4
        layout: gl.constexpr = epilogue_layout(QUARTER, COALESCED)
        # columns [BLOCK_M, 4, QUARTER] -> [BLOCK_M, QUARTER, 2, 2]: quarter j = 2 * j1 + j0 sits at
        # [..., j1, j0]; split() takes the last dim apart
        even, odd = acc.reshape([BLOCK_M, 4, QUARTER]).permute((0, 2, 1)).reshape([BLOCK_M, QUARTER, 2, 2]).split()
        q0, q2 = even.split()
        q1, q3 = odd.split()
        offs_m = pid_m * BLOCK_M + gl.arange(0, BLOCK_M, layout=gl.SliceLayout(1, layout))
        offs_n = pid_n * BLOCK_N + gl.arange(0, QUARTER, layout=gl.SliceLayout(0, layout))
        EPILOGUE(epilogue_args, gl.convert_layout(q0, layout), offs_m, offs_n, BLOCK_M, BLOCK_N)
        EPILOGUE(epilogue_args, gl.convert_layout(q1, layout), offs_m, offs_n + QUARTER, BLOCK_M, BLOCK_N)
        EPILOGUE(epilogue_args, gl.convert_layout(q2, layout), offs_m, offs_n + 2 * QUARTER, BLOCK_M, BLOCK_N)
        EPILOGUE(epilogue_args, gl.convert_layout(q3, layout), offs_m, offs_n + 3 * QUARTER, BLOCK_M, BLOCK_N)

    @gluon.jit
    def gemm_hopper(a_desc, b_desc, M, N, K, epilogue_args, EPILOGUE: gl.constexpr, B_K_MAJOR: gl.constexpr,
                    BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr,
                    GROUP_M: gl.constexpr, COALESCED: gl.constexpr = False):
        """A generated kernel's body (its `ws_kernel`): A [M, K] @ B, then EPILOGUE per output tile.
        Persistent: program p runs output tiles p, p + programs, ..."""
        dtype: gl.constexpr = a_desc.dtype
        a_smem = gl.allocate_shared_memory(dtype, [STAGES, BLOCK_M, BLOCK_K], a_desc.layout)
        b_smem = gl.allocate_shared_memory(dtype, [STAGES] + b_desc.block_type.shape, b_desc.layout)
        # A slot's fills are announced per consumer group (the module doc says why).
        ready = gl.allocate_shared_memory(gl.int64, [2 * STAGES, 1], mbarrier.MBarrierLayout())
        empty = gl.allocate_shared_memory(gl.int64, [STAGES, 1], mbarrier.MBarrierLayout())
        for s in gl.static_range(STAGES):
            mbarrier.init(ready.index(s), count=1)
            mbarrier.init(ready.index(STAGES + s), count=1)
            mbarrier.init(empty.index(s), count=1)  # one consumer group reads each fill
        gl.warp_specialize([
            (_load, (a_desc, b_desc, a_smem, b_smem, ready, empty, M, N, K, B_K_MAJOR, BLOCK_M, BLOCK_N, BLOCK_K,
                     STAGES, GROUP_M)),
            (_consume, (a_smem, b_smem, ready, empty, M, N, K, epilogue_args, EPILOGUE, B_K_MAJOR, BLOCK_M,
                        BLOCK_N, BLOCK_K, STAGES, GROUP_M, COALESCED, 0)),
            (_consume, (a_smem, b_smem, ready, empty, M, N, K, epilogue_args, EPILOGUE, B_K_MAJOR, BLOCK_M,
                        BLOCK_N, BLOCK_K, STAGES, GROUP_M, COALESCED, 1)),
        ], [CONSUMER_WARPS, CONSUMER_WARPS], [CONSUMER_REGISTERS, CONSUMER_REGISTERS])


# ------------------------------------------------------------------------------- choice ----
def available(device: torch.device | None = None) -> bool:
    """Gluon's Hopper module and a compute-capability 9.x device (not the interpreter)."""
    if not HAVE_GLUON or is_interpreter() or not torch.cuda.is_available():
        return False
    device = device or torch.device("cuda", torch.cuda.current_device())
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] == 9


def why_not(a_dtype, b_dtype, stride_am: int, stride_ak: int, stride_bk: int, stride_bn: int) -> str | None:
    """Why this kernel cannot compute a 2-D GEMM with these operands, or None (their data pointers
    are checked at launch: why_not_at_launch)."""
    if a_dtype != b_dtype or a_dtype not in DTYPES:
        return f"dtypes {a_dtype} x {b_dtype}"
    elem = a_dtype.itemsize
    if not strides_fit(elem, (stride_am, stride_ak)):
        return f"A's strides ({stride_am}, {stride_ak})"
    if not (strides_fit(elem, (stride_bn, stride_bk)) or strides_fit(elem, (stride_bk, stride_bn))):
        return f"B's strides ({stride_bk}, {stride_bn})"
    return None


def why_not_at_launch(*tensors: torch.Tensor) -> str | None:
    """Which operand does not start 16-byte aligned, as TMA wants (the rest is settled when the
    kernel is generated)."""
    for name, t in zip("ab", tensors):
        if t.data_ptr() % ALIGN_BYTES:
            return f"{name} does not start 16-byte aligned"
    return None


def smem_bytes(cfg: dict, elem_bytes: int = 2) -> int:
    """The ring: STAGES slots of an A and a B block."""
    return cfg["num_stages"] * (cfg["BLOCK_M"] + cfg["BLOCK_N"]) * cfg["BLOCK_K"] * elem_bytes


def why_unfit(cfg: dict) -> str | None:
    """Why a WS config cannot run, or None."""
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    if bm not in (64, 128) or bn not in (64, 128, 256) or bk not in (32, 64):
        return "takes BLOCK_M of 64 or 128, BLOCK_N of 64, 128 or 256, BLOCK_K of 32 or 64"
    if bm * bn // 128 > MAX_ACC_REGISTERS:
        return f"a {bm}x{bn} accumulator is over {MAX_ACC_REGISTERS} registers a thread"
    if (cfg.get("num_stages") or 0) < 2:
        return "takes 2+ stages"
    if smem_bytes(cfg) > SMEM_LIMIT:
        return "shared memory"
    return None


# ------------------------------------------------------------------------------- launch ----
def _descriptor(t: torch.Tensor, shape, strides, block):
    return TensorDescriptor(t, list(shape), list(strides), list(block), shared_layout(tuple(block), t.dtype))


def descriptors(a, b, M: int, N: int, K: int, stride_am: int, stride_bk: int, stride_bn: int, config: dict):
    """(a_desc, b_desc) over A [M, K] and B (K-major [N, K] when stride_bk == 1, else [K, N])."""
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    a_desc = _descriptor(a, (M, K), (stride_am, 1), (bm, bk))
    if stride_bk == 1:
        return a_desc, _descriptor(b, (N, K), (stride_bn, 1), (bn, bk))
    return a_desc, _descriptor(b, (K, N), (stride_bk, 1), (bk, bn))


def grid(M: int, N: int, config: dict, device: torch.device) -> tuple[int]:
    """One persistent program per SM, or one per output tile where there are fewer."""
    tiles = triton.cdiv(M, config["BLOCK_M"]) * triton.cdiv(N, config["BLOCK_N"])
    return (max(1, min(tiles, sm_count(device))),)


def tile_options(config: dict) -> dict:
    """A config for the Triton tile: without the WS switches, which only launch() reads (the tile
    kernel takes no WS argument)."""
    return {k: v for k, v in config.items() if k not in ("WS", "WS_COALESCED")}


def launch_options(config: dict) -> dict:
    """The constexprs and launch options of a WS config."""
    return dict(BLOCK_M=config["BLOCK_M"], BLOCK_N=config["BLOCK_N"], BLOCK_K=config["BLOCK_K"],
                STAGES=config["num_stages"], GROUP_M=config.get("GROUP_M", 8),
                COALESCED=bool(config.get("WS_COALESCED")), num_warps=LOADER_WARPS)
