"""A kernel's source made shape-generic: the integers that differ between the probes' sources
become expressions of the kernel's size parameters (compiler/codegen/dynamic.py explains why).

Only numbers may differ; names, operators and layout of the code must match token for token.
Module-level CONFIG and PROBLEM literals stay as generated at the base probe (the launch config
the tuner chose; the problem it timed). A varying number in a position Triton needs at compile
time (tl.arange, static_range, a shape) is refused: it cannot become a run-time argument.
"""
from __future__ import annotations

import io
import re
import tokenize
from typing import Callable, Sequence

from trident.compiler.codegen.polyfit import Grid, fit_int, varies
from trident.compiler.errors import UnsupportedError
from trident.compiler.ir.shapes import Poly

INT32_MAX = 2**31 - 1
ALIGNMENT = 16   # the divisibility Triton specializes integer arguments on
_BASE_LITERALS = ("CONFIG", "PROBLEM", "TILE_CONFIG")   # module-level literals kept at the base probe
_KERNEL_DEF = "@triton.jit\ndef kernel("
_GRID_DEF = "def grid(meta):"
_LAUNCH_DEF = re.compile(r"^def launch\((.*)\):\n", re.MULTILINE)
_LAUNCH_CALL = "kernel[grid]("
_MEMBER_DEF = re.compile(r"def (member\d+|one_tile|epilogue)\(")
_MEMBER_CALL = re.compile(r"(?<!def )\b(member\d+|one_tile|epilogue)\(")
_COMPILE_TIME = ("tl.arange(", "tl.static_range(", "tl.full(", "tl.zeros(", "tl.reshape(",
                 "tl.constexpr", "tl.view(", "tl.broadcast_to(")


def _tokens(source: str) -> list[tokenize.TokenInfo]:
    return list(tokenize.generate_tokens(io.StringIO(source).readline))


def _structure_error(name: str, where: str) -> UnsupportedError:
    return UnsupportedError(f"dynamic shapes: kernel {name} has a different structure at the "
                            f"probed sizes ({where}); build with fixed sizes for these dims")


def generic_source(grid: Grid, sources: Sequence[str], points: Sequence[tuple], name: str,
                   names: dict[str, str], peak: Callable[[Poly], int],
                   base: str | None = None) -> tuple[str, tuple[str, ...]] | None:
    """(source, symbols it takes) with its size-dependent integers written in terms of the size
    parameters names[symbol], or None if no integer depends on a size. sources[k] was generated
    at points[k]; `base` (default sources[0]) gives the comments, CONFIG and PROBLEM.
    peak(template): the largest magnitude it reaches in the profile (int64 where it must)."""
    streams = [_tokens(s) for s in sources]
    first = streams[0]
    if any(len(t) != len(first) for t in streams):
        raise _structure_error(name, f"{len(first)} tokens against {[len(t) for t in streams]}")
    edits: list[tuple[tuple[int, int], tuple[int, int], Poly, bool]] = []
    in_literal, after_kernel = False, False
    lines = sources[0].splitlines()
    for k, tok in enumerate(first):
        others = [t[k] for t in streams]
        if tok.type == tokenize.NAME and tok.start[1] == 0 and tok.string in _BASE_LITERALS:
            in_literal, after_kernel = True, True
        if tok.type == tokenize.NEWLINE:
            in_literal = False
        if any(o.type != tok.type for o in others):
            raise _structure_error(name, f"line {tok.start[0]}")
        if all(o.string == tok.string for o in others) or tok.type == tokenize.COMMENT or in_literal:
            continue
        if tok.type != tokenize.NUMBER:
            raise _structure_error(name, f"{tok.string!r} on line {tok.start[0]}")
        try:
            samples = {tuple(p): int(o.string, 0) for p, o in zip(points, others)}
        except ValueError:
            samples = None
        template = fit_int(grid, samples) if samples else None
        if not isinstance(template, Poly):
            raise varies(grid, f"kernel {name}, line {tok.start[0]}",
                         {tuple(p): o.string for p, o in zip(points, others)})
        in_kernel = not after_kernel
        if in_kernel and any(c in lines[tok.start[0] - 1] for c in _COMPILE_TIME):
            raise UnsupportedError(f"dynamic shapes: kernel {name}, line {tok.start[0]}: a size "
                                   f"Triton needs at compile time varies ({template}); build "
                                   f"with fixed sizes for these dims")
        edits.append((tok.start, tok.end, template, in_kernel))
    if not edits:
        return None
    used = tuple(s for s in names if any(s in t.symbols for _, _, t, _ in edits))
    out = (base or sources[0]).splitlines(keepends=True)
    for (row, col), (erow, ecol), template, in_kernel in reversed(edits):
        assert row == erow
        wide = in_kernel and peak(template) > INT32_MAX
        variables = {s: f"{names[s]}.to(tl.int64)" if wide else names[s] for s in used}
        line = out[row - 1]
        out[row - 1] = line[:col] + template.expr(variables) + line[ecol:]
    text = _add_size_arguments("".join(out), name, [names[s] for s in used],
                               [grid.sizes(points[0]).get(s) for s in used])
    first_newline = text.index("\n") + 1
    built = grid.sizes(points[0])   # symbols as repr: a dim name never breaks out of the comment
    header = (f"# shape-generic: {', '.join(names[s] for s in used)} are the run-time sizes of "
              f"{', '.join(repr(s) for s in used)} (generated at "
              f"{', '.join(f'{s!r}={built[s]}' for s in used)})\n")
    return text[:first_newline] + header + text[first_newline:], used


