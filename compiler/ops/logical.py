"""Logical ops on booleans and bitwise ops on integers."""
from __future__ import annotations

import torch

from trident.compiler.ops.registry import Kind, op

for _name, _fn in {
    "logical_and": torch.logical_and, "logical_or": torch.logical_or,
    "logical_xor": torch.logical_xor, "bitwise_and": torch.bitwise_and,
    "bitwise_or": torch.bitwise_or, "bitwise_xor": torch.bitwise_xor,
    # right shifts are logical for unsigned types (the only ones ONNX BitShift takes)
    "shift_left": torch.bitwise_left_shift, "shift_right": torch.bitwise_right_shift,
}.items():
    op(_name, Kind.ELEMENTWISE, same_dtype=True)(lambda a, b, fn=_fn: fn(a, b))


@op("bitwise_not", Kind.ELEMENTWISE)
def bitwise_not(x):
    return torch.bitwise_not(x)
