"""Model benchmarks: for each model x batch x precision, trident and its torch anchors in one
process on one device. Every runner is isolated: an exception becomes a row with a status."""
from __future__ import annotations

import datetime
import gc
import sys
import time
import traceback
from dataclasses import dataclass, field
from functools import partial
from typing import Callable

import torch

from trident.compiler.errors import TridentError
from trident.compiler.testing import relative_error
from trident.compiler.timing import bench_ms, config_ms

DTYPES = {"fp32": torch.float32, "fp16": torch.float16}


# --------------------------------------------------------------------------- context ----
@dataclass
class Context:
    """What differs between a GPU run and a CPU dry run."""
    mode: str                                   # quick | full | dry
    device: torch.device
    timer: Callable                             # timer(fn, warmup, rep) -> {median_ms, p90_ms, p99_ms}
    kernel_timer: Callable                      # kernel_timer(fn, rep, graph=True) -> ms (inf: fn failed)
    compile_fn: Callable                        # compile_fn(module, mode) -> callable
    warmup: int = 10
    rep: int = 100
    calib_batches: int = 4
    compile_modes: tuple = ("default", "max-autotune")
    log: Callable = print
    notes: list = field(default_factory=list)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"

    def sync(self) -> None:
        if self.cuda:
            torch.cuda.synchronize(self.device)


def torch_compile(module, mode: str):
    torch._dynamo.reset()  # no recompile limits or automatic-dynamic shapes carried between models
    return torch.compile(module, mode=None if mode == "default" else mode, dynamic=False)


_FAKE = [0]


def fake_timer(fn, warmup: int = 0, rep: int = 0) -> dict:
    """Dry run: run fn once (the code path is exercised), report made-up figures."""
    fn()
    _FAKE[0] += 1
    ms = 1.0 + 0.5 * (_FAKE[0] % 4)
    return {"median_ms": ms, "p90_ms": 1.1 * ms, "p99_ms": 1.2 * ms}


def fake_kernel_timer(fn, rep: int = 0, graph: bool = True) -> float:
    try:
        fn()
    except Exception as exc:  # noqa: BLE001 - same contract as timing.config_ms
        print(f"    (failed: {type(exc).__name__}: {exc})", file=sys.stderr)
        return float("inf")
    return 1.0


def make_context(mode: str, compile_modes=None, log=print) -> Context:
    if mode == "dry":
        return Context("dry", torch.device("cpu"), fake_timer, fake_kernel_timer,
                       lambda module, _mode: module, warmup=0, rep=1, calib_batches=1,
                       compile_modes=compile_modes if compile_modes is not None else ("default",),
                       log=log, notes=["dry run: CPU interpreter, fake timer, torch.compile "
                                       "replaced by the eager module; figures mean nothing"])
    quick = mode == "quick"
    modes = ("default",) if quick else ("default", "max-autotune")
    return Context(mode, torch.device("cuda"), bench_ms, config_ms, torch_compile,
                   warmup=5 if quick else 10, rep=30 if quick else 100,
                   calib_batches=2 if quick else 4,
                   compile_modes=compile_modes if compile_modes is not None else modes, log=log)


# ---------------------------------------------------------------------------- models ----
@dataclass(frozen=True)
class ModelSpec:
    label: str
    load: Callable      # load() -> (build() -> fp32 eval nn.Module on the CPU, make_inputs(batch))
    unit: str = "items"


def _registry(name):
    from trident.models import MODELS

    return MODELS[name]


def _mlp():
    from trident.models.mlp import feature_inputs, mlp

    return (partial(mlp, in_features=1024, hidden=4096, out=1000, depth=4),
            partial(feature_inputs, features=1024))


def _inception_wide():
    from trident.models.common import calibrate_batchnorm, seeded
    from trident.models.multibranch import InceptionNet
    from trident.models.resnet import image_inputs

    def build():
        with seeded(0):
            model = InceptionNet(width=64, blocks=4, num_classes=1000)
            calibrate_batchnorm(model, lambda: image_inputs(4, size=64))
        return model.eval()
    return build, partial(image_inputs, size=64)


def _multihead_wide():
    from trident.models.mlp import feature_inputs
    from trident.models.multibranch import multihead

    return (partial(multihead, in_features=512, hidden=2048, heads=8, out=512),
            partial(feature_inputs, features=512))


def _tv_resnet50():
    import torchvision  # noqa: F401  (ImportError: the row is recorded as skipped)
    from torchvision.models import resnet50

    from trident.models.resnet import image_inputs

    def build():
        torch.manual_seed(0)
        return resnet50(weights=None).eval()
    return build, partial(image_inputs, size=224)


