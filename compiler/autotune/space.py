"""Configs, device limits and the per-template search spaces, pruned before anything compiles.

A LaunchConfig (compiler/ir/launch.py) is what a generated kernel's `launch(*tensors, config=...)`
takes, as a frozen (hashable) dataclass. Each template ("matmul", "conv", "depthwise", "pool",
"pointwise", "reduction", "attention") has a full space; `prune` drops what cannot fit (shared
memory, registers) or cannot help (tiles wider
than the problem, pipeline stages the K loop never fills) before anything is compiled; `candidates`
gives the list one tuning level tries: the kernel's heuristic config always first.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass

import torch

from trident.compiler import config
from trident.compiler.autotune.constraints import config_error
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels import attention as attention_template
from trident.kernels import attention_hopper, gemm_hopper
from trident.kernels import mlp as mlp_template
from trident.kernels import conv as conv_templates
from trident.kernels import depthwise as depthwise_templates
from trident.kernels import matmul as matmul_templates
from trident.kernels.common import cdiv, min_block_k, next_pow2, persistent_pipeline_fits

# How many configs `fast` times per kernel, the heuristic's included. In H200 runs (ResNet-50 b256,
# BERT b32; docs/performance.md, "Autotuning") the heuristic won all 36
# tuned kernels, so `fast` spends its budget on the first few alternatives only (cold ResNet-50
# build: 72 s with 5/4 per kernel).
FAST_CANDIDATES = {"matmul": 4, "conv": 4, "depthwise": 3, "pool": 3, "pointwise": 3,
                   "reduction": 3, "attention": 4, "mlp": 4}
ACC_REGS = 128        # fp32 accumulator registers per thread we allow (of 255): 128x256 on 8 warps
ELEMS_PER_THREAD = 64  # register budget of the elementwise-style tiles (pool, reduction, pointwise)
ROWS_QUEUE_REGS = 128  # fp32 registers a thread of the row-streaming depthwise kernel gives its queue of rows


@dataclass(frozen=True)
class DeviceLimits:
    """What pruning and the cost model need; H200 figures unless read from a real device."""
    name: str = "NVIDIA H200"
    capability: tuple[int, int] = (9, 0)
    smem_per_block: int = 227 * 1024
    smem_per_sm: int = 228 * 1024
    regs_per_sm: int = 65536
    sms: int = 132
    l2_bytes: int = 50 * 1024 * 1024


def device_limits(device=None) -> DeviceLimits:
    """Read from torch.cuda.get_device_properties on a GPU; H200 defaults elsewhere."""
    if not torch.cuda.is_available() or (device is not None and torch.device(device).type != "cuda"):
        return DeviceLimits()
    props = torch.cuda.get_device_properties(device if device is not None else torch.cuda.current_device())
    d = DeviceLimits()
    return DeviceLimits(
        name=props.name, capability=(props.major, props.minor),
        smem_per_block=getattr(props, "shared_memory_per_block_optin", d.smem_per_block) or d.smem_per_block,
        smem_per_sm=getattr(props, "shared_memory_per_multiprocessor", d.smem_per_sm) or d.smem_per_sm,
        regs_per_sm=getattr(props, "regs_per_multiprocessor", d.regs_per_sm) or d.regs_per_sm,
        sms=props.multi_processor_count, l2_bytes=getattr(props, "L2_cache_size", d.l2_bytes) or d.l2_bytes)


# ------------------------------------------------------------------------------ problems ----
def dtype_of(problem: dict) -> torch.dtype:
    dtype = problem.get("dtype", torch.float16)
    if isinstance(dtype, str):
        dtype = getattr(torch, dtype.replace("torch.", ""))
    return dtype


def element_size(dtype: torch.dtype) -> int:
    return dtype.itemsize


@dataclass(frozen=True)
class Gemm:
    """The GEMM view of a matmul or implicit-GEMM conv problem, as the tile loops walk it."""
    M: int
    N: int
    K: int
    batch: int        # independent GEMMs (matmul batch, conv groups)
    dtype: torch.dtype
    k_cap: int        # widest useful BLOCK_K
    channel_walk: int  # conv2d_nhwc_tile: K is walked tap by tap in blocks of C; 0 otherwise
    taps: int = 1

    def k_iters(self, bk: int) -> int:
        if self.channel_walk:
            return self.taps * cdiv(self.channel_walk, bk)
        return cdiv(self.K, bk)


def gemm_view(problem: dict) -> Gemm:
    dtype = dtype_of(problem)
    M, N, K = int(problem["M"]), int(problem["N"]), int(problem["K"])
    batch = int(problem.get("batch", 1)) * int(problem.get("groups", 1))
    min_k = min_block_k(dtype.itemsize)
    if problem.get("tile") == "conv2d_nhwc_tile":
        c = int(problem["C"])
        return Gemm(M, N, K, batch, dtype, max(min_k, next_pow2(c)), c,
                    int(problem["KH"]) * int(problem["KW"]))
    return Gemm(M, N, K, batch, dtype, max(min_k, next_pow2(K)), 0)


# ------------------------------------------------------------------------- full spaces ----
def _block_ks(dtype) -> tuple[int, ...]:
    """BLOCK_K choices: 32..128 bytes-equivalent of fp16 (64 fp16 = 128 int8 = 32 fp32 per row)."""
    size = element_size(dtype)
    return {1: (64, 128, 256), 4: (16, 32, 64)}.get(size, (32, 64, 128))


def _gemm_space(problem: dict) -> list[LaunchConfig]:
    return [LaunchConfig.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, PERSISTENT=p)
            for bm, bn, bk, w, s, p in itertools.product((16, 32, 64, 128, 256), (16, 32, 64, 128, 256),
                                                         _block_ks(dtype_of(problem)), (2, 4, 8), (2, 3, 4, 5),
                                                         (0, 1, 2))]


def _tile2d_space(problem: dict) -> list[LaunchConfig]:
    return [LaunchConfig.of(w, BLOCK_M=bm, BLOCK_N=bn)
            for bm, bn, w in itertools.product((16, 32, 64, 128, 256), (16, 32, 64, 128), (1, 2, 4, 8))]


def _streams_rows(problem: dict) -> bool:
    return problem.get("tile") == "depthwise_row_step"


def _rows_space(problem: dict) -> list[LaunchConfig]:
    return [LaunchConfig.of(w, 1, BLOCK_M=bm, BLOCK_N=bn, ROWS=rows)
            for bm, bn, w, rows in itertools.product((8, 16, 32, 64), (16, 32, 64, 128), (1, 2, 4), (4, 8, 16, 32))]


def _pointwise_space(problem: dict) -> list[LaunchConfig]:
    return [LaunchConfig.of(w, BLOCK=b)
            for b, w in itertools.product((128, 256, 512, 1024, 2048, 4096, 8192), (1, 2, 4, 8, 16))]


def _reduction_space(problem: dict, base: LaunchConfig) -> list[LaunchConfig]:
    block_r = base["BLOCK_R"]  # fixed by the row length: the whole row is one tile
    return [LaunchConfig.of(w, BLOCK_X=bx, BLOCK_R=block_r)
            for bx, w in itertools.product((1, 2, 4, 8, 16, 32, 64, 128), (1, 2, 4, 8, 16))]


def _attention_space(problem: dict) -> list[LaunchConfig]:
    hopper = (attention_template.hopper_candidates(int(problem["D"]), bool(problem.get("mask_bytes")))
              if problem.get("hopper") else [])
    return [LaunchConfig.of(w, st, BLOCK_M=bm, BLOCK_N=bn)
            for bm, bn, w, st in itertools.product((16, 32, 64, 128), (16, 32, 64, 128), (2, 4, 8), (2, 3, 4, 5))] + hopper


def _mlp_space(problem: dict) -> list[LaunchConfig]:
    return [LaunchConfig.of(w, st, BLOCK_M=bm, BLOCK_H=bh)
            for bm, bh, w, st in itertools.product((32, 64, 128), (16, 32, 64, 128), (2, 4, 8), (1, 2, 3, 4))]


def full_space(problem: dict, base: LaunchConfig) -> list[LaunchConfig]:
    template = problem["template"]
    if template == "attention":
        return _attention_space(problem)
    if template == "mlp":
        return _mlp_space(problem)
    if template in ("matmul", "conv"):
        return _gemm_space(problem)
    if template == "depthwise" and _streams_rows(problem):
        return _rows_space(problem)
    if template in ("pool", "depthwise"):
        return _tile2d_space(problem)
    if template == "pointwise":
        return _pointwise_space(problem)
    if template == "reduction":
        return _reduction_space(problem, base)
    return []


# ------------------------------------------------------------------------------ pruning ----
def gemm_smem(cfg: LaunchConfig, dtype) -> int:
    """Shared memory of the software pipeline: stages x (A tile + B tile)."""
    stages = cfg.num_stages or 3
    return stages * (cfg["BLOCK_M"] * cfg["BLOCK_K"] + cfg["BLOCK_K"] * cfg["BLOCK_N"]) * element_size(dtype)


def _acc_per_thread(cfg: LaunchConfig, a: str, b: str) -> float:
    return cfg[a] * cfg[b] / (32 * cfg.num_warps)


def _wider_than(cfg: LaunchConfig, rows: int, cols: int, col_block: str = "BLOCK_N") -> bool:
    """A BLOCK_M x `col_block` tile wider than the (rows, cols) problem rounded up to a power of two."""
    return cfg["BLOCK_M"] > max(16, next_pow2(rows)) or cfg[col_block] > max(16, next_pow2(cols))


def gemm_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    """Why a matmul/conv config is pruned, or None if it stays."""
    if cfg.get("WS"):  # kernels/gemm_hopper.py's path: its own rules
        if not problem.get("hopper"):
            return "the warp-specialized path is not in this kernel here"
        return gemm_hopper.why_unfit(cfg.to_dict())
    g = gemm_view(problem)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    if _wider_than(cfg, g.M, g.N):
        return "tile wider than the problem"
    if bk > g.k_cap or bk < min_block_k(g.dtype.itemsize):
        return "BLOCK_K does not fit K"
    if gemm_smem(cfg, g.dtype) > limits.smem_per_block:
        return "shared memory"
    acc = _acc_per_thread(cfg, "BLOCK_M", "BLOCK_N")
    if acc > ACC_REGS:
        return "registers"
    if acc < 8:
        return "more warps than the tile has work for"
    if cfg.num_warps < 4 and bm * bn > 64 * 64:
        return "too few warps for the tile"
    if (cfg.num_stages or 3) > max(2, g.k_iters(bk) + 1):
        return "more stages than K iterations"
    if cdiv(g.M, 128) * cdiv(g.N, 128) * g.batch >= 2 * limits.sms and bm * bn < 64 * 64:
        return "tile too small for a big problem"
    persistent = cfg.get("PERSISTENT", 0)
    if persistent and cdiv(g.M, bm) * cdiv(g.N, bn) <= persistent * limits.sms:
        return "persistent grid with a tile per program"
    if persistent and bm * bn < 128 * 128:
        return "persistent tile too small to pay for its loop"
    if persistent and not persistent_pipeline_fits(cfg.num_stages or 3, g.k_iters(bk)):
        return "persistent pipeline deeper than the K loop"
    return None


def _tile2d_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    # pool: C channels; depthwise: groups == channels (its C is the per-group count, 1)
    channels = int(problem["groups"] if problem["template"] == "depthwise" else problem["C"])
    if _wider_than(cfg, int(problem["M"]), channels):
        return "tile wider than the problem"
    per_thread = _acc_per_thread(cfg, "BLOCK_M", "BLOCK_N")
    if per_thread > ELEMS_PER_THREAD:
        return "registers"
    if per_thread < 2:
        return "more warps than the tile has work for"
    return None


def _depthwise_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    if not _streams_rows(problem):
        return _tile2d_reason(cfg, problem, limits)
    # The row-streaming kernel holds KH partial rows of its tile in registers (kernels/depthwise.py).
    if cfg["BLOCK_M"] > max(8, next_pow2(int(problem["OW"]))) or \
            cfg["BLOCK_N"] > max(16, next_pow2(int(problem["groups"]))):
        return "tile wider than the problem"
    if cfg["ROWS"] > next_pow2(int(problem["OH"])):
        return "more rows than the image"
    per_thread = _acc_per_thread(cfg, "BLOCK_M", "BLOCK_N")
    if per_thread * int(problem["KH"]) > ROWS_QUEUE_REGS:
        return "registers"
    if per_thread < 2:
        return "more warps than the tile has work for"
    return None


def _pointwise_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    if cfg["BLOCK"] > max(128, next_pow2(int(problem["numel"]))):
        return "block wider than the problem"
    per_thread = cfg["BLOCK"] / (32 * cfg.num_warps)
    if per_thread > 32:
        return "registers"
    if per_thread < 1:
        return "more warps than the block has work for"
    return None


def _reduction_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    if cfg["BLOCK_X"] > next_pow2(int(problem["rows"])):
        return "more rows per program than the problem has"
    per_thread = cfg["BLOCK_X"] * cfg["BLOCK_R"] / (32 * cfg.num_warps)
    if per_thread > ELEMS_PER_THREAD:
        return "registers"
    if per_thread < 1:
        return "more warps than the tile has work for"
    return None


def _attention_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    if cfg.get("WS"):  # kernels/attention_hopper.py's kernel: its own rules
        if not problem.get("hopper"):
            return "the warp-specialized kernel does not take this problem here"
        return attention_hopper.why_unfit(cfg, int(problem["D"]), bool(problem.get("mask_bytes")))
    if _wider_than(cfg, int(problem["Lq"]), int(problem["Lk"])):
        return "tile wider than the problem"
    if cfg["BLOCK_M"] * cfg["BLOCK_N"] / (32 * cfg.num_warps) < 8:
        return "more warps than the tile has work for"
    staged = cfg if cfg.num_stages is not None else cfg.replace(num_stages=3)
    return attention_template.why_unfit(staged, int(problem["D"]), int(problem["DV"]), element_size(dtype_of(problem)),
                     int(problem.get("mask_bytes", 0)), limits.smem_per_block)


def _mlp_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> str | None:
    if _wider_than(cfg, int(problem["M"]), int(problem["H"]), "BLOCK_H"):
        return "tile wider than the problem"
    return mlp_template.why_unfit(cfg, int(problem["C_IN"]), int(problem["C_OUT"]), element_size(dtype_of(problem)),
                                  limits.smem_per_block)


REASONS = {"matmul": gemm_reason, "conv": gemm_reason, "pool": _tile2d_reason,
           "depthwise": _depthwise_reason, "pointwise": _pointwise_reason, "reduction": _reduction_reason,
           "attention": _attention_reason, "mlp": _mlp_reason}


def prune_reason(cfg: LaunchConfig, problem: dict, limits: DeviceLimits | None = None) -> str | None:
    check = REASONS.get(problem.get("template"))
    return check(cfg, problem, limits or DeviceLimits()) if check else "unknown template"


def prune(configs, problem: dict, limits: DeviceLimits | None = None) -> list[LaunchConfig]:
    """The configs that fit the device and the problem, in order, without duplicates."""
    limits = limits or DeviceLimits()
    return [c for c in dict.fromkeys(configs) if prune_reason(c, problem, limits) is None]


# --------------------------------------------------------------------------- cost model ----
PEAK_FLOPS = {1: 1078e12, 2: 671e12, 4: 51e12}  # by element size (DESIGN.md's H200 measurements)
DRAM_BPS, L2_BPS = 4.25e12, 10e12


def gemm_estimate(cfg: LaunchConfig, problem: dict, limits: DeviceLimits) -> float:
    """Seconds a matmul/conv config might take: wave quantization, operand reuse, padding, traffic.

    Only used to rank known-good configs for the `fast` level; the GPU's timings decide.
    """
    g = gemm_view(problem)
    bm, bn, bk = cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"]
    e = element_size(g.dtype)
    regs = min(255, _acc_per_thread(cfg, "BLOCK_M", "BLOCK_N") + 64)
    per_sm = max(1, min(limits.smem_per_sm // max(1, gemm_smem(cfg, g.dtype)),
                        limits.regs_per_sm // int(32 * cfg.num_warps * regs), 32))
    tiles = cdiv(g.M, bm) * cdiv(g.N, bn) * g.batch
    waves = cdiv(tiles, limits.sms * per_sm)
    resident = min(per_sm, cdiv(tiles, limits.sms))
    reuse = min(1.0, (bm * bn / (bm + bn)) / 64.0)  # 128x128 and up feed the tensor cores fully
    peak = PEAK_FLOPS.get(e, PEAK_FLOPS[2])
    if g.dtype == torch.float32:
        peak = 367e12 if config.ALLOW_TF32 else peak
    compute = waves * resident * 2.0 * bm * bn * g.k_iters(bk) * bk / (peak / limits.sms * reuse)
    dram = (g.M * g.K + g.K * g.N + g.M * g.N) * g.batch * e
    l2 = (g.M * g.K * cdiv(g.N, bn) + g.K * g.N * cdiv(g.M, bm)) * g.batch * e
    stall = 1.15 if (cfg.num_stages or 3) < 3 and g.k_iters(bk) >= 3 else 1.0
    return max(compute * stall, dram / DRAM_BPS, l2 / L2_BPS) + waves * 2e-6


# Known-good H200 tiles (BLOCK_M, BLOCK_N, BLOCK_K for 16-bit, num_warps, num_stages, PERSISTENT),
# after `trident bench sweep` and Triton's / Inductor's matmul config lists. `fast` ranks these after
# the templates' own candidate lists.
GOOD_GEMM_TILES = [
    (128, 256, 64, 8, 3, 1), (128, 128, 64, 4, 4, 2), (128, 128, 64, 4, 3, 0), (256, 128, 64, 8, 3, 1),
    (128, 256, 64, 8, 3, 0), (256, 128, 64, 8, 3, 0), (128, 128, 64, 8, 4, 0), (128, 128, 32, 4, 3, 0),
    (64, 256, 32, 4, 4, 0), (128, 64, 64, 4, 3, 0), (64, 128, 64, 4, 3, 0),
    (64, 128, 128, 4, 3, 0), (128, 64, 128, 4, 3, 0), (64, 64, 64, 4, 4, 0), (64, 64, 128, 4, 3, 0),
    (64, 32, 64, 4, 4, 0), (32, 64, 64, 4, 4, 0), (32, 32, 128, 4, 3, 0), (16, 64, 128, 4, 4, 0),
    (16, 128, 128, 4, 3, 0), (16, 256, 64, 4, 4, 0), (32, 128, 64, 4, 4, 0), (128, 32, 64, 4, 4, 0),
]


def _fit_tile(tile, problem: dict) -> LaunchConfig:
    """A known-good tile shrunk to the problem (Inductor's habit), warps cut to the tile's work."""
    g = gemm_view(problem)
    bm, bn, bk16, w, s, p = tile
    bk = bk16 * 2 // element_size(g.dtype)
    bm, bn = min(bm, max(16, next_pow2(g.M))), min(bn, max(16, next_pow2(g.N)))
    bk = max(min_block_k(g.dtype.itemsize), min(bk, g.k_cap))
    while w > 1 and bm * bn / (32 * w) < 16:
        w //= 2
    s = max(2, min(s, g.k_iters(bk) + 1))
    return LaunchConfig.of(w, s, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, PERSISTENT=p)


def _gemm_fast(problem: dict, base: LaunchConfig, limits: DeviceLimits) -> list[LaunchConfig]:
    """The template's hand-picked list (the sweep's winners), then the known-good tiles ranked by
    the cost model."""
    picked = prune(_hand_picked(problem), problem, limits)
    pool = prune([_fit_tile(t, problem) for t in GOOD_GEMM_TILES], problem, limits)
    ranked = sorted(pool, key=lambda c: gemm_estimate(c, problem, limits))
    shapes, first, rest = set(), [], []
    for cfg in ranked:  # distinct tile shapes first: warps/stages variants only after them
        shape = (cfg["BLOCK_M"], cfg["BLOCK_N"], cfg["BLOCK_K"])
        (rest if shape in shapes else first).append(cfg)
        shapes.add(shape)
    return picked + first + rest


def _hand_picked(problem: dict) -> list[LaunchConfig]:
    """kernels/*.candidate_configs: the lists the microbenchmarks found good on an H200."""
    g = gemm_view(problem)
    if problem["template"] == "conv":
        return conv_templates.candidate_configs(g.M, g.N, int(problem["C"]), int(problem["KH"]), int(problem["KW"]),
                                                g.dtype)
    return matmul_templates.candidate_configs(g.M, g.N, g.K, g.dtype)


def _attention_hand_picked(problem: dict) -> list[LaunchConfig]:
    """kernels/attention.candidate_configs: FlashAttention's usual tiles."""
    return attention_template.candidate_configs(int(problem["Lq"]), int(problem["Lk"]), int(problem["D"]), dtype_of(problem),
                             int(problem["DV"]), int(problem.get("mask_bytes", 0)),
                             bool(problem.get("causal", False)), bool(problem.get("hopper", False)),
                             int(problem["BH"]) * int(problem["Lq"]))


def _neighbours(base: LaunchConfig, problem: dict) -> list[LaunchConfig]:
    """Small steps from the heuristic config: each block size halved/doubled, warps halved/doubled."""
    out = []
    for name, value in base.params:
        if name != "BLOCK_R":
            out += [base.replace(**{name: value * 2}), base.replace(**{name: max(1, value // 2)})]
    out += [base.replace(num_warps=base.num_warps * 2), base.replace(num_warps=max(1, base.num_warps // 2))]
    return out


def candidates(problem: dict, base: LaunchConfig, level: str, limits: DeviceLimits | None = None,
               fast_count: int | None = None) -> list[LaunchConfig]:
    """Configs to time for one problem at `level` ("fast" | "full"); `base` (the heuristic) first.
    fast_count: the tiles "fast" times (default FAST_CANDIDATES for the template)."""
    limits = limits or DeviceLimits()
    template = problem.get("template")
    if template not in REASONS or level == "none":
        return [base]
    ws_base = base
    if base.get("WS"):  # a GEMM starting on its warp-specialized path: Triton's tiles vary its tile
        base = base.replace(WS=0)
    if level == "full":
        rest = prune(full_space(problem, base), problem, limits)
    elif template in ("matmul", "conv"):
        rest = _gemm_fast(problem, base, limits)
    elif template == "attention":
        rest = prune(_attention_hand_picked(problem), problem, limits)
    elif template == "mlp":
        rest = prune(mlp_template.candidate_configs(int(problem["M"]), int(problem["C_IN"]), int(problem["H"]),
                                                    int(problem["C_OUT"]), element_size(dtype_of(problem)),
                                                    limits.smem_per_block), problem, limits)
    elif template == "depthwise" and _streams_rows(problem):
        oh, ow = int(problem["OH"]), int(problem["OW"])
        images = int(problem["M"]) // (oh * ow)
        rest = prune(depthwise_templates.candidate_configs(images, oh, ow, int(problem["groups"])), problem, limits)
    else:
        rest = prune(_neighbours(base, problem), problem, limits)
    if base.get("SPLIT_EPILOGUE") is not None:
        # A generated GEMM: the base tile with its epilogue split the other way, every other tile
        # split where its whole-tile epilogue would spill.
        rest = [base.replace(SPLIT_EPILOGUE=1 - base.SPLIT_EPILOGUE)] + \
            [c.replace(SPLIT_EPILOGUE=int(matmul_templates.epilogue_spills(c))) for c in rest]
    if base.get("TMA") is not None:
        # A kernel that can load through TMA: the base tile is timed both ways, the others the base's way.
        rest = [base.replace(TMA=1 - base.TMA)] + [c.replace(TMA=base.TMA) for c in rest]
    if base.get("BLAS") is not None:
        # A kernel that can take cuBLAS's product (kernels/blas.py): the library is timed once, on
        # the base's tile (its epilogue's); every Triton tile with its own product.
        rest = [base.replace(BLAS=1 - base.BLAS)] + [c.replace(BLAS=0) for c in rest]
    ws = matmul_templates.ws_candidates(base) if template == "matmul" and problem.get("hopper") and \
        config.WS_GEMM else []
    rest = [base] + ws + rest
    out = [ws_base] + [c for c in dict.fromkeys(rest) if c != ws_base and config_error(c, problem, base) is None]
    # The library and the warp-specialized path: more trials, not Triton tiles fewer.
    extra = (1 if base.get("BLAS") is not None else 0) + len(ws)
    return out if level == "full" else out[:(fast_count or FAST_CANDIDATES[template]) + extra]


# ------------------------------------------------------------------------ work figures ----
def flops(problem: dict) -> float:
    """Multiply-adds x 2 of a matmul/conv/depthwise/attention problem; 0 for bandwidth-bound templates."""
    if problem.get("template") == "attention":

        return attention_template.attention_flops(int(problem["BH"]), int(problem["Lq"]), int(problem["Lk"]), int(problem["D"]),
                               int(problem["DV"]), bool(problem["causal"]))
    if problem.get("template") == "mlp":
        return 2.0 * int(problem["M"]) * int(problem["H"]) * (int(problem["C_IN"]) + int(problem["C_OUT"]))
    if problem.get("template") not in ("matmul", "conv", "depthwise"):
        return 0.0
    batch = int(problem.get("batch", 1)) * int(problem.get("groups", 1))
    return 2.0 * int(problem["M"]) * int(problem["N"]) * int(problem["K"]) * batch


def storage_elements(shape, strides) -> int:
    """Elements a strided tensor spans in memory (stride-0 dims read one element)."""
    if any(s == 0 for s in shape):
        return 0
    return 1 + sum((size - 1) * abs(stride) for size, stride in zip(shape, strides))
