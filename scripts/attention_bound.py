"""Attention's time beside what an sm_90 SM's tensor cores and special-function units need for it.

    python3 scripts/attention_bound.py --out bench-out
    python3 scripts/attention_bound.py --seq 2048 --causal no

For each row of `trident bench attention` (fp16): trident's attention (its heuristic config) and
torch SDPA are each replayed back to back from a CUDA graph for about a second while `nvidia-smi`
samples the SM clock and the board's power, and the time per call of that loop is set beside two
bounds at the clock measured:

- tensor: the matrix multiplies alone, 4 * B*H * Lq * Lk * D FLOP (causal: half) at 4,096 dense
  fp16 FLOP a clock per SM;
- tensor + SFU: that plus the exponentials (one per score seen, B*H * Lq * Lk, causal half) at 16
  a clock per SM, as if the two never ran at the same time.

A kernel at "tensor + SFU" overlaps nothing of its exponentials with its matrix multiplies; one
under it overlaps some. Prints a table, writes attention-bound.json into --out. A measurement,
never a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

import torch

from trident.compiler.timing import graph_ms
from trident.kernels.attention import attention, attention_flops
from trident.tools.benchmarks.attention import SHAPES
from trident.tools.benchmarks.results import environment, require_gpu

MMA_FLOP_PER_CLOCK = 4096  # per SM, dense fp16/bf16 with fp32 accumulation (sm_90)
EXP_PER_CLOCK = 16  # per SM, MUFU.EX2 (sm_90)


def _replays_ms(graph, replays: int) -> float:
    """Milliseconds per replay over `replays` back-to-back replays of graph."""
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    for _ in range(replays):
        graph.replay()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / replays


def sustained(fn, seconds: float = 1.0, per_graph: int = 20) -> tuple[float, float, float]:
    """(ms per call, median SM clock in MHz, median board power in W) over about `seconds` of
    back-to-back replays of a CUDA graph of `per_graph` calls (the host's launch path is not timed).
    nvidia-smi samples every 50 ms; the loop starts once its first sample is out, and its last
    sample (after the loop) is dropped."""
    call_ms, graph = graph_ms(fn, per_graph)
    replays = max(5, int(seconds * 1e3 / max(call_ms * per_graph, 1e-3)))
    smi = subprocess.Popen(["nvidia-smi", "--query-gpu=clocks.sm,power.draw", "--format=csv,noheader,nounits",
                            "-lms", "50"], stdout=subprocess.PIPE, text=True)
    smi.stdout.readline()  # (the sample taken before the loop)
    ms = _replays_ms(graph, replays) / per_graph
    smi.terminate()
    samples = [line.split(",") for line in smi.communicate()[0].splitlines()[:-1]]
    mhz = [float(s[0]) for s in samples if len(s) == 2]
    watts = [float(s[1]) for s in samples if len(s) == 2]
    nan = float("nan")
    return ms, statistics.median(mhz) if mhz else nan, statistics.median(watts) if watts else nan


def bound_row(b: int, h: int, seq: int, d: int, causal: bool) -> dict:
    q, k, v = (torch.randn(b, h, seq, d, device="cuda", dtype=torch.float16) for _ in range(3))
    alignment = "top_left" if causal else None
    flops = attention_flops(b * h, seq, seq, d, d, causal)
    exps = flops / (4 * d)
    sms = torch.cuda.get_device_properties(0).multi_processor_count
    tensor_clocks, sfu_clocks = flops / (MMA_FLOP_PER_CLOCK * sms), exps / (EXP_PER_CLOCK * sms)
    row = {"batch": b, "heads": h, "seq": seq, "head_dim": d, "causal": causal, "flops": flops,
           "tensor_clocks": tensor_clocks, "sfu_clocks": sfu_clocks, "runners": {}}
    runners = {"trident": lambda: attention(q, k, v, causal=alignment),
               "sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=causal)}
    for name, fn in runners.items():
        ms, mhz, watts = sustained(fn)
        tensor_ms = tensor_clocks / (mhz * 1e3)
        both_ms = (tensor_clocks + sfu_clocks) / (mhz * 1e3)
        row["runners"][name] = {"ms": ms, "sm_mhz": mhz, "watts": watts, "tensor_ms": tensor_ms,
                                "tensor_sfu_ms": both_ms, "of_tensor_sfu": ms / both_ms}
    return row


def format_row(r: dict) -> list[str]:
    name = f"{r['batch'] * r['heads']} x {r['seq']} x {r['head_dim']}{', causal' if r['causal'] else ''}"
    return [f"| {name} | {who} | {x['ms']:.4f} | {x['sm_mhz']:.0f} | {x['watts']:.0f} | {x['tensor_ms']:.4f}"
            f" | {x['tensor_sfu_ms']:.4f} | {x['of_tensor_sfu']:.2f} |" for who, x in r["runners"].items()]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default="bench-out")
    p.add_argument("--seq", help="only these sequence lengths, e.g. 2048,8192")
    p.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    args = p.parse_args(argv)
    require_gpu("attention_bound")
    seqs = {int(s) for s in args.seq.split(",")} if args.seq else None
    causals = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    print("| B*H x seq x d | runner | ms | SM MHz | W | tensor ms | tensor + SFU ms | ms / (tensor + SFU) |")
    print("|---|---|---|---|---|---|---|---|")
    rows = []
    for b, h, seq, d in SHAPES:
        if seqs and seq not in seqs:
            continue
        for causal in causals:
            rows.append(bound_row(b, h, seq, d, causal))
            print("\n".join(format_row(rows[-1])), flush=True)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "attention-bound.json").write_text(json.dumps({"environment": environment(), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
