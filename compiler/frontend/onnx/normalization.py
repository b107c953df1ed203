"""Converters of ONNX Softmax and the normalizations."""
from __future__ import annotations

import torch

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter


@converter("Softmax", "LogSoftmax")
def _softmax(cx):
    x = cx.input(0)
    axis = cx.axis(cx.int_attr("axis", -1), cx.type_of(x).rank)
    return [cx.emit("softmax" if cx.op_type == "Softmax" else "log_softmax", x, axis=axis)]


@converter("BatchNormalization")
def _batch_norm(cx):
    x = cx.input(0)
    dtype = cx.type_of(x).dtype
    # Opset 15 lets scale/bias and mean/var have their own float types; the IR wants one.
    params = [cx.input(i) if cx.type(i).dtype == dtype
              else cx.emit("cast", cx.input(i), dtype=dtype) for i in range(1, 5)]
    if cx.flag("training_mode", 0):
        return _batch_norm_training(cx, x, *params)
    if any(cx.proto.output[1:]):
        raise cx.error(UnsupportedError, "running_mean / running_var outputs (training only)")
    return [cx.emit("batch_norm", x, *params, epsilon=cx.float_attr("epsilon", 1e-5))]


def _batch_norm_training(cx: NodeContext, x: str, scale: str, bias: str, mean: str, var: str):
    """Training-mode BatchNormalization normalizes with the batch's own statistics (over every
    dim but the channel); NFNet's weight standardization exports it on constant weights, where it
    folds at import. The optional outputs are the updated running statistics."""
    rank = cx.type_of(x).rank
    axes = [0] + list(range(2, rank))
    batch_mean = cx.emit("reduce_mean", x, axes=axes, keepdims=True)
    centered = cx.emit("sub", x, batch_mean)
    batch_var = cx.emit("reduce_mean", cx.emit("mul", centered, centered), axes=axes,
                        keepdims=True)
    dtype = cx.type_of(x).dtype
    eps = cx.scalar(cx.float_attr("epsilon", 1e-5), dtype)
    y = cx.emit("div", centered, cx.emit("sqrt", cx.emit("add", batch_var, eps)))
    y = cx.emit("add", cx.emit("mul", y, _per_channel(cx, scale, rank)),
                _per_channel(cx, bias, rank))
    momentum = cx.float_attr("momentum", 0.9)
    keep, take = cx.scalar(momentum, dtype), cx.scalar(1 - momentum, dtype)
    running = [cx.emit("add", cx.emit("mul", old, keep),
                       cx.emit("mul", cx.reshape(new, [-1]), take))
               for old, new in ((mean, batch_mean), (var, batch_var))]
    return [y] + [r if k + 1 < len(cx.proto.output) and cx.proto.output[k + 1] else None
                  for k, r in enumerate(running)]


@converter("LayerNormalization", since=17)
def _layer_norm(cx):
    x, scale = cx.input(0), cx.input(1)
    rank = cx.type_of(x).rank
    axis = cx.axis(cx.int_attr("axis", -1), rank)
    eps = cx.float_attr("epsilon", 1e-5)
    inputs = [x, scale] + ([cx.input(2)] if cx.has(2) else [])
    outs: list[str | None] = [cx.emit("layer_norm", *inputs, axis=axis, epsilon=eps)]
    wanted = [len(cx.proto.output) > k and cx.proto.output[k] != "" for k in (1, 2)]
    if any(wanted):
        outs += _layer_norm_stats(cx, x, list(range(axis, rank)), eps, wanted)
    return outs


def _layer_norm_stats(cx: NodeContext, x: str, axes: list[int], eps: float,
                      wanted: list[bool]) -> list[str | None]:
    """LayerNormalization's optional Mean and InvStdDev outputs, in float32 (stash_type)."""
    if cx.int_attr("stash_type", 1) != 1:
        raise cx.error(UnsupportedError, "stash_type other than 1 (float32)")
    if cx.type_of(x).dtype != torch.float32:
        x = cx.emit("cast", x, dtype=torch.float32)
    mean = cx.emit("reduce_mean", x, axes=axes, keepdims=True)
    centered = cx.emit("sub", x, mean)
    var = cx.emit("reduce_mean", cx.emit("mul", centered, centered), axes=axes, keepdims=True)
    std = cx.emit("sqrt", cx.emit("add", var, cx.scalar(eps, torch.float32)))
    inv_std = cx.emit("reciprocal", std)
    return [mean if wanted[0] else None, inv_std if wanted[1] else None]


@converter("Hardmax")
def _hardmax(cx):
    """1 at the first largest value along the axis, 0 elsewhere: argmax compared with the axis'
    positions (the comparison fuses into the argmax kernel)."""
    x = cx.input(0)
    t = cx.type_of(x)
    axis = cx.axis(cx.int_attr("axis", -1), t.rank)
    size = cx.static_shape(x, "Hardmax")[axis]
    index = cx.emit("argmax", x, axis=axis, keepdims=True, select_last_index=False)
    positions = torch.arange(size).reshape([-1 if d == axis else 1 for d in range(t.rank)])
    hit = cx.emit("equal", index, cx.constant(positions, "positions"))
    return [cx.emit("cast", hit, dtype=t.dtype)]


