"""build_engine(): the pipeline end to end — import, passes, fusion, codegen, plan, engine.

The one compiler module that imports the runtime: everything before it produces a Program (and
its launch plan, Program.plan()); the runtime's Engine runs the plan.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trident.compiler import config
from trident.compiler.autotune import check_level, tune_plan, tune_program
from trident.compiler.codegen import generate
from trident.compiler.codegen.dynamic import make_dynamic
from trident.compiler.codegen.program import Program
from trident.compiler.errors import EngineFileError, InternalError, TridentError
from trident.compiler.frontend.fx import import_fx
from trident.compiler.frontend.onnx import bind_inputs, import_onnx
from trident.compiler.limits import check_codegen_limits
from trident.compiler.fusion import Group, fuse
from trident.compiler.ir import Graph
from trident.compiler.ir.shapes import ShapeProfile, SizeRange
from trident.compiler.profiles import at_sizes, onnx_profile, torch_input_names, torch_profile
from trident.compiler.passes import PassOptions, run_pipeline
from trident.compiler.quantize.plan import QuantOptions, quantize_pass
from trident.compiler.verify import verify_plan
from trident.runtime.engine import Engine, resolve_device
from trident.runtime.format import read_engine

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BuildTrace:
    """What each stage produced, kept for `trident explain` and the profiler."""
    imported: Graph | None = None
    after_pass: list[tuple[str, Graph]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    quantization: object = None  # int8: compiler.quantize.QuantReport (thresholds, layer precisions)
    tuning: object = None        # compiler.autotune.TuneReport (chosen configs, timings), if tuned
    program: Program | None = None  # codegen's output: each step's group, kernel source and problem


def is_onnx(model) -> bool:
    return isinstance(model, (str, Path, bytes)) or type(model).__name__ == "ModelProto"


def import_model(model, example_inputs=None) -> Graph:
    """An ONNX path/bytes/ModelProto, an nn.Module or an fx.GraphModule -> IR graph."""
    if is_onnx(model):
        return import_onnx(model)
    if isinstance(model, torch.export.ExportedProgram) and example_inputs is None \
            and model.example_inputs is not None:
        example_inputs = model.example_inputs[0]  # (args, kwargs) saved by torch.export
    if isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        if example_inputs is None:
            raise TridentError("build_engine: a torch model needs example_inputs")
        return import_fx(model, tuple(example_inputs))
    raise TridentError(f"build_engine: cannot import a {type(model).__name__}; give an ONNX "
                       f"file, onnx.ModelProto, nn.Module or fx.GraphModule")


def make_profile(model, example_inputs=None, batch=None, shapes=None,
                 dim_names=None) -> ShapeProfile | None:
    """The optimization profile `batch=` / `shapes=` describe (compiler/profiles.py), or None."""
    if batch is None and not shapes:
        return None
    if is_onnx(model):
        return onnx_profile(model, batch, shapes)
    if example_inputs is None and isinstance(model, torch.export.ExportedProgram) \
            and model.example_inputs is not None:
        example_inputs = tuple(model.example_inputs[0])
    if isinstance(model, torch.export.ExportedProgram) and not shapes:
        sizes = {x.shape[0] for x in example_inputs or () if isinstance(x, torch.Tensor) and x.dim()}
        r = SizeRange.parse(batch)
        if r.is_static and sizes == {r.min}:
            return None  # the batch it was exported with
    return torch_profile(model, example_inputs, batch, shapes, dim_names)


def base_sizes(profile: ShapeProfile) -> dict[str, int]:
    """The sizes an engine is generated and tuned at: each symbol's opt (at least 2 where it
    varies, so no dim degenerates to size 1)."""
    return {s: r.min if r.is_static else max(r.opt, 2) for s, r in profile.symbols.items()}


def import_at(model, example_inputs, profile: ShapeProfile, sizes: dict[str, int]) -> Graph:
    """Import `model` with the profile's symbols at `sizes`."""
    if is_onnx(model):
        return import_onnx(model, dim_values=sizes)
    if example_inputs is None and isinstance(model, torch.export.ExportedProgram):
        example_inputs = tuple(model.example_inputs[0])
    names = torch_input_names(model, len(example_inputs))
    return import_model(model, at_sizes(example_inputs, profile, names, sizes))


