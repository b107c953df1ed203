"""Converters of ONNX ops that index, scatter, sort or scan: GatherElements, GatherND,
ScatterElements, ScatterND, OneHot, TopK, CumSum, CumProd, ReverseSequence, Compress, NonZero."""
from __future__ import annotations

import torch

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter

_REDUCTIONS = ("none", "add", "mul", "max", "min")


def _index_input(cx: NodeContext, i: int, what: str = "indices") -> str:
    value = cx.input(i)
    if cx.type_of(value).dtype not in (torch.int32, torch.int64):
        raise cx.error(ModelError, f"{what} must be int32 or int64, got {cx.type_of(value)}")
    return value


def _reduction(cx: NodeContext) -> str:
    reduction = cx.str_attr("reduction", "none")
    if reduction not in _REDUCTIONS:
        raise cx.error(ModelError, f"reduction must be one of {', '.join(_REDUCTIONS)}, "
                                   f"got {reduction!r}")
    return reduction


@converter("GatherElements")
def _gather_elements(cx):
    x, indices = cx.input(0), _index_input(cx, 1)
    xt, it = cx.type_of(x), cx.type_of(indices)
    if xt.rank != it.rank:
        raise cx.error(ShapeError, f"indices {it} and data {xt} differ in rank")
    return [cx.emit("gather_elements", x, indices, axis=cx.axis(cx.int_attr("axis", 0), xt.rank))]


@converter("GatherND")
def _gather_nd(cx):
    x, indices = cx.input(0), _index_input(cx, 1)
    batch_dims = cx.int_attr("batch_dims", 0)
    depth = cx.static_shape(indices, "GatherND")[-1]
    if batch_dims + depth > cx.type_of(x).rank:
        raise cx.error(ShapeError, f"indices address {depth} dims after {batch_dims} batch "
                                   f"dims of {cx.type_of(x)}")
    if depth == 1 and batch_dims == 0:
        # One coordinate per index: a Gather along dim 0 (the dynamo exporter writes Falcon's
        # fused_qkv[..., [-2], :] so), which has a kernel and, with constant indices, folds to a slice.
        rows = cx.reshape(indices, list(cx.static_shape(indices, "GatherND")[:-1]))
        return [cx.emit("gather", x, rows, axis=0)]
    return [cx.emit("gather_nd", x, indices, batch_dims=batch_dims)]


@converter("ScatterElements")
def _scatter_elements(cx):
    x, indices, updates = cx.input(0), _index_input(cx, 1), cx.input(2)
    axis = cx.axis(cx.int_attr("axis", 0), cx.type_of(x).rank)
    return [cx.emit("scatter_elements", x, indices, updates, axis=axis,
                    reduction=_reduction(cx))]


@converter("ScatterND")
def _scatter_nd(cx):
    x, indices, updates = cx.input(0), _index_input(cx, 1), cx.input(2)
    return [cx.emit("scatter_nd", x, indices, updates, reduction=_reduction(cx))]


@converter("OneHot", constant_inputs=(1,))
def _one_hot(cx):
    """values[1] where the position along `axis` equals the index (negative ones counted from
    the end), values[0] elsewhere: a comparison with the positions, then a select."""
    indices, values = cx.input(0), cx.input(2)
    depth = int(cx.const_scalar(1, "depth"))
    if depth < 0:
        raise cx.error(ModelError, f"depth {depth} is negative")
    rank = cx.type_of(indices).rank + 1
    axis = cx.axis(cx.int_attr("axis", -1), rank)
    if cx.type_of(indices).dtype != torch.int64:  # float indices are truncated, as a cast
        indices = cx.emit("cast", indices, dtype=torch.int64)
    negative = cx.emit("less", indices, cx.scalar(0, torch.int64))
    wrapped = cx.emit("where", negative, cx.emit("add", indices, cx.scalar(depth, torch.int64)),
                      indices)
    dims = [d if isinstance(d, int) else None for d in cx.type_of(wrapped).shape]
    spread = cx.reshape(wrapped, dims[:axis] + [1] + dims[axis:])
    positions = torch.arange(depth).reshape([-1 if d == axis else 1 for d in range(rank)])
    hit = cx.emit("equal", spread, cx.constant(positions, "positions"))
    off, on = (cx.reshape(cx.emit("slice", values, starts=[k], ends=[k + 1], axes=[0], steps=[1]),
                          []) for k in (0, 1))
    return [cx.emit("where", hit, on, off)]


@converter("TopK", constant_inputs=(1,))
def _top_k(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    axis = cx.axis(cx.int_attr("axis", -1), t.rank)
    k = int(cx.const_scalar(1, "K"))
    size = t.shape[axis]
    if not isinstance(size, int):
        raise cx.error(UnsupportedError, f"TopK along symbolic dim {axis} of {t}")
    if not 0 <= k <= size:
        raise cx.error(ShapeError, f"K {k} is not within the {size} values of axis {axis}")
    return cx.emit_multi("topk", [x], {"k": k, "axis": axis, "largest": cx.flag("largest", 1)}, 2)


@converter("CumSum", "CumProd", constant_inputs=(1,))
def _cumulative(cx):
    x = cx.input(0)
    axis = cx.axis(int(cx.const_scalar(1, "axis")), cx.type_of(x).rank)
    return [cx.emit("cumsum" if cx.op_type == "CumSum" else "cumprod", x, axis=axis,
                    exclusive=cx.flag("exclusive", 0), reverse=cx.flag("reverse", 0))]


@converter("ReverseSequence")
def _reverse_sequence(cx):
    x, lengths = cx.input(0), _index_input(cx, 1, "sequence_lens")
    rank = cx.type_of(x).rank
    time_axis = cx.axis(cx.int_attr("time_axis", 0), rank, "time_axis")
    batch_axis = cx.axis(cx.int_attr("batch_axis", 1), rank, "batch_axis")
    if {time_axis, batch_axis} != {0, 1}:
        raise cx.error(ModelError, f"time_axis {time_axis} and batch_axis {batch_axis} must be "
                                   f"0 and 1")
    return [cx.emit("reverse_sequence", x, lengths, time_axis=time_axis, batch_axis=batch_axis)]


@converter("Compress", constant_inputs=(1,))
def _compress(cx):
    """The slices where a constant condition holds: a gather of known indices (a condition
    computed at run time would give a data-dependent shape)."""
    x = cx.input(0)
    condition = cx.const(1, "condition").to(torch.bool).reshape(-1)
    axis = cx.int_attr("axis")
    if axis is None:
        x = cx.reshape(x, [-1])
        axis = 0
    axis = cx.axis(axis, cx.type_of(x).rank)
    size = cx.static_shape(x, "Compress")[axis]
    kept = torch.nonzero(condition[:size]).reshape(-1)
    return [cx.emit("gather", x, cx.constant(kept, "kept"), axis=axis)]


@converter("NonZero")
def _non_zero(cx):
    x = cx.input(0)
    tensor = cx.imp.builder.graph.constants.get(x)
    if tensor is None:
        raise cx.error(UnsupportedError, "NonZero of a value computed at run time has a "
                                         "data-dependent output shape")
    if tensor.dim() == 0:  # [rank = 0, count]
        return [cx.constant(torch.zeros((0, int(bool(tensor))), dtype=torch.int64), "nonzero")]
    return [cx.constant(torch.nonzero(tensor).t().contiguous(), "nonzero")]
