"""Kernel microbenchmarks beside their anchors, as % of the measured roofline.

GEMMs (FP16 and INT8, 8192^3 through templates.py, transformer shapes here) beside cuBLAS and
torch._int_mm; ResNet-50 convolutions and ConvNeXt-T's 7x7 depthwise convolutions beside cuDNN; a fused 4-op elementwise chain and
softmax / layer-norm row kernels (trident.compiler graphs) beside a device copy of the same bytes.
"""
from __future__ import annotations

import math
import sys
import traceback
from typing import Callable

import torch

from trident.tools.benchmarks import templates
from trident.tools.benchmarks.shapes import CONVNEXT_T_DEPTHWISE, RESNET50_CONVS, TRANSFORMER_GEMMS

DRY_GEMMS = [(64, 32, 32)]


def _record(name, kind, dtype, ms, flops, nbytes, ref_name=None, ref_ms=None, **extra) -> dict:
    rec = dict(name=name, kind=kind, dtype=dtype, status="ok", ms=ms, flops=flops, bytes=nbytes,
               ref_name=ref_name, ref_ms=ref_ms, **extra)
    if ms and math.isfinite(ms):
        rec["tflops"] = flops / (ms * 1e-3) / 1e12
        rec["gbps"] = nbytes / (ms * 1e-3) / 1e9
    if ref_ms and math.isfinite(ref_ms):
        rec["ref_tflops"] = flops / (ref_ms * 1e-3) / 1e12
        rec["ref_gbps"] = nbytes / (ref_ms * 1e-3) / 1e9
        if ms and math.isfinite(ms):
            rec["vs_ref"] = ref_ms / ms
    rec["intensity"] = flops / nbytes if nbytes else 0.0
    return rec


def roof_pct(rec: dict, peaks: dict) -> float | None:
    """Achieved / attainable (min of the compute peak and intensity x bandwidth), in %."""
    if "tflops" not in rec or not peaks:
        return None
    compute = peaks["int8_tops"] if rec["dtype"] == "int8" else peaks["tflops"]
    attainable = min(compute, rec["intensity"] * peaks["gbps"] / 1e3)
    return 100 * rec["tflops"] / attainable if attainable > 0 else None


def measure_peaks(ctx) -> dict:
    if not ctx.cuda:
        return {"tflops": 100.0, "gbps": 1000.0, "int8_tops": 200.0, "source": "dry run: made up"}
    from trident.tools.profiling import measure_peaks as measure

    peaks = measure(ctx.device, torch.float16)  # fp16 matmul 8192^3 and a 1 GiB copy
    n = 8192
    a = torch.randint(-128, 128, (n, n), device=ctx.device, dtype=torch.int8)
    b = torch.randint(-128, 128, (n, n), device=ctx.device, dtype=torch.int8).t()
    int8_ms = ctx.kernel_timer(lambda: torch._int_mm(a, b), 100)
    a = b = None
    torch.cuda.empty_cache()
    return {"tflops": peaks.tflops, "gbps": peaks.gbps, "int8_tops": 2 * n ** 3 / (int8_ms * 1e-3) / 1e12,
            "source": peaks.source + "; int8: torch._int_mm 8192^3"}


# ---------------------------------------------------------------------------- GEMMs ----
def gemm_square(ctx, dtype_name: str, size: int) -> dict:
    r = templates.bench_gemm(dtype_name, size, ctx.mode != "full", 100, ctx.device, ctx.kernel_timer)
    itemsize, out_size = (1, 4) if dtype_name == "int8" else (2, 2)
    nbytes = 2 * size * size * itemsize + size * size * out_size
    return _record(r["name"], "gemm", dtype_name.split("-")[0], r["ours_ms"], 2 * size ** 3, nbytes,
                   r["ref_name"], r["ref_ms"], best_config=r["best_config"],
                   configs_tried=len(r["trials"]))


def gemm_shape(ctx, dtype_name: str, M: int, N: int, K: int) -> dict:
    """C[M, N] = A[M, K] @ W^T with W stored [N, K] (K-major, as engines store weights)."""
    from trident.kernels.matmul import heuristic_config, matmul

    g = torch.Generator(device=ctx.device).manual_seed(0)
    if dtype_name == "int8":
        a = torch.randint(-128, 128, (M, K), device=ctx.device, dtype=torch.int8, generator=g)
        w = torch.randint(-128, 128, (N, K), device=ctx.device, dtype=torch.int8, generator=g)
        ref, ref_name, itemsize, out_size = (lambda: torch._int_mm(a, w.t())), "torch._int_mm", 1, 4
    else:
        a = torch.randn((M, K), device=ctx.device, dtype=torch.float16, generator=g)
        w = torch.randn((N, K), device=ctx.device, dtype=torch.float16, generator=g)
        ref, ref_name, itemsize, out_size = (lambda: a @ w.t()), "torch.matmul (cuBLAS)", 2, 2
    cfg = heuristic_config(M, N, K, a.dtype, out_size)
    ms = ctx.kernel_timer(lambda: matmul(a, w, b_k_major=True, config=cfg), 100)
    ref_ms = ctx.kernel_timer(ref, 100)
    return _record(f"{dtype_name} GEMM {M}x{N}x{K} (W K-major)", "gemm", dtype_name, ms, 2 * M * N * K,
                   (M * K + N * K) * itemsize + M * N * out_size, ref_name, ref_ms)


