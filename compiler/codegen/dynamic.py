"""Dynamic shapes: one engine for every size in an optimization profile (compiler/ir/shapes.py).

The kernels take the sizes that vary as run-time arguments. Rather than teach every generator to
track sizes symbolically, the program is generated at several sizes (the "probes") and compared:
- the base probe has every symbol at max(opt, 2) (never 1, so no dim degenerates); it is the
  program the autotuner timed. Two more probes per symbol, along its axis, tell the highest
  power of it any value needs (compiler/codegen/polyfit.py); the grid of every combination of
  base .. base + degree per symbol, and one check probe off the grid in every symbol, follow;
- the programs must agree in structure: the same steps, values, kernels and constants;
- every integer that differs between them (a mask bound such as `xoffs < 8192`, a grid size, the
  M of a matmul tile, a stride, a reshape's target shape) must be an integer polynomial in the
  symbols, reproduced at every probe (strides such as seq * 768 are; ceil-divisions are not);
- in each kernel's source those integers become expressions of its size parameters
  (`size_batch`, `size_seq`: only the symbols that kernel uses), added as the kernel's first
  (never specialized) arguments and a `sizes=` keyword of `launch()`; the launch config is the
  one chosen at the base probe, except that a single-block reduction whose row length varies gets
  the block of the longest row the profile allows;
- a kernel made generic carries a spec holding its probes' specs (compiler/codegen/
  dynamic_kernel.py): loading an engine file writes it again from them, as any kernel;
- the layouts, input shapes and torch-fallback attributes become templates (the plan's
  DynamicInfo, compiler/ir/plan.py) the engine instantiates for each shape it sees.

Anything else (a reduction size chosen by a power of two, a constant whose shape depends on a
size, a float that depends on one) is refused at build time with an UnsupportedError naming the
value and the samples seen.
"""
from __future__ import annotations

import dataclasses
import math
import re
from typing import Any, Callable, Sequence

import torch

from trident.compiler.codegen.dynamic_constants import unfold_constants, varying_constants
from trident.compiler.codegen.dynamic_kernel import generic_kernel
from trident.compiler.codegen.polyfit import Grid, axis_degree, fit_int, point_text, varies
from trident.compiler.codegen.program import Layout, Program
from trident.compiler.errors import UnsupportedError
from trident.compiler.ir.plan import DynamicInfo
from trident.compiler.ir.shapes import Poly, ShapeProfile, is_constant, variable_names

Point = tuple[int, ...]


# ----------------------------------------------------------------------------- fitting ----
def _same_leaf(values: Sequence) -> bool:
    first = values[0]
    for v in values[1:]:
        if type(v) is not type(first):
            return False
        if isinstance(v, float) and math.isnan(v) and math.isnan(first):
            continue
        if isinstance(v, torch.Tensor):
            if not (v.shape == first.shape and v.dtype == first.dtype and torch.equal(v, first)):
                return False
            continue
        if v != first:
            return False
    return True


def fit(grid: Grid, samples: dict[Point, Any], where: str) -> Any:
    """A template reproducing each probe's value: the value itself where all agree, a Poly where
    integers vary polynomially with the sizes; UnsupportedError otherwise."""
    values = list(samples.values())
    first = values[0]
    if isinstance(first, (tuple, list)):
        if not all(type(v) is type(first) and len(v) == len(first) for v in values):
            raise varies(grid, where, samples)
        return type(first)(fit(grid, {p: v[k] for p, v in samples.items()}, f"{where}[{k}]")
                           for k in range(len(first)))
    if isinstance(first, dict):
        if not all(isinstance(v, dict) and v.keys() == first.keys() for v in values):
            raise varies(grid, where, samples)
        return {k: fit(grid, {p: v[k] for p, v in samples.items()}, f"{where}.{k}") for k in first}
    if isinstance(first, int) and not isinstance(first, bool) and all(type(v) is int for v in values):
        template = fit_int(grid, samples)
        if template is None:
            raise varies(grid, where, samples)
        return template
    if not _same_leaf(values):
        raise varies(grid, where, samples)
    return first


