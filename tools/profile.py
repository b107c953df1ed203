"""`trident profile MODEL`: the per-kernel profile (tools/profiling.py) of the engine the model
builds, or with --torch-compile of the engines torch.compile(backend="trident") builds
(tools/profile_compile.py): each kernel's time, TFLOP/s, GB/s and % of the roofline, a table
slowest first, a roofline plot, JSON."""
from __future__ import annotations

import argparse
import json

from trident.compiler import config
from trident.compiler.errors import InputError
from trident.tools.common import add_model_arguments, load_graph, output_path, quantization_options
from trident.tools import profiling
from trident.tools.profiling import CPU_CAVEAT, Peaks, ProfileReport, profile_engine


# ------------------------------------------------------------------------- command ----
def register(subparsers) -> None:
    p = subparsers.add_parser("profile", help="time each kernel; TFLOP/s, GB/s, %% of roofline",
                              description=profiling.__doc__)
    add_model_arguments(p)
    p.add_argument("--repeat", type=int, help="runs per step (default: 20 on a GPU, 3 on the CPU)")
    p.add_argument("--peaks", metavar="TFLOPS,GBPS",
                   help="roofline peaks to use instead of measuring them, e.g. 671,4250")
    p.add_argument("--plot", metavar="ROOFLINE.png", help="write a roofline plot (matplotlib)")
    p.add_argument("--json", metavar="FILE", help="write the figures as JSON")
    p.add_argument("--torch-compile", action="store_true",
                   help="profile the engines torch.compile(backend='trident') builds, not the import path's")
    p.set_defaults(func=run)


def _profile_import(args: argparse.Namespace, peaks: Peaks | None) -> ProfileReport:
    from trident.compiler.build import compile_graph, engine_from

    loaded = load_graph(args.model, args.batch)
    quantization = quantization_options(loaded, args.precision, args.calibration)
    engine = engine_from(compile_graph(loaded.graph.copy(), args.precision, fuse_ops=not args.no_fuse,
                                       quantization=quantization))
    return profile_engine(engine, loaded.inputs, args.repeat, peaks)


def parse_peaks(text: str) -> Peaks:
    try:
        tflops, gbps = (float(v) for v in text.split(","))
    except ValueError:
        raise InputError(f"--peaks: expected TFLOPS,GBPS such as 671,4250, got {text!r}") from None
    return Peaks(tflops, gbps, "given")


def run(args: argparse.Namespace) -> int:
    peaks = parse_peaks(args.peaks) if args.peaks else None
    if args.torch_compile:
        from trident.tools.profile_compile import profile_torch_compile

        report = profile_torch_compile(args.model, args.batch, args.precision, args.repeat, peaks)
    else:
        report = _profile_import(args, peaks)
    print(report)
    if args.plot:
        report.plot_roofline(output_path(args.plot))
        print(f"wrote {args.plot}")
    if args.json:
        with open(output_path(args.json), "w") as f:
            json.dump(report.to_json(), f, indent=1)
        print(f"wrote {args.json}")
    if not config.HAS_CUDA:
        print(f"({CPU_CAVEAT})")
    return 0
