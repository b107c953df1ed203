"""The library GEMM tactic: cuBLAS computes a generated GEMM kernel's product, Triton its epilogue.

A generated 16-bit or fp32 GEMM kernel (codegen's `matmul`) can take its product from the vendor
library instead of its own tile, as TensorRT picks cuBLAS tactics beside its own kernels: with the
config param BLAS=1 its launch() has `torch.mm` (cuBLAS) write A @ B into the kernel's output, and the
kernel then runs only its fused epilogue (bias, activation, residual, casts), reading the product
back from that output and storing over it, element for element. When the epilogue is no more
than a bias of the output's dtype, `torch.addmm` adds it in cuBLAS and no Triton launch runs.

Why: at 16 bits, without warp specialization (Triton 3.6 has none on Hopper that runs reliably: see
docs/performance.md, "Warp specialization on Hopper") Triton's GEMM tile reaches 50-60% of cuBLAS
on the zoo's Linear shapes. Where cuBLAS does the whole job that is a clear gain; where a pass over
its product must follow, the pass costs about what the library saves ("Library GEMMs" there). The
tuner times the library tactic beside the Triton tiles (compiler/autotune/space.py), so each GEMM
keeps whichever runs faster on the GPU it was tuned on. At fp32 (no tensor cores without TF32)
Triton's tile runs on the FMA units at 0.58x cuBLAS's SGEMM (docs/performance.md, "FP32").

An fp32 product stays exact, as the kernel's own tile keeps it (ieee dots unless TRIDENT_ALLOW_TF32):
where torch lets cuBLAS round fp32 operands to TF32 (`torch.backends.cuda.matmul.fp32_precision`,
`allow_tf32`, `set_float32_matmul_precision`), a generated fp32 kernel computes its product on its
own tile instead (`cublas_rounds_fp32`, read at each launch, so at a CUDA graph's capture).

Codegen offers the tactic only where the output can hold the product: one output, dense
row-major over [M, N], of the operands' dtype. The memory plan never lets a step's output
share memory with its inputs (runtime/memory.py), so writing the product there first cannot
clobber an operand the epilogue still reads. The product is rounded to the output dtype before
the epilogue adds to it: one extra rounding, as in any unfused GEMM. cuBLAS runs on torch's
current stream (the engine's step stream) with torch's workspace, outside the engine's arena.
"""
from __future__ import annotations

import torch

LIBRARY_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


def library_gemm_fits(a_dtype, b_dtype, out_dtype, outputs: int, out_dense: bool) -> bool:
    """Can a generated GEMM kernel take its product from the library (see the module doc)?"""
    return a_dtype == b_dtype == out_dtype and a_dtype in LIBRARY_DTYPES and outputs == 1 and out_dense


def cublas_rounds_fp32() -> bool:
    """Would cuBLAS round fp32 operands to TF32 now, as torch has it set? (`fp32_precision` gives
    the setting in force, whichever of torch's APIs set it; torch before 2.9 has `allow_tf32` only.
    Reading `allow_tf32` after the newer API was used raises, so it is not read where the newer one
    exists.)"""
    matmul = torch.backends.cuda.matmul
    precision = getattr(matmul, "fp32_precision", None)
    return precision == "tf32" if precision is not None else bool(matmul.allow_tf32)


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
EPILOGUE_TILE = {"BLOCK_M": 32, "BLOCK_N": 128, "num_warps": 4, "num_stages": 1}
# The GEMM's switches the pass turns off, where the kernel has them: one generated without a switch
# (TMA, where its operands cannot take descriptors) has it off already, and is not given it.
EPILOGUE_SWITCHES_OFF = ("PERSISTENT", "TMA", "SPLIT_EPILOGUE")


def kernel_config(config: dict) -> dict:
    """The config a kernel is launched (and compiled ahead) with: under BLAS, the epilogue pass's
    tile, loading no operand (so no TMA descriptors either)."""
    if not config.get("BLAS"):
        return config
    return {**config, **EPILOGUE_TILE, **{switch: 0 for switch in EPILOGUE_SWITCHES_OFF if switch in config}}
