"""Timing one kernel config: random inputs from the kernel's layouts, the GPU timer, checks.

A timer is any `timer(run, config) -> milliseconds` (raise, or return inf, for a config that fails);
`gpu_timer` is the real one. Tests inject a fake one, so the tuning loop runs without a GPU.
"""
from __future__ import annotations

import math

import torch

from trident.compiler import config
from trident.compiler.autotune.space import element_size, storage_elements
from trident.compiler.timing import kernel_ms


def random_tensor(layout, device, generator, fill: bool = True) -> torch.Tensor:
    """A tensor with the layout's shape/strides/dtype; floats ~ N(0, 1), ints in [0, 4)."""
    span = max(1, storage_elements(layout.shape, layout.strides))
    dtype = layout.dtype
    buf = torch.empty(span, dtype=dtype, device=device)
    if fill:
        if dtype == torch.bool:
            buf.copy_(torch.randint(0, 2, (span,), generator=generator, device=device).bool())
        elif dtype.is_floating_point and dtype in (torch.float16, torch.bfloat16, torch.float32, torch.float64):
            buf.normal_(generator=generator)
        elif dtype.is_floating_point:
            buf.copy_(torch.randn(span, generator=generator, device=device).to(dtype))
        else:
            buf.random_(0, 4, generator=generator)
    return buf.as_strided(tuple(layout.shape), tuple(layout.strides))


def arg_bytes(layouts) -> int:
    return sum(storage_elements(l.shape, l.strides) * element_size(l.dtype) for l in layouts)


def copies_for(nbytes: int, l2_bytes: int, max_copies: int = 8, budget: int = 1 << 30) -> int:
    """How many input sets to rotate through so consecutive launches do not hit in the L2."""
    if nbytes <= 0 or nbytes >= 2 * l2_bytes:
        return 1
    return max(1, min(max_copies, math.ceil(2 * l2_bytes / nbytes), budget // nbytes))


def make_arg_sets(layouts, outputs: list[bool], device, copies: int, seed: int = 0) -> list[list[torch.Tensor]]:
    """`copies` independent argument lists: inputs random, outputs (flagged) only allocated."""
    generator = torch.Generator(device=device).manual_seed(seed)
    return [[random_tensor(lay, device, generator, fill=not out) for lay, out in zip(layouts, outputs)]
            for _ in range(copies)]


def gpu_timer(run, config=None, *, cutoff_ms: float = math.inf) -> float:
    """Median GPU milliseconds per call of `run` (trident.compiler.timing.kernel_ms: replayed from
    a CUDA graph, as engines run); `config` is what the run launches (unused here)."""
    return kernel_ms(run, cutoff_ms=cutoff_ms)


def tolerance(dtype: torch.dtype) -> float:
    if dtype in (torch.float16, torch.bfloat16) or (dtype.is_floating_point and element_size(dtype) == 1):
        return 2e-2
    if dtype.is_floating_point:
        return 2e-2 if config.ALLOW_TF32 else 1e-3
    return 0.0


def outputs_close(got: list[torch.Tensor], want: list[torch.Tensor]) -> bool:
    """Same results up to accumulation order: relative L2 error within the dtype's tolerance
    (integer and boolean outputs: at most 0.1% of elements differ)."""
    for g, w in zip(got, want):
        tol = tolerance(w.dtype)
        if tol == 0.0:  # ints and bools: a comparison of floats may flip where rounding differs
            if g.numel() and (g != w).sum().item() > 1e-3 * g.numel():
                return False
            continue
        g64, w64 = (torch.nan_to_num(t.double(), posinf=1e30, neginf=-1e30) for t in (g, w))
        scale = w64.norm().item()
        if (g64 - w64).norm().item() > tol * max(scale, 1e-6):
            return False
    return True
