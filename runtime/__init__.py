"""trident.runtime: the Engine (runs a launch plan), its memory arena and stream schedule, and
engine files. Load an engine file with `trident.load_engine` (compiler/build.py): it checks the
file's plan, regenerating every kernel, before an Engine runs it."""
from trident.compiler import config as _config  # noqa: F401  (before triton: picks the interpreter)
from trident.runtime.engine import Engine

__all__ = ["Engine"]