# ------------------------------------------------------------------------------ probes ----
def _numbers(program: Program) -> list:
    """Every size a program holds, in a fixed order (to find each symbol's degree)."""
    out: list = []
    for lay in program.layouts.values():
        out += [*lay.shape, *lay.strides, lay.offset]
    for step in program.steps:
        if step.kind == "kernel":
            out.append(step.kernel.source)
    return out


_NUMBER = re.compile(r"(?<![\w.])\d+(?![\w.])")


def _source_numbers(source: str) -> list[int]:
    """The integers of a kernel's code (not of its comments, CONFIG or PROBLEM)."""
    lines = [line for line in source.splitlines()
             if not line.lstrip().startswith(("#", "CONFIG", "PROBLEM"))]
    return [int(n) for n in _NUMBER.findall("\n".join(lines))]


def _degree(programs: Sequence[Program]) -> int:
    """The highest power of one symbol seen along its axis (three probes, one apart)."""
    lists = [_numbers(p) for p in programs]
    degree = 0
    for values in zip(*lists):
        if isinstance(values[0], str):
            nums = [_source_numbers(v) for v in values]
            if len({len(n) for n in nums}) != 1:
                return 2
            for triple in zip(*nums):
                degree = max(degree, axis_degree(triple))
        else:
            degree = max(degree, axis_degree(values))
        if degree == 2:
            return 2
    return degree


def probe(profile: ShapeProfile, base_program: Program,
          compile_at: Callable[[dict[str, int]], Program]) -> tuple[Grid, dict[Point, Program]]:
    """The probe grid of a profile and the program generated at each of its points."""
    symbols = tuple(s for s, r in profile.symbols.items() if not r.is_static)
    static = {s: r.min for s, r in profile.symbols.items() if r.is_static}
    base = tuple(max(profile.symbols[s].opt, 2) for s in symbols)
    programs: dict[Point, Program] = {base: base_program}

    def at(point: Point) -> Program:
        if point not in programs:
            programs[point] = compile_at({**static, **dict(zip(symbols, point))})
        return programs[point]

    axes = []
    for i, b in enumerate(base):
        along = [base[:i] + (b + k,) + base[i + 1:] for k in range(3)]
        degree = max(1, _degree([at(p) for p in along]))
        axes.append(tuple(range(b, b + degree + 1)))
    check = tuple(ax[-1] + 1 + i for i, ax in enumerate(axes))
    grid = Grid(symbols, tuple(axes), (check,))
    needed = grid.points()
    for point in needed:
        at(point)
    return grid, {p: programs[p] for p in needed}


# ---------------------------------------------------------------------- the program ----
def _layout_tuple(lay: Layout):
    return (tuple(lay.shape), tuple(lay.strides), lay.offset)


def _check_same(grid: Grid, programs: dict[Point, Program]) -> None:
    points = list(programs)
    ref = programs[points[0]]

    def refuse(what: str, point: Point) -> UnsupportedError:
        return UnsupportedError(f"dynamic shapes: the program differs between sizes "
                                f"{point_text(grid, points[0])} and {point_text(grid, point)}: "
                                f"{what}; build with fixed sizes")

    for pt, p in programs.items():
        if p.graph.inputs != ref.graph.inputs or p.graph.outputs != ref.graph.outputs:
            raise refuse(f"inputs/outputs {p.graph.inputs} -> {p.graph.outputs}", pt)
        if len(p.steps) != len(ref.steps):
            raise refuse(f"{len(p.steps)} steps against {len(ref.steps)}", pt)
        for k, (s, r) in enumerate(zip(p.steps, ref.steps)):
            if (s.kind, s.inputs, s.outputs) != (r.kind, r.inputs, r.outputs):
                raise refuse(f"step {k} is {s.kind} {s.inputs} -> {s.outputs}", pt)
            if s.kind == "kernel" and (s.kernel.name, s.kernel.args) != (r.kernel.name, r.kernel.args):
                raise refuse(f"step {k} runs kernel {s.kernel.name}", pt)
            if s.kind == "torch" and s.group.nodes[0].op != r.group.nodes[0].op:
                raise refuse(f"step {k} runs {s.group.nodes[0].op}", pt)
        if p.layouts.keys() != ref.layouts.keys():
            raise refuse(f"values {sorted(p.layouts.keys() ^ ref.layouts.keys())[:5]}", pt)
        if p.constants.keys() != ref.constants.keys():
            raise refuse(f"constants {sorted(p.constants.keys() ^ ref.constants.keys())[:5]}", pt)
        for name, t in p.constants.items():
            r = ref.constants[name]
            if t.shape != r.shape or t.dtype != r.dtype or not torch.equal(t, r):
                raise refuse(f"constant {name} depends on the sizes ({tuple(r.shape)} against "
                             f"{tuple(t.shape)})", pt)


