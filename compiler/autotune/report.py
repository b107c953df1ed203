"""What tuning shows: a progress bar while it runs, a roofline table per kernel afterwards."""
from __future__ import annotations

import math
import sys
import time
from dataclasses import dataclass, field

import torch

from trident.compiler.autotune.cache import canonical
from trident.compiler.autotune.space import dtype_of
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.progress import progress
from trident.kernels.common import FP32_DOTS_BY_TEMPLATE, dot_precision


@dataclass(frozen=True)
class Peaks:
    """Roofline peaks: dense TFLOP/s per input dtype and copy bandwidth (read + write) in TB/s.

    Defaults are the H200 figures measured in DESIGN.md (cuBLAS fp16 671 TFLOP/s, fp32 51,
    tf32 367, Triton int8 K-major 1078 TOPS, device copy 4.25 TB/s); pass measured ones instead.
    """
    tflops: dict = field(default_factory=lambda: {"float16": 671.0, "bfloat16": 671.0, "float32": 51.0,
                                                  "tf32": 367.0, "int8": 1078.0})
    bandwidth_tbs: float = 4.25

    def flops_per_s(self, dtype: torch.dtype, template: str = "gemm") -> float:
        """The peak a `template`'s kernel of `dtype` can reach: at fp32 its dots' own (kernels/common.py):
        TF32's, a third of it for 3xTF32 (three products), the FMA units' for IEEE."""
        name = str(dtype).replace("torch.", "")
        if name != "float32":
            return self.tflops.get(name, self.tflops["float16"]) * 1e12
        # (problem templates other than conv and attention, 1x1 convs' "matmul" among them, multiply as GEMMs)
        dots = dot_precision(torch.float32, template if template in FP32_DOTS_BY_TEMPLATE else "gemm")
        if dots == "ieee":
            return self.tflops["float32"] * 1e12
        return self.tflops["tf32"] * 1e12 / (3 if dots == "tf32x3" else 1)


@dataclass
class KernelRow:
    """One tuned problem: the kernels sharing it, what was chosen and how fast it runs."""
    name: str
    count: int
    template: str
    problem: dict
    config: LaunchConfig
    status: str                 # "tuned" | "cached" | "heuristic" | "failed"
    ms: float = math.nan        # chosen config (nan when not measured, e.g. a cache hit)
    base_ms: float = math.nan   # the heuristic config
    flops: float = 0.0
    bytes: int = 0
    trials: list = field(default_factory=list)   # [config str, ms, error or None]

    def roofline_ms(self, peaks: Peaks) -> float:
        compute = self.flops / peaks.flops_per_s(dtype_of(self.problem), self.template) if self.flops else 0.0
        return max(compute, self.bytes / (peaks.bandwidth_tbs * 1e12)) * 1e3

    def figures(self, peaks: Peaks) -> dict:
        ok = math.isfinite(self.ms) and self.ms > 0
        return {"tflops": self.flops / self.ms / 1e9 if ok and self.flops else None,
                "gbs": self.bytes / self.ms / 1e6 if ok else None,
                "roofline_pct": 100 * self.roofline_ms(peaks) / self.ms if ok else None,
                "speedup": self.base_ms / self.ms if ok and math.isfinite(self.base_ms) else None}

    def to_json(self, peaks: Peaks) -> dict:
        return {"name": self.name, "count": self.count, "template": self.template,
                "problem": canonical(self.problem), "config": self.config.to_dict(), "status": self.status,
                "ms": _num(self.ms), "heuristic_ms": _num(self.base_ms), "flops": self.flops, "bytes": self.bytes,
                **self.figures(peaks), "trials": self.trials}


def _num(x: float):
    return x if math.isfinite(x) else None


