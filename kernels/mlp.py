"""Back-to-back GEMMs: y = f(g(x @ W1) @ W2), the hidden activation never stored.

A transformer or ConvNeXt MLP over narrow rows (C = 64-256 channels widened 4x) is bound by
memory, not by its multiply-adds: stored, its hidden activation is 4x the traffic of its input,
written by one GEMM and read back by the next (docs/performance.md, "Back-to-back MLP"). Here a
program owns BLOCK_M rows: it loads their x once (every input channel: C_IN is one block), then
walks the hidden dim BLOCK_H columns at a time: hidden = x @ W1[:, h], the middle epilogue `g`
on it in registers (bias, GELU, ...), and acc += g(hidden) @ W2[h, :], where acc holds every
output column (C_OUT is one block). A generated kernel writes `g` inside the loop and `f` (bias,
layer scale, residual, ...) after it (compiler/codegen/mlp.py); `mlp_kernel` is the same loop with
bias + GELU and a bias, for tests and benchmarks.

The hidden tile is rounded to the operands' dtype before the second product, as the unfused
engine stores it. Weights are read through strides (engines store them K-major, [N, K]).
"""
from __future__ import annotations

import torch

from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import cast_for_store, cdiv, dot_acc, is_interpreter, next_pow2
from trident.kernels.prims import gelu_erf, in_bounds

import triton
import triton.language as tl

# The widest input and output rows one program holds (the output accumulator is BLOCK_M x
# next_pow2(C_OUT) fp32 in registers; x is BLOCK_M x next_pow2(C_IN) in shared memory).
MAX_CHANNELS = 256
DTYPES = (torch.float16, torch.bfloat16)


# Channel blocks past this width pay for their padding: the products run on next_pow2(C)
# channels, and without warp specialization the loop's two dots and the middle epilogue take
# turns (as attention's do). On the H200 (fp16, docs/performance.md, "Back-to-back MLP") the
# fused kernel beat the two GEMMs at 96 -> 384 -> 96 (100,352 rows: 78.5 against 106.6 us), at
# 64 -> 256 -> 64 (43.5 against 96.1) and at 256 -> 1024 -> 256 (8,192 rows: 37.0 against 51.5),
# but not at 192 -> 768 -> 192, a quarter of each 256-wide block padding (25,088 rows: 80.9
# against 73.1; level at 6,304 rows: 27.8 against 29.3).
MAX_PADDED_CHANNELS = 128


# A norm in front (its row tile in fp32 registers beside the accumulator) spills past this many
# channels: sm_90 compiles of ConvNeXt blocks (Triton 3.6, 64 rows on 4 warps) take 175 registers
# and no stack at 96 channels, 255 registers and 360-528 bytes of stack at 256.
MAX_NORM_CHANNELS = 128


def norm_fits(c_in: int) -> str | None:
    """None if a LayerNorm / RMSNorm over c_in channels may run in the kernel's row loads."""
    if next_pow2(c_in) > MAX_NORM_CHANNELS:
        return f"its {c_in}-channel rows beside the accumulator would spill registers"
    return None


def fits(c_in: int, hidden: int, c_out: int, dtype: torch.dtype) -> str | None:
    """None if the template computes this MLP (and is worth it), else why not (for explain)."""
    if dtype not in DTYPES:
        return f"{dtype} MLPs stay on two GEMM tiles (the fused loop is for 16-bit tensor-core dots)"
    if max(c_in, c_out) > MAX_CHANNELS:
        return f"rows of {max(c_in, c_out)} channels (a program holds at most {MAX_CHANNELS})"
    if min(c_in, hidden, c_out) < 1:
        return "an empty dim"
    for c in (c_in, c_out):
        if next_pow2(c) > MAX_PADDED_CHANNELS and c != next_pow2(c):
            return (f"rows of {c} channels, padded to {next_pow2(c)} in the fused products: slower than "
                    f"storing the hidden activation")
    return None


@triton.jit
def mlp_rows(x_ptr, row_offset, row_ok, C_IN, stride_xc, BLOCK_CI: tl.constexpr):
    """The program's rows of x, every channel, as one [BLOCK_M, BLOCK_CI] tile. row_offset: each
    row's element offset, [BLOCK_M, 1] (a generated kernel's index math over the row dims);
    rows where row_ok is false and channels past C_IN read 0."""
    rc = tl.arange(0, BLOCK_CI)
    mask = row_ok & in_bounds(rc[None, :], C_IN, BLOCK_CI)
    return tl.load(x_ptr + row_offset + rc[None, :] * stride_xc, mask=mask, other=0)


