"""Converters of ONNX ops that rearrange or pad data: Pad, CenterCropPad, Tile, DepthToSpace,
SpaceToDepth, Trilu. All but Pad become views, copies and selects the kernels already have."""
from __future__ import annotations

import torch

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter

_PAD_MODES = ("constant", "reflect", "edge", "wrap")


def _full_pads(cx: NodeContext, pads: list[int], axes: list[int] | None, rank: int) -> list[int]:
    """Pads over `axes` (begin..., end...) spread to every dim."""
    axes = list(range(rank)) if axes is None else cx.axes(axes, rank)
    if len(pads) != 2 * len(axes):
        raise cx.error(ModelError, f"pads {pads} must hold 2 values per axis ({len(axes)} axes)")
    full = [0] * (2 * rank)
    for k, axis in enumerate(axes):
        full[axis], full[rank + axis] = pads[k], pads[len(axes) + k]
    return full


@converter("Pad", constant_inputs=(1, 2, 3))
def _pad(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    mode = cx.str_attr("mode", "constant")
    if mode not in _PAD_MODES:
        raise cx.error(ModelError, f"mode must be one of {', '.join(_PAD_MODES)}, got {mode!r}")
    pads = _full_pads(cx, cx.const_ints(1, "pads"), cx.const_ints(3, "axes"), t.rank)
    value = cx.const_scalar(2, "constant_value")
    value = 0 if value is None else value
    for axis in range(t.rank):
        before, after = pads[axis], pads[t.rank + axis]
        if not isinstance(t.shape[axis], int):
            if before or after:
                raise cx.error(UnsupportedError, f"padding symbolic dim {axis} of {t}")
            continue
        size = t.shape[axis] + min(before, 0) + min(after, 0)  # what negative pads leave
        if size < 0:
            raise cx.error(ShapeError, f"pads {before}, {after} crop more than dim {axis} of {t}")
        grow = max(before, after, 0)
        if mode != "constant" and grow and size == 0:
            raise cx.error(ShapeError, f"{mode} padding of empty dim {axis} of {t}")
        if mode == "reflect" and grow >= size > 0:
            raise cx.error(ShapeError, f"reflect pads {before}, {after} of dim {axis} must be "
                                       f"smaller than its size {size}")
    if not any(pads):
        return [x]
    return [cx.emit("pad", x, pads=pads, mode=mode, value=value)]


@converter("CenterCropPad", constant_inputs=(1,))
def _center_crop_pad(cx):
    """Crop (centred, the extra pixel at the end) or zero-pad (centred, the extra at the end)
    each listed axis to the given size."""
    x = cx.input(0)
    shape = cx.static_shape(x, "CenterCropPad")
    sizes = cx.const_ints(1, "shape")
    axes = cx.axes(cx.ints_attr("axes", list(range(len(shape)))), len(shape))
    if len(sizes) != len(axes):
        raise cx.error(ModelError, f"shape {sizes} must have one size per axis {axes}")
    pads = [0] * (2 * len(shape))
    for axis, want in zip(axes, sizes):
        have = shape[axis]
        if want < have:  # crop: a negative pad on each side
            pads[axis], pads[len(shape) + axis] = -((have - want) // 2), -((have - want + 1) // 2)
        else:
            pads[axis], pads[len(shape) + axis] = (want - have) // 2, (want - have + 1) // 2
    return [cx.emit("pad", x, pads=pads, mode="constant", value=0) if any(pads) else x]


@converter("Tile", constant_inputs=(1,))
def _tile(cx):
    """x [d0, d1, ...] repeated [r0, r1, ...] times: view it as [1, d0, 1, d1, ...], expand to
    [r0, d0, r1, d1, ...] (a view) and reshape to [r0 * d0, ...] (one copy kernel)."""
    x = cx.input(0)
    shape = cx.static_shape(x, "Tile")
    repeats = cx.const_ints(1, "repeats")
    if len(repeats) != len(shape) or any(r < 0 for r in repeats):
        raise cx.error(ModelError, f"repeats {repeats} must be {len(shape)} non-negative ints")
    if all(r == 1 for r in repeats):
        return [x]
    interleaved = [v for d in shape for v in (1, d)]
    spread = cx.reshape(x, interleaved)
    grown = cx.emit("expand", spread, shape=[v for r, d in zip(repeats, shape) for v in (r, d)])
    return [cx.reshape(grown, [r * d for r, d in zip(repeats, shape)])]


def _nchw(cx: NodeContext, x: str) -> tuple[int, int, int, int]:
    shape = cx.static_shape(x, cx.op_type)
    if len(shape) != 4:
        raise cx.error(ShapeError, f"input must be 4-D (NCHW), got {cx.type_of(x)}")
    return shape


def _block(cx: NodeContext) -> int:
    block = cx.int_attr("blocksize")
    if not block or block < 1:
        raise cx.error(ModelError, f"blocksize must be a positive int, got {block}")
    return block


@converter("DepthToSpace")
def _depth_to_space(cx):
    x = cx.input(0)
    n, c, h, w = _nchw(cx, x)
    b = _block(cx)
    if c % (b * b):
        raise cx.error(ShapeError, f"{c} channels do not divide into blocks of {b}x{b}")
    mode = cx.str_attr("mode", "DCR")
    if mode == "DCR":  # depth-column-row: the block index is the outer part of the channel
        split, perm = [n, b, b, c // (b * b), h, w], [0, 3, 4, 1, 5, 2]
    elif mode == "CRD":
        split, perm = [n, c // (b * b), b, b, h, w], [0, 1, 4, 2, 5, 3]
    else:
        raise cx.error(ModelError, f"mode must be DCR or CRD, got {mode!r}")
    moved = cx.emit("transpose", cx.reshape(x, split), perm=perm)
    return [cx.reshape(moved, [n, c // (b * b), h * b, w * b])]


@converter("SpaceToDepth")
def _space_to_depth(cx):
    x = cx.input(0)
    n, c, h, w = _nchw(cx, x)
    b = _block(cx)
    if h % b or w % b:
        raise cx.error(ShapeError, f"height {h} and width {w} must be multiples of {b}")
    split = cx.reshape(x, [n, c, h // b, b, w // b, b])
    mode = cx.str_attr("mode", "DCR")  # (opset 28; before, always DCR)
    if mode not in ("DCR", "CRD"):
        raise cx.error(ModelError, f"mode must be DCR or CRD, got {mode!r}")
    perm = [0, 3, 5, 1, 2, 4] if mode == "DCR" else [0, 1, 3, 5, 2, 4]
    moved = cx.emit("transpose", split, perm=perm)
    return [cx.reshape(moved, [n, c * b * b, h // b, w // b])]


@converter("Trilu", constant_inputs=(1,))
def _trilu(cx):
    """Keep the upper (or lower) triangle from diagonal k of the last two dims: a select with a
    constant mask, which fuses with its neighbours."""
    x = cx.input(0)
    shape = cx.static_shape(x, "Trilu")
    if len(shape) < 2:
        raise cx.error(ShapeError, f"input must have at least 2 dims, got {cx.type_of(x)}")
    k = cx.const_scalar(1, "k") or 0
    rows, cols = shape[-2:]
    offset = torch.arange(cols)[None, :] - torch.arange(rows)[:, None]  # j - i
    keep = offset >= k if cx.flag("upper", 1) else offset <= k
    zero = cx.scalar(False if cx.type_of(x).dtype == torch.bool else 0, cx.type_of(x).dtype)
    return [cx.emit("where", cx.constant(keep, "triangle"), x, zero)]
