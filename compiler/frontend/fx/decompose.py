"""torch functions the fx frontend writes out as other IR ops.

Each has no IR op of its own but is a short composition of ops that do, which then fuse like any
other (a vector norm is a square, a sum reduction and a square root; a roll is two slices and a
concat):

- batch norm with batch statistics (`F.batch_norm(training=True)` without running statistics:
  timm's ScaledStdConv2d standardises its weights with it, so it folds into a constant);
- vector norms (`Tensor.norm`, `torch.norm`, `torch.linalg.vector_norm`: ConvNeXt-V2's GRN),
  `F.normalize` (Swin-V2) and weight norm (`torch._weight_norm`: wav2vec2's positional conv);
- group norm (a layer norm over groups of channels, then the per-channel affine);
- argmax / argmin without a dim (over the flattened tensor);
- `addcmul` / `addcdiv`;
- `torch.roll` (Swin's shifted windows);
- `new_zeros` / `new_ones` / `new_full` / `new_empty`, and a slice assignment into a tensor made
  that way (Swin builds its window mask so, from constants: it folds at import), or rows assigned
  at computed indices (a ScatterND: transformers' MoE inverts its sort's permutation so).

Only the converter context's `emit` / `shape` / `dtype` / `rank` / `cast` and its record of the
tensors the import made (`note_made` / `made_here` / `written`) are used (the fx
frontend passes its Ctx and registers these), so this module imports nothing of the frontend
but axes.py and helpers.py.
"""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx import axes as fx_axes
from trident.compiler.frontend.fx.context import Val
from trident.compiler.frontend.fx.helpers import _full_index, _ints, _norm_slice, _scalar
from trident.compiler.frontend.fx.indexing import _getitem_tensor, adjacent, flat_index, split_advanced


def _float(cx, x):
    return x if cx.dtype(x).is_floating_point else cx.cast(x, torch.get_default_dtype())


# ------------------------------------------------------------------------- batch norm ----
def batch_norm_batch_stats(cx, x, weight, bias, eps: float):
    """(x - mean) / sqrt(var + eps) * weight + bias, with the mean and the biased variance of
    each channel (dim 1) over every other dim: what batch norm computes in training mode. The
    running statistics it would also update are None here, so nothing else changes."""
    rank = cx.rank(x)
    if rank < 2:
        raise ShapeError(f'fx node "{cx.node_name}": batch norm of a rank-{rank} tensor')
    axes = [0] + list(range(2, rank))
    mean = cx.emit("reduce_mean", [x], axes=axes, keepdims=True)
    centered = cx.emit("sub", [x, mean])
    var = cx.emit("reduce_mean", [cx.emit("mul", [centered, centered])], axes=axes, keepdims=True)
    std = cx.emit("sqrt", [cx.emit("add", [var, _scalar(cx, float(eps), x)])])
    y = cx.emit("div", [centered, std])
    channel = [1, cx.shape(x)[1]] + [1] * (rank - 2)
    if weight is not None:
        y = cx.emit("mul", [y, _channel_param(cx, weight, channel, x)])
    if bias is not None:
        y = cx.emit("add", [y, _channel_param(cx, bias, channel, x)])
    return y


