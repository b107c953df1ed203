"""`trident bench epilogues`: GEMMs with the epilogues models fuse into them (GELU, residual, layer
scale and residual), every candidate tile of the `fast` tuning level timed, beside cuBLAS.

    trident bench epilogues --out bench-out              # H200: about a minute per shape
    trident bench epilogues --only dinov2 --out bench-out
    trident bench epilogues --dry-run                    # tiny shapes on the CPU (the code path)

Each shape is a Linear layer of a zoo model at its token count (DINOv2 ViT-B/14 at batch 8: 10,960
tokens; ViT-B/16 at batch 32: 6,304; ConvNeXt-T at batch 32: 100,352 pixels in stage 1; GPT-2 at
batch 8 and 1,024 tokens: 8,192, with its tanh-form GELU) with the ops after it that trident fuses
into the GEMM's epilogue. LayerNorms before and after make its operands and its result fp16 values
inside the engine, as in the model. The candidates are what `tune="fast"` times (the heuristic's
pick first; `--candidates N` widens the list to the first N of the same ranking), each timed as the
tuner times them (CUDA-graph replays behind an L2 flush); the anchor is torch's fp16 `F.linear`
(cuBLAS) without the epilogue, timed the same way. Prints a table, writes JSON.
A measurement, never a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from trident.compiler.autotune import tune_program
from trident.compiler.build import compile_graph, import_model
from trident.compiler.timing import cold_kernel_ms
from trident.tools.benchmarks.results import ResultsFile, markdown_table, require_gpu

HELP = "GEMMs with fused epilogues (GELU, residual, layer scale): every fast-level tile vs cuBLAS (GPU)"


@dataclass(frozen=True)
class Shape:
    label: str
    M: int
    K: int
    N: int
    epilogue: str   # "none" | "gelu" | "gelu_tanh" | "residual" | "scale_residual"


SHAPES = [Shape("DINOv2 fc2", 10960, 3072, 768, "scale_residual"),
          Shape("DINOv2 attention projection", 10960, 768, 768, "scale_residual"),
          Shape("DINOv2 fc1", 10960, 768, 3072, "gelu"),
          Shape("DINOv2 qkv", 10960, 768, 2304, "none"),
          Shape("ViT-B/16 fc2", 6304, 3072, 768, "residual"),
          Shape("ViT-B/16 fc1", 6304, 768, 3072, "gelu"),
          Shape("ViT-B/16 qkv", 6304, 768, 2304, "none"),
          Shape("ViT-B/16 attention projection", 6304, 768, 768, "residual"),
          Shape("ConvNeXt-T stage-1 fc1", 100352, 96, 384, "gelu"),
          Shape("GPT-2 fc1 (tanh GELU)", 8192, 768, 3072, "gelu_tanh"),
          Shape("ConvNeXt-T stage-1 fc2", 100352, 384, 96, "scale_residual"),
          Shape("ResNet-50 2048->512 1x1 (b256)", 12544, 2048, 512, "none")]
DRY_SHAPES = [Shape("tiny fc2", 48, 64, 32, "scale_residual"), Shape("tiny fc1", 48, 32, 64, "gelu"),
              Shape("tiny fc1 (tanh GELU)", 48, 32, 64, "gelu_tanh")]


class LinearBlock(torch.nn.Module):
    """LayerNorm -> Linear -> epilogue -> LayerNorm: the GEMM reads and writes fp16 values inside an
    fp16 engine, and its epilogue is the one the model fuses."""

    def __init__(self, shape: Shape):
        super().__init__()
        self.epilogue = shape.epilogue
        self.norm_in, self.norm_residual, self.norm_out = (torch.nn.LayerNorm(n) for n in (shape.K, shape.N, shape.N))
        self.linear = torch.nn.Linear(shape.K, shape.N)
        self.scale = torch.nn.Parameter(torch.rand(shape.N) + 0.5)

    def forward(self, x, residual):
        y = self.linear(self.norm_in(x))
        if self.epilogue in ("gelu", "gelu_tanh"):
            y = F.gelu(y, approximate="tanh" if self.epilogue == "gelu_tanh" else "none")
        elif self.epilogue == "residual":
            y = y + self.norm_residual(residual)
        elif self.epilogue == "scale_residual":
            y = y * self.scale + self.norm_residual(residual)
        return self.norm_out(y)


def _trials(report) -> list[tuple[str, float | None, str]]:
    """(config, ms or None, error) of the GEMM's tuning trials, fastest first."""
    rows = [r for r in (report.rows if report else []) if r.problem.get("template") == "matmul"]
    trials = [(str(cfg), ms if isinstance(ms, float) and math.isfinite(ms) else None, err or "")
              for row in rows for cfg, ms, err in row.trials]
    return sorted(trials, key=lambda t: t[1] if t[1] is not None else math.inf)


