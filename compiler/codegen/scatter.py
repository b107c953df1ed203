"""Codegen of `scatter` groups: ScatterElements (torch.scatter, scatter_add, scatter_reduce) with
few updates per row, as one kernel that holds whole rows in registers.

Each program takes BLOCK_X rows of x (the dims other than the axis) of BLOCK_R positions: it loads
them, then walks the row's m updates in order (m = the indices' size along the axis, at most
group_kinds.MAX_SCATTER_UPDATES), each one's index a lane comparison against the positions, and
stores the rows. The updates of a row apply one after another, so an index named twice takes the
last update (as torch's CPU scatter does) or accumulates (add, mul, max, min), and no two programs
write one element: no atomics, no race. Rows of x past the indices' extent on another dim take no
update. Indices count from the end when negative; the engine checks them before uncaptured runs
(codegen/program.py index_checks) and the kernel drops an out-of-range one, so no lane writes
outside the row.
"""
from __future__ import annotations

from trident.compiler.codegen.kernels import (Args, KernelSource, _operand, _stores, row_tiles, row_writer,
                                              whole_row_axis)
from trident.compiler.codegen.program import Layout
from trident.compiler.codegen.writer import KernelWriter
from trident.compiler.fusion import Group
from trident.compiler.group_kinds import MAX_ROW
from trident.compiler.ir import Graph
from trident.kernels.common import next_pow2

# How an update meets the element it lands on.
_COMBINE = {"none": "{u}", "add": "{x} + {u}", "mul": "{x} * {u}",
            "max": "prims.maximum({x}, {u})", "min": "prims.minimum({x}, {u})"}


def generate(group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
             name: str) -> KernelSource:
    node = group.anchor
    x_value, index_value, updates_value = node.inputs
    shape, index_shape = tuple(graph.types[x_value].shape), tuple(graph.types[index_value].shape)
    axis = node.attrs["axis"] % len(shape)
    args, w, rows, length = row_writer(graph, shape, layouts[x_value].strides, axis)
    whole_row_axis(w, axis, length)
    # (the where gives the row its tile's shape where x moves along neither axis: a [1, 1] x
    # loads a scalar, and the loop must carry one type)
    w.line(f"row = tl.where(xmask & pmask, {w.load(_operand(x_value, layouts, args, shape))}, 0)")
    inside = _rows_with_updates(w, shape, index_shape, axis)
    with w.loop(f"for j in range({index_shape[axis]}):"):
        index = _column(w, index_value, layouts, args, axis, inside)
        update = _column(w, updates_value, layouts, args, axis, inside)
        w.line(f"at = tl.where({index} < 0, {index} + {length}, {index})")
        w.line(f"hit = (pos == at) & ({inside})")
        combined = _COMBINE[node.attrs.get("reduction", "none")].format(x="row", u=update)
        w.line(f"row = tl.where(hit, {combined}, row)")
    w.values[node.outputs[0]] = "row"
    _stores(w, outputs, layouts, args, shape)
    return row_tiles(name, group, graph, w, args, outputs, "scatter", rows, length, next_pow2(length), MAX_ROW)


def _rows_with_updates(w: KernelWriter, shape: tuple, index_shape: tuple, axis: int) -> str:
    """The mask of the rows the indices reach: along the other dims they may be shorter than x
    (empty along a dim x has one element of, which declares no index: no row)."""
    terms = [f"({w.index_of[d]} < {n})" if d in w.index_of else "(xoffs[:, None] < 0)"
             for d, n in enumerate(index_shape) if d != axis and n < shape[d]]
    return " & ".join(terms + ["xmask"])


def _column(w: KernelWriter, value: str, layouts: dict[str, Layout], args: Args, axis: int,
            mask: str) -> str:
    """Element j of each row ([BLOCK_X, 1]) of the indices or the updates: addressed by the row's
    indices on the other dims and by the loop's j along the axis. The pointer takes the row lanes'
    shape even where every other dim has one element (a lone row), as its mask does."""
    lay = layouts[value]
    terms = [f"{w.index_of[d]} * {stride}" for d, stride in enumerate(lay.strides)
             if d != axis and d in w.index_of and stride != 0]
    terms += [f"j * {lay.strides[axis]}", "xoffs[:, None] * 0"]
    var = w.tmp("x")
    to_float = ".to(tl.float32)" if lay.dtype.is_floating_point else ""
    w.line(f"{var} = tl.load({args(value)} + ({' + '.join(terms)}), mask={mask}, other=0){to_float}")
    return var
