"""The calibration cache: one threshold per tensor in a small text file, reusable without data.

Format (UTF-8 text, one record per line):

    trident-calibration 1 trident=0.1.0 calibrator=entropy2 percentile=99.99
    # <tensor name>: <threshold T>   (scale = T / 127; T is a decimal float that round-trips)
    relu_3: 4.8828125
    x: 2.7531738

The first line is the header: the format tag and version, then key=value fields (trident's version
and the calibrator that produced the thresholds; the percentile only for the percentile
calibrator). Lines starting with '#' and blank lines are ignored. Tensor names are the IR value
names the int8 layers read, and may contain ':' (the threshold is after the last one).
"""
from __future__ import annotations

from pathlib import Path

from trident.compiler.errors import TridentError

MAGIC = "trident-calibration"
VERSION = 1


def trident_version() -> str:
    try:
        from importlib.metadata import version

        return version("trident")
    except Exception:  # noqa: BLE001  (not installed as a distribution: a source checkout)
        return "0+unknown"


def format_cache(thresholds: dict[str, float], calibrator: str, **fields) -> str:
    header = {"trident": trident_version(), "calibrator": calibrator, **fields}
    lines = [f"{MAGIC} {VERSION} " + " ".join(f"{k}={v}" for k, v in header.items()),
             "# <tensor name>: <threshold T>   (scale = T / 127)"]
    lines += [f"{name}: {float(t)!r}" for name, t in thresholds.items()]
    return "\n".join(lines) + "\n"


def write_cache(path, thresholds: dict[str, float], calibrator: str, **fields) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(format_cache(thresholds, calibrator, **fields))
    tmp.replace(path)
    return path


def parse_cache(text: str, source: str = "calibration cache") -> tuple[dict[str, str], dict[str, float]]:
    """(header fields, thresholds) from a cache file's text."""
    lines = text.splitlines()
    if not lines or not lines[0].startswith(MAGIC + " "):
        raise TridentError(f"{source}: not a trident calibration cache (first line must start "
                           f"with '{MAGIC}')")
    head = lines[0].split()
    if len(head) < 2 or head[1] != str(VERSION):
        raise TridentError(f"{source}: cache format version {head[1] if len(head) > 1 else '?'}, "
                           f"this trident reads version {VERSION}")
    fields = dict(f.split("=", 1) for f in head[2:] if "=" in f)
    thresholds: dict[str, float] = {}
    for number, line in enumerate(lines[1:], start=2):
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        name, sep, value = line.rpartition(":")
        try:
            t = float(value)
        except ValueError:
            t = None
        if not sep or not name.strip() or t is None or not t >= 0.0:
            raise TridentError(f"{source}, line {number}: expected '<tensor name>: <threshold>', "
                               f"got {line!r}")
        thresholds[name.strip()] = t
    return fields, thresholds


def read_cache(path) -> tuple[dict[str, str], dict[str, float]]:
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise TridentError(f"cannot read calibration cache {path}: {e.strerror}") from None
    return parse_cache(text, str(path))
