"""One shape-generic kernel from the kernels generated at the probe sizes, and the spec that
writes it again.

make_dynamic (compiler/codegen/dynamic.py) generates the program at every probe of a grid; each
kernel step then has one kernel per probe, each with its spec (codegen/spec.py). `generic_kernel`
turns them into the kernel the engine runs: the single-block reduction widened to the longest row
the profile allows, the size-dependent integers rewritten as polynomials of its size parameters
(codegen/dynamic_source.py). Its spec is `dynamic_spec`: the grid, the profile's ranges and the
probes' specs; loading an engine file renders every probe again and calls the same function
(`render_dynamic`), so a shape-generic kernel's stored source is checked like any other: it must be
what this trident writes for those specs.

Everything here depends only on the probe kernels as generated (their sources, problems and the
CONFIG their source declares) and the profile, never on tuning: the launch config the tuner chose
is adjusted beside the source, not written into it.
"""
from __future__ import annotations

import ast
import dataclasses
from typing import Callable, Sequence

from trident.compiler.codegen.dynamic_source import generic_source, replace_literal
from trident.compiler.codegen.kernels import ROW_TILE_LANES, KernelSource
from trident.compiler.codegen.polyfit import Grid, fit_int, varies
from trident.compiler.errors import EngineFileError, TridentError, UnsupportedError
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.ir.shapes import Poly, ShapeProfile, SizeRange, variable_names

MAX_PROBES = 64          # a grid of more probes than this is no grid trident builds
MAX_SIZE = 1 << 20       # a profile's sizes in a spec are at most this


def peak(template, profile: ShapeProfile) -> int:
    """The largest magnitude `template` reaches in the profile (polynomials peak at corners)."""
    if not isinstance(template, Poly):
        return abs(template)
    return max(abs(template.at(c)) for c in profile.corners())


def _declared_config(source: str) -> LaunchConfig | None:
    """The CONFIG literal a generated source declares (the generator's own config)."""
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["CONFIG"]:
            return LaunchConfig.from_dict(ast.literal_eval(node.value))
    return None


