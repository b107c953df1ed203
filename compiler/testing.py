"""Helpers for checking compiled graphs against the reference executor (used by trident's tests
and by kernel developers' own tests)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import torch

from trident.compiler.ir import Graph
from trident.compiler.timing import latencies_ms, summarize

# Explicit tolerances per precision: (rtol, atol) per element, on outputs of magnitude ~1.
TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 2e-2)}

# Where a test's torch.compile models run: the GPU where there is one (its kernels compiled for it),
# else the CPU, whose engines run their kernels in Triton's interpreter.
DEVICE = torch.device("cuda" if torch.cuda.is_available() else "cpu")


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    """‖got − ref‖ / ‖ref‖ in fp32, on ref's device: the one accuracy figure benchmarks report."""
    got, ref = got.detach().float().to(ref.device), ref.detach().float()
    return ((got - ref).norm() / ref.norm().clamp_min(1e-30)).item()


def run_engine(engine, *inputs: torch.Tensor) -> list[torch.Tensor]:
    """Run an engine on CPU tensors (moved to its device); its outputs come back to the CPU. Lets
    one test run in the interpreter on a CPU-only machine and on the GPU where there is one."""
    return [o.cpu() for o in engine(*[x.to(engine.device) for x in inputs])]


def compile_with_reports(model: torch.nn.Module, *inputs: torch.Tensor, **options):
    """(output, CompileReports) of one call of torch.compile(model, backend="trident", options=...)
    on `inputs`, from a fresh dynamo cache."""
    from trident.compiler.dynamo import recording_backend

    backend, reports = recording_backend(options)
    torch._dynamo.reset()
    with torch.no_grad():
        out = torch.compile(model, backend=backend)(*inputs)
    return out, reports


def ops_in_torch(reports) -> list[str]:
    """What torch.compile(backend="trident") left to torch in these CompileReports: each partition
    that did not build (its report line) and each step of a built engine that torch runs (its op)."""
    partitions = [str(item) for report in reports for item in report.in_torch]
    steps = [step.node.op for report in reports for engine in report.engines()
             for step in engine.plan.steps if step.kind == "torch"]
    return partitions + steps


def assert_backend_matches_eager(model: torch.nn.Module, *inputs: torch.Tensor, rtol: float = 1e-4,
                                 atol: float = 1e-4) -> None:
    """torch.compile(model, backend="trident") gives what the eager model gives on `inputs`."""
    torch._dynamo.reset()  # a fresh compile: no graph cached from an earlier test
    compiled = torch.compile(model, backend="trident")
    with torch.no_grad():
        torch.testing.assert_close(compiled(*inputs), model(*inputs), rtol=rtol, atol=atol)


def export_onnx(model: torch.nn.Module, inputs: tuple, opset: int = 17) -> bytes:
    """The model's ONNX export (torch's TorchScript exporter, its warnings silenced), as bytes."""
    import io
    import warnings

    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, f, dynamo=False, opset_version=opset)
    return f.getvalue()


def compile_and_run(graph: Graph, inputs: Sequence[torch.Tensor], precision: str = "fp32"):
    from trident.compiler.build import compile_graph, engine_from

    engine = engine_from(compile_graph(graph, precision))
    device = engine.device
    return engine, engine(*[x.to(device) for x in inputs])


def assert_matches_reference(graph: Graph, inputs: Sequence[torch.Tensor], precision: str = "fp32",
                             tolerance: tuple[float, float] | None = None, max_kernels: int | None = None):
    """Compile `graph`, run it, and compare every output with the reference executor (fp32).
    NaN matches NaN (and only NaN), infinities match themselves."""
    from trident.compiler.reference import run_reference

    expected = run_reference(graph, list(inputs))
    engine, got = compile_and_run(graph, inputs, precision)
    rtol, atol = tolerance or TOLERANCES[precision]
    for k, (g, e) in enumerate(zip(got, expected)):
        g = g.cpu()
        assert g.shape == e.shape, f"output {k}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        if e.dtype.is_floating_point:
            torch.testing.assert_close(g.float(), e.float(), rtol=rtol, atol=atol, equal_nan=True,
                                       msg=lambda m: f"output {k} at {precision}: {m}")
        else:
            assert torch.equal(g, e), f"output {k} ({e.dtype}) differs"
    if max_kernels is not None:
        assert engine.num_kernels <= max_kernels, f"{engine.num_kernels} kernels > {max_kernels}"
    return engine


