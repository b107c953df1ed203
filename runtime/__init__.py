"""trident.runtime: the Engine (runs a launch plan), its memory arena and stream schedule, and
engine files.

`load_engine` checks a file's plan, regenerating every kernel, before an Engine runs it. The
regeneration is the compiler's (compiler/build.py), which the runtime does not import: `import
trident` (which `from trident.runtime import load_engine` runs first) installs it here."""
from trident.compiler import config as _config  # noqa: F401  (before triton: picks the interpreter)
from trident.compiler.errors import EngineFileError
from trident.runtime.engine import Engine

_checking_loader = None


def install_checking_loader(load) -> None:
    """Set the function load_engine delegates to: load(path, device, **options) -> Engine."""
    global _checking_loader
    _checking_loader = load


def load_engine(path, device=None, **options) -> Engine:
    """Load an engine file, checked first (docs/engine-files.md): the same function as
    trident.load_engine. options: force, any_gpu, cuda_graph, streams."""
    if _checking_loader is None:  # only if trident's own package was bypassed
        raise EngineFileError(f"{path}: no checking loader is installed; use trident.load_engine")
    return _checking_loader(path, device, **options)


__all__ = ["Engine", "install_checking_loader", "load_engine"]
