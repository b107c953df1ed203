"""Generate one Triton source file per fused group.

Each generated file holds a @triton.jit `kernel`, a default `CONFIG`, and `launch(*tensors,
config=CONFIG)`. Anchored kernels call the hand-written tile functions in trident.kernels and add
the group's epilogue; pointwise and reduction kernels are written whole. Shapes and strides are
baked in as constants (the engine is built for static shapes), so index math is by constants.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch

from trident.compiler import config
from trident.compiler.codegen import expr as E
from trident.compiler.codegen import gemm_hopper as ws_path
from trident.compiler.codegen import moves
from trident.compiler.codegen.program import Layout
from trident.compiler.codegen.reductions import BODIES as REDUCTION_BODIES
from trident.compiler.codegen.reductions import INTEGER_BODIES
from trident.compiler.codegen.reductions import ROWWISE
from trident.compiler.codegen.writer import (Axis, KernelWriter, Operand, broadcast_dims, dense_strides,
                                             memory_order)
from trident.compiler.fusion import Group
from trident.compiler.group_kinds import MAX_ROW, PER_ELEMENT_MOVES, reduced_axes
from trident.compiler.ir import Graph, Node
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.codegen.int8 import bias_of, dequantized, is_int8_anchor, weight_strides
from trident.kernels.common import PIPELINE_SMEM_BUDGET, dot_precision, min_block_k, next_pow2, pipeline_smem_bytes
from trident.kernels.depthwise import heuristic_config as depthwise_config, streams_rows


@dataclass
class KernelSource:
    name: str
    source: str
    args: list[str]          # IR values passed to launch(), in order: inputs, then outputs
    config: LaunchConfig     # block sizes, num_warps, num_stages; tuning may change it
    packed: dict[str, tuple[torch.Tensor, Layout]] = field(default_factory=dict)
    # What the autotuner needs to propose configs: the template and its problem size, e.g.
    # {"template": "matmul", "M": .., "N": .., "K": .., "dtype": torch.float16}.
    problem: dict = field(default_factory=dict)
    # What the generator read (codegen/spec.py): an engine file stores it to regenerate the source.
    spec: dict | None = None
    # A shape-generic kernel's size symbols (launch() takes sizes=(their values, in this order)).
    sizes: tuple[str, ...] = ()


# Lanes of one row tile (BLOCK_X * BLOCK_R) in the reduction and scan kernels.
ROW_TILE_LANES = 16384 if config.INTERPRET else 4096

HEADER = '''# trident generated kernel: {name}
# IR nodes fused here:
{nodes}
import triton
import triton.language as tl

from trident.kernels import prims  # noqa: F401
{imports}

'''


class Args:
    """Names the kernel's pointer arguments after their role: in0.., out0.."""

    def __init__(self):
        self.names: dict[str, str] = {}
        self.order: list[str] = []

    def __call__(self, value: str, prefix: str = "in") -> str:
        if value not in self.names:
            self.names[value] = f"{prefix}{sum(n.startswith(prefix) for n in self.names.values())}"
            self.order.append(value)
        return self.names[value]


def _header(name: str, nodes: list[Node], graph: Graph, imports: str = "") -> str:
    lines = [f"#   {n}  -> {', '.join(str(graph.types[o]) for o in n.outputs)}" for n in nodes]
    return HEADER.format(name=name, nodes="\n".join(lines), imports=imports)


def _signature(args: Args, consts: list[str]) -> str:
    params = [args.names[v] for v in args.order] + [f"{c}: tl.constexpr" for c in consts]
    return ", ".join(params)


def _launcher(args: Args, grid: str, cfg: LaunchConfig, empty: bool = False, prepare: str = "",
              extra: str = "") -> str:
    """CONFIG, grid(meta) and launch(). An `empty` kernel (every output has 0 elements) launches
    nothing: its index math would divide by zero-sized dims, and there is nothing to store.
    prepare: a line launch() runs first (a GEMM's TMA descriptors); extra: arguments it adds."""
    params = ", ".join(args.names[v] for v in args.order)
    body = ("    return  # every output is empty: nothing to compute\n" if empty
            else (f"    {prepare}\n" if prepare else "") + f"    kernel[grid]({params}{extra}, **config)\n")
    return (f"CONFIG = {cfg.to_dict()!r}\n\n\n"
            f"def grid(meta):\n    return {grid}\n\n\n"
            f"def launch({params}, config=CONFIG):\n" + body)


def _empty(graph: Graph, outputs: list[str]) -> bool:
    return all(math.prod(graph.types[o].shape) == 0 for o in outputs)


def _averaged(length: int, correction: int = 0) -> str:
    """What turns a sum over `length` values into their mean: a division by the length (less the
    correction of a variance), an integer literal (so a shape-generic kernel makes it the size it
    is, compiler/codegen/dynamic.py, where a reciprocal would be a float of each size), correctly
    rounded as torch's mean; NaN for an empty axis (the mean of nothing, as in torch); a division
    by zero where the correction takes the whole length (inf, or NaN for 0 / 0, as torch.var)."""
    if not length:
        return f" * {E.literal(math.nan)}"
    return f" / {length - correction}" if length > correction else " / 0.0"


def _mean_of(anchor: Node, length: int) -> str:
    """The division a reduce_mean anchor applies to its sum (nothing for the other reductions)."""
    if anchor.op != "reduce_mean":
        return ""
    return _averaged(length, anchor.attrs.get("correction", 0))


def _after_anchor(group: Group) -> list[Node]:
    return group.nodes[group.nodes.index(group.anchor) + 1:]


def _epilogue_reads_tiles(group: Group, graph: Graph, out_shape: tuple) -> bool:
    """Does the epilogue load an operand with as many elements as the output (a residual), not
    just per-column vectors (bias, layer scale)?"""
    inside = {o for n in group.nodes for o in n.outputs}
    size = math.prod(out_shape)
    return any(v not in inside and math.prod(graph.types[v].shape) >= size
               for n in _after_anchor(group) for v in n.inputs)


def _epilogue(w: KernelWriter, group: Group, nodes: list[Node], layouts, args: Args,
              space_shape, target_map=None) -> None:
    operand_for = lambda v: _operand(v, layouts, args, space_shape, target_map)  # noqa: E731
    for node in nodes:
        if node.op in PER_ELEMENT_MOVES:
            moves.emit(w, node, operand_for)
        else:
            w.elementwise(node, operand_for)


def _operand(value, layouts, args: Args, space_shape, target_map=None, prefix="in") -> Operand:
    lay = layouts[value]
    return Operand(args(value, prefix), lay.strides,
                   broadcast_dims(lay.shape, space_shape, target_map), lay.dtype)


def _stores(w: KernelWriter, outputs: list[str], layouts, args: Args, space_shape,
            value_axes: list[Axis] | None = None, target_map=None) -> None:
    for value in outputs:
        w.store(_operand(value, layouts, args, space_shape, target_map, prefix="out"),
                w.values[value], value_axes)


