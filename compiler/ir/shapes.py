"""Dynamic shapes: optimization profiles (a min, opt and max size for each symbolic dim), and the
integer polynomials in those sizes in which a shape-generic plan writes what varies with them.

A *symbol* is one run-time size: "batch", an ONNX dim_param such as "sequence", or a dynamo
SymInt. Every input dim is either a fixed int or a symbol; dims naming the same symbol vary
together. The compiler fits the templates (compiler/codegen/dynamic.py): a layout's strides, a
kernel's mask bound, a torch op's attribute, each a `Poly` (sum of integer coefficient times a
product of symbols' powers: `seq * 768`, `batch * seq * seq * 12`). The runtime evaluates them for
the sizes it sees (runtime/engine.py). Both read the types here, with the plan (ir/plan.py).
"""
from __future__ import annotations

import itertools
import math
import re
from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from trident.compiler.errors import InputError, TridentError

Monomial = tuple[tuple[str, int], ...]   # ((symbol, power), ...), sorted by symbol; () is 1


@dataclass(frozen=True)
class SizeRange:
    """The (min, opt, max) of one symbolic size: the profile runs [min, max], is tuned at opt."""
    min: int
    opt: int
    max: int

    @staticmethod
    def parse(spec, what: str = "batch profile", lowest: int = 1) -> "SizeRange":
        """An int N (exactly N), 'min:opt:max', 'N', or a (min, opt, max) sequence."""
        if isinstance(spec, SizeRange):
            return spec
        values = spec
        if isinstance(spec, str):
            try:
                values = [int(x) for x in spec.split(":")]
            except ValueError:
                raise TridentError(f"{what} {spec!r}: expected N or min:opt:max") from None
        if isinstance(values, int) and not isinstance(values, bool):
            values = [values]
        values = list(values)
        if len(values) == 1:
            values = values * 3
        if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in values):
            raise TridentError(f"{what} {spec!r}: expected N or (min, opt, max) ints")
        lo, opt, hi = values
        if not lowest <= lo <= opt <= hi:
            raise TridentError(f"{what} {spec!r}: needs {lowest} <= min <= opt <= max")
        return SizeRange(lo, opt, hi)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    def __contains__(self, size: int) -> bool:
        return self.min <= size <= self.max

    def __str__(self) -> str:
        return f"min {self.min}, opt {self.opt}, max {self.max}"

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.min, self.opt, self.max)


# `batch=` keeps its name: a batch profile is the size range of the dim-0 symbol.
BatchProfile = SizeRange


@dataclass(frozen=True)
class Poly:
    """An integer polynomial in named sizes: sum of coefficient * monomial."""
    terms: tuple[tuple[int, Monomial], ...]

    @staticmethod
    def of(symbol: str, a: int = 1, c: int = 0) -> "Poly":
        """a * symbol + c."""
        terms = ((a, ((symbol, 1),)),) if a else ()
        return Poly(terms + (((c, ()),) if c else ()))

    @staticmethod
    def from_coefficients(coefficients: Mapping[Monomial, int]) -> "Poly | int":
        """The polynomial of these coefficients (a plain int when it has no symbol)."""
        terms = tuple(sorted((c, m) for m, c in coefficients.items() if c))
        if all(not m for _, m in terms):
            return sum(c for c, _ in terms)
        return Poly(tuple(sorted(terms, key=lambda t: (-len(t[1]), t[1]))))

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(sorted({s for _, m in self.terms for s, _ in m}))

    def at(self, sizes: Mapping[str, int]) -> int:
        total = 0
        for c, m in self.terms:
            for s, p in m:
                c *= sizes[s] ** p
            total += c
        return total

    def linear_in(self) -> tuple[str, int, int] | None:
        """(symbol, a, c) if this is a * symbol + c, else None."""
        linear = [(c, m) for c, m in self.terms if m]
        if len(linear) != 1 or linear[0][1][0][1] != 1 or len(linear[0][1]) != 1:
            return None
        const = sum(c for c, m in self.terms if not m)
        return linear[0][1][0][0], linear[0][0], const

    def solve(self, value: int) -> tuple[str, int] | None:
        """(symbol, size) at which a linear template takes `value`, if there is one."""
        lin = self.linear_in()
        if lin is None:
            return None
        symbol, a, c = lin
        if (value - c) % a:
            return None
        return symbol, (value - c) // a

    def expr(self, names: Mapping[str, str]) -> str:
        """Python/Triton source for the value: names[symbol] is the variable holding it."""
        parts = []
        for c, m in self.terms:
            factors = [names[s] for s, p in m for _ in range(p)]
            if c != 1 or not factors:
                factors.append(str(c))
            parts.append(" * ".join(factors))
        return "(" + " + ".join(parts).replace("+ -", "- ") + ")"

    def __str__(self) -> str:
        return self.expr({s: s for s in self.symbols})[1:-1]


