"""`trident profile MODEL --torch-compile`: the per-kernel profile of what torch.compile(backend=
"trident") runs, which is not always what the import path builds (dynamo's graphs, its
partitions, the engines' own layouts).

The model runs once under torch.compile with the recording backend (as `trident explain
--torch-compile` does), each engine keeping the inputs of its first call; then every engine is
profiled alone on those inputs (tools/profiling.py's profile_engine) and the steps of all of them
are merged into one report, slowest first. Ops left in torch between partitions are not timed."""
from __future__ import annotations

from contextlib import contextmanager
from dataclasses import replace

import torch

from trident.compiler import config, timing
from trident.compiler.errors import InputError
from trident.tools.explain_compile import compiled_once, torch_model
from trident.tools.profiling import Peaks, ProfileReport, engine_dtype, measure_peaks, profile_engine


@contextmanager
def first_calls(calls: dict):
    """While active, the inputs of each engine's first call, by engine identity."""
    from trident.runtime.engine import Engine

    original = Engine.__call__

    def recording(self, *inputs):
        calls.setdefault(id(self), inputs)
        return original(self, *inputs)

    Engine.__call__ = recording
    try:
        yield calls
    finally:
        Engine.__call__ = original


def profile_torch_compile(spec: str, batch: int, precision: str, repeat: int | None = None,
                          peaks: Peaks | None = None) -> ProfileReport:
    model, inputs = torch_model(spec, batch, precision, "profile")
    device = torch.device("cuda" if config.HAS_CUDA else "cpu")
    model = model.to(device)
    inputs = [x.to(device) if isinstance(x, torch.Tensor) else x for x in inputs]
    calls: dict = {}
    try:
        with first_calls(calls):
            compiled, reports = compiled_once(model, inputs, precision)
        engines = [e for r in reports for e in r.engines() if id(e) in calls]
        if not engines:
            raise InputError(f"{spec}: torch.compile ran no trident engine (explain --torch-compile says why)")
        if peaks is None and device.type == "cuda":
            peaks = measure_peaks(device, engine_dtype(engines[0].plan))
        profiles = [profile_engine(e, calls[id(e)], repeat, peaks) for e in engines]
        report = merged(profiles, len(reports))
        if device.type == "cuda":
            report.whole_ms["model"] = model_call_ms(compiled, inputs)
        return report
    finally:
        torch._dynamo.reset()


def model_call_ms(compiled, inputs, calls: int = 20) -> float:
    """Median ms of the compiled model's calls, each between CUDA events (bench perf's timing)."""
    with torch.no_grad():
        return timing.bench_ms(lambda: compiled(*inputs), warmup=5, rep=calls)["median_ms"]


def merged(profiles: list[ProfileReport], graphs: int) -> ProfileReport:
    """One report over several engines' steps (names prefixed e<k>: where there is more than one)."""
    steps = []
    for k, report in enumerate(profiles):
        prefix = f"e{k}:" if len(profiles) > 1 else ""
        steps += [replace(s, name=prefix + s.name) for s in report.steps]
    steps.sort(key=lambda s: -s.time_ms)
    first = profiles[0]
    whole = {"engine": sum(p.whole_ms["engine"] for p in profiles)} if first.whole_ms else {}
    out = ProfileReport(first.device, steps, first.peaks, first.repeat, first.caveat, list(first.notes), whole)
    out.notes.insert(0, f"torch.compile: {graphs} graph(s), {len(profiles)} trident engine(s), each "
                        f"profiled on its first call's inputs; ops in torch between them are not timed")
    return out
