"""Converters of ONNX ops of transformer exports: Attention, RotaryEmbedding, TensorScatter, SwiGLU."""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter


@converter("RotaryEmbedding", since=23)
def _rotary_embedding(cx):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    num_heads = cx.int_attr("num_heads", 0)
    if rank not in (3, 4) or (rank == 3 and not num_heads):
        raise cx.error(ShapeError, f"input {cx.type_of(x)} must be 4-D, or 3-D with num_heads")
    inputs = [x, cx.input(1), cx.input(2)] + ([cx.input(3)] if cx.has(3) else [])
    return [cx.emit("rotary_embedding", *inputs, num_heads=num_heads,
                    rotary_embedding_dim=cx.int_attr("rotary_embedding_dim", 0),
                    interleaved=cx.flag("interleaved", 0))]


@converter("TensorScatter", since=24)
def _tensor_scatter(cx):
    cache, update = cx.input(0), cx.input(1)
    axis = cx.axis(cx.int_attr("axis", -2), cx.type_of(cache).rank)
    if axis == 0:
        raise cx.error(ModelError, "axis must not be the batch dim (0)")
    mode = cx.str_attr("mode", "linear")
    if mode not in ("linear", "circular"):
        raise cx.error(ModelError, f"mode must be linear or circular, got {mode!r}")
    inputs = [cache, update] + ([cx.input(2)] if cx.has(2) else [])
    return [cx.emit("tensor_scatter", *inputs, axis=axis, circular=mode == "circular")]


@converter("SwiGLU", since=28)
def _swiglu(cx):
    """Swish(A) * B: two elementwise ops that fuse."""
    gate = cx.emit("swish", cx.input(0), alpha=cx.float_attr("alpha", 1.0))
    return [cx.emit("mul", gate, cx.input(1))]


@converter("Attention", since=23)
def _attention(cx):
    """ONNX Attention (opset 23+) as one IR attention node. 3-D Q/K/V [B, S, heads * D] are split
    into heads around it (views); past_key / past_value are concatenated in front of K / V (the
    present outputs). Causal masking is bottom-right aligned once a cache is given, top-left else."""
    for name, default in (("softcap", 0.0), ("left_window_size", -1), ("right_window_size", -1)):
        if cx.attr(name, default) != default:
            raise cx.error(UnsupportedError, f"attribute {name}={cx.attr(name)}")
    if len(cx.proto.output) > 3 and cx.proto.output[3]:
        raise cx.error(UnsupportedError, "output qk_matmul_output (a debug output of the scores)")
    if cx.has(6):
        raise cx.error(UnsupportedError, "input nonpad_kv_seqlen (an external KV cache)")
    if cx.has(4) != cx.has(5):
        raise cx.error(ModelError, "past_key and past_value must be given together")
    q, k, v = (cx.input(i) for i in range(3))
    rank = cx.type_of(q).rank
    if rank == 3:
        q = _split_heads(cx, q, "q_num_heads")
        k, v = (_split_heads(cx, x, "kv_num_heads") for x in (k, v))
    elif rank != 4:
        raise cx.error(ShapeError, f"Q must be 3-D or 4-D, got {cx.type_of(q)}")
    dtype = cx.type_of(q).dtype
    if cx.type_of(v).dtype != dtype:
        v = cx.emit("cast", v, dtype=dtype)
    past = 0
    if cx.has(4):
        past = cx.static_shape(cx.input(4), "past_key")[2]
        k = cx.emit("concat", cx.input(4), k, axis=2)
        v = cx.emit("concat", cx.input(5), v, axis=2)
    inputs = [q, k, v]
    if cx.has(3):
        mask = cx.input(3)
        t = cx.type_of(mask).dtype
        inputs.append(mask if t in (torch.bool, dtype) else cx.emit("cast", mask, dtype=dtype))
    attrs = {"scale": cx.float_attr("scale", 1.0 / math.sqrt(cx.type_of(q).shape[-1] or 1))}
    if cx.flag("is_causal", 0):
        attrs["causal"] = _causal_alignment(cx, past, cx.type_of(q).shape[-2], cx.type_of(k).shape[-2])
    y = cx.emit("attention", *inputs, **attrs)
    if rank == 3:
        b, h, s, d = cx.type_of(y).shape
        y = cx.reshape(cx.emit("transpose", y, perm=[0, 2, 1, 3]), [b, s, h * d])
    return [y, k if cx.has(4) else None, v if cx.has(4) else None]


def _split_heads(cx: NodeContext, x: str, heads_attr: str) -> str:
    """[B, S, heads * D] -> [B, heads, S, D] (a reshape and a transpose: views)."""
    heads = cx.int_attr(heads_attr)
    b, s, hidden = cx.static_shape(x, "Attention with 3-D inputs")
    if not heads or hidden % heads:
        raise cx.error(ModelError, f"3-D inputs need {heads_attr} dividing the hidden size {hidden}, "
                                   f"got {heads}")
    return cx.emit("transpose", cx.reshape(x, [b, s, heads, hidden // heads]), perm=[0, 2, 1, 3])


def _causal_alignment(cx: NodeContext, past: int, lq: int, lk: int) -> str:
    """ONNX's causal diagonal sits at offset past_sequence_length: top-left without a cache,
    bottom-right when the new keys are the new queries (a decoder step)."""
    if past == 0:
        return "top_left"
    if past == lk - lq:
        return "bottom_right"
    raise cx.error(UnsupportedError, f"causal attention over a {past}-token cache with {lq} queries "
                                     f"and {lk} keys (the diagonal fits neither alignment)")