def _widened(cfg: LaunchConfig, block_r: int) -> LaunchConfig:
    params = dict(cfg.params)
    params.update(BLOCK_R=block_r, BLOCK_X=max(1, min(params.get("BLOCK_X", 1), ROW_TILE_LANES // block_r)))
    return dataclasses.replace(cfg, params=tuple(params.items()),
                               num_warps=4 if block_r <= 1024 else 8)


def _whole_row_block(base: KernelSource, grid: Grid, kernels: Sequence[KernelSource],
               profile: ShapeProfile, tuned: LaunchConfig) -> tuple[KernelSource, LaunchConfig]:
    """A kernel that holds whole rows in one BLOCK_R (a single-block reduction, a sort, a
    scatter: its PROBLEM has a max_length): when the row length varies, the block (and the
    PROBLEM the tuner reads) is the longest row's. Returns the kernel (its source's CONFIG
    widened from the generator's) and the tuned config widened alike."""
    problem = base.problem or {}
    if problem.get("max_length") is None:
        return base, tuned
    lengths = {p: k.problem["length"] for p, k in zip(grid.points(), kernels)}
    if len(set(lengths.values())) == 1:
        return base, tuned
    template = fit_int(grid, lengths)
    if template is None:
        raise varies(grid, f"the row length of kernel {base.name}", lengths)
    longest = peak(template, profile)
    if longest > problem["max_length"]:
        raise UnsupportedError(f"dynamic shapes: kernel {base.name} holds rows of up to {longest} "
                               f"elements in the profile; one program holds up to {problem['max_length']}")
    block_r = 1 << max(0, longest - 1).bit_length()
    declared = _declared_config(base.source) or base.config
    problem = dict(problem, length=longest)
    source = replace_literal(base.source, "CONFIG", _widened(declared, block_r).to_dict())
    source = replace_literal(source, "PROBLEM", problem)
    kernel = dataclasses.replace(base, config=_widened(declared, block_r), problem=problem,
                                 source=source)
    return kernel, _widened(tuned, block_r)


def generic_kernel(grid: Grid, kernels: Sequence[KernelSource], profile: ShapeProfile,
                   tuned: LaunchConfig | None = None) -> KernelSource:
    """The kernel for the kernels generated at grid.points() (the base probe first), its
    `sizes` the symbols its launch() takes; tuned: the base kernel's launch config (default: its
    own). It is kernels[0] when nothing in it depends on the sizes."""
    base = kernels[0]
    tuned = tuned or base.config
    kernel, cfg = _whole_row_block(base, grid, kernels, profile, tuned)
    names = variable_names(grid.symbols)
    generic = generic_source(grid, [k.source for k in kernels], grid.points(), base.name, names,
                             lambda t: peak(t, profile), kernel.source)
    used: tuple[str, ...] = ()
    if generic is not None:
        source, used = generic
        kernel = dataclasses.replace(kernel, source=source)
    if kernel is base:
        return dataclasses.replace(base, config=tuned)
    spec = dynamic_spec(grid, profile, [k.spec for k in kernels])
    if cfg.get("WS") and (base.problem or {}).get("template") == "matmul":
        # A GEMM's warp-specialized path calls the epilogue without the size arguments the generic
        # source gives it (compiler/codegen/gemm_hopper.py): the Triton tile runs, on the same tile.
        cfg = cfg.replace(WS=0)
    return dataclasses.replace(kernel, config=cfg, spec=spec, sizes=used)


def dynamic_spec(grid: Grid, profile: ShapeProfile, probes: list) -> dict:
    """The spec of a shape-generic kernel: what `render_dynamic` needs to write it again."""
    return {"symbols": list(grid.symbols), "axes": [list(a) for a in grid.axes],
            "checks": [list(c) for c in grid.checks],
            "ranges": {s: list(profile.symbols[s].as_tuple()) for s in grid.symbols},
            "probes": probes}


# --------------------------------------------------------------------------- reading ----
def _bad(where: str, what: str) -> EngineFileError:
    return EngineFileError(f"engine file: {where}: {what}")


def _int_lists(data, where: str, width: int, low: int = 1) -> list[tuple[int, ...]]:
    if not isinstance(data, list) or not all(
            isinstance(row, list) and len(row) == width
            and all(type(v) is int and low <= v <= MAX_SIZE for v in row) for row in data):
        raise _bad(where, f"should be a list of lists of {width} sizes in [{low}, {MAX_SIZE}]")
    return [tuple(row) for row in data]


def grid_of(spec: dict, where: str) -> tuple[Grid, ShapeProfile]:
    """The probe grid and the profile ranges a shape-generic kernel's spec holds, checked to be
    the grid make_dynamic builds: consecutive sizes up from the base, one check point past it."""
    symbols = spec.get("symbols")
    if not isinstance(symbols, list) or not symbols or len(symbols) > 8 or \
            not all(isinstance(s, str) and s.isprintable() and 0 < len(s) <= 64 for s in symbols) or \
            len(set(symbols)) != len(symbols):
        raise _bad(f"{where}.symbols", "should be a list of 1 to 8 distinct size names")
    ranges = spec.get("ranges")
    if not isinstance(ranges, dict) or set(ranges) != set(symbols):
        raise _bad(f"{where}.ranges", f"should give the range of each of {symbols}")
    profile = {}
    for s in symbols:
        # a profile may start at 0 (a decoder's past: the prompt's step has none); probes never do
        (lo, opt, hi), = _int_lists([ranges[s]], f"{where}.ranges.{s}", 3, low=0)
        if not lo <= opt <= hi or lo == hi:
            raise _bad(f"{where}.ranges.{s}", "should be [min, opt, max] with min <= opt <= max, "
                                              "min < max")
        profile[s] = SizeRange(lo, opt, hi)
    axes_data = spec.get("axes")
    if not isinstance(axes_data, list) or len(axes_data) != len(symbols):
        raise _bad(f"{where}.axes", "should hold one list of sizes per symbol")
    axes = []
    for k, ax in enumerate(axes_data):
        if not isinstance(ax, list) or len(ax) not in (2, 3):
            raise _bad(f"{where}.axes[{k}]", "should be 2 or 3 consecutive sizes")
        (row,) = _int_lists([ax], f"{where}.axes[{k}]", len(ax))
        if list(row) != list(range(row[0], row[0] + len(row))):
            raise _bad(f"{where}.axes[{k}]", "should be 2 or 3 consecutive sizes")
        axes.append(row)
    checks = _int_lists(spec.get("checks"), f"{where}.checks", len(symbols))
    if checks != [tuple(ax[-1] + 1 + i for i, ax in enumerate(axes))]:
        raise _bad(f"{where}.checks", "should be the one point past the grid make_dynamic probes")
    grid = Grid(tuple(symbols), tuple(axes), tuple(checks))
    probes = spec.get("probes")
    if not isinstance(probes, list) or len(probes) != len(grid.points()) or len(probes) > MAX_PROBES:
        raise _bad(f"{where}.probes", f"should hold one spec per probe ({len(grid.points())})")
    return grid, ShapeProfile(profile, {})


def render_dynamic(spec: dict, where: str,
                   render_one: Callable[[dict, str], KernelSource]) -> KernelSource:
    """The kernel a shape-generic kernel's spec describes (its `sizes` set), written again by
    rendering each probe (render_one) and making them generic as the build did."""
    grid, profile = grid_of(spec, where)
    kernels = [render_one(p, f"{where}.probes[{k}]") for k, p in enumerate(spec["probes"])]
    if len({k.name for k in kernels}) != 1 or len({tuple(k.args) for k in kernels}) != 1:
        raise _bad(f"{where}.probes", "should describe one kernel (one name, one argument list)")
    try:
        kernel = generic_kernel(grid, kernels, profile)
    except TridentError as e:
        raise _bad(where, f"its probes make no shape-generic kernel ({e})") from None
    if kernel.spec is None:
        raise _bad(f"{where}.probes", "do not depend on the sizes")
    return kernel


__all__ = ["dynamic_spec", "generic_kernel", "grid_of", "peak", "render_dynamic"]
