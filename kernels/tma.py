"""GEMM operands through TMA, Hopper's tensor copy engine: host-side tensor descriptors.

A descriptor names a 2-D tensor (base address, sizes, strides) and the box one load copies into
shared memory; the tile then loads `desc.load([row, col])` with no per-element address in
registers, and rows, columns and K past the tensor read as 0, so loads need neither masks nor
wrapped indices. A 128x256 pointer tile holds its A and B addresses in registers through the
whole K loop: compiled for sm_90, the fp16 GEMMs of ViT-B/16 spill 1.8-2.3 KB a thread on it
and 0-1.2 KB with descriptors. On the H200 that moved most GEMMs by a few percent either way
(docs/performance.md, "TMA").

cuTensorMapEncodeTiled's rules: a 16-byte aligned base, strides (but the last) in multiples of 16
bytes, the last dim contiguous. A generated kernel's sizes and strides are compile-time, so code
generation decides whether its operands qualify (`gemm_operands_fit`); the base address is known
only at launch (a caller's tensor, or a view, may start anywhere), so `gemm_descriptors` checks it
there and a launch with an unaligned operand runs the pointer tile (TMA=0) instead.
"""
from __future__ import annotations

from triton.tools.tensor_descriptor import TensorDescriptor

ALIGN_BYTES = 16


def strides_fit(elem_bytes: int, strides) -> bool:
    """Can a descriptor describe a tensor with these element strides (last dim contiguous, the
    others 16-byte multiples)?"""
    *outer, last = strides
    return last == 1 and all(s > 0 and s * elem_bytes % ALIGN_BYTES == 0 for s in outer)


def gemm_operands_fit(elem_bytes: int, stride_am: int, stride_ak: int, stride_bk: int, stride_bn: int) -> bool:
    """Can A [M, K] and B (K-major [N, K] or row-major [K, N]) of a 16- or 8-bit GEMM load through
    TMA? (fp32 dots run on the FMA units, where operand loads are not what bounds the tile.)"""
    if elem_bytes not in (1, 2) or not strides_fit(elem_bytes, (stride_am, stride_ak)):
        return False
    return strides_fit(elem_bytes, (stride_bn, stride_bk)) or strides_fit(elem_bytes, (stride_bk, stride_bn))


def gemm_descriptors(a, b, M: int, N: int, K: int, stride_am: int, stride_bk: int, stride_bn: int,
                     config: dict) -> tuple:
    """(a_desc, b_desc, config) for one launch of a GEMM tile: descriptors over A [M, K] and B when
    the config asks for TMA and both operands start 16-byte aligned; else (None, None, config) with
    TMA off, so the kernel runs its pointer tile. B is K-major when stride_bk == 1."""
    if not config.get("TMA"):
        return None, None, config
    if a.data_ptr() % ALIGN_BYTES or b.data_ptr() % ALIGN_BYTES:
        return None, None, {**config, "TMA": 0}
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    a_desc = TensorDescriptor(a, [M, K], [stride_am, 1], [bm, bk])
    if stride_bk == 1:
        b_desc = TensorDescriptor(b, [N, K], [stride_bn, 1], [bn, bk])
    else:
        b_desc = TensorDescriptor(b, [K, N], [stride_bk, 1], [bk, bn])
    return a_desc, b_desc, config


def warmup_descriptors(a_dtype, b_dtype, b_k_major: bool, config: dict) -> tuple:
    """Stand-ins for a launch's (a_desc, b_desc) when a kernel is compiled ahead of its launch
    (`kernel.warmup`, which takes dtypes for tensors): Triton specializes a descriptor argument
    on its element type and box alone, so descriptors over box-sized CPU tensors compile what a
    launch runs. (None, None) when the config reads through pointers."""
    import torch

    if not config.get("TMA"):
        return None, None
    bm, bn, bk = config["BLOCK_M"], config["BLOCK_N"], config["BLOCK_K"]
    a = torch.empty((bm, bk), dtype=a_dtype)
    b = torch.empty((bn, bk) if b_k_major else (bk, bn), dtype=b_dtype)
    return TensorDescriptor.from_tensor(a, [bm, bk]), TensorDescriptor.from_tensor(b, list(b.shape))


__all__ = ["ALIGN_BYTES", "gemm_descriptors", "gemm_operands_fit", "strides_fit", "warmup_descriptors"]
