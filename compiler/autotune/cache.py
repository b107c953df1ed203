"""The tuning cache: one JSON file per entry on disk, and a single-file timing cache to ship.

Key = sha256 of every component that can change what the best config is, or whether a config is
still valid: the kernel's source (header comments stripped, so two kernels that differ only by name
share it), the problem, every argument's shape/strides/dtype, and the identity an engine file also
carries (trident.kernels.identity: trident, Triton and torch versions, the templates' hash, the GPU
name and compute capability). An entry stores its components and its key; a read checks both, so a
stale or renamed entry is never used. Writes are atomic (temp file + os.replace), so concurrent builds
never see half a file; a corrupted entry is ignored with a warning and re-tuned.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
import time
import warnings
from pathlib import Path

import torch

from trident.compiler import config
from trident.compiler.errors import CLEAR_HINT, CacheError, CacheWarning

FORMAT = "trident-timing-cache"
VERSION = 1
LEVEL_RANK = {"none": 0, "fast": 1, "full": 2}
REQUIRED = ("key", "components", "config", "ms", "level")




# -------------------------------------------------------------------------- components ----
def source_hash(source: str) -> str:
    """Hash of a generated kernel's code, without its comment lines (the name and the IR listing)."""
    code = "\n".join(line for line in source.splitlines() if not line.lstrip().startswith("#"))
    return hashlib.sha256(code.encode()).hexdigest()


def canonical(value):
    """JSON-able, deterministic form of a problem dict (torch dtypes become their names)."""
    if isinstance(value, dict):
        return {str(k): canonical(v) for k, v in sorted(value.items(), key=lambda kv: str(kv[0]))}
    if isinstance(value, (list, tuple)):
        return [canonical(v) for v in value]
    if isinstance(value, torch.dtype):
        return str(value).replace("torch.", "")
    if isinstance(value, (int, float, str, bool)) or value is None:
        return value
    return str(value)


def layout_signature(layout) -> list:
    return [list(layout.shape), list(layout.strides), canonical(layout.dtype)]


def key_components(source: str, problem: dict, arg_layouts, identity: dict) -> dict:
    """identity: kernels.identity.identity(device) (versions, templates hash, device)."""
    return {"source": source_hash(source), "problem": canonical(problem),
            "args": [layout_signature(lay) for lay in arg_layouts], **identity}


def make_key(components: dict) -> str:
    return hashlib.sha256(json.dumps(components, sort_keys=True).encode()).hexdigest()


def valid_entry(entry, key: str | None = None) -> bool:
    """Well formed, and (when given) for `key`, with a key that matches its own components."""
    if not isinstance(entry, dict) or any(f not in entry for f in REQUIRED):
        return False
    if not isinstance(entry["config"], dict) or not isinstance(entry["components"], dict):
        return False
    if entry["level"] not in LEVEL_RANK:
        return False
    if make_key(entry["components"]) != entry["key"]:
        return False
    return key is None or entry["key"] == key


def usable(entry: dict, level: str) -> bool:
    """An entry tuned at `level` or more thoroughly (a `full` result serves a `fast` build)."""
    return LEVEL_RANK[entry["level"]] >= LEVEL_RANK[level]


# ----------------------------------------------------------------------------- writing ----
def atomic_write_json(path: Path, data) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(data, f, indent=1, sort_keys=True)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