@triton.jit
def mlp_up(x, w1_ptr, offs_h, C_IN, H, stride_w1k, stride_w1h, BLOCK_M: tl.constexpr, BLOCK_CI: tl.constexpr,
           BLOCK_H: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """The hidden tile x @ W1[:, offs_h], fp32 [BLOCK_M, BLOCK_H]; columns past H are 0."""
    rk = tl.arange(0, BLOCK_CI)
    mask = in_bounds(rk[:, None], C_IN, BLOCK_CI) & in_bounds(offs_h[None, :], H, BLOCK_H)
    w = tl.load(w1_ptr + rk[:, None] * stride_w1k + offs_h[None, :] * stride_w1h, mask=mask, other=0)
    return dot_acc(x, w, tl.zeros((BLOCK_M, BLOCK_H), dtype=tl.float32), INPUT_PRECISION)


@triton.jit
def mlp_down(hidden, acc, w2_ptr, offs_h, H, C_OUT, stride_w2k, stride_w2n, BLOCK_H: tl.constexpr,
             BLOCK_CO: tl.constexpr, INPUT_PRECISION: tl.constexpr):
    """acc + hidden @ W2[offs_h, :]. `hidden` must already be 0 in its columns past H (the middle
    epilogue of a 0 need not be 0: gelu(0 + bias) is not), and of W2's dtype."""
    rn = tl.arange(0, BLOCK_CO)
    mask = in_bounds(offs_h[:, None], H, BLOCK_H) & in_bounds(rn[None, :], C_OUT, BLOCK_CO)
    w = tl.load(w2_ptr + offs_h[:, None] * stride_w2k + rn[None, :] * stride_w2n, mask=mask, other=0)
    return dot_acc(hidden, w, acc, INPUT_PRECISION)


@triton.jit
def mlp_kernel(x_ptr, w1_ptr, b1_ptr, w2_ptr, b2_ptr, y_ptr, M, C_IN: tl.constexpr, H: tl.constexpr,
               C_OUT: tl.constexpr, stride_xm: tl.constexpr, stride_w1k: tl.constexpr, stride_w1h: tl.constexpr,
               stride_w2k: tl.constexpr, stride_w2n: tl.constexpr, stride_ym: tl.constexpr,
               BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr, BLOCK_CI: tl.constexpr, BLOCK_CO: tl.constexpr):
    """y = gelu(x @ W1 + b1) @ W2 + b2 over rows of contiguous channels (the template as a kernel).
    Sizes and strides are compile-time, as a generated kernel has them: the weight tiles' addresses
    are then constants plus the step, not 64-bit pointer tiles held in registers."""
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    x = mlp_rows(x_ptr, offs_m[:, None] * stride_xm, in_bounds(offs_m[:, None], M, BLOCK_M), C_IN, 1, BLOCK_CI)
    acc = tl.zeros((BLOCK_M, BLOCK_CO), dtype=tl.float32)
    for h0 in tl.range(0, H, BLOCK_H):
        offs_h = h0 + tl.arange(0, BLOCK_H)
        hidden = mlp_up(x, w1_ptr, offs_h, C_IN, H, stride_w1k, stride_w1h, BLOCK_M, BLOCK_CI, BLOCK_H, "ieee")
        h_ok = in_bounds(offs_h, H, BLOCK_H)
        hidden = gelu_erf(hidden + tl.load(b1_ptr + offs_h, mask=h_ok, other=0).to(tl.float32)[None, :])
        hidden = tl.where(h_ok[None, :], hidden, 0).to(x.dtype)
        acc = mlp_down(hidden, acc, w2_ptr, offs_h, H, C_OUT, stride_w2k, stride_w2n, BLOCK_H, BLOCK_CO, "ieee")
    rn = tl.arange(0, BLOCK_CO)
    n_ok = in_bounds(rn, C_OUT, BLOCK_CO)
    acc += tl.load(b2_ptr + rn, mask=n_ok, other=0).to(tl.float32)[None, :]
    mask = in_bounds(offs_m[:, None], M, BLOCK_M) & n_ok[None, :]
    tl.store(y_ptr + offs_m[:, None] * stride_ym + rn[None, :], cast_for_store(acc, y_ptr), mask=mask)


def channel_blocks(c_in: int, c_out: int) -> tuple[int, int]:
    """(BLOCK_CI, BLOCK_CO): every input and output channel in one block (tl.dot takes >= 16)."""
    return max(16, next_pow2(c_in)), max(16, next_pow2(c_out))


def smem_bytes(cfg: LaunchConfig, c_in: int, c_out: int, elem_bytes: int) -> int:
    """Shared memory of a config: the x tile, and per stage a W1 and a W2 block, plus the hidden
    tile staged for the second product (no num_stages: Triton's default, 3)."""
    ci, co = channel_blocks(c_in, c_out)
    m, h = cfg["BLOCK_M"], cfg["BLOCK_H"]
    return elem_bytes * (m * ci + (cfg.num_stages or 3) * h * (ci + co) + m * h)


# fp32 accumulator and hidden-tile registers a thread may hold (of 255): 64 x 256 outputs and a
# 64 x 64 hidden tile on 4 warps, the 256-channel heuristic.
MAX_ACC_REGISTERS = 160


def acc_registers(cfg: LaunchConfig, c_out: int) -> float:
    """fp32 registers a thread gives the output accumulator and the hidden tile."""
    _, co = channel_blocks(1, c_out)
    return cfg["BLOCK_M"] * (co + cfg["BLOCK_H"]) / (32 * cfg.num_warps)


def why_unfit(cfg: LaunchConfig, c_in: int, c_out: int, elem_bytes: int, smem_limit: int) -> str | None:
    """Why a config spills or overflows shared memory (the tuner keeps it out), or None."""
    smem = smem_bytes(cfg, c_in, c_out, elem_bytes)
    if smem > smem_limit:
        return f"needs {smem} B of shared memory (> {smem_limit})"
    regs = acc_registers(cfg, c_out)
    if regs > MAX_ACC_REGISTERS:
        return f"{regs:.0f} fp32 registers a thread for the accumulator and hidden tile (> {MAX_ACC_REGISTERS})"
    return None


def heuristic_config(rows: int, c_in: int, hidden: int, c_out: int) -> LaunchConfig:
    """64 rows on 4 warps, two stages; 32 hidden columns a step where the output row fits 128
    channels, else 64. The best of the candidates on the H200 (fp16, bias + GELU, bias): 78.5 us at
    100,352 x 96 -> 384 -> 96 (the 128-row, 8-warp tile: 117.3), 37.0 at 8,192 x 256 -> 1024 -> 256
    (49.0), 43.5 at 100,352 x 64 -> 256 -> 64 (47.9). 64 x 256 fp32 accumulators on 4 warps are
    128 registers a thread; the row tile's loads are the kernel's only long latency, and 4 warps
    leave room for two programs an SM."""
    if is_interpreter():
        return LaunchConfig.of(4, 1, BLOCK_M=max(16, min(64, next_pow2(rows))),
                               BLOCK_H=max(16, min(128, next_pow2(hidden))))
    _, co = channel_blocks(c_in, c_out)
    block_h = 32 if co <= 128 else 64
    return LaunchConfig.of(4, 2, BLOCK_M=64, BLOCK_H=max(16, min(block_h, next_pow2(hidden))))


# (BLOCK_M, BLOCK_H, warps, stages) the H200 ranked best over the shapes in `fits`' comment,
# best first: the tuner's "fast" level times the first few of these.
RANKED = ((64, 32, 4, 2), (64, 64, 4, 2), (64, 32, 4, 3), (128, 32, 8, 3), (64, 64, 4, 1), (64, 32, 4, 1))


def candidate_configs(rows: int, c_in: int, hidden: int, c_out: int, elem_bytes: int = 2,
                      smem_limit: int = 227 * 1024) -> list[LaunchConfig]:
    """The tuner's candidates, the RANKED ones first, then every other row block x hidden step x
    warps x stages; only those that fit, and no hidden step wider than the hidden dim."""
    grid = [(m, h, w, st) for m in (32, 64, 128) for h in (32, 64, 128) for w in (4, 8) for st in (1, 2, 3)]
    out = []
    for m, h, warps, stages in dict.fromkeys(RANKED + tuple(grid)):
        cfg = LaunchConfig.of(warps, stages, BLOCK_M=m, BLOCK_H=h)
        if h <= max(16, next_pow2(hidden)) and why_unfit(cfg, c_in, c_out, elem_bytes, smem_limit) is None:
            out.append(cfg)
    return out


def mlp(x: torch.Tensor, w1: torch.Tensor, b1: torch.Tensor, w2: torch.Tensor, b2: torch.Tensor,
        config: LaunchConfig | None = None) -> torch.Tensor:
    """gelu(x @ w1.T + b1) @ w2.T + b2 for x [M, C_IN], w1 [H, C_IN], w2 [C_OUT, H] (nn.Linear's
    layout): the template as a function, for tests and benchmarks."""
    M, c_in = x.shape
    hidden, c_out = w1.shape[0], w2.shape[0]
    why = fits(c_in, hidden, c_out, x.dtype)
    if why is not None:
        raise ValueError(f"mlp: {why}")
    if x.stride(1) != 1 or w1.shape[1] != c_in or w2.shape[1] != hidden:
        raise ValueError(f"mlp: x [M, {c_in}] with unit channel stride, w1 [H, {c_in}], w2 [C_OUT, {hidden}] "
                         f"expected; got {list(x.shape)} (strides {list(x.stride())}), {list(w1.shape)}, "
                         f"{list(w2.shape)}")
    y = torch.empty((M, c_out), device=x.device, dtype=x.dtype)
    if M == 0:
        return y
    cfg = config or heuristic_config(M, c_in, hidden, c_out)
    ci, co = channel_blocks(c_in, c_out)
    grid = (cdiv(M, cfg["BLOCK_M"]),)
    mlp_kernel[grid](x, w1, b1, w2, b2, y, M, c_in, hidden, c_out, x.stride(0), w1.stride(1), w1.stride(0),
                     w2.stride(1), w2.stride(0), y.stride(0), BLOCK_M=cfg["BLOCK_M"], BLOCK_H=cfg["BLOCK_H"],
                     BLOCK_CI=ci, BLOCK_CO=co, num_warps=cfg.num_warps,
                     num_stages=cfg.num_stages)
    return y
