"""Profiled engines on the GPU: a sequence profile in fp16, CUDA graphs per shape (bounded), and
KV-cache generation against transformers."""
from __future__ import annotations

import pytest
import torch

import trident
from trident.compiler import build_engine, config
from trident.models import MODELS

pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU"),
              pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")]


def test_sequence_profile_fp16_and_graph_lru(monkeypatch):
    build, make = MODELS["bert_tiny"]
    model = build().eval().cuda()
    inputs = lambda b, s: tuple(t.cuda() for t in make(b, seq=s, with_mask=True))  # noqa: E731
    shapes = ((1, 8), (4, 64), (8, 128))
    engine = build_engine(model.half(), "fp16", inputs(4, 64),
                          shapes={"input_ids": shapes, "attention_mask": shapes})
    reference = build().eval().cuda()
    monkeypatch.setattr(config, "CUDA_GRAPH_SHAPES", 3)
    for b, s in ((1, 8), (3, 77), (8, 128), (2, 9), (3, 77), (8, 128), (1, 8), (2, 9), (5, 100)):
        x = inputs(b, s)
        got = engine(*x)[0].float()
        with torch.no_grad():
            want = reference(*x)
        assert ((got - want).norm() / want.norm()).item() < 2e-2
    assert len(engine.captured_shapes) <= 3


def test_generate_on_gpu_matches_transformers():
    transformers = pytest.importorskip("transformers")
    from trident.models.gpt2 import decoder_engine

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=4, n_embd=64, vocab_size=101, n_positions=256)
    hf = transformers.GPT2LMHeadModel(cfg).eval().cuda()
    engine = decoder_engine(hf, max_batch=4, max_seq=32, max_past=128, opt_batch=2, opt_past=32,
                            device="cuda")
    ids = torch.randint(0, 101, (3, 12), device="cuda")
    got = trident.generate(engine, ids, 20)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=20,
                       do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)
