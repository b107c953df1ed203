"""Converters of movement ops: views and reshapes, permutes and transposes, expands and repeats,
squeezes, flatten, einsum, concat and stack, splits, F.unfold / F.fold and pads."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.axes import axes as _axes
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.helpers import _ints, _promote, _reshape, _transpose, _tuple_n
from trident.compiler.frontend.fx.indexing import _aten_slice
from trident.compiler.frontend.fx.registry import converts
from trident.compiler.ops.resample import col2im_geometry

aten = torch.ops.aten


# =========================================================================== movement ====
@converts(aten.view.default, aten._unsafe_view.default, aten.reshape.default, torch.reshape,
          "view", "reshape")
def _view(cx: Ctx, x, *shape):
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        raise UnsupportedError(f'fx node "{cx.node_name}": view as another dtype')
    return _reshape(cx, x, _ints(shape))


@converts("view_as", "reshape_as")
def _view_as(cx: Ctx, x, other):
    return _reshape(cx, x, cx.shape(other))


@converts(aten.permute.default, torch.permute, "permute")
def _permute(cx: Ctx, x, *dims):
    return _transpose(cx, x, _ints(dims))


@converts(aten.transpose.int, torch.transpose, torch.swapaxes, "transpose", "swapaxes")
def _transpose2(cx: Ctx, x, dim0, dim1):
    perm = list(range(cx.rank(x)))
    a, b = _axis(dim0, cx.rank(x)), _axis(dim1, cx.rank(x))
    perm[a], perm[b] = perm[b], perm[a]
    return _transpose(cx, x, perm)


@converts(aten.expand.default, "expand")
def _expand(cx: Ctx, x, *sizes, implicit=False):
    sizes = _ints(sizes)
    shape = cx.shape(x)
    lead = len(sizes) - len(shape)
    target = [shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
    if tuple(target) == shape:
        return x
    return cx.emit("expand", [x], shape=target)


@converts("expand_as")
def _expand_as(cx: Ctx, x, other):
    return _expand(cx, x, cx.shape(other))


@converts(aten.repeat_interleave.self_int, torch.repeat_interleave, "repeat_interleave")
def _repeat_interleave(cx: Ctx, x, repeats, dim=None, *, output_size=None):
    """Each element `repeats` times in a row along dim (GPT-J's rotary sin / cos): x viewed with a
    unit dim after dim, expanded to `repeats` there and merged back. Per-element counts (a tensor)
    give a shape that depends on their values: not supported."""
    if isinstance(repeats, torch.Tensor) and repeats.numel() == 1:
        repeats = int(repeats)
    if not isinstance(repeats, int):
        raise UnsupportedError(f'fx node "{cx.node_name}": repeat_interleave with per-element counts '
                               f"(the output's shape depends on their values)")
    if dim is None:
        x, dim = _reshape(cx, x, [-1]), 0
    dim = _axis(dim, cx.rank(x))
    shape = list(cx.shape(x))
    spread = _reshape(cx, x, shape[:dim + 1] + [1] + shape[dim + 1:])
    grown = _expand(cx, spread, shape[:dim + 1] + [repeats] + shape[dim + 1:])
    return _reshape(cx, grown, shape[:dim] + [shape[dim] * repeats] + shape[dim + 1:])


@converts(aten.repeat.default, "repeat")
def _repeat(cx: Ctx, x, *repeats):
    """x [d0, d1, ...] repeated [r0, r1, ...] times (leading repeats add dims, as torch's do): view
    it as [1, d0, 1, d1, ...], expand to [r0, d0, r1, d1, ...] (a view) and reshape to
    [r0 * d0, ...] (one copy kernel), as ONNX Tile is lowered."""
    repeats = _ints(repeats)
    if len(repeats) < cx.rank(x) or any(r < 0 for r in repeats):
        raise UnsupportedError(f'fx node "{cx.node_name}": repeat {repeats} of a {cx.rank(x)}-D tensor '
                               f"(one non-negative count per dim, at least)")
    shape = [1] * (len(repeats) - cx.rank(x)) + list(cx.shape(x))
    if all(r == 1 for r in repeats):
        return _reshape(cx, x, shape)
    spread = _reshape(cx, x, [v for d in shape for v in (1, d)])
    grown = cx.emit("expand", [spread], shape=[v for r, d in zip(repeats, shape) for v in (r, d)])
    return _reshape(cx, grown, [r * d for r, d in zip(repeats, shape)])


@converts(aten.unsqueeze.default, torch.unsqueeze, "unsqueeze")
def _unsqueeze(cx: Ctx, x, dim):
    shape = list(cx.shape(x))
    shape.insert(_axis(dim, len(shape) + 1), 1)
    return _reshape(cx, x, shape)


@converts(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, torch.squeeze, "squeeze")
def _squeeze(cx: Ctx, x, dim=None):
    shape = cx.shape(x)
    dims = range(len(shape)) if dim is None else _axes(cx, x, dim)
    drop = {d for d in dims if shape[d] == 1}
    return _reshape(cx, x, [s for d, s in enumerate(shape) if d not in drop])


@converts(aten.flatten.using_ints, torch.flatten, "flatten")
def _flatten(cx: Ctx, x, start_dim=0, end_dim=-1):
    shape = cx.shape(x)
    if not shape:
        return _reshape(cx, x, [1])
    a, b = _axis(start_dim, len(shape)), _axis(end_dim, len(shape))
    return _reshape(cx, x, list(shape[:a]) + [math.prod(shape[a:b + 1])] + list(shape[b + 1:]))


@converts(torch.einsum, aten.einsum.default)
def _einsum(cx: Ctx, equation, *operands):
    """One IR einsum node (compiler/passes/einsum.py writes it out as kernels' ops)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return cx.emit("einsum", list(operands), equation=str(equation).replace(" ", ""))


@converts(aten.cat.default, torch.cat, torch.concat, torch.concatenate)
def _cat(cx: Ctx, tensors, dim=0, *, axis=None):
    dim = dim if axis is None else axis  # (torch takes numpy's name too: Funnel writes axis=)
    # torch.cat skips 1-D empty tensors whatever the other operands' rank (transformers 4.x's
    # DynamicCache starts each layer's keys as torch.tensor([]))
    tensors = [t for t in tensors if tuple(cx.shape(t)) != (0,)]
    tensors = _promote(cx, *tensors)
    if len(tensors) == 1:
        return tensors[0]
    return cx.emit("concat", tensors, axis=_axis(dim, cx.rank(tensors[0])))


@converts(F.unfold, aten.im2col.default)
def _im2col(cx: Ctx, input, kernel_size, dilation=1, padding=0, stride=1):
    """F.unfold over [N, C, H, W] (ConvBERT's span-based convolution): each sliding window's
    C * kh * kw values as a column, [N, C * kh * kw, L]. Each tap of the window is a strided slice
    of the zero-padded image ([N, C, OH, OW], a view); the taps stacked after the channels are the
    columns, in torch's (channel, tap row, tap column) order: one concat kernel."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (_tuple_n(v, 2) for v in (kernel_size, dilation, padding, stride))
    if cx.rank(input) != 4:
        raise UnsupportedError(f'fx node "{cx.node_name}": unfold of a {cx.rank(input)}-D input (4-D is)')
    x = _pad(cx, input, [pw, pw, ph, ph]) if ph or pw else input
    n, c, hp, wp = cx.shape(x)
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f'fx node "{cx.node_name}": unfold windows of {kh}x{kw} do not fit {hp}x{wp}')
    taps = []
    for i in range(kh):
        for j in range(kw):
            tap = _aten_slice(cx, x, 2, i * dh, i * dh + (oh - 1) * sh + 1, sh)
            tap = _aten_slice(cx, tap, 3, j * dw, j * dw + (ow - 1) * sw + 1, sw)
            taps.append(_reshape(cx, tap, [n, c, 1, oh * ow]))
    stacked = taps[0] if len(taps) == 1 else cx.emit("concat", taps, axis=2)
    return _reshape(cx, stacked, [n, c * kh * kw, oh * ow])


@converts(F.fold, aten.col2im.default)
def _col2im(cx: Ctx, input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """F.fold: [N, C * kh * kw, L] back into [N, C, H, W], each window's values added where it
    lies. Windows that tile the output (kernel == stride, no padding or dilation: MobileViT-v2
    folds its patches back so) are a reshape, a transpose and a reshape; any other (VOLO's 3 x 3
    windows at stride 2, padded) is the IR's col2im, which compiler/passes/col2im.py lowers to a sum
    of shifted planes."""
    (h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (
        _tuple_n(v, 2) for v in (output_size, kernel_size, dilation, padding, stride))
    if cx.rank(input) != 3:
        raise UnsupportedError(f'fx node "{cx.node_name}": fold of a {cx.rank(input)}-D input (3-D is)')
    _, (oh, ow) = col2im_geometry([h, w], [kh, kw], [sh, sw], [ph, pw, ph, pw], [dh, dw])
    n, rows, blocks = cx.shape(input)
    if oh < 1 or ow < 1 or rows % (kh * kw) or blocks != oh * ow:
        raise ShapeError(f'fx node "{cx.node_name}": fold of {list(cx.shape(input))} into {h}x{w} '
                         f"by {kh}x{kw} windows (stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw}): "
                         f"expected [N, C * {kh * kw}, {max(oh, 0) * max(ow, 0)}]")
    if (sh, sw) == (kh, kw) and (dh, dw) == (1, 1) and not ph and not pw and not h % kh and not w % kw:
        x = _reshape(cx, input, [n, rows // (kh * kw), kh, kw, oh, ow])
        return _reshape(cx, _transpose(cx, x, [0, 1, 4, 2, 5, 3]), [n, rows // (kh * kw), h, w])
    return cx.emit("col2im", [input], image_shape=[h, w], block_shape=[kh, kw], strides=[sh, sw],
                   pads=[ph, pw, ph, pw], dilations=[dh, dw])


@converts(aten.constant_pad_nd.default)
def _constant_pad_nd(cx: Ctx, input, pad, value=0):
    return _pad(cx, input, pad, "constant", value)


@converts(F.pad, torch._C._nn.pad)
def _pad(cx: Ctx, input, pad, mode="constant", value=None):
    # torch's pad list runs from the last dim backwards: (last_begin, last_end, prev_begin, ...).
    # A constant pad: each padded axis becomes concat(fill, x, fill), each cropped one a slice,
    # which later passes can fold into a convolution's padding. The others: one IR pad.
    if mode != "constant":
        return _edge_pad(cx, input, pad, mode)
    x, rank = input, cx.rank(input)
    for k in range(len(pad) // 2):
        axis, begin, end = rank - 1 - k, int(pad[2 * k]), int(pad[2 * k + 1])
        size = cx.shape(x)[axis]
        if begin < 0 or end < 0:
            x = _aten_slice(cx, x, axis, max(-begin, 0), size - max(-end, 0))
        parts = []
        for n in (max(begin, 0), max(end, 0)):
            shape = list(cx.shape(x))
            shape[axis] = n
            parts.append(torch.full(shape, 0 if value is None else value, dtype=cx.dtype(x))
                         if n else None)
        pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
        x = _cat(cx, pieces, axis) if len(pieces) > 1 else x
    return x


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _edge_pad(cx: Ctx, x, pad, mode: str):
    """F.pad in reflect / replicate / circular mode: one IR pad (ONNX's reflect / edge / wrap)."""
    if mode not in _PAD_MODES:
        raise UnsupportedError(f'fx node "{cx.node_name}": pad mode "{mode}"')
    rank, pad = cx.rank(x), [int(p) for p in pad]
    if min(pad, default=0) < 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": a {mode} pad that crops ({pad})')
    pads = [0] * (2 * rank)
    for k in range(len(pad) // 2):
        pads[rank - 1 - k], pads[2 * rank - 1 - k] = pad[2 * k], pad[2 * k + 1]
    return cx.emit("pad", [x], pads=pads, mode=_PAD_MODES[mode], value=0)


for _n in (1, 2, 3):
    converts(getattr(aten, f"reflection_pad{_n}d").default)(
        lambda cx, x, padding: _edge_pad(cx, x, padding, "reflect"))
    converts(getattr(aten, f"replication_pad{_n}d").default)(
        lambda cx, x, padding: _edge_pad(cx, x, padding, "replicate"))


@converts(aten.stack.default, torch.stack)
def _stack(cx: Ctx, tensors, dim=0):
    axis = _axis(dim, cx.rank(tensors[0]) + 1)
    return _cat(cx, [_unsqueeze(cx, t, axis) for t in tensors], axis)


def _split_sizes(cx: Ctx, x, dim, split) -> tuple[int, list[int]]:
    axis = _axis(dim, cx.rank(x))
    size = cx.shape(x)[axis]
    if isinstance(split, int):
        return axis, [min(split, size - i) for i in range(0, size, split)] or [0]
    return axis, [int(s) for s in split]


def _split_into(cx: Ctx, x, axis: int, sizes: list[int]) -> tuple:
    if len(sizes) == 1:
        return (x,)
    return tuple(cx.emit_multi("split", [x], axis=axis, sizes=sizes))


@converts(aten.split.Tensor, aten.split_with_sizes.default, torch.split, "split",
          "split_with_sizes")
def _split(cx: Ctx, x, split_size_or_sections, dim=0):
    axis, sizes = _split_sizes(cx, x, dim, split_size_or_sections)
    return _split_into(cx, x, axis, sizes)


@converts(aten.chunk.default, torch.chunk, "chunk")
def _chunk(cx: Ctx, x, chunks, dim=0):
    size = cx.shape(x)[_axis(dim, cx.rank(x))]
    return _split(cx, x, max(1, -(-size // int(chunks))), dim)


@converts(aten.unbind.int, torch.unbind, "unbind")
def _unbind(cx: Ctx, x, dim=0):
    axis = _axis(dim, cx.rank(x))
    parts = _split_into(cx, x, axis, [1] * cx.shape(x)[axis])
    return tuple(_squeeze(cx, p, axis) for p in parts)
