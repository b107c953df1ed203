"""A GPT-2 decoder step with its KV cache as one engine (batch, seq and past dynamic), and
trident.generate against transformers' own generate (greedy, fp32, tiny config)."""
from __future__ import annotations

import pytest
import torch

import trident
from trident.compiler import InputError

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning", "ignore::DeprecationWarning")


@pytest.fixture(scope="module")
def gpt2():
    from trident.models.gpt2 import decoder_engine

    torch.manual_seed(0)
    cfg = transformers.GPT2Config(n_layer=2, n_head=2, n_embd=32, vocab_size=97, n_positions=64)
    hf = transformers.GPT2LMHeadModel(cfg).eval()
    engine = decoder_engine(hf, max_batch=3, max_seq=16, max_past=40, opt_batch=2, opt_seq=1,
                            opt_past=8)
    return hf, engine


def test_one_engine_for_prompt_and_steps(gpt2):
    from trident.models.gpt2 import DecoderStep, decoder_inputs

    hf, engine = gpt2
    assert {"batch", "seq", "past"} <= set(engine.profile.symbols)
    assert engine.profile.symbols["past"].as_tuple() == (0, 8, 40)
    attention = [k for k in engine.plan.kernel_steps() if k.name.startswith("attention")]
    assert len(attention) == 2 and all("CAUSAL=True" in k.source for k in attention)
    step = DecoderStep(hf).eval()
    for batch, seq, cached in ((2, 5, 0), (1, 1, 7), (3, 1, 33), (3, 16, 24)):
        x = decoder_inputs(hf, batch, seq, cached)
        with torch.no_grad():
            want = step(*x)
        got = engine(*x)
        assert got[1].shape == (2, 2, batch, 2, cached + seq, 16)
        for g, w in zip(got, want):
            torch.testing.assert_close(g, w, rtol=1e-4, atol=1e-4)


def test_greedy_generation_matches_transformers(gpt2):
    hf, engine = gpt2
    ids = torch.randint(0, 97, (2, 6), generator=torch.Generator().manual_seed(1))
    got = trident.generate(engine, ids, max_new_tokens=12)
    want = hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=12,
                       do_sample=False, pad_token_id=0)
    assert torch.equal(got, want)


def test_sampling_with_top_k(gpt2):
    _, engine = gpt2
    ids = torch.randint(0, 97, (1, 3), generator=torch.Generator().manual_seed(2))
    runs = [trident.generate(engine, ids, 5, temperature=0.8, top_k=1) for _ in range(2)]
    assert torch.equal(runs[0], runs[1])  # top_k=1 samples the argmax
    assert torch.equal(runs[0], trident.generate(engine, ids, 5))
    out = trident.generate(engine, ids, 5, temperature=1.0, top_k=5,
                           generator=torch.Generator().manual_seed(0))
    assert out.shape == (1, 8) and torch.equal(out[:, :3], ids)


def test_generation_past_the_profile(gpt2):
    _, engine = gpt2
    with pytest.raises(InputError, match=r"dim 4 \(past\) is 41, outside the engine's "
                                         r"optimization profile \[0, 40\]"):
        trident.generate(engine, torch.zeros(1, 16, dtype=torch.int64), 27)
    with pytest.raises(InputError, match="input_ids should be"):
        trident.generate(engine, torch.zeros(3, dtype=torch.int64), 1)


def test_a_saved_decoder_engine_generates_the_same_tokens(gpt2, tmp_path):
    """The past's profile starts at 0 (the prompt's step): the file keeps it, loading accepts it."""
    _, engine = gpt2
    engine.save(tmp_path / "decoder.engine")
    loaded = trident.load_engine(tmp_path / "decoder.engine")
    assert loaded.profile.symbols["past"].as_tuple() == (0, 8, 40)
    ids = torch.randint(0, 97, (3, 4), generator=torch.Generator().manual_seed(3))
    assert torch.equal(trident.generate(loaded, ids, 6), trident.generate(engine, ids, 6))


