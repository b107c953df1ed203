"""Codegen of `grouped_mm` groups: one launch of kernels/grouped_mm.py's program per node (a
mixture-of-experts layer's GEMM over tokens sorted by expert), with sizes and strides as literals
of the generated source, as in every generated kernel. The expert weights are read through their
strides (transformers passes [E, N, K] weights transposed)."""
from __future__ import annotations

import torch

from trident.compiler.codegen.kernels import Args, KernelSource, _empty, _header, _launcher
from trident.compiler.codegen.program import Layout
from trident.compiler.fusion import Group
from trident.compiler.ir import Graph
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import dot_precision, next_pow2


def heuristic_config(N: int, K: int, dtype: torch.dtype) -> LaunchConfig:
    """64-row tiles: a layer's experts each take a few hundred rows or fewer, and a partial tile
    per expert is the waste."""
    block_k = 64 if dtype.itemsize == 2 else 32
    return LaunchConfig.of(4, 3, BLOCK_M=64, BLOCK_N=min(128, max(16, next_pow2(N))),
                           BLOCK_K=min(block_k, max(16, next_pow2(K))))


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    node = group.anchor
    x, w, offs = (layouts[v] for v in node.inputs)
    (out,) = node.outputs
    (S, K), (E, _, N) = x.shape, w.shape
    args = Args()
    pointers = [args(v) for v in node.inputs] + [args(out, "out")]
    o = layouts[out]
    sizes = dict(S=S, K=K, N=N, E=E, sxm=x.strides[0], sxk=x.strides[1], swe=w.strides[0],
                 swk=w.strides[1], swn=w.strides[2], som=o.strides[0], son=o.strides[1])
    cfg = heuristic_config(N, K, x.dtype)
    src = _header(name, group.nodes, graph, "from trident.kernels.grouped_mm import grouped_mm_program, program_count")
    params = ", ".join(pointers)
    call = ", ".join(f"{k}={v!r}" for k, v in sizes.items())
    src += (f"@triton.jit\ndef kernel({params}, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, "
            f"BLOCK_K: tl.constexpr):\n"
            f"    grouped_mm_program({params},\n        {call},\n"
            f"        BLOCK_M=BLOCK_M, BLOCK_N=BLOCK_N, BLOCK_K=BLOCK_K, BLOCK_E={next_pow2(E)!r}, "
            f"INPUT_PRECISION={dot_precision(x.dtype, 'gemm')!r})\n")
    grid = f"(program_count({S}, {E}, meta['BLOCK_M']), triton.cdiv({N}, meta['BLOCK_N']))"
    src += "\n\n" + _launcher(args, grid, cfg, _empty(graph, outputs))
    problem = {"template": "grouped_mm", "S": S, "K": K, "N": N, "E": E, "dtype": x.dtype}
    return KernelSource(name, src, list(args.order), cfg, problem=problem)
