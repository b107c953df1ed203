"""transformers models exported by torch.onnx's dynamo exporter with a padding mask and dynamic batch
and sequence, built with a batch x sequence profile and run against onnxruntime.

    python3 scripts/onnx_profiles.py [--only bert,llama] [--static] [--json OUT.json]

Tiny configs (hidden 32, 2 layers, 2 heads), fp32, random weights from seed 0; each model's last
batch row is half padding. A row is the worst absolute difference from onnxruntime over the sizes
run, and the ops the engine left to torch. On a CPU the kernels run in Triton's interpreter.
"""
from __future__ import annotations

import argparse
import json
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch

PROFILE = ((1, 4), (2, 16), (3, 40))   # (batch, sequence): min, opt, max
SIZES = ((2, 16), (3, 23), (1, 4), (3, 40))
TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, vocab_size=100,
            max_position_embeddings=64)


def _models() -> dict:
    import transformers as t

    decoder = dict(TINY, num_key_value_heads=1)  # grouped-query attention
    return {
        "bert": lambda: t.BertModel(t.BertConfig(**TINY)),
        "roberta": lambda: t.RobertaModel(t.RobertaConfig(**TINY)),
        "xlm_roberta": lambda: t.XLMRobertaModel(t.XLMRobertaConfig(**TINY)),
        "distilbert": lambda: t.DistilBertModel(t.DistilBertConfig(dim=32, n_layers=2, n_heads=2, hidden_dim=64,
                                                                   vocab_size=100, max_position_embeddings=64)),
        "electra": lambda: t.ElectraModel(t.ElectraConfig(embedding_size=32, **TINY)),
        "albert": lambda: t.AlbertModel(t.AlbertConfig(embedding_size=16, **TINY)),
        "deberta_v2": lambda: t.DebertaV2Model(t.DebertaV2Config(**TINY)),
        "mpnet": lambda: t.MPNetModel(t.MPNetConfig(**TINY)),
        "gpt2": lambda: t.GPT2Model(t.GPT2Config(n_embd=32, n_layer=2, n_head=2, vocab_size=100, n_positions=64,
                                                 bos_token_id=0, eos_token_id=0)),
        "opt": lambda: t.OPTModel(t.OPTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, ffn_dim=64,
                                              vocab_size=100, max_position_embeddings=64, word_embed_proj_dim=32)),
        "llama": lambda: t.LlamaModel(t.LlamaConfig(**decoder)),
        "qwen2": lambda: t.Qwen2Model(t.Qwen2Config(**decoder)),
        "mistral": lambda: t.MistralModel(t.MistralConfig(**decoder)),
        "gemma": lambda: t.GemmaModel(t.GemmaConfig(head_dim=16, **decoder)),
        "phi": lambda: t.PhiModel(t.PhiConfig(**TINY)),
    }


class LastHidden(torch.nn.Module):
    def __init__(self, model: torch.nn.Module):
        super().__init__()
        self.model = model

    def forward(self, ids, mask):
        return self.model(input_ids=ids, attention_mask=mask).last_hidden_state


def inputs(batch: int, seq: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and a padding mask whose last row is half padding."""
    ids = torch.randint(3, 100, (batch, seq), generator=torch.Generator().manual_seed(batch * 100 + seq))
    mask = torch.ones(batch, seq, dtype=torch.int64)
    mask[-1, seq // 2:] = 0
    return ids, mask


def export(name: str, path: Path, dynamic: bool = True) -> None:
    torch.manual_seed(0)
    model = LastHidden(_models()[name]().eval())
    axes = {0: torch.export.Dim("batch", min=1, max=4), 1: torch.export.Dim("seq", min=2, max=40)}
    torch.onnx.export(model, inputs(*PROFILE[1]), str(path), input_names=["ids", "mask"], output_names=["out"],
                      dynamic_shapes={"ids": axes, "mask": axes} if dynamic else None, dynamo=True, verbose=False)


def check(name: str, folder: Path, dynamic: bool = True) -> dict:
    """Export, build and run one model; its row (the worst difference from onnxruntime)."""
    import onnxruntime

    from trident.compiler import build_engine

    path = Path(folder) / f"{name}.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        export(name, path, dynamic)
    engine = build_engine(str(path), "fp32", shapes={"ids": PROFILE, "mask": PROFILE} if dynamic else None)
    session = onnxruntime.InferenceSession(str(path))
    worst = 0.0
    for size in SIZES if dynamic else SIZES[:1]:
        ids, mask = inputs(*size)
        (want,) = session.run(None, {"ids": ids.numpy(), "mask": mask.numpy()})
        (got,) = engine(ids, mask)
        worst = max(worst, float(np.abs(got.cpu().numpy() - want).max()))
    in_torch = sorted({s.node.op for s in engine.plan.steps if s.kind == "torch"})
    return {"model": name, "max_abs_diff": worst, "torch_steps": in_torch}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--only", help="comma-separated model names (default: all)")
    parser.add_argument("--static", action="store_true", help="export and build at one size, no profile")
    parser.add_argument("--json", metavar="OUT.json")
    args = parser.parse_args()
    warnings.simplefilter("ignore", RuntimeWarning)  # (the interpreter's exp(-inf) of masked scores)
    names = args.only.split(",") if args.only else list(_models())
    rows = []
    print(f"{'model':<13}{'result':<8}{'max |diff|':>11}  torch steps / error")
    with tempfile.TemporaryDirectory() as folder:
        for name in names:
            start = time.time()
            try:
                row = check(name, Path(folder), not args.static)
                print(f"{name:<13}{'ok':<8}{row['max_abs_diff']:>11.1e}  {row['torch_steps']} "
                      f"({time.time() - start:.0f} s)", flush=True)
            except Exception as e:  # noqa: BLE001 - a row reports its failure and the sweep goes on
                row = {"model": name, "error": f"{type(e).__name__}: {str(e).splitlines()[0][:200] if str(e) else ''}"}
                print(f"{name:<13}{'FAILED':<8}{'':>11}  {row['error']}", flush=True)
            rows.append(row)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 1 if any("error" in r for r in rows) else 0


if __name__ == "__main__":
    raise SystemExit(main())
