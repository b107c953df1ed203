"""Shape/dtype inference (the reference run on meta tensors) and evaluation on real tensors."""
from __future__ import annotations

from typing import Sequence

import torch

from trident.compiler.errors import ShapeError, UnsupportedError, where
from trident.compiler.types import FLOAT_DTYPES, SUPPORTED_DTYPES, Node, TensorType
from trident.compiler.ops.registry import Kind, OpDef, get_op


_SYMBOL_BASE = 1_000_003  # symbolic dims stand in as distinctive sizes on meta tensors
_SYMBOL_STEP = 1_009


def _check_dtypes(opdef: OpDef, node: Node, types: Sequence[TensorType]) -> None:
    for i, t in enumerate(types):
        if t.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(f"{where(node)}: input {i} has dtype {t.dtype}, not one of "
                                   f"{sorted(str(d) for d in SUPPORTED_DTYPES)}")
    if opdef.same_dtype and len(_deciding_dtypes(opdef, types)) > 1:
        raise ShapeError(f"{where(node)}: inputs must share one dtype, got "
                         f"{', '.join(str(t) for t in types)}")


def _deciding_dtypes(opdef: OpDef, types: Sequence[TensorType]) -> set[torch.dtype]:
    """The dtypes that must agree. An elementwise op's 0-dim float operand beside float tensors
    does not decide the result's dtype (torch's promotion rule for 0-dim tensors): an fp16
    engine keeps the model's fp32 scalars exact in them (passes/precision.py)."""
    dtypes = {t.dtype for t in types}
    tensors = {t.dtype for t in types if t.rank > 0}
    if opdef.kind == Kind.ELEMENTWISE and len(tensors) == 1 and next(iter(tensors)).is_floating_point \
            and all(t.dtype.is_floating_point for t in types):
        return tensors
    return dtypes


_INFERRED: dict = {}  # (op, input types, attrs) -> output types; passes re-infer the same nodes


def _attrs_key(attrs: dict):
    return tuple(sorted((k, repr(v)) for k, v in attrs.items()))


def infer_types(node: Node, types: Sequence[TensorType]) -> list[TensorType]:
    """Output types of `node` given its input types, by running its reference on meta tensors.

    Meta tensors still go through torch's decompositions (about a millisecond a node), and every
    pass re-infers every node it replays, so results are memoized.
    """
    key = (node.op, tuple(types), _attrs_key(node.attrs))
    cached = _INFERRED.get(key)
    if cached is None:
        cached = _INFERRED[key] = _infer_types(node, types)
    return list(cached)


def _infer_types(node: Node, types: Sequence[TensorType]) -> list[TensorType]:
    opdef = get_op(node.op, node)
    _check_dtypes(opdef, node, types)
    symbols: dict[str, int] = {}
    for t in types:
        for d in t.shape:
            if isinstance(d, str) and d not in symbols:
                symbols[d] = _SYMBOL_BASE + _SYMBOL_STEP * len(symbols)
    try:
        metas = [torch.empty([symbols.get(d, d) for d in t.shape], dtype=t.dtype, device="meta")
                 for t in types]
    except RuntimeError:  # stand-in sizes multiply past int64 with many symbolic dims
        raise UnsupportedError(f"{where(node)}: too many symbolic dims ({sorted(symbols)}) in "
                               f"one tensor") from None
    try:
        outs = opdef.ref(*metas, **node.attrs)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        shapes = ", ".join(str(t) for t in types)
        raise ShapeError(f"{where(node)}: inputs ({shapes}) with attributes {node.attrs} "
                         f"do not fit: {e}") from None
    outs = outs if isinstance(outs, tuple) else (outs,)
    by_value = {v: k for k, v in symbols.items()}
    result = []
    for out in outs:
        shape = []
        for d in out.shape:
            if d in by_value:
                shape.append(by_value[d])
            elif symbols and d >= _SYMBOL_BASE:
                raise UnsupportedError(f"{where(node)}: output dimension depends on symbolic "
                                       f"dims {sorted(symbols)} in a way trident cannot track")
            else:
                shape.append(int(d))
        result.append(TensorType(tuple(shape), out.dtype))
    return result


def evaluate(node: Node, values: Sequence[torch.Tensor], out_types: Sequence[TensorType] | None
             = None) -> list[torch.Tensor]:
    """Run one node's reference on real tensors.

    Half-precision float math runs in fp32 and rounds once at the end, as trident's kernels do,
    so the oracle is at least as accurate as what it checks.
    """
    opdef = get_op(node.op, node)
    upcast = [v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in values]
    if any(u is not v for u, v in zip(upcast, values)) and opdef.kind != Kind.MOVEMENT:
        values = upcast
    outs = opdef.ref(*values, **node.attrs)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    if out_types is not None:
        outs = [o.to(t.dtype) if o.dtype != t.dtype else o for o, t in zip(outs, out_types)]
    return outs


def is_float(t: TensorType) -> bool:
    return t.dtype in FLOAT_DTYPES
