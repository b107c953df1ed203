"""trident.runtime: the Engine (runs a launch plan), its memory arena and stream schedule, and
engine files."""
from trident.compiler import config as _config  # noqa: F401  (before triton: picks the interpreter)
from trident.runtime.engine import Engine, load_engine

__all__ = ["Engine", "load_engine"]
