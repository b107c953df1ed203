"""A/B of the warp-specialized Hopper attention kernel across git revisions, beside torch SDPA.

    python3 scripts/attention_ab.py --rev c14f8dd --rev HEAD --rev WORKTREE
    python3 scripts/attention_ab.py --rev HEAD~1 --rev HEAD --shape 4,16,2048,64 --causal no --configs 3st,2st
    python3 scripts/attention_ab.py --rev HEAD --rev WORKTREE --mask padding --causal no

Each --rev's kernels/attention_hopper.py (WORKTREE: the file as it is on disk; a path to a .py file:
that file, for a checkout without its git history) is loaded as its own module beside the installed
trident and launched with each config of --configs on the same q, k, v (fp16; with --mask padding,
`trident bench attention`'s key-padding mask) in one process: a kernel change is timed against the
one before it without a second install, and every figure of a row shares the GPU's clocks. Each
call is timed as `trident bench attention` times it (median_ms: CUDA-graph replays behind an L2
flush); the rounds take every runner in turn and the table gives medians. Prints a table, writes
attention-ab.json into --out. A measurement, never a test: nothing is asserted (max_abs_err against
SDPA is recorded).
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

from trident.kernels.attention import default_scale, hopper_config, plan_tensors
from trident.tools.benchmarks.attention import SHAPES, median_ms, padding_mask
from trident.tools.benchmarks.results import environment, require_gpu

REPO = Path(__file__).resolve().parent.parent
KERNEL = "kernels/attention_hopper.py"
CONFIGS = {"3st": hopper_config(128, 3, True), "2st": hopper_config(128, 2, True),
           "2st-plain": hopper_config(128, 2, False), "3st-pp": hopper_config(128, 3, True, pingpong=True)}


def load_revision(rev: str, workdir: Path):
    """(short hash or "worktree", commit subject, kernels/attention_hopper.py at that revision as a
    module)."""
    if rev == "WORKTREE":
        source, label, subject = (REPO / KERNEL).read_text(), "worktree", "uncommitted"
    elif rev.endswith(".py"):
        source, label, subject = Path(rev).read_text(), Path(rev).stem, f"the file {rev}"
    else:
        git = ["git", "-C", str(REPO)]
        source = subprocess.run(git + ["show", f"{rev}:{KERNEL}"], check=True, capture_output=True, text=True).stdout
        label, subject = subprocess.run(git + ["log", "-1", "--format=%h%n%s", rev], check=True, capture_output=True,
                                        text=True).stdout.strip().split("\n", 1)
    path = workdir / f"attention_hopper_{len(list(workdir.iterdir()))}.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return label, subject, module


def ab_row(shape, causal: bool, kernels: dict, configs: list[str], rounds: int, masked: bool = False) -> dict:
    b, h, seq, d = shape
    q, k, v = (torch.randn(b, h, seq, d, device="cuda", dtype=torch.float16) for _ in range(3))
    mask = padding_mask(b, seq, "cuda") if masked else None
    plan = plan_tensors(q, k, v, mask, q, "top_left" if causal else None)

    def launcher(module, cfg):
        def call():
            o = torch.empty_like(q)
            module.launch(q, k, v, o, plan, default_scale(d), cfg.to_dict(), mask)
            return o
        return call
    runners = {"sdpa": lambda: torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                                                 is_causal=causal)}
    for label, module in kernels.items():
        for name in configs:
            runners[f"{label} | {name}"] = launcher(module, CONFIGS[name])
    ref = runners["sdpa"]().float()
    err = {name: (fn().float() - ref).abs().max().item() for name, fn in runners.items()}
    times = {name: [] for name in runners}
    for _ in range(rounds):
        for name, fn in runners.items():
            times[name].append(median_ms(fn))
    ms = {name: statistics.median(t) for name, t in times.items()}
    return {"shape": list(shape), "causal": causal, "mask": "padding" if masked else None, "ms": ms,
            "max_abs_err": err}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--rev", action="append", required=True, help="git revision, or WORKTREE (repeatable)")
    p.add_argument("--shape", action="append", help="B,H,SEQ,D (repeatable; default: trident bench attention's rows)")
    p.add_argument("--causal", choices=("both", "yes", "no"), default="both")
    p.add_argument("--configs", default="3st", help=f"comma-separated, of {', '.join(CONFIGS)}")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--mask", choices=("padding",), help="a key-padding mask (not with causal rows)")
    p.add_argument("--out", default=".")
    args = p.parse_args(argv)
    require_gpu("the attention A/B")
    configs = args.configs.split(",")
    unknown = [c for c in configs if c not in CONFIGS]
    if unknown:
        p.error(f"unknown config(s) {unknown}; known: {list(CONFIGS)}")
    shapes = [tuple(int(x) for x in s.split(",")) for s in args.shape] if args.shape else SHAPES
    causal = {"both": (False, True), "yes": (True,), "no": (False,)}[args.causal]
    if args.mask and True in causal:
        p.error("a padding mask runs without causal rows (--causal no), as SDPA takes one or the other")
    with tempfile.TemporaryDirectory() as workdir:
        loaded = [load_revision(rev, Path(workdir)) for rev in args.rev]
        kernels = {label: module for label, _, module in loaded}
        rows = []
        for shape in shapes:
            for c in causal:
                rows.append(ab_row(shape, c, kernels, configs, args.rounds, args.mask == "padding"))
                sdpa = rows[-1]["ms"]["sdpa"]
                print(f"{shape} {'causal' if c else 'full'}: " + " | ".join(
                    f"{name} {ms:.4f} ms ({sdpa / ms:.3f}x)" for name, ms in rows[-1]["ms"].items()), flush=True)
                torch.cuda.empty_cache()
    out = Path(args.out) / "attention-ab.json"
    out.write_text(json.dumps({"environment": environment(),
                               "revisions": {label: subject for label, subject, _ in loaded}, "rounds": args.rounds,
                               "rows": rows}, indent=1))
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