@converter("RMSNormalization", since=23)
def _rms_norm(cx):
    _check_stash_type(cx)
    x, scale = cx.input(0), cx.input(1)
    axis = cx.axis(cx.int_attr("axis", -1), cx.type_of(x).rank)
    return [cx.emit("rms_norm", x, scale, axis=axis, epsilon=cx.float_attr("epsilon", 1e-5))]


def _check_stash_type(cx: NodeContext) -> None:
    if cx.int_attr("stash_type", 1) != 1:  # trident's kernels compute in fp32 anyway
        raise cx.error(UnsupportedError, "stash_type other than 1 (float32)")


def _normalize_trailing(cx: NodeContext, x: str, axis: int, eps: float) -> str:
    """(x - mean) / sqrt(var + eps) over dims [axis, rank): a layer norm with unit scale."""
    shape = cx.static_shape(x, cx.op_type)[axis:]
    ones = cx.constant(torch.ones(shape, dtype=cx.type_of(x).dtype), "ones")
    return cx.emit("layer_norm", x, ones, axis=axis, epsilon=eps)


def _per_channel(cx: NodeContext, param: str, rank: int) -> str:
    """A [C] parameter shaped [C, 1, ...] to broadcast over NC... inputs."""
    return cx.reshape(param, [-1] + [1] * (rank - 2))


@converter("InstanceNormalization")
def _instance_norm(cx):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    y = _normalize_trailing(cx, x, 2, cx.float_attr("epsilon", 1e-5))
    y = cx.emit("mul", y, _per_channel(cx, cx.input(1), rank))
    return [cx.emit("add", y, _per_channel(cx, cx.input(2), rank))]


@converter("GroupNormalization", since=21)  # (ONNX deprecates the per-group scale of opset 18)
def _group_norm(cx):
    """Normalize each group of channels (with its spatial dims) as one row; then scale and shift
    per channel."""
    _check_stash_type(cx)
    x = cx.input(0)
    shape = cx.static_shape(x, "GroupNormalization")
    groups = cx.int_attr("num_groups")
    if not groups or shape[1] % groups:
        raise cx.error(ShapeError, f"num_groups {groups} does not divide the {shape[1]} channels")
    rows = cx.reshape(x, [shape[0], groups, -1])
    y = cx.reshape(_normalize_trailing(cx, rows, 2, cx.float_attr("epsilon", 1e-5)), list(shape))
    y = cx.emit("mul", y, _per_channel(cx, cx.input(1), len(shape)))
    return [cx.emit("add", y, _per_channel(cx, cx.input(2), len(shape)))]


@converter("LRN")
def _lrn(cx):
    size = cx.int_attr("size")
    if not size or size < 1:
        raise cx.error(ModelError, f"size must be a positive int, got {size}")
    return [cx.emit("lrn", cx.input(0), size=size, alpha=cx.float_attr("alpha", 1e-4),
                    beta=cx.float_attr("beta", 0.75), bias=cx.float_attr("bias", 1.0))]


@converter("MeanVarianceNormalization")
def _mean_variance_norm(cx):
    """(x - mean) / (std + 1e-9) over `axes` (ONNX's function body; the std is the population
    one)."""
    x = cx.input(0)
    axes = sorted(cx.axes(cx.ints_attr("axes", [0, 2, 3]), cx.type_of(x).rank))
    centered = cx.emit("sub", x, cx.emit("reduce_mean", x, axes=axes, keepdims=True))
    var = cx.emit("reduce_mean", cx.emit("mul", centered, centered), axes=axes, keepdims=True)
    std = cx.emit("add", cx.emit("sqrt", var), cx.scalar(1e-9, cx.type_of(x).dtype))
    return [cx.emit("div", centered, std)]


@converter("LpNormalization")
def _lp_norm(cx):
    x = cx.input(0)
    axis = cx.axis(cx.int_attr("axis", -1), cx.type_of(x).rank)
    p = cx.int_attr("p", 2)
    if p not in (1, 2):
        raise cx.error(ModelError, f"p must be 1 or 2, got {p}")
    powered = cx.emit("abs", x) if p == 1 else cx.emit("mul", x, x)
    norm = cx.emit("reduce_sum", powered, axes=[axis], keepdims=True)
    norm = norm if p == 1 else cx.emit("sqrt", norm)
    zero = cx.scalar(0, cx.type_of(x).dtype)
    return [cx.emit("where", cx.emit("equal", norm, zero), zero, cx.emit("div", x, norm))]  # 0 / 0: 0
