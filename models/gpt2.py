"""A GPT-2 decoder step with its KV cache as tensors, from a transformers GPT2LMHeadModel.

transformers keeps the cache in Cache objects; an engine takes tensors. `DecoderStep` runs the
model's own modules (embeddings, each block's LayerNorms, c_attn / c_proj / MLP, the LM head)
with the cache as one input `past` [layers, 2, batch, heads, past, head_dim] and returns the
grown cache `present` beside the logits. Attention is written out (q kᵀ, a causal mask aligned
to the bottom right, softmax, · v): trident's attention pass turns it into the fused kernel
with `causal="bottom_right"`, which for a query of length 1 sees every key.

`decoder_engine(hf_model, ...)` builds the engine with a profile on batch, seq and past (one
engine for the prompt and every later token); `trident.generate` drives it.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn


class DecoderStep(nn.Module):
    def __init__(self, hf_model: nn.Module):
        super().__init__()
        cfg = hf_model.config
        self.heads, self.hidden = cfg.n_head, cfg.n_embd
        self.head_dim = self.hidden // self.heads
        t = hf_model.transformer
        self.wte, self.wpe, self.blocks, self.ln_f = t.wte, t.wpe, t.h, t.ln_f
        self.lm_head = hf_model.lm_head

    def _split(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim]"""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).transpose(1, 2)

    def forward(self, input_ids: torch.Tensor, position_ids: torch.Tensor, past: torch.Tensor):
        seq, cached = input_ids.shape[1], past.shape[4]
        x = self.wte(input_ids) + self.wpe(position_ids)
        # Query i (absolute position cached + i) sees keys 0 .. cached + i.
        keep = torch.ones(seq, cached + seq, dtype=torch.bool, device=x.device).tril(cached)
        presents = []
        for i, block in enumerate(self.blocks):
            q, k, v = block.attn.c_attn(block.ln_1(x)).split(self.hidden, dim=2)
            k = torch.cat([past[i, 0], self._split(k)], dim=2)
            v = torch.cat([past[i, 1], self._split(v)], dim=2)
            presents.append(torch.stack([k, v]))
            scores = torch.matmul(self._split(q), k.transpose(-1, -2)) / math.sqrt(self.head_dim)
            probs = torch.softmax(torch.where(keep, scores, float("-inf")), dim=-1)
            a = torch.matmul(probs, v).transpose(1, 2).reshape(x.shape[0], seq, self.hidden)
            x = x + block.attn.c_proj(a)
            x = x + block.mlp(block.ln_2(x))
        return self.lm_head(self.ln_f(x)), torch.stack(presents)


def decoder_inputs(hf_model: nn.Module, batch: int, seq: int, cached: int,
                   dtype: torch.dtype = torch.float32, device=None) -> tuple:
    cfg = hf_model.config
    ids = torch.randint(0, cfg.vocab_size, (batch, seq), device=device)
    positions = (torch.arange(seq, device=device) + cached).expand(batch, seq).contiguous()
    past = torch.randn(cfg.n_layer, 2, batch, cfg.n_head, cached, cfg.n_embd // cfg.n_head,
                       dtype=dtype, device=device)
    return ids, positions, past


def decoder_engine(hf_model: nn.Module, precision: str = "fp32", *, max_batch: int = 1,
                   max_seq: int = 128, max_past: int = 1024, opt_batch: int | None = None,
                   opt_seq: int = 1, opt_past: int | None = None, device=None, **options):
    """One engine for prompts of 1 .. max_seq tokens and steps over a cache of 0 .. max_past."""
    from trident.compiler import build_engine

    cfg = hf_model.config
    layers, heads, head_dim = cfg.n_layer, cfg.n_head, cfg.n_embd // cfg.n_head
    opt_batch = opt_batch or max_batch
    opt_past = opt_past if opt_past is not None else max_past // 2
    step = DecoderStep(hf_model).eval()
    dtype = torch.float16 if precision == "fp16" else torch.float32
    # Traced where the model's weights are (an embedding of CPU ids in CUDA weights cannot trace).
    examples = decoder_inputs(hf_model, opt_batch, opt_seq, opt_past, dtype,
                              device=next(hf_model.parameters()).device)
    tokens = ((1, 1), (opt_batch, opt_seq), (max_batch, max_seq))
    shapes = {"input_ids": tokens, "position_ids": tokens,
              "past": ((layers, 2, 1, heads, 0, head_dim), (layers, 2, opt_batch, heads, opt_past, head_dim),
                       (layers, 2, max_batch, heads, max_past, head_dim))}
    names = {"input_ids": {0: "batch", 1: "seq"}, "position_ids": {0: "batch", 1: "seq"},
             "past": {2: "batch", 4: "past"}}
    return build_engine(step, precision, examples, shapes=shapes, dim_names=names, device=device,
                        **options)


__all__ = ["DecoderStep", "decoder_engine", "decoder_inputs"]
