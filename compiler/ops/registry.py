"""The op table: each IR op's kind (for fusion) and its torch reference."""
from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Callable

from trident.compiler.errors import UnsupportedError, where
from trident.compiler.types import Node


class Kind(enum.Enum):
    ELEMENTWISE = "elementwise"  # output element i depends on input elements i (after broadcast)
    REDUCTION = "reduction"      # reduces (or normalizes) along some axes
    MATMUL = "matmul"
    CONV = "conv"
    POOL = "pool"
    MOVEMENT = "movement"        # reshapes, transposes, slices: moves data, computes nothing
    SCAN = "scan"                # running sums / products along one axis: a loop carries them
    SORT = "sort"                # sorts whole rows along one axis (topk): one row per register tile
    OPAQUE = "opaque"            # ScatterND, spectral ops, recurrences: computed by torch only
    ATTENTION = "attention"      # softmax(q k^T * scale + mask) v, fused


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: Kind
    ref: Callable
    same_dtype: bool = False  # inputs must share one dtype (ONNX's "T" for all inputs)


OPS: dict[str, OpDef] = {}


def op(name: str, kind: Kind, same_dtype: bool = False):
    def register(fn: Callable) -> Callable:
        OPS[name] = OpDef(name, kind, fn, same_dtype)
        return fn
    return register


def get_op(name: str, node: Node | None = None) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise UnsupportedError(f"{where(node)}: IR op '{name}' is not defined; "
                               f"known ops: {', '.join(sorted(OPS))}") from None
