"""Dynamic shapes on the GPU: a sequence profile beside static engines and torch.compile, and
generation with a KV-cache decoder engine beside transformers' generate.

    trident bench dynamic --out bench-out
    trident bench dynamic --dry-run          # tiny configs on the CPU (the code path only)

BERT-base (transformers' BertConfig dims, random weights, fp16, batch 8): one engine with the sequence
profile 16:128:512 against an engine built for 128 alone and torch.compile, at lengths 16, 64,
128, 384, 512: median ms, and the error against torch fp32 at each length. GPT-2 (transformers
config, 12 layers, random weights, fp16): 128 tokens after a 128-token prompt, tokens/s at batch
1 and 16 for trident.generate (one decoder-step engine, past 0..1024), transformers' generate
eager and with torch.compile. Prints tables, writes JSON; a measurement, never a test.
"""
from __future__ import annotations

import argparse
import time
import traceback

import torch

from trident.compiler.timing import bench_ms
from trident.tools.benchmarks.results import ResultsFile, markdown_table, require_gpu

HELP = "sequence profiles vs static engines vs torch.compile; KV-cache generation (GPU)"
LENGTHS = (16, 64, 128, 384, 512)
FP16_TOLERANCE = 2e-2   # relative error of an fp16 engine against torch fp32


def rel_err(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


def _timed(fn, dry: bool) -> float | None:
    try:
        return fn()
    except Exception as e:  # noqa: BLE001 - a benchmark row reports its failure and goes on
        print(f"    (failed: {type(e).__name__}: {str(e).splitlines()[0][:120] if str(e) else ''})")
        traceback.print_exc(limit=2)
        return None


def bert_section(dry: bool, device: str) -> list[dict]:
    """BERT-base dims of transformers' BertConfig (768 hidden, 12 layers, 12 heads, 3072, 30522
    words) in trident's own BertEncoder (module names follow transformers'), the model of the
    figures in docs/dynamic-shapes.md. transformers' BertModel builds with the same kind of profile,
    through torch and through the dynamo exporter's ONNX (tests/test_dynamic_shapes.py)."""
    from trident.compiler import build_engine
    from trident.models.bert import BERT_BASE_VOCAB, BertEncoder

    dims = (BERT_BASE_VOCAB, 768, 12, 12, 3072, 512) if not dry else (100, 32, 1, 2, 64, 16)
    batch, lengths, profile = (8, LENGTHS, (16, 128, 512)) if not dry else (2, (4, 8), (4, 8, 12))
    ref = BertEncoder(*dims, seed=0).eval().to(device)
    dtype = torch.float16 if not dry else torch.float32
    model = BertEncoder(*dims, seed=0).eval().to(device, dtype)
    precision = "fp16" if not dry else "fp32"

    def inputs(seq):
        ids = torch.randint(0, dims[0], (batch, seq), device=device)
        return ids, torch.ones(batch, seq, dtype=torch.int64, device=device)

    start = time.perf_counter()
    shapes = tuple((batch, s) for s in profile)
    dynamic = build_engine(model, precision, inputs(profile[1]), device=device,
                           shapes={"input_ids": shapes, "attention_mask": shapes})
    build_s = time.perf_counter() - start
    static = build_engine(model, precision, inputs(profile[1]), device=device)
    compiled = torch.compile(model)
    timer = (lambda fn: bench_ms(fn)["median_ms"]) if not dry else (lambda fn: (fn(), 0.0)[1])
    rows = []
    with torch.no_grad():
        for seq in lengths:
            x = inputs(seq)
            err = rel_err(dynamic(*x)[0], ref(*x))
            row = {"seq": seq, "rel_err_vs_fp32": err, "ok": err <= FP16_TOLERANCE,
                   "dynamic_ms": _timed(lambda: timer(lambda: dynamic(*x)), dry),
                   "static_ms": _timed(lambda: timer(lambda: static(*x)), dry) if seq == profile[1] else None,
                   "torch_compile_ms": _timed(lambda: timer(lambda: compiled(*x)), dry),
                   "eager_ms": _timed(lambda: timer(lambda: model(*x)), dry)}
            rows.append(row)
            print(f"  seq {seq}: {row}")
    print(f"  dynamic engine built in {build_s:.1f} s; CUDA graphs held: {len(dynamic.captured_shapes)}")
    return rows


def gpt2_section(dry: bool, device: str):
    """Tokens/s of trident.generate and transformers' generate: yields a row as each batch ends."""
    import transformers
    import trident
    from trident.models.gpt2 import decoder_engine

    cfg = transformers.GPT2Config() if not dry else transformers.GPT2Config(
        n_layer=1, n_head=2, n_embd=32, vocab_size=97, n_positions=64)
    prompt, new, batches = (128, 128, (1, 16)) if not dry else (4, 3, (1, 2))
    torch.manual_seed(0)
    dtype = torch.float16 if not dry else torch.float32
    hf = transformers.GPT2LMHeadModel(cfg).eval().to(device, dtype)
    start = time.perf_counter()
    engine = decoder_engine(hf, "fp16" if not dry else "fp32", max_batch=max(batches),
                            max_seq=prompt, max_past=1024 if not dry else 16, opt_batch=1,
                            opt_past=prompt, device=device)
    print(f"  decoder engine built in {time.perf_counter() - start:.1f} s")
    compiled_hf = transformers.GPT2LMHeadModel(cfg).eval().to(device, dtype)
    compiled_hf.load_state_dict(hf.state_dict())
    compiled_hf.forward = torch.compile(compiled_hf.forward, dynamic=True)
    for batch in batches:
        ids = torch.randint(0, cfg.vocab_size, (batch, prompt), device=device)
        kwargs = dict(attention_mask=torch.ones_like(ids), max_new_tokens=new, min_new_tokens=new,
                      do_sample=False, pad_token_id=0)

        def rate(fn):
            fn()  # warm-up (builds, captures, compiles)
            if device == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            out = fn()
            if device == "cuda":
                torch.cuda.synchronize()
            return batch * new / (time.perf_counter() - t0), out

        row = {"batch": batch, "prompt": prompt, "new_tokens": new}
        for name, fn in (("trident", lambda: trident.generate(engine, ids, new)),
                         ("transformers_eager", lambda: hf.generate(ids, **kwargs)),
                         ("transformers_compile", lambda: compiled_hf.generate(ids, **kwargs))):
            got = _timed(lambda: rate(fn), False)
            row[f"{name}_tokens_per_s"] = got[0] if got else None
            if name == "trident" and got:
                tokens = got[1]
            if name == "transformers_eager" and got and "tokens" in locals():
                row["greedy_tokens_equal_eager"] = float((tokens == got[1]).float().mean())
        print(f"  batch {batch}: {row}")
        yield row


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.2f}x" if a and b else ""


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-out", help="folder of the results file")
    p.add_argument("--dry-run", action="store_true", help="tiny configs on the CPU (the code path only)")
    p.add_argument("--only", choices=("bert", "gpt2"), help="one section")


