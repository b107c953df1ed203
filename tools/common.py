"""What the model-taking subcommands share: the MODEL argument and turning it into a graph."""
from __future__ import annotations

import argparse
from dataclasses import dataclass
from pathlib import Path

import torch

from trident.compiler.errors import InputError
from trident.compiler.ir import Graph

MODEL_HELP = ("an ONNX file, module:function returning (nn.Module, example_inputs), or the name "
              "of a bundled model (trident.models.MODELS: resnet_tiny, bert_tiny, mlp, ...)")


def add_model_arguments(p: argparse.ArgumentParser, precision: str = "fp16") -> None:
    p.add_argument("model", help=MODEL_HELP)
    p.add_argument("--precision", default=precision, choices=["fp32", "fp16", "int8"])
    p.add_argument("--batch", type=int, default=2,
                   help="batch of a bundled model, or size of a symbolic batch dim (ONNX)")
    p.add_argument("--no-fuse", action="store_true", help="one kernel per op (fusion disabled)")


def load_model(spec: str, batch: int = 2):
    """(model, example_inputs) for a MODEL argument; example_inputs is None for an ONNX file."""
    if Path(spec).exists() or spec.endswith(".onnx"):
        return spec, None
    if ":" in spec:
        import importlib

        module, fn = spec.split(":", 1)
        try:
            return getattr(importlib.import_module(module), fn)()
        except (ImportError, AttributeError) as e:
            raise InputError(f"cannot load {spec!r}: {e}") from None
    from trident.models import MODELS

    if spec in MODELS:
        build, make_inputs = MODELS[spec]
        return build(), make_inputs(batch)
    raise InputError(f"{spec!r} is not a file, module:function, or bundled model "
                     f"({', '.join(MODELS)})")


@dataclass
class LoadedModel:
    graph: Graph                 # the imported IR (before passes)
    inputs: list[torch.Tensor]   # example inputs (random ones for an ONNX file)
    onnx: str | None = None      # the ONNX file, if the model is one


def load_graph(spec: str, batch: int = 2, seed: int = 0) -> LoadedModel:
    from trident.compiler.build import import_model
    from trident.compiler.testing import random_inputs

    model, inputs = load_model(spec, batch)
    if inputs is None:
        from trident.compiler.frontend.onnx import import_onnx

        graph = import_onnx(model, batch_size=batch)
        return LoadedModel(graph, random_inputs(graph, torch.Generator().manual_seed(seed)), model)
    inputs = list(inputs)
    return LoadedModel(import_model(model, inputs), inputs)
