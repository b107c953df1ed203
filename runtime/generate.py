"""Autoregressive generation with a decoder-step engine and its KV cache.

The engine is one decoder step (trident.models.gpt2.decoder_engine builds one): inputs
(input_ids [batch, seq], position_ids [batch, seq], past [layers, 2, batch, heads, past, head_dim]),
outputs (logits [batch, seq, vocab], present [layers, 2, batch, heads, past + seq, head_dim]),
with an optimization profile on batch, seq and past. The prompt runs as one step (seq n, past 0),
then each new token as a step of seq 1 over the growing cache: one engine for both.
"""
from __future__ import annotations

import torch

from trident.compiler.errors import InputError


def _pick(logits: torch.Tensor, temperature: float | None, top_k: int | None,
          generator: torch.Generator | None) -> torch.Tensor:
    """The next token of each row: the most likely (greedy), or sampled from the softmax at
    `temperature` over the top_k most likely."""
    if temperature is None or temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if top_k is not None:
        k = min(top_k, logits.shape[-1])
        kth = torch.topk(logits, k, dim=-1).values[:, -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _cache_spec(engine) -> tuple[int, int, int, torch.dtype]:
    """(layers, heads, head_dim, dtype) of the engine's `past` input."""
    if len(engine.inputs) != 3 or len(engine.outputs) != 2:
        raise InputError(f"generate: expected a decoder-step engine with inputs (input_ids, "
                         f"position_ids, past) and outputs (logits, present); this one has "
                         f"{engine.inputs} -> {engine.outputs}")
    _, shape, dtype = engine.input_specs()[2]
    if len(shape) != 6 or shape[1] != 2:
        raise InputError(f"generate: the past input should be [layers, 2, batch, heads, past, "
                         f"head_dim], got shape {shape}")
    return shape[0], shape[3], shape[5], dtype


@torch.no_grad()
def generate(engine, input_ids: torch.Tensor, max_new_tokens: int,
             temperature: float | None = None, top_k: int | None = None,
             generator: torch.Generator | None = None) -> torch.Tensor:
    """The prompt `input_ids` [batch, n] followed by `max_new_tokens` generated tokens (greedy
    by default; with `temperature`, sampled, from the `top_k` most likely if given)."""
    if input_ids.dim() != 2 or input_ids.shape[1] == 0:
        raise InputError(f"generate: input_ids should be [batch, prompt length >= 1], got "
                         f"{tuple(input_ids.shape)}")
    layers, heads, head_dim, dtype = _cache_spec(engine)
    batch, n = input_ids.shape
    device = engine.device
    ids = input_ids.to(device)
    tokens = [ids]
    past = torch.empty(layers, 2, batch, heads, 0, head_dim, dtype=dtype, device=device)
    positions = torch.arange(n, device=device).expand(batch, n)
    for _ in range(max_new_tokens):
        logits, present = engine(ids, positions.to(ids.dtype), past)
        token = _pick(logits[:, -1], temperature, top_k, generator)[:, None].to(ids.dtype)
        tokens.append(token)
        past = present.clone()   # the engine may reuse its output buffers at the next call
        start = past.shape[4]
        ids = token
        positions = torch.full((batch, 1), start, device=device)
    return torch.cat(tokens, dim=1)


__all__ = ["generate"]
