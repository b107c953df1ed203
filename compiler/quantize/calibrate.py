"""Calibration: run a graph over the calibration batches and collect statistics of |x| for the
tensors that feed int8 layers, then turn them into thresholds with the chosen calibrator.

The graph runs on the reference executor's op definitions (torch, on the device the batches are
on): fp32 for entropy2 / minmax / percentile (the graph before fusion), the fp16-lowered graph for
entropy (see calibrators.py). Histogram calibrators take two passes over the data: the first finds
max |x| per tensor (the histogram's range), the second fills 2048-bin histograms over [0, max].
"""
from __future__ import annotations

from typing import Iterable, Sequence

import numpy as np
import torch

from trident.compiler.errors import InputError, TridentError, where
from trident.compiler.ir import Graph
from trident.compiler.ops import evaluate
from trident.compiler.progress import progress
from trident.compiler.quantize.calibrators import BINS, Calibrator, TensorStats
from trident.compiler.reference import check_inputs


def as_batches(calibration) -> list[tuple[torch.Tensor, ...]]:
    """Calibration data -> a list of input tuples (each batch: a tensor, or a tuple/list of them)."""
    if isinstance(calibration, torch.Tensor):
        raise TridentError("calibration: give an iterable of batches (e.g. [x1, x2] or a DataLoader "
                           "of inputs), not a single tensor; wrap it as [x] for one batch")
    batches = []
    for batch in calibration:
        if isinstance(batch, torch.Tensor):
            batch = (batch,)
        elif isinstance(batch, dict):
            raise TridentError("calibration: batches must be tensors or tuples of tensors, not dicts")
        batches.append(tuple(batch))
    if not batches:
        raise TridentError("calibration: no batches")
    return batches


def rebatch(graph: Graph, batches: Sequence[tuple]) -> list[tuple]:
    """Calibration batches whose batch size differs from the graph's (static) one are concatenated
    and cut into batches of the graph's size; samples past the last full batch are left out (with
    fewer samples than one batch, they are repeated to fill it). Other dims must match; batches
    that already fit are returned as they are."""
    types = [graph.types[n] for n in graph.inputs]
    if all(len(b) == len(types) and all(tuple(x.shape) == tuple(t.shape) for x, t in zip(b, types))
           for b in batches):
        return list(batches)
    sizes = {t.shape[0] for t in types if t.rank > 0}
    if len(sizes) != 1 or not isinstance(next(iter(sizes)), int) or any(len(b) != len(types) for b in batches):
        return list(batches)  # not re-batchable: check_inputs reports the mismatch
    size = next(iter(sizes))
    columns = [torch.cat([b[k] for b in batches]) for k in range(len(types))]
    total = columns[0].shape[0]
    if any(c.shape[0] != total for c in columns):
        return list(batches)
    count = max(1, total // size)
    index = torch.arange(count * size) % total
    return [tuple(c[index[k * size:(k + 1) * size]] for c in columns) for k in range(count)]


def run_observed(graph: Graph, batches: Sequence[tuple], watch: Iterable[str], visit,
                 label: str = "") -> None:
    """Evaluate `graph` on every batch; call visit(name, tensor) for each watched value.

    Values are dropped as soon as their last reader has run, so a large model's activations for
    one batch are not all alive at once. A label shows a progress bar.
    """
    watch = set(watch)
    last_use: dict[str, int] = {}
    for k, node in enumerate(graph.nodes):
        for v in node.inputs:
            last_use[v] = k
    keep = set(graph.outputs) | set(graph.constants)
    constants: dict[torch.device, dict[str, torch.Tensor]] = {}
    with progress(total=len(batches), desc=label, unit="batch", enabled=bool(label)) as bar:
        for b, batch in enumerate(batches):
            try:
                check_inputs(graph, batch)
            except InputError as e:
                raise TridentError(f"calibration batch {b}: {e} (calibration batches must have the "
                                   f"shapes the engine is built for)") from None
            device = batch[0].device if batch else torch.device("cpu")
            if device not in constants:
                constants[device] = {k: v.to(device) for k, v in graph.constants.items()}
            env = dict(constants[device])
            env.update(zip(graph.inputs, batch))
            _evaluate(graph, env, watch, visit, last_use, keep)
            bar.update()


def _evaluate(graph: Graph, env: dict, watch: set, visit, last_use: dict, keep: set) -> None:
    """Run the graph's nodes on env (inputs and constants bound), visiting watched values."""
    for name in graph.inputs:
        if name in watch:
            visit(name, env[name])
    # fp32 statistics: no TF32 convolutions on the GPU (torch allows them by default).
    with torch.no_grad(), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
        for k, node in enumerate(graph.nodes):
            try:
                outs = evaluate(node, [env[i] for i in node.inputs],
                                [graph.types[o] for o in node.outputs])
            except (RuntimeError, ValueError, IndexError) as e:
                raise TridentError(f"{where(node)}: calibration run failed: {e}") from None
            for name, value in zip(node.outputs, outs):
                env[name] = value
                if name in watch:
                    visit(name, value)
            for v in node.inputs:
                if last_use.get(v) == k and v not in keep:
                    env.pop(v, None)


def collect_stats(graph: Graph, batches: Sequence[tuple], names: Iterable[str],
                  histogram: bool, label: str = "calibrating") -> dict[str, TensorStats]:
    """max |x| (and, if asked, a 2048-bin histogram of |x| over [0, max]) of each named value."""
    names = list(dict.fromkeys(names))
    stats = {n: TensorStats() for n in names}

    def absmax(name, value):
        if value.numel():
            stats[name].absmax = max(stats[name].absmax, float(value.detach().abs().max()))

    run_observed(graph, batches, names, absmax, f"{label} (range)" if histogram else label)
    if not histogram:
        return stats
    for s in stats.values():
        s.hist = np.zeros(BINS, dtype=np.int64)

    def fill(name, value):
        s = stats[name]
        if s.absmax <= 0 or not value.numel():
            return
        a = value.detach().abs().float().flatten()
        counts = torch.histc(a, bins=BINS, min=0.0, max=s.absmax)
        s.hist += counts.cpu().numpy().astype(np.int64)

    run_observed(graph, batches, names, fill, f"{label} (histograms)")
    return stats


def calibrate(graph: Graph, batches: Sequence[tuple], names: Iterable[str],
              calibrator: Calibrator) -> dict[str, float]:
    """Thresholds T (scale = T / 127) for each named value of `graph` (a float graph that has been
    through the float rewrites, not yet lowered)."""
    observed = graph
    batches = rebatch(graph, as_batches(batches))
    if calibrator.after_fusion:
        from trident.compiler.passes.precision import lower_precision

        observed = lower_precision(graph, "fp16")  # value names are kept; inputs are cast in-graph
    stats = collect_stats(observed, batches, names, calibrator.needs_histogram,
                          f"calibrating ({calibrator.name})")
    return {name: calibrator.threshold(s) for name, s in stats.items()}
