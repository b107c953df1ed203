"""trident: an inference compiler on Triton. ONNX models, nn.Modules and torch.fx graphs in; fused
Triton kernels and a thin runtime (one memory arena, CUDA streams and graphs, engine files) out.

    import trident
    engine = trident.build_engine("model.onnx", precision="fp16")
    outputs = engine(*inputs)
    engine.save("model.engine"); engine = trident.load_engine("model.engine")

The packages: trident.compiler (build_engine and the pipeline), trident.kernels (the Triton
templates), trident.runtime (Engine, engine files; trident.load_engine checks and loads them), trident.tools (the `trident` command),
trident.models (the bundled example models).
"""
import os
from importlib.metadata import PackageNotFoundError, version


def _checkout_path() -> list[str]:
    """In a source checkout this folder sits beside compiler/, kernels/, ... (pyproject.toml's
    package-dir maps them in): find the subpackages there too, so that a Python started in a
    checkout imports that checkout's code, whatever an editable install points at. An installed
    trident holds them inside this folder and needs nothing."""
    here = os.path.dirname(os.path.abspath(__file__))
    root = os.path.dirname(here)
    if os.path.isdir(os.path.join(here, "compiler")):
        return []
    return [root] if os.path.isfile(os.path.join(root, "compiler", "__init__.py")) else []


__path__ += _checkout_path()  # before the imports below, which look trident.compiler up there

from trident import runtime as _runtime  # noqa: E402
from trident.compiler import build_engine, load_engine  # noqa: E402
from trident.runtime.generate import generate  # noqa: E402

_runtime.install_checking_loader(load_engine)  # trident.runtime.load_engine: the same checks

try:
    __version__ = version("trident")
except PackageNotFoundError:  # a source tree that was never installed
    __version__ = "0+unknown"

__all__ = ["__version__", "build_engine", "generate", "load_engine"]