# ----------------------------------------------------------------------- pointwise ----
def pointwise(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
              name: str) -> KernelSource:
    shape = tuple(graph.types[group.nodes[0].outputs[0]].shape)
    out = layouts[outputs[0]]
    numel = math.prod(shape)
    order = memory_order(shape, out.strides)
    args, w = Args(), KernelWriter(graph, space=shape)
    w.line("xoffs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)")
    w.line(f"xmask = prims.in_bounds(xoffs, {numel}, BLOCK)")
    w.add_axis(Axis("xoffs", [(d, shape[d]) for d in order], "xmask"))
    _epilogue(w, group, group.nodes, layouts, args, shape)
    _stores(w, outputs, layouts, args, shape)
    block = 8192 if config.INTERPRET else 1024
    cfg = LaunchConfig.of(4, BLOCK=min(block, next_pow2(numel)))  # (next_pow2(0) is 1)
    src = _header(name, group.nodes, graph)
    src += f"@triton.jit\ndef kernel({_signature(args, ['BLOCK'])}):\n" + "\n".join(w.lines)
    src += "\n\n\n" + _launcher(args, f"(triton.cdiv({numel}, meta['BLOCK']),)", cfg,
                                 _empty(graph, outputs))
    return KernelSource(name, src, list(args.order), cfg, problem={"template": "pointwise", "numel": numel})


# ----------------------------------------------------------------------- reduction ----
def _reduction_body(w: KernelWriter, anchor: Node, x: str, length: int, load_param) -> str:
    """Emit the anchor's math on the loaded row tile `x` ([BLOCK_X, BLOCK_R]); returns its var."""
    out = w.tmp("r")
    if not w.graph.types[anchor.inputs[0]].dtype.is_floating_point:
        INTEGER_BODIES[anchor.op](w, anchor, x, out, length, load_param)
        return out
    if anchor.op in REDUCTION_BODIES:
        REDUCTION_BODIES[anchor.op](w, anchor, x, out, length, load_param)
        return out
    if anchor.op == "softmax":
        # tl.max skips NaN, but a NaN in the row still reaches the sum: the row is NaN, as in torch
        w.line(f"{out}_max = tl.max(tl.where(rmask, {x}, float('-inf')), 1)[:, None]")
        w.line(f"{out}_exp = tl.where(rmask, tl.exp({x} - {out}_max), 0.0)")
        w.line(f"{out} = {out}_exp / tl.sum({out}_exp, 1)[:, None]")
    elif anchor.op == "layer_norm":
        w.line(f"{out}_mean = tl.sum(tl.where(rmask, {x}, 0.0), 1)[:, None]{_averaged(length)}")
        w.line(f"{out}_diff = tl.where(rmask, {x} - {out}_mean, 0.0)")
        w.line(f"{out}_var = tl.sum({out}_diff * {out}_diff, 1)[:, None]{_averaged(length)}")
        eps = E.literal(float(anchor.attrs.get("epsilon", 1e-5)))
        w.line(f"{out} = {out}_diff / tl.sqrt({out}_var + {eps}) * {load_param(anchor.inputs[1])}")
        if len(anchor.inputs) > 2:
            w.line(f"{out} = {out} + {load_param(anchor.inputs[2])}")
    elif anchor.op == "reduce_max":
        w.line(f"{out} = prims.max_nan(tl.where(rmask, {x}, float('-inf')), 1)[:, None]")
    else:  # reduce_sum / reduce_mean
        w.line(f"{out} = tl.sum(tl.where(rmask, {x}, 0.0), 1)[:, None]{_mean_of(anchor, length)}")
    return out


# A row longer than MAX_ROW is reduced in chunks of LOOP_BLOCK_R: each lane keeps a running
# partial (sum, or NaN-propagating max) across the chunks, and the lanes are reduced once after.
LOOP_BLOCK_R = 2048
_LOOP_START = {"reduce_sum": "0.0", "reduce_mean": "0.0", "reduce_max": "float('-inf')"}
_ADD_CHUNK = "acc = acc + tl.where(rmask, {x}, 0.0)"
_LOOP_STEP = {"reduce_sum": _ADD_CHUNK, "reduce_mean": _ADD_CHUNK,
              "reduce_max": "acc = prims.maximum(acc, tl.where(rmask, {x}, float('-inf')))"}


def _loop_block_r(order: list[int], kept: list[int]) -> int:
    """A looped row's chunk: long when the row is contiguous in memory; short when a kept dim is
    innermost (channels-last: a mean over H x W of NHWC), so the tile's wide side is the rows,
    whose neighbouring channels are neighbours in memory (coalesced loads)."""
    return 64 if order and order[-1] in kept else LOOP_BLOCK_R


def _loop_result(w: KernelWriter, anchor: Node, length: int) -> str:
    out = w.tmp("r")
    if anchor.op == "reduce_max":
        w.line(f"{out} = prims.max_nan(acc, 1)[:, None]")
    else:
        w.line(f"{out} = tl.sum(acc, 1)[:, None]{_mean_of(anchor, length)}")
    return out


def reduction(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
              name: str) -> KernelSource:
    anchor = group.anchor
    shape = tuple(graph.types[anchor.inputs[0]].shape)
    axes = reduced_axes(anchor, graph)
    kept = [d for d in range(len(shape)) if d not in axes]
    # Walk the dims in the memory order of the first input that has the full shape.
    ref = next((layouts[v] for v in group.inputs() if v in layouts and layouts[v].shape == shape),
               None)
    strides = ref.strides if ref else tuple(range(len(shape), 0, -1))
    order = memory_order(shape, strides)
    xdims = [(d, shape[d]) for d in order if d in kept]
    rdims = [(d, shape[d]) for d in order if d in axes]
    rows, length = math.prod(shape[d] for d in kept), math.prod(shape[d] for d in axes)
    args, w = Args(), KernelWriter(graph, exact_quantize=False, space=shape)
    position = group.nodes.index(anchor)
    after = group.nodes[position + 1:]
    prologue = {v for n in group.nodes[:position] for v in n.outputs}
    looped = length > MAX_ROW  # fusion lets only sums, means and maxima this long through
    w.line("xoffs = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)")
    w.line(f"xmask = prims.in_bounds(xoffs[:, None], {rows}, BLOCK_X)")
    row_axis = Axis("xoffs[:, None]", xdims, "xmask")
    w.add_axis(row_axis)  # before any loop: the stores after it index the rows

    def row_chunk(start: str) -> str:
        """Declare the row positions from `start`, compute the prologue there, load x."""
        w.line(f"roffs = {start}tl.arange(0, BLOCK_R)")
        w.line(f"rmask = prims.in_bounds(roffs[None, :], {length}, BLOCK_R)")
        w.add_axis(Axis("roffs[None, :]", rdims, "rmask"))
        _epilogue(w, group, group.nodes[:position], layouts, args, shape)
        return w.values.get(anchor.inputs[0]) or w.load(_operand(anchor.inputs[0], layouts, args, shape))

    if looped:
        w.line(f"acc = tl.full([BLOCK_X, BLOCK_R], {_LOOP_START[anchor.op]}, tl.float32)")
        with w.loop(f"for r0 in range(0, {length}, BLOCK_R):"):
            x = row_chunk("r0 + ")
            _stores(w, [o for o in outputs if o in prologue], layouts, args, shape)
            w.line(_LOOP_STEP[anchor.op].format(x=x))
        w.values[anchor.outputs[0]] = _loop_result(w, anchor, length)
    else:
        x = row_chunk("")
        load_param = lambda v: w.values.get(v) or w.load(_operand(v, layouts, args, shape))  # noqa: E731
        w.values[anchor.outputs[0]] = _reduction_body(w, anchor, x, length, load_param)
    out_shape = tuple(graph.types[anchor.outputs[0]].shape)
    keepdims = anchor.attrs.get("keepdims", True) or anchor.op in ROWWISE
    target_map = None if keepdims else kept
    for node in after:  # each in its own space: the row's (x - max(x)) or the reduced one's
        row_space = tuple(graph.types[node.outputs[0]].shape) == shape
        _epilogue(w, group, [node], layouts, args, shape if row_space else out_shape,
                  None if row_space else target_map)
    # Softmax and layer norm keep the row shape; other reductions store one value per row, as do
    # their epilogues. Prologue values that other kernels read are stored at the row shape.
    rowwise = anchor.op in ROWWISE
    # (An epilogue that broadcasts the result back over the row, x - max(x), is stored at the row
    # shape too, masked by every axis like every other store.)
    full = [o for o in outputs if rowwise or o in prologue or tuple(graph.types[o].shape) == shape]
    if not looped:  # (a looped kernel stored its prologue's outputs chunk by chunk)
        _stores(w, full, layouts, args, shape)
    _stores(w, [o for o in outputs if o not in full], layouts, args, out_shape, [row_axis], target_map)
    block_r = _loop_block_r(order, kept) if looped else next_pow2(length)
    return row_tiles(name, group, graph, w, args, outputs, "reduction", rows, length, block_r,
                     None if looped else MAX_ROW)


