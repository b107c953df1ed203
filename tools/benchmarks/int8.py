"""`trident bench int8`: INT8 on the GPU (prints tables and JSON, asserts nothing).

    trident bench int8 [--only gemm,resnet50,bert] [--batch 256] [--tune none|fast|full]
                       [--no-compile] [--profile] [--out bench-out]

  gemm      INT8 GEMM 8192^3: trident's tile with B stored K-major ([N, K], as engines store
            weights; heuristic config and the best of the candidate configs), the same tile with
            B row-major, the generated int8 linear-layer kernel (dequantize + bias + ReLU +
            requantize epilogue), and torch._int_mm, all in one run. TOPS = 2 M N K / time.
  resnet50  ResNet-50 at --batch (256): trident INT8 (entropy2, calibrated on random images) vs
            trident FP16 vs torch.compile FP16 (channels-last) vs torch eager FP16, img/s, and the
            INT8 engine's cosine similarity to fp32 eager.
  bert      BERT-base seq 128 batch 32: trident INT8 vs FP16 (sequences/s).

Writes <out>/<gpu>-int8.json (<gpu>-int8-tuned.json with --tune fast or full).
"""
from __future__ import annotations

import argparse
import time
from dataclasses import asdict

import torch

from trident.compiler.errors import TridentError
from trident.tools.benchmarks.results import ResultsFile, markdown_table, require_gpu
from trident.tools.benchmarks.suite import as_anchor
from trident.compiler.timing import bench_ms, config_ms

HELP = "INT8 on the GPU: the int8 GEMM, ResNet-50 and BERT INT8 engines beside FP16"


def _ms(fn, rep: int = 100) -> float:
    return config_ms(fn, rep, graph=False)


def bench_gemm(size: int = 8192) -> dict:
    from trident.kernels.matmul import candidate_configs, heuristic_config, matmul

    M = N = K = size
    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8, generator=g)
    b_nk = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g)
    b_kn = b_nk.t().contiguous()
    tops = lambda ms: 2 * M * N * K / ms / 1e9  # noqa: E731
    rows = {}
    if not torch.equal(matmul(a, b_nk, b_k_major=True), torch._int_mm(a, b_nk.t())):
        raise TridentError("int8 GEMM result differs from torch._int_mm: not timing a wrong kernel")
    rows["torch._int_mm"] = _ms(lambda: torch._int_mm(a, b_nk.t()))
    heur = heuristic_config(M, N, K, torch.int8, out_bytes=4)  # an int32 C, as _int_mm's
    rows["trident K-major (heuristic)"] = _ms(lambda: matmul(a, b_nk, b_k_major=True, config=heur))
    trials = [{"config": asdict(cfg), "ms": _ms(lambda c=cfg: matmul(a, b_nk, b_k_major=True, config=c))}
              for cfg in candidate_configs(M, N, K, torch.int8)]
    best = min(trials, key=lambda t: t["ms"])
    rows["trident K-major (best candidate)"] = best["ms"]
    rows["trident row-major B"] = _ms(lambda: matmul(a, b_kn, config=heur))
    rows["trident int8 linear layer (fused epilogue)"] = _bench_int8_layer(M, N, K)
    return {"M": M, "N": N, "K": K, "heuristic": asdict(heur), "best": best, "trials": trials,
            "ms": rows, "TOPS": {k: tops(v) for k, v in rows.items()}}


def _bench_int8_layer(M: int, N: int, K: int) -> float:
    """The kernel trident generates for int8 x -> qmatmul -> relu -> int8 (weights K-major)."""
    from trident.compiler.build import compile_graph, engine_from
    from trident.compiler.ir import GraphBuilder, TensorType

    b = GraphBuilder("int8_linear")
    x = b.input("x", TensorType((M, K), torch.int8))
    w = torch.randint(-127, 128, (N, K), dtype=torch.int8)
    y = b.add1("qmatmul", [x, b.constant(w, "w"), b.constant(torch.rand(N) * 0.01, "w_scale"),
                           b.constant(torch.randn(N).half(), "bias")],
               {"x_scale": 0.02, "dtype": torch.float16})
    y = b.add1("relu", [y])
    q = b.add1("quantize_linear", [y, b.constant(torch.tensor(0.05)), b.constant(torch.zeros((), dtype=torch.int8))],
               {"axis": 0, "narrow": True})
    engine = engine_from(compile_graph(b.finish([q]), "fp32"), cuda_graph=False)
    data = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8)
    return _ms(lambda: engine(data))


