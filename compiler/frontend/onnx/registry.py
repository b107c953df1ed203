"""The converter table: ONNX op type (and the opset that gave it its semantics) -> converter,
and the ONNX element types trident represents."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable, Sequence

import onnx
import torch
from onnx import TensorProto

if TYPE_CHECKING:
    from trident.compiler.frontend.onnx.context import NodeContext

MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()
DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element types trident represents; every other one (STRING, UINT16/32/64, FLOAT8*, INT4,
# complex, ...) is an UnsupportedError that names the value. DOUBLE is represented, but generated
# kernels compute in fp32 registers: every op on a DOUBLE value runs through torch (and `explain`
# lists it), at full float64 precision.
DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8, TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64, TensorProto.BOOL: torch.bool,
    TensorProto.INT16: torch.int16, TensorProto.DOUBLE: torch.float64,
}
ONNX_OF_DTYPE = {v: k for k, v in DTYPES.items()}


def dtype_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"<unknown element type {elem_type}>"


def supported_dtype_names() -> str:
    return ", ".join(sorted(dtype_name(k) for k in DTYPES))


# ================================================================== the converter table ====
Converter = Callable[["NodeContext"], Sequence["str | None"]]


@dataclass
class _Entry:
    since: int
    fn: Converter
    constant_inputs: tuple[int, ...]  # input slots that carry attributes (shape, axes, ...)


CONVERTERS: dict[str, list[_Entry]] = {}


def converter(*op_types: str, since: int = MIN_OPSET, constant_inputs: Sequence[int] = ()):
    """Register `fn` for `op_types` from opset `since` on (until a later registration)."""
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            entries = CONVERTERS.setdefault(op_type, [])
            entries.append(_Entry(since, fn, tuple(constant_inputs)))
            entries.sort(key=lambda e: e.since)
        return fn
    return register


def lookup(op_type: str, opset: int) -> _Entry | None:
    chosen = None
    for entry in CONVERTERS.get(op_type, ()):
        if entry.since <= opset:
            chosen = entry
    return chosen


def supported_onnx_ops() -> list[str]:
    """The ONNX op types (default domain) the frontend converts, sorted."""
    return sorted(CONVERTERS)


def constant_input_slots(op_type: str, opset: int = MAX_OPSET) -> tuple[int, ...]:
    """Input slots of `op_type` whose value must be known at import (e.g. Reshape's shape).

    A static-shape compiler binds these at build time (TensorRT's shape tensors); the conformance
    runner uses this to bind such graph inputs through `constant_inputs`.
    """
    entry = lookup(op_type, opset)
    return entry.constant_inputs if entry else ()


# Ops whose output depends on their input's shape only, never on its values.
_SHAPE_ONLY = {"Shape", "Size"}


def _flat_nodes(graph) -> list[tuple[str, list[str], list[str]]]:
    """(op type, inputs, outputs) of a graph's nodes in order, the nodes of each If's branches
    just before it (the If then reads the branches' outputs, which become its own)."""
    nodes = []
    for node in graph.node:
        inputs = list(node.input)
        for attr in node.attribute:
            if attr.type == onnx.AttributeProto.GRAPH:
                nodes += _flat_nodes(attr.g)
                inputs += [o.name for o in attr.g.output]
        nodes.append((node.op_type, inputs, list(node.output)))
    return nodes


def constant_fed_inputs(model, opset: int | None = None) -> set[str]:
    """Graph inputs whose values the import needs: they feed a constant slot (Reshape's shape,
    Pad's pads, If's condition, ...) directly, or through ops computing that slot's value (a pad
    amount taken from a 'shape' input by Sub and Concat). Bind them with constant_inputs=
    (build_engine or import_onnx), as a static-shape compiler binds TensorRT's shape tensors."""
    graph = model.graph
    if opset is None:
        versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
        opset = max(versions) if versions else MAX_OPSET
    needed: set[str] = set()
    for op_type, inputs, outputs in reversed(_flat_nodes(graph)):  # consumers first
        slots = constant_input_slots(op_type, opset)
        needed.update(inputs[k] for k in slots if k < len(inputs) and inputs[k])
        if op_type not in _SHAPE_ONLY and any(o in needed for o in outputs):
            needed.update(i for i in inputs if i)
    initialized = {t.name for t in graph.initializer}
    return {v.name for v in graph.input if v.name in needed and v.name not in initialized}