def test_transformers_generate_with_a_static_cache_through_torch_compile():
    """generate(cache_implementation="static") with the model's forward compiled by trident: the
    prefill and each step write their keys into the cache's buffers (index_copy_, written back
    after the run: compiler/fx_mutation.py), both graphs in kernels, the same tokens as eager."""
    from trident.compiler.dynamo import recording_backend
    from trident.compiler.testing import DEVICE

    torch.manual_seed(0)
    cfg = transformers.LlamaConfig(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                                   intermediate_size=128, vocab_size=100, max_position_embeddings=128)
    model = transformers.LlamaForCausalLM(cfg).eval().to(DEVICE)
    ids = torch.randint(0, 100, (1, 20), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    with torch.no_grad():
        want = model.generate(ids, max_new_tokens=8, do_sample=False, cache_implementation="static")
        backend, reports = recording_backend({"precision": "fp32"})
        torch._dynamo.reset()
        model.forward = torch.compile(model.forward, backend=backend)
        got = model.generate(ids, max_new_tokens=8, do_sample=False, cache_implementation="static")
    torch._dynamo.reset()
    assert torch.equal(got, want)
    assert reports and all(r.in_torch == [] and r.num_kernels > 0 for r in reports)


@pytest.mark.parametrize("family, window", [("Llama", {}), ("Mistral", {"sliding_window": 8}),
                                           ("Gemma2", {"sliding_window": 8, "head_dim": 16})])
def test_transformers_generate_with_a_dynamic_cache_builds_one_decode_engine(family, window):
    """The default (dynamic) cache: after dynamo's recompile the decode graph's past lengths are
    symbols, one per cache tensor; one engine serves every step (dynamo_shapes.equal_symbols),
    with the sizes' arithmetic (torch.sym_sum) at import. A sliding window's cache is static, but
    the position its mask starts from is an int the engine takes at run time
    (dynamo_shapes.run_time_numbers), not one engine per step. Gemma 2 mixes both, its full layers'
    key positions an `arange(past + 1)` of the symbol."""
    from trident.compiler.dynamo import recording_backend
    from trident.compiler.testing import DEVICE

    torch.manual_seed(0)
    cfg = getattr(transformers, family + "Config")(hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                                   num_key_value_heads=2, intermediate_size=128, vocab_size=100,
                                                   max_position_embeddings=128, **window)
    model = getattr(transformers, family + "ForCausalLM")(cfg).eval().to(DEVICE)
    ids = torch.randint(0, 100, (2, 20), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    mask = torch.ones_like(ids)
    with torch.no_grad():
        want = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
        backend, reports = recording_backend({"precision": "fp32"})
        torch._dynamo.reset()
        model.forward = torch.compile(model.forward, backend=backend)
        got = model.generate(ids, attention_mask=mask, max_new_tokens=10, do_sample=False, pad_token_id=0)
    torch._dynamo.reset()
    assert torch.equal(got, want)
    # (the cache's own position counter, a Python int, is shape arithmetic torch computes)
    assert reports and all("no tensor" in i.reason for r in reports for i in r.in_torch)
    assert [sum(s.engines_built for s in r.subgraphs) for r in reports] == [1] * len(reports)


def test_transformers_generate_of_t5_with_a_dynamic_cache_builds_one_decode_engine():
    """T5's decoder bias for one query after s cached keys is the last s + 1 columns of the bias
    at the profile's max: a window at an offset the sizes decide (codegen/dynamic_constants.py),
    so one engine serves every step."""
    from trident.compiler.testing import DEVICE

    torch.manual_seed(0)
    cfg = transformers.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4,
                                decoder_start_token_id=0, pad_token_id=0, eos_token_id=1)
    model = transformers.T5ForConditionalGeneration(cfg).eval().to(DEVICE)
    ids = torch.randint(3, 100, (2, 12), generator=torch.Generator().manual_seed(4)).to(DEVICE)
    _assert_one_engine_per_graph(model, input_ids=ids)


def _assert_one_engine_per_graph(model, **inputs):
    """model.generate through torch.compile gives eager's tokens (greedy, 6 new), one engine per
    compiled graph."""
    from trident.compiler.dynamo import recording_backend

    with torch.no_grad():
        want = model.generate(**inputs, max_new_tokens=6, do_sample=False)
        backend, reports = recording_backend({"precision": "fp32"})
        torch._dynamo.reset()
        model.forward = torch.compile(model.forward, backend=backend)
        got = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    torch._dynamo.reset()
    assert torch.equal(got, want)
    assert [sum(s.engines_built for s in r.subgraphs) for r in reports] == [1] * len(reports)


def test_transformers_generate_of_whisper_with_a_dynamic_cache_builds_one_decode_engine():
    """Whisper's decoder positions are `arange(new) + past`: the past's length reaches the engine
    as a 0-d tensor too (dynamo_shapes.take_sized_int_values), so the rows it gathers from the
    position table are found at run time, not folded per length: one engine serves every step."""
    from trident.compiler.testing import DEVICE

    torch.manual_seed(0)
    cfg = transformers.WhisperConfig(
        vocab_size=100, d_model=32, encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
        decoder_attention_heads=4, encoder_ffn_dim=64, decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=20,
        max_target_positions=32, pad_token_id=0, eos_token_id=2, bos_token_id=1, decoder_start_token_id=1,
        suppress_tokens=None, begin_suppress_tokens=None)
    model = transformers.WhisperForConditionalGeneration(cfg).eval().to(DEVICE)
    features = torch.randn(2, 16, 40, generator=torch.Generator().manual_seed(4)).to(DEVICE)
    _assert_one_engine_per_graph(model, input_features=features)
