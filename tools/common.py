"""What the subcommands share: the MODEL argument and turning it into a graph, int8 calibration
from the command line, and output paths."""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import torch

from trident.compiler import config
from trident.compiler.errors import InputError
from trident.compiler.ir import Graph

PRECISIONS = ("fp32", "fp16", "int8")
MODEL_HELP = ("an ONNX file, module:function returning (nn.Module, example_inputs) (the module is "
              "found from the working directory too, or give path/to/file.py:function), or the "
              "name of a bundled model (trident.models.MODELS: resnet_tiny, bert_tiny, mlp, ...)")
CALIBRATION_HELP = ("int8: a calibration cache file (written by an int8 build), or random[:N]: N "
                    "batches of fresh random inputs shaped, typed and ranged as the model's example "
                    "inputs (for timing and debugging; real thresholds need real data)")
RANDOM_BATCHES = 4


def add_precision_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--precision", default=config.DEFAULT_PRECISION, choices=PRECISIONS,
                   help="what the kernels compute in (int8: layers without an int8 kernel run in fp16)")


def add_model_arguments(p: argparse.ArgumentParser) -> None:
    """MODEL, --precision, --batch, --no-fuse and --calibration (random batches by default)."""
    p.add_argument("model", help=MODEL_HELP)
    add_precision_argument(p)
    p.add_argument("--batch", type=int, default=2,
                   help="batch of a bundled model, or size of a symbolic batch dim (ONNX)")
    p.add_argument("--no-fuse", action="store_true", help="one kernel per op (fusion disabled)")
    p.add_argument("--calibration", default=f"random:{RANDOM_BATCHES}", help=CALIBRATION_HELP)


# ------------------------------------------------------------------------ models ----
def import_object(spec: str, what: str = "model"):
    """The object named by `module:name` or `path/to/file.py:name`. A module is looked up in the
    working directory first (as `python -m` would), then on sys.path."""
    module_name, _, attr = spec.rpartition(":")
    try:
        if module_name.endswith(".py"):
            module = _import_file(Path(module_name))
        else:
            module = _import_from_cwd(module_name)
        return getattr(module, attr)
    except (ImportError, AttributeError, OSError) as e:
        raise InputError(f"cannot load {what} {spec!r}: {e}") from None


def _import_file(path: Path):
    if not path.is_file():
        raise ImportError(f"{path}: no such file")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)
    return module


def _import_from_cwd(name: str):
    cwd = os.getcwd()
    if cwd in sys.path or "" in sys.path:
        return importlib.import_module(name)
    sys.path.insert(0, cwd)
    try:
        return importlib.import_module(name)
    finally:
        sys.path.remove(cwd)


ZOO_PREFIX = "zoo:"


def _zoo_model(name: str, batch: int):
    """A `trident zoo` model (zoo:timm/dm_nfnet_f0) as the zoo runs it: random weights, none
    zero, BatchNorm statistics settled."""
    from trident.tools.zoo_models import NotAvailable, all_models

    found = [m for m in all_models() if m.name == name]
    if not found:
        raise InputError(f"{ZOO_PREFIX}{name}: not a zoo model (trident zoo --list)")
    try:
        return found[0].prepared(batch, False)
    except NotAvailable as e:  # its family's package (torchvision, timm, transformers) is not installed
        raise InputError(f"{ZOO_PREFIX}{name}: {e}") from None


def load_model(spec: str, batch: int = 2):
    """(model, example_inputs) for a MODEL argument: an ONNX file (example_inputs None), a
    module:function returning both, a bundled model, or zoo:<name> (a `trident zoo` model)."""
    if Path(spec).exists() or spec.endswith(".onnx"):
        return spec, None
    if spec.startswith(ZOO_PREFIX):
        return _zoo_model(spec[len(ZOO_PREFIX):], batch)
    if ":" in spec:
        made = import_object(spec)()
        if not (isinstance(made, tuple) and len(made) == 2):
            raise InputError(f"{spec} returned a {type(made).__name__}; it must return "
                             f"(nn.Module, example_inputs)")
        return made
    from trident.models import MODELS

    if spec in MODELS:
        build, make_inputs = MODELS[spec]
        return build(), make_inputs(batch)
    raise InputError(f"{spec!r} is not a file, module:function, zoo:<zoo model> or bundled model "
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


# ------------------------------------------------------------------- calibration ----
def random_like(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Fresh random data of x's shape and dtype, in x's range: floats normal with x's mean and
    spread, integers uniform over [x.min(), x.max()] (token ids stay in the vocabulary),
    booleans fair."""
    if x.dtype == torch.bool:
        return torch.rand(x.shape, generator=generator) < 0.5
    if x.dtype.is_floating_point:
        xf = x.detach().float().cpu()
        std = xf.std().item() if xf.numel() > 1 else 1.0
        z = torch.randn(x.shape, generator=generator) * (std or 1.0) + (xf.mean().item() if xf.numel() else 0.0)
        return z.to(x.dtype)
    lo, hi = (int(x.min()), int(x.max())) if x.numel() else (0, 0)
    return torch.randint(lo, hi + 1, x.shape, generator=generator, dtype=x.dtype)


def random_batches(examples, count: int, seed: int = 1) -> list[tuple[torch.Tensor, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(random_like(x, g) for x in examples) for _ in range(count)]


def parse_random(spec: str) -> int | None:
    """The N of "random[:N]", or None for anything else (a cache file)."""
    head, _, count = spec.partition(":")
    if head != "random":
        return None
    try:
        n = int(count) if count else RANDOM_BATCHES
    except ValueError:
        n = 0
    if n < 1:
        raise InputError(f"--calibration {spec}: expected random or random:N with N >= 1")
    return n


def calibration_data(spec: str, examples):
    """build_engine's calibration= for a --calibration value: a cache file's path, or random
    batches like `examples`."""
    count = parse_random(spec)
    if count is None:
        if not Path(spec).is_file():
            raise InputError(f"--calibration {spec}: no such calibration cache file (or use random:N)")
        return spec
    if not examples:
        raise InputError(f"--calibration {spec}: this model has no example inputs to imitate")
    print(f"trident: calibrating int8 on {count} batch(es) of random inputs: the thresholds are "
          f"not those of real data", file=sys.stderr)
    return random_batches(examples, count)


def has_explicit_quantization(graph: Graph) -> bool:
    return any(n.op in ("quantize_linear", "dequantize_linear") for n in graph.nodes)


def quantization_options(loaded: LoadedModel, precision: str, spec: str):
    """compile_graph's quantization= for `--precision int8 --calibration SPEC` (None otherwise,
    and for a model with explicit Q/DQ nodes: their scales are used)."""
    if precision != "int8" or has_explicit_quantization(loaded.graph):
        return None
    from trident.compiler.quantize.plan import QuantOptions

    return QuantOptions.from_kwargs(calibration_data(spec, loaded.inputs))


# ------------------------------------------------------------------------ outputs ----
def output_path(path) -> Path:
    """A file to write: its folder is created if missing."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend (charts are written, never shown)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise InputError("charts need matplotlib: pip install matplotlib "
                         "(or pip install 'trident[tools]')") from None
    return plt
