"""nn.MultiheadAttention as IR: projections, one `attention` node, the output projection.

Dynamo leaves `F.multi_head_attention_forward` in the graph it hands a backend (torchvision's ViT,
nn.TransformerEncoderLayer), and torch.export may leave `aten._native_multi_head_attention` (the
module's inference fast path). Both are written out here as what they compute, batch-first:

    x [N, L, E] -> q, k, v = x W_q^T + b_q, ...          (three matmuls; merge_sibling_matmuls
                                                           makes one GEMM of them when x is shared)
    q [N, L, E] -> reshape [N, L, H, D] -> transpose [N, H, L, D]     (views: no copies)
    attention(q, k, v, mask, scale = 1/sqrt(D)) [N, H, L, D]          (one fused kernel)
    -> transpose [N, L, H, D] -> reshape [N, L, E] -> out projection

so the attention is one fused kernel that reads the head split through strides. With
need_weights=True the averaged attention weights are a result, so the scores are spelled out
(matmul, softmax, matmul) instead.

Only the converter context's `emit` / `shape` / `dtype` are used (the fx frontend passes its Ctx),
so this module does not import the frontend back.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch

from trident.compiler.errors import ShapeError, UnsupportedError


@dataclass
class Projections:
    """In-projection weights [E, E] (or None: no projection) and biases, then the out projection."""
    q: Any
    k: Any
    v: Any
    q_bias: Any = None
    k_bias: Any = None
    v_bias: Any = None
    out: Any = None
    out_bias: Any = None

    @staticmethod
    def packed(in_weight, in_bias, out_weight, out_bias, embed: int) -> "Projections":
        """From nn.MultiheadAttention's packed [3E, E] in_proj_weight and [3E] in_proj_bias."""
        ws = [_rows(in_weight, i * embed, (i + 1) * embed) for i in range(3)]
        bs = [None if in_bias is None else _rows(in_bias, i * embed, (i + 1) * embed) for i in range(3)]
        return Projections(*ws, *bs, out=out_weight, out_bias=out_bias)


@dataclass
class Masks:
    """torch's MultiheadAttention masks: bool True = not attended, float = added to the scores."""
    key_padding: Any = None   # [N, S] (or [S] unbatched)
    attn: Any = None          # [L, S] or [N * H, L, S]
    causal: bool = False      # no mask tensor needed: query i sees keys j <= i


def _rows(t, start: int, end: int):
    """Rows start:end of a constant weight (a slice of a run-time one is not supported)."""
    if not isinstance(t, torch.Tensor):
        raise UnsupportedError("multi-head attention with a packed in-projection computed at run time")
    return t[start:end]


def _cast_const(cx, t, dtype: torch.dtype):
    if isinstance(t, torch.Tensor):
        return t.to(dtype)
    return t if cx.dtype(t) == dtype else cx.emit("cast", [t], dtype=dtype)


def _linear(cx, x, weight, bias):
    dtype = cx.dtype(x)
    y = cx.emit("matmul", [x, cx.emit("transpose", [_cast_const(cx, weight, dtype)], perm=[1, 0])])
    return y if bias is None else cx.emit("add", [y, _cast_const(cx, bias, dtype)])


