"""Every environment knob trident reads, in one place (Triton's knobs.py habit).

Importing this module also decides how kernels run: with no CUDA device, Triton's interpreter
(TRITON_INTERPRET=1) must be switched on *before* triton is first imported, so every trident
subpackage imports this module first.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _cuda_available() -> bool:
    import torch  # torch does not import triton, so asking it first is safe

    return torch.cuda.is_available()


HAS_CUDA: bool = _cuda_available()

# With no GPU every generated kernel goes through Triton's interpreter on the CPU.
if not HAS_CUDA and "triton" not in sys.modules:
    if not _env_flag("TRITON_INTERPRET"):
        os.environ["TRITON_INTERPRET"] = "1"
        if not _env_flag("TRIDENT_QUIET"):
            print("trident: no CUDA device; Triton kernels run in the interpreter (slow, for testing).",
                  file=sys.stderr)

INTERPRET: bool = _env_flag("TRITON_INTERPRET")

# Where generated kernels, the autotuning cache and calibration caches live.
CACHE_DIR: Path = Path(os.environ.get("TRIDENT_CACHE_DIR")
                       or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trident")

# Verify the IR after every pass and keep each pass's output (slower builds, easier bisecting).
DEBUG: bool = _env_flag("TRIDENT_DEBUG")

# Bounds sanitizer (compiler/sanitizer.py): in Triton's interpreter, check that every load and
# store of every launch lands inside one of the launch's tensor arguments (slower; CI runs with it).
SANITIZE: bool = _env_flag("TRIDENT_SANITIZE")

# FP32 matmuls/convs may use TF32 tensor cores (opt-in: changes numerics).
ALLOW_TF32: bool = _env_flag("TRIDENT_ALLOW_TF32")

# Suppress informational messages (the interpreter notice, progress bars).
QUIET: bool = _env_flag("TRIDENT_QUIET")

# Autotuning: how many processes compile candidate configs in parallel (0: compile in the tuning
# process, at each config's first launch).
TUNE_WORKERS: int = int(os.environ.get("TRIDENT_TUNE_WORKERS") or min(16, os.cpu_count() or 1))
