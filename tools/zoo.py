"""`trident zoo`: real model definitions (torchvision, timm, transformers; random weights) through
both entry points (torch.compile and torch.onnx.export -> build_engine), at each precision, on
the GPU (or the CPU with --tiny), with a JSON and markdown report (docs/zoo.md).

Each model runs in a subprocess of its own with a time limit, so a crash or a hang is one
error row, not the end of the run. With --jobs N, N models build side by side (the build is host
work: tracing, export, Triton compilation); their timed sections take turns (compiler/timing.py's gpu_turn),
so a latency is never measured while another model is being timed.
"""
from __future__ import annotations

import argparse
import fnmatch
import json
import os
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

from trident.compiler.errors import InputError
from trident.compiler.timing import TIMING_LOCK_ENV
from trident.compiler.progress import progress
from trident.tools.common import output_path
from trident.tools.zoo_models import all_models
from trident.tools.zoo_report import markdown_table, merge, readme_summary, update_readme
from trident.tools.zoo_run import Row, RunOptions, run_model

ENTRIES = {"compile": ("compile",), "onnx": ("onnx",), "both": ("compile", "onnx")}


def register(subparsers) -> None:
    p = subparsers.add_parser("zoo", help="real models (torchvision, timm, transformers) through "
                                          "both entry points, with a report")
    p.add_argument("--models", default="*",
                   help="comma-separated names or globs (transformers/bert, timm/*, *resnet*); "
                        "also from $ZOO_MODELS")
    p.add_argument("--precisions", default="fp32,fp16,int8",
                   help="comma-separated; int8 runs for the CNNs only")
    p.add_argument("--entry", choices=sorted(ENTRIES), default="both",
                   help="onnx (torch.onnx.export -> build_engine), compile (torch.compile), or both")
    p.add_argument("--batch", type=int, default=8, help="the example batch")
    p.add_argument("--tiny", action="store_true",
                   help="tiny transformers configurations (hidden 32-64, 2 layers): a CPU dry run")
    p.add_argument("--quick", action="store_true", help="fewer timed calls per latency")
    p.add_argument("--no-inductor", action="store_true",
                   help="do not time torch.compile (default mode) as an anchor")
    p.add_argument("--timeout", type=float, default=900.0, help="seconds per model")
    p.add_argument("--jobs", type=int, default=1,
                   help="models built side by side, each in its own process (their timings "
                        "take turns)")
    p.add_argument("--no-isolate", action="store_true",
                   help="run the models in this process (no subprocess, no time limit)")
    p.add_argument("--json", default="zoo-out/zoo.json", help="the report's rows")
    p.add_argument("--markdown", default="zoo-out/zoo.md", help="the report's table")
    p.add_argument("--merge", action="store_true",
                   help="keep the rows of other models already in the --json file (a run in parts)")
    p.add_argument("--update-readme", metavar="README", nargs="?", const="README.md",
                   help="also write the table between README's zoo markers")
    p.add_argument("--list", action="store_true", help="list the models and exit")
    p.add_argument("--from-json", nargs="+", metavar="ZOO.json",
                   help="run nothing: merge these reports (later files win per model) and write "
                        "the table (and README with --update-readme)")
    p.add_argument("--worker", help=argparse.SUPPRESS)  # one model, in this process
    p.set_defaults(func=run)


def select(patterns: str) -> list:
    models = all_models()
    wanted = [p.strip() for p in patterns.split(",") if p.strip()]
    chosen = [m for m in models if any(fnmatch.fnmatch(m.name, p) or m.name.endswith("/" + p)
                                       for p in wanted)]
    if not chosen:
        raise InputError(f"--models {patterns}: no model matches; see trident zoo --list")
    return chosen


def options_from(args) -> RunOptions:
    precisions = tuple(p.strip() for p in args.precisions.split(",") if p.strip())
    bad = [p for p in precisions if p not in ("fp32", "fp16", "int8")]
    if bad:
        raise InputError(f"--precisions: unknown {bad}; choose from fp32, fp16, int8")
    inductor = not args.no_inductor and not (args.tiny and "cuda" not in RunOptions().device)
    return RunOptions(precisions=precisions, entries=ENTRIES[args.entry], batch=args.batch,
                      tiny=args.tiny, quick=args.quick, inductor=inductor)


def _worker_argv(args, name: str, out: str) -> list[str]:
    argv = [sys.executable, "-m", "trident.tools", "zoo", "--worker", name, "--json", out,
            "--precisions", args.precisions, "--entry", args.entry, "--batch", str(args.batch)]
    argv += [flag for flag, on in (("--tiny", args.tiny), ("--quick", args.quick),
                                   ("--no-inductor", args.no_inductor)) if on]
    return argv


