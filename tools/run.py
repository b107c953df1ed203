"""`trident run model.engine`: load an engine file and time it, in the manner of trtexec.

Random inputs of the engine's input shapes (a dynamic-batch engine at --batch, default its opt
batch), warm-up runs, then timed runs: latency percentiles, throughput, GPU memory (arena, weights,
outputs) and, with --profile, the time of each kernel (trident.tools.profiling).
In the interpreter (no GPU) it works too, with few runs.
"""
from __future__ import annotations

import argparse
import json
import statistics

import torch

from trident.compiler import timing
from trident.compiler.errors import InputError
from trident.tools.common import output_path
from trident.tools.profiling import profile_engine


def register(subparsers) -> None:
    p = subparsers.add_parser("run", help="time an engine file (trtexec-like)", description=__doc__)
    p.add_argument("engine", help="an engine file written by `trident compile` or engine.save()")
    p.add_argument("--batch", type=int, default=None,
                   help="batch of a dynamic-batch engine (default: its opt batch); a static engine "
                        "runs only the batch it was built for")
    p.add_argument("--iterations", type=int, default=None, help="timed runs (GPU 200, CPU 3)")
    p.add_argument("--warmup", type=int, default=None, help="untimed runs first (GPU 20, CPU 1)")
    p.add_argument("--no-cuda-graph", action="store_true", help="launch kernels one by one")
    p.add_argument("--streams", type=int, default=None, help="max CUDA streams (1: one stream)")
    p.add_argument("--profile", action="store_true", help="also time every kernel")
    p.add_argument("--force", action="store_true",
                   help="run a file built for another GPU or other versions")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")
    p.add_argument("--json", default=None, help="write the figures to this file")
    p.set_defaults(func=run)


def index_bound(engine, name: str) -> int | None:
    """For an integer input used as gather indices (token ids): the size it indexes."""
    return engine.plan.index_bounds.get(name)