def row_writer(graph: Graph, shape: tuple, strides, axis: int) -> tuple[Args, KernelWriter, int, int]:
    """(args, writer, rows, length) of a kernel over the rows along `axis` (the scan, sort and
    scatter generators), the program's BLOCK_X rows declared: every dim but the axis, in memory
    order."""
    length, rows = shape[axis], math.prod(s for d, s in enumerate(shape) if d != axis)
    order = memory_order(shape, strides)
    args, w = Args(), KernelWriter(graph, exact_quantize=False, space=shape)
    w.line("xoffs = tl.program_id(0) * BLOCK_X + tl.arange(0, BLOCK_X)")
    w.line(f"xmask = prims.in_bounds(xoffs[:, None], {rows}, BLOCK_X)")
    w.add_axis(Axis("xoffs[:, None]", [(d, shape[d]) for d in order if d != axis], "xmask"))
    return args, w, rows, length


def whole_row_axis(w: KernelWriter, axis: int, length: int) -> None:
    """Declare the row's positions along `axis` as one block of BLOCK_R (`pos`, `pmask`)."""
    w.line("pos = tl.arange(0, BLOCK_R)[None, :]")
    w.line(f"pmask = prims.in_bounds(pos, {length}, BLOCK_R)")
    w.add_axis(Axis("pos", [(axis, length)], "pmask"))


