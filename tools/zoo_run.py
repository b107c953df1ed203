"""One zoo model through trident's entry points: the rows `trident zoo` reports.

Per precision and entry point: built or the error; the relative error against torch fp32 beside
torch fp16's own; kernel launches and what runs in torch; build time split into partition /
import / compile (the rest of a torch.compile build is dynamo tracing); latency beside torch
eager and torch.compile (default mode), timed in the same process by compiler/timing.py.
"""
from __future__ import annotations

import copy
import os
import tempfile
import time
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from torch.utils._pytree import tree_flatten

from trident.compiler.testing import relative_error
from trident.compiler.timing import gpu_turn, latencies_ms, summarize
from trident.tools.zoo_models import NotAvailable, ZooModel
from trident.tools.zoo_report import accuracy_problem

@dataclass
class RunOptions:
    precisions: tuple[str, ...] = ("fp32", "fp16", "int8")
    entries: tuple[str, ...] = ("compile", "onnx")
    batch: int = 8
    tiny: bool = False
    quick: bool = False
    inductor: bool = True        # time torch.compile (default mode) as an anchor
    device: str = "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def iterations(self) -> tuple[int, int]:
        """(warmup, timed) calls per latency."""
        if self.device == "cpu":
            return 0, 1          # the interpreter: a figure, not a benchmark
        return (3, 10) if self.quick else (10, 50)


@dataclass
class Row:
    model: str
    family: str
    entry: str = ""
    precision: str = ""
    status: str = "ok"            # ok | error | wrong (error past the bound) | skipped | timeout
    error: str = ""
    rel_err: float | None = None
    torch_fp16_err: float | None = None
    kernels: int | None = None
    in_torch: int | None = None
    in_torch_ops: list[str] = field(default_factory=list)
    int8_graph_err: float | None = None  # int8 (ONNX entry): against its own int8 graph, reference executor
    build_s: dict = field(default_factory=dict)     # total, partition, import, compile
    latency_ms: dict = field(default_factory=dict)  # trident, torch_eager, torch_compile

    def to_dict(self) -> dict:
        return asdict(self)


def one_line(error: BaseException) -> str:
    return f"{type(error).__name__}: {' '.join(str(error).split())}"[:400]


def _first_output(out) -> torch.Tensor:
    leaves = [x for x in tree_flatten(out)[0] if isinstance(x, torch.Tensor)]
    return leaves[0]


def _latency(fn, opts: RunOptions) -> float:
    warmup, timed = opts.iterations
    with torch.no_grad():
        fn()  # a first call compiles (torch.compile's anchor): host work, outside the turn
    with torch.no_grad(), gpu_turn():
        return summarize(latencies_ms(fn, timed, warmup, on_gpu=opts.device == "cuda"))["median_ms"]


def _half_inputs(inputs: tuple) -> tuple:
    return tuple(x.half() if x.is_floating_point() else x for x in inputs)


class Anchors:
    """torch's own figures for one model: fp32 output, fp16 error, eager and torch.compile
    latency per precision (int8 is anchored on fp16, as TensorRT's int8 is)."""

    def __init__(self, module, inputs, opts: RunOptions):
        self.module, self.inputs, self.opts = module, inputs, opts
        with torch.no_grad():
            self.ref = _first_output(module(*inputs)).float()
        self.half = copy.deepcopy(module).half()
        with torch.no_grad():
            self.fp16_err = relative_error(_first_output(self.half(*_half_inputs(inputs))), self.ref)
        self._latency: dict[tuple[str, str], float | None] = {}

    def latency(self, precision: str, how: str) -> float | None:
        key = ("fp32" if precision == "fp32" else "fp16", how)
        if key not in self._latency:
            self._latency[key] = self._measure(*key)
        return self._latency[key]

    def _measure(self, precision: str, how: str) -> float | None:
        module = self.module if precision == "fp32" else self.half
        inputs = self.inputs if precision == "fp32" else _half_inputs(self.inputs)
        if how == "torch_compile":
            if not self.opts.inductor:
                return None
            torch._dynamo.reset()
            module = torch.compile(module)
        try:
            return _latency(lambda: module(*inputs), self.opts)
        except Exception:  # noqa: BLE001  (an anchor that fails is shown as missing, not fatal)
            return None


def exact_fp32_in_torch() -> None:
    """torch's fp32 without TF32: cuDNN convolutions default to TF32 (10-bit mantissas), which
    would make the fp32 reference itself off by about 1e-2 on a deep CNN, and its fp32 latency
    a TF32 one. trident's fp32 stays within a few fp32 ulps (3xTF32 convolutions and attention,
    IEEE GEMMs) unless TRIDENT_ALLOW_TF32 says otherwise."""
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False


