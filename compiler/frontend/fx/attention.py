"""Converters of attention: torch's scaled_dot_product_attention (and the backend kernels dynamo
and torch.export may leave instead) as one IR `attention` node, and nn.MultiheadAttention as
IR: projections, one `attention` node, the output projection.

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

multi_head_attention and its helpers use only the converter context's `emit` / `shape` /
`dtype`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.context import Ctx, Missing
from trident.compiler.frontend.fx.helpers import _reshape, _transpose
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ============================================================================ attention ====
@converts(aten.scaled_dot_product_attention.default, F.scaled_dot_product_attention)
def _sdpa(cx: Ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
          scale=None, enable_gqa=False):
    """One IR attention node (torch's is_causal is top-left aligned)."""
    if dropout_p:
        raise UnsupportedError(f'fx node "{cx.node_name}": attention with dropout_p={dropout_p}')
    heads, kv_heads = cx.shape(query)[-3:-2], cx.shape(key)[-3:-2]
    # One K/V head broadcasts over every query head (torch broadcasts SDPA's batch dims; Falcon's
    # multi-query attention passes it so): grouped-query attention with one group.
    if heads != kv_heads and not enable_gqa and kv_heads != (1,):
        raise ShapeError(f'fx node "{cx.node_name}": query has {heads} heads, key {kv_heads}; '
                         f"different head counts need enable_gqa=True")
    scale = 1.0 / math.sqrt(cx.shape(query)[-1]) if scale is None else float(scale)
    inputs = [query, key, value] + ([] if attn_mask is None else [attn_mask])
    return cx.emit("attention", inputs, scale=scale, **({"causal": "top_left"} if is_causal else {}))


# What dynamo and torch.export may leave in an inference graph instead: one backend's kernel,
# whose extra results (log-sum-exp, RNG state ...) an inference graph never reads.
@converts(aten._scaled_dot_product_flash_attention_for_cpu.default)
def _sdpa_cpu(cx: Ctx, query, key, value, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    return (_sdpa(cx, query, key, value, attn_mask, dropout_p, is_causal, scale), Missing("attention log-sum-exp"))


@converts(aten._scaled_dot_product_flash_attention.default)
def _sdpa_flash(cx: Ctx, query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *,
                scale=None):
    out = _sdpa(cx, query, key, value, None, dropout_p, is_causal, scale)
    return (out,) + tuple(Missing("flash attention's auxiliary results") for _ in range(8))


@converts(aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_cudnn_attention.default)
def _sdpa_biased(cx: Ctx, query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False,
                 return_debug_mask=False, *, scale=None):
    out = _sdpa(cx, query, key, value, attn_bias, dropout_p, is_causal, scale)
    return (out,) + tuple(Missing("attention's auxiliary results") for _ in range(8))


# ======================================================================= multi-head attention ====
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


def _linear(cx, x, weight, bias):
    dtype = cx.dtype(x)
    y = cx.emit("matmul", [x, cx.emit("transpose", [cx.cast(weight, dtype)], perm=[1, 0])])
    return y if bias is None else cx.emit("add", [y, cx.cast(bias, dtype)])


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
        floats.append(cx.cast(p, dtype))
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


def _mha_batch_first(cx: Ctx, x, batched: bool):
    """A seq-first [L, N, E] operand (or an unbatched [L, E] one) as [N, L, E] (a view)."""
    return _transpose(cx, x, [1, 0, 2]) if batched else _reshape(cx, x, [1] + list(cx.shape(x)))


@converts(F.multi_head_attention_forward)
def _mha_forward(cx: Ctx, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True,
                 key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
                 q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
                 average_attn_weights=True, is_causal=False):
    """torch's functional multi-head attention (what dynamo leaves of nn.MultiheadAttention)."""
    where = f'fx node "{cx.node_name}"'
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise UnsupportedError(f"{where}: multi-head attention with bias_k/bias_v, add_zero_attn or static_k/v")
    if training and dropout_p:
        raise UnsupportedError(f"{where}: multi-head attention with dropout in training mode")
    if cx.shape(query)[-1] != embed_dim_to_check:
        raise ShapeError(f"{where}: query has embedding size {cx.shape(query)[-1]}, expected {embed_dim_to_check}")
    batched = cx.rank(query) == 3
    if use_separate_proj_weight:
        e = embed_dim_to_check
        biases = [None] * 3 if in_proj_bias is None else [in_proj_bias[i * e:(i + 1) * e] for i in range(3)]
        proj = Projections(q_proj_weight, k_proj_weight, v_proj_weight, *biases, out_proj_weight, out_proj_bias)
    else:
        proj = Projections.packed(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, embed_dim_to_check)
    # torch uses the causal hint alone only here; otherwise the given attn_mask is the causal mask
    causal = bool(is_causal) and key_padding_mask is None and not need_weights
    masks = Masks(key_padding_mask, None if causal else attn_mask, causal)
    q, k, v = (_mha_batch_first(cx, x, batched) for x in (query, key, value))
    out, weights = multi_head_attention(cx, q, k, v, int(num_heads), proj, masks, bool(need_weights),
                                        bool(average_attn_weights))
    if batched:
        return _transpose(cx, out, [1, 0, 2]), weights
    return _reshape(cx, out, cx.shape(out)[1:]), None if weights is None else _reshape(cx, weights, cx.shape(weights)[1:])


@converts(aten._native_multi_head_attention.default)
def _native_mha(cx: Ctx, query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
                mask=None, need_weights=True, average_attn_weights=True, mask_type=None):
    """nn.MultiheadAttention's inference fast path, batch-first. mask_type: 0 an [L, S] attention
    mask, 1 a key padding mask [N, S], 2 a mask over [N, H, L, S] (taken as given)."""
    proj = Projections.packed(qkv_weight, qkv_bias, proj_weight, proj_bias, int(embed_dim))
    masks = Masks()
    if mask is not None:
        kind = mask_type if mask_type is not None else (1 if cx.rank(mask) == 2 and cx.shape(mask)[0] == cx.shape(query)[0]
                                                        and cx.shape(mask)[0] != cx.shape(query)[1] else 0)
        if kind == 1:
            masks.key_padding = mask
        elif kind == 0:
            masks.attn = mask
        else:
            n, h = cx.shape(query)[0], int(num_head)
            masks.attn = _reshape(cx, mask, [n * h] + list(cx.shape(mask)[-2:]))
    out, weights = multi_head_attention(cx, query, key, value, int(num_head), proj, masks, bool(need_weights),
                                        bool(average_attn_weights))
    return out, (Missing("multi-head attention weights (need_weights=False)") if weights is None else weights)