class PolyTable:
    """Many integer leaves (ints and Polys) evaluated together at one point. The Polys are the rows
    of one coefficient matrix over the monomials they use, so a point costs one matrix-vector
    product instead of a walk of every template: a decoder's engine lays out its ~1,000 values
    again at every token, each at a new past length. Exact: where int64 could overflow (or a leaf
    is not an int or a Poly), every leaf is evaluated in Python instead."""

    def __init__(self, leaves: list):
        self.leaves = leaves
        polys = [(i, p) for i, p in enumerate(leaves) if isinstance(p, Poly)]
        self.monomials = sorted({m for _, p in polys for _, m in p.terms})
        coefficients = [[0] * len(self.monomials) for _ in polys]
        column = {m: j for j, m in enumerate(self.monomials)}
        for row, (_, p) in zip(coefficients, polys):
            for c, m in p.terms:
                row[column[m]] += c
        self.bound = max((sum(abs(c) for c in row) for row in coefficients), default=0)
        self.fits = all(type(x) is int and _fits_int64(x) for x in leaves if not isinstance(x, Poly)) and \
            all(_fits_int64(c) for row in coefficients for c in row)
        if self.fits:
            self.constants = np.array([0 if isinstance(x, Poly) else x for x in leaves], dtype=np.int64)
            self.rows = np.array([i for i, _ in polys], dtype=np.int64)
            self.coefficients = np.array(coefficients, dtype=np.int64).reshape(len(polys), len(self.monomials))

    def at(self, sizes: Mapping[str, int]) -> list:
        monomials = [math.prod(sizes[s] ** p for s, p in m) for m in self.monomials]
        if not (self.fits and self.bound * max(map(abs, monomials), default=1) < 2 ** 63):
            return [instantiate(x, sizes) for x in self.leaves]
        values = self.constants.copy()
        if len(self.rows):
            values[self.rows] = self.coefficients @ np.array(monomials, dtype=np.int64)
        return values.tolist()


def _fits_int64(x: int) -> bool:
    return isinstance(x, int) and -2 ** 63 <= x < 2 ** 63


def instantiate(template: Any, sizes: Mapping[str, int]) -> Any:
    """The value a template takes at `sizes` (Poly leaves evaluated, the rest as is)."""
    if isinstance(template, Poly):
        return template.at(sizes)
    if isinstance(template, (tuple, list)):
        return type(template)(instantiate(t, sizes) for t in template)
    if isinstance(template, dict):
        return {k: instantiate(t, sizes) for k, t in template.items()}
    return template


def is_constant(template: Any) -> bool:
    if isinstance(template, Poly):
        return False
    if isinstance(template, (tuple, list)):
        return all(is_constant(t) for t in template)
    if isinstance(template, dict):
        return all(is_constant(t) for t in template.values())
    return True


Dim = int | str   # an input dim: a fixed size or the symbol it names (a Poly `symbol + k` at build time)


@dataclass(frozen=True)
class ShapeProfile:
    """The sizes a shape-generic engine runs: each symbol's range, each input's dims."""
    symbols: dict[str, SizeRange]
    inputs: dict[str, tuple[Dim, ...]]
    # int inputs that are a symbol's size (dynamo's SymInt placeholders); build time only: the
    # engine takes tensors, and the sizes come from their shapes.
    scalars: dict[str, str] = field(default_factory=dict, compare=False)

    def corners(self) -> list[dict[str, int]]:
        """Every combination of the symbols' min and max (where polynomials peak)."""
        names = list(self.symbols)
        choices = [(self.symbols[s].min, self.symbols[s].max) for s in names]
        return [dict(zip(names, values)) for values in itertools.product(*choices)]

    def point(self, which: str) -> dict[str, int]:
        """The sizes at each symbol's "min", "opt" or "max"."""
        return {s: getattr(r, which) for s, r in self.symbols.items()}

    def dim_text(self, name: str) -> str:
        return "(" + ", ".join(str(d) for d in self.inputs[name]) + ")"

    def describe(self) -> str:
        return "; ".join(f"{s} {r}" for s, r in self.symbols.items())

    def __str__(self) -> str:
        return self.describe()

    def check(self, name: str, dim: int, symbol: str, size: int, shape) -> None:
        """InputError unless `size` (dim `dim` of input `name`) is inside the symbol's range."""
        r = self.symbols[symbol]
        if size not in r:
            raise InputError(f'input "{name}": dim {dim} ({symbol}) is {size}, outside the '
                             f"engine's optimization profile [{r.min}, {r.max}] (shape "
                             f"{tuple(shape)}; {symbol}: {r})")


def variable_names(symbols) -> dict[str, str]:
    """A Python identifier for each symbol (the kernels' size parameters)."""
    names, used = {}, set()
    for s in symbols:
        base = "size_" + re.sub(r"\W", "_", s)
        name, k = base, 1
        while name in used:
            name, k = f"{base}_{k}", k + 1
        names[s] = name
        used.add(name)
    return names


__all__ = ["BatchProfile", "Dim", "Monomial", "Poly", "ShapeProfile", "SizeRange", "instantiate",
           "is_constant", "variable_names"]
