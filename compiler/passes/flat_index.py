"""The flat row an ND index names, for the GatherND and ScatterND lowerings (passes/gather_nd.py,
passes/scatter_rows.py).

An index of k coordinates into dims of sizes n_0 .. n_(k-1) names the row sum_j c_j * stride_j of
those dims seen as one (row-major strides), each coordinate first counted from the end when
negative. A coordinate out of its dim could land on another valid row once flattened (3 x 4 dims:
(1, 7) is row 11); where any coordinate of an index is out of range, the flat index is set to
`past` (one past the rows) instead, so the gather's or scatter's own index check reports it.
"""
from __future__ import annotations

import math

import torch

from trident.compiler.ir import GraphBuilder


def flat_rows(b: GraphBuilder, coordinates: str, sizes: list[int], places: list[int], past: int,
              name: str, first_row: str | None = None) -> str:
    """The int64 flat index [places] of `coordinates` ([places..., len(sizes)], any integer type),
    plus `first_row` (a value broadcast to places: GatherND's batch rows) where given."""
    coordinates = b.add1("cast", [coordinates], {"dtype": torch.int64}, name + "_int64")
    flat, outside = None, None
    for j, size in enumerate(sizes):
        c = b.add1("slice", [coordinates], {"starts": [j], "ends": [j + 1], "axes": [len(places)], "steps": [1]},
                   f"{name}_coordinate{j}")
        c = b.add1("reshape", [c], {"shape": places}, f"{name}_coordinate{j}")
        c = b.add1("where", [b.add1("less", [c, _int(b, 0)], {}, name + "_negative"),
                             b.add1("add", [c, _int(b, size)], {}, name + "_from_end"), c], {}, name + "_wrapped")
        out_of_range = b.add1("logical_or", [b.add1("less", [c, _int(b, 0)], {}, name + "_below"),
                                             b.add1("less", [_int(b, size - 1), c], {}, name + "_above")],
                              {}, name + "_out_of_range")
        stride = math.prod(sizes[j + 1:])
        term = c if stride == 1 else b.add1("mul", [c, _int(b, stride)], {}, name + "_term")
        flat = term if flat is None else b.add1("add", [flat, term], {}, name + "_flat")
        outside = out_of_range if outside is None else b.add1("logical_or", [outside, out_of_range], {},
                                                              name + "_outside")
    if first_row is not None:
        flat = b.add1("add", [flat, first_row], {}, name + "_flat")
    return b.add1("where", [outside, _int(b, past), flat], {}, name + "_checked")


def _int(b: GraphBuilder, value: int) -> str:
    return b.constant(torch.tensor(value, dtype=torch.int64), "int")