# ------------------------------------------------------------------- fusion check ----
# A fusion pattern is a Python function over torch tensors that declares the shapes of its
# positional inputs, with @pattern(...) (or a module-level SHAPES = {"fn_name": [...]}, or the
# `shapes=` argument). Each shape is a tuple of ints (a float32 input) or an example tensor (its
# shape and dtype; the values are fresh random ones).
def pattern(*shapes):
    """Declare a fusion pattern's input shapes: `@pattern((8, 64), (64,))` over `def f(x, b)`."""
    def mark(fn):
        fn.shapes = [s if isinstance(s, torch.Tensor) else tuple(s) for s in shapes]
        return fn
    return mark


def random_tensor(shape, dtype: torch.dtype, generator: torch.Generator) -> torch.Tensor:
    """Fresh random data, never zeros: normal floats, integers in [0, 8), fair booleans."""
    if dtype.is_floating_point:
        return torch.randn(tuple(shape), generator=generator).to(dtype)
    if dtype == torch.bool:
        return torch.rand(tuple(shape), generator=generator) < 0.5
    return torch.randint(0, 8, tuple(shape), generator=generator, dtype=dtype)


def random_inputs(graph: Graph, generator: torch.Generator) -> list[torch.Tensor]:
    """One random tensor per graph input (static shapes)."""
    types = [graph.types[name] for name in graph.inputs]
    if not all(t.is_static for t in types):
        from trident.compiler.errors import InputError

        raise InputError(f"{graph.name}: inputs with symbolic dims "
                         f"({', '.join(str(t) for t in types)}); give their sizes")
    return [random_tensor(t.shape, t.dtype, generator) for t in types]


def _as_module(fn) -> torch.nn.Module:
    """A module whose forward is `fn` (with fn's parameter names, which name the graph inputs)."""
    import inspect

    def forward(self, *xs):
        return fn(*xs)

    params = list(inspect.signature(fn).parameters.values())
    self_param = inspect.Parameter("self", inspect.Parameter.POSITIONAL_OR_KEYWORD)
    forward.__signature__ = inspect.Signature([self_param] + params)
    return type(getattr(fn, "__name__", "pattern"), (torch.nn.Module,), {"forward": forward})()


def pattern_graph(fn_or_graph, shapes=None) -> Graph:
    """The IR graph of a pattern: a Graph, an ONNX file/ModelProto, an nn.Module or a function."""
    import sys

    from trident.compiler.build import import_model

    if isinstance(fn_or_graph, Graph):
        return fn_or_graph.copy()
    if not callable(fn_or_graph) or type(fn_or_graph).__name__ == "ModelProto":
        return import_model(fn_or_graph)
    if shapes is None:
        shapes = getattr(fn_or_graph, "shapes", None)
    if shapes is None:
        module = sys.modules.get(getattr(fn_or_graph, "__module__", ""), None)
        shapes = getattr(module, "SHAPES", {}).get(getattr(fn_or_graph, "__name__", ""))
    if shapes is None:
        from trident.compiler.errors import InputError

        raise InputError(f"{getattr(fn_or_graph, '__name__', fn_or_graph)}: no input shapes; "
                         f"decorate it with @pattern(shape, ...), list it in its module's SHAPES "
                         f"dict, or pass shapes=")
    examples = [s if isinstance(s, torch.Tensor) else torch.randn(tuple(s)) for s in shapes]
    model = fn_or_graph if isinstance(fn_or_graph, torch.nn.Module) else _as_module(fn_or_graph)
    graph = import_model(model.eval(), examples)
    graph.name = getattr(fn_or_graph, "__name__", graph.name)
    return graph


@dataclass
class OutputCheck:
    name: str
    max_abs: float
    max_rel: float
    ok: bool
    detail: str = ""   # where and how it fails


@dataclass
class PrecisionCheck:
    precision: str
    kernels: list[str] = field(default_factory=list)   # one line per step, with its reasons
    num_kernels: int = 0
    unfused_kernels: int = 0
    outputs: list[OutputCheck] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # failures beyond output values
    notes: list[str] = field(default_factory=list)
    fused_ms: float | None = None
    unfused_ms: float | None = None

    @property
    def ok(self) -> bool:
        return not self.problems and all(o.ok for o in self.outputs)