def _hf_bert(tiny: bool = False):
    from transformers import BertConfig, BertModel

    cfg = (BertConfig(vocab_size=512, hidden_size=64, num_hidden_layers=2, num_attention_heads=2,
                      intermediate_size=256) if tiny else BertConfig())
    seq = 16 if tiny else 128

    def build():
        torch.manual_seed(0)
        return BertModel(cfg).eval()  # random weights from the config: nothing is downloaded

    def make_inputs(batch):
        return (torch.randint(0, cfg.vocab_size, (batch, seq)),)
    return build, make_inputs


class _Unsupported(torch.nn.Module):
    """Dry-run model trident cannot import (singular values): exercises the 'unsupported' path."""

    def forward(self, x):
        return torch.linalg.svdvals(x.reshape(x.shape[0], 4, 4))


def _missing_library():
    import trident_no_such_library  # noqa: F401  (dry run: the 'skipped' path)


SPECS = {
    "resnet50": ModelSpec("ResNet-50", partial(_registry, "resnet50"), "img"),
    "bert_base": ModelSpec("BERT-base (seq 128)", partial(_registry, "bert_base"), "seq"),
    "mlp": ModelSpec("MLP 1024-4x4096-1000", _mlp, "rows"),
    "inception_wide": ModelSpec("Inception (4 blocks, w64, 64px)", _inception_wide, "img"),
    "multihead_wide": ModelSpec("MultiHead (8 heads, 2048)", _multihead_wide, "rows"),
    "tv_resnet50": ModelSpec("torchvision ResNet-50", _tv_resnet50, "img"),
    "hf_bert": ModelSpec("HF BertModel (seq 128)", _hf_bert, "seq"),
    # tiny models for the CPU dry run
    "mlp_tiny": ModelSpec("MLP (tiny)", partial(_registry, "mlp"), "rows"),
    "multihead_tiny": ModelSpec("MultiHead (tiny)", partial(_registry, "multihead"), "rows"),
    "bert_tiny": ModelSpec("BERT (tiny)", partial(_registry, "bert_tiny"), "seq"),
    "hf_bert_tiny": ModelSpec("HF BertModel (tiny)", partial(_hf_bert, True), "seq"),
    "unsupported_tiny": ModelSpec("singular values (unsupported)", lambda: (_Unsupported, lambda b: (torch.randn(b, 16),))),
    "missing_tiny": ModelSpec("needs a missing library", _missing_library),
}

# (model, batch, precision); fp16 before int8 of the same model and batch, so that INT8 reuses
# the FP16 anchors measured just before.
QUICK = [("resnet50", 1, "fp16"), ("resnet50", 256, "fp16"), ("bert_base", 1, "fp16"),
         ("bert_base", 32, "fp16"), ("resnet50", 256, "int8"),
         ("mlp", 512, "fp16"), ("inception_wide", 1, "fp16"), ("tv_resnet50", 256, "fp16")]
# Full mode: FP16 and INT8 first (the headline figures; a resumed run fills the table in this
# order), FP32 last (its max-autotune anchor builds longest).
_FULL_MODELS = (("resnet50", (1, 256)), ("bert_base", (1, 32)), ("mlp", (1, 512)), ("inception_wide", (1, 64)))
FULL = ([(m, b, p) for m, bs in _FULL_MODELS for b in bs for p in ("fp16", "int8")]
        + [("multihead_wide", 1, "fp16")]
        + [(m, b, "fp16") for m, bs in (("tv_resnet50", (1, 256)), ("hf_bert", (1, 32))) for b in bs]
        + [(m, b, "fp32") for m, bs in _FULL_MODELS for b in bs]
        + [("multihead_wide", 1, "fp32")]
        + [(m, b, "fp32") for m, bs in (("tv_resnet50", (1, 256)), ("hf_bert", (1, 32))) for b in bs])
DRY = [("mlp_tiny", 2, "fp32"), ("mlp_tiny", 2, "fp16"), ("mlp_tiny", 2, "int8"),
       ("multihead_tiny", 2, "fp16"), ("bert_tiny", 1, "fp16"), ("hf_bert_tiny", 1, "fp16"),
       ("unsupported_tiny", 2, "fp16"), ("missing_tiny", 1, "fp16")]
SUITES = {"quick": QUICK, "full": FULL, "dry": DRY}


# --------------------------------------------------------------------------- helpers ----
def first_tensor(out) -> torch.Tensor:
    if isinstance(out, torch.Tensor):
        return out
    if hasattr(out, "to_tuple"):  # transformers' ModelOutput
        out = out.to_tuple()
    if isinstance(out, dict):
        out = list(out.values())
    return first_tensor(out[0])


def rel_err(got, ref) -> float:
    return relative_error(first_tensor(got), ref)


