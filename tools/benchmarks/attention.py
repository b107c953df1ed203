"""Fused attention beside torch's scaled_dot_product_attention, in one process on one GPU.

    trident bench attention --out bench-out
    trident bench attention --seq 8192 --causal no --no-tune   # one row, heuristic only
    trident bench attention --dry-run                           # the code path on the CPU

For every (batch * heads, sequence, head dim) of SHAPES, causal and not, fp16: the median time of
trident's attention (kernels/attention.py, what an engine's attention step runs: its Triton program
or, on Hopper, kernels/attention_hopper.py's warp-specialized kernel) with its heuristic config
and with the best of its candidate configs (both kernels'), and of torch SDPA as it dispatches
(FlashAttention / cuDNN / memory-efficient) and per backend; TFLOP/s (4 * B*H * L^2 * D, causal
counted as half, as FlashAttention reports) and the ratio. Every call is captured in a CUDA graph
and timed behind an L2 flush (compiler/timing.py's config_ms), so the host's launch path is not
measured. The configs are compared once; then the heuristic's config, the best one and SDPA are
timed in turn for --rounds rounds, and the table gives each one's median over them: a drift of the
GPU's clocks during a row moves all three instead of whichever was timed last. Prints a table,
writes JSON. A measurement, never a test: nothing is asserted.

    trident bench attention --mask padding --causal no        # with a key-padding mask

--mask padding gives every row a bool mask [B, 1, 1, SEQ] (what an encoder with an attention_mask
passes on): the batch's even entries see every key, its odd ones the first three quarters. The
FLOP count stays the unmasked one, as for SDPA, which runs the same mask.
"""
from __future__ import annotations

import argparse
import math
import statistics
from typing import Callable

import torch

from trident.compiler.timing import config_ms
from trident.kernels.attention import (attention, attention_flops, candidate_configs, heuristic_config, hopper_fits,
                                       plan_tensors)
from trident.tools.benchmarks.results import ResultsFile, require_gpu

# (batch, heads, sequence, head dim)
SHAPES = [(8, 16, 512, 64), (4, 16, 2048, 64), (2, 16, 8192, 128), (1, 32, 16384, 128)]
DRY_SHAPES = [(1, 2, 64, 32)]


def median_ms(fn: Callable) -> float:
    """Median milliseconds per call on the GPU (CUDA-graph replays, cold L2); inf when it fails."""
    return config_ms(fn, rep_ms=100)


def _sdpa_backends() -> dict[str, object]:
    from torch.nn.attention import SDPBackend

    names = {"flash": "FLASH_ATTENTION", "cudnn": "CUDNN_ATTENTION", "efficient": "EFFICIENT_ATTENTION"}
    return {name: getattr(SDPBackend, attr) for name, attr in names.items() if hasattr(SDPBackend, attr)}


def _sdpa(q, k, v, causal: bool, backend=None, mask=None) -> Callable:
    from torch.nn.attention import sdpa_kernel

    def call():
        if backend is None:
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
        with sdpa_kernel([backend]):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal)
    return call