def _covering(profile: ShapeProfile, grid: Grid) -> dict[str, int]:
    """Each symbol at the profile's max, or past it where a probe is (a profile whose opt is its
    max probes above it): the sizes whose constants hold every probe's slice."""
    sizes = profile.point("max")
    for point in grid.points():
        for s, v in grid.sizes(point).items():
            sizes[s] = max(sizes[s], v)
    return sizes


def _keyed_by_plan(profile: ShapeProfile, inputs: dict) -> ShapeProfile:
    """The profile with its input dims named as the plan's inputs (a torch model's forward
    arguments are renamed on import): each dim a size or the symbol it is."""
    dims = {}
    for name, template in inputs.items():
        row = []
        for t in template:
            linear = t.linear_in() if isinstance(t, Poly) else None
            if linear is not None and linear[1:] == (1, 0):
                row.append(linear[0])
            elif isinstance(t, int):
                row.append(t)
            else:
                break
        else:
            dims[name] = tuple(row)
    return dataclasses.replace(profile, inputs=dims)


def make_dynamic(program: Program, profile: ShapeProfile,
                 compile_at: Callable[[dict[str, int]], Program]) -> Program:
    """The shape-generic version of `program` (generated at the profile's base probe);
    compile_at(sizes) generates the same model at those sizes (import, passes, fusion, codegen)."""
    grid, programs = probe(profile, program, compile_at)
    varying = varying_constants(programs)
    if varying:
        programs = unfold_constants(programs, varying, lambda: compile_at(_covering(profile, grid)))
        program = programs[grid.points()[0]]
    _check_same(grid, programs)
    names = variable_names(grid.symbols)
    samples = lambda get: {pt: get(p) for pt, p in programs.items()}  # noqa: E731
    layouts = {}
    for value, lay in program.layouts.items():
        if any(p.layouts[value].dtype != lay.dtype for p in programs.values()):
            raise UnsupportedError(f"dynamic shapes: the dtype of {value} depends on the sizes")
        layouts[value] = fit(grid, samples(lambda p: _layout_tuple(p.layouts[value])),
                             f"the layout of {value}")
    inputs = {name: fit(grid, samples(lambda p: tuple(p.graph.types[name].shape)),
                        f'the shape of input "{name}"') for name in program.graph.inputs}
    if all(is_constant(t) for t in inputs.values()):
        raise UnsupportedError("dynamic shapes: no input's shape changes with the profile's sizes "
                               "(an ONNX model needs symbolic dims, e.g. torch.onnx.export(..., "
                               "dynamic_axes={'x': {0: 'batch'}}))")
    node_attrs, steps = {}, []
    for k, step in enumerate(program.steps):
        if step.kind == "torch":
            node = step.group.nodes[0]
            node_attrs[k] = fit(grid, samples(lambda p: p.steps[k].group.nodes[0].attrs),
                                f"the attributes of {node.name or node.op}")
        if step.kind == "kernel":
            kernel = generic_kernel(grid, [p.steps[k].kernel for p in programs.values()], profile)
            step = dataclasses.replace(step, sizes=kernel.sizes, kernel=kernel)
        steps.append(step)
    build_sizes = {**{s: r.min for s, r in profile.symbols.items()}, **grid.sizes(grid.points()[0])}
    info = DynamicInfo(_keyed_by_plan(profile, inputs), build_sizes, names, layouts, inputs, node_attrs)
    return Program(program.graph, steps, program.layouts, program.constants, info)


__all__ = ["fit", "make_dynamic", "probe", "varies"]
