"""What a generated kernel and its launch config depend on besides their own source: the software
versions, the device, and the kernel templates the kernel calls.

One identity for both places that must not reuse stale work: the autotune cache's keys
(compiler/autotune/cache.py) and the engine file's header (runtime/format.py).
"""
from __future__ import annotations

import functools
import hashlib
import re
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch
import triton

CPU_DEVICE = "cpu-interpreter"
_DEVICE_CODE = re.compile(r"^\s*@(triton|gluon)\.jit", re.MULTILINE)  # Triton and Gluon kernels


@functools.lru_cache(maxsize=None)
def versions() -> dict:
    try:
        trident_version = version("trident")
    except PackageNotFoundError:  # a source checkout that is not installed
        trident_version = "0.0.0"
    return {"trident": trident_version, "triton": triton.__version__,
            "torch": torch.__version__.split("+")[0]}


def template_files() -> list[Path]:
    """The kernel templates: the modules beside this one with @triton.jit code (benchmarks and
    helpers without device code do not change what a generated kernel runs)."""
    return [path for path in sorted(Path(__file__).parent.glob("*.py"))
            if _DEVICE_CODE.search(path.read_text())]


@functools.lru_cache(maxsize=None)
def templates_hash() -> str:
    """sha256 of the kernel templates generated kernels import: an engine or a tuned config whose
    kernels call templates that changed since is not reused."""
    h = hashlib.sha256()
    for path in template_files():
        h.update(path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def device_identity(device=None) -> dict:
    """{"name", "capability": [major, minor]} of a CUDA device; the interpreter's for the CPU."""
    device = torch.device(device) if device is not None else None
    if not torch.cuda.is_available() or (device is not None and device.type != "cuda"):
        return {"name": CPU_DEVICE, "capability": None}
    index = device.index if device is not None and device.index is not None else torch.cuda.current_device()
    return {"name": torch.cuda.get_device_name(index),
            "capability": list(torch.cuda.get_device_capability(index))}


def identity(device=None) -> dict:
    """versions, templates hash and device: the fields the autotune key and engine header share."""
    return {"versions": versions(), "templates": templates_hash(), "device": device_identity(device)}


def _major_minor(v: str) -> tuple:
    return tuple(str(v).split("+")[0].split(".")[:2])


def describe_device(d: dict) -> str:
    """'NAME (sm_XY)'; a capability that is not a list of numbers (a damaged header's) as written."""
    cap = d.get("capability")
    if isinstance(cap, list) and cap and all(type(c) is int for c in cap):
        return f"{d.get('name')} (sm_{''.join(map(str, cap))})"
    return f"{d.get('name')}" + (f" (capability {cap!r:.40})" if cap else "")


def mismatches(built: dict, device=None) -> list[str]:
    """How identity `built` (another process's, another machine's) differs from this one's at
    `device`: other major.minor versions, other templates, another device. Empty if none."""
    here = identity(device)
    problems = []
    old = built.get("versions", {}) if isinstance(built.get("versions"), dict) else {}
    for name, mine in here["versions"].items():
        if _major_minor(old.get(name, "?")) != _major_minor(mine):
            problems.append(f"built with {name} {old.get(name)}, this is {name} {mine}")
    if built.get("templates") != here["templates"]:
        problems.append("its kernels were generated for other versions of trident's kernel "
                        "templates (trident/kernels/*.py changed since)")
    want = built.get("device") if isinstance(built.get("device"), dict) else {}
    if (want.get("name"), want.get("capability")) != (here["device"]["name"], here["device"]["capability"]):
        problems.append(f"built for {describe_device(want)}, this device is "
                        f"{describe_device(here['device'])}")
    return problems


__all__ = ["CPU_DEVICE", "describe_device", "device_identity", "identity", "mismatches",
           "templates_hash", "template_files", "versions"]
