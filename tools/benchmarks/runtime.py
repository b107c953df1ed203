"""`trident bench runtime` (GPU): what CUDA graphs, several streams, the memory arena and a dynamic
batch profile each buy. Prints tables and writes <out>/<gpu>-runtime.json (as it goes, so a late
failure loses nothing).

    trident bench runtime [--quick] [--out bench-out]

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
import time

import torch

from trident.compiler import build_engine
from trident.compiler.testing import relative_error as rel_err
from trident.tools.benchmarks.results import ResultsFile, markdown_table, require_gpu
from trident.tools.benchmarks.suite import SPECS
from trident.compiler.timing import bench_ms as _bench_ms

HELP = "what CUDA graphs, streams, the memory arena and dynamic batch each buy (GPU)"


def bench_ms(fn) -> dict:
    return _bench_ms(fn, warmup=10, rep=100)


def on_gpu(name: str):
    """(model on the GPU, make_inputs(batch) on the GPU) of a benchmark suite model."""
    build, make_inputs = SPECS[name].load()
    return build().eval().cuda(), lambda b: tuple(x.cuda() for x in make_inputs(b))


def resnet50():
    return on_gpu("resnet50")


def wide_inception():
    return on_gpu("inception_wide")


def many_heads():
    return on_gpu("multihead_wide")


def bert_base():
    return on_gpu("bert_base")


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
    out["cuda_graphs"] = len(dynamic.captured_shapes)
    return out


# ------------------------------------------------------------------------ printing ----
def mib(n) -> str:
    return f"{n / 2**20:.1f}"


def print_tables(results: dict) -> None:
    for title, header, rows in tables(results):
        print(f"\n## {title}\n")
        print(markdown_table(header, rows))


def tables(results: dict) -> list[tuple[str, list, list]]:
    """(title, header, rows) of each section measured."""
    out = []
    if g := results.get("cuda_graph"):
        out.append(("CUDA graphs (ResNet-50 FP16, batch 1)", ["replay", "median ms", "p90 ms", "p99 ms"],
                    [[key.replace("graph_", "")] + [f"{g[key][q]:.3f}" for q in ("median_ms", "p90_ms", "p99_ms")]
                     for key in ("graph_on", "graph_off")]))
    if results.get("streams"):
        rows = []
        for r in results["streams"]:
            one, multi = r["single_stream"]["median_ms"], r["multi_stream"]["median_ms"]
            rows.append([r["model"], r["batch"], r["streams"], f"{one:.3f}", f"{multi:.3f}", f"{one / multi:.2f}x",
                         r["identical"], f"{mib(r['arena_single_bytes'])} / {mib(r['arena_multi_bytes'])}"])
        out.append(("Streams (FP16, CUDA graphs on)", ["model", "batch", "streams", "1 stream ms", "multi ms",
                                                        "speedup", "identical", "arena 1 / multi MiB"], rows))
    if results.get("memory"):
        keys = ("arena_bytes", "intermediate_bytes", "eager_peak_bytes", "weights_bytes", "output_bytes")
        out.append(("Memory (FP16)", ["model", "batch", "arena MiB", "intermediates MiB", "eager peak MiB",
                                      "weights MiB", "outputs MiB"],
                    [[r["model"], r["batch"]] + [mib(r[k]) for k in keys] for r in results["memory"]]))
    if d := results.get("dynamic"):
        rows = [[r["batch"], f"{r['dynamic']['median_ms']:.3f}", f"{r['static']['median_ms']:.3f}",
                 f"{r['dynamic']['median_ms'] / r['static']['median_ms']:.2f}", f"{r['rel_err_dynamic']:.1e}"]
                for r in d["rows"]]
        out.append((f"Dynamic batch (ResNet-50 FP16, profile {d['profile']}, built in {d['build_s']:.0f} s, "
                    f"arena {mib(d['arena_bytes'])} MiB)", ["batch", "dynamic ms", "static ms", "ratio", "rel err"],
                    rows))
    return out


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--quick", action="store_true", help="skip the dynamic-batch section")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    require_gpu("trident bench runtime")
    results = ResultsFile.in_dir(args.out, "runtime")
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
            results.data[key] = fn()
        except Exception as e:  # noqa: BLE001 - keep the other sections' figures
            results.data[key + "_error"] = f"{type(e).__name__}: {e}"
            print(f"{key}: failed: {results.data[key + '_error']}")
        print(f"[{key}: {time.perf_counter() - start:.0f} s]", flush=True)
        results.save()
    print_tables(results.data)
    print(f"\nwrote {results.save()}")
    return 0