def _heads(cx, x, heads: int):
    """[N, L, E] -> [N, H, L, D] (a reshape and a transpose: views of x)."""
    n, length, embed = cx.shape(x)
    x = cx.emit("reshape", [x], shape=[n, length, heads, embed // heads])
    return cx.emit("transpose", [x], perm=[0, 2, 1, 3])


def _merge_heads(cx, x):
    """[N, H, L, D] -> [N, L, H * D]."""
    n, heads, length, dim = cx.shape(x)
    x = cx.emit("transpose", [x], perm=[0, 2, 1, 3])
    return cx.emit("reshape", [x], shape=[n, length, heads * dim])


def _mask_parts(cx, masks: Masks, n: int, heads: int, lq: int, lk: int) -> list:
    """Each mask reshaped to broadcast against the scores [N, H, L, S]."""
    parts = []
    if masks.key_padding is not None:
        if cx.shape(masks.key_padding) not in ((n, lk), (lk,)):
            raise ShapeError(f"key_padding_mask of shape {list(cx.shape(masks.key_padding))}; expected [{n}, {lk}]")
        parts.append(cx.emit("reshape", [masks.key_padding], shape=[n, 1, 1, lk]))
    if masks.attn is not None:
        shape = cx.shape(masks.attn)
        if shape == (lq, lk):
            parts.append(cx.emit("reshape", [masks.attn], shape=[1, 1, lq, lk]))
        elif shape == (n * heads, lq, lk):
            parts.append(cx.emit("reshape", [masks.attn], shape=[n, heads, lq, lk]))
        else:
            raise ShapeError(f"attn_mask of shape {list(shape)}; expected [{lq}, {lk}] or [{n * heads}, {lq}, {lk}]")
    return parts


def _combined_mask(cx, parts: list, dtype: torch.dtype, additive: bool):
    """One mask for the attention node: a bool keep-mask when every part is bool (and additive is
    not asked for), else the sum of the parts as additive masks (bool True -> -inf), as torch
    merges them."""
    if not parts:
        return None
    if not additive and all(cx.dtype(p) == torch.bool for p in parts):
        keep = [cx.emit("not", [p]) for p in parts]
        out = keep[0]
        for p in keep[1:]:
            out = cx.emit("logical_and", [out, p])
        return out
    floats = []
    for p in parts:
        if cx.dtype(p) == torch.bool:
            p = cx.emit("where", [p, torch.tensor(-math.inf, dtype=dtype), torch.tensor(0.0, dtype=dtype)])
        floats.append(_cast_const(cx, p, dtype))
    out = floats[0]
    for p in floats[1:]:
        out = cx.emit("add", [out, p])
    return out


def multi_head_attention(cx, query, key, value, heads: int, proj: Projections, masks: Masks,
                         need_weights: bool = False, average_weights: bool = True):
    """Batch-first multi-head attention over q [N, L, E], k and v [N, S, E]: (output [N, L, E],
    weights [N, L, S] averaged over heads or [N, H, L, S], or None unless need_weights)."""
    n, lq, embed = cx.shape(query)
    lk = cx.shape(key)[1]
    if embed % heads:
        raise ShapeError(f"embedding size {embed} does not split into {heads} heads")
    q, k, v = (_heads(cx, _linear(cx, x, w, b), heads) for x, w, b in
               ((query, proj.q, proj.q_bias), (key, proj.k, proj.k_bias), (value, proj.v, proj.v_bias)))
    scale = 1.0 / math.sqrt(embed // heads)
    dtype = cx.dtype(query)
    parts = _mask_parts(cx, masks, n, heads, lq, lk)
    if need_weights:
        out, weights = _explicit_attention(cx, q, k, v, scale, _combined_mask(cx, parts, dtype, True), masks.causal)
        if average_weights:
            weights = cx.emit("reduce_mean", [weights], axes=[1], keepdims=False)
    else:
        mask = _combined_mask(cx, parts, dtype, False)
        inputs = [q, k, v] + ([] if mask is None else [mask])
        out, weights = cx.emit("attention", inputs, scale=scale, **({"causal": "top_left"} if masks.causal else {})), None
    return _linear(cx, _merge_heads(cx, out), proj.out, proj.out_bias), weights


def _explicit_attention(cx, q, k, v, scale: float, mask, causal: bool):
    """softmax(q k^T * scale + mask) and its product with v, the scores kept (they are a result)."""
    scores = cx.emit("matmul", [q, cx.emit("transpose", [k], perm=[0, 1, 3, 2])])
    scores = cx.emit("mul", [scores, torch.tensor(scale, dtype=cx.dtype(q))])
    if causal:
        lq, lk = cx.shape(scores)[-2:]
        hidden = torch.ones(lq, lk, dtype=torch.bool).triu(1)
        scores = cx.emit("where", [hidden, torch.tensor(-math.inf, dtype=cx.dtype(q)), scores])
    if mask is not None:
        scores = cx.emit("add", [scores, mask])
    weights = cx.emit("softmax", [scores], axis=3)
    return cx.emit("matmul", [weights, v]), weights
