"""Movement ops a pointwise kernel computes element by element (group_kinds.PER_ELEMENT_MOVES): each
lane reads the one element its output needs, so the op costs no kernel of its own and the
elementwise ops after it fuse behind it.

- table lookup: a Gather of a table's rows by integer ids (an embedding; a computed tensor's rows:
  a mixture-of-experts layer's tokens in expert order);
- gather of elements (GatherElements): each lane reads data at its own position, the index
  tensor's value standing in for its position along the axis;
- concat: each lane reads the piece its index along the axis falls in;
- pad (constant, no crop): a lane inside the input reads its element, the others the fill;
- resample (a resize, its taps in tables): a lane looks up its taps and mixes what they read;
- grid sample (codegen/grid_sample.py): a lane reads its grid point and mixes the taps around it.

Every load is masked to the tensor it reads (KernelWriter.load_at)."""
from __future__ import annotations

from trident.compiler.codegen import expr as E
from trident.compiler.codegen.grid_sample import grid_sample
from trident.compiler.codegen.writer import KernelWriter, Operand, broadcast_dims
from trident.compiler.ir import Node


def emit(w: KernelWriter, node: Node, operand_for) -> str:
    """Emit one per-element move; its output's register variable (also in w.values)."""
    return {"gather": table_lookup, "gather_elements": element_gather, "concat": concat,
            "pad": pad, "resample": resample, "grid_sample": grid_sample}[node.op](w, node, operand_for)


def _clamped_index(w: KernelWriter, index: str, size: int) -> str:
    """`index` (a register of indices into a dim of `size`) wrapped, negative ones counting from
    the end, and clamped into the dim, as the torch gather does under a CUDA graph: no lane
    reads outside the tensor. The engine checks the indices before every uncaptured run, so an
    out-of-range one is still an error (Plan.index_bounds, IndexCheck)."""
    row = w.tmp("row")
    w.line(f"{row} = {index}.to(tl.int64)")
    w.line(f"{row} = tl.minimum(tl.maximum(tl.where({row} < 0, {row} + {size}, {row}), 0), "
           f"{max(size - 1, 0)})")
    return row


def table_lookup(w: KernelWriter, node: Node, operand_for) -> str:
    """out[i..., j...] = table[ids[i...], j...]: a gather along axis 0 of a table in memory (a
    constant or a tensor an earlier kernel stored: group_kinds.table_lookup_refusal), computed
    where the value is needed, so an embedding's rows flow into the adds and the LayerNorm after it
    without a stored copy."""
    table_name, ids_name = node.inputs[:2]
    out_shape = tuple(w.graph.types[node.outputs[0]].shape)
    out_dims = broadcast_dims(out_shape, w.space_shape())
    id_rank = len(w.graph.types[ids_name].shape)
    if ids_name not in w.values:
        ids = operand_for(ids_name)
        ids = Operand(ids.arg, ids.strides, out_dims[:id_rank], ids.dtype, ids.offset)
        w.values[ids_name] = w.load(ids)
    table = operand_for(table_name)
    row = _clamped_index(w, w.values[ids_name], w.graph.types[table_name].shape[0])
    # The table's own dims after the first are the output's last ones; the first is the row.
    lookup = Operand(table.arg, table.strides, (None,) + out_dims[id_rank:], table.dtype, table.offset)
    var = w.load_at(lookup, {0: row}, {d for d in out_dims[:id_rank] if d is not None})
    w.values[node.outputs[0]] = var
    return var


def element_gather(w: KernelWriter, node: Node, operand_for) -> str:
    """out[i, j, k] = x[i, idx[i, j, k], k] (axis 1; group_kinds.element_gather_refusal): the lane at
    an output position reads x there, its index along the axis replaced by the (wrapped,
    clamped) index. The output has the indices' shape; x may be larger along the other dims."""
    x_name, idx_name = node.inputs
    out_shape = tuple(w.graph.types[node.outputs[0]].shape)
    out_dims = broadcast_dims(out_shape, w.space_shape())
    axis = node.attrs["axis"]
    if idx_name not in w.values:
        idx = operand_for(idx_name)
        w.values[idx_name] = w.load(Operand(idx.arg, idx.strides, out_dims, idx.dtype, idx.offset))
    row = _clamped_index(w, w.values[idx_name], w.graph.types[x_name].shape[axis])
    x = operand_for(x_name)
    # x's dims line up with the output's (same rank); along the axis the index addresses it.
    x = Operand(x.arg, x.strides, out_dims, x.dtype, x.offset)
    var = w.load_at(x, {axis: row}, {d for d in out_dims if d is not None})
    w.values[node.outputs[0]] = var
    return var


def concat(w: KernelWriter, node: Node, operand_for) -> str:
    """out = cat(pieces, axis): each lane loads from the piece its index along the axis falls
    in (index minus the piece's start), every load masked to its own piece, so no lane reads
    outside one. Pieces of size 0 take no lane."""
    out_shape = tuple(w.graph.types[node.outputs[0]].shape)
    out_dims = broadcast_dims(out_shape, w.space_shape())
    axis = node.attrs["axis"] % len(out_shape)
    along = out_dims[axis]
    index = w.index_of.get(along, "0") if along is not None else "0"
    var, start = None, 0
    for value in node.inputs:
        size = w.graph.types[value].shape[axis]
        if size == 0:
            continue
        piece = operand_for(value)
        piece = Operand(piece.arg, piece.strides, out_dims, piece.dtype, piece.offset)
        shifted = w.tmp("cat")
        w.line(f"{shifted} = {index} - {start}")
        inside = f"({shifted} >= 0) & ({shifted} < {size})"
        loaded = w.load_at(piece, {axis: shifted}, {along} - {None}, inside)
        if var is None:
            var = loaded
        else:
            merged = w.tmp("v")
            w.line(f"{merged} = tl.where({inside}, {loaded}, {var})")
            var = merged
        start += size
    if var is None:  # every piece empty: the output has no element either
        var = w.tmp("v")
        w.line(f"{var} = 0")
    w.values[node.outputs[0]] = var
    return var


