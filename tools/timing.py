"""Every timer the tools use (`trident run`, `profile`, `demo`, `bench`), in one module, so that
they all measure the same way and move together.

    time_runs(fn, iterations, warmup, on_gpu)  ms of each call: CUDA events on a GPU, wall clock
    bench_ms(fn, warmup, rep)                  median / p90 / p99 of time_runs on the GPU
    graph_ms(fn, rep)                          GPU time of one call: CUDA-graph replays, cold L2
    launch_ms(fn, rep)                         triton.testing.do_bench median (launched calls)
    kernel_ms(fn, rep, graph=True)             graph_ms or launch_ms; inf when fn fails
    autotune_ms(fn)                            the autotuner's own timer (compiler.autotune)
    step_ms_cpu(run, repeat) / step_ms_graph(run, repeat, keep, capture)   `trident profile`'s
"""
from __future__ import annotations

import math
import statistics
import sys
import time

import torch

from trident.compiler.autotune.measure import gpu_timer as autotune_ms  # noqa: F401  (re-exported)


def time_runs(fn, iterations: int, warmup: int, on_gpu: bool) -> list[float]:
    """Milliseconds of each timed call of fn (GPU: CUDA events; CPU: wall clock)."""
    for _ in range(warmup):
        fn()
    if on_gpu:
        torch.cuda.synchronize()
    times = []
    for _ in range(iterations):
        if on_gpu:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t0 = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t0) * 1e3)
    return times


def percentile(sorted_times: list[float], q: float) -> float:
    if not sorted_times:
        return float("nan")
    k = min(len(sorted_times) - 1, max(0, int(round(q / 100 * (len(sorted_times) - 1)))))
    return sorted_times[k]


def bench_ms(fn, warmup: int = 10, rep: int = 50) -> dict:
    """Median / p90 / p99 of CUDA-event timings, after warm-up."""
    times = sorted(time_runs(fn, rep, warmup, on_gpu=True))
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"median_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def wall_ms(fn, repeat: int = 3, warmup: int = 1) -> float:
    """Median wall-clock ms of fn, synchronizing the GPU around each call when there is one."""
    return statistics.median(time_runs(fn, repeat, warmup, on_gpu=torch.cuda.is_available()))


def graph_ms(fn, rep: int, rounds: int = 7, device="cuda") -> float:
    """GPU time of fn with a cold L2, host launch cost excluded: fn is captured in a CUDA graph
    behind an L2 flush, replayed back to back, and the flush's own graph time is subtracted.

    Timing launches directly counts the host's launch path whenever it outlasts the previous
    kernel (docs/performance.md, "Measuring"); an engine replays CUDA graphs, so this is also
    what it sees.
    """
    flush = torch.empty(256 << 20, dtype=torch.int8, device=device)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        fn()  # allocations and lazy initialisation outside the capture
        stream.synchronize()
        flush_only, flush_then_fn = torch.cuda.CUDAGraph(), torch.cuda.CUDAGraph()
        with torch.cuda.graph(flush_only, stream=stream):
            flush.zero_()
        with torch.cuda.graph(flush_then_fn, stream=stream):
            flush.zero_()
            fn()

        def per_replay(graph, n: int) -> float:
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(n):
                graph.replay()
            end.record(stream)
            end.synchronize()
            return start.elapsed_time(end) / n

        n = max(3, min(200, int(rep / max(per_replay(flush_then_fn, 3), 1e-3) / rounds)))
        samples = sorted(per_replay(flush_then_fn, n) - per_replay(flush_only, n) for _ in range(rounds))
    return max(samples[len(samples) // 2], 1e-6)


def launch_ms(fn, rep: int) -> float:
    """triton.testing.do_bench's median over `rep` ms of launches (raises when fn fails)."""
    from triton.testing import do_bench

    return do_bench(fn, warmup=max(5, rep // 4), rep=rep, return_mode="median")


def kernel_ms(fn, rep: int, graph: bool = True) -> float:
    """Milliseconds per call on the GPU; inf when the call fails (a config that cannot compile or
    run is a data point, not a crash). graph: CUDA-graph replays (graph_ms), else launch_ms."""
    try:
        fn()
        torch.cuda.synchronize()
        return graph_ms(fn, rep) if graph else launch_ms(fn, rep)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).splitlines()
        print(f"    (failed: {type(exc).__name__}: {text[0][:100] if text else ''})", file=sys.stderr)
        return math.inf


def step_ms_cpu(run, repeat: int) -> float:
    """Median wall-clock ms of run() after one untimed call (the interpreter's figures)."""
    run()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def step_ms_graph(run, repeat: int, keep: list, capture: bool) -> float:
    """ms of one run(): `repeat` launches captured in one CUDA graph, its replay timed with events
    (a kernel's time without Python's launch cost). Steps that run through torch may not be
    capturable: those (capture=False) are timed as `repeat` back-to-back eager runs. The graph is
    appended to `keep`: its memory pool holds outputs that later steps read."""
    run()  # compiles the kernel, outside any capture
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    if capture:
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            for _ in range(repeat):
                run()
        graph.replay()
        keep.append(graph)
        start.record()
        graph.replay()
        end.record()
    else:
        start.record()
        for _ in range(repeat):
            run()
        end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat
