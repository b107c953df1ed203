"""What each part of a warp-specialized GEMM's epilogue costs (kernels/gemm_hopper.py, Hopper GPU).

ViT-B/16's fc1 (6,304 x 768 -> 3,072, fp16) on the WS kernel with epilogues of growing cost: none
stored (the K loops alone: a mask no row passes), a plain fp16 store, bias + GELU with nothing
stored, a bias added, GELU with a constant bias, SiLU (one exp2 and one division) with a constant
bias, bias + GELU stored (what a generated fp32 fc1 kernel runs) and bias + the 16-bit GELU stored
(prims.gelu_erf_half, what an fp16 fc1 kernel runs); cuBLAS (`F.linear`, then torch's GELU) beside
them. Timed with triton.testing.do_bench; prints a table and writes JSON:

    python3 scripts/ws_gemm_costs.py --out gpu-out [--tiles 128x128x64s6,128x128x64s6c]
"""
import argparse
import json
import os

import torch
import triton
import triton.language as tl
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from trident.kernels import gemm_hopper, prims


@triton.jit
def gelu_masked_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, bias, M, N, M_STORE = args
    mask = (offs_m[:, None] < M_STORE) & (offs_n[None, :] < N)
    b = tl.load(bias + offs_n, mask=offs_n < N).to(tl.float32)
    y = prims.gelu_erf(acc + b[None, :])
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], y.to(tl.float16), mask=mask)


@triton.jit
def gelu16_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, bias, M, N = args
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    b = tl.load(bias + offs_n, mask=offs_n < N).to(tl.float32)
    y = prims.gelu_erf_half(acc + b[None, :])
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], y.to(tl.float16), mask=mask)


@triton.jit
def store_masked_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, M, N, M_STORE = args
    mask = (offs_m[:, None] < M_STORE) & (offs_n[None, :] < N)
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], acc.to(tl.float16), mask=mask)


@gluon.jit
def ws_gelu_masked(out, bias, a_desc, b_desc, M, N, K, M_STORE, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                   BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, bias, M, N, M_STORE), gelu_masked_epilogue, True, BLOCK_M,
                            BLOCK_N, BLOCK_K, STAGES, GROUP_M, COALESCED)


@gluon.jit
def ws_store_masked(out, a_desc, b_desc, M, N, K, M_STORE, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                    BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, M, N, M_STORE), store_masked_epilogue, True, BLOCK_M,
                            BLOCK_N, BLOCK_K, STAGES, GROUP_M, COALESCED)


@triton.jit
def bias_store_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, bias, M, N = args
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    b = tl.load(bias + offs_n, mask=offs_n < N).to(tl.float32)
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], (acc + b[None, :]).to(tl.float16), mask=mask)


@triton.jit
def gelu_const_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, M, N = args
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    y = prims.gelu_erf(acc + 0.125)
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], y.to(tl.float16), mask=mask)


@triton.jit
def silu_const_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, M, N = args
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    x = acc + 0.125
    y = x / (1.0 + tl.exp2(-2.4554669595930156 * x))
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], y.to(tl.float16), mask=mask)


@gluon.jit
def ws_bias(out, bias, a_desc, b_desc, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
            BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, bias, M, N), bias_store_epilogue, True, BLOCK_M, BLOCK_N,
                            BLOCK_K, STAGES, GROUP_M, COALESCED)


@gluon.jit
def ws_gelu16(out, bias, a_desc, b_desc, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
              BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, bias, M, N), gelu16_epilogue, True, BLOCK_M, BLOCK_N,
                            BLOCK_K, STAGES, GROUP_M, COALESCED)


@gluon.jit
def ws_gelu_const(out, a_desc, b_desc, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, M, N), gelu_const_epilogue, True, BLOCK_M, BLOCK_N,
                            BLOCK_K, STAGES, GROUP_M, COALESCED)


@gluon.jit
def ws_silu_const(out, a_desc, b_desc, M, N, K, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
                  BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, M, N), silu_const_epilogue, True, BLOCK_M, BLOCK_N,
                            BLOCK_K, STAGES, GROUP_M, COALESCED)


