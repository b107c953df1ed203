"""The accuracy budget (int8_tolerance): keep the layers INT8 costs most accuracy in FP16.

Error is measured on calibration batches with the reference executor, against the fp32 graph:
    error = || y_int8 - y_fp32 || / || y_fp32 ||   (relative L2 over every float output)
The int8 graph is simulated exactly as the kernels compute it (qconv / qmatmul references use the
kernels' integer accumulation and dequantization math), at fp32 elsewhere.

Search: if quantizing every candidate layer meets the budget, done. Otherwise each layer's
sensitivity is the error with that layer alone in int8; layers go back to FP16 from the most
sensitive down until the error is within budget (each step re-measured, since errors interact).
"""
from __future__ import annotations

import sys
from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from trident.compiler import config
from trident.compiler.ir import Graph
from trident.compiler.reference import run_reference

MAX_BATCHES = 4  # calibration batches the search measures on


@dataclass
class Search:
    tolerance: float
    error_all_int8: float = 0.0
    error: float = 0.0
    sensitivity: dict[str, float] = field(default_factory=dict)   # layer key -> error alone
    kept_fp16: list[str] = field(default_factory=list)            # layer keys, in removal order


def relative_error(got: Sequence[torch.Tensor], ref: Sequence[torch.Tensor]) -> float:
    num = den = 0.0
    for g, r in zip(got, ref):
        if not r.dtype.is_floating_point:
            continue
        num += float((g.double() - r.double()).pow(2).sum())
        den += float(r.double().pow(2).sum())
    return (num / den) ** 0.5 if den > 0 else num ** 0.5


def choose_int8_layers(graph: Graph, candidates: list[str], batches: Sequence[tuple],
                       tolerance: float, quantize: Callable[[set[str]], Graph],
                       forced: set[str] = frozenset()) -> tuple[set[str], Search]:
    """The largest-first set of layers to run in int8 within `tolerance` (forced ones stay)."""
    batches = list(batches)[:MAX_BATCHES]
    with torch.no_grad():
        reference = [run_reference(graph, list(b)) for b in batches]

    def error(selected: set[str]) -> float:
        g = quantize(selected)
        with torch.no_grad():
            outs = [o for b in batches for o in run_reference(g, list(b))]
        return relative_error(outs, [r for ref in reference for r in ref])

    search = Search(tolerance)
    selected = set(candidates)
    search.error_all_int8 = search.error = error(selected)
    if search.error <= tolerance:
        return selected, search
    _say(f"int8_tolerance {tolerance:g}: all-int8 error {search.error:.4g}; measuring "
         f"{len(candidates)} layers' sensitivity")
    for k, layer in enumerate(candidates):
        search.sensitivity[layer] = error({layer} | set(forced))
    for layer in sorted(candidates, key=lambda l: -search.sensitivity[l]):
        if search.error <= tolerance:
            break
        if layer in forced:
            continue
        selected.discard(layer)
        search.kept_fp16.append(layer)
        search.error = error(selected)
    return selected, search


def _say(message: str) -> None:
    if not config.QUIET:
        print(f"trident: {message}", file=sys.stderr)
