"""Runtime benchmark (GPU): what CUDA graphs, several streams, the memory arena and a dynamic batch
profile each buy. Prints tables and writes JSON (as it goes, so a late failure loses nothing).

    python -m trident.runtime.bench_runtime [--json bench_runtime.json] [--quick]

1. CUDA graphs: ResNet-50 FP16 batch 1, median latency with and without graph replay.
2. Streams: multi-branch models (a wider Inception net, a trunk with 8 heads), one stream vs
   several, CUDA graphs on in both.
3. Memory: arena bytes beside the sum of all intermediates (no reuse) and torch eager's peak
   activation memory for the same model and batch (max_memory_allocated during one forward,
   minus what was allocated before it: weights and inputs).
4. Dynamic batch: ResNet-50 FP16 with batch=(1, 32, 256) beside engines built for one batch.

A benchmark measures; it never asserts a speed.
"""
from __future__ import annotations

import argparse
import json
import time

import torch

from trident.compiler import build_engine, config
from trident.compiler.testing import relative_error as rel_err


def bench_ms(fn, warmup: int = 10, rep: int = 100) -> dict:
    from trident.tools.bench import bench_ms as _bench

    return _bench(fn, warmup, rep)




def _write(path: str, results: dict) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2, default=str)


# ------------------------------------------------------------------------- models ----
def resnet50():
    from trident.models import MODELS

    build, make_inputs = MODELS["resnet50"]
    return build().eval().cuda(), lambda b: tuple(x.cuda() for x in make_inputs(b))


def wide_inception():
    from trident.models.common import calibrate_batchnorm, seeded
    from trident.models.multibranch import InceptionNet
    from trident.models.resnet import image_inputs

    with seeded(0):
        model = InceptionNet(width=64, blocks=4, num_classes=1000)
        calibrate_batchnorm(model, lambda: image_inputs(4, size=64))
    return model.eval().cuda(), lambda b: tuple(x.cuda() for x in image_inputs(b, size=64))


def many_heads():
    from trident.models.mlp import feature_inputs
    from trident.models.multibranch import multihead

    model = multihead(in_features=512, hidden=2048, heads=8, out=512)
    return model.eval().cuda(), lambda b: tuple(x.cuda() for x in feature_inputs(b, features=512))


def bert_base():
    from trident.models import MODELS

    build, make_inputs = MODELS["bert_base"]
    return build().eval().cuda(), lambda b: tuple(x.cuda() for x in make_inputs(b))


# ---------------------------------------------------------------------- sections ----
def cuda_graph_section(batch: int = 1) -> dict:
    model, make = resnet50()
    x = make(batch)
    engine = build_engine(model, "fp16", x)
    out = {"model": "resnet50", "precision": "fp16", "batch": batch, "kernels": engine.num_kernels,
           "streams": engine.num_streams}
    for graphs in (True, False):
        engine.cuda_graph = graphs
        with torch.no_grad():
            out[f"graph_{'on' if graphs else 'off'}"] = bench_ms(lambda: engine(*x))
    engine.cuda_graph = True
    return out


def streams_section(name: str, make_model, batches) -> list[dict]:
    from trident.runtime.engine import Engine

    model, make = make_model()
    rows = []
    for batch in batches:
        x = make(batch)
        with torch.no_grad():
            ref = model(*x)
        multi = build_engine(model, "fp16", x)
        single = Engine(multi.plan, streams=1)
        row = {"model": name, "batch": batch, "streams": multi.num_streams,
               "kernels": multi.num_kernels}
        a, b = multi(*x), single(*x)
        row["identical"] = all(torch.equal(p, q) for p, q in zip(a, b))
        row["rel_err"] = rel_err(a[0], ref[0] if isinstance(ref, tuple) else ref)
        row["single_stream"] = bench_ms(lambda: single(*x))
        row["multi_stream"] = bench_ms(lambda: multi(*x))
        row["arena_single_bytes"] = single.memory.arena_bytes
        row["arena_multi_bytes"] = multi.memory.arena_bytes
        rows.append(row)
        torch.cuda.empty_cache()
    return rows


def eager_peak_bytes(model, x, dtype) -> int:
    model = model.to(dtype)
    x = tuple(t.to(dtype) if t.is_floating_point() else t for t in x)
    with torch.no_grad():
        model(*x)  # warm (cuDNN workspaces, lazy init)
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = model(*x)
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
    del out
    return peak


def memory_section(name: str, make_model, batch: int) -> dict:
    model, make = make_model()
    x = make(batch)
    engine = build_engine(model, "fp16", x)
    r = engine.memory_report()
    engine = None  # free its arena before measuring eager
    torch.cuda.empty_cache()
    row = {"model": name, "batch": batch, "precision": "fp16", **r,
           "eager_peak_bytes": eager_peak_bytes(model, x, torch.float16)}
    return row