def _free(ctx: Context) -> None:
    gc.collect()
    if ctx.cuda:
        torch.cuda.synchronize(ctx.device)
        torch.cuda.empty_cache()


def _mem_base(ctx: Context):
    if not ctx.cuda:
        return None
    _free(ctx)
    base = torch.cuda.memory_allocated(ctx.device)
    torch.cuda.reset_peak_memory_stats(ctx.device)
    return base


def _mem_peak(ctx: Context, base):
    if base is None:
        return None
    torch.cuda.synchronize(ctx.device)
    return (torch.cuda.max_memory_allocated(ctx.device) - base) / 2 ** 20


def _error_text(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:300] if text else ''}"


# --------------------------------------------------------------------------- runners ----
def _trident_runner(ctx, build, inputs, precision, calibration):
    from trident.compiler import build_engine

    model = build().to(ctx.device)
    extra = {"calibration": calibration} if precision == "int8" else {}
    engine = build_engine(model, precision, inputs, **extra)
    del model
    return (lambda: engine(*inputs)), {"kernels": engine.num_kernels}


def as_anchor(module, inputs, dtype):
    """(module, inputs) as torch's own runners get them: at `dtype`, channels-last for image models
    (torch's fastest layout for CNNs)."""
    module = module.to(dtype)
    args = tuple(x.to(dtype) if x.is_floating_point() else x for x in inputs)
    if args and args[0].dim() == 4:
        module = module.to(memory_format=torch.channels_last)
        args = (args[0].contiguous(memory_format=torch.channels_last),) + args[1:]
    return module, args


def _anchor_module(ctx, build, inputs, dtype):
    return as_anchor(build().to(ctx.device), inputs, dtype)


def _eager_runner(ctx, build, inputs, dtype):
    module, args = _anchor_module(ctx, build, inputs, dtype)
    return (lambda: module(*args)), {}


def _compile_runner(ctx, build, inputs, dtype, mode):
    module, args = _anchor_module(ctx, build, inputs, dtype)
    compiled = ctx.compile_fn(module, mode)
    return (lambda: compiled(*args)), {}