def row_tiles(name: str, group: Group, graph: Graph, w: KernelWriter, args: Args, outputs: list[str],
              template: str, rows: int, length: int, block_r: int,
              max_length: int | None = None) -> KernelSource:
    """The kernel of a body over tiles of BLOCK_X rows by BLOCK_R positions along them (the
    reduction, scan, sort and scatter generators): the config (ROW_TILE_LANES lanes at most),
    source, launcher. max_length: the kernel holds whole rows in BLOCK_R, of up to this many
    elements (a shape-generic kernel's block is widened to its longest row:
    dynamic_kernel._whole_row_block); None where it walks its rows in chunks."""
    block_x = max(1, min(next_pow2(rows), ROW_TILE_LANES // block_r))
    cfg = LaunchConfig.of(4 if block_r <= 1024 else 8, BLOCK_X=block_x, BLOCK_R=block_r)
    src = _header(name, group.nodes, graph)
    src += f"@triton.jit\ndef kernel({_signature(args, ['BLOCK_X', 'BLOCK_R'])}):\n" + "\n".join(w.lines)
    src += "\n\n\n" + _launcher(args, f"(triton.cdiv({rows}, meta['BLOCK_X']),)", cfg,
                                 _empty(graph, outputs))
    problem = {"template": template, "rows": rows, "length": length}
    if max_length is not None:
        problem["max_length"] = max_length
    return KernelSource(name, src, list(args.order), cfg, problem=problem)


# -------------------------------------------------------------------------- matmul ----
def _rows_stride(shape, strides, upto: int) -> int | None:
    """The stride that walks dims [0, upto] as one index, or None where no one stride does. Size-1
    dims take no part: their strides are arbitrary (a slice of a size-2 dim keeps the parent's), so
    the walk's stride is that of the innermost dim of more than one element (LeViT's subsampled
    queries, [2, 1, 1, C] with strides [4C, 4C, 2C, 1], are rows 4C apart, not 2C)."""
    dims = [d for d in range(upto + 1) if shape[d] != 1]
    if not dims:
        return strides[upto]  # one row: any stride walks it
    if any(strides[outer] != strides[inner] * shape[inner] for outer, inner in zip(dims, dims[1:])):
        return None
    return strides[dims[-1]]


def _out_bytes(graph: Graph, outputs: list[str]) -> int:
    """The widest element a kernel stores (its epilogue stages a tile of them in shared memory)."""
    return max((graph.types[o].dtype.itemsize for o in outputs), default=2)


def _tile_loop(args: Args, consts: list[str], body: list[str], programs: str, tma: bool = False,
               blas: bool = False, split: bool = False) -> str:
    """A GEMM-like kernel as `one_tile(..., pid)` plus the `kernel` that runs it.

    PERSISTENT (programs per SM, 0 = off) is a launch-config choice the tuner makes: 0 launches
    one program per output tile; k > 0 launches k per SM that loop over the tiles, and
    flatten=True lets Triton's pipeliner load the next tile's operands during this one's epilogue.
    tma: the kernel also takes the GEMM operands' TMA descriptors (None when the launch reads
    them through pointers) and the TMA switch (kernels/tma.py).
    blas: the BLAS switch: the tile reads the library's product from the output (kernels/blas.py).
    split: the SPLIT_EPILOGUE switch (_epilogue_calls).
    """
    params = ", ".join(args.names[v] for v in args.order) + (", a_desc, b_desc" if tma else "")
    switches = (["TMA"] if tma else []) + (["BLAS"] if blas else []) + (["SPLIT_EPILOGUE"] if split else [])
    consts = consts + switches
    const_params = ", ".join(f"{c}: tl.constexpr" for c in consts)
    const_args = ", ".join(consts)
    defaults = ", PERSISTENT: tl.constexpr = 0" + "".join(f", {c}: tl.constexpr = 0" for c in switches)
    kernel_consts = ", ".join(f"{c}: tl.constexpr" for c in consts if c not in switches)
    return (f"@triton.jit\ndef one_tile({params}, pid, {const_params}):\n" + "\n".join(body) + "\n\n\n"
            f"@triton.jit\ndef kernel({params}, {kernel_consts}{defaults}):\n"
            f"    if PERSISTENT:\n"
            f"        for pid in tl.range(tl.program_id(0), {programs}, tl.num_programs(0), flatten=True):\n"
            f"            one_tile({params}, pid, {const_args})\n"
            f"    else:\n"
            f"        one_tile({params}, tl.program_id(0), {const_args})\n")


def _tile_grid(programs: str, axis1) -> str:
    """grid(meta) of a _tile_loop kernel: every tile, or the persistent grid."""
    return f"(persistent_grid({programs}, meta.get('PERSISTENT', 0)), {axis1})"


TILE_IMPORTS = "from trident.kernels.common import grouped_pid, persistent_grid"


def _gemm_tile(w: KernelWriter, pointer_tile: str, tma: bool, K: int, b_k_major: bool, precision: str,
               library_product: str | None = None) -> None:
    """The accumulator: the pointer tile, or (tma) the TMA tile unless the launch turns TMA off,
    or (library_product: the load of the product launch() had cuBLAS write) that product."""
    branches = ([("BLAS", f"acc = {library_product}")] if library_product else []) + \
        ([("TMA", f"acc = matmul_tile_tma(a_desc, b_desc, {K}, pid_m, pid_n, BLOCK_M, BLOCK_N, BLOCK_K, "
                  f"{b_k_major}, '{precision}')")] if tma else [])
    if not branches:
        w.line(pointer_tile)
        return
    for k, (switch, line) in enumerate(branches):
        w.line(f"{'el' if k else ''}if {switch}:")
        w.line(line, indent=2)
    w.line("else:")
    w.line(pointer_tile, indent=2)


def _epilogue_function(params: str, lines: list[str], batched: bool) -> str:
    """A GEMM's epilogue (bias, dequantize, the fused ops, the stores) as its own function of an
    accumulator tile and its row and column offsets, so one_tile can run it on the whole tile or
    on each column half (_epilogue_calls). BLOCK_M and BLOCK_N are the GEMM tile's (the masks')."""
    pid_b = ", pid_b" if batched else ""
    return (f"@triton.jit\ndef epilogue({params}, acc, offs_m, offs_n{pid_b}, BLOCK_M: tl.constexpr, "
            f"BLOCK_N: tl.constexpr):\n" + "\n".join(lines) + "\n\n\n")


def _epilogue_calls(params: str, batched: bool) -> list[str]:
    """one_tile's last lines. Under SPLIT_EPILOGUE the epilogue runs on the tile's two column halves
    in turn: half the fused ops' temporaries are live at once, so a wide tile's epilogue (a GELU, a
    residual) fits the registers its 128 fp32 accumulators a thread leave (ptxas, sm_90: ViT-B/16's
    768 -> 3072 + GELU on 128x256 spills 496 bytes a thread whole, none in halves). The epilogue's
    BLOCK_N stays the tile's: its column mask may be dropped only where whole tiles fit the
    columns (a half that fits them says nothing of the other half: N = 32 on 64-wide tiles)."""
    pid_b = ", pid_b" if batched else ""
    call = lambda acc, offs: f"epilogue({params}, {acc}, offs_m, {offs}{pid_b}, BLOCK_M, BLOCK_N)"  # noqa: E731
    half = "pid_n * BLOCK_N + {}tl.arange(0, BLOCK_N // 2)"
    return ["    if SPLIT_EPILOGUE:",
            "        acc_lo, acc_hi = tl.split(tl.permute(tl.reshape(acc, (BLOCK_M, 2, BLOCK_N // 2)), (0, 2, 1)))",
            "        " + call("acc_lo", half.format("")),
            "        " + call("acc_hi", half.format("BLOCK_N // 2 + ")),
            "    else:",
            "        " + call("acc", "offs_n")]


def _holds_product(outputs: list[str], layouts, a: Layout, b: Layout, out_shape: tuple) -> bool:
    """Can the kernel's output hold the library's product (kernels/blas.py)?"""
    from trident.kernels.blas import library_gemm_fits

    out = layouts[outputs[0]]
    dense = tuple(out.shape) == out_shape and tuple(out.strides) == tuple(dense_strides(out_shape))
    return library_gemm_fits(a.dtype, b.dtype, out.dtype, len(outputs), dense)


def _library_form(group: Group, layouts, N: int) -> str:
    """What the library computes under BLAS: "product" (the kernel has no epilogue), "addmm"
    (a bias of the operands' dtype is the whole epilogue: cuBLAS adds it), else "pass" (the
    product, then the kernel's epilogue as a Triton pass over it)."""
    if _after_anchor(group):
        return "pass"
    bias = bias_of(group.anchor)
    if bias is None:
        return "product"
    lay = layouts[bias]
    fits = lay.dtype == layouts[group.anchor.inputs[0]].dtype and tuple(lay.shape) == (N,) and \
        tuple(lay.strides) == (1,)
    return "addmm" if fits else "pass"


def _library_prologue(form: str, anchor: Node, args: Args, out: str, a_strides, b_strides, mnk,
                      exact_fp32: bool) -> list[str]:
    """launch()'s first lines under BLAS=1 (kernels/blas.py): the library writes the product, and
    either that is all ("product", "addmm": no Triton launch follows) or the kernel runs its
    epilogue pass on its own launch config. exact_fp32: an fp32 kernel whose product must stay
    fp32 computes it on its own tile while torch lets cuBLAS round to TF32."""
    a, b = args.names[anchor.inputs[0]], args.names[anchor.inputs[1]]
    call = f"library_gemm({a}, {b}, {out}, {', '.join(str(s) for s in (*mnk, *a_strides, *b_strides))}"
    guard = ["if config.get('BLAS') and cublas_rounds_fp32():",
             "    config = {**config, 'BLAS': 0}"] if exact_fp32 else []
    if form == "product":
        return guard + ["if config.get('BLAS'):", f"    return {call})"]
    if form == "addmm":
        return guard + ["if config.get('BLAS'):", f"    return {call}, bias={args.names[bias_of(anchor)]})"]
    return guard + ["if config.get('BLAS'):", f"    {call})", "config = kernel_config(config)"]


def _tma_operands(a_index: int, b_index: int, b_k_major: bool) -> str:
    """What a compile worker needs to stand in for the descriptors launch() adds (autotune/worker.py)."""
    return (f"\n\n# (A's argument index, B's, B K-major): launch() adds their TMA descriptors\n"
            f"TMA_OPERANDS = ({a_index}, {b_index}, {b_k_major})\n")


def matmul(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
           name: str) -> KernelSource:
    from trident.kernels.matmul import heuristic_config, ws_heuristic
    from trident.kernels.tma import gemm_operands_fit

    anchor = group.anchor
    a, b = (layouts[v] for v in anchor.inputs[:2])
    out_shape = tuple(graph.types[anchor.outputs[0]].shape)
    rank = len(out_shape)
    M, N, K = out_shape[-2], out_shape[-1], a.shape[-1]
    args, w = Args(), KernelWriter(graph, exact_quantize=False)
    a_arg, b_arg = args(anchor.inputs[0]), args(anchor.inputs[1])
    # A [.., M, K] times a 2-D weight: fold the batch dims into M (one bigger GEMM, better tiles).
    folded_stride = _rows_stride(a.shape, a.strides, len(a.shape) - 2) if len(b.shape) == 2 else None
    fold = folded_stride is not None
    stride_am = folded_stride if fold else a.strides[-2]
    batch = [] if fold else [(d, out_shape[d]) for d in range(rank - 2) if out_shape[d] != 1]
    rows_dims = [(d, out_shape[d]) for d in range(rank - 1)] if fold else [(rank - 2, M)]
    rows = math.prod(size for _, size in rows_dims)
    w.line(f"pid_m, pid_n = grouped_pid(pid, {rows}, {N}, BLOCK_M, BLOCK_N, GROUP_M)")
    a_ptr, b_ptr = a_arg, b_arg
    batch_index = []  # the batch dims' index lines, which the epilogue function repeats
    if batch:
        w.line("pid_b = tl.program_id(1)")
        start = len(w.lines)
        w.add_axis(Axis("pid_b", batch))
        batch_index = w.lines[start:]
        for arg, lay in ((a_arg, a), (b_arg, b)):
            dims = broadcast_dims(lay.shape[:-2], out_shape[:-2])
            off = w.offset(Operand(arg, lay.strides[:-2], dims, lay.dtype))
            w.line(f"{arg}_batch = {arg} + ({off})")
        a_ptr, b_ptr = f"{a_arg}_batch", f"{b_arg}_batch"
    w.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
    w.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
    b_sk, b_sn = weight_strides(anchor, b.strides)
    precision = dot_precision(a.dtype, "gemm")
    pointer_tile = (f"acc = matmul_tile({a_ptr}, {b_ptr}, {rows}, {N}, {K}, {stride_am}, {a.strides[-1]}, "
                    f"{b_sk}, {b_sn}, offs_m, offs_n, BLOCK_M, BLOCK_N, BLOCK_K, '{precision}')")
    tma = not batch and a.dtype == b.dtype and gemm_operands_fit(a.dtype.itemsize, stride_am, a.strides[-1],
                                                                 b_sk, b_sn)
    blas = not batch and not is_int8_anchor(anchor) and _holds_product(outputs, layouts, a, b, out_shape)
    product, form = None, None
    if blas:
        form = _library_form(group, layouts, N)
        out = args(outputs[0], "out")
        product = (f"tl.load({out} + (offs_m[:, None] * {N} + offs_n[None, :]), mask=prims.in_bounds("
                   f"offs_m[:, None], {rows}, BLOCK_M) & prims.in_bounds(offs_n[None, :], {N}, BLOCK_N), "
                   f"other=0).to(tl.float32)")
    _gemm_tile(w, pointer_tile, tma, K, b_sk == 1, precision, product)
    tile_lines, w.lines = w.lines, list(batch_index)  # what follows is the epilogue function's body
    w.line(f"mmask = prims.in_bounds(offs_m[:, None], {rows}, BLOCK_M)")
    w.line(f"nmask = prims.in_bounds(offs_n[None, :], {N}, BLOCK_N)")
    w.add_axis(Axis("offs_m[:, None]", rows_dims, "mmask"))
    w.add_axis(Axis("offs_n[None, :]", [(rank - 1, N)], "nmask"))
    acc = "acc"
    channel = lambda v: w.load(_operand(v, layouts, args, out_shape))  # noqa: E731
    if is_int8_anchor(anchor):  # int32 accumulator -> fp32, per-channel scales
        acc = dequantized(anchor, acc, channel)
    if bias_of(anchor) is not None:
        acc = f"{acc} + {channel(bias_of(anchor))}"
    w.line(f"v0 = {acc}")
    w.values[anchor.outputs[0]] = "v0"
    _epilogue(w, group, _after_anchor(group), layouts, args, out_shape)
    _stores(w, outputs, layouts, args, out_shape)
    cfg = heuristic_config(rows, N, K, a.dtype, _out_bytes(graph, outputs),
                           reads_tiles=_epilogue_reads_tiles(group, graph, out_shape), tma=tma, blas=blas,
                           library_alone=form in ("product", "addmm"))
    cfg = cfg.replace(SPLIT_EPILOGUE=0)  # the tuner times the split (autotune/space.py)
    params_list = [args.names[v] for v in args.order]
    ws = K > 0 and ws_path.applies(a.dtype, b.dtype, (stride_am, a.strides[-1], b_sk, b_sn), w.lines,
                                   bool(batch), is_int8_anchor(anchor))  # (K = 0: no TMA box to read)
    tile_cfg = cfg
    if ws:
        cfg = ws_heuristic(rows, N, K, cfg, library_alone=form in ("product", "addmm"))
    imports = TILE_IMPORTS + "\nfrom trident.kernels.matmul import matmul_tile"
    if tma:
        imports += ", matmul_tile_tma\nfrom trident.kernels.tma import gemm_descriptors"
    exact_fp32 = a.dtype == torch.float32 and precision != "tf32"  # (precision: the tile's, above)
    if blas:
        imports += "\nfrom trident.kernels.blas import kernel_config, library_gemm"
        imports += ", cublas_rounds_fp32" if exact_fp32 else ""
    if ws:
        imports += "\n" + ws_path.IMPORTS
    src = _header(name, group.nodes, graph, imports)
    params = ", ".join(params_list)
    src += _epilogue_function(params, w.lines, bool(batch))
    if ws:
        src += ws_path.source(params_list, ws_path.used_params(params_list, w.lines), b_sk == 1)
    body = tile_lines + _epilogue_calls(params, bool(batch))
    consts = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]
    src += _tile_loop(args, consts, body, f"tl.cdiv({rows}, BLOCK_M) * tl.cdiv({N}, BLOCK_N)", tma, blas,
                      split=True)
    nbatch = math.prod(s for _, s in batch)
    grid = _tile_grid(f"triton.cdiv({rows}, meta['BLOCK_M']) * triton.cdiv({N}, meta['BLOCK_N'])", nbatch)
    prepare = []
    if ws:
        src += f"\n\nTILE_CONFIG = {tile_cfg.to_dict()!r}\n"
        prepare = ws_path.prologue(params_list, a_arg, b_arg, (rows, N, K), stride_am, b_sk, b_sn)
    if blas:
        prepare += _library_prologue(form, anchor, args, out, (stride_am, a.strides[-1]), (b_sk, b_sn), (rows, N, K),
                                     exact_fp32)
    if tma:
        prepare.append(f"a_desc, b_desc, config = gemm_descriptors({a_arg}, {b_arg}, {rows}, {N}, {K}, "
                       f"{stride_am}, {b_sk}, {b_sn}, config)")
    src += "\n\n\n" + _launcher(args, grid, cfg, _empty(graph, outputs), "\n    ".join(prepare),
                                  ", a_desc, b_desc" if tma else "")
    if tma:
        src += _tma_operands(args.order.index(anchor.inputs[0]), args.order.index(anchor.inputs[1]), b_sk == 1)
    return KernelSource(name, src, list(args.order), cfg,
                        problem={"template": "matmul", "M": rows, "N": N, "K": K, "batch": nbatch,
                                 "dtype": a.dtype, **({"hopper": True} if ws else {})})


# ---------------------------------------------------------------------- conv, pool ----
def _window(node: Node, graph: Graph):
    n, c, h, wd = graph.types[node.inputs[0]].shape
    _, oc, oh, ow = graph.types[node.outputs[0]].shape
    pads = node.attrs["pads"]  # ONNX order: h_begin, w_begin, h_end, w_end
    return (n, c, h, wd, oc, oh, ow), tuple(node.attrs["strides"]), pads


def _nhwc_epilogue(w: KernelWriter, group, graph, layouts, args, outputs, out_shape, first: str,
                   bias: str | None = None, pixel_mask: str | None = None):
    """Shared tail of conv and pool kernels: pixel x channel axes, bias, epilogue, stores.
    offs_m holds flat output pixels (n * OH * OW + oh * OW + ow); pixel_mask, the ones to store
    (default: those inside the output)."""
    n, oc, oh, ow = out_shape
    w.line(f"mmask = {pixel_mask or f'prims.in_bounds(offs_m[:, None], {n * oh * ow}, BLOCK_M)'}")
    w.add_axis(Axis("offs_m[:, None]", [(0, n), (2, oh), (3, ow)], "mmask"))
    w.add_axis(Axis(f"{first}[None, :]", [(1, oc)], "nmask"))
    channel = lambda v: w.load(Operand(args(v), layouts[v].strides, (1,), layouts[v].dtype))  # noqa: E731
    if is_int8_anchor(group.anchor):  # int32 accumulator -> fp32, per-channel scales
        w.line(f"v0 = {dequantized(group.anchor, 'v0', channel)}")
    if bias is not None:
        w.line(f"v0 = v0 + {channel(bias)}")
    _epilogue(w, group, _after_anchor(group), layouts, args, out_shape)
    _stores(w, outputs, layouts, args, out_shape)


def _packed_conv_weight(name: str, weight, groups: int, depthwise: bool, channels_outer: bool, rows: bool):
    """The weight in the layout its tile reads, and the constant's name in the engine."""
    from trident.kernels import conv as templates
    from trident.kernels import depthwise as rows_template

    if rows:
        return name + "__dwrows", rows_template.pack_weight(weight)
    if depthwise:
        return name + "__dw", templates.pack_depthwise_weight(weight)
    if channels_outer:
        return name + "__oihw", weight.contiguous()
    return name + "__khwc", templates.pack_conv_weight(weight, groups)


def _depthwise_rows_head(w: KernelWriter, x_arg: str, w_arg: str, sizes, kh: int, kw: int, pads, along_w):
    """The row-streaming depthwise kernel (kernels/depthwise.py) up to its row loop: a program
    takes BLOCK_M output columns x BLOCK_N channels of ROWS output rows of one image, fills the
    queue of partial rows, then finishes one output row per input row. Returns the store mask of
    a finished row and the index of the first line inside the loop (the caller indents what
    follows: acc, the epilogue and the stores run once per row)."""
    n, c, h, wd, oh, ow = sizes
    sw, dw = along_w
    w.line("pid_r = tl.program_id(0)  # images x row blocks: the grid dim without a 65,535 limit")
    w.line(f"n_img = pid_r // tl.cdiv({oh}, ROWS)")
    w.line(f"oh0 = (pid_r % tl.cdiv({oh}, ROWS)) * ROWS")
    w.line("offs_w = tl.program_id(1) * BLOCK_M + tl.arange(0, BLOCK_M)")
    w.line("offs_n = tl.program_id(2) * BLOCK_N + tl.arange(0, BLOCK_N)")
    w.line(f"rc = offs_n % {c}  # channels past C wrap into range; their lanes are never stored")
    w.line(f"iw0 = offs_w * {sw} - {pads[1]}")
    w.line(f"nmask = prims.in_bounds(offs_n[None, :], {c}, BLOCK_N)")
    queue = "q0, q1, q2, q3, q4, q5"
    w.line(f"{queue} = depthwise_rows_fill({x_arg}, {w_arg}, n_img, oh0, {pads[0]}, iw0, {h}, {wd}, {c}, rc, "
           f"{kh}, {kw}, {dw}, BLOCK_M, BLOCK_N)")
    w.line(f"for r in range({kh - 1}, ROWS + {kh - 1}):")
    loop_from = len(w.lines)
    w.line(f"acc, {queue} = depthwise_row_step({x_arg}, {w_arg}, n_img, oh0 - {pads[0]} + r, iw0, {h}, {wd}, "
           f"{c}, rc, {queue}, {kh}, {kw}, {dw}, -1)")
    w.line(f"oh = oh0 + r - {kh - 1}")
    w.line(f"offs_m = (n_img * {oh} + oh) * {ow} + offs_w")
    # a vector row index: the interpreter cannot combine a scalar mask with a vector one
    return f"((offs_w < {ow}) & (tl.zeros_like(offs_w) + oh < {oh}))[:, None]", loop_from


@dataclass
class _Body:
    """A kernel body before it becomes a file: one conv kernel, or one member of a horizontal one."""
    args: Args
    lines: list[str]
    consts: list[str]
    programs: tuple[str, str]  # (axis-0 program count inside the kernel, the same in grid(meta))
    grid: str
    cfg: LaunchConfig
    imports: str
    packed: dict
    problem: dict
    empty: bool  # every output has 0 elements


def _conv_body(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str]) -> _Body:
    """A conv kernel's body. The GEMM-like tiles read their tile number from `pid` (see
    _tile_loop); the depthwise tile is a plain 2-D grid over (pixels, channels)."""
    from trident.kernels import conv as templates

    anchor = group.anchor
    # A cast fused in front reads the cast's input directly (the tile casts in registers).
    x_value = group.nodes[0].inputs[0] if group.nodes[0] is not anchor else anchor.inputs[0]
    (n, c, h, wd, oc, oh, ow), (sh, sw), pads = _window(anchor, graph)
    weight = graph.constants[anchor.inputs[1]]
    groups = anchor.attrs.get("groups", 1)
    dh, dw = anchor.attrs["dilations"]
    kh, kw = weight.shape[2], weight.shape[3]
    out_shape = (n, oc, oh, ow)
    depthwise = templates.is_depthwise(c, oc, groups)
    cg, ocg = c // groups, oc // groups
    tconf = templates.heuristic_config(n * oh * ow, ocg, cg, kh, kw, weight.dtype,
                                       out_bytes=_out_bytes(graph, outputs))
    small_c = not depthwise and templates.use_small_c_tile(cg, tconf.BLOCK_K)
    x_strides = layouts[x_value].strides
    # An NCHW-like input (channels not innermost) is walked as K = (c, kh, kw) with PyTorch's
    # OIHW weights: neighbouring K lanes then read neighbouring pixels.
    channels_outer = small_c and x_strides[1] > x_strides[3]
    rows = depthwise and streams_rows(kh, kw, sh, dh, ow)
    packed_name, packed = _packed_conv_weight(anchor.inputs[1], weight, groups, depthwise,
                                              channels_outer, rows)
    packed_layout = Layout(tuple(packed.shape), tuple(packed.stride()), packed.dtype)
    args, w = Args(), KernelWriter(graph, exact_quantize=False)
    x_arg, w_arg = args(x_value), args(packed_name)
    geometry = f"{n}, {h}, {wd}, {c}, {oh}, {ow}"
    window = f"{sh}, {sw}, {pads[0]}, {pads[1]}, {dh}, {dw}"
    pixel_mask, loop_from = None, None
    if rows:
        pixel_mask, loop_from = _depthwise_rows_head(w, x_arg, w_arg, (n, c, h, wd, oh, ow), kh, kw, pads,
                                                     (sw, dw))
        first, tile = "offs_n", "depthwise_row_step"
        cfg = depthwise_config(n, oh, ow, c)
        grid = (f"({n} * triton.cdiv({oh}, meta['ROWS']), triton.cdiv({ow}, meta['BLOCK_M']), "
                f"triton.cdiv({oc}, meta['BLOCK_N']))")
        consts = ["BLOCK_M", "BLOCK_N", "ROWS"]
    elif depthwise:
        w.line("offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)")
        w.line("offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)")
        w.line(f"acc = depthwise_conv2d_nhwc_tile({x_arg}, {w_arg}, {geometry}, {window}, offs_m, "
               f"offs_n, {kh}, {kw}, BLOCK_M, BLOCK_N)")
        w.line(f"nmask = prims.in_bounds(offs_n[None, :], {oc}, BLOCK_N)")
        first, tile = "offs_n", "depthwise_conv2d_nhwc_tile"
        tile_cfg = templates.heuristic_config(n * oh * ow, oc, 1, kh, kw, weight.dtype, depthwise=True)
        cfg = LaunchConfig.of(tile_cfg.num_warps, tile_cfg.num_stages,
                              BLOCK_M=128 if config.INTERPRET else tile_cfg.BLOCK_M, BLOCK_N=tile_cfg.BLOCK_N)
        grid = f"(triton.cdiv({n * oh * ow}, meta['BLOCK_M']), triton.cdiv({oc}, meta['BLOCK_N']))"
        consts = ["BLOCK_M", "BLOCK_N"]
    elif templates.is_pointwise_gemm(kh, kw, (sh, sw), pads, groups) and (dh, dw) == (1, 1):
        # 1x1 conv on NHWC = GEMM [N*H*W, C] @ [C, OC]; the packed weight [OC, C] is K-major.
        from trident.kernels.matmul import heuristic_config as gemm_config

        tile = "matmul_tile"
        pixels = n * oh * ow
        w.line(f"pid_m, pid_n = grouped_pid(pid, {pixels}, {oc}, BLOCK_M, BLOCK_N, GROUP_M)")
        w.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        w.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        w.line(f"acc = matmul_tile({x_arg}, {w_arg}, {pixels}, {oc}, {c}, {c}, 1, 1, {c}, offs_m, offs_n, "
               f"BLOCK_M, BLOCK_N, BLOCK_K, '{dot_precision(weight.dtype, 'gemm')}')")
        w.line(f"nmask = prims.in_bounds(offs_n[None, :], {oc}, BLOCK_N)")
        first = "offs_n"
        cfg = gemm_config(pixels, oc, c, weight.dtype, _out_bytes(graph, outputs))
        grid_axis1 = 1
        consts = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]
    else:
        tile = "conv2d_nhwc_small_c_tile" if small_c else "conv2d_nhwc_tile"
        w.line(f"pid_m, pid_n = grouped_pid(pid, {n * oh * ow}, {ocg}, BLOCK_M, BLOCK_N, GROUP_M)")
        w.line("group = tl.program_id(1)")
        w.line("offs_m = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)")
        w.line("offs_n = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)")
        strided = ""
        if small_c:  # this tile reads x through its strides (n, h, w, c)
            sn, sc, sh_, sw_ = x_strides
            strided = f", {sn}, {sh_}, {sw_}, {sc}, {channels_outer}"
        w.line(f"acc = {tile}({x_arg}, {w_arg}, {geometry}, {oc}, {window}, group, {cg}, {ocg}, "
               f"offs_m, offs_n, {kh}, {kw}, BLOCK_M, BLOCK_N, BLOCK_K, "
               f"'{dot_precision(weight.dtype, 'conv')}'{strided})")
        w.line(f"nmask = prims.in_bounds(offs_n[None, :], {ocg}, BLOCK_N)")
        w.line(f"offs_c = group * {ocg} + offs_n")
        first = "offs_c"
        cfg = tconf
        grid_axis1 = groups
        consts = ["BLOCK_M", "BLOCK_N", "BLOCK_K", "GROUP_M"]
    w.line("v0 = acc")
    w.values[anchor.outputs[0]] = "v0"
    _nhwc_epilogue(w, group, graph, layouts, args, outputs, out_shape, first, bias_of(anchor), pixel_mask)
    if loop_from is not None:  # the epilogue runs once per output row, inside the row loop
        w.lines[loop_from:] = ["    " + line for line in w.lines[loop_from:]]
    module = {"matmul_tile": "matmul", "depthwise_row_step": "depthwise"}.get(tile, "conv")
    imports = f"{TILE_IMPORTS}\nfrom trident.kernels.{module} import {tile}"
    if rows:
        imports += ", depthwise_rows_fill"
    problem = {"template": "depthwise" if depthwise else ("matmul" if tile == "matmul_tile" else "conv"),
               "M": n * oh * ow, "N": oc // groups, "K": (c // groups) * kh * kw, "C": c // groups,
               "KH": kh, "KW": kw, "groups": groups, "dtype": weight.dtype, "tile": tile}
    if rows:
        problem.update(OH=oh, OW=ow)
    tiles_n = oc if depthwise or tile == "matmul_tile" else ocg
    programs = (f"tl.cdiv({n * oh * ow}, BLOCK_M) * tl.cdiv({tiles_n}, BLOCK_N)",
                f"triton.cdiv({n * oh * ow}, meta['BLOCK_M']) * triton.cdiv({tiles_n}, meta['BLOCK_N'])")
    if not depthwise:
        grid = _tile_grid(programs[1], grid_axis1)
    return _Body(args, w.lines, consts, programs, grid, cfg, imports,
                 {packed_name: (packed, packed_layout)}, problem, _empty(graph, outputs))