def padding_mask(b: int, seq: int, device: str) -> torch.Tensor:
    """bool [b, 1, 1, seq]: even batch entries see every key, odd ones the first three quarters."""
    lengths = torch.tensor([seq if i % 2 == 0 else max(1, seq * 3 // 4) for i in range(b)], device=device)
    return (torch.arange(seq, device=device)[None, :] < lengths[:, None])[:, None, None]


def _tflops(flops: float, ms: float) -> float | None:
    return flops / (ms * 1e-3) / 1e12 if ms and math.isfinite(ms) else None


def bench_row(b: int, h: int, seq: int, d: int, causal: bool, *, device: str = "cuda",
              dtype=torch.float16, tune: bool = True, timer: Callable = median_ms, rounds: int = 1,
              mask: str | None = None) -> dict:
    """One row of the table: trident (heuristic, best candidate) and torch SDPA, as a dict.
    mask: None or "padding" (padding_mask; not with causal, which SDPA takes only without a mask)."""
    if mask is not None and causal:
        raise ValueError("a padding-mask row is not causal (SDPA takes a mask or is_causal, not both)")
    q, k, v = (torch.randn(b, h, seq, d, device=device, dtype=dtype) for _ in range(3))
    m = padding_mask(b, seq, device) if mask == "padding" else None
    alignment = "top_left" if causal else None
    flops = attention_flops(b * h, seq, seq, d, d, causal)
    row = {"batch": b, "heads": h, "seq": seq, "head_dim": d, "causal": causal, "dtype": str(dtype)[6:],
           "flops": flops, "mask": mask}
    # The warp-specialized kernel (kernels/attention_hopper.py) where this GPU and problem take it.
    hopper = hopper_fits(plan_tensors(q, k, v, m, q, alignment), q, k, v, q)
    mask_bytes = 0 if m is None else m.element_size()
    heuristic = heuristic_config(seq, seq, d, dtype, mask_bytes=mask_bytes, causal=causal, hopper=hopper,
                                 rows=b * h * seq)
    times = {heuristic: timer(lambda: attention(q, k, v, m, causal=alignment, config=heuristic))}
    if tune:
        for cfg in candidate_configs(seq, seq, d, dtype, mask_bytes=mask_bytes, causal=causal, hopper=hopper,
                                     rows=b * h * seq)[1:]:
            times[cfg] = timer(lambda cfg=cfg: attention(q, k, v, m, causal=alignment, config=cfg))
    best = min(times, key=times.get)
    row["configs"] = [{"config": c.to_dict(), "ms": _finite(ms)} for c, ms in times.items()]
    runners = {"heuristic": lambda: attention(q, k, v, m, causal=alignment, config=heuristic),
               "sdpa": _sdpa(q, k, v, causal, mask=m)}
    if best != heuristic:
        runners["best"] = lambda: attention(q, k, v, m, causal=alignment, config=best)
    rounds_ms = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            rounds_ms[name].append(timer(fn))
    medians = {name: statistics.median(ms) for name, ms in rounds_ms.items()}
    if medians.get("best", math.inf) > medians["heuristic"]:  # (the rounds settle it: the comparison timed each once)
        best, medians["best"] = heuristic, medians["heuristic"]
    row["rounds_ms"] = {name: [_finite(x) for x in ms] for name, ms in rounds_ms.items()}
    row["heuristic_config"], row["heuristic_ms"] = heuristic.to_dict(), medians["heuristic"]
    row["best_config"], row["ms"] = best.to_dict(), medians.get("best", medians["heuristic"])
    row["sdpa_ms"] = medians["sdpa"]
    if device == "cuda":
        row["sdpa_backends_ms"] = {name: _finite(timer(_sdpa(q, k, v, causal, backend, m)))
                                   for name, backend in _sdpa_backends().items()}
    with torch.no_grad():
        out, ref = attention(q, k, v, m, causal=alignment, config=best), _sdpa(q, k, v, causal, mask=m)()
    row["max_abs_err"] = (out.float() - ref.float()).abs().max().item()
    row["tflops"], row["sdpa_tflops"] = _tflops(flops, row["ms"]), _tflops(flops, row["sdpa_ms"])
    row["heuristic_tflops"] = _tflops(flops, row["heuristic_ms"])
    row["vs_sdpa"] = row["sdpa_ms"] / row["ms"] if math.isfinite(row["ms"]) else None
    row["heuristic_vs_sdpa"] = row["sdpa_ms"] / row["heuristic_ms"] if math.isfinite(row["heuristic_ms"]) else None
    for key in ("ms", "heuristic_ms", "sdpa_ms"):
        row[key] = _finite(row[key])
    return row


def _finite(x: float) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def measure(shapes=SHAPES, causal=(False, True), *, dry_run: bool = False, tune: bool = True, rounds: int = 3,
            log: Callable = print, mask: str | None = None) -> list[dict]:
    """The table's rows (dicts). dry_run: on the CPU (Triton's interpreter). mask: see bench_row."""
    device = "cpu" if dry_run else "cuda"
    timer = _dry_timer if dry_run else median_ms
    rows = []
    for b, h, seq, d in shapes:
        for c in causal:
            rows.append(bench_row(b, h, seq, d, c, device=device, tune=tune and not dry_run, timer=timer,
                                  rounds=rounds, mask=mask))
            log(format_row(rows[-1]))
            if device == "cuda":
                torch.cuda.empty_cache()
    return rows


def _dry_timer(fn: Callable) -> float:
    import time

    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


HEADER = (f"{'B*H':>7} {'seq':>6} {'d':>4} {'causal':>6} | {'trident ms':>10} {'TFLOP/s':>8} {'heur. ms':>9} | "
          f"{'SDPA ms':>8} {'TFLOP/s':>8} | {'vs SDPA':>7} | best config")


def format_row(r: dict) -> str:
    def num(x, spec):
        return format(x, spec) if x is not None else "-".rjust(len(format(0.0, spec)))
    cfg = r["best_config"]
    return (f"{r['batch'] * r['heads']:>7} {r['seq']:>6} {r['head_dim']:>4} {str(r['causal']):>6} | "
            f"{num(r['ms'], '10.3f')} {num(r['tflops'], '8.1f')} {num(r['heuristic_ms'], '9.3f')} | "
            f"{num(r['sdpa_ms'], '8.3f')} {num(r['sdpa_tflops'], '8.1f')} | {num(r['vs_sdpa'], '6.2f')}x | "
            f"{cfg['BLOCK_M']}x{cfg['BLOCK_N']} w{cfg['num_warps']} s{cfg['num_stages']}"
            + (" warp-specialized" + (", overlapped" if cfg.get("OVERLAP") else "")
                                    + (", ping-pong" if cfg.get("PINGPONG") else "") if cfg.get("WS") else "")
            + (" paired" if cfg.get("PAIRED") else ""))


def summary(rows: list[dict]) -> dict:
    ratios = [r["vs_sdpa"] for r in rows if r["vs_sdpa"]]
    geomean = math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else None
    return {"geomean_vs_sdpa": geomean, "min_vs_sdpa": min(ratios, default=None)}


HELP = "fused attention beside torch SDPA (FlashAttention / cuDNN backends), fp16, causal and not"


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="bench-out", help="folder of the results file")
    p.add_argument("--dry-run", action="store_true", help="tiny shapes on the CPU (the code path only)")
    p.add_argument("--no-tune", action="store_true", help="time the heuristic config only")
    p.add_argument("--rounds", type=_positive, default=3,
                   help="rounds of timing trident and SDPA in turn; each figure is the median over them")
    p.add_argument("--seq", type=lambda text: {int(x) for x in text.split(",")},
                   help="only the rows of these sequence lengths, e.g. 512,8192")
    p.add_argument("--causal", choices=("both", "yes", "no"), default="both", help="causal rows, plain rows or both")
    p.add_argument("--shape", action="append", type=_shape, metavar="B,H,SEQ,D",
                   help="time this problem instead of the table's (repeatable), e.g. 4,32,512,128")
    p.add_argument("--mask", choices=("padding",),
                   help="give every row a key-padding mask (bool [B, 1, 1, SEQ]; with --causal no)")


def _positive(text: str) -> int:
    if not text.strip().isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"wants a positive integer, got {text!r}")
    return int(text)


def _shape(text: str) -> tuple[int, int, int, int]:
    parts = text.split(",")
    if len(parts) != 4 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"--shape wants four positive integers B,H,SEQ,D, got {text!r}")
    return tuple(int(p) for p in parts)


def run(args: argparse.Namespace) -> int:
    if args.mask and args.causal != "no":
        print("trident bench attention: --mask takes --causal no (SDPA takes a mask or is_causal, not both)")
        return 2
    if not args.dry_run:
        require_gpu("trident bench attention")
    print(HEADER)
    table = DRY_SHAPES if args.dry_run else SHAPES  # (the dry run's are tiny: the code path only)
    shapes = [shape for shape in (args.shape or table) if args.seq is None or shape[2] in args.seq]
    causal = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    results = ResultsFile.in_dir(args.out, "attention", "cpu" if args.dry_run else None)
    rows = results.data["rows"] = measure(shapes, causal, dry_run=args.dry_run, tune=not args.no_tune,
                                          rounds=args.rounds, mask=args.mask)
    s = results.data["summary"] = summary(rows)
    if s["geomean_vs_sdpa"] is not None:
        print(f"geometric mean vs SDPA: {s['geomean_vs_sdpa']:.2f}x, lowest {s['min_vs_sdpa']:.2f}x")
    print(f"wrote {results.save()}")
    return 0
