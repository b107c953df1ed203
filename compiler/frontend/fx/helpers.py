"""Small helpers the converter modules share: sizes given as varargs or one sequence, per-dim
tuples, torch's dtype promotion, binary ops on promoted operands, and reshape / transpose that
skip what changes nothing."""
from __future__ import annotations

import functools
from typing import Sequence

import torch

from trident.compiler.errors import ShapeError
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx, Val


# ============================================================================= helpers ====
def _ints(args) -> list[int]:
    """Sizes given as varargs (x.view(2, -1)) or as one sequence (x.view((2, -1)))."""
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        args = args[0]
    return [int(a) for a in args]


def _scalar(cx: Ctx, value, like) -> torch.Tensor:
    """A constant scalar in `like`'s dtype (the IR's binary ops take one dtype)."""
    return torch.tensor(value, dtype=cx.dtype(like))


def _norm_slice(size: int, start, end, step) -> tuple[int, int, int]:
    """(start, end, step) of a slice of a dim of `size`, clamped as Python clamps them."""
    start, end, step = slice(start, end, step).indices(size)
    return start, max(end, start), step


def _full_index(cx: Ctx, idx: tuple, rank: int) -> tuple:
    """idx with its Ellipsis (or the missing trailing dims) spelled out as full slices."""
    real = sum(1 for k in idx if k is not None and k is not Ellipsis)
    if real > rank:
        raise ShapeError(f'fx node "{cx.node_name}": {real} indices for a rank-{rank} tensor')
    if Ellipsis in idx:
        e = idx.index(Ellipsis)
        return idx[:e] + (slice(None),) * (rank - real) + idx[e + 1:]
    return idx + (slice(None),) * (rank - real)


def contiguous_strides(shape) -> tuple[int, ...]:
    """Row-major strides of `shape` (a dim of size 0 strides as one of size 1)."""
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


def _tuple_n(v, n: int) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v] if len(v) == n else [int(v[0])] * n
    return [int(v)] * n


def _proto(cx: Ctx, v):
    """A stand-in for torch.result_type: Vals become meta tensors of the right rank class."""
    if isinstance(v, Val):
        return torch.empty((1,) * cx.rank(v), dtype=cx.dtype(v), device="meta")
    return v


def _promote(cx: Ctx, *vs, dtype: torch.dtype | None = None) -> list:
    """Bring operands (Vals, constants, Python scalars) to one dtype: torch's promotion unless
    `dtype` is given."""
    dtype = dtype or _common_dtype(cx, vs)
    out = []
    for v in vs:
        if isinstance(v, Val):
            out.append(cx.cast(v, dtype))
        elif isinstance(v, torch.Tensor):
            out.append(v.to(dtype))
        else:
            out.append(torch.tensor(v, dtype=dtype))
    return out


def _common_dtype(cx: Ctx, vs: Sequence) -> torch.dtype:
    protos = [_proto(cx, v) for v in vs]
    if len(protos) == 1:
        return _scalar_dtype(protos[0])
    return functools.reduce(_result_type, protos)


def _result_type(a, b):
    """torch.result_type over a running result (a dtype stands for a 1-d tensor of it)."""
    if isinstance(a, torch.dtype):
        a = torch.empty(1, dtype=a, device="meta")
    return torch.result_type(a, b)


def _scalar_dtype(x) -> torch.dtype:
    if isinstance(x, torch.Tensor):
        return x.dtype
    if isinstance(x, bool):
        return torch.bool
    if isinstance(x, int):
        return torch.int64
    return torch.get_default_dtype()


def _binary(cx: Ctx, op: str, a, b):
    a, b = _promote(cx, a, b)
    return cx.emit(op, [a, b])


def _reshape(cx: Ctx, x, shape: Sequence[int]):
    """Reshape with -1 resolved (shapes are static), skipped when it changes nothing."""
    shape = list(torch.empty(cx.shape(x), device="meta").reshape(list(shape)).shape)
    if tuple(shape) == cx.shape(x):
        return x
    return cx.emit("reshape", [x], shape=shape)


def as_batch(cx: Ctx, x, spatial: int):
    """(x, undo): torch's convs and pools also take an unbatched input [C, *spatial], which the
    IR's take as a batch of one; undo drops that dim from the result again."""
    if cx.rank(x) != spatial + 1:
        return x, lambda y: y
    return _reshape(cx, x, [1, *cx.shape(x)]), lambda y: _reshape(cx, y, list(cx.shape(y))[1:])


def _transpose(cx: Ctx, x, perm: Sequence[int]):
    perm = [_axis(p, cx.rank(x)) for p in perm]
    if perm == list(range(len(perm))):
        return x
    return cx.emit("transpose", [x], perm=perm)


def _identity(cx: Ctx, x, *args, **kwargs):
    return x
