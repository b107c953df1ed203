"""`trident bench kernels`: the GEMM and conv templates (kernels/matmul.py, kernels/conv.py) beside
cuBLAS and cuDNN, on the GPU.

    trident bench kernels [--only gemm,conv] [--quick] [--rep 100] [--out bench-out]

GEMM 8192^3 (fp16 with B row-major and K-major, int8 with B K-major) and every distinct ResNet-50
conv at --batch, channels-last. Without --quick, every candidate config of each template is timed
(compiled in parallel first) and the best one is reported beside the heuristic's. Prints a table
and writes every measurement, each config tried included, to <out>/<gpu>-kernels.json. `trident
bench`'s kernel section calls the same functions.
"""
from __future__ import annotations

import argparse
import math

import torch

from trident.tools.benchmarks.results import ResultsFile, require_gpu
from trident.tools.benchmarks.shapes import RESNET50_CONVS
from trident.tools.benchmarks.sweep import Case, cfg_text, config_candidates, default_workers, precompile
from trident.compiler.timing import config_ms

HELP = "the GEMM and conv templates beside cuBLAS / cuDNN (GPU)"


def _best(fn_of_cfg, configs, rep, timer):
    trials = [(cfg, timer(lambda c=cfg: fn_of_cfg(c), rep)) for cfg in configs]
    best_cfg, best_ms = min(trials, key=lambda t: t[1])
    return best_cfg, best_ms, [{"config": c.to_dict(), "ms": ms} for c, ms in trials]


def bench_gemm(dtype_name: str, size: int, quick: bool, rep: int, device="cuda", timer=config_ms) -> dict:
    """C = A @ B at size^3: dtype_name fp16 (B [K, N]), fp16-kmajor (B stored [N, K], as engines
    store weights) or int8 (B K-major, int32 C), beside cuBLAS / torch._int_mm."""
    from trident.kernels.matmul import candidate_configs, heuristic_config, matmul

    M = N = K = size
    g = torch.Generator(device=device).manual_seed(0)
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (M, K), device=device, dtype=torch.int8, generator=g)
        b_nk = torch.randint(-128, 128, (N, K), device=device, dtype=torch.int8, generator=g)
        dtype = torch.int8
        b_kn = b_nk.t().contiguous()
        # cuBLAS int8 through torch._int_mm; try both B layouts and keep its best.
        ref_ms = min(timer(lambda: torch._int_mm(a, b_kn), rep), timer(lambda: torch._int_mm(a, b_nk.t()), rep))
        run = lambda cfg: matmul(a, b_nk, b_k_major=True, config=cfg)  # noqa: E731
        ref_name, unit = "torch._int_mm", "TOPS"
    else:
        dtype = torch.float16
        a = torch.randn((M, K), device=device, dtype=dtype, generator=g)
        b_kn = torch.randn((K, N), device=device, dtype=dtype, generator=g)
        ref_ms = timer(lambda: torch.matmul(a, b_kn), rep)
        if dtype_name == "fp16-kmajor":
            b_nk = b_kn.t().contiguous()
            run = lambda cfg: matmul(a, b_nk, b_k_major=True, config=cfg)  # noqa: E731
        else:
            run = lambda cfg: matmul(a, b_kn, config=cfg)  # noqa: E731
        ref_name, unit = "torch.matmul (cuBLAS)", "TFLOP/s"
    out_bytes = 4 if dtype == torch.int8 else 2  # matmul() gives int8 inputs an int32 C
    configs = [heuristic_config(M, N, K, dtype, out_bytes)] if quick else candidate_configs(M, N, K, dtype)
    best_cfg, ms, trials = _best(run, configs, rep, timer)
    per_s = lambda t: 2 * M * N * K / (t * 1e-3) / 1e12  # noqa: E731
    k_major = "int8" in dtype_name or "kmajor" in dtype_name
    return {"name": f"{dtype_name.split('-')[0]} GEMM {M}x{N}x{K}" + (" (B K-major)" if k_major else ""),
            "unit": unit, "ours_ms": ms, "ref_ms": ref_ms, "ours": per_s(ms), "ref": per_s(ref_ms),
            "ref_name": ref_name, "speedup": ref_ms / ms, "best_config": best_cfg.to_dict(), "trials": trials}


