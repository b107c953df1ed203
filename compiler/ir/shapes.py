"""Dynamic shapes: a batch profile (min, opt, max), and the affine templates (a * batch + c) in
which a batch-generic plan writes the sizes, strides and attributes that vary with the batch.

The compiler fits the templates (compiler/codegen/dynamic.py); the runtime instantiates them for
each batch it sees (runtime/engine.py). Both read the types here, with the plan (ir/plan.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from trident.compiler.errors import InputError, TridentError


@dataclass(frozen=True)
class BatchProfile:
    min: int
    opt: int
    max: int

    @staticmethod
    def parse(spec) -> "BatchProfile":
        """An int N (exactly N), 'min:opt:max', 'N', or a (min, opt, max) sequence."""
        values = spec
        if isinstance(spec, BatchProfile):
            return spec
        if isinstance(spec, str):
            try:
                values = [int(x) for x in spec.split(":")]
            except ValueError:
                raise TridentError(f"batch profile {spec!r}: expected N or min:opt:max") from None
        if isinstance(values, int) and not isinstance(values, bool):
            values = [values]
        values = list(values)
        if len(values) == 1:
            values = values * 3
        if len(values) != 3 or not all(isinstance(v, int) and not isinstance(v, bool)
                                       for v in values):
            raise TridentError(f"batch profile {spec!r}: expected N or (min, opt, max) ints")
        lo, opt, hi = values
        if not 1 <= lo <= opt <= hi:
            raise TridentError(f"batch profile {spec!r}: needs 1 <= min <= opt <= max")
        return BatchProfile(lo, opt, hi)

    @property
    def is_static(self) -> bool:
        return self.min == self.max

    @property
    def build_batch(self) -> int:
        """The batch the engine is generated (and tuned) at."""
        return self.min if self.is_static else self.probes()[0]

    def probes(self) -> tuple[int, int, int]:
        """Three distinct batch sizes >= 2 to generate at; the first is the one tuned."""
        first = max(self.opt, 2)
        third = self.max if self.max > first + 1 else first + 2
        return first, first + 1, third

    def __contains__(self, batch: int) -> bool:
        return self.min <= batch <= self.max

    def __str__(self) -> str:
        return f"min {self.min}, opt {self.opt}, max {self.max}"

    def as_tuple(self) -> tuple[int, int, int]:
        return (self.min, self.opt, self.max)

    def check(self, batch: int | None, name: str, shape) -> None:
        """InputError unless input `name` of this shape has a batch inside the profile."""
        if batch is None or batch not in self:
            raise InputError(f'input "{name}": shape {tuple(shape)} is outside the engine\'s '
                             f"optimization profile (batch {self}: dim 0 must be in "
                             f"[{self.min}, {self.max}])")


@dataclass(frozen=True)
class Affine:
    """An integer a * batch + c."""
    a: int
    c: int

    def at(self, batch: int) -> int:
        return self.a * batch + self.c

    def solve(self, value: int) -> int | None:
        """The batch at which this takes `value`, if any."""
        if self.a == 0 or (value - self.c) % self.a:
            return None
        return (value - self.c) // self.a

    def expr(self, var: str = "nb") -> str:
        term = var if self.a == 1 else f"{var} * {self.a}"
        if self.c:
            term += f" + {self.c}" if self.c > 0 else f" - {-self.c}"
        return f"({term})"


def instantiate(template: Any, batch: int) -> Any:
    """The value a template takes at `batch` (Affine leaves evaluated, the rest as is)."""
    if isinstance(template, Affine):
        return template.at(batch)
    if isinstance(template, (tuple, list)):
        return type(template)(instantiate(t, batch) for t in template)
    if isinstance(template, dict):
        return {k: instantiate(t, batch) for k, t in template.items()}
    return template


def is_constant(template: Any) -> bool:
    if isinstance(template, Affine):
        return False
    if isinstance(template, (tuple, list)):
        return all(is_constant(t) for t in template)
    if isinstance(template, dict):
        return all(is_constant(t) for t in template.values())
    return True


__all__ = ["Affine", "BatchProfile", "instantiate", "is_constant"]
