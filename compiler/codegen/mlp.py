"""Codegen of `mlp` groups: two GEMMs back to back in one kernel (kernels/mlp.py), the hidden
activation kept in registers.

The group is the up projection's matmul group (its anchor and the middle epilogue: bias, GELU,
...) followed by the down projection's (its anchor and the final epilogue: bias, layer scale,
residual, ...), formed by fusion's _merge_mlp; a LayerNorm or RMSNorm over the channels in front
of the up projection may lead it (computed on the row tile, which holds every channel). The
middle epilogue runs inside the loop over the hidden dim, on each [BLOCK_M, BLOCK_H] hidden tile;
the final one after it, on the output rows.
Both go through the same KernelWriter as every other epilogue, so whatever a GEMM epilogue
computes, these compute; x is read through its strides (any layout whose rows are what the up
projection multiplies), and the outputs are stored through theirs.
"""
from __future__ import annotations

import math

from trident.compiler.codegen import expr as E
from trident.compiler.codegen.int8 import bias_of
from trident.compiler.codegen.kernels import (Args, KernelSource, _empty, _epilogue, _header, _launcher, _operand,
                                              _reduction_body, _stores)
from trident.compiler.codegen.program import Layout
from trident.compiler.codegen.writer import Axis, KernelWriter, Operand, broadcast_dims
from trident.compiler.fusion import Group
from trident.compiler.ir import Graph, Node
from trident.kernels.common import dot_precision
from trident.kernels import mlp as template

IMPORTS = "from trident.kernels.mlp import mlp_down, mlp_rows, mlp_up"


def projections(group: Group) -> tuple[Node, Node]:
    """The up and down projections' matmul nodes (the group's two anchors)."""
    up, down = (n for n in group.nodes if n.op == "matmul")
    return up, down


def _add_bias(anchor: Node, acc: str, load) -> str:
    bias = bias_of(anchor)
    return acc if bias is None else f"{acc} + {load(bias)}"