@dataclass
class FusionReport:
    """What check_fusion found, per precision; str() is the printable report."""
    name: str
    seed: int
    inputs: list[str]
    results: list[PrecisionCheck]

    @property
    def passed(self) -> bool:
        return all(r.ok for r in self.results)

    def failures(self) -> list[str]:
        return [f"{r.precision}: {m}" for r in self.results
                for m in r.problems + [o.detail for o in r.outputs if not o.ok]]

    def assert_ok(self) -> "FusionReport":
        """Raise AssertionError (with the whole report) if any check failed."""
        if not self.passed:
            raise AssertionError(str(self))
        return self

    def __str__(self) -> str:
        out = [f"fusion check: {self.name} (inputs {', '.join(self.inputs)}; seed {self.seed})"]
        for r in self.results:
            timing = ""
            if r.fused_ms is not None and r.unfused_ms is not None:
                timing = (f"; fused {r.fused_ms:.4f} ms vs unfused {r.unfused_ms:.4f} ms "
                          f"({r.unfused_ms / r.fused_ms:.2f}x)")
            out.append(f"{r.precision}: {'PASS' if r.ok else 'FAIL'} - {r.num_kernels} kernel(s) "
                       f"fused, {r.unfused_kernels} unfused{timing}")
            out += [f"  {line}" for line in r.kernels]
            for o in r.outputs:
                out.append(f"  output {o.name}: max abs error {o.max_abs:.3g}, max rel error "
                           f"{o.max_rel:.3g}{'' if o.ok else '  <-- FAIL'}")
            out += [f"  FAIL: {m}" for m in r.problems + [o.detail for o in r.outputs if not o.ok]]
            out += [f"  note: {m}" for m in r.notes]
        failures = len(self.failures())
        out.append("fusion check passed" if self.passed else
                   f"fusion check FAILED ({failures} problem(s); rerun with seed={self.seed})")
        return "\n".join(out)


def compare_output(name: str, got: torch.Tensor, expected: torch.Tensor, rtol: float,
                   atol: float) -> OutputCheck:
    got = got.detach().cpu()
    if got.shape != expected.shape:
        return OutputCheck(name, float("inf"), float("inf"), False,
                           f"output {name}: shape {tuple(got.shape)} != expected {tuple(expected.shape)}")
    g, e = got.double(), expected.double()
    diff = (g - e).abs().nan_to_num(float("inf"))
    if diff.numel() == 0:
        return OutputCheck(name, 0.0, 0.0, True)
    excess = diff - (atol + rtol * e.abs())
    max_abs = diff.max().item()
    max_rel = (diff / e.abs().clamp_min(atol)).max().item()
    if excess.max().item() <= 0:
        return OutputCheck(name, max_abs, max_rel, True)
    where = tuple(int(i) for i in torch.unravel_index(excess.argmax(), excess.shape))
    bad = int((excess > 0).sum())
    return OutputCheck(name, max_abs, max_rel, False,
                       f"output {name}: max abs error {max_abs:.3g} at index {list(where)}: got "
                       f"{g[where].item():.6g}, expected {e[where].item():.6g} (allowed {atol:g} + "
                       f"{rtol:g}*|expected|); {bad} of {diff.numel()} elements out of tolerance")


def _step_lines(program) -> list[str]:
    lines = []
    for step in program.steps:
        nodes = ", ".join(n.name or n.op for n in step.group.nodes)
        label = step.kernel.name if step.kernel else step.kind
        lines.append(f"{step.kind} {label} [{step.group.kind}]: {nodes}")
        lines += [f"    - {r}" for r in step.group.reasons]
    return lines


def _producer_step(program, value: str):
    return next((s for s in program.steps if value in s.outputs), None)