def random_inputs(engine, batch: int | None, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for name, shape, dtype in engine.input_specs(batch_sizes(engine, batch)):
        if dtype.is_floating_point:
            x = torch.randn(shape, generator=g).to(dtype)
        elif dtype == torch.bool:
            x = torch.rand(shape, generator=g) < 0.5
        else:
            high = index_bound(engine, name) or 2
            x = torch.randint(0, high, shape, generator=g, dtype=dtype)
        out.append(x.to(engine.device))
    return out


def percentile(sorted_times: list[float], q: float) -> float:
    if not sorted_times:
        return float("nan")
    k = min(len(sorted_times) - 1, max(0, int(round(q / 100 * (len(sorted_times) - 1)))))
    return sorted_times[k]


def summarize(times: list[float], batch: int) -> dict:
    s = sorted(times)
    median = statistics.median(s)
    return {"runs": len(s), "min_ms": s[0], "mean_ms": statistics.fmean(s), "median_ms": median,
            "p90_ms": percentile(s, 90), "p99_ms": percentile(s, 99), "max_ms": s[-1],
            "throughput_per_s": 1e3 / median if median else float("inf"),
            "samples_per_s": batch * 1e3 / median if median else float("inf")}


def static_batch(engine) -> int | None:
    """The batch a static-shape engine was built for (the first dim of its first input)."""
    specs = engine.input_specs()
    return specs[0][1][0] if specs and specs[0][1] else None


def batch_symbol(engine) -> str | None:
    """The symbol of a profiled engine's first input's dim 0 (what --batch sets), if any."""
    if engine.profile is None or not engine.inputs:
        return None
    dims = engine.profile.inputs.get(engine.inputs[0], ())
    return dims[0] if dims and isinstance(dims[0], str) else None


def batch_sizes(engine, batch: int | None) -> dict | None:
    symbol = batch_symbol(engine)
    return {symbol: batch} if batch is not None and symbol is not None else None


def check_batch(engine, batch: int | None, path) -> None:
    """--batch must be one the engine runs: any in a dynamic engine's profile, or a static
    engine's own."""
    if batch is None:
        return
    if batch < 1:
        raise InputError(f"--batch {batch}: a batch is at least 1")
    if batch_symbol(engine) is not None:
        r = engine.profile.symbols[batch_symbol(engine)]
        if batch not in r:
            raise InputError(f"--batch {batch}: {path} runs batches {r.min} to {r.max} (its "
                             f"profile {engine.profile})")
        return
    built = static_batch(engine)
    if batch != built:
        raise InputError(f"--batch {batch}: {path} was built with static shapes for batch {built}; "
                         f"build it for a range of batches with `trident compile --batch min:opt:max`")


def run(args: argparse.Namespace) -> int:
    from trident.compiler.build import load_engine

    engine = load_engine(args.engine, force=args.force, cuda_graph=not args.no_cuda_graph,
                         streams=args.streams)
    check_batch(engine, args.batch, args.engine)
    on_gpu = engine.device.type == "cuda"
    iterations = args.iterations or (200 if on_gpu else 3)
    warmup = args.warmup if args.warmup is not None else (20 if on_gpu else 1)
    inputs = random_inputs(engine, args.batch, args.seed)
    batch = inputs[0].shape[0] if inputs and inputs[0].dim() else 1
    if batch_symbol(engine) is not None:
        batch = args.batch or engine.profile.symbols[batch_symbol(engine)].opt
    info = engine.file_info or {}
    v = info.get("versions", {})
    print(f"engine: {args.engine} ({info.get('bytes', 0) / 2**20:.2f} MiB), built {info.get('created')} "
          f"with trident {v.get('trident')}, Triton {v.get('triton')}, torch {v.get('torch')} for "
          f"{info.get('device', {}).get('name')}")
    device = torch.cuda.get_device_name(engine.device) if on_gpu else "CPU (Triton interpreter)"
    print(f"device: {device}; {engine.num_kernels} kernels, {engine.num_streams} stream(s), "
          f"CUDA graph {'on' if engine.cuda_graph and on_gpu else 'off'}")
    if engine.profile is not None:
        print(f"optimization profile: {engine.profile}; running batch {batch}")
    for (name, shape, dtype), x in zip(engine.input_specs(batch_sizes(engine, args.batch)), inputs):
        print(f"input {name}: {str(dtype).replace('torch.', '')}{list(x.shape)}")
    print(f"{warmup} warm-up run(s), {iterations} timed run(s)")
    times = timing.latencies_ms(lambda: engine(*inputs), iterations, warmup, on_gpu)
    stats = summarize(times, batch)
    print(f"latency (ms): min {stats['min_ms']:.4g}, mean {stats['mean_ms']:.4g}, median "
          f"{stats['median_ms']:.4g}, p90 {stats['p90_ms']:.4g}, p99 {stats['p99_ms']:.4g}, "
          f"max {stats['max_ms']:.4g}")
    print(f"throughput: {stats['throughput_per_s']:.4g} inferences/s "
          f"({stats['samples_per_s']:.4g} samples/s at batch {batch})")
    memory = engine.memory_report()
    where = "GPU" if on_gpu else "device"
    print(f"{where} memory: {engine.describe_memory()}")
    if on_gpu:
        memory["cuda_allocated_bytes"] = torch.cuda.memory_allocated(engine.device)
        memory["cuda_peak_bytes"] = torch.cuda.max_memory_allocated(engine.device)
        print(f"  torch allocator: {memory['cuda_allocated_bytes'] / 2**20:.1f} MiB allocated, "
              f"peak {memory['cuda_peak_bytes'] / 2**20:.1f} MiB")
    result = {"engine": str(args.engine), "device": device, "batch": batch, "latency": stats,
              "memory": memory, "kernels": engine.num_kernels, "streams": engine.num_streams,
              "cuda_graph": bool(engine.cuda_graph and on_gpu), "file": info}
    if args.profile:
        result["profile"] = profile(engine, inputs)
    if args.json:
        with open(output_path(args.json), "w") as f:
            json.dump(result, f, indent=2, default=str)
        print(f"wrote {args.json}")
    return 0


def profile(engine, inputs) -> list:
    report = profile_engine(engine, inputs)
    print(report)
    return [{"index": s.index, "name": s.name, "kind": s.kind, "time_ms": s.time_ms}
            for s in report.steps]


__all__ = ["random_inputs", "summarize"]