def conv_shape(ctx, shape, batch: int) -> dict:
    # the heuristic config: what an untuned engine runs
    r = templates.bench_conv(shape, batch, True, 100, ctx.device, ctx.kernel_timer)
    C, H, OC, k, s, p, count = shape
    OH = (H + 2 * p - k) // s + 1
    flops = 2 * batch * OH * OH * OC * C * k * k
    nbytes = 2 * (batch * C * H * H + OC * C * k * k + batch * OC * OH * OH)
    return _record(r["name"] + f" b{batch}", "conv", "fp16", r["ours_ms"], flops, nbytes,
                   "cuDNN", r["cudnn_ms"], count_in_resnet50=count)


def depthwise_shape(ctx, channels: int, size: int, k: int, batch: int, count: int) -> dict:
    """A 7x7 depthwise conv of ConvNeXt (groups = C, stride 1, same padding), fp16 channels-last,
    at the heuristic config, beside cuDNN. Memory-bound when each input is read from HBM once."""
    import torch.nn.functional as F

    from trident.kernels.conv import conv2d_nhwc, pack_depthwise_weight

    g = torch.Generator(device=ctx.device).manual_seed(0)
    x = torch.randn((batch, channels, size, size), device=ctx.device, dtype=torch.float16, generator=g)
    x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn((channels, 1, k, k), device=ctx.device, dtype=torch.float16, generator=g) / k
    packed, pad = pack_depthwise_weight(w), k // 2
    ours = conv2d_nhwc(x, packed, None, 1, pad, groups=channels, prepacked=True)
    torch.testing.assert_close(ours, F.conv2d(x, w, None, 1, pad, groups=channels), rtol=1e-2, atol=1e-2)
    ms = ctx.kernel_timer(lambda: conv2d_nhwc(x, packed, None, 1, pad, groups=channels, prepacked=True), 100)
    ref_ms = ctx.kernel_timer(lambda: F.conv2d(x, w, None, 1, pad, groups=channels), 100)
    pixels = batch * size * size
    return _record(f"depthwise C{channels} {size}x{size} k{k} b{batch}", "depthwise", "fp16", ms,
                   2 * pixels * channels * k * k, 2 * (2 * pixels * channels + channels * k * k),
                   "cuDNN", ref_ms, count_in_convnext_t=count)


# ------------------------------------------------------------- memory-bound kernels ----
def _graph_engine(ctx, graph):
    from trident.compiler.build import compile_graph, engine_from

    return engine_from(compile_graph(graph, "fp32"), device=ctx.device, cuda_graph=False)


def elementwise_chain(ctx, numel: int) -> dict:
    from trident.compiler.ir import GraphBuilder, TensorType

    b = GraphBuilder("chain4")
    x = b.input("x", TensorType((numel,), torch.float16))
    y = b.add1("mul", [x, b.constant(torch.tensor(1.5, dtype=torch.float16))])
    y = b.add1("add", [y, b.constant(torch.tensor(0.25, dtype=torch.float16))])
    y = b.add1("relu", [y])
    y = b.add1("sigmoid", [y])
    engine = _graph_engine(ctx, b.finish([y]))
    data = torch.randn(numel, device=ctx.device, dtype=torch.float16)
    return _memory_record(ctx, f"fused 4-op elementwise chain, fp16, {numel:,} elements",
                          "elementwise", engine, data, 4 * numel)


def row_kernel(ctx, op: str, rows: int, cols: int) -> dict:
    from trident.compiler.ir import GraphBuilder, TensorType

    b = GraphBuilder(op)
    x = b.input("x", TensorType((rows, cols), torch.float16))
    if op == "layer_norm":
        y = b.add1("layer_norm", [x, b.constant(torch.ones(cols, dtype=torch.float16)),
                                  b.constant(torch.zeros(cols, dtype=torch.float16))],
                   {"axis": -1, "epsilon": 1e-5})
        flops = 8 * rows * cols
    else:
        y = b.add1("softmax", [x], {"axis": -1})
        flops = 5 * rows * cols
    engine = _graph_engine(ctx, b.finish([y]))
    data = torch.randn(rows, cols, device=ctx.device, dtype=torch.float16)
    return _memory_record(ctx, f"{op} rows, fp16, {rows:,} x {cols}", "reduction", engine, data, flops)


