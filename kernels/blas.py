"""The library GEMM tactic: cuBLAS computes a generated GEMM kernel's product, Triton its epilogue.

A generated 16-bit GEMM kernel (codegen's `matmul`) can take its product from the vendor library
instead of its own tile, as TensorRT picks cuBLAS tactics beside its own kernels: with the config
param BLAS=1 its launch() has `torch.mm` (cuBLAS) write A @ B into the kernel's output, and the
kernel then runs only its fused epilogue (bias, activation, residual, casts), reading the product
back from that output and storing over it, element for element. When the epilogue is no more
than a bias of the output's dtype, `torch.addmm` adds it in cuBLAS and no Triton launch runs.

Why: without warp specialization (Triton 3.6 has none on Hopper that runs reliably: see
docs/performance.md, "Warp specialization on Hopper") Triton's GEMM tile reaches 50-60% of cuBLAS
on the zoo's Linear shapes. Where cuBLAS does the whole job that is a clear gain; where a pass over
its product must follow, the pass costs about what the library saves ("Library GEMMs" there). The
tuner times the library tactic beside the Triton tiles (compiler/autotune/space.py), so each GEMM
keeps whichever runs faster on the GPU it was tuned on.

Codegen offers the tactic only where the output can hold the product: one output, dense
row-major over [M, N], of the operands' 16-bit dtype. The memory plan never lets a step's output
share memory with its inputs (runtime/memory.py), so writing the product there first cannot
clobber an operand the epilogue still reads. The product is rounded to the output dtype before
the epilogue adds to it: one extra rounding, as in any unfused GEMM. cuBLAS runs on torch's
current stream (the engine's step stream) with torch's workspace, outside the engine's arena.
"""
from __future__ import annotations

import torch

LIBRARY_DTYPES = (torch.float16, torch.bfloat16)


def library_gemm_fits(a_dtype, b_dtype, out_dtype, outputs: int, out_dense: bool) -> bool:
    """Can a generated GEMM kernel take its product from the library (see the module doc)?"""
    return a_dtype == b_dtype == out_dtype and a_dtype in LIBRARY_DTYPES and outputs == 1 and out_dense


def library_gemm(a, b, out, M: int, N: int, K: int, stride_am: int, stride_ak: int, stride_bk: int,
                 stride_bn: int, bias=None) -> None:
    """out[M, N] (dense row-major) = A @ B (+ bias), A [M, K] and B [K, N] read through their
    strides (views of the kernel's arguments, so no copy: cuBLAS reads either operand transposed)."""
    a2 = a.as_strided((M, K), (stride_am, stride_ak))
    b2 = b.as_strided((K, N), (stride_bk, stride_bn))
    o2 = out.as_strided((M, N), (N, 1))
    if bias is None:
        torch.mm(a2, b2, out=o2)
    else:
        torch.addmm(bias, a2, b2, out=o2)


# The epilogue pass's launch under BLAS: a memory-bound elementwise pass wants many small programs
# in flight, not the GEMM's tile (128x256 on 8 warps, one persistent program per SM: ViT-B/16's
# GELU pass took 46 us on it, 1.7 TB/s). The config's tile params stay the Triton GEMM's, for the
# tuner's other candidates.
EPILOGUE_TILE = {"BLOCK_M": 32, "BLOCK_N": 128, "num_warps": 4, "num_stages": 1, "PERSISTENT": 0, "TMA": 0,
                 "SPLIT_EPILOGUE": 0}


def kernel_config(config: dict) -> dict:
    """The config a kernel is launched (and compiled ahead) with: under BLAS, the epilogue pass's
    tile, loading no operand (so no TMA descriptors either)."""
    return {**config, **EPILOGUE_TILE} if config.get("BLAS") else config