def compile_graph(graph: Graph, precision: str = config.DEFAULT_PRECISION,
                  trace: BuildTrace | None = None,
                  fuse_ops: bool = True, quantization=None, *, tune: str = "none", timing_cache=None,
                  device=None) -> Program:
    """Passes, fusion and codegen for an imported graph; returns the Program.

    fuse_ops=False puts every op in a kernel of its own (to observe every value, or to time the
    fused kernels against). tune / timing_cache: see compiler.autotune.tune_kernels."""
    check_level(tune)
    if precision not in PRECISIONS:
        raise TridentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_codegen_limits(graph)  # static shapes, 32-bit indexable sizes
    quantize = None
    if precision == "int8":  # quantization: compiler.quantize.QuantOptions (calibration etc.)
        quantization = quantization or QuantOptions()
        quantize = quantize_pass(quantization)
        if trace is not None:
            trace.quantization = quantization.report
    on_pass = (lambda name, g: trace.after_pass.append((name, g))) if trace else None
    graph = _stage("the passes", graph.name, run_pipeline, graph, PassOptions(precision, quantize=quantize),
                   on_pass=on_pass)
    groups = _stage("fusion", graph.name, fuse, graph, enabled=fuse_ops)
    if trace is not None:
        trace.groups = groups
    program = _stage("code generation", graph.name, generate, graph, groups)
    if tune != "none" or timing_cache is not None:
        report = tune_program(program, tune, timing_cache=timing_cache, device=device)
        if trace is not None:
            trace.tuning = report
    if trace is not None:
        trace.program = program
    return program


def _stage(what: str, graph_name: str, fn, *args, **kwargs):
    """fn(*args, **kwargs), an unexpected exception in it an InternalError naming the stage and
    the graph (torch.compile's backend then runs that partition in torch, and says why)."""
    try:
        return fn(*args, **kwargs)
    except TridentError:
        raise
    except Exception as e:  # noqa: BLE001  (a bug of ours: said as one, with its cause)
        raise InternalError(f"{what} failed on graph {graph_name!r}: {type(e).__name__}: {e} "
                            "(a bug in trident)") from e


def engine_from(program: Program, device=None, **options) -> Engine:
    """The Engine that runs a compiled Program's launch plan (options: see runtime Engine)."""
    return Engine(program.plan(), device=device, **options)


