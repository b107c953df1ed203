"""Ops of transformer exports beyond matmul and softmax: fused attention, rotary position
embeddings (RoPE) and the KV-cache write (TensorScatter; RoPE and it run through torch)."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from trident.compiler.ops.common import checked_indices
from trident.compiler.ops.registry import Kind, op


@op("rotary_embedding", Kind.OPAQUE)
def rotary_embedding(x, cos_cache, sin_cache, position_ids=None, *, num_heads: int = 0,
                     rotary_embedding_dim: int = 0, interleaved: bool = False):
    """ONNX RotaryEmbedding: x [batch, heads, seq, head] or [batch, seq, heads * head]; the first
    rotary_embedding_dim features of each head rotate by the cached angles of their position
    (pairs of halves, or of neighbours when interleaved)."""
    four_d = x.dim() == 4
    y = x.transpose(1, 2) if four_d else x.reshape(x.shape[0], x.shape[1], num_heads, -1)
    dim = rotary_embedding_dim or y.shape[-1]
    if position_ids is not None:
        rows = checked_indices(position_ids, cos_cache.shape[0], "RotaryEmbedding")
        cos_cache, sin_cache = cos_cache[rows], sin_cache[rows]
    cos, sin = cos_cache.unsqueeze(2), sin_cache.unsqueeze(2)  # [batch, seq, 1, dim / 2]
    rotate, keep = y[..., :dim], y[..., dim:]
    x1, x2 = (rotate[..., 0::2], rotate[..., 1::2]) if interleaved else rotate.chunk(2, -1)
    real, imag = cos * x1 - sin * x2, sin * x1 + cos * x2
    rotated = torch.stack([real, imag], -1).flatten(-2) if interleaved else torch.cat([real, imag], -1)
    out = torch.cat([rotated, keep], -1).to(x.dtype)
    return out.transpose(1, 2) if four_d else out.reshape(x.shape)


@op("tensor_scatter", Kind.OPAQUE)
def tensor_scatter(cache, update, write_indices=None, *, axis: int, circular: bool = False):
    """ONNX TensorScatter: `update` written into `cache` along the sequence axis, starting at each
    batch entry's write index (wrapping around when circular)."""
    steps, size = update.shape[axis], cache.shape[axis]
    batch = cache.shape[0]
    start = torch.zeros(batch, dtype=torch.int64, device=cache.device) if write_indices is None \
        else write_indices.to(torch.int64)
    position = start[:, None] + torch.arange(steps, device=cache.device)[None, :]  # [batch, steps]
    position = torch.remainder(position, size) if circular else \
        checked_indices(position, size, "TensorScatter")
    shape = [batch] + [1] * (cache.dim() - 1)
    shape[axis] = steps
    index = position.reshape(shape).expand(update.shape)
    return cache.scatter(axis, index, update)


CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


@op("attention", Kind.ATTENTION)
def attention(q, k, v, mask=None, *, scale: float, causal: str | None = None, zero_nan_rows: bool = False):
    """softmax(q k^T * scale + mask) v with torch SDPA's semantics (q [..., Lq, D], k [..., Lk, D],
    v [..., Lk, DV]). mask: bool (True = attend) or additive, broadcast to the scores. K and V may
    have fewer heads (dim -3) than q, each shared by a group of query heads (GQA). causal: None,
    "top_left" (torch's is_causal: query i sees keys j <= i) or "bottom_right" (j <= i + Lk - Lq,
    a decoder over a KV cache). A query that sees no key gives zeros, as torch does.
    zero_nan_rows: the `where(isnan(p), 0, p)` torch's exporters write after the softmax of a
    boolean-masked SDPA. A query whose probabilities are NaN (a NaN or +inf among the scores of the
    keys it sees) gets what the guard then gives: 0 * V summed over the keys (0, or NaN in a column
    where V holds a NaN or inf)."""
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if causal is not None and causal not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal must be None or one of {CAUSAL_ALIGNMENTS}, got {causal!r}")
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    if causal is not None:
        lq, lk = q.shape[-2], k.shape[-2]
        offset = 0 if causal == "top_left" else lk - lq
        visible = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(offset)
        if mask is None:
            mask = visible
        elif mask.dtype == torch.bool:
            mask = mask & visible
        else:
            mask = mask.masked_fill(~visible, -math.inf)
    gqa = q.dim() >= 3 and q.shape[-3] != k.shape[-3]
    if zero_nan_rows:
        return _guarded_attention(q, k, v, mask, scale, gqa)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)


def _guarded_attention(q, k, v, mask, scale: float, gqa: bool):
    """The exporters' chain in fp32 at least: softmax(q k^T * scale + mask) (a boolean mask hides
    the scores it masks), where(isnan(p), 0, p), p @ v (where 0 * NaN stays NaN)."""
    if gqa:
        k, v = (x.repeat_interleave(q.shape[-3] // x.shape[-3], dim=-3) for x in (k, v))
    acc = torch.promote_types(q.dtype, torch.float32)
    scores = (q.to(acc) @ k.to(acc).transpose(-1, -2)) * scale
    if mask is not None and mask.dtype == torch.bool:
        scores = scores.masked_fill(~mask, -math.inf)
    elif mask is not None:
        scores = scores + mask.to(acc)
    p = torch.softmax(scores, -1)
    return (torch.where(torch.isnan(p), 0.0, p) @ v.to(acc)).to(q.dtype)