def pad(w: KernelWriter, node: Node, operand_for) -> str:
    """out = pad(x), x not empty and no crop (fusion checks both). constant: a lane inside the
    input reads x at its index minus the pads before it, the others take the fill value (no
    load leaves x). edge, reflect and wrap: every lane reads x, at its index clamped, mirrored
    (once: fusion keeps reflect's pads under the size) or taken modulo the size."""
    out_shape = tuple(w.graph.types[node.outputs[0]].shape)
    in_shape = tuple(w.graph.types[node.inputs[0]].shape)
    out_dims = broadcast_dims(out_shape, w.space_shape())
    pads, rank = node.attrs["pads"], len(out_shape)
    mode = node.attrs.get("mode", "constant")
    x = operand_for(node.inputs[0])
    x = Operand(x.arg, x.strides, out_dims, x.dtype, x.offset)
    shifted, inside = {}, []  # tensor dim -> its index expression; the in-range tests
    for d in range(rank):
        before = pads[d]
        if not (before or pads[rank + d]) or out_dims[d] is None:
            continue
        index = w.tmp("pad")
        w.line(f"{index} = {w.index_of.get(out_dims[d], '0')} - {before}")
        if mode == "constant":
            inside.append(f"({index} >= 0) & ({index} < {in_shape[d]})")
        else:
            w.line(f"{index} = {_source_index(mode, index, in_shape[d])}")
        shifted[d] = index
    loaded = w.load_at(x, shifted, {out_dims[d] for d in shifted}, " & ".join(inside) or None)
    var = w.tmp("v")
    fill = E.literal(node.attrs.get("value", 0))
    w.line(f"{var} = tl.where({' & '.join(inside)}, {loaded}, {fill})" if inside else f"{var} = {loaded}")
    w.values[node.outputs[0]] = var
    return var


def _source_index(mode: str, i: str, size: int) -> str:
    """The input index a padded position reads (i: its index minus the pads before it)."""
    if mode == "edge":
        return f"tl.minimum(tl.maximum({i}, 0), {size - 1})"
    if mode == "reflect":  # the edge itself is not repeated: -1 reads 1, size reads size - 2
        return f"tl.where({i} < 0, -{i}, tl.where({i} > {size - 1}, {2 * (size - 1)} - {i}, {i}))"
    return f"(({i} % {size}) + {size}) % {size}"  # wrap


def resample(w: KernelWriter, node: Node, operand_for) -> str:
    """out = resize(x) with its taps in tables (compiler/passes/resample.py): per resized axis, a
    lane loads each tap's input index (and weight) at its output index, then x at every
    combination of taps. The sums nest in the order the axes are interpolated (the first axis
    innermost), tap by tap, as ops/resample.py's reference adds them; nearest reads its one tap."""
    out_shape = tuple(w.graph.types[node.outputs[0]].shape)
    out_dims = broadcast_dims(out_shape, w.space_shape())
    axes, nearest = node.attrs["axes"], node.attrs["nearest"]
    x = operand_for(node.inputs[0])
    x = Operand(x.arg, x.strides, out_dims, x.dtype, x.offset)
    step = 1 if nearest else 2
    taps = []  # per axis: [(input index register, weight register or None)] per tap
    for i, axis in enumerate(axes):
        columns = _tap_rows(w, operand_for, node.inputs[1 + step * i], out_dims[axis])
        weights = [None] * len(columns) if nearest else \
            _tap_rows(w, operand_for, node.inputs[2 + step * i], out_dims[axis])
        taps.append(list(zip(columns, weights)))
    along = {out_dims[a] for a in axes} - {None}

    def mix(level: int, at: dict[int, str]) -> str:
        if level < 0:
            return w.load_at(x, at, along)
        total = None
        for column, weight in taps[level]:
            value = mix(level - 1, {**at, axes[level]: column})
            term = value if weight is None else f"{value} * {weight}"
            var = w.tmp("rs")
            w.line(f"{var} = {term}" if total is None else f"{var} = {total} + {term}")
            total = var
        return total

    var = mix(len(axes) - 1, {})
    w.values[node.outputs[0]] = var
    return var


def _tap_rows(w: KernelWriter, operand_for, table: str, dim: int | None) -> list[str]:
    """The registers of a [taps, out] table's rows, each lane's entry at its output index."""
    t = operand_for(table)
    rows = w.graph.types[table].shape[0]
    t = Operand(t.arg, t.strides, (None, dim), t.dtype, t.offset)
    loaded = [w.load_at(t, {0: str(r)}, set()) for r in range(rows)]
    if not t.dtype.is_floating_point:  # input indices: offsets into x are int64
        for var in loaded:
            w.line(f"{var} = {var}.to(tl.int64)")
    return loaded