def problem_text(problem: dict) -> str:
    t = problem.get("template")
    if t in ("matmul", "conv"):
        text = f"{problem['M']}x{problem['N']}x{problem['K']}"
        if problem.get("KH", 1) * problem.get("KW", 1) > 1:
            text += f" k{problem['KH']}x{problem['KW']} c{problem['C']}"
        if problem.get("batch", 1) > 1:
            text += f" b{problem['batch']}"
        return text + (f" g{problem['groups']}" if problem.get("groups", 1) > 1 else "")
    if t == "depthwise":
        return f"{problem['M']}px c{problem['groups']} k{problem['KH']}x{problem['KW']}"
    if t == "pool":
        return f"{problem['M']}px c{problem['C']}"
    if t in ("reduction", "scan", "sort", "scatter"):
        return f"{problem['rows']}x{problem['length']}"
    if t == "pointwise":
        return f"n={problem['numel']}"
    if t == "grouped_mm":
        return f"{problem['S']}x{problem['K']}->{problem['N']} e{problem['E']}"
    if t == "attention":
        causal = " causal" if problem["causal"] else ""
        return f"{problem['BH']}x{problem['Lq']}x{problem['Lk']} d{problem['D']}{causal}"
    if t == "mlp":
        return f"{problem['M']}x{problem['C_IN']}->{problem['H']}->{problem['C_OUT']}"
    return "?"


@dataclass
class TuneReport:
    level: str
    rows: list[KernelRow] = field(default_factory=list)
    peaks: Peaks = field(default_factory=Peaks)
    seconds: float = 0.0
    compiled: int = 0           # configs tried (compiled and timed, or failed)
    notes: list[str] = field(default_factory=list)

    def count(self, status: str) -> int:
        return sum(r.status == status for r in self.rows)

    def summary(self) -> str:
        kernels = sum(r.count for r in self.rows)
        return (f"trident: autotune ({self.level}): {len(self.rows)} problems for {kernels} kernels; "
                f"{self.count('tuned')} tuned ({self.compiled} configs tried), {self.count('cached')} from the "
                f"cache, {self.count('failed')} kept the heuristic after failures; {self.seconds:.1f} s")

    def table(self) -> str:
        head = (f"{'kernel':<34}{'x':>3} {'template':<10}{'problem':<24}{'config':<22}{'ms':>9}{'heur ms':>9}"
                f"{'speedup':>8}{'TFLOP/s':>9}{'GB/s':>8}{'%roof':>7}  status")
        lines = [head, "-" * len(head)]
        for r in self.rows:
            f = r.figures(self.peaks)
            lines.append(f"{r.name[:33]:<34}{r.count:>3} {r.template:<10}{problem_text(r.problem)[:23]:<24}"
                         f"{str(r.config)[:21]:<22}{_fmt(r.ms, 4):>9}{_fmt(r.base_ms, 4):>9}"
                         f"{_fmt(f['speedup'], 2, 'x'):>8}{_fmt(f['tflops'], 1):>9}{_fmt(f['gbs'], 0):>8}"
                         f"{_fmt(f['roofline_pct'], 0, '%'):>7}  {r.status}")
        return "\n".join(lines + [self.summary()] + self.notes)

    def to_json(self) -> dict:
        return {"level": self.level, "seconds": self.seconds, "compiled": self.compiled,
                "peaks": {"tflops": self.peaks.tflops, "bandwidth_tbs": self.peaks.bandwidth_tbs},
                "kernels": [r.to_json(self.peaks) for r in self.rows], "notes": self.notes}


def _fmt(x, digits: int, suffix: str = "") -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{x:.{digits}f}{suffix}"


class Progress:
    """Tuning's progress: a tqdm bar on a terminal; plain lines at every tenth otherwise (logs)."""

    def __init__(self, total: int, enabled: bool = True, stream=None):
        self.total, self.enabled = max(1, total), enabled
        self.stream = stream or sys.stderr
        self.tty = hasattr(self.stream, "isatty") and self.stream.isatty()
        self.start = time.perf_counter()
        self._last_line = -1
        self.bar = progress(total=self.total, desc="tune", unit="kernel", file=self.stream,
                            enabled=enabled and self.tty)

    def update(self, done: int, text: str = "") -> None:
        if not self.enabled:
            return
        if self.tty:
            self.bar.update(done - self.bar.n)
            self.bar.set_postfix_str(text[:100])
        elif done == self.total or done * 10 // self.total > self._last_line:
            self._last_line = done * 10 // self.total
            print(f"trident tune {done}/{self.total} kernels {time.perf_counter() - self.start:5.1f}s {text}",
                  file=self.stream, flush=True)

    def close(self) -> None:
        self.bar.close()