def dynamic_section(profile=(1, 32, 256), batches=(1, 32, 256)) -> dict:
    model, make = resnet50()
    start = time.perf_counter()
    dynamic = build_engine(model, "fp16", make(2), batch=profile)
    out = {"model": "resnet50", "profile": list(profile),
           "build_s": time.perf_counter() - start, "rows": []}
    for batch in batches:
        x = make(batch)
        start = time.perf_counter()
        static = build_engine(model, "fp16", x)
        static_build = time.perf_counter() - start
        with torch.no_grad():
            ref = model(*x)
        row = {"batch": batch, "static_build_s": static_build,
               "rel_err_dynamic": rel_err(dynamic(*x)[0], ref),
               "dynamic": bench_ms(lambda: dynamic(*x)), "static": bench_ms(lambda: static(*x))}
        out["rows"].append(row)
        torch.cuda.empty_cache()
    out["arena_bytes"] = dynamic.memory.arena_bytes
    out["cuda_graphs"] = len(dynamic.captured_batches)
    return out


# ------------------------------------------------------------------------ printing ----
def mib(n) -> str:
    return f"{n / 2**20:.1f}"


def print_tables(results: dict) -> None:
    g = results.get("cuda_graph")
    if g:
        print("\n## CUDA graphs (ResNet-50 FP16, batch 1)\n")
        print("| replay | median ms | p90 ms | p99 ms |\n|---|---|---|---|")
        for key in ("graph_on", "graph_off"):
            m = g[key]
            print(f"| {key.replace('graph_', '')} | {m['median_ms']:.3f} | {m['p90_ms']:.3f} | "
                  f"{m['p99_ms']:.3f} |")
    if results.get("streams"):
        print("\n## Streams (FP16, CUDA graphs on)\n")
        print("| model | batch | streams | 1 stream ms | multi ms | speedup | identical | arena 1 / multi MiB |")
        print("|---|---|---|---|---|---|---|---|")
        for r in results["streams"]:
            s, m = r["single_stream"]["median_ms"], r["multi_stream"]["median_ms"]
            print(f"| {r['model']} | {r['batch']} | {r['streams']} | {s:.3f} | {m:.3f} | "
                  f"{s / m:.2f}x | {r['identical']} | {mib(r['arena_single_bytes'])} / "
                  f"{mib(r['arena_multi_bytes'])} |")
    if results.get("memory"):
        print("\n## Memory (FP16)\n")
        print("| model | batch | arena MiB | intermediates MiB | eager peak MiB | weights MiB | outputs MiB |")
        print("|---|---|---|---|---|---|---|")
        for r in results["memory"]:
            print(f"| {r['model']} | {r['batch']} | {mib(r['arena_bytes'])} | "
                  f"{mib(r['intermediate_bytes'])} | {mib(r['eager_peak_bytes'])} | "
                  f"{mib(r['weights_bytes'])} | {mib(r['output_bytes'])} |")
    d = results.get("dynamic")
    if d:
        print(f"\n## Dynamic batch (ResNet-50 FP16, profile {d['profile']}, built in "
              f"{d['build_s']:.0f} s, arena {mib(d['arena_bytes'])} MiB)\n")
        print("| batch | dynamic ms | static ms | ratio | rel err |\n|---|---|---|---|---|")
        for r in d["rows"]:
            dm, sm = r["dynamic"]["median_ms"], r["static"]["median_ms"]
            print(f"| {r['batch']} | {dm:.3f} | {sm:.3f} | {dm / sm:.2f} | {r['rel_err_dynamic']:.1e} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trident.runtime.bench_runtime")
    parser.add_argument("--json", default="bench_runtime.json")
    parser.add_argument("--quick", action="store_true", help="skip the dynamic-batch section "
                                                             "and the large batches")
    args = parser.parse_args(argv)
    if not config.HAS_CUDA:
        print("bench_runtime needs a CUDA GPU (the interpreter's timings mean nothing).")
        return 2
    from trident.tools.bench import environment

    results: dict = {"environment": environment()}
    steps = [
        ("cuda_graph", lambda: cuda_graph_section(1)),
        ("streams", lambda: streams_section("inception_wide", wide_inception, (1, 8))
         + streams_section("multihead_8", many_heads, (1, 32))),
        ("memory", lambda: [memory_section("resnet50", resnet50, b) for b in (1, 32)]
         + [memory_section("bert_base", bert_base, b) for b in (1, 32)]
         + [memory_section("inception_wide", wide_inception, 8)]),
    ]
    if not args.quick:
        steps.append(("dynamic", dynamic_section))
    for key, fn in steps:
        start = time.perf_counter()
        try:
            results[key] = fn()
        except Exception as e:  # noqa: BLE001 - keep the other sections' figures
            results[key + "_error"] = f"{type(e).__name__}: {e}"
            print(f"{key}: failed: {results[key + '_error']}")
        print(f"[{key}: {time.perf_counter() - start:.0f} s]", flush=True)
        _write(args.json, results)
    print_tables(results)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