# (BLOCK_M, BLOCK_N, BLOCK_K, stages, coalesced epilogue)
TILES = ((128, 128, 64, 6, False), (128, 128, 64, 6, True), (64, 128, 64, 8, False), (128, 64, 64, 8, False),
         (64, 256, 32, 8, True))


# the runs that store bias + GELU, checked against fp32 (the others leave other values in `out`)
STORED_GELU = ("bias + 16-bit GELU + store", "bias + GELU + store")


def _time(rows, name, fn, flops):
    from triton.testing import do_bench
    fn()
    torch.cuda.synchronize()
    ms = do_bench(fn, warmup=25, rep=200)
    rows.append({"runner": name, "us": ms * 1e3, "tflops": flops / ms / 1e9})
    print(f"| {name} | {ms * 1e3:.1f} | {flops / ms / 1e9:.0f} |", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=".")
    parser.add_argument("--tiles", help="comma-separated tiles to run, as BMxBNxBKsSTAGES[c] (c: coalesced); "
                        "default all")
    args = parser.parse_args()
    M, N, K = 6304, 3072, 768
    a = torch.randn(M, K, device="cuda", dtype=torch.float16)
    w = torch.randn(N, K, device="cuda", dtype=torch.float16)
    bias = torch.randn(N, device="cuda", dtype=torch.float16)
    out = torch.empty(M, N, device="cuda", dtype=torch.float16)
    flops = 2 * M * N * K
    rows = []
    print("| runner | us | TFLOP/s |\n|---|---|---|")
    _time(rows, "cuBLAS F.linear", lambda: torch.nn.functional.linear(a, w, bias), flops)
    _time(rows, "cuBLAS F.linear, then torch GELU",
          lambda: torch.nn.functional.gelu(torch.nn.functional.linear(a, w, bias)), flops)
    reference = torch.nn.functional.gelu(torch.nn.functional.linear(a.float(), w.float(), bias.float()))
    for bm, bn, bk, stages, coalesced in TILES:
        if args.tiles and f"{bm}x{bn}x{bk}s{stages}" + ("c" if coalesced else "") not in args.tiles.split(","):
            continue
        cfg = dict(BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, num_stages=stages, WS_COALESCED=int(coalesced))
        ad, bd = gemm_hopper.descriptors(a, w, M, N, K, K, 1, K, cfg)
        grid = gemm_hopper.grid(M, N, cfg, a.device)
        opts = gemm_hopper.launch_options(cfg)
        tag = f"WS {bm}x{bn}x{bk}, {stages} stages" + (", coalesced" if coalesced else "")
        runs = {"K loops only (nothing stored)": lambda: ws_store_masked[grid](out, ad, bd, M, N, K, 0, **opts),
                "store": lambda: ws_store_masked[grid](out, ad, bd, M, N, K, M, **opts),
                "bias + GELU, nothing stored": lambda: ws_gelu_masked[grid](out, bias, ad, bd, M, N, K, 0, **opts),
                "bias + store": lambda: ws_bias[grid](out, bias, ad, bd, M, N, K, **opts),
                "GELU (constant bias) + store": lambda: ws_gelu_const[grid](out, ad, bd, M, N, K, **opts),
                "SiLU (constant bias) + store": lambda: ws_silu_const[grid](out, ad, bd, M, N, K, **opts),
                "bias + 16-bit GELU + store": lambda: ws_gelu16[grid](out, bias, ad, bd, M, N, K, **opts),
                "bias + GELU + store": lambda: ws_gelu_masked[grid](out, bias, ad, bd, M, N, K, M, **opts)}
        for what, fn in runs.items():
            _time(rows, f"{tag}: {what}", fn, flops)
            if what in STORED_GELU:  # against fp32: fp16's rounding of the largest outputs
                error = ((out.float() - reference).abs().max() / reference.abs().max()).item()
                assert error < 2e-3, f"{tag}, {what}: relative error {error:.2e} against fp32"
    name = torch.cuda.get_device_name().lower().replace(" ", "-")
    path = os.path.join(args.out, f"{name}-ws-gemm-costs.json")
    os.makedirs(args.out, exist_ok=True)
    with open(path, "w") as f:
        json.dump({"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "shape": [M, K, N],
                   "rows": rows}, f, indent=1)
    print("wrote", path)


if __name__ == "__main__":
    main()
