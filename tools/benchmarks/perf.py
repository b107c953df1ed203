"""trident beside torch eager and torch.compile on the models behind the performance issue.

    trident bench perf --out bench-out          # H200: about 5 minutes
    trident bench perf --dry-run                 # tiny models on the CPU (the code path only)

fp16, in one process on one GPU, every runner built first and then timed in rounds, in turn
(`--rounds`, `--rep` calls each), so that drift moves them alike; medians of CUDA-event-timed calls:
  torchvision ConvNeXt-T, batch 32: trident from its ONNX export and through torch.compile
  torchvision ViT-B/16, batch 32:   trident through torch.compile (nn.MultiheadAttention)
  transformers WhisperEncoder (default config, 80 x 3000 log-mel input), batch 8: through torch.compile
  transformers BertModel (bert-base config), sequence 512, batch 32: through torch.compile
  transformers MixtralModel (8 experts, top-2, 4 layers), sequence 256, batch 8: through torch.compile
  transformers MambaModel (mamba-130m's widths, 8 layers), sequence 256, batch 8: through torch.compile
Anchors: the fp16 model in torch eager and under torch.compile (default mode), channels-last for the
CNN. trident builds from the fp32 model with precision fp16 (its engines cast at their edges).
Models with BatchNorm get their statistics settled by one train-mode pass on random data first.
torchvision and transformers are imported only when their rows run; a missing one skips its rows.
Prints a table, writes JSON. A measurement, never a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import copy
import functools
import statistics
import sys
import traceback
from dataclasses import dataclass
from typing import Callable

import torch

from trident.compiler.testing import export_onnx, relative_error
from trident.compiler.timing import bench_ms, events_ms
from trident.tools.benchmarks.results import ResultsFile, markdown_table, require_gpu
from trident.tools.zoo_models import randomize_zero_parameters

HELP = ("ConvNeXt-T, ViT-B/16, Whisper encoder, BERT, a Mixtral-style MoE, a Mamba: trident vs torch eager vs "
        "torch.compile (fp16)")


@dataclass(frozen=True)
class Model:
    label: str
    build: Callable        # () -> fp32 eval nn.Module on the CPU
    inputs: Callable       # (batch) -> tuple of fp32 CPU tensors
    batch: int
    paths: tuple = ("compile",)  # trident entry points: "compile" (torch.compile), "onnx"


def _convnext_t():
    from torchvision.models import convnext_tiny
    return convnext_tiny(weights=None)


def _vit_b16():
    from torchvision.models import vit_b_16
    return vit_b_16(weights=None)


class _Encoder(torch.nn.Module):
    """WhisperEncoder's last hidden state (a tensor, not a ModelOutput)."""

    def __init__(self, config):
        super().__init__()
        from transformers.models.whisper.modeling_whisper import WhisperEncoder
        self.encoder = WhisperEncoder(config)

    def forward(self, features):
        return self.encoder(features).last_hidden_state


def _whisper(tiny: bool = False):
    from transformers import WhisperConfig
    config = (WhisperConfig(d_model=32, encoder_layers=1, encoder_attention_heads=2, encoder_ffn_dim=64,
                            num_mel_bins=8, max_source_positions=8) if tiny else WhisperConfig())
    return _Encoder(config)


def _bert_base():
    from transformers import BertConfig, BertModel
    from trident.tools.zoo_models import LastHidden
    return LastHidden(BertModel(BertConfig()))


def _mixtral_moe():
    """A Mixtral-style decoder (8 experts, top-2 routing, grouped-query attention) at 4 layers:
    the experts' grouped GEMMs and the dispatch around them (docs/torch-compile.md)."""
    from transformers import MixtralConfig, MixtralModel
    from trident.tools.zoo_models import LastHidden
    return LastHidden(MixtralModel(MixtralConfig(
        hidden_size=1024, intermediate_size=3584, num_hidden_layers=4, num_attention_heads=16,
        num_key_value_heads=8, num_local_experts=8, num_experts_per_tok=2, vocab_size=32000)))


def _mamba():
    """A Mamba (mamba-130m's widths: 768 wide, state 16, expand 2) at 8 layers: the selective scan
    (torch's associative_scan under torch.compile, trident's linear_scan kernel;
    docs/torch-compile.md). Eager runs transformers' step-by-step loop over the sequence."""
    from transformers import MambaConfig, MambaModel
    from trident.tools.zoo_models import LastHidden
    return LastHidden(MambaModel(MambaConfig(hidden_size=768, num_hidden_layers=8, state_size=16, expand=2,
                                             vocab_size=50280, use_cache=False)))


def _token_ids(batch: int, seq: int = 512):
    return (torch.randint(0, 30522, (batch, seq), generator=torch.Generator().manual_seed(0)),)


