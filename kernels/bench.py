"""GPU microbenchmarks of the kernel templates against cuBLAS / cuDNN.

    python -m trident.kernels.bench [--json out.json] [--only gemm,conv] [--quick] [--rep 100]

Prints a table and (with --json) writes every measurement, including each config tried, so good configs
can be read off. Benchmarks never assert a timing. Needs a CUDA GPU.
"""
from __future__ import annotations

import argparse
import json
import math
import platform
import sys

import torch

from trident.compiler.timing import cold_kernel_ms

# (C, H=W, OC, kernel, stride, pad, times used in the network) for every distinct ResNet-50 (v1.5) conv.
RESNET50_CONVS = [
    (3, 224, 64, 7, 2, 3, 1),
    (64, 56, 64, 1, 1, 0, 1), (64, 56, 64, 3, 1, 1, 3), (64, 56, 256, 1, 1, 0, 4), (256, 56, 64, 1, 1, 0, 2),
    (256, 56, 128, 1, 1, 0, 1), (128, 56, 128, 3, 2, 1, 1), (128, 28, 512, 1, 1, 0, 4), (256, 56, 512, 1, 2, 0, 1),
    (512, 28, 128, 1, 1, 0, 3), (128, 28, 128, 3, 1, 1, 3),
    (512, 28, 256, 1, 1, 0, 1), (256, 28, 256, 3, 2, 1, 1), (256, 14, 1024, 1, 1, 0, 6), (512, 28, 1024, 1, 2, 0, 1),
    (1024, 14, 256, 1, 1, 0, 5), (256, 14, 256, 3, 1, 1, 5),
    (1024, 14, 512, 1, 1, 0, 1), (512, 14, 512, 3, 2, 1, 1), (512, 7, 2048, 1, 1, 0, 3), (1024, 14, 2048, 1, 2, 0, 1),
    (2048, 7, 512, 1, 1, 0, 2), (512, 7, 512, 3, 1, 1, 2),
]


DEVICE = "cuda"