def group_norm(cx, x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, cudnn_enabled=True):
    """Each group of channels (with every position) normalized as one row: the IR's layer norm
    over [N, G, C / G * ...] with unit scale, then the per-channel weight and bias (wav2vec2's and
    HuBERT's feature encoders, PoolFormer)."""
    shape = list(cx.shape(x))
    groups = int(num_groups)
    if len(shape) < 2 or groups < 1 or shape[1] % groups:
        raise ShapeError(f'fx node "{cx.node_name}": {groups} groups over {shape[1:2]} channels of a '
                         f"{shape} tensor (the groups must divide the channels)")
    rows = cx.emit("reshape", [x], shape=[shape[0], groups, math.prod(shape[1:]) // groups])
    ones = torch.ones(cx.shape(rows)[-1], dtype=cx.dtype(x))
    y = cx.emit("reshape", [cx.emit("layer_norm", [rows, ones], axis=2, epsilon=float(eps))], shape=shape)
    channel = [1, shape[1]] + [1] * (len(shape) - 2)
    if weight is not None:
        y = cx.emit("mul", [y, _channel_param(cx, weight, channel, x)])
    if bias is not None:
        y = cx.emit("add", [y, _channel_param(cx, bias, channel, x)])
    return y


def _channel_param(cx, p, shape: list[int], like):
    return cx.emit("reshape", [cx.cast(p, cx.dtype(like))], shape=shape)


# ------------------------------------------------------------------------ vector norms ----
def vector_norm(cx, x, ord=2, dim=None, keepdim: bool = False, dtype=None):
    """The p-norm over `dim` (every dim when None): p = 2, 1, inf, -inf, 0 or any other
    positive p as (sum |x|^p)^(1/p)."""
    if dtype is not None:
        x = cx.cast(x, dtype)
    x = _float(cx, x)
    axes = fx_axes.axes(cx, x, dim)
    p = 2.0 if ord in ("fro", None) else float(ord)
    keep = bool(keepdim)
    if p == 2.0:
        squares = cx.emit("mul", [x, x])
        return cx.emit("sqrt", [cx.emit("reduce_sum", [squares], axes=axes, keepdims=keep)])
    magnitude = cx.emit("abs", [x])
    if p == 1.0:
        return cx.emit("reduce_sum", [magnitude], axes=axes, keepdims=keep)
    if p == math.inf:
        return cx.emit("reduce_max", [magnitude], axes=axes, keepdims=keep)
    if p == -math.inf:
        negated = cx.emit("neg", [magnitude])
        return cx.emit("neg", [cx.emit("reduce_max", [negated], axes=axes, keepdims=keep)])
    if p == 0.0:
        zero = cx.cast(cx.emit("equal", [x, _scalar(cx, 0, x)]), cx.dtype(x))
        count = cx.emit("reduce_sum", [zero], axes=axes, keepdims=keep)
        return cx.emit("sub", [_scalar(cx, _count(cx, x, axes), x), count])
    if p < 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": vector norm of order {ord}')
    powered = cx.emit("pow", [magnitude, _scalar(cx, p, x)])
    total = cx.emit("reduce_sum", [powered], axes=axes, keepdims=keep)
    return cx.emit("pow", [total, _scalar(cx, 1.0 / p, x)])


def normalize(cx, x, p=2.0, dim=1, eps: float = 1e-12, out=None):
    """F.normalize: x / max(||x||_p over dim, eps) (Swin-V2's cosine attention)."""
    if out is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": normalize into out=')
    x = _float(cx, x)
    norm = vector_norm(cx, x, p, [dim], keepdim=True)
    return cx.emit("div", [x, cx.emit("maximum", [norm, _scalar(cx, float(eps), x)])])


def weight_norm(cx, v, g, dim: int = 0):
    """torch._weight_norm: v * (g / ||v||), the norm over every dim but `dim` (wav2vec2's
    positional conv; its parameters are constants, so this folds at import)."""
    axes = [a for a in range(cx.rank(v)) if a != fx_axes.axis(dim, cx.rank(v))]
    norm = vector_norm(cx, v, 2, axes, keepdim=True)
    return cx.emit("mul", [v, cx.emit("div", [g, norm])])


def arg_extreme(op: str):
    """argmax / argmin: over `dim`, or over the flattened tensor without one (CLIP's text pooler
    picks each sequence's end token so)."""
    def convert(cx, x, dim=None, keepdim: bool = False):
        if dim is None:  # (keepdim then keeps every dim, each of size 1)
            kept = [1] * cx.rank(x) if keepdim else None
            flat = cx.emit("reshape", [x], shape=[math.prod(cx.shape(x))])
            index = cx.emit(op, [flat], axis=0, keepdims=False)
            return cx.emit("reshape", [index], shape=kept) if kept else index
        return cx.emit(op, [x], axis=fx_axes.axis(dim, cx.rank(x)), keepdims=bool(keepdim))
    return convert


# torch.cdist's default mode computes p = 2 distances through a matmul past this many rows on
# either side (use_mm_for_euclid_dist_if_necessary), and by differences up to it.
CDIST_MM_ROWS = 25


def cdist(cx, x1, x2, p=2.0, compute_mode="use_mm_for_euclid_dist_if_necessary"):
    """torch.cdist of x1 [..., P, M] and x2 [..., R, M] (same batch dims) as torch computes it: for
    p = 2 past CDIST_MM_ROWS rows (or in use_mm mode) the matmul of [-2 x1, |x1|², 1] and
    [x2, 1, |x2|²], clamped at 0, square-rooted (torch's _euclidean_dist); else the differences of
    every pair, summed (p = 1), squared, summed and square-rooted (p = 2), or their largest
    magnitude (p = inf). Other p and broadcast batch dims run in torch."""
    p, rank = float(p), cx.rank(x1)
    for v in (x1, x2):
        if not cx.dtype(v).is_floating_point:
            raise UnsupportedError(f'fx node "{cx.node_name}": cdist of {cx.dtype(v)}')
    if rank < 2 or cx.rank(x2) != rank or cx.shape(x1)[:-2] != cx.shape(x2)[:-2] or \
            cx.shape(x1)[-1] != cx.shape(x2)[-1] or p not in (1.0, 2.0, math.inf):
        raise UnsupportedError(f'fx node "{cx.node_name}": cdist of {list(cx.shape(x1))} and '
                               f"{list(cx.shape(x2))} with p={p} (converted: same batch dims, p of 1, 2, inf)")
    rows1, rows2 = cx.shape(x1)[-2], cx.shape(x2)[-2]
    if p == 2.0 and compute_mode != "donot_use_mm_for_euclid_dist" and (
            compute_mode == "use_mm_for_euclid_dist" or max(rows1, rows2) > CDIST_MM_ROWS):
        return _euclidean_by_matmul(cx, x1, x2)
    batch, width = list(cx.shape(x1)[:-2]), cx.shape(x1)[-1]
    a = cx.emit("reshape", [x1], shape=batch + [rows1, 1, width])
    b = cx.emit("reshape", [x2], shape=batch + [1, rows2, width])
    d = cx.emit("sub", [a, b])
    last = [rank]
    if p == 1.0:
        return cx.emit("reduce_sum", [cx.emit("abs", [d])], axes=last, keepdims=False)
    if p == math.inf:
        return cx.emit("reduce_max", [cx.emit("abs", [d])], axes=last, keepdims=False)
    return cx.emit("sqrt", [cx.emit("reduce_sum", [cx.emit("mul", [d, d])], axes=last, keepdims=False)])


def _euclidean_by_matmul(cx, x1, x2):
    rank, dtype = cx.rank(x1), cx.dtype(x1)
    last = rank - 1
    squares = [cx.emit("reduce_sum", [cx.emit("mul", [v, v])], axes=[last], keepdims=True) for v in (x1, x2)]
    ones = [torch.ones(cx.shape(s), dtype=dtype) for s in squares]
    left = cx.emit("concat", [cx.emit("mul", [x1, torch.tensor(-2.0, dtype=dtype)]), squares[0], ones[0]],
                   axis=last)
    right = cx.emit("concat", [x2, ones[1], squares[1]], axis=last)
    perm = list(range(rank - 2)) + [rank - 1, rank - 2]
    product = cx.emit("matmul", [left, cx.emit("transpose", [right], perm=perm)])
    return cx.emit("sqrt", [cx.emit("maximum", [product, torch.tensor(0.0, dtype=dtype)])])


def _count(cx, x, axes: list[int]) -> int:
    return math.prod(cx.shape(x)[a] for a in axes)


def tensor_norm(cx, x, p="fro", dim=None, keepdim: bool = False, dtype=None):
    """torch.norm / Tensor.norm: the vector norm (a matrix norm such as "nuc" is not one)."""
    if isinstance(p, str) and p != "fro":
        raise UnsupportedError(f'fx node "{cx.node_name}": matrix norm "{p}"')
    return vector_norm(cx, x, 2 if p == "fro" else p, dim, keepdim, dtype)


# -------------------------------------------------------------------- addcmul, addcdiv ----
def addcmul(cx, input, tensor1, tensor2, *, value=1):
    return _add_scaled(cx, input, cx.emit("mul", _same_dtype(cx, tensor1, tensor2)), value)


def addcdiv(cx, input, tensor1, tensor2, *, value=1):
    a, b = _same_dtype(cx, _float(cx, tensor1), tensor2)
    return _add_scaled(cx, input, cx.emit("div", [a, b]), value)


def _add_scaled(cx, input, product, value):
    if value != 1:
        product = cx.emit("mul", [product, _scalar(cx, value, product)])
    input, product = _same_dtype(cx, input, product)
    return cx.emit("add", [input, product])


def _same_dtype(cx, a, b) -> list:
    dtype = torch.promote_types(cx.dtype(a), cx.dtype(b))
    return [cx.cast(a, dtype), cx.cast(b, dtype)]


# ------------------------------------------------------------------------------- roll ----
def roll(cx, x, shifts, dims=None):
    """torch.roll: along each dim, the last `shift` elements move to the front (a slice of each
    part, concatenated). Without dims, the flattened tensor rolls and keeps its shape."""
    shifts = list(shifts) if isinstance(shifts, (list, tuple)) else [shifts]
    if dims is None or (isinstance(dims, (list, tuple)) and len(dims) == 0):
        if len(shifts) != 1:
            raise ShapeError(f'fx node "{cx.node_name}": roll without dims takes one shift, '
                             f"got {shifts}")
        shape = list(cx.shape(x))
        flat = cx.emit("reshape", [x], shape=[math.prod(shape)])
        return cx.emit("reshape", [_roll_one(cx, flat, int(shifts[0]), 0)], shape=shape)
    dims = list(dims) if isinstance(dims, (list, tuple)) else [dims]
    if len(dims) != len(shifts):
        raise ShapeError(f'fx node "{cx.node_name}": roll with {len(shifts)} shifts and '
                         f"{len(dims)} dims")
    for shift, dim in zip(shifts, dims):
        x = _roll_one(cx, x, int(shift), fx_axes.axis(int(dim), cx.rank(x)))
    return x


def _roll_one(cx, x, shift: int, axis: int):
    size = cx.shape(x)[axis]
    if size == 0 or shift % size == 0:
        return x
    cut = size - shift % size  # x[cut:] comes first
    tail = cx.emit("slice", [x], starts=[cut], ends=[size], axes=[axis], steps=[1])
    head = cx.emit("slice", [x], starts=[0], ends=[cut], axes=[axis], steps=[1])
    return cx.emit("concat", [tail, head], axis=axis)


# ------------------------------------------------------------------------ new tensors ----
def new_filled(fill):
    """Tensor.new_zeros / new_ones / new_full / new_empty: a constant (shapes are static at
    import; new_empty's contents are unspecified, zeros are one valid choice)."""
    def convert(cx, x, *args, size=None, fill_value=None, dtype=None, layout=None, device=None,
                pin_memory=None, requires_grad=False):
        args = args + tuple(a for a in (size, fill_value) if a is not None)  # (named: x.new_ones(size=...))
        size, value = (args[0], args[1]) if fill is None else (args, fill)
        size = _ints(size)
        made = torch.full(size, value, dtype=dtype or cx.dtype(x))
        cx.note_made(made)
        return made
    return convert


def new_tensor(cx, x, data, dtype=None, device=None, requires_grad=False, layout=None, pin_memory=None):
    """Tensor.new_tensor(data): a constant of x's dtype from Python data (Funnel's cls_pos in
    transformers 4.x). Data computed in the graph is a copy: unsupported."""
    if not isinstance(data, (int, float, bool, list, tuple, torch.Tensor)):
        raise UnsupportedError(f'fx node "{cx.node_name}": new_tensor of a graph value')
    made = torch.as_tensor(data, dtype=dtype or cx.dtype(x)).clone()
    cx.note_made(made)
    return made


def triangle(upper: bool):
    """torch.triu / tril: x where the column minus the row is at least (triu) or at most (tril)
    `diagonal`, zero elsewhere, over the last two dims (a constant boolean mask)."""
    def convert(cx, x, diagonal=0, *, out=None):
        if isinstance(x, torch.Tensor):
            return torch.triu(x, diagonal) if upper else torch.tril(x, diagonal)
        shape = cx.shape(x)
        if len(shape) < 2:
            raise ShapeError(f'fx node "{cx.node_name}": {"triu" if upper else "tril"} of a rank-{len(shape)} tensor')
        rows, cols = shape[-2:]
        offset = torch.arange(cols)[None, :] - torch.arange(rows)[:, None]
        keep = offset >= diagonal if upper else offset <= diagonal
        return cx.emit("where", [keep, x, torch.tensor(0, dtype=cx.dtype(x))])
    return convert


def setitem(cx, target, index, value):
    """`target[index] = value` into a tensor the import itself made (new_zeros and the like):
    written in place, as Python would, so later uses of `target` see it. A write into a graph
    value or a model's own tensor would change what other nodes read: not supported."""
    if not isinstance(target, torch.Tensor) or not cx.made_here(target):
        raise UnsupportedError(f'fx node "{cx.node_name}": a slice assignment into a tensor '
                               "the graph computes or the model owns (only into one made by "
                               "new_zeros / new_full and the like)")
    if not (_known(index) and _known(value)):
        raise UnsupportedError(f'fx node "{cx.node_name}": a slice assignment at a computed '
                               "index or of a computed value")
    with torch.no_grad():
        target[index] = value
    cx.written(target)
    return None


def assign(cx, target, index, value):
    """fx_mutation.assign (what `target[index] = value` becomes), returning the written tensor:
    setitem into a tensor the import made, or, into a tensor the graph computes (MViT-v2 adds
    its relative positions into a block of the attention scores), the tensor with that block
    replaced: a selection between the target and the value padded to the target's shape."""
    if isinstance(target, torch.Tensor) and (not cx.made_here(target) or
                                             (_known(index) and _known(value))):
        setitem(cx, target, index, value)
        return target
    rows = _row_index(cx, index)
    if rows is not None:
        return _assign_rows(cx, target, rows, value)
    items = index if isinstance(index, tuple) else (index,)
    if any(isinstance(k, (Val, torch.Tensor)) for k in items):
        return _assign_advanced(cx, target, items, value)
    starts, stops, steps, kept = _block(cx, list(cx.shape(target)), index)
    value = cx.cast(value, cx.dtype(target))
    sizes = [len(range(a, b, k)) for a, b, k in zip(starts, stops, steps)]
    block = cx.emit("expand", [value], shape=[n for n, k in zip(sizes, kept) if k])
    block = cx.emit("reshape", [block], shape=list(sizes))
    shape = list(cx.shape(target))
    for axis, (start, stop, step) in enumerate(zip(starts, stops, steps)):
        if step != 1 and sizes[axis]:  # (spread: each position reads its block element, or a neighbour's)
            spread = torch.clamp((torch.arange(start, stop) - start) // step, max=sizes[axis] - 1)
            block = cx.emit("gather", [block, spread], axis=axis)
            sizes[axis] = stop - start
    padded = cx.emit("pad", [block], pads=starts + [n - a - m for n, a, m in zip(shape, starts, sizes)],
                     mode="constant", value=0)
    inside = torch.zeros(shape, dtype=torch.bool)
    inside[tuple(slice(a, b, k) for a, b, k in zip(starts, stops, steps))] = True
    return cx.emit("where", [inside, padded, target])


def _row_index(cx, index):
    """The one 1-D integer tensor of `target[rows] = value`, else None."""
    if isinstance(index, (tuple, list)) and len(index) == 1:
        index = index[0]
    if index is None or isinstance(index, (int, slice, tuple, list)) or index is Ellipsis:
        return None
    if cx.dtype(index) not in (torch.int32, torch.int64) or cx.rank(index) != 1:
        return None
    return index


def index_put(cx, target, indices, values, accumulate=False):
    """aten.index_put (what torch.export writes `target[rows] = values` as): index tensors on the
    leading dims (None past them: whole), as a ScatterND of those rows (accumulate: added in); index
    tensors after a None (`out[:, :, rows, cols] += patches`, as core ATen decomposes F.fold) as
    torch assigns `target[:, i, j] = values`, their axes moved first around the ScatterND."""
    leading = list(indices)
    while leading and leading[-1] is None:
        leading.pop()
    if not leading:
        raise UnsupportedError(f'fx node "{cx.node_name}": index_put without an index tensor')
    reduction = "add" if accumulate else "none"
    if any(i is None for i in leading):
        index = tuple(slice(None) if i is None else i for i in leading)
        return _assign_advanced(cx, target, index, values, reduction)
    if len(leading) == 1 and _row_index(cx, leading[0]) is not None:
        return _assign_rows(cx, target, leading[0], values, reduction)
    return _assign_indexed(cx, target, leading, values, reduction)


def _assign_rows(cx, target, rows, value, reduction: str = "none"):
    """`target[rows] = value` with computed row indices (transformers' MoE inverts its sort's
    permutation so: `inverse[perm] = arange(n)`) as a ScatterND of the rows; negative indices count
    from the end, an index past the rows is an error (ops/indexing.py checks them)."""
    shape, count = list(cx.shape(target)), cx.shape(rows)[0]
    updates = cx.emit("expand", [cx.cast(value, cx.dtype(target))], shape=[count] + shape[1:])
    indices = cx.emit("reshape", [cx.cast(rows, torch.int64)], shape=[count, 1])
    return cx.emit("scatter_nd", [target, indices, updates], reduction=reduction)


def _assign_advanced(cx, target, index: tuple, value, reduction: str = "none"):
    """`target[index] = value` with index tensors among ints and slices, as torch indexes: the
    block the ints and slices pick (basic indexing), in it the index tensors' axes moved first
    (torch puts the indexed result there when they are separated, else in their place: the
    value is moved the same way), those rows written (_assign_indexed; reduction "add": added
    in), and the block put back."""
    basic, kept, advanced = split_advanced(cx, index, cx.rank(target), "an assignment")
    whole = all(k == slice(None) for k in basic)
    block = target if whole else _getitem_tensor(cx, target, basic)
    rest = [a for a in range(len(kept)) if a not in advanced]
    perm = advanced + rest
    indices = [kept[a] for a in advanced]
    picked = list(torch.broadcast_shapes(*[tuple(cx.shape(i)) for i in indices]))
    block_shape = list(cx.shape(block))
    if perm != list(range(len(kept))):
        block = cx.emit("transpose", [block], perm=perm)
        if adjacent(advanced):  # torch's value is [before, picked, after]: as the block's axes, picked first
            start = advanced[0]
            shape = [block_shape[a] for a in rest[:start]] + picked + [block_shape[a] for a in rest[start:]]
            value = cx.emit("expand", [cx.cast(value, cx.dtype(target))], shape=shape)
            n = len(picked)
            value = cx.emit("transpose", [value], perm=list(range(start, start + n)) + list(range(start))
                            + list(range(start + n, len(shape))))
    written = _assign_indexed(cx, block, indices, value, reduction)
    if perm != list(range(len(kept))):
        written = cx.emit("transpose", [written], perm=[perm.index(a) for a in range(len(kept))])
    return written if whole else assign(cx, target, basic, written)


def _assign_indexed(cx, target, indices: list, value, reduction: str = "none"):
    """`target[i0, i1, ...] = value` with index tensors on the leading axes (Informer's ProbSparse
    attention writes its chosen queries' rows so): the rows of the leading axes flattened, at the
    flat index the indices pick (one out of its axis goes past the rows: an error), as a ScatterND."""
    if any(cx.dtype(i) in (torch.bool, torch.uint8) or cx.dtype(i).is_floating_point for i in indices):
        raise UnsupportedError(f'fx node "{cx.node_name}": an assignment at a mask or float index')
    shape = list(cx.shape(target))
    sizes, rest = shape[:len(indices)], shape[len(indices):]
    picked = torch.broadcast_shapes(*[tuple(cx.shape(i)) for i in indices])
    flat = cx.emit("expand", [flat_index(cx, indices, sizes)], shape=list(picked))
    flat = cx.emit("reshape", [flat], shape=[math.prod(picked)])
    value = cx.emit("expand", [cx.cast(value, cx.dtype(target))], shape=list(picked) + rest)
    value = cx.emit("reshape", [value], shape=[math.prod(picked)] + rest)
    rows = cx.emit("reshape", [target], shape=[math.prod(sizes)] + rest)
    return cx.emit("reshape", [_assign_rows(cx, rows, flat, value, reduction)], shape=shape)


def _block(cx, shape: list[int], index) -> tuple[list[int], list[int], list[int], list[bool]]:
    """The block a basic index selects: per dim its start, stop and step, and whether the dim
    stays (an int index drops it). Ints, slices of positive steps and one Ellipsis only."""
    index = tuple(index) if isinstance(index, tuple) else (index,)
    if any(not (i is Ellipsis or isinstance(i, (int, slice))) or isinstance(i, bool) for i in index) \
            or sum(i is Ellipsis for i in index) > 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": a slice assignment into a computed '
                               f"tensor at index {index!r} (ints and slices only)")
    starts, stops, steps, kept = [], [], [], []
    for i, n in zip(_full_index(cx, index, len(shape)), shape):
        if isinstance(i, int):
            if not -n <= i < n:
                raise ShapeError(f'fx node "{cx.node_name}": index {i} out of range for size {n}')
            starts.append(i % n), stops.append(i % n + 1), steps.append(1), kept.append(False)
            continue
        start, stop, step = _norm_slice(n, i.start, i.stop, i.step)
        if step < 1:
            raise UnsupportedError(f'fx node "{cx.node_name}": a slice assignment with step {step}')
        stop = max(stop, start)
        starts.append(start), stops.append(stop), steps.append(step), kept.append(True)
    return starts, stops, steps, kept


def fill_in_place(fill):
    """Tensor.zero_ / fill_ of a tensor the import made (as setitem)."""
    def convert(cx, target, *args):
        return assign(cx, target, Ellipsis, args[0] if fill is None else fill)
    return convert


def _known(obj) -> bool:
    """Whether an index or a value is known at import (no graph value in it)."""
    if isinstance(obj, (list, tuple)):
        return all(_known(o) for o in obj)
    if isinstance(obj, slice):
        return all(_known(o) for o in (obj.start, obj.stop, obj.step))
    return obj is None or obj is Ellipsis or isinstance(obj, (int, float, bool, torch.Tensor))


__all__ = ["batch_norm_batch_stats", "vector_norm", "tensor_norm", "addcmul", "addcdiv", "roll",
           "new_filled", "setitem", "assign", "fill_in_place"]
