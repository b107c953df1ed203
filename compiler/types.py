"""The IR's value and node types: dtypes, TensorType, Node.

They sit below the op table (compiler/ops/ infers and evaluates over them) and below the graph
and plan (compiler/ir/), so each of those imports this module and none imports the other back.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch

from trident.compiler.errors import ShapeError

Dim = int | str  # str: a symbolic dimension, e.g. "batch"

DTYPE_NAMES = {
    torch.float32: "f32", torch.float16: "f16", torch.bfloat16: "bf16", torch.int8: "i8",
    torch.uint8: "u8", torch.int32: "i32", torch.int64: "i64", torch.bool: "bool",
    torch.int16: "i16", torch.float64: "f64",  # float64: no kernels, its ops run through torch
}
SUPPORTED_DTYPES = frozenset(DTYPE_NAMES)
FLOAT_DTYPES = frozenset({torch.float32, torch.float16, torch.bfloat16})


@dataclass(frozen=True)
class TensorType:
    shape: tuple[Dim, ...]
    dtype: torch.dtype

    @property
    def rank(self) -> int:
        return len(self.shape)

    @property
    def is_static(self) -> bool:
        return all(isinstance(d, int) for d in self.shape)

    def numel(self) -> int:
        if not self.is_static:
            raise ShapeError(f"numel of a tensor with symbolic dims {self}")
        n = 1
        for d in self.shape:
            n *= d
        return n

    def __str__(self) -> str:
        return f"{DTYPE_NAMES.get(self.dtype, str(self.dtype))}[{','.join(map(str, self.shape))}]"

    @staticmethod
    def of(t: torch.Tensor) -> "TensorType":
        return TensorType(tuple(t.shape), t.dtype)


@dataclass
class Node:
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: dict = field(default_factory=dict)
    name: str = ""

    def __str__(self) -> str:
        attrs = ", ".join(f"{k}={_fmt_attr(v)}" for k, v in sorted(self.attrs.items()))
        head = f"{', '.join(self.outputs)} = {self.op}({', '.join(self.inputs)}"
        return head + (f"; {attrs})" if attrs else ")")


def _fmt_attr(v) -> str:
    if isinstance(v, torch.dtype):
        return DTYPE_NAMES.get(v, str(v))
    if isinstance(v, float):
        return f"{v:g}"
    return str(v)