def build_engine(model, precision: str = config.DEFAULT_PRECISION, example_inputs=None, calibration=None,
                 device=None, trace: BuildTrace | None = None, fuse_ops: bool = True,
                 tune: str = "none", timing_cache=None, batch=None, shapes=None,
                 constant_inputs=None, dim_names=None, **int8_options) -> Engine:
    """constant_inputs (ONNX models): {graph input name: value} for graph inputs that feed a
    shape slot (Reshape's shape, Resize's sizes, TopK's K, ...), bound at build time as
    TensorRT binds shape tensors; they are no longer inputs of the engine.

    int8_options (precision="int8" only): calibrator, percentile, int8_exclude,
    layer_precisions, int8_tolerance, calibration_cache — see compiler/quantize/plan.py.

    shapes: an optimization profile, {input: (min_shape, opt_shape, max_shape)} (or
    "1x16:8x128:32x512"): one engine for every shape in range, tuned at opt. ONNX dims sharing a
    dim_param vary together; see compiler/profiles.py and compiler/codegen/dynamic.py.
    batch: shorthand for the first dim of every input: N (build for batch N), or (min, opt, max)
    / "min:opt:max". dim_names (torch models): {input: {dim: symbol}} ties dims explicitly.

    tune: "none" (heuristic configs), "fast" or "full": time kernel configs on the GPU (results
    cached on disk); timing_cache: a file of tuning results to read first and update after."""
    check_level(tune)
    quantization = None
    if precision == "int8":
        quantization = QuantOptions.from_kwargs(calibration, **int8_options)
    elif int8_options:
        raise TridentError(f"build_engine: {', '.join(sorted(int8_options))}: unknown option(s), "
                           f"or int8 options without precision='int8'")
    if constant_inputs:
        if not is_onnx(model):
            raise TridentError("build_engine: constant_inputs binds inputs of ONNX models only")
        model = bind_inputs(model, constant_inputs)
    profile = make_profile(model, example_inputs, batch, shapes, dim_names)
    graph = (import_model(model, example_inputs) if profile is None
             else import_at(model, example_inputs, profile, base_sizes(profile)))
    if trace is not None:
        trace.imported = graph
    program = compile_graph(graph, precision, trace, fuse_ops, quantization, tune=tune,
                            timing_cache=timing_cache, device=device)
    if profile is not None and any(not r.is_static for r in profile.symbols.values()):
        program = make_dynamic(program, profile, lambda sizes: compile_graph(
            import_at(model, example_inputs, profile, sizes), precision, None, fuse_ops,
            quantization))
        if trace is not None:
            trace.program = program
    return engine_from(program, device)


def load_engine(path, device=None, *, force: bool = False, any_gpu: bool = False,
                cuda_graph: bool | None = None, streams: int | None = None) -> Engine:
    """Load an engine saved with `engine.save(path)` (runtime/format.py).

    The file is checked before anything is built from it: its structure and checksums, then its
    plan (compiler/verify.py: every kernel regenerated from its spec by this trident and compared,
    layouts, launch configs, weights); any failure is an EngineFileError naming the field.
    force: run a file built for another GPU or other versions anyway (its kernels are still
    regenerated: this trident's are run). any_gpu: accept a file built for another GPU (its
    launch configs were tuned there; `retune` re-tunes them here).
    """
    device = resolve_device(device)
    file = read_engine(path, device, force=force, any_gpu=any_gpu)
    plan = _verified(file.plan, path, force)
    engine = Engine(plan, device=device, cuda_graph=cuda_graph, streams=streams)
    arena = (file.info.get("engine") or {}).get("arena_bytes")
    if arena != engine.memory.arena_bytes:
        raise EngineFileError(f"engine file {path}: engine.arena_bytes is {arena!r}, its plan needs "
                              f"{engine.memory.arena_bytes}")
    engine.file_info = file.info
    return engine


def _verified(plan, path, force: bool):
    try:
        return verify_plan(plan, force)
    except EngineFileError as e:
        raise EngineFileError(f"{e} (file {path})") from None


def retune(engine, level: str = "fast", *, device=None, timing_cache=None, **engine_options) -> Engine:
    """An engine with every kernel's launch config re-tuned on this GPU (needs a GPU).

    engine: an Engine, or an engine file's path (a file built for another GPU is accepted: its
    kernels are re-tuned here; other versions of trident, Triton, torch or the kernel templates
    are not). The kernels keep their code: only their launch configs change.
    """
    if isinstance(engine, Engine):
        plan, device = engine.plan, device if device is not None else engine.device
        engine_options = {"cuda_graph": engine.cuda_graph, "streams": engine.num_streams,
                          **engine_options}
    else:
        plan = _verified(read_engine(engine, device, any_gpu=True).plan, engine, False)
    plan, _ = tune_plan(plan, level, device=device, timing_cache=timing_cache)
    return Engine(plan, device=device, **engine_options)


__all__ = ["BuildTrace", "PRECISIONS", "base_sizes", "build_engine", "compile_graph", "engine_from",
           "import_at", "import_model", "is_onnx", "load_engine", "make_profile", "retune"]