def _memory_record(ctx, name, kind, engine, data, flops) -> dict:
    """Reads the input once and writes an output of the same size: bytes = 2 x input."""
    nbytes = 2 * data.numel() * data.element_size()
    dst = torch.empty_like(data)
    # Timed as launches: a captured copy_ becomes a copy-engine memcpy node in a CUDA graph (2.7 TB/s
    # on the H200, against 4.2 launched), and at 0.2 ms and more the host is not the bound.
    ms = ctx.kernel_timer(lambda: engine(data), 100, graph=False)
    copy_ms = ctx.kernel_timer(lambda: dst.copy_(data), 100, graph=False)
    rec = _record(name, kind, "fp16", ms, flops, nbytes, "device copy (same bytes)", copy_ms,
                  kernels=engine.num_kernels)
    rec["copy_fraction"] = rec.get("vs_ref")
    return rec


# ------------------------------------------------------------------------------ plan ----
def plan(ctx) -> list[tuple[str, Callable]]:
    if ctx.mode == "dry":
        return [("fp16 GEMM square", lambda: gemm_square(ctx, "fp16", 32)),
                ("int8 GEMM square", lambda: gemm_square(ctx, "int8", 32)),
                *[(f"{dt} GEMM {s}", lambda dt=dt, s=s: gemm_shape(ctx, dt, *s))
                  for dt in ("fp16", "int8") for s in DRY_GEMMS],
                ("conv", lambda: conv_shape(ctx, (8, 8, 16, 3, 1, 1, 1), 1)),
                ("depthwise", lambda: depthwise_shape(ctx, 8, 9, 7, 1, 1)),
                ("elementwise", lambda: elementwise_chain(ctx, 4096)),
                ("layer_norm", lambda: row_kernel(ctx, "layer_norm", 16, 64)),
                ("softmax", lambda: row_kernel(ctx, "softmax", 16, 64))]
    items = [("fp16 GEMM 8192^3", lambda: gemm_square(ctx, "fp16", 8192)),
             ("int8 GEMM 8192^3", lambda: gemm_square(ctx, "int8", 8192))]
    if ctx.mode == "full":
        items.append(("fp16 GEMM 8192^3 K-major", lambda: gemm_square(ctx, "fp16-kmajor", 8192)))
    items += [(f"{dt} GEMM {s}", lambda dt=dt, s=s: gemm_shape(ctx, dt, *s))
              for dt in ("fp16", "int8") for s in TRANSFORMER_GEMMS]
    items += [("elementwise chain", lambda: elementwise_chain(ctx, 1 << 28)),
              ("layer_norm", lambda: row_kernel(ctx, "layer_norm", 1 << 18, 768)),
              ("softmax", lambda: row_kernel(ctx, "softmax", 1 << 20, 256))]
    # Every distinct ResNet-50 conv at b256 beside cuDNN, in quick mode too (about a minute).
    items += [(f"conv {s}", lambda s=s: conv_shape(ctx, s, 256)) for s in RESNET50_CONVS]
    items += [(f"depthwise C{c}", lambda c=c, h=h, n=n: depthwise_shape(ctx, c, h, 7, 32, n))
              for c, h, n in CONVNEXT_T_DEPTHWISE]
    return items


def run_kernels(ctx, results: dict, write: Callable) -> list[dict]:
    if ctx.cuda:
        torch.backends.cudnn.benchmark = True  # cuDNN's fastest algorithm: a fair anchor
    try:
        results["peaks"] = measure_peaks(ctx)
    except Exception as exc:  # noqa: BLE001
        traceback.print_exc(file=sys.stderr)
        results["peaks"] = None
        results.setdefault("errors", []).append(f"peaks: {type(exc).__name__}: {exc}")
    write()
    records = results.setdefault("kernels", [])
    for name, fn in plan(ctx):
        ctx.log(f"[bench] kernel: {name}", flush=True)
        try:
            rec = fn()
            rec["roof_pct"] = roof_pct(rec, results["peaks"])
        except Exception as exc:  # noqa: BLE001
            traceback.print_exc(file=sys.stderr)
            rec = {"name": name, "status": "error", "error": f"{type(exc).__name__}: {exc}"[:300]}
        records.append(rec)
        if ctx.cuda:
            torch.cuda.empty_cache()
        write()
    return records
