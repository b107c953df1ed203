"""`trident bench tune`: the autotuner on the GPU: build times and tuned-vs-heuristic speed-ups.
Prints tables, writes <out>/<gpu>-tuning.json.

    trident bench tune [--level fast] [--only resnet50,bert_base,gemm] [--out bench-out]

1. ResNet-50 FP16, batch 256: cold build with tuning (fresh trident and Triton caches), then a warm
   rebuild (everything from the cache); engine throughput tuned vs heuristic configs.
2. BERT-base FP16, batch 32, seq 128: the same.
3. One table: per ResNet-50 conv problem and per BERT GEMM problem, heuristic vs tuned kernel time.
4. FP16 GEMM 8192^3 (a Linear layer, weight stored K-major): tuned kernel vs cuBLAS, same timer.
Benchmarks are measurements, never tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from trident.compiler import build_engine, config
from trident.compiler.autotune import LaunchConfig
from trident.compiler.autotune.report import problem_text
from trident.compiler.build import BuildTrace
from trident.compiler.testing import relative_error as rel_err
from trident.models import MODELS
from trident.tools.benchmarks.results import ResultsFile, require_gpu
from trident.compiler.autotune.measure import gpu_timer as autotune_ms
from trident.compiler.timing import bench_ms

HELP = "the autotuner: cold and warm build times, tuned against heuristic configs (GPU)"


def _fresh_caches(keep: bool) -> str:
    """Point trident's and Triton's caches at a new directory (Triton reads TRITON_CACHE_DIR when
    it compiles; worker processes inherit both)."""
    root = tempfile.mkdtemp(prefix="trident-tune-bench-")
    if not keep:
        config.CACHE_DIR = Path(root)
        os.environ["TRIDENT_CACHE_DIR"] = root
        os.environ["TRITON_CACHE_DIR"] = str(Path(root) / "triton")
    return root


def engine_ms(engine, inputs) -> float:
    """Median ms per engine call (CUDA graph replay), timed with CUDA events."""
    return bench_ms(lambda: engine(*inputs), warmup=5, rep=50)["median_ms"]


def bench_model(name: str, batch: int, level: str) -> dict:
    build, make_inputs = MODELS[name]
    model = build().eval().cuda()
    inputs = tuple(x.cuda() for x in make_inputs(batch))
    with torch.no_grad():
        reference = model(*inputs)
    out = {"model": name, "batch": batch, "level": level}
    trace = BuildTrace()
    start = time.perf_counter()
    engine = build_engine(model, "fp16", example_inputs=inputs, tune=level, trace=trace)
    built = time.perf_counter() - start
    result = engine(*inputs)[0]
    torch.cuda.synchronize()
    report = trace.tuning
    out["cold"] = {"build_s": built, "first_run_s": time.perf_counter() - start - built,
                   "tuning_s": report.seconds if report else None,
                   "tuned": report.count("tuned") if report else 0,
                   "cached": report.count("cached") if report else 0,
                   "configs_timed": report.compiled if report else 0}
    out["kernels"] = report.to_json() if report else None
    out["rel_err_tuned"] = rel_err(result, reference)
    print(f"{name} b{batch} cold: {json.dumps(out['cold'])}", flush=True)
    out["warm"] = warm_rebuild(name, batch, level)
    print(f"{name} b{batch} warm (new process): {json.dumps(out['warm'])}", flush=True)
    tuned_ms = engine_ms(engine, inputs)
    heuristic = build_engine(model, "fp16", example_inputs=inputs)
    out["rel_err_heuristic"] = rel_err(heuristic(*inputs)[0], reference)
    heuristic_ms = engine_ms(heuristic, inputs)
    out.update(engine_tuned_ms=tuned_ms, engine_heuristic_ms=heuristic_ms, engine_speedup=heuristic_ms / tuned_ms,
               tuned_items_per_s=batch / tuned_ms * 1e3, heuristic_items_per_s=batch / heuristic_ms * 1e3)
    print(f"{name} b{batch} engine: tuned {tuned_ms:.3f} ms ({out['tuned_items_per_s']:.0f}/s) vs heuristic "
          f"{heuristic_ms:.3f} ms ({out['heuristic_items_per_s']:.0f}/s): {out['engine_speedup']:.2f}x; "
          f"rel err tuned {out['rel_err_tuned']:.1e}, heuristic {out['rel_err_heuristic']:.1e}", flush=True)
    return out


WARM = """
import json, sys, time, torch
from trident.compiler import build_engine
from trident.compiler.build import BuildTrace
from trident.models import MODELS
build, make_inputs = MODELS[sys.argv[1]]
model = build().eval().cuda()
inputs = tuple(x.cuda() for x in make_inputs(int(sys.argv[2])))
trace = BuildTrace()
start = time.perf_counter()
engine = build_engine(model, "fp16", example_inputs=inputs, tune=sys.argv[3], trace=trace)
built = time.perf_counter() - start
engine(*inputs)
torch.cuda.synchronize()
r = trace.tuning
print("RESULT " + json.dumps({"build_s": built, "first_run_s": time.perf_counter() - start - built,
      "tuning_s": r.seconds if r else None, "tuned": r.count("tuned") if r else 0,
      "cached": r.count("cached") if r else 0}))
