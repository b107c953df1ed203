"""A BERT-style encoder in plain torch: embeddings (word + position + token type) and LayerNorm,
then layers of multi-head self-attention and a GELU feed-forward, each with residual + LayerNorm.

Attention is written out with explicit matmuls and softmax (no fused SDPA), and Q, K and V are
three separate nn.Linear layers: the graph then shows what the compiler has to find itself
(three sibling matmuls on one input for horizontal fusion, the softmax between two batched
matmuls). Module names follow Hugging Face's BertModel where it costs nothing.
"""
from __future__ import annotations

import math

import torch
import torch.nn as nn

from trident.models.common import seeded


class BertEmbeddings(nn.Module):
    def __init__(self, vocab: int, hidden: int, max_len: int, type_vocab: int, eps: float):
        super().__init__()
        self.word_embeddings = nn.Embedding(vocab, hidden)
        self.position_embeddings = nn.Embedding(max_len, hidden)
        self.token_type_embeddings = nn.Embedding(type_vocab, hidden)
        self.LayerNorm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, input_ids: torch.Tensor, token_type_ids: torch.Tensor | None = None):
        # Positions are 0..seq-1, so their embeddings are the table's first rows: a slice of the
        # weight rather than a lookup (also what lets symbolic_trace follow a traced length).
        seq = input_ids.shape[1]
        x = self.word_embeddings(input_ids) + self.position_embeddings.weight[:seq]
        if token_type_ids is None:  # all segment 0: one row, broadcast (no zeros tensor needed)
            x = x + self.token_type_embeddings.weight[0]
        else:
            x = x + self.token_type_embeddings(token_type_ids)
        return self.dropout(self.LayerNorm(x))


class BertSelfAttention(nn.Module):
    def __init__(self, hidden: int, heads: int):
        super().__init__()
        if hidden % heads:
            raise ValueError(f"hidden size {hidden} is not a multiple of {heads} heads")
        self.heads, self.head_dim = heads, hidden // heads
        self.query = nn.Linear(hidden, hidden)
        self.key = nn.Linear(hidden, hidden)
        self.value = nn.Linear(hidden, hidden)
        self.dropout = nn.Dropout(0.1)

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        """[batch, seq, hidden] -> [batch, heads, seq, head_dim]"""
        return x.view(x.shape[0], x.shape[1], self.heads, self.head_dim).permute(0, 2, 1, 3)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        q, k, v = self._heads(self.query(x)), self._heads(self.key(x)), self._heads(self.value(x))
        scores = torch.matmul(q, k.transpose(-1, -2)) / math.sqrt(self.head_dim)
        if mask_bias is not None:
            scores = scores + mask_bias
        probs = self.dropout(torch.softmax(scores, dim=-1))
        ctx = torch.matmul(probs, v).permute(0, 2, 1, 3)
        return ctx.reshape(x.shape[0], x.shape[1], self.heads * self.head_dim)


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.attention = BertSelfAttention(hidden, heads)
        self.attention_output = nn.Linear(hidden, hidden)
        self.attention_norm = nn.LayerNorm(hidden, eps=eps)
        self.intermediate = nn.Linear(hidden, intermediate)
        self.act = nn.GELU()
        self.output = nn.Linear(intermediate, hidden)
        self.output_norm = nn.LayerNorm(hidden, eps=eps)
        self.dropout = nn.Dropout(0.1)

    def forward(self, x: torch.Tensor, mask_bias: torch.Tensor | None = None) -> torch.Tensor:
        a = self.dropout(self.attention_output(self.attention(x, mask_bias)))
        x = self.attention_norm(a + x)
        f = self.dropout(self.output(self.act(self.intermediate(x))))
        return self.output_norm(f + x)


class BertEncoder(nn.Module):
    """input_ids int64 [batch, seq] (optionally attention_mask [batch, seq] of 1 = attend,
    0 = padding, and token_type_ids) -> hidden states [batch, seq, hidden]."""

    def __init__(self, vocab: int = 30522, hidden: int = 768, layers: int = 12, heads: int = 12,
                 intermediate: int = 3072, max_len: int = 512, type_vocab: int = 2,
                 eps: float = 1e-12, seed: int = 0):
        super().__init__()
        with seeded(seed):
            self.embeddings = BertEmbeddings(vocab, hidden, max_len, type_vocab, eps)
            self.layer = nn.ModuleList(BertLayer(hidden, heads, intermediate, eps)
                                       for _ in range(layers))
            self.apply(self._init)
        self.eval()

    @staticmethod
    def _init(m: nn.Module) -> None:
        # BERT's initializer (normal, std 0.02); LayerNorm gets a random affine so a test
        # notices if scale and bias are mixed up.
        if isinstance(m, (nn.Linear, nn.Embedding)):
            nn.init.normal_(m.weight, std=0.02)
            if getattr(m, "bias", None) is not None:
                nn.init.normal_(m.bias, std=0.02)
        elif isinstance(m, nn.LayerNorm):
            nn.init.uniform_(m.weight, 0.8, 1.2)
            nn.init.normal_(m.bias, std=0.05)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                token_type_ids: torch.Tensor | None = None) -> torch.Tensor:
        x = self.embeddings(input_ids, token_type_ids)
        mask_bias = None
        if attention_mask is not None:  # [b, s] -> additive [b, 1, 1, s]; -1e4 is fp16-safe
            mask_bias = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -10000.0
        for layer in self.layer:
            x = layer(x, mask_bias)
        return x


BERT_BASE_VOCAB = 30522
BERT_TINY_VOCAB = 1000


def bert_base(seed: int = 0) -> BertEncoder:
    """BERT-base: 768 hidden, 12 layers, 12 heads, 3072 intermediate (about 110M parameters)."""
    return BertEncoder(BERT_BASE_VOCAB, 768, 12, 12, 3072, 512, seed=seed)


def bert_tiny(seed: int = 0) -> BertEncoder:
    """64 hidden, 2 layers, 2 heads, 256 intermediate, a 1000-word vocabulary."""
    return BertEncoder(BERT_TINY_VOCAB, 64, 2, 2, 256, 128, seed=seed)


def token_inputs(batch: int, seq: int = 128, vocab: int = BERT_BASE_VOCAB,
                 with_mask: bool = False, dtype: torch.dtype | None = None) -> tuple:
    """Random token ids (and, with_mask, an attention mask with some padding at the end).
    `dtype` is accepted so every model's input function takes the same keywords; ids are int64."""
    ids = torch.randint(0, vocab, (batch, seq))
    if not with_mask:
        return (ids,)
    lengths = torch.randint(max(1, seq // 2), seq + 1, (batch, 1))
    mask = (torch.arange(seq).unsqueeze(0) < lengths).to(torch.int64)
    return ids, mask
