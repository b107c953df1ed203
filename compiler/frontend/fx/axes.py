"""The `dim` arguments of torch functions as IR axes: one definition for the fx converters
(the converter modules, decompose.py and math_ops.py)."""
from __future__ import annotations

from trident.compiler.errors import ShapeError


def axis(d: int, rank: int) -> int:
    """`d` in 0 .. rank-1 (negative counts from the end; a scalar takes 0 and -1)."""
    if not -max(rank, 1) <= d < max(rank, 1):
        raise ShapeError(f"dimension {d} is out of range for rank {rank}")
    return d % max(rank, 1)


def axes(cx, x, dim) -> list[int]:
    """A reduction's `dim` (an int, a list, or None / [] for every dim) as sorted axes of x."""
    if dim is None or (isinstance(dim, (list, tuple)) and len(dim) == 0):
        return list(range(cx.rank(x)))
    dims = dim if isinstance(dim, (list, tuple)) else [dim]
    return sorted({axis(int(d), cx.rank(x)) for d in dims})
