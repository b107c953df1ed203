"""fp32 dots on the FMA units ("ieee") against the tensor cores ("tf32x3": three TF32 products) in
trident's attention, convolution and GEMM templates, beside torch: SDPA (its memory-efficient kernel
multiplies fp32 as 3xTF32 too), cuDNN and cuBLAS in true fp32 and in TF32. Each runner's relative
error against float64 beside its time (triton.testing.do_bench, warm L2); a few tiles of each template
at each precision; then whether an inf or NaN operand gives what IEEE dots give. Prints a table and
writes JSON:

    python3 scripts/fp32_dots.py --out gpu-out [--parts attention,conv,gemm,nonfinite]

On a machine without a GPU, --smoke runs tiny shapes through Triton's interpreter (errors only)."""
import argparse
import json
import os
import sys

import torch
import torch.nn.functional as F
import triton

from trident.kernels import attention as att
from trident.kernels import conv, matmul as mm
from trident.kernels.common import tile_config

ATTENTION = [(8, 12, 197, 64), (8, 12, 1370, 64), (32, 12, 128, 64), (4, 16, 1024, 128)]  # B, H, L, D
CONVS = [(32, 64, 56, 64), (32, 128, 28, 128), (32, 256, 14, 256), (32, 512, 7, 512)]  # N, C, H = W, OC; 3x3
GEMMS = [(6304, 3072, 768), (6304, 768, 3072), (4096, 4096, 4096)]  # M, N, K
ATTENTION_TILES = [(64, 64, 4, 2), (64, 32, 4, 3), (128, 64, 8, 2), (128, 32, 8, 2), (64, 64, 4, 3), (64, 32, 4, 2)]
CONV_TILES = [(128, 128, 32, 8, 3), (128, 64, 32, 4, 3), (128, 128, 16, 8, 4), (64, 128, 32, 4, 3)]
GEMM_TILES = [(128, 128, 32, 8, 3), (128, 128, 32, 4, 3), (128, 256, 32, 8, 3), (128, 128, 16, 8, 4)]


class Bench:
    def __init__(self, device: str, smoke: bool):
        self.device, self.smoke, self.rows = device, smoke, []

    def time(self, fn) -> float:
        return 1.0 if self.smoke else triton.testing.do_bench(fn, warmup=10, rep=60)

    def record(self, kind: str, shape: str, runner: str, fn, ref: torch.Tensor, flops: float) -> None:
        try:
            err = ((fn().double() - ref).norm() / ref.norm()).item()
            ms = self.time(fn)
        except Exception as e:  # noqa: BLE001  (a tile that does not compile or fit: said, and the rest go on)
            print(f"{kind:9s} {shape:24s} {runner:32s} failed: {type(e).__name__}: {str(e)[:100]}", flush=True)
            return
        self.rows.append(dict(kind=kind, shape=shape, runner=runner, ms=ms, tflops=flops / ms / 1e9, rel_err=err))
        print(f"{kind:9s} {shape:24s} {runner:32s} {ms:9.3f} ms {flops / ms / 1e9:7.1f} TFLOP/s  err {err:.1e}",
              flush=True)


def attention_rows(b: Bench) -> None:
    for B, H, L, D in [(1, 2, 37, 64)] if b.smoke else ATTENTION:
        q, k, v = (torch.randn(B, H, L, D, device=b.device) for _ in range(3))
        ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
        shape, flops = f"{B}x{H}x{L}x{D}", 4 * B * H * L * L * D
        b.record("attention", shape, "torch SDPA", lambda: F.scaled_dot_product_attention(q, k, v), ref, flops)
        b.record("attention", shape, "ieee, heuristic tile", lambda: att.attention(q, k, v, precision="ieee"),
                 ref, flops)
        for bm, bn, w, s in ATTENTION_TILES:
            cfg = att.attention_config(bm, bn, w, s)
            b.record("attention", shape, f"tf32x3 {bm}x{bn} w{w} s{s}",
                     lambda: att.attention(q, k, v, precision="tf32x3", config=cfg), ref, flops)
        cfg = att.attention_config(64, 64, 4, 2)
        b.record("attention", shape, "tf32 64x64 w4 s2", lambda: att.attention(q, k, v, precision="tf32", config=cfg),
                 ref, flops)


def _with_tf32(fn, on: bool):
    def run():
        torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = on
        try:
            return fn()
        finally:
            torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    return run