def measure_runner(ctx: Context, base_row: dict, runner: str, make: Callable, reference) -> dict:
    """One runner: build (timed, first call included), peak memory, timed runs, error vs
    the fp32 reference. Any exception becomes the row's status; the run goes on."""
    # When: a resumed run keeps rows measured by earlier runs (run_models)
    row = dict(base_row, runner=runner, status="ok",
               measured_at=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    fn = out = info = None
    try:
        base = _mem_base(ctx)
        start = time.perf_counter()
        with torch.no_grad():
            fn, info = make()
            out = fn()
            ctx.sync()
            row["build_s"] = time.perf_counter() - start
            row["peak_mem_mb"] = _mem_peak(ctx, base)
            row.update(info)
            row["rel_err"] = rel_err(out, reference)
            out = None
            if ctx.cuda:
                torch.cuda.reset_peak_memory_stats(ctx.device)
            row.update(ctx.timer(fn, ctx.warmup, ctx.rep))
            row["run_peak_mem_mb"] = _mem_peak(ctx, base)
        row["throughput_per_s"] = row["batch"] / row["median_ms"] * 1e3
    except Exception as exc:  # noqa: BLE001 - a failing runner is a data point
        row["status"] = "unsupported" if isinstance(exc, TridentError) else "error"
        row["error"] = _error_text(exc)
        if not isinstance(exc, TridentError):
            traceback.print_exc(file=sys.stderr)
    finally:
        fn = out = info = None
        _free(ctx)
    return row


def _anchor_names(ctx) -> list[str]:
    return ["torch eager"] + [("torch.compile" if m == "default" else f"torch.compile {m}")
                              for m in ctx.compile_modes]


def bench_group(ctx: Context, name: str, batch: int, precision: str, anchor_cache: dict,
                on_row: Callable = lambda row: None, measured: dict | None = None) -> list[dict]:
    """Rows of one (model, batch, precision): trident, then each anchor. `measured` (runner -> row,
    from a resumed run) are kept, not measured again."""
    measured = measured or {}
    spec = SPECS[name]
    base_row = dict(model=name, label=spec.label, unit=spec.unit, batch=batch, precision=precision)
    try:
        build, make_inputs = spec.load()
        torch.manual_seed(0)
        inputs = tuple(x.to(ctx.device) for x in make_inputs(batch))
        with torch.no_grad():
            model = build().to(ctx.device)
            reference = first_tensor(model(*inputs)).detach().float().cpu()  # fp32 eager
            del model
        _free(ctx)
    except Exception as exc:  # noqa: BLE001
        status = "skipped" if isinstance(exc, ImportError) else "error"
        if status == "error":
            traceback.print_exc(file=sys.stderr)
        row = dict(base_row, runner="trident", status=status, stage="load", error=_error_text(exc))
        on_row(row)
        return [row]

    calibration = None
    if precision == "int8":
        calibration = [tuple(x.to(ctx.device) for x in make_inputs(batch))
                       for _ in range(ctx.calib_batches)]
    if "trident" in measured:
        rows = [measured["trident"]]
    else:
        rows = [measure_runner(ctx, base_row, "trident", lambda: _trident_runner(
            ctx, build, inputs, precision, calibration), reference)]
        on_row(rows[0])
    calibration = None
    anchor_precision = "fp16" if precision == "int8" else precision
    dtype = DTYPES[anchor_precision]
    cached = anchor_cache.get((name, batch, anchor_precision), {})
    for runner in _anchor_names(ctx):
        if runner in measured:
            rows.append(measured[runner])
            continue
        if runner in cached:
            row = dict(cached[runner], precision=precision, reused_from=f"{anchor_precision} group")
        else:
            if runner == "torch eager":
                make = partial(_eager_runner, ctx, build, inputs, dtype)
            else:
                mode = runner.split(" ", 1)[1] if " " in runner else "default"
                make = partial(_compile_runner, ctx, build, inputs, dtype, mode)
            row = measure_runner(ctx, base_row, runner, make, reference)
            anchor_cache.setdefault((name, batch, anchor_precision), {})[runner] = row
        row["anchor_precision"] = anchor_precision
        rows.append(row)
        on_row(row)
    trident = rows[0]
    if trident["status"] == "ok":
        trident["speedup"] = {r["runner"]: r["median_ms"] / trident["median_ms"]
                              for r in rows[1:] if r["status"] == "ok"}
    inputs = reference = None
    _free(ctx)
    return rows


def complete_groups(ctx: Context, rows: list[dict]) -> set:
    """(model, batch, precision) whose trident row and every anchor row are recorded. A trident row
    that failed ("error") does not count: a resumed run measures it again (after a fix, say). The
    anchors' failures are torch's own and would fail again."""
    want = {"trident", *_anchor_names(ctx)}
    seen: dict = {}
    for r in rows:  # a group whose model could not be loaded has one row, stage "load"
        if r["runner"] == "trident" and r["status"] == "error" and r.get("stage") != "load":
            continue
        seen.setdefault((r["model"], r["batch"], r["precision"]), set()).add(
            "load" if r.get("stage") == "load" else r["runner"])
    return {k for k, runners in seen.items() if want <= runners or "load" in runners}


def run_models(ctx: Context, plan, results: dict, write: Callable, budget_s: float | None = None,
               started: float | None = None) -> list[dict]:
    """Measure each (model, batch, precision) of `plan`. Groups already complete in
    results["models"] (a resumed run) are kept; partial ones are measured again. Past
    `budget_s` seconds from `started`, the remaining groups are left for a later --resume."""
    done = complete_groups(ctx, results.get("models", []))
    # Rows measured by an earlier run are kept, also those of a group it left unfinished (a long
    # torch.compile max-autotune build can outlast one run): only missing runners, and a
    # failed trident, run again.
    rows = results["models"] = [r for r in results.get("models", [])
                                if (r["model"], r["batch"], r["precision"]) in done or r["status"] == "ok"]
    cache: dict = {}
    for r in rows:  # anchors measured by an earlier run serve its INT8 groups
        if r["runner"] != "trident" and r.get("anchor_precision") == r["precision"]:
            cache.setdefault((r["model"], r["batch"], r["precision"]), {})[r["runner"]] = r
    results["not_run"] = []
    started = time.perf_counter() if started is None else started
    for name, batch, precision in plan:
        if (name, batch, precision) in done:
            continue
        if budget_s and time.perf_counter() - started > budget_s:
            results.setdefault("not_run", []).append([name, batch, precision])
            ctx.log(f"[bench] time budget spent: {name} batch {batch} {precision} not run "
                    f"(run again with --resume)", flush=True)
            continue
        ctx.log(f"[bench] {name} batch {batch} {precision}", flush=True)

        def on_row(row):
            rows.append(row)
            write()
            ctx.log(f"  {row['runner']:<28} {row['status']:<11} " + (
                f"{row['median_ms']:.3f} ms  {row['throughput_per_s']:,.0f} {row.get('unit', 'items')}/s"
                if row["status"] == "ok" else row.get("error", "")), flush=True)
        measured = {r["runner"]: r for r in rows
                    if (r["model"], r["batch"], r["precision"]) == (name, batch, precision)}
        group = bench_group(ctx, name, batch, precision, cache, on_row, measured)
        write()  # the speedups were added after the rows were written
        del group
    return rows
