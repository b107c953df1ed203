"""`trident compile MODEL -o model.engine`: build an engine ahead of time and write it to a file.

MODEL: an ONNX file, a torch.export program saved with torch.export.save (.pt2), module:function
returning (nn.Module, example_inputs) (found from the working directory too), or a bundled model
name (trident.models.MODELS).

    trident compile model.onnx -o model.engine --precision fp16 --batch 1:32:256 --tune fast
    trident compile model.onnx --precision int8 --calibration model.calib
    trident run model.engine
"""
from __future__ import annotations

import argparse
import inspect
import time
from pathlib import Path

from trident.compiler.errors import InputError, TridentError
from trident.tools.common import (CALIBRATION_HELP, add_precision_argument, calibration_data,
                                  load_graph, load_model, output_path, parse_random)


def register(subparsers) -> None:
    p = subparsers.add_parser("compile", help="build an engine file from a model (ahead of time)",
                              description=__doc__)
    p.add_argument("model", help="an ONNX file, a torch.export .pt2 file, module:function, or a "
                                 "bundled model name")
    p.add_argument("-o", "--output", default=None,
                   help="the engine file; missing folders are made (default: MODEL.engine here)")
    add_precision_argument(p)
    p.add_argument("--batch", default=None,
                   help="N (build for batch N) or min:opt:max (one engine for every batch in "
                        "[min, max], tuned at opt). Default: the model's batch (ONNX with a "
                        "symbolic batch dim: 1)")
    p.add_argument("--shapes", default=None,
                   help="optimization profiles of inputs: NAME:MIN:OPT:MAX,... with shapes written "
                        "1x16, e.g. input_ids:1x16:8x128:32x512,attention_mask:1x16:8x128:32x512 "
                        "(ONNX dims sharing a symbolic name vary together)")
    p.add_argument("--tune", default=None, choices=["none", "fast", "full"],
                   help="autotune kernel launch configs on this GPU")
    p.add_argument("--timing-cache", default=None, help="a file of tuning results, read and updated")
    p.add_argument("--calibration", default=None, help=CALIBRATION_HELP)
    p.add_argument("--device", default=None, help="build for this device (default: cuda if present)")
    p.set_defaults(func=run)


def load(spec: str, batch_for_bundled: int = 2):
    """(model, example_inputs) for the MODEL argument."""
    path = Path(spec)
    if path.suffix == ".pt2":
        import torch

        if not path.is_file():
            raise TridentError(f"cannot read {path}: no such file")
        try:
            ep = torch.export.load(str(path))
        except Exception as e:  # noqa: BLE001 - torch.export.load fails in many ways
            raise TridentError(f"cannot load {path} with torch.export.load: {e}") from None
        return ep, None
    return load_model(spec, batch_for_bundled)


def example_inputs(model, inputs, batch: int):
    """Inputs to imitate for random calibration: the example inputs, those saved with a torch.export
    program, or random ones for an ONNX file's input types at `batch`."""
    if inputs is not None:
        return list(inputs)
    if getattr(model, "example_inputs", None):
        return list(model.example_inputs[0])
    return load_graph(str(model), batch).inputs


def onnx_symbolic_batch(path) -> bool:
    """Does any input of this ONNX file have a symbolic first dim?"""
    try:
        import onnx

        model = onnx.load(str(path), load_external_data=False)
    except Exception:  # noqa: BLE001 - import_onnx reports unreadable files properly
        return False
    weights = {i.name for i in model.graph.initializer}
    for v in model.graph.input:
        if v.name in weights or not v.type.HasField("tensor_type"):
            continue
        dims = v.type.tensor_type.shape.dim
        if dims and not dims[0].HasField("dim_value"):
            return True
    return False


def build_options(args, model=None, inputs=None, batch: int = 1) -> dict:
    """build_engine keywords from the flags; tune / timing_cache only when given (and refused
    clearly by a build_engine that does not know them)."""
    from trident.compiler.build import build_engine

    options = {}
    accepted = inspect.signature(build_engine).parameters
    for flag, key in (("tune", "tune"), ("timing_cache", "timing_cache")):
        value = getattr(args, flag)
        if value is None:
            continue
        if key not in accepted:
            raise TridentError(f"--{flag.replace('_', '-')}: this trident's build_engine has no "
                               f"{key}= option (no autotuner installed)")
        options[key] = value
    if args.calibration is not None:
        if args.precision != "int8":
            raise InputError(f"--calibration is for --precision int8 (not {args.precision})")
        examples = example_inputs(model, inputs, batch) if parse_random(args.calibration) else None
        options["calibration"] = calibration_data(args.calibration, examples)
    return options


def parse_shapes(text: str) -> dict[str, str]:
    """--shapes NAME:MIN:OPT:MAX,... -> {name: "MIN:OPT:MAX"} (build_engine's shapes=)."""
    shapes = {}
    for item in text.split(","):
        parts = item.strip().split(":")
        if len(parts) != 4 or not all(parts):
            raise InputError(f"--shapes: cannot read {item!r}; write NAME:MIN:OPT:MAX with shapes "
                             f"like 1x16, e.g. input_ids:1x16:8x128:32x512")
        shapes[parts[0]] = ":".join(parts[1:])
    return shapes


def run(args: argparse.Namespace) -> int:
    from trident.compiler import build_engine
    from trident.compiler.build import BuildTrace, is_onnx
    from trident.compiler.ir.shapes import BatchProfile

    profile = BatchProfile.parse(args.batch) if args.batch is not None else None
    shapes = parse_shapes(args.shapes) if args.shapes else None
    model, inputs = load(args.model, profile.opt if profile else 2)
    batch = profile
    if batch is None and not shapes and is_onnx(model) and onnx_symbolic_batch(model):
        batch = BatchProfile(1, 1, 1)
        print("trident compile: the model's batch dim is symbolic; building for batch 1 "
              "(use --batch N or --batch min:opt:max)")
    output = Path(args.output or Path(args.model).stem + ".engine")
    options = build_options(args, model, inputs, batch.opt if batch else 1)
    start = time.perf_counter()
    trace = BuildTrace()
    engine = build_engine(model, precision=args.precision, example_inputs=inputs,
                          device=args.device, batch=batch, shapes=shapes, trace=trace, **options)
    built = time.perf_counter() - start
    engine.save(output_path(output))
    r = engine.memory_report()
    what = f"optimization profile {engine.profile}" if engine.profile else "static shapes"
    print(f"trident compile: {args.model} -> {output} ({output.stat().st_size / 2**20:.2f} MiB), "
          f"{args.precision}, {what}")
    print(f"  {len(trace.program.graph.nodes)} IR nodes -> {engine.num_kernels} kernels, "
          f"{engine.num_streams} stream(s), built in {built:.1f} s")
    print(f"  memory: {engine.describe_memory()}; reuse {r['reuse']}x")
    for name, shape, dtype in engine.input_specs():
        dims = f" {engine.profile.dim_text(name)}" if engine.profile else ""
        print(f"  input {name}: {str(dtype).replace('torch.', '')}{list(shape)}{dims}")
    return 0
