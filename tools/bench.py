"""`trident bench`: trident beside torch eager and torch.compile (default and max-autotune), in one
process on one GPU, and kernel microbenchmarks beside cuBLAS / cuDNN / copy bandwidth as % of the
measured roofline.

    trident bench --quick --out bench-out     # about 5 minutes on an H200
    trident bench --out bench-out             # everything: FP32/FP16/INT8, max-autotune, convs
    trident bench --dry-run --out /tmp/b      # the whole pipeline on the CPU (fake timer)
    trident bench --update-readme benchmarks/results/nvidia-h200-bench.json
                                              # README's Results and docs/results.md from results

Writes results.json (after every measurement, so a crash keeps what was measured), results.md and
throughput.png / roofline.png into --out. The other benchmarks are subcommands (`trident bench
kernels --help`, ...), each writing <out>/<gpu>-<what>.json; docs/benchmarks.md lists them. The
pieces live in tools/benchmarks/. Benchmarks are measurements, never tests: nothing here asserts
a speed.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from trident.compiler import config
from trident.compiler.errors import InputError
from trident.tools.benchmarks import (accuracy, attention, dynamic, epilogues, int8, kernels, perf, report, runtime,
                                      suite, sweep, templates, train_digits, tuning)
from trident.tools.benchmarks.readme import update_readme
from trident.tools.benchmarks.results import environment, write_json

# `trident bench NAME`: each module has HELP, add_arguments(parser) and run(args).
BENCHMARKS = {"kernels": templates, "attention": attention, "sweep": sweep, "int8": int8, "accuracy": accuracy,
              "runtime": runtime, "tune": tuning, "train-digits": train_digits, "perf": perf,
              "dynamic": dynamic, "epilogues": epilogues}

TORCH_COMPILE_MODES = ("default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark trident beside torch eager and torch.compile",
                              description=__doc__)
    add_arguments(p)
    p.set_defaults(func=run)
    benchmarks = p.add_subparsers(dest="benchmark", metavar="BENCHMARK",
                                  title="other benchmarks (trident bench BENCHMARK --help)")
    for name, module in BENCHMARKS.items():
        q = benchmarks.add_parser(name, help=module.HELP, description=module.__doc__)
        module.add_arguments(q)
        q.set_defaults(func=module.run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--quick", action="store_true",
                      help="FP16 ResNet-50 / BERT-base / MLP / multi-branch, ResNet-50 INT8, torchvision "
                           "ResNet-50, torch.compile default only, few reps (about 5 minutes on an H200)")
    mode.add_argument("--dry-run", action="store_true",
                      help="everything on the CPU: tiny models and shapes, a fake timer (tests the pipeline)")
    p.add_argument("--out", default="bench-out", help="results directory (results.json, results.md, PNGs)")
    p.add_argument("--models", help="only these models (comma-separated names from the suite)")
    p.add_argument("--precisions", help="only these precisions, e.g. fp16,int8")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchors")
    p.add_argument("--compile-modes", type=_compile_modes, metavar="MODES",
                   help="torch.compile anchors to run, e.g. default (when not given: default,max-autotune; "
                        "default only with --quick)")
    p.add_argument("--no-kernels", action="store_true", help="skip the kernel microbenchmarks")
    p.add_argument("--no-models", action="store_true", help="skip the model benchmarks")
    p.add_argument("--budget-s", type=float, default=None,
                   help="stop starting new model groups after this many seconds (when not given: 360 "
                        "with --quick, none otherwise); what was not run is listed, --resume runs it")
    p.add_argument("--resume", action="store_true",
                   help="keep what --out/results.json already holds; measure only what is missing")
    p.add_argument("--update-readme", metavar="RESULTS",
                   help="only rewrite README's Results section and docs/results.md from RESULTS (a "
                        "results JSON file, or a directory holding results.json)")
    p.add_argument("--readme", default="README.md", help="the README that --update-readme rewrites")


def _compile_modes(text: str) -> tuple[str, ...]:
    modes = tuple(m.strip() for m in text.split(",") if m.strip())
    unknown = [m for m in modes if m not in TORCH_COMPILE_MODES]
    if unknown or not modes:
        raise argparse.ArgumentTypeError(f"unknown torch.compile mode(s) {unknown or [text]}; "
                                         f"expected some of {', '.join(TORCH_COMPILE_MODES)}")
    return modes


def run(args: argparse.Namespace) -> int:
    if args.update_readme:
        print(f"updated {', '.join(str(p) for p in update_readme(args.update_readme, args.readme))}")
        return 0
    mode = "dry" if args.dry_run else "quick" if args.quick else "full"
    if mode != "dry" and not config.HAS_CUDA:
        raise InputError("trident bench needs a CUDA GPU (the interpreter's timings mean nothing); "
                         "--dry-run runs the pipeline on the CPU")
    ctx = suite.make_context(mode, compile_modes=() if args.no_compile else args.compile_modes)
    # FP32 anchors in true FP32; trident's FP32 engines stay within a few fp32 ulps of it (unless TRIDENT_ALLOW_TF32)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = config.ALLOW_TF32
    out = Path(args.out)
    results = _start(out, mode, ctx, args.resume)
    write = lambda: write_json(out / "results.json", results)  # noqa: E731  (after every row)
    write()
    start = time.perf_counter()
    # kernels first: bounded (about a minute on an H200); the models then get the time budget
    if not args.no_kernels and not results["kernels"]:
        kernels.run_kernels(ctx, results, write)
    budget = args.budget_s if args.budget_s is not None else 360 if mode == "quick" else None
    if not args.no_models:
        suite.run_models(ctx, _plan(mode, args), results, write, budget_s=budget, started=start)
    results["wall_s"] = time.perf_counter() - start
    write()
    pngs = report.write_report(results, out)
    print(report.markdown(results))
    print(f"wrote {out / 'results.json'}, {out / 'results.md'}"
          + "".join(f", {out / p}" for p in pngs) + f" in {results['wall_s']:.0f} s")
    return 0


def _plan(mode: str, args) -> list:
    plan = suite.SUITES[mode]
    if args.models:
        plan = [p for p in plan if p[0] in args.models.split(",")]
    if args.precisions:
        plan = [p for p in plan if p[2] in args.precisions.split(",")]
    return plan


def _start(out: Path, mode: str, ctx, resume: bool) -> dict:
    """A new results dict; with resume, the rows out/results.json already holds."""
    results = {"environment": environment(ctx.device), "mode": mode, "notes": list(ctx.notes),
               "tf32": config.ALLOW_TF32, "models": [], "kernels": []}
    if resume and (out / "results.json").exists():
        previous = json.loads((out / "results.json").read_text())
        results["models"] = previous.get("models", [])
        results["kernels"], results["peaks"] = previous.get("kernels", []), previous.get("peaks")
    return results
