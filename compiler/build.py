"""build_engine(): the pipeline end to end — import, passes, fusion, codegen, engine."""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from trident.compiler.errors import TridentError, UnsupportedError
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


def import_model(model, example_inputs=None) -> Graph:
    """An ONNX path/bytes/ModelProto, an nn.Module or an fx.GraphModule -> IR graph."""
    if isinstance(model, (str, Path, bytes)) or type(model).__name__ == "ModelProto":
        from trident.compiler.frontend.onnx import import_onnx

        return import_onnx(model)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise TridentError("build_engine: a torch model needs example_inputs")
        from trident.compiler.frontend.fx import import_fx

        return import_fx(model, tuple(example_inputs))
    raise TridentError(f"build_engine: cannot import a {type(model).__name__}; give an ONNX "
                       f"file, onnx.ModelProto, nn.Module or fx.GraphModule")


def compile_graph(graph: Graph, precision: str = "fp16", trace: BuildTrace | None = None):
    """Passes, fusion and codegen for an imported graph; returns the Program."""
    from trident.compiler.codegen import generate

    if precision not in PRECISIONS:
        raise TridentError(f"precision must be one of {PRECISIONS}, got {precision!r}")
    if precision == "int8":
        raise UnsupportedError("precision 'int8' is not implemented yet; use fp16 or fp32")
    on_pass = (lambda name, g: trace.after_pass.append((name, g))) if trace else None
    graph = run_pipeline(graph, PassOptions(precision), on_pass=on_pass)
    groups = fuse(graph)
    if trace is not None:
        trace.groups = groups
    return generate(graph, groups)


def build_engine(model, precision: str = "fp16", example_inputs=None, calibration=None,
                 device=None, trace: BuildTrace | None = None):
    from trident.runtime.engine import Engine

    graph = import_model(model, example_inputs)
    if trace is not None:
        trace.imported = graph
    return Engine(compile_graph(graph, precision, trace), device=device)