def bench_shape(shape: Shape, device: str, dry: bool, candidates: int | None = None) -> list[dict]:
    torch.manual_seed(0)
    block = LinearBlock(shape).eval()
    x, residual = torch.randn(shape.M, shape.K), torch.randn(shape.M, shape.N)
    program = compile_graph(import_model(block, [x, residual]), "fp16", device=device)
    heuristic = next(str(s.kernel.config) for s in program.steps
                     if s.kind == "kernel" and s.kernel.problem.get("template") == "matmul")
    report = None
    if not dry:  # the heuristic's program, tuned as a build with tune="fast" tunes it
        report = tune_program(program, "fast", device=device, fast_count=candidates)
    flops = 2.0 * shape.M * shape.N * shape.K
    base = {"shape": shape.label, "M": shape.M, "K": shape.K, "N": shape.N, "epilogue": shape.epilogue}
    rows = []
    if not dry:
        linear = block.linear.half().to(device)
        xh = x.half().to(device)
        with torch.no_grad():
            ms = cold_kernel_ms(lambda: linear(xh))
        rows.append(base | {"runner": "cuBLAS (F.linear, no epilogue)", "ms": ms, "tflops": flops / ms / 1e9})
    for config, ms, error in _trials(report):
        rows.append(base | {"runner": f"trident {config}" + (" (heuristic)" if config == heuristic else ""),
                            "ms": ms, "tflops": flops / ms / 1e9 if ms else None, "error": error[:120]})
    if dry:
        rows.append(base | {"runner": f"trident {heuristic} (heuristic)", "ms": None, "tflops": None})
    return rows


def table(rows: list[dict]) -> str:
    body = [[r["shape"], f"{r['M']}x{r['K']}->{r['N']}", r["epilogue"], r["runner"],
             "-" if r.get("ms") is None else f"{r['ms'] * 1e3:.1f}",
             "-" if r.get("tflops") is None else f"{r['tflops']:.0f}", r.get("error", "")] for r in rows]
    return markdown_table(["shape", "GEMM", "epilogue", "runner", "us", "TFLOP/s", "error"], body)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-out", help="folder of the results file")
    p.add_argument("--only", help="comma-separated words; shapes whose label contains one of them")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU, no tuning (the code path)")
    p.add_argument("--candidates", type=int, help="GEMM tiles to time per shape (default: the fast level's)")


def run(args: argparse.Namespace) -> int:
    if not args.dry_run:
        require_gpu("trident bench epilogues")
    shapes = DRY_SHAPES if args.dry_run else SHAPES
    if args.only:
        words = [w.strip().lower() for w in args.only.split(",") if w.strip()]
        shapes = [s for s in shapes if any(w in s.label.lower() for w in words)]
    results = ResultsFile.in_dir(args.out, "epilogues", "cpu" if args.dry_run else None)
    rows = results.data["rows"] = []
    for shape in shapes:
        rows += bench_shape(shape, "cpu" if args.dry_run else "cuda", args.dry_run, args.candidates)
        print(table(rows), flush=True)  # the table so far: a run cut short still shows its rows
        results.save()
    print(f"wrote {results.save()}")
    return 0
