"""Converters of ONNX ops that move data: reshapes, transposes, concat/split, slice, gather."""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.registry import converter
from trident.compiler.ir import TensorType


def _dims(t: TensorType) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in t.shape]


@converter("Reshape", constant_inputs=(1,))
def _reshape(cx):
    x = cx.input(0)
    shape = cx.const_ints(1, "shape")
    in_dims = _dims(cx.type_of(x))
    allowzero = cx.flag("allowzero", 0)
    if shape.count(-1) > 1:
        raise cx.error(ModelError, f"shape {shape} has more than one -1")
    if allowzero and 0 in shape and -1 in shape:
        raise cx.error(ModelError, f"shape {shape} with allowzero=1 has both 0 and -1")
    target: list[int | None] = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= len(in_dims):
                raise cx.error(ShapeError, f"shape {shape} copies dim {i} (0) of a rank "
                                           f"{len(in_dims)} input")
            target.append(in_dims[i])
        elif s < -1:
            raise cx.error(ModelError, f"shape {shape} has a negative size {s}")
        else:
            target.append(s)
    return [cx.reshape(x, target)]


@converter("Flatten")
def _flatten(cx):
    x = cx.input(0)
    dims = _dims(cx.type_of(x))
    axis = cx.int_attr("axis", 1)
    if not -len(dims) <= axis <= len(dims):
        raise cx.error(ModelError, f"axis {axis} is out of range for rank {len(dims)}")
    axis = axis + len(dims) if axis < 0 else axis
    head, tail = dims[:axis], dims[axis:]
    prod = lambda ds: None if None in ds else math.prod(ds)  # noqa: E731
    return [cx.reshape(x, [prod(head), prod(tail)])]


@converter("Unsqueeze", constant_inputs=(1,))
def _unsqueeze(cx):
    x = cx.input(0)
    dims = _dims(cx.type_of(x))
    axes = cx.const_ints(1, "axes")
    axes = cx.axes(axes, len(dims) + len(axes))
    it = iter(dims)
    target = [1 if k in axes else next(it) for k in range(len(dims) + len(axes))]
    return [cx.reshape(x, target)]