def conv_rows(b: Bench) -> None:
    for N, C, HW, OC in [(1, 16, 5, 16)] if b.smoke else CONVS:
        x = torch.randn(N, C, HW, HW, device=b.device).to(memory_format=torch.channels_last)
        w = torch.randn(OC, C, 3, 3, device=b.device) / (C * 9) ** 0.5
        ref = F.conv2d(x.double(), w.double(), padding=1)
        shape, flops = f"{N}x{C}x{HW}x{HW} ->{OC}", 2 * N * OC * HW * HW * C * 9
        for on in (False, True):
            b.record("conv", shape, f"cuDNN {'tf32' if on else 'fp32'}",
                     _with_tf32(lambda: F.conv2d(x, w, padding=1), on), ref, flops)
        b.record("conv", shape, "ieee, heuristic tile",
                 lambda: conv.conv2d_nhwc(x, w, padding=1, input_precision="ieee"), ref, flops)
        for bm, bn, bk, warps, stages in CONV_TILES:
            cfg = tile_config(bm, min(bn, OC), bk, 8, warps, stages)
            b.record("conv", shape, f"tf32x3 {bm}x{bn}x{bk} w{warps} s{stages}", lambda: conv.conv2d_nhwc(
                x, w, padding=1, input_precision="tf32x3", config=cfg), ref, flops)


def gemm_rows(b: Bench) -> None:
    for M, N, K in [(33, 40, 48)] if b.smoke else GEMMS:
        x, y = torch.randn(M, K, device=b.device), torch.randn(K, N, device=b.device) / K ** 0.5
        ref = x.double() @ y.double()
        shape, flops = f"{M}x{N}x{K}", 2 * M * N * K
        for on in (False, True):
            b.record("gemm", shape, f"cuBLAS {'tf32' if on else 'fp32'}", _with_tf32(lambda: x @ y, on), ref, flops)
        b.record("gemm", shape, "ieee 128x128x16 w4 s4", lambda: mm.matmul(
            x, y, input_precision="ieee", config=tile_config(128, 128, 16, 8, 4, 4)), ref, flops)
        for bm, bn, bk, warps, stages in GEMM_TILES:
            cfg = tile_config(bm, bn, bk, 8, warps, stages)
            b.record("gemm", shape, f"tf32x3 {bm}x{bn}x{bk} w{warps} s{stages}",
                     lambda: mm.matmul(x, y, input_precision="tf32x3", config=cfg), ref, flops)


def nonfinite_rows(b: Bench) -> None:
    """An inf in an operand gives inf (the other operand positive) and a NaN gives NaN, as IEEE dots do:
    3xTF32 splits inf into inf and a remainder of inf - inf, which must not reach the sum."""
    x, y = torch.rand(64, 64, device=b.device) + 0.5, torch.rand(64, 48, device=b.device) + 0.5
    x[3, 5], x[7, 1] = float("inf"), float("nan")
    image = torch.rand(1, 16, 6, 6, device=b.device) + 0.5
    image[0, 3, 2, 2] = float("inf")
    w = torch.rand(16, 16, 3, 3, device=b.device) + 0.5
    for dots in ("ieee", "tf32x3"):
        c = mm.matmul(x, y, input_precision=dots, config=tile_config(64, 64, 32, 8, 4, 2))
        finite = [i for i in range(64) if i not in (3, 7)]
        gemm_ok = bool(torch.isposinf(c[3]).all() and c[7].isnan().all() and c[finite].isfinite().all())
        out = conv.conv2d_nhwc(image, w, padding=1, input_precision=dots, config=tile_config(64, 16, 16, 8, 4, 2))
        conv_ok = bool(torch.isposinf(out[0, :, 1:4, 1:4]).all() and not out.isnan().any())
        b.rows.append(dict(kind="nonfinite", runner=dots, gemm_ok=gemm_ok, conv_ok=conv_ok))
        print(f"nonfinite {dots:6s}: gemm inf/NaN rows as IEEE: {gemm_ok}; conv inf window as IEEE: {conv_ok}")


PARTS = {"attention": attention_rows, "conv": conv_rows, "gemm": gemm_rows, "nonfinite": nonfinite_rows}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="gpu-out")
    p.add_argument("--parts", default="nonfinite,attention,conv,gemm")
    p.add_argument("--smoke", action="store_true", help="tiny shapes on the CPU, through the interpreter")
    args = p.parse_args()
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("fp32_dots: no CUDA GPU (--smoke runs tiny shapes on the CPU)")
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    b = Bench("cpu" if args.smoke else "cuda", args.smoke)
    gpu = "cpu" if args.smoke else torch.cuda.get_device_name()
    print(gpu, "torch", torch.__version__, "triton", triton.__version__)
    os.makedirs(args.out, exist_ok=True)
    path = os.path.join(args.out, gpu.lower().replace(" ", "-") + "-fp32-dots.json")
    for part in args.parts.split(","):
        PARTS[part](b)
        with open(path, "w") as f:  # after each part: a run stopped by its time limit keeps the parts done
            json.dump({"gpu": gpu, "torch": torch.__version__, "triton": triton.__version__, "rows": b.rows}, f,
                      indent=1)


if __name__ == "__main__":
    main()
