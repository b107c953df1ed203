"""The one report writer every benchmark shares: what was measured, where, written as JSON after
every measurement (so a run cut short keeps what it measured), and markdown tables to print.

Result files are named `<gpu>-<what>.json` (nvidia-h200-kernels.json, nvidia-h200-int8.json, ...):
the name says what was measured on which GPU, never when or in which run, so a newer run of the
same benchmark replaces the file it supersedes (benchmarks/results/ keeps one per name).
"""
from __future__ import annotations

import datetime
import json
import os
import platform
import re
from pathlib import Path

import torch

from trident.compiler import config
from trident.compiler.errors import InputError


def slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def device_name(device=None) -> str:
    on_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    return torch.cuda.get_device_name() if on_gpu else "CPU (Triton interpreter)"


def environment(device=None) -> dict:
    """The software and the device a result was measured with."""
    import triton

    try:
        from importlib.metadata import version

        trident_version = version("trident")
    except Exception:  # noqa: BLE001  (a source tree that was never installed)
        trident_version = "?"
    on_gpu = torch.cuda.is_available() and (device is None or torch.device(device).type == "cuda")
    return {"gpu": device_name(device), "capability": torch.cuda.get_device_capability() if on_gpu else None,
            "torch": torch.__version__, "triton": triton.__version__, "trident": trident_version,
            "python": platform.python_version(), "tf32": config.ALLOW_TF32,
            "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")}


def result_name(what: str, device=None) -> str:
    """`<gpu>-<what>.json`, e.g. nvidia-h200-sweep-fp32-b1.json."""
    return f"{slug(device_name(device))}-{what}.json"


def write_json(path, data: dict) -> Path:
    """Atomically: a reader (or a run killed mid-write) never sees half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "w") as f:
        json.dump(data, f, indent=1, default=str)
    os.replace(tmp, path)
    return path


class ResultsFile:
    """A benchmark's results: `data` (a dict, with the environment), saved whole by save()."""

    def __init__(self, path, device=None, **fields):
        self.path = Path(path)
        self.data: dict = {"environment": environment(device), **fields}

    @classmethod
    def in_dir(cls, out_dir, what: str, device=None, **fields) -> "ResultsFile":
        return cls(Path(out_dir) / result_name(what, device), device, **fields)

    def save(self) -> Path:
        return write_json(self.path, self.data)


def _cell(value) -> str:
    """A table cell: floats to 4 significant digits, nothing for a missing figure."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    return str(value)


def markdown_table(header: list[str], rows: list[list]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def require_gpu(what: str) -> None:
    """Timings in the interpreter mean nothing: a GPU benchmark refuses to run without one."""
    if not config.HAS_CUDA:
        raise InputError(f"{what} needs a CUDA GPU (the interpreter's timings mean nothing)")