def bench_conv(shape, batch: int, quick: bool, rep: int, device="cuda", timer=config_ms) -> dict:
    """One ResNet-50 conv (a RESNET50_CONVS row) in fp16, channels-last, beside cuDNN."""
    import torch.nn.functional as F

    from trident.kernels.conv import conv2d_nhwc, pack_conv_weight

    C, H, OC, k, s, p, count = shape
    g = torch.Generator(device=device).manual_seed(0)
    x = torch.randn((batch, C, H, H), device=device, dtype=torch.float16, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn((OC, C, k, k), device=device, dtype=torch.float16, generator=g) / math.sqrt(C * k * k)
    w_cl = w.contiguous(memory_format=torch.channels_last)
    w_packed = pack_conv_weight(w)  # an engine stores weights packed once
    OH = (H + 2 * p - k) // s + 1
    M = batch * OH * OH
    ref_ms = timer(lambda: F.conv2d(x, w_cl, None, s, p), rep)
    # A 1x1 stride-1 conv runs as a GEMM: its candidates are the GEMM template's (the heuristic first).
    configs = config_candidates(Case("conv", "fp16", shape), batch)
    configs = configs[:1] if quick else configs
    run = lambda cfg: conv2d_nhwc(x, w_packed, None, s, p, config=cfg, prepacked=True)  # noqa: E731
    best_cfg, ms, trials = _best(run, configs, rep, timer)
    flops = 2 * M * OC * C * k * k
    return {"name": f"conv C{C} {H}x{H} -> OC{OC} k{k} s{s} p{p}", "count_in_resnet50": count, "batch": batch,
            "ours_ms": ms, "cudnn_ms": ref_ms, "ours_tflops": flops / (ms * 1e-3) / 1e12,
            "cudnn_tflops": flops / (ref_ms * 1e-3) / 1e12, "speedup": ref_ms / ms,
            "best_config": best_cfg.to_dict(), "trials": trials}


def _precompile(only: set, size: int, batch: int) -> None:
    """Compile every candidate config of the K-major GEMMs and the convs in parallel processes
    (sweep.py), so the timing loop loads binaries instead of compiling one by one."""
    cases = [Case("gemm", "fp16", (size, size, size))] if "gemm" in only else []
    cases += [Case("conv", "fp16", shape) for shape in RESNET50_CONVS if "conv" in only]
    jobs = [(case, cfg) for case in cases for cfg in config_candidates(case, batch)]
    precompile(jobs, default_workers(), batch)


def conv_summary(convs: list[dict]) -> dict:
    """Geometric mean of cuDNN / ours over the shapes, and the network's convs summed by use."""
    ok = [r for r in convs if math.isfinite(r["ours_ms"])]
    if not ok:
        return {}
    ours = sum(r["ours_ms"] * r["count_in_resnet50"] for r in ok)
    ref = sum(r["cudnn_ms"] * r["count_in_resnet50"] for r in ok)
    return {"conv_geomean_speedup": math.exp(sum(math.log(r["speedup"]) for r in ok) / len(ok)),
            "conv_network_weighted": {"ours_ms": ours, "cudnn_ms": ref, "speedup": ref / ours}}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", default="gemm,conv", help="comma list of: gemm, conv")
    p.add_argument("--quick", action="store_true", help="heuristic config only (no config sweep)")
    p.add_argument("--rep", type=int, default=100, help="timing budget per measurement in ms")
    p.add_argument("--size", type=int, default=8192, help="GEMM M=N=K")
    p.add_argument("--batch", type=int, default=256, help="conv batch size")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    require_gpu("trident bench kernels")
    torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm: a fair baseline
    only = set(args.only.split(","))
    if not args.quick:
        _precompile(only, args.size, args.batch)
    results = ResultsFile.in_dir(args.out, "kernels", quick=args.quick, batch=args.batch, gemm=[], conv=[])
    if "gemm" in only:
        print(f"{'GEMM':<36}{'ours':>10}{'ref':>10}  unit      speedup  best config")
        for dt in ("fp16", "fp16-kmajor", "int8"):
            r = bench_gemm(dt, args.size, args.quick, args.rep)
            results.data["gemm"].append(r)
            results.save()
            print(f"{r['name']:<36}{r['ours']:>10.1f}{r['ref']:>10.1f}  {r['unit']:<8}{r['speedup']:>8.2f}x  "
                  f"{cfg_text(r['best_config'])}", flush=True)
    if "conv" in only:
        print(f"\nResNet-50 convs, fp16, batch {args.batch}, channels-last (ms; speedup = cuDNN / ours)")
        print(f"{'shape':<38}{'x':>3}{'ours':>9}{'cuDNN':>9}{'TFLOP/s':>9}{'speedup':>9}  best config")
        for shape in RESNET50_CONVS:
            r = bench_conv(shape, args.batch, args.quick, args.rep)
            results.data["conv"].append(r)
            results.save()
            print(f"{r['name']:<38}{shape[-1]:>3}{r['ours_ms']:>9.3f}{r['cudnn_ms']:>9.3f}{r['ours_tflops']:>9.0f}"
                  f"{r['speedup']:>8.2f}x  {cfg_text(r['best_config'])}", flush=True)
        summary = conv_summary(results.data["conv"])
        results.data.update(summary)
        if summary:
            w = summary["conv_network_weighted"]
            print(f"geometric mean speedup: {summary['conv_geomean_speedup']:.2f}x; all ResNet-50 convs "
                  f"weighted by use: ours {w['ours_ms']:.2f} ms vs cuDNN {w['cudnn_ms']:.2f} ms "
                  f"({w['speedup']:.2f}x)")
    print(f"wrote {results.save()}")
    return 0