def _check_precision(graph: Graph, precision: str, inputs, expected, tolerance, max_kernels,
                     timing: bool) -> PrecisionCheck:
    from trident.compiler.build import BuildTrace, compile_graph, engine_from

    result = PrecisionCheck(precision)
    rtol, atol = tolerance or TOLERANCES[precision]
    try:
        program = compile_graph(graph.copy(), precision, BuildTrace())
        result.kernels = _step_lines(program)
        engine = engine_from(program)
        result.num_kernels = engine.num_kernels
        unfused = compile_graph(graph.copy(), precision, fuse_ops=False)
        result.unfused_kernels = sum(s.kind in ("kernel", "torch") for s in unfused.steps)
        device_inputs = [x.to(engine.device) for x in inputs]
        got = engine(*device_inputs)
    except Exception as e:  # a kernel that does not compile or run is a failed check
        result.problems.append(f"compiling or running the fused kernels failed: "
                               f"{type(e).__name__}: {e}")
        return result
    for k, (g, e) in enumerate(zip(got, expected)):
        value = program.graph.outputs[k]
        step = _producer_step(program, value)
        where = f"{k} ({value}, from {step.kernel.name if step and step.kernel else 'no kernel'})"
        result.outputs.append(compare_output(where, g, e, rtol, atol))
    if max_kernels is not None and result.num_kernels > max_kernels:
        result.problems.append(f"{result.num_kernels} kernels, expected at most {max_kernels}")
    if not all(o.ok for o in result.outputs):
        result.notes.append(_unfused_diagnosis(graph, precision, inputs, expected, rtol, atol))
    if timing and result.ok:  # (timing a wrong kernel tells nothing)
        result.fused_ms, result.unfused_ms = _time_fused_unfused(engine, graph, precision,
                                                                 device_inputs)
    return result


def _unfused_diagnosis(graph, precision, inputs, expected, rtol, atol) -> str:
    """Run the pattern with one kernel per op: tells a fusion bug from a single-op bug."""
    from trident.compiler.build import compile_graph, engine_from

    try:
        engine = engine_from(compile_graph(graph.copy(), precision, fuse_ops=False))
        got = engine(*[x.to(engine.device) for x in inputs])
    except Exception as e:
        return f"the unfused kernels (one per op) fail too: {type(e).__name__}: {e}"
    checks = [compare_output(str(k), g, e, rtol, atol) for k, (g, e) in enumerate(zip(got, expected))]
    worst = max((c.max_abs for c in checks), default=0.0)
    if all(c.ok for c in checks):
        return (f"the unfused kernels (one per op) match the reference (max abs error "
                f"{worst:.3g}): the error comes from the fusion")
    return (f"the unfused kernels (one per op) are wrong too (max abs error {worst:.3g}): the "
            f"error is in a single op's kernel, not in the fusion")


def _time_fused_unfused(engine, graph, precision, inputs) -> tuple[float, float]:
    from trident.compiler.build import compile_graph, engine_from

    unfused = engine_from(compile_graph(graph.copy(), precision, fuse_ops=False))
    return (summarize(latencies_ms(lambda: engine(*inputs), 50))["median_ms"],
            summarize(latencies_ms(lambda: unfused(*inputs), 50))["median_ms"])


def check_fusion(fn_or_graph, shapes=None, precisions=("fp32", "fp16"), *, seed: int | None = None,
                 tolerances: dict | None = None, max_kernels: int | None = None,
                 timing: bool | None = None) -> FusionReport:
    """Compile a pattern, run its fused kernel(s) on fresh random inputs at each precision, and
    compare with the reference executor (fp32). On a GPU (or timing=True there) also time the
    fused kernels against one kernel per op. Returns a FusionReport: `report.passed`,
    `report.assert_ok()`, `print(report)`.

    fn_or_graph: a function over torch tensors (shapes from @pattern, its module's SHAPES or
    `shapes`), an nn.Module (with `shapes`), an IR Graph, or an ONNX file / ModelProto.
    tolerances: {"fp16": (rtol, atol)} overrides TOLERANCES. max_kernels: fail if more kernels.
    """
    import os

    from trident.compiler import config
    from trident.compiler.reference import run_reference

    graph = pattern_graph(fn_or_graph, shapes)
    seed = int.from_bytes(os.urandom(4), "little") if seed is None else seed
    timing = config.HAS_CUDA if timing is None else timing
    if timing and not config.HAS_CUDA:
        raise RuntimeError("check_fusion(timing=True) needs a CUDA GPU")
    results = []
    for k, precision in enumerate(precisions):
        inputs = random_inputs(graph, torch.Generator().manual_seed(seed + k))
        expected = run_reference(graph, inputs)
        tolerance = (tolerances or {}).get(precision)
        results.append(_check_precision(graph, precision, inputs, expected, tolerance,
                                        max_kernels, timing))
    names = [str(graph.types[i]) for i in graph.inputs]
    return FusionReport(graph.name, seed, names, results)
