"""build_engine(): the pipeline end to end — import, passes, fusion, codegen, engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trident.compiler.limits import check_codegen_limits
from trident.compiler.errors import TridentError
from trident.compiler.fusion import Group, fuse
from trident.compiler.ir import Graph
from trident.compiler.passes import PassOptions, run_pipeline

PRECISIONS = ("fp32", "fp16", "int8")


@dataclass
class BuildTrace:
    """What each stage produced, kept for `trident explain`."""
    imported: Graph | None = None
    after_pass: list[tuple[str, Graph]] = field(default_factory=list)
    groups: list[Group] = field(default_factory=list)
    quantization: object = None  # int8: compiler.quantize.QuantReport (thresholds, layer precisions)
    tuning: object = None        # compiler.autotune.TuneReport (chosen configs, timings), if tuned


def import_model(model, example_inputs=None) -> Graph:
    """An ONNX path/bytes/ModelProto, an nn.Module or an fx.GraphModule -> IR graph."""
    if isinstance(model, (str, Path, bytes)) or type(model).__name__ == "ModelProto":
        from trident.compiler.frontend.onnx import import_onnx

        return import_onnx(model)
    if isinstance(model, torch.export.ExportedProgram) and example_inputs is None \
            and model.example_inputs is not None:
        example_inputs = model.example_inputs[0]  # (args, kwargs) saved by torch.export
    if isinstance(model, (torch.nn.Module, torch.export.ExportedProgram)):
        if example_inputs is None:
            raise TridentError("build_engine: a torch model needs example_inputs")
        from trident.compiler.frontend.fx import import_fx

        return import_fx(model, tuple(example_inputs))
    raise TridentError(f"build_engine: cannot import a {type(model).__name__}; give an ONNX "
                       f"file, onnx.ModelProto, nn.Module or fx.GraphModule")


def compile_graph(graph: Graph, precision: str = "fp16", trace: BuildTrace | None = None,
                  fuse_ops: bool = True, quantization=None, *, tune: str = "none", timing_cache=None,
                  device=None):
    """Passes, fusion and codegen for an imported graph; returns the Program.

    fuse_ops=False puts every op in a kernel of its own (to observe every value, or to time the
    fused kernels against). tune / timing_cache: see compiler.autotune.tune_program."""
    from trident.compiler.autotune import check_level
    from trident.compiler.codegen import generate

    check_level(tune)
    if precision not in PRECISIONS:
        raise TridentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    check_codegen_limits(graph)  # static shapes, 32-bit indexable sizes
    quantize = None
    if precision == "int8":  # quantization: compiler.quantize.QuantOptions (calibration etc.)
        from trident.compiler.quantize.plan import QuantOptions, quantize_pass

        quantization = quantization or QuantOptions()
        quantize = quantize_pass(quantization)
        if trace is not None:
            trace.quantization = quantization.report
    on_pass = (lambda name, g: trace.after_pass.append((name, g))) if trace else None
    graph = run_pipeline(graph, PassOptions(precision, quantize=quantize), on_pass=on_pass)
    groups = fuse(graph, enabled=fuse_ops)
    if trace is not None:
        trace.groups = groups
    program = generate(graph, groups)
    if tune != "none" or timing_cache is not None:
        from trident.compiler.autotune import tune_program

        report = tune_program(program, tune, timing_cache=timing_cache, device=device)
        if trace is not None:
            trace.tuning = report
    return program


def build_engine(model, precision: str = "fp16", example_inputs=None, calibration=None,
                 device=None, trace: BuildTrace | None = None, fuse_ops: bool = True,
                 tune: str = "none", timing_cache=None, batch=None, **int8_options):
    """int8_options (precision="int8" only): calibrator, percentile, int8_exclude,
    layer_precisions, int8_tolerance, calibration_cache — see compiler/quantize/plan.py.

    batch: an optimization profile: N (build for batch N), or (min, opt, max) / "min:opt:max"
    (one engine for every batch in [min, max], tuned at opt; see compiler/codegen/dynamic.py).

    tune: "none" (heuristic configs), "fast" or "full": time kernel configs on the GPU (results
    cached on disk); timing_cache: a file of tuning results to read first and update after."""
    from trident.compiler.autotune import check_level
    from trident.runtime.engine import Engine

    check_level(tune)

    quantization = None
    if precision == "int8":
        from trident.compiler.quantize.plan import QuantOptions

        quantization = QuantOptions.from_kwargs(calibration, **int8_options)
    elif int8_options:
        raise TridentError(f"build_engine: {', '.join(sorted(int8_options))}: unknown option(s), "
                           f"or int8 options without precision='int8'")
    profile = None
    if batch is not None:
        from trident.compiler.codegen.dynamic import BatchProfile, import_at_batch, make_dynamic

        profile = BatchProfile.parse(batch)
    graph = (import_model(model, example_inputs) if profile is None
             else import_at_batch(model, example_inputs, profile.build_batch))
    if trace is not None:
        trace.imported = graph
    program = compile_graph(graph, precision, trace, fuse_ops, quantization, tune=tune,
                            timing_cache=timing_cache, device=device)
    if profile is not None and not profile.is_static:
        program = make_dynamic(program, profile, lambda b: compile_graph(
            import_at_batch(model, example_inputs, b), precision, None, fuse_ops, quantization))
    return Engine(program, device=device)