def _normalized_rows(w: KernelWriter, group: Group, prologue: list[Node], up: Node, graph: Graph, layouts,
                     args: Args, block_ci: int) -> None:
    """x = norm(rows): the LayerNorm / RMSNorm over the channels (fusion.norm_prologue_refusal),
    after the elementwise ops fused into its loads (an input cast), computed on the program's row
    tile, every channel of a row being in it, with the reduction kernel's own math (kernels.py's
    _reduction_body). Rounded to the dtype the up projection reads, as the two-kernel engine
    stores it; channels past C_IN are 0 for the product."""
    norm = prologue[-1]
    shape = tuple(graph.types[norm.inputs[0]].shape)
    c_in = shape[-1]
    with w.scope(index_prefix="c"):  # the channel axis is the prologue's: the loop and stores have their own
        w.line(f"roffs = tl.arange(0, {block_ci})")
        w.line(f"rmask = prims.in_bounds(roffs[None, :], {c_in}, {block_ci})")
        w.add_axis(Axis("roffs[None, :]", [(len(shape) - 1, c_in)], "rmask"))
        load = lambda v: w.values.get(v) or w.load(_operand(v, layouts, args, shape))  # noqa: E731
        _epilogue(w, group, prologue[:-1], layouts, args, shape)
        normalized = _reduction_body(w, norm, load(norm.inputs[0]), c_in, load)
        w.line(f"x = {E.narrow(f'tl.where(rmask, {normalized}, 0.0)', graph.types[up.inputs[0]].dtype)}")


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    up, down = projections(group)
    w1, w2 = layouts[up.inputs[1]], layouts[down.inputs[1]]
    x = graph.types[up.inputs[0]]  # (an input, or the prologue's result in registers)
    hidden_shape = tuple(graph.types[up.outputs[0]].shape)
    out_shape = tuple(graph.types[down.outputs[0]].shape)
    rank = len(out_shape)
    c_in, hidden, c_out = x.shape[-1], hidden_shape[-1], out_shape[-1]
    rows_dims = [(d, out_shape[d]) for d in range(rank - 1)]
    rows = math.prod(out_shape[:-1])
    block_ci, block_co = template.channel_blocks(c_in, c_out)
    precision = dot_precision(x.dtype, "gemm")
    args, w = Args(), KernelWriter(graph, exact_quantize=False)
    prologue = group.nodes[:group.nodes.index(up)]
    x_arg = None if prologue else args(up.inputs[0])  # (the prologue loads its own inputs)
    w1_arg, w2_arg = args(up.inputs[1]), args(down.inputs[1])

    w.line("offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)")
    w.line(f"mmask = prims.in_bounds(offs_m[:, None], {rows}, BLOCK_M)")
    rows_axis = Axis("offs_m[:, None]", rows_dims, "mmask")
    w.add_axis(rows_axis)
    if prologue:
        _normalized_rows(w, group, prologue, up, graph, layouts, args, block_ci)
    else:
        a = layouts[up.inputs[0]]
        x_rows = Operand(x_arg, a.strides[:-1], broadcast_dims(a.shape[:-1], out_shape[:-1]), a.dtype)
        w.line(f"x = mlp_rows({x_arg}, {w.offset(x_rows, [rows_axis])}, mmask, {c_in}, {a.strides[-1]}, {block_ci})")
    w.line(f"acc = tl.zeros((BLOCK_M, {block_co}), dtype=tl.float32)")
    middle = group.nodes[group.nodes.index(up) + 1:group.nodes.index(down)]
    with w.loop(f"for h0 in tl.range(0, {hidden}, BLOCK_H):"):
        w.line("offs_h = h0 + tl.arange(0, BLOCK_H)")
        w.line(f"hidden = mlp_up(x, {w1_arg}, offs_h, {c_in}, {hidden}, {w1.strides[-2]}, {w1.strides[-1]}, "
               f"BLOCK_M, {block_ci}, BLOCK_H, '{precision}')")
        w.line(f"hmask = prims.in_bounds(offs_h[None, :], {hidden}, BLOCK_H)")
        w.add_axis(Axis("offs_h[None, :]", [(rank - 1, hidden)], "hmask"))
        load = lambda v: w.load(_operand(v, layouts, args, hidden_shape))  # noqa: E731
        w.line(f"up_value = {_add_bias(up, 'hidden', load)}")
        w.values[up.outputs[0]] = "up_value"
        _epilogue(w, group, middle, layouts, args, hidden_shape)
        # Columns past the hidden dim hold the middle epilogue of 0, which need not be 0: zero them.
        # The product reads the hidden tile rounded to its dtype, as the two-kernel engine stores it.
        rounded = E.narrow(f"tl.where(hmask, {w.values[down.inputs[0]]}, 0)", graph.types[down.inputs[0]].dtype)
        w.line(f"acc = mlp_down({rounded}, acc, {w2_arg}, offs_h, {hidden}, {c_out}, {w2.strides[-2]}, "
               f"{w2.strides[-1]}, BLOCK_H, {block_co}, '{precision}')")
    w.line(f"offs_n = tl.arange(0, {block_co})")
    w.line(f"nmask = prims.in_bounds(offs_n[None, :], {c_out}, {block_co})")
    w.add_axis(Axis("offs_n[None, :]", [(rank - 1, c_out)], "nmask"))
    load = lambda v: w.load(_operand(v, layouts, args, out_shape))  # noqa: E731
    w.line(f"down_value = {_add_bias(down, 'acc', load)}")
    w.values[down.outputs[0]] = "down_value"
    _epilogue(w, group, group.nodes[group.nodes.index(down) + 1:], layouts, args, out_shape)
    _stores(w, outputs, layouts, args, out_shape)

    cfg = template.heuristic_config(rows, c_in, hidden, c_out)
    src = _header(name, group.nodes, graph, IMPORTS)
    params = ", ".join(args.names[a] for a in args.order)
    src += f"@triton.jit\ndef kernel({params}, BLOCK_M: tl.constexpr, BLOCK_H: tl.constexpr):\n" + "\n".join(w.lines)
    src += "\n\n\n" + _launcher(args, f"(triton.cdiv({rows}, meta['BLOCK_M']),)", cfg, _empty(graph, outputs))
    problem = {"template": "mlp", "M": rows, "C_IN": c_in, "H": hidden, "C_OUT": c_out, "dtype": x.dtype}
    return KernelSource(name, src, list(args.order), cfg, problem=problem)