def _images(batch: int, size: int = 224):
    return (torch.randn(batch, 3, size, size),)


MODELS = [Model("ConvNeXt-T", _convnext_t, _images, 32, ("onnx", "compile")),
          Model("ViT-B/16", _vit_b16, _images, 32),
          Model("Whisper encoder", _whisper, lambda b: (torch.randn(b, 80, 3000),), 8),
          Model("BERT-base seq 512", _bert_base, _token_ids, 32),
          # 2,048 tokens: 4,096 token-expert rows, the longest row the sort kernel takes
          Model("Mixtral-style MoE seq 256", _mixtral_moe, lambda b: _token_ids(b, 256), 8),
          Model("Mamba seq 256", _mamba, lambda b: _token_ids(b, 256), 8)]
DRY_MODELS = [Model("Whisper encoder (tiny)", lambda: _whisper(tiny=True), lambda b: (torch.randn(b, 8, 16),), 1,
                    ("onnx", "compile"))]


def settle(model: torch.nn.Module, inputs: tuple) -> torch.nn.Module:
    """Random BatchNorm statistics make fp16 activations overflow: one train-mode pass settles them."""
    if any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules()):
        model.train()
        with torch.no_grad():
            model(*inputs)
    return model.eval()


def _runners(model: torch.nn.Module, spec: Model, inputs: tuple, device, dry: bool,
             tune: str = "none") -> dict[str, Callable]:
    """runner name -> make() -> a no-argument callable running the model once. Each runner gets its
    own copy of the model: all of them stay alive while they are timed in turns. tune: a tuning
    level ("fast", "full") adds each trident path again, built with its kernel configs timed."""
    from trident.compiler import build_engine

    dev_inputs = tuple(x.to(device) for x in inputs)
    channels_last = dev_inputs[0].dim() == 4 and dev_inputs[0].is_floating_point()

    def own_model(dtype=torch.float32) -> torch.nn.Module:
        return copy.deepcopy(model).to(device=device, dtype=dtype)

    def anchor(compiled: bool):
        m = own_model(torch.float16)
        args = tuple(x.half() if x.is_floating_point() else x for x in dev_inputs)
        if channels_last:
            m = m.to(memory_format=torch.channels_last)
            args = (args[0].contiguous(memory_format=torch.channels_last),)
        if compiled and not dry:
            m = torch.compile(m)
        return lambda: m(*args)

    def trident_compile(level: str):
        m = torch.compile(own_model(), backend="trident", options={"precision": "fp16", "tune": level})
        return lambda: m(*dev_inputs)

    def trident_onnx(level: str):
        engine = build_engine(export_onnx(model.float().cpu(), inputs), "fp16", device=str(device), tune=level)
        return lambda: engine(*dev_inputs)[0]

    runners = {}
    for level in dict.fromkeys(("none", tune)):
        suffix = "" if level == "none" else f", tune {level}"
        if "onnx" in spec.paths:
            runners[f"trident (ONNX{suffix})"] = functools.partial(trident_onnx, level)
        if "compile" in spec.paths:
            runners[f"trident (torch.compile{suffix})"] = functools.partial(trident_compile, level)
    runners["torch eager"] = lambda: anchor(False)
    runners["torch.compile"] = lambda: anchor(True)
    return runners


