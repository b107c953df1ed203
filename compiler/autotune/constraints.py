"""What makes a launch config correct for a kernel, whatever its speed.

Every config a kernel is launched with passes `config_error` first: the tuner's candidates, a
config read back from the autotune cache or a timing-cache file, and each kernel's config in an
engine file. (space.py's prune_reason is the other question: whether a correct config is worth
timing on this GPU.) `base` is the config the kernel's generator chose, which is correct by
construction: a config must name the same parameters, and a template whose tile must cover a whole
row (the reduction's BLOCK_R) must keep the generator's value.
"""
from __future__ import annotations

import torch

from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import min_block_k

WARPS = (1, 2, 4, 8, 16, 32)
MAX_STAGES = 8
MAX_BLOCK = 1 << 16          # one block dimension
MAX_TILE = 1 << 20           # elements of one tile: Triton's largest tensor
MAX_GROUP_M = 64
MAX_PERSISTENT = 16          # programs per SM of a persistent tiled kernel
DOT_FLOOR = 16               # tl.dot's smallest M, N and K
TILE_PAIRS = {"matmul": (("BLOCK_M", "BLOCK_N"), ("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")),
              "conv": (("BLOCK_M", "BLOCK_N"), ("BLOCK_M", "BLOCK_K"), ("BLOCK_K", "BLOCK_N")),
              "depthwise": (("BLOCK_M", "BLOCK_N"),), "pool": (("BLOCK_M", "BLOCK_N"),),
              "reduction": (("BLOCK_X", "BLOCK_R"),), "attention": (("BLOCK_M", "BLOCK_N"),),
              "mlp": (("BLOCK_M", "BLOCK_H"),)}
FIXED = {"reduction": ("BLOCK_R",)}   # the whole row is one tile
DEFAULTED = {"matmul": {"PERSISTENT": 0, "TMA": 0, "BLAS": 0, "SPLIT_EPILOGUE": 0, "WS": 0, "WS_COALESCED": 0},  # kernel params with a default
             "conv": {"PERSISTENT": 0}, "attention": {"WS": 0, "OVERLAP": 0, "PINGPONG": 0}}
SWITCHES = ("TMA", "BLAS", "SPLIT_EPILOGUE", "WS", "WS_COALESCED", "OVERLAP", "PINGPONG")  # 0/1 params a kernel takes when generated with the path they switch on
# An attention kernel generated with kernels/attention_hopper.py's path, or a GEMM kernel with
# kernels/gemm_hopper.py's (its PROBLEM says "hopper"), takes WS (and attention OVERLAP and
# PINGPONG, a GEMM WS_COALESCED) whether or not its base config uses them.
HOPPER_SWITCHES = ("WS", "WS_COALESCED", "OVERLAP", "PINGPONG")


def _is_int(value) -> bool:
    return type(value) is int


def _pow2(value: int) -> bool:
    return value >= 1 and value & (value - 1) == 0


def _param_error(name: str, value: int, base: int, floor: int) -> str | None:
    if name == "GROUP_M":
        return None if 1 <= value <= MAX_GROUP_M else f"GROUP_M={value} is not in [1, {MAX_GROUP_M}]"
    if name == "PERSISTENT":
        return None if 0 <= value <= MAX_PERSISTENT else \
            f"PERSISTENT={value} is not in [0, {MAX_PERSISTENT}]"
    if name in SWITCHES:  # base: 1 for a kernel generated with the path (its config has the key)
        return None if value in (0, base) else f"{name}={value}: this kernel takes {name} in {sorted({0, base})}"
    if not _pow2(value) or value > MAX_BLOCK:
        return f"{name}={value} is not a power of two in [1, {MAX_BLOCK}]"
    if value < min(base, floor):
        return f"{name}={value} is below the template's {min(base, floor)}"
    return None


def _floor(template: str, name: str, problem: dict) -> int:
    if template in ("matmul", "conv") and name == "BLOCK_K":
        dtype = problem.get("dtype", torch.float16)
        if isinstance(dtype, str):  # a PROBLEM literal read back from a source
            dtype = getattr(torch, dtype.replace("torch.", ""), torch.float16)
        size = dtype.itemsize if isinstance(dtype, torch.dtype) else 2
        return min_block_k(size)
    if template in ("matmul", "conv", "attention") and name in ("BLOCK_M", "BLOCK_N", "BLOCK_K"):
        return DOT_FLOOR
    if template == "mlp" and name in ("BLOCK_M", "BLOCK_H"):
        return DOT_FLOOR
    return 1


def config_error(cfg, problem: dict, base: LaunchConfig) -> str | None:
    """Why `cfg` (a LaunchConfig, or its dict form from a file) cannot launch this kernel
    correctly, or None. problem: the kernel's PROBLEM; base: the generator's config."""
    if isinstance(cfg, dict):
        try:
            cfg = _from_dict(cfg)
        except ValueError as e:
            return str(e)
    if not isinstance(cfg, LaunchConfig):
        return f"a launch config should be an object, got {type(cfg).__name__}"
    params, want = dict(cfg.params), dict(base.params)
    template = str(problem.get("template"))
    optional = DEFAULTED.get(template, {})
    if set(params) - set(optional) != set(want) - set(optional) or \
            set(params) - set(want) - set(optional):
        return f"parameters {sorted(params)}, the kernel takes {sorted(want)}"
    want = {**optional, **want}
    for switch in SWITCHES:  # a kernel with the path can switch it on whether or not its base does
        if switch in dict(base.params) or (switch in HOPPER_SWITCHES and problem.get("hopper") is True):
            want[switch] = 1
    if not _is_int(cfg.num_warps) or cfg.num_warps not in WARPS:
        return f"num_warps={cfg.num_warps!r} is not one of {WARPS}"
    if cfg.num_stages is not None and (not _is_int(cfg.num_stages) or not 1 <= cfg.num_stages <= MAX_STAGES):
        return f"num_stages={cfg.num_stages!r} is not in [1, {MAX_STAGES}]"
    for name, value in params.items():
        if not _is_int(value):
            return f"{name}={value!r} is not an integer"
        why = _param_error(name, value, want[name], _floor(template, name, problem))
        if why:
            return why
    for name in FIXED.get(template, ()):
        if params[name] != want[name]:
            return f"{name}={params[name]}: this template needs {name}={want[name]} (the whole row)"
    for a, b in TILE_PAIRS.get(template, ()):
        if a in params and b in params and params[a] * params[b] > MAX_TILE:
            return f"{a} x {b} = {params[a] * params[b]} elements, more than a tile holds ({MAX_TILE})"
    return None


def _from_dict(launch: dict) -> LaunchConfig:
    for key, value in launch.items():
        if not isinstance(key, str) or not (value is None and key == "num_stages") and not _is_int(value):
            raise ValueError(f"{key}={value!r} is not an integer")
    stages = launch.get("num_stages")
    params = {k: v for k, v in launch.items() if k not in ("num_warps", "num_stages")}
    return LaunchConfig(tuple(params.items()), launch.get("num_warps", 4), stages)


__all__ = ["config_error"]