def _bench(fn, rep: int, graph: bool = True) -> float:
    """Milliseconds per call on the GPU; inf when the call fails (a config that cannot compile or run).
    graph: time CUDA-graph replays (graph_ms); else launches, as do_bench's median."""
    from triton.testing import do_bench

    try:
        fn()
        torch.cuda.synchronize()
        if not graph:
            return do_bench(fn, warmup=max(10, rep // 4), rep=rep, return_mode="median")
        return graph_ms(fn, rep)
    except Exception as exc:  # noqa: BLE001 - a failing config is a data point, not a crash
        print(f"    (failed: {type(exc).__name__}: {str(exc).splitlines()[0][:100] if str(exc) else ''})",
              file=sys.stderr)
        return math.inf


def graph_ms(fn, rep: int, rounds: int = 7) -> float:
    """GPU time of fn with a cold L2, host launch cost excluded (trident.compiler.timing)."""
    return cold_kernel_ms(fn, rep_ms=rep, rounds=rounds)


def _best(fn_of_cfg, configs, rep):
    trials = [(cfg, _bench(lambda c=cfg: fn_of_cfg(c), rep)) for cfg in configs]
    best_cfg, best_ms = min(trials, key=lambda t: t[1])
    return best_cfg, best_ms, [{"config": c.to_dict(), "ms": ms} for c, ms in trials]


def bench_gemm(dtype_name: str, size: int, quick: bool, rep: int) -> dict:
    from trident.kernels.matmul import candidate_configs, heuristic_config, matmul

    M = N = K = size
    g = torch.Generator(device=DEVICE).manual_seed(0)
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (M, K), device=DEVICE, dtype=torch.int8, generator=g)
        b_nk = torch.randint(-128, 128, (N, K), device=DEVICE, dtype=torch.int8, generator=g)  # K-major weight
        dtype = torch.int8
        b_kn = b_nk.t().contiguous()
        # cuBLAS int8 through torch._int_mm; try both B layouts and keep its best.
        ref_ms = min(_bench(lambda: torch._int_mm(a, b_kn), rep), _bench(lambda: torch._int_mm(a, b_nk.t()), rep))
        run = lambda cfg: matmul(a, b_nk, b_k_major=True, config=cfg)  # noqa: E731
        ref_name, unit = "torch._int_mm", "TOPS"
    else:
        dtype = torch.float16
        a = torch.randn((M, K), device=DEVICE, dtype=dtype, generator=g)
        b_kn = torch.randn((K, N), device=DEVICE, dtype=dtype, generator=g)
        ref_ms = _bench(lambda: torch.matmul(a, b_kn), rep)
        if dtype_name == "fp16-kmajor":  # the layout an engine stores constant weights in
            b_nk = b_kn.t().contiguous()
            run = lambda cfg: matmul(a, b_nk, b_k_major=True, config=cfg)  # noqa: E731
        else:
            run = lambda cfg: matmul(a, b_kn, config=cfg)  # noqa: E731
        ref_name, unit = "torch.matmul (cuBLAS)", "TFLOP/s"
    out_bytes = 4 if dtype == torch.int8 else 2  # matmul() gives int8 inputs an int32 C
    configs = [heuristic_config(M, N, K, dtype, out_bytes)] if quick else candidate_configs(M, N, K, dtype)
    best_cfg, ms, trials = _best(run, configs, rep)
    per_s = lambda t: 2 * M * N * K / (t * 1e-3) / 1e12  # noqa: E731
    return {"name": f"{dtype_name.split('-')[0]} GEMM {M}x{N}x{K}" + (" (B K-major)" if "int8" in dtype_name
                                                                      or "kmajor" in dtype_name else ""),
            "unit": unit, "ours_ms": ms, "ref_ms": ref_ms, "ours": per_s(ms), "ref": per_s(ref_ms),
            "ref_name": ref_name, "speedup": ref_ms / ms, "best_config": best_cfg.to_dict(), "trials": trials}


def bench_conv(shape, batch: int, quick: bool, rep: int) -> dict:
    import torch.nn.functional as F

    from trident.kernels.conv import conv2d_nhwc, pack_conv_weight
    from trident.kernels.sweep import Case, config_candidates

    C, H, OC, k, s, p, count = shape
    g = torch.Generator(device=DEVICE).manual_seed(0)
    x = torch.randn((batch, C, H, H), device=DEVICE, dtype=torch.float16, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn((OC, C, k, k), device=DEVICE, dtype=torch.float16, generator=g) / math.sqrt(C * k * k)
    w_cl = w.contiguous(memory_format=torch.channels_last)
    w_packed = pack_conv_weight(w)  # an engine stores weights packed once
    OH = (H + 2 * p - k) // s + 1
    M = batch * OH * OH
    ref_ms = _bench(lambda: F.conv2d(x, w_cl, None, s, p), rep)
    # A 1x1 stride-1 conv runs as a GEMM: its candidates are the GEMM template's (the heuristic first).
    configs = config_candidates(Case("conv", "fp16", shape), batch)
    configs = configs[:1] if quick else configs
    run = lambda cfg: conv2d_nhwc(x, w_packed, None, s, p, config=cfg, prepacked=True)  # noqa: E731
    best_cfg, ms, trials = _best(run, configs, rep)
    flops = 2 * M * OC * C * k * k
    return {"name": f"conv C{C} {H}x{H} -> OC{OC} k{k} s{s} p{p}", "count_in_resnet50": count, "batch": batch,
            "ours_ms": ms, "cudnn_ms": ref_ms, "ours_tflops": flops / (ms * 1e-3) / 1e12,
            "cudnn_tflops": flops / (ref_ms * 1e-3) / 1e12, "speedup": ref_ms / ms,
            "best_config": best_cfg.to_dict(), "trials": trials}


def _precompile(only: set, size: int, batch: int) -> None:
    """Compile every candidate config of the K-major GEMMs and the convs in parallel processes
    (kernels/sweep.py), so the timing loop below loads binaries instead of compiling one by one."""
    from trident.kernels.sweep import Case, config_candidates, default_workers, precompile

    cases = [Case("gemm", "fp16", (size, size, size))] if "gemm" in only else []
    cases += [Case("conv", "fp16", shape) for shape in RESNET50_CONVS if "conv" in only]
    jobs = [(case, cfg) for case in cases for cfg in config_candidates(case, batch)]
    print(f"compiling {len(jobs)} candidate configs in {default_workers()} processes", flush=True)
    precompile(jobs, default_workers(), batch)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", help="write all results to this file")
    ap.add_argument("--only", default="gemm,conv", help="comma list of: gemm, conv")
    ap.add_argument("--quick", action="store_true", help="heuristic config only (no config sweep)")
    ap.add_argument("--rep", type=int, default=100, help="timing budget per measurement in ms")
    ap.add_argument("--size", type=int, default=8192, help="GEMM M=N=K")
    ap.add_argument("--batch", type=int, default=256, help="conv batch size")
    args = ap.parse_args(argv)

    if not torch.cuda.is_available():
        print("trident.kernels.bench: no CUDA GPU here; these microbenchmarks only run on a GPU.", file=sys.stderr)
        return 2
    import trident.kernels  # noqa: F401  (before triton, as everywhere in trident)

    import triton

    from trident.kernels.sweep import cfg_text  # (sweep imports this module: not at the top)

    torch.backends.cudnn.benchmark = True  # let cuDNN pick its fastest algorithm: a fair baseline
    only = set(args.only.split(","))
    if not args.quick:
        _precompile(only, args.size, args.batch)
    result = {"device": torch.cuda.get_device_name(), "capability": list(torch.cuda.get_device_capability()),
              "torch": torch.__version__, "triton": triton.__version__, "python": platform.python_version(),
              "gemm": [], "conv": []}

    if "gemm" in only:
        print(f"{'GEMM':<36}{'ours':>10}{'ref':>10}  unit      speedup  best config")
        for dt in ("fp16", "fp16-kmajor", "int8"):
            r = bench_gemm(dt, args.size, args.quick, args.rep)
            result["gemm"].append(r)
            print(f"{r['name']:<36}{r['ours']:>10.1f}{r['ref']:>10.1f}  {r['unit']:<8}{r['speedup']:>8.2f}x  "
                  f"{cfg_text(r['best_config'])}", flush=True)

    if "conv" in only:
        print(f"\nResNet-50 convs, fp16, batch {args.batch}, channels-last (ms; speedup = cuDNN / ours)")
        print(f"{'shape':<38}{'x':>3}{'ours':>9}{'cuDNN':>9}{'TFLOP/s':>9}{'speedup':>9}  best config")
        for shape in RESNET50_CONVS:
            r = bench_conv(shape, args.batch, args.quick, args.rep)
            result["conv"].append(r)
            print(f"{r['name']:<38}{shape[-1]:>3}{r['ours_ms']:>9.3f}{r['cudnn_ms']:>9.3f}{r['ours_tflops']:>9.0f}"
                  f"{r['speedup']:>8.2f}x  {cfg_text(r['best_config'])}", flush=True)
        ok = [r for r in result["conv"] if math.isfinite(r["ours_ms"])]
        if ok:
            geo = math.exp(sum(math.log(r["speedup"]) for r in ok) / len(ok))
            ours = sum(r["ours_ms"] * r["count_in_resnet50"] for r in ok)
            ref = sum(r["cudnn_ms"] * r["count_in_resnet50"] for r in ok)
            result["conv_geomean_speedup"] = geo
            result["conv_network_weighted"] = {"ours_ms": ours, "cudnn_ms": ref, "speedup": ref / ours}
            print(f"geometric mean speedup over {len(ok)} shapes: {geo:.2f}x; all ResNet-50 convs weighted by use: "
                  f"ours {ours:.2f} ms vs cuDNN {ref:.2f} ms ({ref / ours:.2f}x)")

    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=1, default=str)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