@converter("Squeeze", constant_inputs=(1,))
def _squeeze(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    axes = cx.const_ints(1, "axes")
    if axes is None:
        axes = [k for k, d in enumerate(t.shape) if d == 1]
    axes = cx.axes(axes, t.rank)
    for a in axes:
        if isinstance(t.shape[a], str):
            raise cx.error(UnsupportedError, f"squeezing symbolic dim {a} ('{t.shape[a]}') of {t}")
        if t.shape[a] != 1:
            raise cx.error(ShapeError, f"cannot squeeze axis {a} of {t}: its size is not 1")
    return [cx.reshape(x, [d for k, d in enumerate(_dims(t)) if k not in axes])]


@converter("Transpose")
def _transpose(cx):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    perm = cx.ints_attr("perm", list(reversed(range(rank))))
    if sorted(perm) != list(range(rank)):
        raise cx.error(ModelError, f"perm {perm} is not a permutation of {rank} axes")
    return [x if perm == list(range(rank)) else cx.emit("transpose", x, perm=perm)]


@converter("Concat")
def _concat(cx):
    values = [cx.input(i) for i in range(cx.num_inputs) if cx.has(i)]
    if not values:
        raise cx.error(ModelError, "needs at least one input")
    axis = cx.int_attr("axis")
    if axis is None:
        raise cx.error(ModelError, "attribute 'axis' is required")
    return [cx.emit("concat", *values, axis=cx.axis(axis, cx.type_of(values[0]).rank))]


@converter("Split", constant_inputs=(1,))
def _split(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    axis = cx.axis(cx.int_attr("axis", 0), t.rank)
    size = t.shape[axis]
    if not isinstance(size, int):
        raise cx.error(UnsupportedError, f"splitting symbolic dim {axis} of {t}")
    count = len(cx.proto.output)
    sizes = cx.const_ints(1, "split")
    if sizes is None:
        parts = cx.int_attr("num_outputs", count) or count
        if parts != count:
            raise cx.error(ModelError, f"num_outputs {parts} but the node has {count} outputs")
        step = -(-size // parts)  # ceil: the last part may be smaller (opset 18)
        sizes = [min(step, size - k * step) for k in range(parts)]
        if cx.opset < 18 and size % parts:
            raise cx.error(ShapeError, f"dim {axis} of {t} does not split into {parts} equal "
                                       f"parts")
    if len(sizes) != count or sum(sizes) != size or any(s < 0 for s in sizes):
        raise cx.error(ShapeError, f"split sizes {sizes} do not cover dim {axis} of {t} with "
                                   f"{count} outputs")
    return cx.emit_multi("split", [x], {"axis": axis, "sizes": sizes}, count)


@converter("Slice", constant_inputs=(1, 2, 3, 4))
def _slice(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    starts, ends = cx.const_ints(1, "starts"), cx.const_ints(2, "ends")
    axes = cx.const_ints(3, "axes") or list(range(len(starts)))
    steps = cx.const_ints(4, "steps") or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cx.error(ModelError, f"starts {starts}, ends {ends}, axes {axes} and steps "
                                   f"{steps} differ in length")
    attrs = {"starts": [], "ends": [], "axes": [], "steps": []}
    for start, end, axis, step in zip(starts, ends, cx.axes(axes, t.rank), steps):
        dim = t.shape[axis]
        if not isinstance(dim, int):
            raise cx.error(UnsupportedError, f"slicing symbolic dim {axis} of {t}")
        if step == 0:
            raise cx.error(ModelError, "slice step 0")
        start, end = _clamp_slice(start, end, step, dim)
        if (start, end, step) == (0, dim, 1):
            continue  # this axis is untouched
        for key, value in zip(("starts", "ends", "axes", "steps"), (start, end, axis, step)):
            attrs[key].append(value)
    if not attrs["axes"]:
        return [x]
    return [cx.emit("slice", x, **attrs)]


def _clamp_slice(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice's rule, to the IR's contract: 0 <= start, -1 <= end <= dim."""
    if dim == 0:
        return 0, 0
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


@converter("Gather")
def _gather(cx):
    x, indices = cx.input(0), cx.input(1)
    if cx.type_of(indices).dtype not in (torch.int32, torch.int64):
        raise cx.error(ModelError, f"indices must be int32 or int64, got {cx.type_of(indices)}")
    axis = cx.axis(cx.int_attr("axis", 0), cx.type_of(x).rank)
    as_slice = _gather_as_slice(cx, x, indices, axis)
    return [as_slice if as_slice is not None else cx.emit("gather", x, indices, axis=axis)]


def _gather_as_slice(cx, x: str, indices: str, axis: int) -> str | None:
    """A gather of constant, evenly spaced indices (x[:, 0], qkv[1]) is a strided slice and a
    reshape: views, no kernel. None where it is not."""
    index = cx.imp.builder.graph.constants.get(indices)
    size = cx.type_of(x).shape[axis]
    if index is None or index.dim() > 1 or index.numel() == 0 or not isinstance(size, int):
        return None
    values = [v + size if v < 0 else v for v in index.reshape(-1).tolist()]
    step = values[1] - values[0] if len(values) > 1 else 1
    if any(not 0 <= v < size for v in values) or step < 1 or \
            values != list(range(values[0], values[0] + step * len(values), step)):
        return None
    picked = cx.emit("slice", x, starts=[values[0]], ends=[values[-1] + 1], axes=[axis],
                     steps=[step])
    dims = _dims(cx.type_of(picked))
    return cx.reshape(picked, dims[:axis] + ([len(values)] if index.dim() else []) + dims[axis + 1:])


@converter("Expand", constant_inputs=(1,))
def _expand(cx):
    x = cx.input(0)
    shape = cx.const_ints(1, "shape")
    if any(s < 0 for s in shape):
        raise cx.error(ModelError, f"shape {shape} has a negative size")
    return [cx.emit("expand", x, shape=shape)]
