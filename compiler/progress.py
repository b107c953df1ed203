"""Progress bars for long work (calibration, autotuning, benchmarks): tqdm on stderr.

Off with TRIDENT_QUIET, and when stderr is not a terminal (tqdm's `disable=None`), so logs and
CI output carry no carriage-return redraws.
"""
from __future__ import annotations

import sys

from tqdm import tqdm

from trident.compiler import config


def progress(iterable=None, *, total: int | None = None, desc: str = "", unit: str = "it",
             enabled: bool = True, leave: bool = True, file=None) -> tqdm:
    """A tqdm bar labelled "trident: <desc>" on `file` (stderr): iterate it, or use it as a
    context manager and call .update()."""
    return tqdm(iterable, total=total, desc=f"trident: {desc}" if desc else "trident", unit=unit,
                leave=leave, file=file or sys.stderr, dynamic_ncols=True,
                disable=True if config.QUIET or not enabled else None)
