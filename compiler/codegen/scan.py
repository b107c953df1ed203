"""Codegen of `scan` groups: a running sum (CumSum) or product (CumProd), or a first-order linear
recurrence (linear_scan: h[t] = a[t] * h[t-1] + b[t], Mamba's selective scan) along one axis, and
the elementwise epilogue fused behind it (fusion.py), computed and stored chunk by chunk.

Each program takes BLOCK_X rows (the dims other than the axis) and walks the axis in chunks of
BLOCK_R positions: tl.cumsum sums inside a chunk, and a carry per row (the sum of the chunks
before) is added to it, then grows by the chunk's total (a product: tl.cumprod, the carry
multiplied). A recurrence scans the chunk's (a, b) pairs with tl.associative_scan under
prims.linear_recurrence's combine, which gives each position the product of the coefficients up
to it and its h as if h were 0 before the chunk; the carry (h at the chunk before's end) enters
as that product times the carry. A row of any length is one loop, and its
block does not depend on the length (a shape-generic kernel only changes the loop's bound).

The lanes of a chunk walk scan positions p = 0, 1, ...; ONNX's attributes only change which
element a position reads and writes:
- reverse: position p is element L-1-p (the sum runs from the end);
- exclusive: the sum at p covers the positions before p, so the lane loads the element of
  position p - 1 (nothing at p = 0). A shifted load, not the inclusive sum minus x, which would
  not be exact for floats.
Floats sum in fp32 registers and round once at the store; integers sum in their own type, at
least 32 bits wide, and narrower ones wrap at the store, as torch's cumsum cast back does.
"""
from __future__ import annotations

import torch

from trident.compiler import config
from trident.compiler.codegen.kernels import (KernelSource, _after_anchor, _epilogue, _operand,
                                              _stores, row_tiles, row_writer)
from trident.compiler.codegen.program import Layout
from trident.compiler.codegen.writer import Axis, KernelWriter, Operand
from trident.compiler.fusion import Group
from trident.compiler.ir import Graph, Node
from trident.kernels.common import next_pow2

# Positions one loop iteration covers. Tests lower it to run rows of many chunks at small sizes.
MAX_CHUNK = 4096 if config.INTERPRET else 1024


def accumulator(dtype: torch.dtype) -> str:
    """The Triton type a running sum of `dtype` is kept in."""
    if dtype.is_floating_point:
        return "tl.float32"
    return "tl.int64" if dtype == torch.int64 else "tl.int32"


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    anchor = group.anchor
    shape = tuple(graph.types[anchor.inputs[0]].shape)
    axis = anchor.attrs["axis"] % len(shape)
    args, w, rows, length = row_writer(graph, shape, layouts[anchor.inputs[0]].strides, axis)
    acc = accumulator(graph.types[anchor.inputs[0]].dtype)
    w.line(f"carry = tl.full([BLOCK_X, 1], {_IDENTITY[anchor.op]}, dtype={acc})")
    with w.loop(f"for start in range(0, {length}, BLOCK_R):"):
        x = _operand(anchor.inputs[0], layouts, args, shape)
        if anchor.op == "linear_scan":
            inputs = _operand(anchor.inputs[1], layouts, args, shape)
            w.values[anchor.outputs[0]] = _chunk_recurrence(w, x, inputs, axis, length)
        else:
            w.values[anchor.outputs[0]] = _chunk_sums(w, anchor, x, axis, length, acc)
        _epilogue(w, group, _after_anchor(group), layouts, args, shape)
        _stores(w, outputs, layouts, args, shape)
    return row_tiles(name, group, graph, w, args, outputs, "scan", rows, length,
                     min(next_pow2(length), MAX_CHUNK))


def _chunk_positions(w: KernelWriter, axis: int, length: int, reverse: bool = False) -> None:
    """Declare the chunk's positions: the axis's index is the element each one is."""
    w.line("pos = start + tl.arange(0, BLOCK_R)[None, :]")
    w.line(f"pmask = prims.in_bounds(pos, {length}, BLOCK_R)")
    w.line(f"elem = {length - 1} - pos" if reverse else "elem = pos")
    w.add_axis(Axis("elem", [(axis, length)], "pmask"))


def _chunk_recurrence(w: KernelWriter, a: Operand, b: Operand, axis: int, length: int) -> str:
    """One chunk of a linear recurrence: the register of its h; the carry becomes its last h.
    Lanes past the row or the rows take a = 1, b = 0, which keep h as it is."""
    _chunk_positions(w, axis, length)
    w.line(f"coef = tl.where(xmask & pmask, {w.load(a)}, 1.0).to(tl.float32)")
    w.line(f"step = tl.where(xmask & pmask, {w.load(b)}, 0.0).to(tl.float32)")
    out = w.tmp("h")
    w.line(f"{out}_coef, {out}_step = tl.associative_scan((coef, step), 1, prims.linear_recurrence)")
    w.line(f"{out} = {out}_coef * carry + {out}_step")
    w.line(f"carry = prims.last_column({out})")
    return out


def _chunk_sums(w: KernelWriter, anchor: Node, x: Operand, axis: int, length: int, acc: str) -> str:
    """One chunk of the loop: load what each lane sums, and return the register of the running
    sums; the carry grows by the chunk's total."""
    reverse, exclusive = anchor.attrs.get("reverse", False), anchor.attrs.get("exclusive", False)
    _chunk_positions(w, axis, length, reverse)
    identity = _IDENTITY[anchor.op]
    if exclusive:
        w.line("prev = pos - 1")
        w.line(f"src = {length - 1} - prev" if reverse else "src = prev")
        loaded = f"tl.where(prev >= 0, {w.load_at(x, {axis: 'src'}, {axis}, 'prev >= 0')}, {identity})"
    else:
        loaded = w.values[anchor.inputs[0]] = w.load(x)  # the epilogue may read x here too
    # Lanes past the row or the rows add (multiply) nothing; the where also gives the tile its
    # full shape where x moves along neither (a row of one element loads a scalar).
    w.line(f"step = tl.where(xmask & pmask, {loaded}, {identity}).to({acc})")
    out = w.tmp("r")
    if anchor.op == "cumsum":
        w.line(f"{out} = carry + tl.cumsum(step, 1)")
        w.line("carry = carry + tl.sum(step, 1)[:, None]")
        return out
    # a running product: the chunk's whole product is its last column (the lanes past the row are 1)
    w.line(f"{out}_chunk = tl.cumprod(step, 1)")
    w.line(f"{out} = carry * {out}_chunk")
    w.line(f"carry = carry * prims.last_column({out}_chunk)")
    return out


_IDENTITY = {"cumsum": 0, "cumprod": 1, "linear_scan": 0}  # (the recurrence's: h before the row)
