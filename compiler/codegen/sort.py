"""Codegen of `sort` groups: topk (and through it torch.sort, argsort and a full-row TopK) as one
kernel that holds whole rows in registers and sorts them with Triton's bitonic `tl.sort`.

Each program takes BLOCK_X rows (the dims other than the axis) of BLOCK_R = next_pow2(length)
positions. tl.sort orders one tensor, not keys carrying payloads, so every element becomes one
int64 that orders as (key, position):
- the key is a 32-bit integer in the element's order: an integer as it is; a float's bits with the
  magnitude bits flipped where the sign is set (negative floats then order by decreasing
  magnitude), NaN first made the one positive quiet NaN (torch orders NaN above +inf, whatever its
  sign bit) and -0.0 made +0.0 (torch keeps the two equal);
- a descending sort flips every key bit (~key reverses the order), so every sort is ascending;
- the position fills the low 32 bits: equal keys keep their order (a stable sort, as ONNX TopK
  and torch.sort(stable=True) ask), and the sorted word says where each element came from.
int64 keys that are not indices (which fit 32 bits) take two such passes, the low halves' order
first, then the high halves' (_two_pass_order), for whole rows only.
Lanes past the row are INT64_MAX: they sort last, after every element. The first k positions of
the sorted row are stored: the indices as they are, the values loaded again from the input at those
indices (exact: -0.0, NaN payloads and fp16 values come back as they were). Which dtypes and row
lengths it takes: group_kinds.SORT_DTYPES and MAX_SORT_LENGTH.
"""
from __future__ import annotations

import torch

from trident.compiler.codegen.kernels import (KernelSource, _operand, _stores, row_tiles, row_writer,
                                              whole_row_axis)
from trident.compiler.codegen.program import Layout
from trident.compiler.codegen.writer import Axis, KernelWriter, Operand
from trident.compiler.fusion import Group
from trident.compiler.group_kinds import MAX_SORT_LENGTH, two_pass_keys
from trident.compiler.ir import Graph
from trident.kernels.common import next_pow2

_INT64_MAX = 2**63 - 1
_CANONICAL_NAN = 0x7FC00000  # the bits (and so the key) of the positive quiet NaN
_MAGNITUDE_BITS = 0x7FFFFFFF


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    anchor = group.anchor
    x_value, (values_out, indices_out) = anchor.inputs[0], anchor.outputs
    shape = tuple(graph.types[x_value].shape)
    axis, k = anchor.attrs["axis"] % len(shape), anchor.attrs["k"]
    args, w, rows, length = row_writer(graph, shape, layouts[x_value].strides, axis)
    whole_row_axis(w, axis, length)
    x = _operand(x_value, layouts, args, shape)
    largest = anchor.attrs.get("largest", True)
    if two_pass_keys(x_value, graph):
        # (either output serves: both are int64 rows of the whole length; the one stored)
        scratch = indices_out if indices_out in outputs else values_out
        _two_pass_order(w, x, _operand(scratch, layouts, args, shape, prefix="out"), axis, largest)
    else:
        _sorted_positions(w, _sort_key(w, w.load(x), graph.types[x_value].dtype, largest), "src")
    w.values[indices_out] = "src"
    if values_out in outputs:
        w.values[values_out] = w.load_at(x, {axis: "src"}, {axis})
    w.axes.pop()  # the outputs hold the first k positions of the sorted row
    w.line(f"kmask = pos < {k}")
    w.add_axis(Axis("pos", [(axis, k)], "kmask"))
    _stores(w, outputs, layouts, args, tuple(graph.types[indices_out].shape))
    return row_tiles(name, group, graph, w, args, outputs, "sort", rows, length, next_pow2(length),
                     MAX_SORT_LENGTH)


def _sorted_positions(w: KernelWriter, key: str, out: str) -> None:
    """`out` = the positions of the row in ascending order of the int32 `key` (stable)."""
    w.line(f"word = tl.where(pmask, ({key}.to(tl.int64) << 32) | pos.to(tl.int64), {_INT64_MAX})")
    w.line("word = tl.sort(word, 1)")
    # (a masked-off row's lanes may hold INT64_MAX's low bits: clamped, though no load reads them)
    w.line(f"{out} = tl.where(pmask, word & {2**32 - 1}, 0)")


def _two_pass_order(w: KernelWriter, x: Operand, scratch: Operand, axis: int, largest: bool) -> None:
    """int64 keys (a full sort: group_kinds.sort_refusal), sorted as two 32-bit halves, least
    significant first (a radix sort of two digits, each pass stable): the low halves' order is
    kept in an output (`scratch`: this program's own rows of it), the high halves of the
    elements in that order are sorted, and the final order is the first one read through the
    second. Barriers between the store, the loads and the final store keep the row's threads in
    step (each reads positions others wrote)."""
    flip = "~" if largest else ""
    w.line(f"low = (({flip}{w.load(x)}) & {2**32 - 1}) - {2**31}")  # (unsigned, shifted to int32's order)
    _sorted_positions(w, "low", "first")
    w.store(scratch, "first")
    w.line("tl.debug_barrier()")
    w.line(f"high = ({flip}{w.load_at(x, {axis: 'first'}, {axis})}) >> 32")
    _sorted_positions(w, "high", "second")
    w.line(f"src = {w.load_at(scratch, {axis: 'second'}, {axis})}")
    w.line("tl.debug_barrier()")


def _sort_key(w: KernelWriter, x: str, dtype: torch.dtype, largest: bool) -> str:
    """The register of int32 keys whose ascending order is the sort's order of `x`."""
    if dtype.is_floating_point:  # (w.load gives floats as fp32: fp16 and bf16 widen exactly)
        w.line(f"bits = {x}.to(tl.int32, bitcast=True)")
        w.line(f"key = bits ^ ((bits >> 31) & {_MAGNITUDE_BITS})")
        w.line(f"key = tl.where({x} != {x}, {_CANONICAL_NAN}, tl.where({x} == 0, 0, key))")
    else:  # (int64 keys here are indices, below 2^31: group_kinds._is_index)
        w.line(f"key = {x}.to(tl.int32)")
    if largest:
        w.line("key = ~key")
    return "key"