def _engine_ms(fn) -> float:
    return bench_ms(fn, warmup=10, rep=50)["median_ms"]


def _cos(a, b) -> float:
    return float(torch.nn.functional.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


def bench_model(name: str, batch: int, tune: str, with_compile: bool, calib_batches: int = 4,
                profile: bool = False) -> list[dict]:
    from trident.models import MODELS

    build, make_inputs = MODELS[name]
    model = build().eval().cuda()
    torch.manual_seed(0)
    inputs = tuple(x.cuda() for x in make_inputs(batch))
    calibration = [tuple(x.cuda() for x in make_inputs(batch)) for _ in range(calib_batches)]
    rows = []
    with torch.no_grad():
        reference = model(*inputs)
        for precision in ("int8", "fp16"):
            rows.append(_trident_row(model, inputs, reference, precision, tune, calibration, profile, name))
        anchor, anchor_in = as_anchor(build().eval().cuda(), inputs, torch.float16)
        rows.append(dict(runner="torch eager fp16", cosine=_cos(anchor(*anchor_in), reference),
                         ms=_engine_ms(lambda: anchor(*anchor_in))))
        if with_compile:
            start = time.perf_counter()
            compiled = torch.compile(anchor)
            compiled(*anchor_in)
            torch.cuda.synchronize()
            rows.append(dict(runner="torch.compile fp16", build_s=time.perf_counter() - start,
                             ms=_engine_ms(lambda: compiled(*anchor_in))))
    for row in rows:
        row.update(model=name, batch=batch, per_s=batch / row["ms"] * 1e3)
    fp16 = next(r for r in rows if r["runner"] == "trident fp16")
    for row in rows:
        row["vs_trident_fp16"] = fp16["ms"] / row["ms"]
    return rows


def _trident_row(model, inputs, reference, precision, tune, calibration, profile, name) -> dict:
    from trident.compiler import build_engine

    start = time.perf_counter()
    extra = {"calibration": calibration} if precision == "int8" else {}
    engine = build_engine(model, precision, inputs, tune=tune, **extra)
    out = engine(*inputs)[0]
    torch.cuda.synchronize()
    build_s = time.perf_counter() - start
    row = dict(runner=f"trident {precision}", build_s=build_s, kernels=engine.num_kernels,
               cosine=_cos(out, reference), ms=_engine_ms(lambda: engine(*inputs)))
    if profile:  # where each precision spends its time, kernel by kernel
        from trident.tools.profiling import profile_engine

        report = profile_engine(engine, inputs, peaks=None, measure=False)
        row["profile"] = report.to_json()
        print(f"\n{name} {precision}: " + "\n".join(str(report).splitlines()[:22]), flush=True)
    return row


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", default="gemm,resnet50,bert", help="comma list of: gemm, resnet50, bert")
    p.add_argument("--batch", type=int, default=256, help="ResNet-50 batch")
    p.add_argument("--tune", default="none", choices=["none", "fast", "full"],
                   help="trident engines' autotuning level (both precisions)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor")
    p.add_argument("--profile", action="store_true", help="time each kernel of both trident engines")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    require_gpu("trident bench int8")
    what = "int8" if args.tune == "none" else "int8-tuned"
    results = ResultsFile.in_dir(args.out, what, tune=args.tune, models=[])
    only = args.only.split(",")
    if "gemm" in only:
        gemm = results.data["gemm"] = bench_gemm()
        print(f"\nINT8 GEMM {gemm['M']}x{gemm['N']}x{gemm['K']}")
        print(markdown_table(["kernel", "ms", "TOPS"],
                             [[k, f"{ms:.3f}", f"{gemm['TOPS'][k]:.0f}"] for k, ms in gemm["ms"].items()]))
        results.save()
    for name, batch in (("resnet50", args.batch), ("bert_base", 32)):
        if name.split("_")[0] not in only and name not in only:
            continue
        rows = bench_model(name, batch, args.tune, not args.no_compile, profile=args.profile)
        results.data["models"] += rows
        print(f"\n{name}, batch {batch}")
        print(markdown_table(
            ["runner", "median ms", "items/s", "vs trident fp16", "cosine to fp32", "build s", "kernels"],
            [[r["runner"], f"{r['ms']:.3f}", f"{r['per_s']:.0f}", f"{r['vs_trident_fp16']:.2f}x",
              f"{r.get('cosine', float('nan')):.5f}", f"{r.get('build_s', float('nan')):.1f}",
              r.get("kernels", "")] for r in rows]), flush=True)
        results.save()
    print(f"wrote {results.save()}")
    return 0
