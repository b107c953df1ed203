"""Constants that depend on the sizes, in a shape-generic program.

Import folds what it can: `position_embeddings.weight[:seq]` becomes a constant of seq rows, a
token-type row expanded over [batch, seq] one of batch * seq rows. Such a constant is stored once,
at the profile's max sizes (or the largest probe's, past them), and each run slices the part its
sizes need (a view where that part is contiguous in the stored one, as a position table's first
rows are, or where the constant is one value throughout, as a pad's fill is; else one copy by a
torch step ahead of the kernels that read it): valid only if every probe's constant is exactly
such a slice of the max one, which is checked. The slice is the
leading [:n0, :n1, ...] of every dim, or, where that is not it, a window at an offset along the
dims that differ (T5's decoder bias for one query after a past of s keys is the last s + 1
columns of the bias at the max past): the offsets, like the sizes, must then be integer
polynomials of the sizes (codegen/dynamic.py fits the slice's attributes and layout).
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from typing import Callable

import torch

from trident.compiler.codegen.program import Layout, Program, Step, same_elements, view_layouts
from trident.compiler.codegen.writer import dense_strides
from trident.compiler.errors import TridentError, UnsupportedError
from trident.compiler.fusion import Group
from trident.compiler.ir import Node

MAX_SUFFIX = "@max"
PREFIX_SUFFIX = "@prefix"  # the first elements of a uniform constant's max-size value (_uniform_views)


def varying_constants(programs: dict[tuple, Program]) -> list[str]:
    first = next(iter(programs.values()))
    out = []
    for name, ref in first.constants.items():
        for p in programs.values():
            t = p.constants.get(name)
            if t is None or t.shape != ref.shape or t.dtype != ref.dtype or not torch.equal(t, ref):
                out.append(name)
                break
    return out


def _slice_of(big: torch.Tensor, small: torch.Tensor) -> bool:
    if big.dim() != small.dim() or big.dtype != small.dtype or \
            any(s > b for s, b in zip(small.shape, big.shape)):
        return False
    return torch.equal(big[tuple(slice(0, n) for n in small.shape)], small)


def unfold_constants(programs: dict[tuple, Program], names: list[str],
                     compile_max: Callable[[], Program]) -> dict[tuple, Program]:
    """Each probe program with the constants `names` computed by slicing their max-size value."""
    try:
        at_max = compile_max()
    except TridentError as e:
        raise UnsupportedError(f"dynamic shapes: constants {names[:3]} depend on the sizes, and "
                               f"the model cannot be imported at the profile's max sizes to store "
                               f"them ({e})") from None
    starts: dict = {point: {} for point in programs}
    for name in names:
        big = at_max.constants.get(name)
        for point, p in programs.items():
            found = None if big is None else _window_of(big, p.constants[name])
            if found is None:
                raise UnsupportedError(
                    f"dynamic shapes: constant {name} depends on the sizes "
                    f"({tuple(p.constants[name].shape)} at {point}) and is not a slice of its "
                    f"value at the profile's max sizes; build with fixed sizes for these dims")
            starts[point][name] = found
    return {point: _with_slices(p, names, at_max, starts[point]) for point, p in programs.items()}


# The most elements _window_of compares (the windows it tries, times the constant's elements).
MAX_WINDOW_WORK = 1 << 26


def _window_of(big: torch.Tensor, small: torch.Tensor) -> list[int] | None:
    """Where `small` sits in `big`: the start of each dim of a window equal to it, the leading one
    first; None where no window is."""
    if _slice_of(big, small):
        return [0] * small.dim()
    if big.dim() != small.dim() or big.dtype != small.dtype or \
            any(s > b for s, b in zip(small.shape, big.shape)):
        return None
    ranges = [range(b - s + 1) if b != s else range(1) for b, s in zip(big.shape, small.shape)]
    if math.prod(len(r) for r in ranges) * small.numel() > MAX_WINDOW_WORK:
        return None
    for start in itertools.product(*ranges):
        window = big[tuple(slice(a, a + n) for a, n in zip(start, small.shape))]
        if torch.equal(window, small):
            return list(start)
    return None


def _with_slices(program: Program, names: list[str], at_max: Program, starts: dict) -> Program:
    constants = {k: v for k, v in program.constants.items() if k not in names}
    layouts = dict(program.layouts)
    steps: list[Step] = []
    for name in names:
        big, small = at_max.constants[name], program.constants[name]
        viewed = _uniform_views(name, big, layouts)
        if viewed is not None:
            constants[name + MAX_SUFFIX] = big.flatten()
            steps += viewed
            continue
        source = name + MAX_SUFFIX
        constants[source] = big
        layouts[source] = at_max.layouts[name]
        rank, start = small.dim(), starts[name]
        node = Node("slice", (source,), (name,),
                    {"starts": start, "ends": [a + n for a, n in zip(start, small.shape)],
                     "axes": list(range(rank)), "steps": [1] * rank}, f"{name}.slice")
        viewed = view_layouts(node, layouts[source])
        if viewed is not None and same_elements(viewed[0], layouts[name]):
            # A leading part of the table (the position rows [:seq]): a view, no copy.
            steps.append(Step("view", [source], [name], Group("view", [node])))
        else:
            steps.append(Step("torch", [source], [name], Group("torch", [node],
                                                               ["a size-dependent constant"])))
    return dataclasses.replace(program, steps=steps + list(program.steps), layouts=layouts,
                               constants=constants)


def _uniform_views(name: str, big: torch.Tensor, layouts: dict) -> list[Step] | None:
    """A constant of one value throughout (a pad's fill, a mask of ones) whose program stores it
    dense: any size's value is the first elements of the max-size one, kept flat, viewed in that
    size's shape (a slice, then a reshape: views, where any other slice of a dense tensor would
    need a copy). Adds the layouts of the flat value and of its prefix; None for other constants."""
    lay = layouts[name]
    if big.numel() == 0 or lay.offset or tuple(lay.strides) != tuple(dense_strides(lay.shape)) \
            or not bool((big == big.flatten()[0]).all()):
        return None
    source, prefix, n = name + MAX_SUFFIX, name + PREFIX_SUFFIX, math.prod(lay.shape)
    layouts[source] = Layout((big.numel(),), (1,), big.dtype)
    layouts[prefix] = Layout((n,), (1,), lay.dtype)
    cut = Node("slice", (source,), (prefix,), {"starts": [0], "ends": [n], "axes": [0], "steps": [1]},
               f"{name}.slice")
    shaped = Node("reshape", (prefix,), (name,), {"shape": list(lay.shape)}, f"{name}.reshape")
    return [Step("view", [source], [prefix], Group("view", [cut])),
            Step("view", [prefix], [name], Group("view", [shaped]))]


__all__ = ["unfold_constants", "varying_constants"]