"""


def warm_rebuild(name: str, batch: int, level: str) -> dict:
    """Rebuild in a fresh process against the caches the cold build filled (what a redeploy sees)."""
    proc = subprocess.run([sys.executable, "-c", WARM, name, str(batch), level], capture_output=True, text=True,
                          env=dict(os.environ, TRIDENT_QUIET="1"))
    for line in proc.stdout.splitlines():
        if line.startswith("RESULT "):
            return json.loads(line[len("RESULT "):])
    return {"error": (proc.stderr or proc.stdout)[-2000:]}


def bench_gemm(size: int, level: str) -> dict:
    # fp16 in and out, as cuBLAS's anchor below: the same GEMM, nothing else in the kernel.
    model = torch.nn.Linear(size, size, bias=False).eval().cuda().half()
    x = torch.randn(size, size, device="cuda", dtype=torch.float16)
    trace = BuildTrace()
    start = time.perf_counter()
    engine = build_engine(model, "fp16", example_inputs=(x,), tune=level, trace=trace)
    build_s = time.perf_counter() - start
    rows = [r for r in trace.tuning.rows if r.template == "matmul"] if trace.tuning else []
    row = max(rows, key=lambda r: r.flops) if rows else None
    a = torch.randn(size, size, device="cuda", dtype=torch.float16)
    w = torch.randn(size, size, device="cuda", dtype=torch.float16)
    cublas_ms = autotune_ms(lambda: torch.nn.functional.linear(a, w))  # the tuner's own timer
    flops = 2.0 * size ** 3
    out = {"size": size, "level": level, "build_s": build_s, "cublas_ms": cublas_ms,
           "cublas_tflops": flops / cublas_ms / 1e9}
    if row is not None:
        out.update(tuned_ms=row.ms, heuristic_ms=row.base_ms, config=row.config.to_dict(),
                   tuned_tflops=flops / row.ms / 1e9 if math.isfinite(row.ms) else None,
                   heuristic_tflops=flops / row.base_ms / 1e9 if math.isfinite(row.base_ms) else None,
                   vs_cublas=cublas_ms / row.ms if math.isfinite(row.ms) else None)
        print(f"fp16 GEMM {size}^3: tuned {row.ms:.3f} ms = {out['tuned_tflops']:.0f} TFLOP/s ({row.config}), "
              f"heuristic {row.base_ms:.3f} ms, cuBLAS {cublas_ms:.3f} ms = {out['cublas_tflops']:.0f} TFLOP/s; "
              f"tuned/cuBLAS speed {out['vs_cublas']:.2f}x; build {build_s:.1f} s", flush=True)
    del engine
    return out


def speedup_table(models: list[dict]) -> str:
    """One table: every conv/matmul problem of the benchmarked models, heuristic vs tuned."""
    def f(x, d, s=""):
        return "-" if x is None else f"{x:.{d}f}{s}"

    head = (f"{'model':<11}{'kernel':<30}{'x':>3} {'problem':<26}{'heur ms':>9}{'tuned ms':>9}{'speedup':>8}"
            f"{'TFLOP/s':>9}{'%roof':>7}  config")
    lines = [head, "-" * len(head)]
    for m in models:
        for k in (m.get("kernels") or {}).get("kernels", []):
            if k["template"] not in ("conv", "matmul"):
                continue
            lines.append(f"{m['model'][:10]:<11}{k['name'][:29]:<30}{k['count']:>3} {problem_text(k['problem'])[:25]:<26}"
                         f"{f(k['heuristic_ms'], 4):>9}{f(k['ms'], 4):>9}{f(k['speedup'], 2, 'x'):>8}"
                         f"{f(k['tflops'], 0):>9}{f(k['roofline_pct'], 0, '%'):>7}  "
                         f"{LaunchConfig.from_dict(k['config'])}")
    return "\n".join(lines)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--level", default="fast", choices=["fast", "full"], help="tuning level for the models")
    p.add_argument("--gemm-level", default="full", choices=["fast", "full"], help="tuning level for the GEMM")
    p.add_argument("--only", default="resnet50,bert_base,gemm", help="comma list of resnet50, bert_base, gemm")
    p.add_argument("--resnet-batch", type=int, default=256, help="ResNet-50's batch")
    p.add_argument("--bert-batch", type=int, default=32, help="BERT-base's batch (x 128 tokens)")
    p.add_argument("--gemm-size", type=int, default=8192, help="the GEMM's M = N = K")
    p.add_argument("--keep-caches", action="store_true", help="use the existing caches (no cold build)")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    require_gpu("trident bench tune")
    root = _fresh_caches(args.keep_caches)
    only = set(args.only.split(","))
    results = ResultsFile.in_dir(args.out, "tuning", cache_dir=root, tune_workers=config.TUNE_WORKERS,
                                 models=[], gemm=None)
    for name, batch in (("resnet50", args.resnet_batch), ("bert_base", args.bert_batch)):
        if name in only:
            results.data["models"].append(bench_model(name, batch, args.level))
            results.save()
    if "gemm" in only:
        results.data["gemm"] = bench_gemm(args.gemm_size, args.gemm_level)
        results.save()
    print()
    print(speedup_table(results.data["models"]))
    print()
    for m in results.data["models"]:
        warm = m["warm"]
        warm_text = (f"warm rebuild (new process) {warm['build_s']:.1f} s + first run {warm['first_run_s']:.1f} s"
                     if "build_s" in warm else f"warm rebuild failed: {warm.get('error', '')[-300:]}")
        print(f"{m['model']} b{m['batch']} ({m['level']}): cold build {m['cold']['build_s']:.1f} s + first run "
              f"{m['cold']['first_run_s']:.1f} s; {warm_text}; engine {m['engine_speedup']:.2f}x over heuristic "
              f"configs")
    g = results.data["gemm"]
    if g and g.get("tuned_ms"):
        print(f"fp16 GEMM {g['size']}^3 ({g['level']}): {g['tuned_tflops']:.0f} TFLOP/s tuned vs "
              f"{g['cublas_tflops']:.0f} cuBLAS ({g['vs_cublas']:.2f}x), heuristic {g['heuristic_tflops'] or 0:.0f}")
    print(f"wrote {results.save()}")
    return 0