def run(args: argparse.Namespace) -> int:
    if not args.dry_run:
        require_gpu("trident bench dynamic")
    device = "cpu" if args.dry_run else "cuda"
    results = ResultsFile.in_dir(args.out, "dynamic", "cpu" if args.dry_run else None)
    if args.only in (None, "bert"):
        print("BERT-base, sequence profile 16:128:512 vs static-128 vs torch.compile")
        rows = results.data["bert"] = bert_section(args.dry_run, device)
        print(markdown_table(["seq", "dynamic ms", "static ms", "dynamic / static", "torch.compile ms", "eager ms",
                              "rel err", "ok"],
                             [[r["seq"], r["dynamic_ms"], r["static_ms"], _ratio(r["dynamic_ms"], r["static_ms"]),
                               r["torch_compile_ms"], r["eager_ms"], f"{r['rel_err_vs_fp32']:.1e}", r["ok"]]
                              for r in rows]))
        results.save()
    if args.only in (None, "gpt2"):
        print("GPT-2 (12 layers), 128 new tokens after a 128-token prompt")
        rows = results.data["gpt2"] = []
        for row in gpt2_section(args.dry_run, device):
            rows.append(row)
            results.save()   # each row kept as soon as it is measured
        print(markdown_table(["batch", "trident tok/s", "transformers eager tok/s", "transformers compile tok/s",
                              "greedy = eager"],
                             [[r["batch"], r.get("trident_tokens_per_s"), r.get("transformers_eager_tokens_per_s"),
                               r.get("transformers_compile_tokens_per_s"), r.get("greedy_tokens_equal_eager")]
                              for r in rows]))
    print(f"wrote {results.save()}")
    return 0
