"""What trident's Gluon kernels for Hopper share (kernels/attention_hopper.py, kernels/gemm_hopper.py):
Gluon's imports where the installed Triton has them, the consumer warp groups' shape, the wgmma
accumulator layout, the TMA load and buffer reinterpretation under their names in this Triton, and
host-side helpers."""
from __future__ import annotations

import functools

import torch

try:  # Gluon ships with Triton 3.4+; its Hopper module with 3.5+
    from triton.experimental import gluon
    from triton.experimental.gluon import language as gl
    from triton.experimental.gluon.language.nvidia.hopper import mbarrier, tma, warpgroup_mma, warpgroup_mma_wait
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor
    HAVE_GLUON = True
except ImportError:  # pragma: no cover - an older Triton: the Triton kernels run everything
    HAVE_GLUON = False

SMEM_LIMIT = 227 * 1024  # shared memory one program may take on an H100 / H200
LOADER_WARPS = 4  # the kernels' num_warps: the default partition, which loads

if HAVE_GLUON:
    # Two consumer warp groups of 4 warps; with 240 registers each (setmaxnreg) and the loader's
    # leftovers the three fill the register file at one program per SM.
    CONSUMER_WARPS = gl.constexpr(4)
    CONSUMER_REGISTERS = gl.constexpr(240)
    # Triton 3.9 renamed the TMA load (and refuses the old name); 3.6 has only the old one.
    tma_load = getattr(tma, "async_load", None) or tma.async_copy_global_to_shared
    GL_DTYPES = {torch.float16: gl.float16, torch.bfloat16: gl.bfloat16}

    # A shared buffer seen as a TMA descriptor's block of the same bytes (a [rows, D] buffer as a
    # [1, 1, 1, rows, D] box). Triton 3.9 renamed the method and dropped the old name.
    if hasattr(gl.shared_memory_descriptor, "reinterpret"):
        @gluon.jit
        def as_block(buffer, desc):
            return buffer.reinterpret(desc.dtype, desc.block_type.shape, desc.layout)
    else:
        @gluon.jit
        def as_block(buffer, desc):
            return buffer._reinterpret(desc.dtype, desc.block_type.shape, desc.layout)

    # A barrier of the partition's threads (bar.sync): gl.thread_barrier in Triton 3.6, gl.barrier
    # in 3.9.
    partition_barrier = getattr(gl, "thread_barrier", None) or gl.barrier

    @gluon.constexpr_function
    def wgmma_layout(cols):
        """One warp group's wgmma accumulator layout for [64, cols] (a taller tile repeats it)."""
        return gl.NVMMADistributedLayout(version=[3, 0], warps_per_cta=[4, 1], instr_shape=[16, cols, 16])


@functools.lru_cache(maxsize=None)
def shared_layout(block: tuple[int, ...], dtype: torch.dtype):
    """The swizzled shared-memory layout of a TMA box of `block` elements."""
    return gl.NVMMASharedLayout.get_default_for(list(block), GL_DTYPES[dtype])


@functools.lru_cache(maxsize=None)
def sm_count(device: torch.device) -> int:
    return torch.cuda.get_device_properties(device).multi_processor_count


__all__ = ["HAVE_GLUON", "LOADER_WARPS", "SMEM_LIMIT", "shared_layout", "sm_count"]
