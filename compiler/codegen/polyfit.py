"""Exact integer polynomials through probe samples: what a shape-generic plan's templates are.

A program is generated at a grid of sizes: each symbol s at base_s, base_s + 1, ..., base_s + D_s
(D_s: the highest power of s any value needs, found from probes along each axis), every
combination. An integer seen at every grid point is interpolated one axis at a time (Lagrange,
in exact fractions); it is a template only if every coefficient is an integer and the polynomial
reproduces the value at the check points (probes off the grid in every symbol). Anything else —
a ceil-division, a power of two chosen from a size, a float that depends on the size — is
refused by the caller with the samples it saw.
"""
from __future__ import annotations

import functools
import itertools
from dataclasses import dataclass
from fractions import Fraction
from typing import Mapping, Sequence

from trident.compiler.errors import UnsupportedError
from trident.compiler.ir.shapes import Monomial, Poly


@dataclass(frozen=True)
class Grid:
    """Probe sizes: the interpolation grid (axes) and the extra points that check the fit."""
    symbols: tuple[str, ...]
    axes: tuple[tuple[int, ...], ...]       # per symbol: base, base + 1, ..., base + degree
    checks: tuple[tuple[int, ...], ...]     # points off the grid in every symbol

    @functools.cached_property
    def on_grid(self) -> frozenset:
        return frozenset(itertools.product(*self.axes))

    def grid_points(self) -> list[tuple[int, ...]]:
        return list(itertools.product(*self.axes))

    def points(self) -> list[tuple[int, ...]]:
        """Every probe: the grid first (its first point is the one the engine is tuned at)."""
        return self.grid_points() + [c for c in self.checks if c not in self.on_grid]

    def sizes(self, point: Sequence[int]) -> dict[str, int]:
        return dict(zip(self.symbols, point))


def _times_linear(coeffs: list[Fraction], root: int) -> list[Fraction]:
    """coeffs (lowest power first) times (x - root)."""
    out = [Fraction(0)] * (len(coeffs) + 1)
    for k, c in enumerate(coeffs):
        out[k + 1] += c
        out[k] -= c * root
    return out


def interpolate_1d(xs: Sequence[int], ys: Sequence[Fraction]) -> list[Fraction]:
    """Coefficients (lowest power first) of the polynomial of degree < len(xs) through (xs, ys)."""
    total = [Fraction(0)] * len(xs)
    for j, (xj, yj) in enumerate(zip(xs, ys)):
        if not yj:
            continue
        basis, denom = [Fraction(1)], 1
        for k, xk in enumerate(xs):
            if k != j:
                basis = _times_linear(basis, xk)
                denom *= xj - xk
        for k, c in enumerate(basis):
            total[k] += yj * c / denom
    return total


def interpolate(grid: Grid, values: Mapping[tuple[int, ...], int]) -> dict[Monomial, Fraction]:
    """The polynomial through values[point] at every grid point, as {monomial: coefficient}."""
    table: dict[tuple, Fraction] = {p: Fraction(v) for p, v in values.items() if p in grid.on_grid}
    for axis, xs in enumerate(grid.axes):
        rows: dict[tuple, list[Fraction]] = {}
        for key, v in table.items():
            rest = key[:axis] + key[axis + 1:]
            rows.setdefault(rest, [Fraction(0)] * len(xs))[xs.index(key[axis])] = v
        table = {}
        for rest, ys in rows.items():
            for power, c in enumerate(interpolate_1d(xs, ys)):
                if c:
                    table[rest[:axis] + (power,) + rest[axis:]] = c
    return {tuple((s, p) for s, p in zip(grid.symbols, powers) if p): c
            for powers, c in table.items()}


def fit_int(grid: Grid, values: Mapping[tuple[int, ...], int]) -> Poly | int | None:
    """The integer polynomial reproducing `values` at every probe, or None if there is none."""
    distinct = set(values.values())
    if len(distinct) == 1:
        return distinct.pop()
    coefficients = interpolate(grid, values)
    if any(c.denominator != 1 for c in coefficients.values()):
        return None
    template = Poly.from_coefficients({m: int(c) for m, c in coefficients.items()})
    for point, v in values.items():
        got = template.at(grid.sizes(point)) if isinstance(template, Poly) else template
        if got != v:
            return None
    return template


def axis_degree(values: Sequence[int]) -> int:
    """The degree (0, 1 or 2) of the sequence at x = b, b + 1, b + 2 (2: not linear)."""
    a, b, c = values
    if a == b == c:
        return 0
    return 1 if b - a == c - b else 2


def varies(grid: Grid, where: str, samples: dict) -> UnsupportedError:
    seen = ", ".join(f"{v!r} at {point_text(grid, p)}" for p, v in list(samples.items())[:6])
    return UnsupportedError(f"dynamic shapes: {where} depends on the sizes "
                            f"({', '.join(grid.symbols)}) in a way trident cannot express as a "
                            f"run-time size ({seen}); build with a fixed size for these dims")


def point_text(grid: Grid, point: tuple) -> str:
    return ", ".join(f"{s}={v}" for s, v in zip(grid.symbols, point))


__all__ = ["Grid", "axis_degree", "fit_int", "interpolate", "interpolate_1d", "point_text", "varies"]
