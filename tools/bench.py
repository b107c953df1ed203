"""`trident bench` (also `python -m trident.tools.bench`): trident beside torch eager and
torch.compile, in one process on one GPU. Prints a markdown table and writes JSON.

Benchmarks are measurements, never tests: nothing here asserts a speed.
"""
from __future__ import annotations

import argparse
import datetime
import json
import platform
import time

import torch

from trident.compiler import build_engine, config


def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark trident beside torch eager and torch.compile")
    add_arguments(p)
    p.set_defaults(func=run)


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--models", default="resnet50,bert_base", help="comma-separated model names")
    p.add_argument("--batches", default=None, help="override batch sizes, e.g. 1,256")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16"])
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor")
    p.add_argument("--json", default="bench.json", help="where to write the raw figures")


DEFAULT_BATCHES = {"resnet50": (1, 256), "bert_base": (1, 32), "mlp": (1, 512),
                   "multibranch": (1, 64)}


def bench_ms(fn, warmup: int = 10, rep: int = 50) -> dict:
    """Median / p90 / p99 of CUDA-event timings, after warm-up."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times = []
    for _ in range(rep):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end))
    times.sort()
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"median_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def _rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


def bench_model(name: str, batch: int, precision: str, with_compile: bool) -> list[dict]:
    from trident.models import MODELS

    build, make_inputs = MODELS[name]
    dtype = torch.float16 if precision == "fp16" else torch.float32
    model = build().eval().cuda()
    inputs = tuple(x.cuda() for x in make_inputs(batch))
    rows = []
    with torch.no_grad():
        reference = model(*inputs)  # fp32 eager: the accuracy reference
        start = time.perf_counter()
        engine = build_engine(model, precision=precision, example_inputs=inputs)
        out = engine(*inputs)[0]
        torch.cuda.synchronize()
        build_s = time.perf_counter() - start
        rows.append(dict(runner="trident", build_s=build_s, kernels=engine.num_kernels,
                         rel_err=_rel_err(out, reference), **bench_ms(lambda: engine(*inputs))))
        anchor = build().eval().cuda().to(dtype)
        if inputs[0].dim() == 4:
            anchor = anchor.to(memory_format=torch.channels_last)
        anchor_in = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
        if anchor_in[0].dim() == 4:
            anchor_in = (anchor_in[0].contiguous(memory_format=torch.channels_last),) + anchor_in[1:]
        rows.append(dict(runner="torch eager", rel_err=_rel_err(anchor(*anchor_in), reference),
                         **bench_ms(lambda: anchor(*anchor_in))))
        if with_compile:
            start = time.perf_counter()
            compiled = torch.compile(anchor)
            compiled(*anchor_in)
            torch.cuda.synchronize()
            rows.append(dict(runner="torch.compile", build_s=time.perf_counter() - start,
                             **bench_ms(lambda: compiled(*anchor_in))))
    items = batch * (1 if name != "bert_base" else 1)
    for row in rows:
        row.update(model=name, batch=batch, precision=precision,
                   throughput_per_s=items / row["median_ms"] * 1e3)
    return rows


def bench_elementwise_chain(numel: int = 1 << 28) -> dict:
    """A fused chain of 4 elementwise ops on fp16, as a fraction of device copy bandwidth."""
    from trident.compiler.build import compile_graph
    from trident.compiler.ir import GraphBuilder, TensorType
    from trident.runtime.engine import Engine

    b = GraphBuilder("chain4")
    x = b.input("x", TensorType((numel,), torch.float16))
    y = b.add1("mul", [x, b.constant(torch.tensor(1.5, dtype=torch.float16))])
    y = b.add1("add", [y, b.constant(torch.tensor(0.25, dtype=torch.float16))])
    y = b.add1("relu", [y])
    y = b.add1("sigmoid", [y])
    engine = Engine(compile_graph(b.finish([y]), "fp32"), cuda_graph=False)
    data = torch.randn(numel, device="cuda", dtype=torch.float16)
    bytes_moved = 2 * numel * 2
    ours = bench_ms(lambda: engine(data))["median_ms"]
    copy = bench_ms(lambda: data.clone())["median_ms"]
    return {"numel": numel, "trident_ms": ours, "copy_ms": copy,
            "trident_TBps": bytes_moved / ours / 1e9, "copy_TBps": bytes_moved / copy / 1e9,
            "fraction_of_copy": copy / ours, "kernels": engine.num_kernels}


def environment() -> dict:
    import triton

    return {"gpu": torch.cuda.get_device_name(), "capability": torch.cuda.get_device_capability(),
            "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def table(rows: list[dict]) -> str:
    lines = ["| model | batch | prec | runner | median ms | p90 ms | p99 ms | items/s | build s | kernels | rel err |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['model']} | {r['batch']} | {r['precision']} | {r['runner']} | "
                     f"{r['median_ms']:.3f} | {r['p90_ms']:.3f} | {r['p99_ms']:.3f} | "
                     f"{r['throughput_per_s']:.0f} | {r.get('build_s', float('nan')):.1f} | "
                     f"{r.get('kernels', '')} | {r.get('rel_err', float('nan')):.2e} |")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    if not config.HAS_CUDA:
        print("trident bench needs a CUDA GPU (the interpreter's timings mean nothing).")
        return 2
    rows = []
    results = {"environment": environment(), "models": rows}
    for name in args.models.split(","):
        batches = [int(b) for b in args.batches.split(",")] if args.batches else DEFAULT_BATCHES[name]
        for batch in batches:
            rows += bench_model(name, batch, args.precision, not args.no_compile)
            print(table(rows[-3:]), flush=True)
            _write(args.json, results)  # keep what is measured even if a later model fails
    chain = results["elementwise_chain"] = bench_elementwise_chain()
    print(table(rows))
    print(f"\nfused 4-op elementwise chain, fp16, {chain['numel']} elements: "
          f"{chain['trident_TBps']:.2f} TB/s = {chain['fraction_of_copy']:.1%} of copy "
          f"({chain['copy_TBps']:.2f} TB/s), {chain['kernels']} kernel")
    _write(args.json, results)
    print(f"wrote {args.json}")
    return 0


def _write(path: str, results: dict) -> None:
    with open(path, "w") as f:
        json.dump(results, f, indent=2)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="trident bench")
    add_arguments(parser)
    raise SystemExit(run(parser.parse_args()))
