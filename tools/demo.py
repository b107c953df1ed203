"""`trident demo`: the bundled example. Builds a small CNN and a small transformer encoder that
ship with trident, compiles each to fused Triton kernels, checks the outputs against PyTorch and
prints outputs and timings (on a CPU-only machine the kernels run in Triton's interpreter)."""
from __future__ import annotations

import argparse
import time

import torch

from trident.compiler import build_engine, config, timing
from trident.compiler.build import BuildTrace


def register(subparsers) -> None:
    p = subparsers.add_parser("demo", help="compile and run the bundled example models",
                              description=__doc__)
    p.add_argument("--precision", default=config.DEFAULT_PRECISION, choices=["fp32", "fp16"],
                   help="what the kernels compute in")
    p.set_defaults(func=run)


def _examples():
    from trident.models import MODELS

    for name in ("resnet_tiny", "bert_tiny"):
        build, make_inputs = MODELS[name]
        yield name, build(), make_inputs(2)


def _time(fn, repeat: int = 3) -> float:
    """Median milliseconds of a whole run (the GPU's work included: CUDA events there)."""
    return timing.summarize(timing.latencies_ms(fn, repeat, warmup=1))["median_ms"]


def run(args: argparse.Namespace) -> int:
    precision = args.precision
    device = "cuda" if config.HAS_CUDA else "cpu"
    where = "GPU" if config.HAS_CUDA else "CPU (Triton interpreter)"
    print(f"trident demo: precision {precision}, kernels on the {where}")
    for name, model, inputs in _examples():
        model = model.to(device).eval()
        inputs = tuple(x.to(device) for x in inputs)
        start = time.perf_counter()
        trace = BuildTrace()
        engine = build_engine(model, precision=precision, example_inputs=inputs, trace=trace)
        built = time.perf_counter() - start
        with torch.no_grad():
            expected = model(*inputs)
            got = engine(*inputs)[0]
        err = ((got.float() - expected.float()).norm() / expected.float().norm()).item()
        print(f"\n{name}: {len(trace.program.graph.nodes)} IR nodes -> {engine.num_kernels} kernels, "
              f"built in {built:.1f} s")
        print(f"  output {tuple(got.shape)}: {got.flatten()[:6].tolist()}")
        print(f"  relative error vs PyTorch: {err:.2e}")
        with torch.no_grad():
            note = "" if config.HAS_CUDA else "  (interpreter: checks correctness, not speed)"
            print(f"  time per run: trident {_time(lambda: engine(*inputs)):.1f} ms, "
                  f"torch eager {_time(lambda: model(*inputs)):.1f} ms{note}")
    return 0
