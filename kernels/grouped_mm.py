"""Grouped GEMM: out[rows of expert e] = x[rows of expert e] @ w[e], where the rows of x are sorted
by expert and offs[e] is where expert e's rows end (a mixture-of-experts layer's tokens after the
sort by expert; torch._grouped_mm's and transformers' grouped_mm_fallback's contract).

The row counts are data: offs lives on the device and is only known when the kernel runs, so the
launch covers every possible tiling. Program (m, n) finds its tile itself: it loads offs, counts
each expert's BLOCK_M-row tiles (cdiv of its row count), and the running sum of those counts says
which expert owns tile m and where in that expert's rows it starts. Every expert wastes at most one
partial tile, so cdiv(S, BLOCK_M) + E programs along m cover the experts' rows; cdiv(S, BLOCK_M)
more write zeros over the rows past the last expert's (as transformers' fallback leaves them), and
the programs left over return at once.

offs is made a valid partition of [0, S) first: clamped into [0, S] and made non-decreasing (a
running max), so a tile never reads or writes outside x and out, whatever the offsets hold. For
offsets that are already a partition (what a sort and a histogram give) this changes nothing.
"""
import triton
import triton.language as tl

from trident.kernels.matmul import matmul_tile


@triton.jit
def _larger(a, b):
    return tl.maximum(a, b)


@triton.jit
def _row_ends(offs, first, E: tl.constexpr, S: tl.constexpr, BLOCK_E: tl.constexpr):
    """offs[first + e] for e in [0, BLOCK_E) clamped into [0, S] and non-decreasing; lanes before
    0 read 0 and lanes past E repeat the last end."""
    e = first + tl.arange(0, BLOCK_E)
    ends = tl.load(offs + e, mask=(e >= 0) & (e < E), other=0)
    ends = tl.minimum(tl.maximum(ends, 0), S).to(tl.int32)  # clamped in the offsets' own type
    return tl.associative_scan(ends, 0, _larger)


@triton.jit
def grouped_mm_program(x, w, offs, out, S: tl.constexpr, K: tl.constexpr, N: tl.constexpr,
                       E: tl.constexpr, sxm: tl.constexpr, sxk: tl.constexpr, swe: tl.constexpr,
                       swk: tl.constexpr, swn: tl.constexpr, som: tl.constexpr, son: tl.constexpr,
                       BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
                       BLOCK_E: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    pid_m = tl.program_id(0)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    experts = tl.arange(0, BLOCK_E)
    ends = _row_ends(offs, 0, E, S, BLOCK_E)
    starts = _row_ends(offs, -1, E, S, BLOCK_E)  # the previous expert's end (0 for the first)
    tiles = (ends - starts + BLOCK_M - 1) // BLOCK_M
    through = tl.cumsum(tiles, 0)  # tiles of experts 0..e
    total = tl.sum(tiles, 0)
    rows = tl.arange(0, BLOCK_M)
    if pid_m < total:
        e = tl.sum((through <= pid_m).to(tl.int32), 0)  # the expert whose tiles hold pid_m
        mine = experts == e
        row0 = tl.sum(tl.where(mine, starts + (pid_m - (through - tiles)) * BLOCK_M, 0), 0)
        count = tl.minimum(tl.sum(tl.where(mine, ends, 0), 0) - row0, BLOCK_M)
        acc = matmul_tile(x + row0.to(tl.int64) * sxm, w + e.to(tl.int64) * swe, count, N, K,
                          sxm, sxk, swk, swn, rows, offs_n, BLOCK_M, BLOCK_N, BLOCK_K, INPUT_PRECISION)
        mask = (rows[:, None] < count) & (offs_n[None, :] < N)
    else:  # rows past the last expert's: zeros
        row0 = tl.max(ends, 0) + (pid_m - total) * BLOCK_M
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        mask = (row0 + rows[:, None] < S) & (offs_n[None, :] < N)
    pointers = out + row0.to(tl.int64) * som + rows[:, None] * som + offs_n[None, :] * son
    tl.store(pointers, acc.to(out.dtype.element_ty), mask=mask)


def program_count(S: int, E: int, block_m: int) -> int:
    """Programs along m: every expert's tiles (at most one partial tile each) and the zero tail."""
    return 2 * triton.cdiv(S, block_m) + E
