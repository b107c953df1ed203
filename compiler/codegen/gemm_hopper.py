"""The warp-specialized path of a generated GEMM kernel (kernels/gemm_hopper.py), on Hopper.

A generated 2-D 16-bit GEMM kernel whose operands TMA can read gets, beside its Triton tile, a
Gluon `ws_kernel` that runs kernels/gemm_hopper.py's warp-specialized product with the kernel's
own `epilogue` function, and launch() runs it under the config switch WS=1:

    @triton.jit
    def ws_epilogue(args, acc, offs_m, offs_n, BLOCK_M, BLOCK_N):   # the pointers it reads
        in2, out0 = args
        epilogue(None, None, in2, out0, acc, offs_m, offs_n, BLOCK_M, BLOCK_N)

    @gluon.jit
    def ws_kernel(in0, in1, in2, out0, a_desc, b_desc, M, N, K, BLOCK_M, ..., COALESCED):
        gemm_hopper(a_desc, b_desc, M, N, K, (in2, out0), ws_epilogue, True, BLOCK_M, ..., COALESCED)

The epilogue's tuple holds only the pointers the epilogue reads (Triton 3.6 fails to lower a
warp-specialized partition that receives a pointer it never uses); M, N and K come from launch(),
so a shape-generic kernel's launch() rewrites them as any other size (compiler/codegen/
dynamic_source.py). A shape-generic kernel runs its Triton tile, though: its `epilogue` takes the
size arguments, which ws_epilogue does not have (compiler/codegen/dynamic_kernel.py turns WS off).
"""
from __future__ import annotations

import re

from trident.kernels import gemm_hopper

IMPORTS = ("from triton.experimental import gluon\nfrom triton.experimental.gluon import language as gl\n"
           "from trident.kernels import gemm_hopper")

# Calls that make a tensor of a new shape: a Gluon kernel needs a layout for each, which the
# generated epilogue (written for Triton) does not give. An epilogue using any runs the Triton tile.
_LAYOUT_MAKERS = ("tl.arange(", "tl.full(", "tl.zeros(", "tl.reshape(", "tl.permute(", "tl.split(", "tl.join(",
                  "tl.view(", "tl.broadcast_to(", "tl.dot(", "tl.sum(", "tl.max(", "tl.min(", "tl.reduce(",
                  "tl.cumsum(", "prims.max_nan(", "tl.static_range(", "tl.program_id(")


def applies(a_dtype, b_dtype, strides: tuple[int, int, int, int], epilogue_lines: list[str],
            batched: bool, int8: bool) -> bool:
    """Does the generated kernel get the WS path? Its GPU must be a Hopper one (checked where it is
    generated, as for attention's kernel), and the operands, strides and epilogue must fit.
    TRIDENT_WS_GEMM decides only whether the heuristic and the tuner use the path
    (kernels/matmul.py's ws_heuristic, compiler/autotune/space.py)."""
    if batched or int8 or not gemm_hopper.available():
        return False
    if gemm_hopper.why_not(a_dtype, b_dtype, *strides) is not None:
        return False
    return not any(maker in line for line in epilogue_lines for maker in _LAYOUT_MAKERS)


def used_params(params: list[str], epilogue_lines: list[str]) -> list[str]:
    """The kernel arguments the epilogue reads or writes, in order."""
    body = "\n".join(epilogue_lines)
    return [p for p in params if re.search(rf"\b{re.escape(p)}\b", body)]


def source(params: list[str], used: list[str], b_k_major: bool) -> str:
    """ws_epilogue and ws_kernel (see the module doc)."""
    unpack = ", ".join(used) + ("," if len(used) == 1 else "")
    call = ", ".join(p if p in used else "None" for p in params)
    pack = "(" + ", ".join(used) + ("," if len(used) == 1 else "") + ")"
    return (
        "@triton.jit\n"
        "def ws_epilogue(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):\n"
        f"    {unpack} = args\n"
        f"    epilogue({call}, acc, offs_m, offs_n, BLOCK_M, BLOCK_N)\n\n\n"
        "@gluon.jit\n"
        f"def ws_kernel({', '.join(params)}, a_desc, b_desc, M, N, K, BLOCK_M: gl.constexpr, "
        "BLOCK_N: gl.constexpr, BLOCK_K: gl.constexpr, STAGES: gl.constexpr, GROUP_M: gl.constexpr, "
        "COALESCED: gl.constexpr):\n"
        f"    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, {pack}, ws_epilogue, {b_k_major}, BLOCK_M, BLOCK_N, "
        "BLOCK_K, STAGES, GROUP_M, COALESCED)\n\n\n")


def prologue(params: list[str], a: str, b: str, mnk: tuple[int, int, int], stride_am: int, stride_bk: int,
             stride_bn: int) -> list[str]:
    """launch()'s first lines: under WS=1 the Gluon kernel, or the Triton tile at its heuristic
    config (TILE_CONFIG) where an operand does not start 16-byte aligned."""
    M, N, K = mnk
    return [
        "if config.get('WS'):",
        f"    if gemm_hopper.why_not_at_launch({a}, {b}) is None:",
        f"        a_desc, b_desc = gemm_hopper.descriptors({a}, {b}, {M}, {N}, {K}, {stride_am}, {stride_bk}, "
        f"{stride_bn}, config)",
        f"        return ws_kernel[gemm_hopper.grid({M}, {N}, config, {a}.device)]({', '.join(params)}, a_desc, "
        f"b_desc, {M}, {N}, {K}, **gemm_hopper.launch_options(config))",
        "    config = TILE_CONFIG",
        "config = gemm_hopper.tile_options(config)"]