def _add_size_arguments(source: str, name: str, params: list[str], defaults: list[int]) -> str:
    def once(text: str, old: str, new: str) -> str:
        if text.count(old) != 1:
            raise UnsupportedError(f"dynamic shapes: cannot add the size arguments to kernel "
                                   f"{name} (expected one {old!r} in its source)")
        return text.replace(old, new)

    joined = ", ".join(params)
    quoted = ", ".join(f'"{p}"' for p in params)
    source = once(source, _KERNEL_DEF, f"@triton.jit(do_not_specialize=[{quoted}])\n"
                                       f"def kernel({joined}, ALIGNED: tl.constexpr, ")
    source = _restore_alignment(source, params)
    keywords = ", ".join(f"{p}={d}" for p, d in zip(params, defaults))
    source = once(source, _GRID_DEF, f"def grid(meta, {keywords}):")
    aligned = " + ".join(f"({p} % {ALIGNMENT} == 0) * {1 << i}" for i, p in enumerate(params))
    source = once(source, _LAUNCH_CALL, f"kernel[lambda meta: grid(meta, {joined})]({joined}, {aligned}, ")
    build = "(" + "".join(f"{d}, " for d in defaults) + ")"
    source, n = _LAUNCH_DEF.subn(lambda m: f"def launch({m.group(1)}, sizes={build}):\n"
                                           f"    {joined}, = sizes\n", source)
    if n != 1:
        raise UnsupportedError(f"dynamic shapes: cannot add the size arguments to kernel {name} "
                               f"(expected one `def launch(...)`)")
    # The tile function (and a horizontal kernel's members) compute with the sizes too.
    source = _MEMBER_DEF.sub(rf"def \1({joined}, ", source)
    return _MEMBER_CALL.sub(rf"\1({joined}, ", source)


def _restore_alignment(source: str, params: list[str]) -> str:
    """The kernel's first lines: each size that is a multiple of ALIGNMENT (bit i of ALIGNED,
    which launch() sets) is rewritten so that Triton can see it. A size argument is never
    specialized (one binary serves every size), so Triton knows nothing of its divisibility and
    a row that starts at `b * seq` is loaded element by element instead of 16 bytes at a time:
    BERT's attention at sequence 128 ran 5x slower than with the sizes as constants. One binary
    per combination of aligned sizes that occurs, each compiled at its first launch."""
    start = source.index("def kernel(")
    body = source.index("):\n", start) + len("):\n")
    lines = "".join(f"    if ALIGNED & {1 << i}:\n        {p} = {p} // {ALIGNMENT} * {ALIGNMENT}\n"
                    for i, p in enumerate(params))
    return source[:body] + lines + source[body:]


def replace_literal(source: str, name: str, value) -> str:
    """`source` with its module-level `NAME = {...}` line holding `value` instead."""
    pattern = re.compile(rf"^{name} = .*$", re.MULTILINE)
    if len(pattern.findall(source)) != 1:
        return source
    return pattern.sub(lambda m: f"{name} = {value!r}", source)


__all__ = ["generic_source", "replace_literal"]