def _first(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    return _first(out[0])


def _failed(row: dict, exc: Exception) -> None:
    row["status"] = f"error: {type(exc).__name__}: {str(exc).splitlines()[0][:200] if str(exc) else ''}"
    traceback.print_exc(file=sys.stderr)


def bench_model(spec: Model, device, dry: bool, timer: Callable, rounds: int = 1,
                queued: Callable | None = None, tune: str = "none") -> list[dict]:
    """Rows of one model: one per runner (status "ok" or the error), error against fp32 eager.

    Every runner is built first; then `rounds` rounds time each runner in turn (`timer`), so a
    drift of the GPU's clocks or of the host's load during the run moves every runner alike
    instead of the ones timed last. median_ms is the median of the rounds' medians, spread the
    range of those over it. `queued` (optional) times calls issued back to back, one
    synchronization at the end: where it is well under median_ms, the host's work per call
    (launches, Python) shows in the latency."""
    try:
        model = spec.build().eval()
    except ImportError as exc:
        return [{"model": spec.label, "runner": "-", "status": f"skipped: {exc}"}]
    torch.manual_seed(0)
    randomize_zero_parameters(model)  # ViT-B/16's zero head would make every output, and error, 0
    inputs = spec.inputs(spec.batch)
    settle(model, inputs)
    with torch.no_grad():  # the fp32 reference, computed where the runners run
        reference = _first(model.to(device)(*(x.to(device) for x in inputs))).float().cpu()
    model.cpu()
    if not dry:
        torch._dynamo.reset()
    rows, calls = [], {}
    for name, make in _runners(model, spec, inputs, device, dry, tune).items():
        row = {"model": spec.label, "batch": spec.batch, "runner": name, "status": "ok", "round_ms": []}
        try:
            with torch.no_grad():
                fn = make()
                row["rel_err"] = relative_error(_first(fn()).cpu(), reference)
            calls[name] = fn
        except Exception as exc:  # noqa: BLE001 - a failing runner is a data point
            _failed(row, exc)
        rows.append(row)
    for _ in range(rounds):
        for row in rows:
            fn = calls.get(row["runner"])
            if fn is None or row["status"] != "ok":
                continue
            try:
                with torch.no_grad():
                    row["round_ms"].append(timer(fn)["median_ms"])
            except Exception as exc:  # noqa: BLE001
                _failed(row, exc)
    for row in rows:
        _summarize(row)
        if queued is not None and row["status"] == "ok":
            with torch.no_grad():
                row["queued_ms"] = queued(calls[row["runner"]])
    calls.clear()
    if device.type == "cuda":
        torch.cuda.empty_cache()
    _add_ratios(rows)
    return rows


def _summarize(row: dict) -> None:
    times = row.get("round_ms")
    if row["status"] != "ok" or not times:
        return
    row["median_ms"] = statistics.median(times)
    row["spread"] = (max(times) - min(times)) / row["median_ms"]


def _add_ratios(rows: list[dict]) -> None:
    """Each runner's speed against torch.compile's (> 1: faster)."""
    anchor = next((r.get("median_ms") for r in rows if r["runner"] == "torch.compile"), None)
    for r in rows:
        if anchor and r.get("median_ms"):
            r["vs_torch_compile"] = anchor / r["median_ms"]


def _cell(value, spec: str) -> str:
    return "-" if value is None else format(value, spec)


def table(rows: list[dict]) -> str:
    body = [[r["model"], r.get("batch", "-"), r["runner"], _cell(r.get("median_ms"), ".3f"),
             _cell(r.get("spread") and 100 * r["spread"], ".0f"), _cell(r.get("queued_ms"), ".3f"),
             _cell(r.get("vs_torch_compile"), ".2f"), _cell(r.get("rel_err"), ".1e"), r["status"]] for r in rows]
    return markdown_table(["model", "batch", "runner", "median ms", "spread %", "queued ms", "vs torch.compile",
                           "rel. error", "status"], body)


def _dry_timer(fn: Callable) -> dict:
    fn()
    return {"median_ms": 1.0}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-out", help="folder of the results file")
    p.add_argument("--dry-run", action="store_true", help="a tiny model on the CPU, a fake timer (the code path)")
    p.add_argument("--rep", type=int, default=20, help="timed calls per runner and round (after 5 warm-up calls)")
    p.add_argument("--rounds", type=int, default=5, help="rounds of timing every runner in turn")
    p.add_argument("--models", nargs="*", help="labels of the models to run (default: all)")
    p.add_argument("--tune", choices=("none", "fast", "full"), default="none",
                   help="also build each trident path with its kernel configs timed at this level")


def _chosen(models: list[Model], labels: list[str] | None) -> list[Model]:
    if not labels:
        return models
    unknown = set(labels) - {m.label for m in models}
    if unknown:
        raise SystemExit(f"trident bench perf: unknown model(s) {sorted(unknown)}; known: "
                         f"{[m.label for m in models]}")
    return [m for m in models if m.label in labels]


def run(args: argparse.Namespace) -> int:
    if not args.dry_run:
        require_gpu("trident bench perf")
    device = torch.device("cpu" if args.dry_run else "cuda")
    timer = _dry_timer if args.dry_run else (lambda fn: bench_ms(fn, warmup=5, rep=args.rep))
    queued = None if args.dry_run else (lambda fn: events_ms(fn, args.rep))
    results = ResultsFile.in_dir(args.out, "perf", "cpu" if args.dry_run else None)
    rows = results.data["rows"] = []
    results.data["method"] = (f"{args.rounds} rounds of {args.rep} CUDA-event-timed calls per runner, the runners "
                              "in turn; median of the round medians; queued: calls back to back")
    for spec in DRY_MODELS if args.dry_run else _chosen(MODELS, args.models):
        rows += bench_model(spec, device, args.dry_run, timer, args.rounds, queued, args.tune)
        print(table(rows), flush=True)  # the table so far: a run cut short still shows its rows
        results.save()
    print(f"wrote {results.save()}")
    return 0
