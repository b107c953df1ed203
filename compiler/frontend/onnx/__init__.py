"""The ONNX frontend: an onnx.ModelProto (or a path, or its bytes) in, a typed IR Graph out.

The model is loaded, passed through `onnx.checker` and `onnx.shape_inference`, then converted node
by node with CONVERTERS, a table of small functions keyed by ONNX op type and by the opset version
that gave the op its current semantics (hidet's frontend/onnx habit). Each converter reads its
node through a `NodeContext` and emits IR nodes with `cx.emit`, which folds a node into a constant
at once when all its inputs are constants: shape-computing subgraphs (Shape -> Gather -> Concat ->
Reshape) disappear at import, and Reshape sees a constant shape.

Every failure a model can cause surfaces as a trident error (compiler/errors.py) that names the
node, its op type and the opset; an unexpected exception inside a converter is re-raised as a
TridentError with the same location and the original message (and chained, for the traceback).
"""
from __future__ import annotations

# The family modules register their converters on import.
from trident.compiler.frontend.onnx import (activations, arith, elementwise,  # noqa: F401
                                            indexing, layout, linear, losses, movement,
                                            normalization, quantize, recurrent, reduction,
                                            resample, spectral, transformer, values)
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.importer import bind_inputs, import_onnx, input_dims
from trident.compiler.frontend.onnx.registry import (CONVERTERS, MAX_OPSET, MIN_OPSET,
                                                     constant_fed_inputs,
                                                     constant_input_slots, converter,
                                                     supported_onnx_ops)

__all__ = ["import_onnx", "bind_inputs", "input_dims", "supported_onnx_ops", "constant_input_slots",
           "constant_fed_inputs", "CONVERTERS",
           "converter", "NodeContext", "MAX_OPSET", "MIN_OPSET"]
