"""GridSample (F.grid_sample, ONNX GridSample) of a 4-D input as a per-element move (codegen/
moves.py): the lane of output (n, c, h, w) loads its grid point grid[n, h, w] = (gx, gy) in
[-1, 1], maps it to input coordinates as torch's grid_sampler_compute_source_index does, and
reads its taps: the four neighbours, bilinear weights in torch's order (nw, ne, sw, se), or the
nearest one (rounded half to even, as nearbyint). A tap outside the input reads 0 (torch's
within-bounds test on every mode); a NaN coordinate gives NaN bilinear and 0 nearest, as torch's
do. Every address is clamped into the input first, so no lane reads outside it, whatever the grid
holds.

Padding: "zeros" leaves the coordinates as they are; "border" clamps them into [0, size - 1];
"reflection" reflects them about the edges (the corner pixels' centres with align_corners, their
outer edges without), then clamps.
"""
from __future__ import annotations

from trident.compiler.codegen.expr import literal, round_half_even
from trident.compiler.codegen.writer import KernelWriter, Operand, broadcast_dims
from trident.compiler.ir import Node


def grid_sample(w: KernelWriter, node: Node, operand_for) -> str:
    x_name, grid_name = node.inputs
    height, width = w.graph.types[x_name].shape[2:]
    out_dims = broadcast_dims(tuple(w.graph.types[node.outputs[0]].shape), w.space_shape())
    n, c, h, wd = out_dims
    grid = operand_for(grid_name)
    grid = Operand(grid.arg, grid.strides, (n, h, wd, None), grid.dtype, grid.offset)
    x = operand_for(x_name)
    x = Operand(x.arg, x.strides, (n, c, None, None), x.dtype, x.offset)
    align, padding = bool(node.attrs.get("align_corners", False)), node.attrs.get("padding_mode", "zeros")
    ix = _source_index(w, w.load_at(grid, {3: "0"}, set()), width, align, padding)
    iy = _source_index(w, w.load_at(grid, {3: "1"}, set()), height, align, padding)
    along = {d for d in (h, wd) if d is not None}

    def tap(row: str, col: str, weight: str = "1.0") -> str:
        """x at (row, col) (float registers of whole numbers), 0 outside the input, times its
        weight (a NaN coordinate's NaN weight makes the sample NaN, as torch's bilinear gives)."""
        inside = w.tmp("in")
        w.line(f"{inside} = ({row} >= 0) & ({row} <= {height - 1}) & ({col} >= 0) & ({col} <= {width - 1})")
        at = {2: _address(w, row, height), 3: _address(w, col, width)}
        return f"{w.load_at(x, at, along, inside)} * {weight}"  # (masked by inside: 0 outside)

    out = w.tmp("gs")
    if node.attrs.get("mode", "linear") == "nearest":
        w.line(f"{out} = {tap(round_half_even(iy), round_half_even(ix))}")
    else:
        west, north = w.tmp("x0"), w.tmp("y0")
        w.line(f"{west} = tl.floor({ix})")
        w.line(f"{north} = tl.floor({iy})")
        east, south = f"({west} + 1.0)", f"({north} + 1.0)"
        weights = [f"({east} - {ix}) * ({south} - {iy})", f"({ix} - {west}) * ({south} - {iy})",
                   f"({east} - {ix}) * ({iy} - {north})", f"({ix} - {west}) * ({iy} - {north})"]
        corners = [(north, west), (north, east), (south, west), (south, east)]
        terms = [tap(row, col, weight) for (row, col), weight in zip(corners, weights)]
        w.line(f"{out} = " + " + ".join(terms))
    w.values[node.outputs[0]] = out
    return out


def _source_index(w: KernelWriter, coord: str, size: int, align: bool, padding: str) -> str:
    """The input coordinate of a normalized grid coordinate (torch's unnormalize, then padding)."""
    var = w.tmp("src")
    if align:
        w.line(f"{var} = ({coord} + 1.0) * 0.5 * {literal(float(size - 1))}")
    else:
        w.line(f"{var} = (({coord} + 1.0) * {literal(float(size))} - 1.0) * 0.5")
    if padding == "reflection":
        low, high = (0, 2 * (size - 1)) if align else (-1, 2 * size - 1)
        w.line(f"{var} = {_reflect(var, low, high)}")
    if padding in ("border", "reflection"):
        w.line(f"{var} = tl.minimum(tl.maximum({var}, 0.0), {literal(float(size - 1))})")
    return var


def _reflect(coord: str, twice_low: int, twice_high: int) -> str:
    """torch's reflect_coordinates: coord reflected into [twice_low / 2, twice_high / 2]."""
    if twice_low == twice_high:
        return f"({coord} * 0.0)"
    low, span = twice_low / 2, (twice_high - twice_low) / 2
    distance = f"tl.abs({coord} - {literal(low)})"
    flips = f"tl.floor({distance} / {literal(span)})"
    extra = f"({distance} % {literal(span)})"  # (Triton's float % is C's fmod)
    return (f"tl.where(({flips} % 2.0) == 0.0, {extra} + {literal(low)}, "
            f"{literal(span)} - {extra} + {literal(low)})")


def _address(w: KernelWriter, coord: str, size: int) -> str:
    """A whole-number float coordinate as an index clamped into the dim (NaN lands on 0): the tap's
    mask says whether it is really inside."""
    var = w.tmp("at")
    w.line(f"{var} = tl.minimum(tl.maximum(tl.where({coord} == {coord}, {coord}, 0.0), 0.0), "
           f"{literal(float(max(size - 1, 0)))}).to(tl.int32)")
    return var
