"""The timer: how long a kernel, a step or a whole engine run takes, on the GPU or the CPU.

- kernel_ms: GPU time of one call with the host's launch cost excluded, as an engine's CUDA-graph
  replay sees it: the call is captured in a CUDA graph and replayed (triton.testing's
  do_bench_cudagraph). What the autotuner and the kernel benchmarks compare.
- cold_kernel_ms: the same with the L2 flushed before each call (a kernel whose inputs an earlier
  layer did not just write).
- graph_ms: one replay of `repeat` calls captured in a CUDA graph, returning the graph (whose
  memory pool holds the calls' outputs) for the caller to keep alive.
- latencies_ms / summarize: per-call wall latency of whole runs (CUDA events on the GPU, the
  clock on the CPU) and its median / p90 / p99, as trtexec reports them.
- launch_ms: triton.testing.do_bench's median over launched calls (for calls that cannot be captured).
- bench_ms: latencies_ms on the GPU summarized (median / p90 / p99).
- wall_ms: median host-clock time of a call (the interpreter on the CPU).
- gpu_turn: while held, no other process sharing the lock file times on the GPU (the zoo's
  workers, a benchmark run beside them); every timer here takes it (`timed_alone`).
A call that raises propagates: callers that time candidate configs treat it as a failed config.
"""
from __future__ import annotations

import fcntl
import functools
import math
import os
import statistics
import sys
import threading
import time
from contextlib import contextmanager

import torch

from trident.compiler import config as _config  # noqa: F401  (before triton: picks the interpreter)

from triton.testing import do_bench, do_bench_cudagraph


# A file whose lock processes that share one GPU take turns holding while they time (set by `trident
# zoo --jobs`, or by hand for a benchmark run beside the zoo): no figure is measured while another
# process's kernels run.
TIMING_LOCK_ENV = "TRIDENT_TIMING_LOCK"
_turn = threading.local()


@contextmanager
def gpu_turn():
    """Holds the timing lock named by TRIDENT_TIMING_LOCK (when set) for the block. Reentrant:
    flock on a second open file would wait on this process's own lock."""
    path = os.environ.get(TIMING_LOCK_ENV)
    depth = getattr(_turn, "depth", 0)
    if not path or depth:
        _turn.depth = depth + 1
        try:
            yield
        finally:
            _turn.depth = depth
        return
    with open(path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _turn.depth = 1
        try:
            yield
        finally:
            _turn.depth = 0
            fcntl.flock(lock, fcntl.LOCK_UN)


def timed_alone(timer):
    """The timer runs inside gpu_turn: while it measures, no process sharing the lock does."""
    @functools.wraps(timer)
    def timed(*args, **kwargs):
        with gpu_turn():
            return timer(*args, **kwargs)
    return timed


@timed_alone
def kernel_ms(fn, *, rep_ms: float = 20.0, cutoff_ms: float = math.inf) -> float:
    """Median GPU milliseconds per call of `fn`, replayed from a CUDA graph.

    One untimed call first (compiles or loads the kernel; an exception means the call fails),
    then a first estimate from three calls in one graph: above `cutoff_ms` (a multiple of the best
    config so far, when tuning) the estimate is the answer, as sampling further cannot make it win.
    (The estimate is graph-replayed too: timed as launches, a short kernel would measure the host's
    launch cost and lose to configs that are not faster.)
    """
    estimate, _ = graph_ms(fn, 3)
    if estimate > cutoff_ms:
        return estimate
    with torch.cuda.stream(torch.cuda.Stream()):  # graphs are not captured on the default stream
        ms = do_bench_cudagraph(fn, rep=max(1, int(rep_ms)), return_mode="median")
    return max(float(ms), 1e-6)


@timed_alone
def cold_kernel_ms(fn, *, rep_ms: float = 100.0, rounds: int = 7) -> float:
    """GPU milliseconds per call of `fn` with a cold L2: fn is captured in a CUDA graph behind an
    L2 flush, replayed back to back, and the flush's own replay time is subtracted (median of
    `rounds` samples). Timing launches directly would count the host's launch path whenever it
    outlasts the previous kernel; an engine replays CUDA graphs, so this is what it sees."""
    flush = torch.empty(256 << 20, dtype=torch.int8, device="cuda")
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

        n = max(3, min(200, int(rep_ms / max(per_replay(flush_then_fn, 3), 1e-3) / rounds)))
        samples = sorted(per_replay(flush_then_fn, n) - per_replay(flush_only, n) for _ in range(rounds))
    return max(samples[len(samples) // 2], 1e-6)


@timed_alone
def graph_ms(fn, repeat: int) -> tuple[float, "torch.cuda.CUDAGraph"]:
    """(milliseconds per call, the graph): `repeat` calls captured in one CUDA graph, replayed
    once to warm up and once timed. Keep the graph while its calls' outputs are read (its memory
    pool holds them)."""
    fn()  # compiles the kernel, outside any capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for _ in range(repeat):
            fn()
    graph.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat, graph


@timed_alone
def events_ms(fn, repeat: int) -> float:
    """Milliseconds per call of `repeat` back-to-back calls between two CUDA events (for calls
    that cannot be captured in a graph, e.g. ops that run through torch and allocate)."""
    fn()
    torch.cuda.synchronize()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(repeat):
        fn()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / repeat


@timed_alone
def launch_ms(fn, rep_ms: float = 100.0) -> float:
    """triton.testing.do_bench's median milliseconds over `rep_ms` of launched calls."""
    return float(do_bench(fn, warmup=max(5, int(rep_ms) // 4), rep=max(1, int(rep_ms)),
                          return_mode="median"))


def config_ms(fn, rep_ms: float = 100.0, graph: bool = True) -> float:
    """A candidate config's milliseconds per call (cold_kernel_ms, or launch_ms when not
    `graph`), or inf when the call fails: a config that cannot compile or run is a data point of
    a sweep, not its end (the failure goes to stderr)."""
    try:
        fn()
        torch.cuda.synchronize()
        return cold_kernel_ms(fn, rep_ms=rep_ms) if graph else launch_ms(fn, rep_ms)
    except Exception as exc:  # noqa: BLE001
        text = str(exc).splitlines()
        print(f"    (failed: {type(exc).__name__}: {text[0][:100] if text else ''})", file=sys.stderr)
        return math.inf


@timed_alone
def latencies_ms(fn, iterations: int, warmup: int = 10, on_gpu: bool | None = None) -> list[float]:
    """Milliseconds of each of `iterations` timed calls of fn, after `warmup` untimed ones
    (GPU: CUDA events around each call; CPU: the host clock)."""
    on_gpu = torch.cuda.is_available() if on_gpu is None else on_gpu
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


def summarize(times: list[float]) -> dict:
    """Median / p90 / p99 of per-call milliseconds."""
    times = sorted(times)
    pick = lambda q: times[min(len(times) - 1, int(q * len(times)))]  # noqa: E731
    return {"median_ms": pick(0.5), "p90_ms": pick(0.9), "p99_ms": pick(0.99)}


def bench_ms(fn, warmup: int = 10, rep: int = 50) -> dict:
    """Median / p90 / p99 milliseconds of `rep` CUDA-event-timed calls, after `warmup`."""
    return summarize(latencies_ms(fn, rep, warmup, on_gpu=True))


@timed_alone
def wall_ms(fn, repeat: int) -> float:
    """Median host-clock milliseconds of `repeat` calls of fn, after one untimed call."""
    fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


__all__ = ["bench_ms", "cold_kernel_ms", "config_ms", "events_ms", "graph_ms", "kernel_ms", "latencies_ms",
           "launch_ms", "summarize", "wall_ms"]