def run_model(zm: ZooModel, opts: RunOptions) -> list[Row]:
    """Every row of one model; a failure is recorded in its row, never raised."""
    exact_fp32_in_torch()
    try:
        module, inputs = zm.prepared(opts.batch, opts.tiny)
        module = module.to(opts.device)
        inputs = tuple(x.to(opts.device) for x in inputs)
        anchors = Anchors(module, inputs, opts)
    except NotAvailable as e:
        return [Row(zm.name, zm.family, status="skipped", error=str(e))]
    except Exception as e:  # noqa: BLE001  (the model itself fails in torch)
        return [Row(zm.name, zm.family, status="error", error="torch: " + one_line(e))]
    rows = []
    precisions = [p for p in opts.precisions if p != "int8" or zm.cnn]
    for entry in opts.entries:
        onnx_path = None
        for precision in precisions:
            row = Row(zm.name, zm.family, entry, precision, torch_fp16_err=anchors.fp16_err)
            try:
                if entry == "compile":
                    _through_compile(row, module, inputs, precision, anchors, opts)
                else:
                    onnx_path = onnx_path or export_onnx(module, inputs)
                    _through_onnx(row, onnx_path, inputs, precision, anchors, opts)
            except Exception as e:  # noqa: BLE001  (recorded: one failure never stops the zoo)
                row.status, row.error = "error", one_line(e)
            problem = accuracy_problem(asdict(row)) if row.status == "ok" else None
            if problem:
                row.status, row.error = "wrong", problem
            row.latency_ms["torch_eager"] = anchors.latency(precision, "torch_eager")
            row.latency_ms["torch_compile"] = anchors.latency(precision, "torch_compile")
            rows.append(row)
    return rows


def _through_compile(row: Row, module, inputs, precision: str, anchors: Anchors,
                     opts: RunOptions) -> None:
    from trident.compiler.dynamo import recording_backend

    options = {"precision": precision}
    if precision == "int8":
        options["calibration"] = [inputs]
    backend, reports = recording_backend(options)
    torch._dynamo.reset()
    compiled = torch.compile(module, backend=backend)
    start = time.perf_counter()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the report below says what ran in torch
        out = _first_output(compiled(*inputs))
    total = time.perf_counter() - start
    row.rel_err = relative_error(out, anchors.ref)
    row.kernels = sum(r.num_kernels for r in reports)
    left = [str(t) for r in reports for t in r.in_torch]
    row.in_torch = len(left) + sum(r.torch_steps for r in reports)
    row.in_torch_ops = left[:20]
    parts = {"partition": sum(r.partition_s for r in reports),
             "import": sum(r.import_s() for r in reports),
             "compile": sum(r.compile_s() for r in reports)}
    row.build_s = {"total": total, **parts, "dynamo": total - sum(parts.values())}
    row.latency_ms["trident"] = _latency(lambda: compiled(*inputs), opts)


def export_onnx(module, inputs) -> str:
    """torch.onnx.export to a temporary file: the dynamo exporter, else the TorchScript one."""
    path = str(Path(tempfile.mkdtemp(prefix="trident-zoo-")) / "model.onnx")
    errors = []
    for dynamo in (True, False):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(module, inputs, path, opset_version=18, dynamo=dynamo)
            return path
        except Exception as e:  # noqa: BLE001  (the exporter fails in many ways)
            errors.append(f"{'dynamo' if dynamo else 'torchscript'} exporter: {one_line(e)}")
    raise RuntimeError("torch.onnx.export failed: " + "; ".join(errors))


def _through_onnx(row: Row, path: str, inputs, precision: str, anchors: Anchors,
                  opts: RunOptions) -> None:
    from trident.compiler.build import compile_graph, engine_from, import_model
    from trident.compiler.quantize.plan import QuantOptions

    quantization = QuantOptions.from_kwargs([inputs]) if precision == "int8" else None
    start = time.perf_counter()
    graph = import_model(path)
    imported = time.perf_counter()
    program = compile_graph(graph, precision, None, True, quantization, device=opts.device)
    engine = engine_from(program, opts.device)
    done = time.perf_counter()
    feed = [x for x, name in zip(inputs, graph.inputs)]
    out = engine(*feed)[0]
    row.rel_err = relative_error(out, anchors.ref)
    if precision == "int8":
        row.int8_graph_err = relative_error(out, int8_graph_output(program.graph, feed))
    row.kernels = engine.num_kernels
    torch_steps = [s for s in engine.plan.steps if s.kind == "torch"]
    row.in_torch = len(torch_steps)
    row.build_s = {"total": done - start, "partition": 0.0, "import": imported - start,
                   "compile": done - imported}
    row.latency_ms["trident"] = _latency(lambda: engine(*feed), opts)


def int8_graph_output(graph, inputs) -> torch.Tensor:
    """The first output of `graph`, the one an int8 engine's kernels were generated from (a
    Program's graph: after every pass, with its calibrated scales), run by the reference executor
    on the CPU: the same integer math, so the engine's distance from it is the kernels' error, not
    quantization's."""
    from trident.compiler.reference import run_reference

    with torch.no_grad():
        return run_reference(graph, [x.cpu() for x in inputs])[0]


__all__ = ["RunOptions", "Row", "run_model"]
