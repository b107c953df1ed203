"""trident's compiler: frontends, IR, passes, fusion, codegen and build_engine()."""
from trident.compiler import config  # noqa: F401  (must run before anything imports triton)
from trident.compiler.errors import (EngineFileError, InputError, ModelError, OutOfBoundsError,
                                     ShapeError, TridentError, UnsupportedError)

if config.SANITIZE:  # before any kernel runs: every launch of this process is then checked
    from trident.compiler import sanitizer

    sanitizer.install()


def build_engine(model, precision: str = config.DEFAULT_PRECISION, example_inputs=None,
                 calibration=None, **options):
    """Compile an ONNX model (path or ModelProto), nn.Module or fx.GraphModule into an Engine.
    precision: "fp32" (the default: the model's own numerics), "fp16" or "int8"."""
    from trident.compiler.build import build_engine as _build

    config.notice_interpreter()
    return _build(model, precision=precision, example_inputs=example_inputs,
                  calibration=calibration, **options)


__all__ = ["build_engine", "TridentError", "ModelError", "UnsupportedError", "ShapeError",
           "InputError", "EngineFileError", "OutOfBoundsError", "config"]
