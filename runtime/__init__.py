"""trident.runtime: the Engine, its memory arena and stream schedule, and engine files."""
from trident.compiler import config as _config  # noqa: F401


def load_engine(path, device=None, **options):
    """Load an engine file written by `engine.save(path)` (see trident.runtime.format)."""
    from trident.runtime.format import load_engine as _load

    return _load(path, device=device, **options)


__all__ = ["load_engine"]
