"""Generated kernels on disk: each is a Python module that calls the templates beside this file.

`load_kernel` writes a kernel's source to the kernel cache (named by its content's hash) and imports
it; Triton reads the file back when it compiles the @triton.jit code. The runtime loads the kernels
an engine runs, the autotuner the ones it times, and its compile workers import the same files.
"""
from __future__ import annotations

import hashlib
import importlib.util
import sys
from pathlib import Path

from trident.compiler import config


def default_kernel_dir() -> Path:
    return Path(config.CACHE_DIR) / "kernels"


def kernel_path(name: str, source: str, directory: Path) -> Path:
    digest = hashlib.sha256(source.encode()).hexdigest()[:12]
    return Path(directory) / f"{name}_{digest}.py"


def load_kernel(name: str, source: str, directory: Path | None = None):
    """Write `source` to `directory` (default: the kernel cache) and import it, once per process."""
    path = kernel_path(name, source, directory or default_kernel_dir())
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(f".tmp{id(source)}")
        tmp.write_text(source)
        tmp.replace(path)  # atomic: a concurrent build never sees half a file
    return import_kernel_file(path)


def import_kernel_file(path) -> object:
    """Import a generated kernel file once per process (a failed import leaves no trace)."""
    path = Path(path)
    module_name = f"trident_kernels.{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


__all__ = ["default_kernel_dir", "import_kernel_file", "kernel_path", "load_kernel"]