def run_isolated(zm, args, env: dict | None = None) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="trident-zoo-") as tmp:
        out = str(Path(tmp) / "rows.json")
        try:
            done = subprocess.run(_worker_argv(args, zm.name, out), capture_output=True,
                                  text=True, timeout=args.timeout, env=env)
        except subprocess.TimeoutExpired:  # the run's limit, not a verdict on the model
            return [Row(zm.name, zm.family, status="timeout",
                        error=f"not finished within --timeout {args.timeout:.0f} s").to_dict()]
        if done.returncode != 0 or not Path(out).is_file():
            tail = " ".join(done.stderr.strip().splitlines()[-3:])[-400:]
            return [Row(zm.name, zm.family, status="error",
                        error=f"worker exited with {done.returncode}: {tail}").to_dict()]
        return json.loads(Path(out).read_text())


def run(args: argparse.Namespace) -> int:
    if args.list:
        for m in all_models():
            print(f"{m.name:50s} {'cnn' if m.cnn else ''}")
        return 0
    opts = options_from(args)
    _check_jobs(args)
    if args.worker:
        (zm,) = [m for m in all_models() if m.name == args.worker]
        rows = [r.to_dict() for r in run_model(zm, opts)]
        output_path(args.json).write_text(json.dumps(rows, indent=1))
        return 0
    if args.from_json:
        return _write(_merged_files(args.from_json), args)
    patterns = os.environ.get("ZOO_MODELS") or args.models
    earlier = json.loads(Path(args.json).read_text()) if args.merge and Path(args.json).is_file() \
        else None
    report = {"device": _device_name(opts.device), "batch": opts.batch, "tiny": opts.tiny, "jobs": args.jobs,
              "rows": []}
    models = select(patterns)
    bar = progress(total=len(models), desc="zoo", unit="model")
    # written after every model: a run cut short keeps what it measured
    for rows in _model_rows(models, args, opts):
        report["rows"] += rows
        output_path(args.json).write_text(json.dumps(merge(earlier, report), indent=1))
        bar.set_postfix_str(rows[0]["model"])
        bar.update()
    bar.close()
    return _write(merge(earlier, report), args)


def _check_jobs(args) -> None:
    """Side-by-side builds need free cores for the one model being timed: at most half the
    host's cores, less one."""
    most = max(1, (os.cpu_count() or 2) // 2 - 1)
    if args.jobs < 1 or (args.jobs > most and not args.no_isolate):
        raise InputError(f"--jobs {args.jobs}: choose 1 to {most} on this host "
                         f"({os.cpu_count()} cores; the model being timed needs free ones)")


def _model_rows(models: list, args, opts: RunOptions):
    """Each model's rows, as the models finish (a run cut short keeps every finished one)."""
    if args.no_isolate:
        for zm in models:
            yield [r.to_dict() for r in run_model(zm, opts)]
        return
    with tempfile.TemporaryDirectory(prefix="trident-zoo-lock-") as tmp:
        # A lock already named (a benchmark timing beside the zoo) is shared, not replaced.
        env = {TIMING_LOCK_ENV: str(Path(tmp) / "timing.lock"), **os.environ}
        if args.jobs > 1:
            # Each worker compiles on one thread (torch.compile's anchor would start a pool per
            # worker): the cores left over keep the host-bound timings (torch eager) honest.
            env["TORCHINDUCTOR_COMPILE_THREADS"] = "1"
        with ThreadPoolExecutor(max(1, args.jobs)) as pool:
            running = [pool.submit(run_isolated, zm, args, env) for zm in models]
            for done in as_completed(running):
                yield done.result()


def _device_name(device: str) -> str:
    """The GPU's name (the report says which GPU measured it), else the device string."""
    import torch

    return torch.cuda.get_device_name(device) if device.startswith("cuda") else device


def _merged_files(paths: list[str]) -> dict:
    report = None
    for path in paths:
        report = merge(report, json.loads(Path(path).read_text()))
    return report


def _write(report: dict, args) -> int:
    output_path(args.json).write_text(json.dumps(report, indent=1))
    every_model = [m.name for m in all_models()]
    table = markdown_table(report, every_model)
    output_path(args.markdown).write_text(table + "\n")
    print(table)
    if args.update_readme:
        readme = Path(args.update_readme)
        link = os.path.relpath(Path(args.markdown).resolve(), readme.resolve().parent)
        update_readme(readme, readme_summary(report, link, every_model))
        print(f"wrote the zoo summary into {args.update_readme}")
    return 0 if all(r["status"] in ("ok", "skipped") for r in report["rows"]) else 1
