"""Every IR op, defined once: its kind (for fusion), its reference semantics in torch.

Shape and dtype inference is not written a second time: it runs the reference on "meta" tensors
(shape and dtype only, no data), so the reference executor, constant folding, shape inference and
the tests can never disagree about what an op means.

Reference functions take tensors positionally and attributes as keywords. Attributes are already
normalized by the frontends (ONNX's negative axes, default values, auto_pad ... are resolved).
"""
from __future__ import annotations

# The family modules register their ops on import.
from trident.compiler.ops import (activations, elementwise, indexing, linear,  # noqa: F401
                                  logical, losses, movement, normalization, pool,
                                  recurrent, reduction, resample, scalar_math, spectral,
                                  transformer)
from trident.compiler.ops.inference import evaluate, infer_types, is_float
from trident.compiler.ops.registry import OPS, Kind, OpDef, get_op, op

__all__ = ["OPS", "Kind", "OpDef", "op", "get_op", "infer_types", "evaluate", "is_float"]