@contextlib.contextmanager
def file_lock(path: Path):
    """An exclusive advisory lock on `path`.lock (POSIX flock; a no-op where that is missing)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    with open(path.with_name(path.name + ".lock"), "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _read_json(path: Path, what: str):
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError, UnicodeDecodeError) as exc:
        warnings.warn(f"trident: ignoring unreadable {what} {path} ({type(exc).__name__}: {exc}); "
                      f"it will be rebuilt", CacheWarning, stacklevel=3)
        return None


# ------------------------------------------------------------------------- disk cache ----
def default_dir() -> Path:
    return Path(config.CACHE_DIR) / "autotune"


class TuningCache:
    """Entries as <dir>/<key[:2]>/<key>.json; every write atomic, so processes can share it."""

    def __init__(self, directory: Path | str | None = None):
        self.directory = Path(directory) if directory is not None else default_dir()

    def path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self.path(key)
        entry = _read_json(path, "autotune cache entry")
        if entry is None:
            return None
        if not valid_entry(entry, key):
            warnings.warn(f"trident: ignoring malformed autotune cache entry {path}; it will be rebuilt",
                          CacheWarning, stacklevel=2)
            return None
        return entry

    def put(self, entry: dict) -> None:
        if not valid_entry(entry):
            raise ValueError("not a valid autotune cache entry")
        path = self.path(entry["key"])
        try:
            atomic_write_json(path, entry)
        except OSError as e:  # a cache that cannot be written costs a re-tune, never the build
            warnings.warn(f"trident: cannot write autotune cache entry {path} ({e.strerror or e}); "
                          f"{CLEAR_HINT}", CacheWarning, stacklevel=2)

    def entries(self):
        """Every valid entry (unreadable ones are skipped with a warning)."""
        if not self.directory.is_dir():
            return
        for path in sorted(self.directory.glob("??/*.json")):
            entry = self.get(path.stem)
            if entry is not None:
                yield entry


def new_entry(components: dict, launch: dict, ms: float, level: str, **extra) -> dict:
    return {"key": make_key(components), "components": components, "config": dict(launch),
            "ms": ms if ms == ms and ms != float("inf") else None, "level": level,
            "created": time.time(), **extra}


# ---------------------------------------------------------------- timing cache (file) ----
def read_timing_cache(path: Path | str) -> dict[str, dict]:
    """The entries of a timing-cache file ({} if it is missing; a warning if it is unreadable)."""
    path = Path(path)
    data = _read_json(path, "timing cache")
    if data is None:
        return {}
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("entries"), dict):
        warnings.warn(f"trident: {path} is not a trident timing cache; ignoring it", CacheWarning, stacklevel=2)
        return {}
    good = {k: e for k, e in data["entries"].items() if valid_entry(e, k)}
    if len(good) < len(data["entries"]):
        warnings.warn(f"trident: skipped {len(data['entries']) - len(good)} malformed entries of {path}",
                      CacheWarning, stacklevel=2)
    return good


def write_timing_cache(path: Path | str, entries: dict[str, dict], merge: bool = True) -> int:
    """Write entries to a timing-cache file, merged (under a lock) with what it already holds."""
    path = Path(path)
    try:
        with file_lock(path):
            merged = dict(read_timing_cache(path)) if merge else {}
            for key, entry in entries.items():
                old = merged.get(key)
                if old is None or LEVEL_RANK[entry["level"]] >= LEVEL_RANK[old["level"]]:
                    merged[key] = entry
            atomic_write_json(path, {"format": FORMAT, "version": VERSION, "entries": merged})
    except OSError as e:
        raise CacheError(f"cannot write the timing cache {path}: {e.strerror or e} "
                         f"({CLEAR_HINT}; or give another timing_cache path)") from None
    return len(merged)


def export_cache(path: Path | str, cache_dir: Path | str | None = None, gpu: str | None = None) -> int:
    """Write the on-disk tuning cache (optionally only one GPU's entries) to one file; returns
    the number of entries written. Ship the file; `import_cache` or build_engine(timing_cache=)
    on a machine with the same GPU then skips tuning."""
    entries = {e["key"]: e for e in TuningCache(cache_dir).entries()
               if gpu is None or (e["components"].get("device") or {}).get("name") == gpu}
    write_timing_cache(path, entries, merge=False)
    return len(entries)


def import_cache(path: Path | str, cache_dir: Path | str | None = None) -> int:
    """Copy a timing-cache file's entries into the on-disk tuning cache; returns how many."""
    cache = TuningCache(cache_dir)
    entries = read_timing_cache(path)
    for entry in entries.values():
        old = cache.get(entry["key"])
        if old is None or LEVEL_RANK[entry["level"]] >= LEVEL_RANK[old["level"]]:
            cache.put(entry)
    return len(entries)
