"""Attention in real model definitions: a tiny transformers BERT (its SDPA and its eager attention)
through build_engine, via fx and via ONNX, and an INT8 engine, whose attention stays one fp16 kernel."""

import pytest
import torch
import torch.nn as nn

from trident.compiler.autotune import problem_of
from trident.compiler.build import BuildTrace, build_engine  # before transformers: it imports triton
from trident.compiler.testing import export_onnx, run_engine

transformers = pytest.importorskip("transformers")


class BertLayers(nn.Module):
    """transformers' BertModel embeddings and layers, with the padding mask made additive here (the
    mask builder of transformers 5 uses ops the frontends do not cover; the layers are the point)."""

    def __init__(self, attention: str, layers: int = 2):
        super().__init__()
        config = transformers.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=layers,
                                         num_attention_heads=2, intermediate_size=64, max_position_embeddings=64,
                                         attn_implementation=attention)
        torch.manual_seed(0)
        self.bert = transformers.BertModel(config).eval()

    def forward(self, ids, keep):
        x = self.bert.embeddings(input_ids=ids, token_type_ids=torch.zeros_like(ids))
        bias = (1.0 - keep[:, None, None, :].to(x.dtype)) * torch.finfo(x.dtype).min
        for layer in self.bert.encoder.layer:
            x = layer(x, attention_mask=bias)
            x = x[0] if isinstance(x, tuple) else x
        return x


def token_inputs(seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 100, (2, 11), generator=g)
    keep = torch.ones(2, 11, dtype=torch.int64)
    keep[1, 7:] = 0  # a padded sequence
    return ids, keep


onnx_of = export_onnx


def attention_nodes(trace):
    return [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]


@pytest.mark.parametrize("attention,via", [("sdpa", "fx"), ("eager", "onnx")])
def test_transformers_bert_attention_is_one_kernel_per_layer(attention, via):
    model = BertLayers(attention).eval()
    inputs = token_inputs()
    trace = BuildTrace()
    engine = build_engine(model if via == "fx" else onnx_of(model, inputs), "fp32",
                          example_inputs=inputs if via == "fx" else None, trace=trace)
    assert len(attention_nodes(trace)) == 2
    assert not any(n.op == "softmax" for n in trace.after_pass[-1][1].nodes)
    assert sum(problem_of(s.source).get("template") == "attention" for s in engine.plan.kernel_steps()) == 2
    fresh = token_inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, *fresh)[0], model(*fresh), rtol=1e-4, atol=1e-4)


class Block(nn.Module):
    """A pre-norm transformer block with its projections as int8 candidates."""

    def __init__(self, dim=32, heads=2):
        super().__init__()
        self.heads = heads
        self.norm = nn.LayerNorm(dim)
        self.q, self.k, self.v, self.o = (nn.Linear(dim, dim) for _ in range(4))
        self.ff = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))

    def forward(self, x):
        b, s, d = x.shape
        h = self.norm(x)
        q, k, v = (p(h).reshape(b, s, self.heads, -1).transpose(1, 2) for p in (self.q, self.k, self.v))
        ctx = torch.nn.functional.scaled_dot_product_attention(q, k, v)
        x = x + self.o(ctx.transpose(1, 2).reshape(b, s, d))
        return x + self.ff(x)


def test_int8_engine_keeps_attention_in_fp16():
    model = Block().eval()
    g = torch.Generator().manual_seed(2)
    calibration = [torch.randn(4, 16, 32, generator=g) for _ in range(2)]
    trace = BuildTrace()
    engine = build_engine(model, "int8", (calibration[0],), calibration=calibration, trace=trace)
    final = trace.after_pass[-1][1]
    (node,) = attention_nodes(trace)
    assert all(final.types[i].dtype == torch.float16 for i in node.inputs)
    assert any(n.op == "qmatmul" for n in final.nodes)  # the projections did go int8
    x = torch.randn(4, 16, 32, generator=g)
    with torch.no_grad():
        ref = model(x)
    assert ((run_engine(engine, x)[0].float() - ref).norm() / ref.norm()).item() < 5e-2
