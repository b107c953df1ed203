"""Generated kernels on disk: each is a Python module that calls the templates beside this file.

`load_kernel` writes a kernel's source to the kernel cache and imports it. The runtime loads the
kernels an engine runs, the autotuner the ones it times, and its compile workers import the same files.

The cache is an input like any other: a file is named `<kernel name>_<sha256 of its contents>.py`
and its contents are hashed again before it is imported. A file that does not match its name (edited,
truncated), cannot be read, or is not a regular file is written again from the source, with a
warning; it is never imported as it was. Kernel names are Python identifiers, never paths.

A module runs the very text that was checked, never the file read a second time: another process
may change the file between the check and the import. Python compiles the checked text, and Triton,
which reads a @triton.jit function's text back through `linecache`, finds that text there.
"""
from __future__ import annotations

import hashlib
import linecache
import os
import shutil
import sys
import types
import warnings
from pathlib import Path

from trident.compiler import config
from trident.compiler.errors import CLEAR_HINT, CacheError, CacheWarning, TridentError

MAX_NAME = 120
DIGEST_CHARS = 24   # of the sha256 hex digest in a kernel file's name


def default_kernel_dir() -> Path:
    return Path(config.CACHE_DIR) / "kernels"


def check_name(name) -> str:
    """A kernel's name: an identifier (it names a file and a module, so never a path)."""
    if not isinstance(name, str) or not name.isidentifier() or not name.isascii() or len(name) > MAX_NAME:
        raise TridentError(f"kernel name {str(name)[:80]!r} is not a Python identifier of at most "
                           f"{MAX_NAME} ASCII characters")
    return name


def digest(source: str) -> str:
    return hashlib.sha256(source.encode()).hexdigest()[:DIGEST_CHARS]


def kernel_path(name: str, source: str, directory: Path) -> Path:
    return Path(directory) / f"{check_name(name)}_{digest(source)}.py"


def load_kernel(name: str, source: str, directory: Path | None = None):
    """Write `source` to `directory` (default: the kernel cache) and import it, once per process."""
    path = kernel_path(name, source, directory or default_kernel_dir())
    if not _holds(path, source):
        _write(path, source)
    return import_kernel_file(path, source)


def _holds(path: Path, source: str) -> bool:
    """Does the cache file exist and hold exactly `source`? (A bad one is reported, then rewritten.)"""
    if not os.path.lexists(path):
        return False
    why = None
    if path.is_symlink() or not path.is_file():
        why = "is not a regular file"
    else:
        try:
            if path.read_bytes() == source.encode():
                return True
            why = "does not match the hash in its name (edited or truncated)"
        except OSError as e:
            why = f"cannot be read ({e.strerror or e})"
    warnings.warn(f"trident: kernel cache file {path} {why}; writing it again from the kernel's "
                  f"source ({CLEAR_HINT})", CacheWarning, stacklevel=3)
    return False


def _write(path: Path, source: str) -> None:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
        tmp.write_text(source)
        tmp.replace(path)  # atomic: a concurrent build never sees half a file
    except OSError as e:
        raise CacheError(f"cannot write kernel cache file {path}: {e.strerror or e} "
                         f"(cache folder {path.parent}; {CLEAR_HINT}, or set TRIDENT_CACHE_DIR)") from None


def import_cached_kernel(path) -> object:
    """Import a kernel cache file by its path alone (the compile workers): its text, read once, must
    match the digest in its name."""
    path = Path(path)
    return import_kernel_file(path, _checked_text(path))


def import_kernel_file(path, source: str | None = None) -> object:
    """Import a Python file of kernels once per process (a failed import leaves no trace). It runs
    `source` when given (the text the caller checked the file holds), else the file's text read once."""
    path = Path(path)
    module_name = f"trident_kernels.{path.stem}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    if source is None:
        source = path.read_text()
    filename = str(path)
    code = compile(source, filename, "exec")
    # mtime None: linecache.checkcache never replaces these lines with the file's current text.
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    module = types.ModuleType(module_name)
    module.__file__ = filename
    sys.modules[module_name] = module
    try:
        exec(code, module.__dict__)
    except BaseException:
        del sys.modules[module_name]
        linecache.cache.pop(filename, None)
        raise
    return module


def _checked_text(path: Path) -> str:
    """A kernel file's text, when it is a regular file whose contents match the digest in its name."""
    if not os.path.lexists(path):
        raise CacheError(f"kernel cache file {path} does not exist ({CLEAR_HINT})")
    if path.is_symlink() or not path.is_file():
        raise CacheError(f"kernel cache file {path} is not a regular file ({CLEAR_HINT})")
    try:
        text = path.read_bytes().decode()
    except (OSError, UnicodeDecodeError) as e:
        raise CacheError(f"kernel cache file {path} cannot be read: {e} ({CLEAR_HINT})") from None
    named = path.stem.rpartition("_")[2]
    if digest(text) != named:
        raise CacheError(f"kernel cache file {path}: its contents hash to {digest(text)}, its name says "
                         f"{named} (edited or truncated; {CLEAR_HINT})")
    return text


__all__ = ["check_name", "default_kernel_dir", "digest", "import_cached_kernel", "import_kernel_file", "kernel_path",
           "load_kernel"]