def _assemble(name: str, nodes: list[Node], graph: Graph, body: _Body) -> KernelSource:
    src = _header(name, nodes, graph, body.imports)
    if body.problem["template"] == "depthwise":
        src += f"@triton.jit\ndef kernel({_signature(body.args, body.consts)}):\n" + "\n".join(body.lines)
    else:
        src += _tile_loop(body.args, body.consts, body.lines, body.programs[0])
    src += "\n\n\n" + _launcher(body.args, body.grid, body.cfg, body.empty)
    return KernelSource(name, src, list(body.args.order), body.cfg, body.packed, body.problem)


def conv(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
         name: str) -> KernelSource:
    return _assemble(name, group.nodes, graph, _conv_body(group, graph, layouts, outputs))


def horizontal(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
               name: str) -> KernelSource:
    """Sibling convs that read the same input, in one launch (TensorRT's horizontal fusion).

    Each member keeps its own weights, epilogue and output tensor: its body becomes a @triton.jit
    function, and the kernel hands each program to the member that owns its tile. The members
    share one launch config (they share M and K; N differs).
    """
    bodies = [_conv_body(m, graph, layouts, [o for o in outputs if o in m.produced()]) for m in group.members]
    args, lines, calls = Args(), [], []
    for k, body in enumerate(bodies):
        params = [body.args.names[v] for v in body.args.order]
        for v in body.args.order:
            args(v, "out" if body.args.names[v].startswith("out") else "in")
        consts = ", ".join(body.consts)
        lines += [f"@triton.jit\ndef member{k}({', '.join(params)}, pid, "
                  f"{', '.join(c + ': tl.constexpr' for c in body.consts)}):"] + body.lines + ["", ""]
        calls.append((body, f"member{k}({', '.join(args.names[v] for v in body.args.order)}, "
                            f"pid - first{k}, {consts})"))
    first = bodies[0]
    problem = dict(first.problem, N=sum(b.problem["N"] for b in bodies), members=len(bodies))
    cfg = _shared_config(dict(problem, out_bytes=_out_bytes(graph, outputs)))
    dispatch = ["    first0 = 0"]
    for k, (body, call) in enumerate(calls):
        dispatch.append(f"    first{k + 1} = first{k} + {body.programs[0]}")
    for k, (body, call) in enumerate(calls):
        keyword = "if" if k == 0 else ("elif" if k < len(calls) - 1 else "else")
        dispatch.append(f"    {keyword} pid < first{k + 1}:" if keyword != "else" else "    else:")
        dispatch.append(f"        {call}")
    imports = "\n".join(dict.fromkeys(line for b in bodies for line in b.imports.split("\n")))
    src = _header(name, group.nodes, graph, imports) + "\n".join(lines) + "\n"
    src += _tile_loop(args, first.consts, dispatch, " + ".join(f"({b.programs[0]})" for b in bodies))
    grid = _tile_grid(" + ".join(b.programs[1] for b in bodies), 1)
    src += "\n\n\n" + _launcher(args, grid, cfg, _empty(graph, outputs))
    packed = {k: v for b in bodies for k, v in b.packed.items()}
    return KernelSource(name, src, list(args.order), cfg, packed, problem)


