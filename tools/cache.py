"""`trident cache`: where trident's caches live and how big they are; `trident cache clear`
removes them (generated kernels, autotune results, calibration caches) when one is damaged or
stale. Every cache is rebuilt on demand, so clearing loses only time."""
from __future__ import annotations

import argparse
import shutil
from pathlib import Path

from trident.compiler import config
from trident.compiler.errors import CacheError

PARTS = {"kernels": "generated kernel sources", "autotune": "autotune results",
         "calibration": "int8 calibration caches"}


def _size(path: Path) -> tuple[int, int]:
    """(files, bytes) under path (links are not followed)."""
    if path.is_symlink() or path.is_file():
        return 1, path.lstat().st_size
    files = size = 0
    for item in path.rglob("*"):
        if item.is_file() and not item.is_symlink():
            files, size = files + 1, size + item.stat().st_size
    return files, size


def describe(root: Path) -> list[str]:
    lines = [f"trident cache: {root} (TRIDENT_CACHE_DIR)"]
    if not root.exists():
        return lines + ["  (empty: nothing cached yet)"]
    total = 0
    entries = sorted(root.iterdir()) if root.is_dir() else []
    for item in entries:
        files, size = _size(item)
        total += size
        what = PARTS.get(item.name, "other")
        lines.append(f"  {item.name:<12} {files:>6} files {size / 2**20:>9.2f} MiB  {what}")
    lines.append(f"  total {total / 2**20:.2f} MiB")
    return lines


def clear(root: Path) -> int:
    """Remove everything under the cache folder (the folder itself stays); returns bytes freed."""
    if not root.exists():
        return 0
    if not root.is_dir() or root.is_symlink():
        raise CacheError(f"the cache path {root} is not a folder; remove it or point "
                         f"TRIDENT_CACHE_DIR elsewhere")
    freed = 0
    for item in root.iterdir():
        freed += _size(item)[1]
        if item.is_dir() and not item.is_symlink():
            shutil.rmtree(item)
        else:
            item.unlink()
    return freed


def run(args: argparse.Namespace) -> int:
    root = Path(config.CACHE_DIR)
    if args.action == "clear":
        freed = clear(root)
        print(f"trident cache: cleared {root} ({freed / 2**20:.2f} MiB freed)")
        return 0
    print("\n".join(describe(root)))
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser("cache", help="show the cache's location and size; `clear` empties it")
    p.add_argument("action", nargs="?", choices=("info", "clear"), default="info",
                   help="info: location and size of each cache; clear: remove them all")
    p.set_defaults(func=run)