def _shared_config(problem: dict) -> LaunchConfig:
    """The heuristic tile config for the members' combined problem (their N summed), with its
    pipeline made to fit shared memory beside the other members' (_fit_members)."""
    from trident.kernels import conv as templates
    from trident.kernels.matmul import heuristic_config as gemm_config

    if problem["tile"] == "matmul_tile":
        cfg = gemm_config(problem["M"], problem["N"], problem["K"], problem["dtype"], problem["out_bytes"])
    else:
        cfg = templates.heuristic_config(problem["M"], problem["N"], problem["C"], problem["KH"], problem["KW"],
                                         problem["dtype"], out_bytes=problem["out_bytes"])
    return _fit_members(cfg, problem["members"], problem["dtype"].itemsize)


def _fit_members(cfg, members: int, elem_bytes: int):
    """Fewer stages, then a shallower K block, until every member's operand pipeline fits at once.

    Each member's K loop keeps its own shared-memory buffers: three sibling convs with 4 stages of
    128x128x64 fp16 tiles asked for 256 KB (Inception, b64, sm_90), so their launch failed. The
    estimate counts all members, which errs on the safe side (those three took 2 buffers' worth)."""
    def fits(c) -> bool:
        return members * pipeline_smem_bytes(c, elem_bytes) <= PIPELINE_SMEM_BUDGET

    while not fits(cfg) and cfg.num_stages > 2:
        cfg = cfg.replace(num_stages=cfg.num_stages - 1)
    while not fits(cfg) and cfg.BLOCK_K > min_block_k(elem_bytes):
        cfg = cfg.replace(BLOCK_K=cfg.BLOCK_K // 2)
    return cfg


def pool(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
         name: str) -> KernelSource:
    anchor = group.anchor
    (n, c, h, wd, oc, oh, ow), (sh, sw), pads = _window(anchor, graph)
    kh, kw = anchor.attrs["kernel"]
    args, w = Args(), KernelWriter(graph)
    x_arg = args(anchor.inputs[0])
    w.line("offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)")
    w.line("offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)")
    geometry = f"{n}, {h}, {wd}, {c}, {oh}, {ow}, {sh}, {sw}, {pads[0]}, {pads[1]}"
    if anchor.op == "max_pool":
        dh, dw = anchor.attrs["dilations"]
        tile = "max_pool2d_nhwc_tile"
        w.line(f"acc = {tile}({x_arg}, {geometry}, {dh}, {dw}, offs_m, offs_n, {kh}, {kw}, "
               f"BLOCK_M, BLOCK_N)")
    else:
        tile = "avg_pool2d_nhwc_tile"
        include = bool(anchor.attrs.get("count_include_pad", False))
        w.line(f"acc = {tile}({x_arg}, {geometry}, {pads[2]}, {pads[3]}, offs_m, offs_n, {kh}, {kw}, "
               f"{include}, BLOCK_M, BLOCK_N)")
    w.line(f"nmask = prims.in_bounds(offs_n[None, :], {c}, BLOCK_N)")
    w.line("v0 = acc")
    w.values[anchor.outputs[0]] = "v0"
    _nhwc_epilogue(w, group, graph, layouts, args, outputs, (n, c, oh, ow), "offs_n")
    cfg = LaunchConfig.of(4, BLOCK_M=128 if config.INTERPRET else 32, BLOCK_N=min(64, next_pow2(c)))
    src = _header(name, group.nodes, graph, f"from trident.kernels.pool import {tile}")
    src += f"@triton.jit\ndef kernel({_signature(args, ['BLOCK_M', 'BLOCK_N'])}):\n" + "\n".join(w.lines)
    grid = f"(triton.cdiv({n * oh * ow}, meta['BLOCK_M']), triton.cdiv({c}, meta['BLOCK_N']))"
    src += "\n\n\n" + _launcher(args, grid, cfg, _empty(graph, outputs))
    return KernelSource(name, src, list(args.order), cfg,
                        problem={"template": "pool", "M": n * oh * ow, "C": c, "KH": kh, "KW": kw})


GENERATORS = {"pointwise": pointwise, "reduction": reduction, "matmul": matmul, "conv": conv,
              "horizontal": horizontal,
              "pool": pool}  # (attention's generator, compiler/codegen/attention.py, builds on this module)
