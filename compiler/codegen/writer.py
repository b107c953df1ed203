"""Shared machinery for generated kernels: index math, operand loads, the elementwise body, stores.

A kernel iterates over a *space* (a shape). Its program covers the space with one or more index
*axes* (a vector of lane indices such as `xoffs`, or a tile's `offs_m[:, None]`), each of which
walks some of the space's dims in a fixed order. Every tensor the kernel touches is addressed by
decomposing the axes into per-dim indices (shapes are static, so `//` and `%` are by constants)
and summing index * stride over the tensor's dims.
"""
from __future__ import annotations

from contextlib import contextmanager

from dataclasses import dataclass, field

import torch

from trident.compiler.codegen import expr as E
from trident.compiler.ir import Graph, Node


@dataclass
class Axis:
    var: str                      # expression of the lane index, e.g. "xoffs" or "offs_m[:, None]"
    dims: list[tuple[int, int]]   # (space dim, size), outermost first
    mask: str | None = None       # expression true for in-range lanes


@dataclass
class Operand:
    """A tensor the kernel reads or writes: its pointer argument and how its dims sit in the space."""
    arg: str
    strides: tuple[int, ...]
    space_dims: tuple[int | None, ...]  # the space dim of each tensor dim (None: broadcast)
    dtype: torch.dtype
    offset: int = 0


def dense_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for size in reversed(shape):
        strides.append(step)
        step *= size
    return tuple(reversed(strides))


def memory_order(shape, strides) -> list[int]:
    """Dims from outermost to innermost in memory (largest stride first), size-1 dims dropped."""
    dims = [d for d in range(len(shape)) if shape[d] != 1]
    return sorted(dims, key=lambda d: (-strides[d], -d))


def broadcast_dims(value_shape, space_shape, space_dims_of_target=None) -> tuple[int | None, ...]:
    """Map a value's dims onto space dims by right-aligned broadcasting against `space_shape`.

    `space_dims_of_target` maps the target shape's dims to space dims (identity by default).
    """
    offset = len(space_shape) - len(value_shape)
    target = space_dims_of_target or list(range(len(space_shape)))
    out = []
    for j, size in enumerate(value_shape):
        t = j + offset
        out.append(target[t] if size != 1 and t >= 0 else None)
    return tuple(out)


@dataclass
class KernelWriter:
    graph: Graph
    lines: list[str] = field(default_factory=list)
    axes: list[Axis] = field(default_factory=list)
    index_of: dict[int, str] = field(default_factory=dict)  # space dim -> index variable
    values: dict[str, str] = field(default_factory=dict)    # IR value -> register variable
    # False where values come from arithmetic (GEMM / conv / reduction epilogues): quantize then
    # multiplies by 1 / scale (prims.requantize); pointwise kernels quantize loaded values exactly.
    exact_quantize: bool = True
    relu_inputs: dict[str, str] = field(default_factory=dict)  # relu's register -> its input's
    # The iteration space's shape, where the generator gives it: its axes skip size-1 dims, so
    # they cannot tell trailing ones apart from no dim (a [3, 1] space would read as [3]).
    space: tuple[int, ...] | None = None
    index_prefix: str = "i"  # of the per-dim index variables add_axis declares (i0, i1, ...)
    _count: int = 0

    def line(self, text: str, indent: int = 1) -> None:
        self.lines.append("    " * indent + text)

    @contextmanager
    def loop(self, header: str):
        """`header` (a `for` line), and every line written inside the block as its body. Triton
        keeps a name first bound inside a loop local to its body (only names bound before the
        loop are carried through it), so the registers and indices the body declares are
        forgotten after it: what the loop carries out is bound before it (an accumulator)."""
        self.line(header)
        start = len(self.lines)
        with self.scope():
            yield
        self.lines[start:] = ["    " + line for line in self.lines[start:]]

    @contextmanager
    def scope(self, index_prefix: str | None = None):
        """The axes, indices and registers declared inside the block are forgotten after it: a
        prologue over axes of its own (a row tile's channels) leaves the kernel's axes as they were.
        Triton has no block scope outside loops: a name bound here stays bound, and a loop after
        it that binds the same name to another shape fails to compile (a loop-carried variable
        whose type changes). index_prefix: another name for the indices declared here."""
        saved = (dict(self.values), dict(self.index_of), list(self.axes), dict(self.relu_inputs), self.index_prefix)
        self.index_prefix = index_prefix or self.index_prefix
        yield
        self.values, self.index_of, self.axes, self.relu_inputs, self.index_prefix = saved

    def tmp(self, prefix: str = "v") -> str:
        self._count += 1
        return f"{prefix}{self._count}"

    # -- index math -------------------------------------------------------------------------
    def add_axis(self, axis: Axis) -> None:
        """Declare per-dim index variables for one axis (mixed-radix decomposition)."""
        self.axes.append(axis)
        inner = 1
        dims = axis.dims
        if any(size == 0 for _, size in dims):  # an empty axis: every lane is masked off
            for dim, _ in dims:
                self.line(f"{self.index_prefix}{dim} = {axis.var} * 0")
                self.index_of[dim] = f"{self.index_prefix}{dim}"
            return
        for pos in range(len(dims) - 1, -1, -1):
            dim, size = dims[pos]
            if size == 1:
                continue
            e = axis.var if inner == 1 else f"({axis.var} // {inner})"
            if pos > 0:  # the outermost dim needs no modulo: the mask bounds it
                e = f"{e} % {size}"
            name = f"{self.index_prefix}{dim}"
            self.line(f"{name} = {e}")
            self.index_of[dim] = name
            inner *= size

    def _merged_axes(self, op: Operand) -> tuple[list[str], set[int]]:
        """Terms for the axes whose dims `op` stores contiguously in the axis's order: there the
        decomposed indices recombine to the lane index itself (i0 * H*W*C + i2 * W*C + i3 * C is
        offs_m * C), so the kernel spends no per-element integer math on them."""
        stride_of: dict[int, int] = {}
        for stride, dim in zip(op.strides, op.space_dims):
            if dim is not None and stride != 0:
                if dim in stride_of:
                    return [], set()
                stride_of[dim] = stride
        terms, merged = [], set()
        for axis in self.axes:
            dims = [(d, size) for d, size in axis.dims if size != 1]
            if len(dims) < 2 or any(d not in stride_of for d, _ in dims):
                continue
            step = stride_of[dims[-1][0]]
            expected = step
            for d, size in reversed(dims):
                if stride_of[d] != expected:
                    break
                expected *= size
            else:
                terms.append(axis.var if step == 1 else f"{axis.var} * {step}")
                merged.update(d for d, _ in dims)
        return terms, merged

    def offset(self, op: Operand, span: list[Axis] = ()) -> str:
        """Element offset of `op` at the current lanes; shaped like every axis in `span`."""
        terms = [f"{op.offset}"] if op.offset else []
        merged_terms, covered = self._merged_axes(op)
        terms += merged_terms
        for stride, dim in zip(op.strides, op.space_dims):
            if dim is None or stride == 0 or dim not in self.index_of or dim in covered:
                continue
            idx = self.index_of[dim]
            terms.append(idx if stride == 1 else f"{idx} * {stride}")
            covered.add(dim)
        for axis in span:
            # A pointer must have the block shape of the mask and value it goes with, even when
            # the tensor does not move along this axis (size-1 or broadcast dims): add 0 * lane.
            if not any(d in covered for d, _ in axis.dims):
                terms.append(f"{axis.var} * 0")
        return " + ".join(terms) or "0"

    def axes_of(self, op: Operand) -> list[Axis]:
        """The masked axes along which `op`'s address moves."""
        used = {d for d in op.space_dims if d is not None}
        return [a for a in self.axes if a.mask and any(d in used for d, _ in a.dims)]

    @staticmethod
    def mask_of(axes: list[Axis]) -> str | None:
        """Lanes in range on every one of `axes`."""
        masks = [a.mask for a in axes if a.mask]
        return " & ".join(f"({m})" for m in masks) if masks else None

    def mask_for(self, op: Operand) -> str | None:
        """The mask of the axes this operand actually varies along."""
        return self.mask_of(self.axes_of(op))

    def space_shape(self) -> tuple[int, ...]:
        """The iteration space's shape: `space`, else as the axes declared it (dims left out are
        size 1)."""
        if self.space is not None:
            return self.space
        sizes = {d: size for axis in self.axes for d, size in axis.dims}
        return tuple(sizes.get(d, 1) for d in range(max(sizes, default=-1) + 1))

    # -- loads, body, stores ---------------------------------------------------------------
    # Every access is masked by every axis its pointer spans: a lane past the extent of any axis
    # it moves along would read or write outside the tensor (or another row of it).
    def load(self, op: Operand, shape_hint: str | None = None) -> str:
        return self._emit_load(op, self.offset(op, self.axes_of(op)), self.mask_for(op))

    def load_at(self, op: Operand, at: dict[int, str], along: set[int], inside: str | None = None) -> str:
        """Load `op` where tensor dim k is addressed by `at[k]` (a shifted index, a looked-up row)
        instead of its space dim's index; `along`: the space dims those expressions vary along.
        The pointer spans, and the load is masked by, every axis it moves along, and by `inside`
        (the per-element moves of codegen/moves.py)."""
        terms = [f"{op.offset}"] if op.offset else []
        for k, (stride, dim) in enumerate(zip(op.strides, op.space_dims)):
            idx = at.get(k) or (self.index_of.get(dim) if dim is not None else None)
            if idx is not None and stride != 0:
                terms.append(idx if stride == 1 else f"{idx} * {stride}")
        spanned = [a for a in self.axes if a.mask and (a in self.axes_of(op)
                                                       or any(d in along for d, _ in a.dims))]
        terms += [f"{a.var} * 0" for a in spanned]  # the pointer takes every spanned axis's shape
        masks = [m for m in (self.mask_of(spanned), inside) if m]
        return self._emit_load(op, " + ".join(terms) or "0", " & ".join(f"({m})" for m in masks) or None)

    def _emit_load(self, op: Operand, offset: str, mask: str | None) -> str:
        var = self.tmp("x")
        masked = f", mask={mask}, other=0" if mask else ""
        text = f"tl.load({op.arg} + ({offset}){masked})"
        if op.dtype.is_floating_point:
            text += ".to(tl.float32)"
        self.line(f"{var} = {text}")
        return var

    def store(self, op: Operand, var: str, value_axes: list[Axis] | None = None) -> None:
        """Store register `var`, which holds one value per lane of `value_axes` (default: every
        axis of the kernel; a reduction's per-row results span its row axis only).

        The pointer spans those axes and every axis the tensor moves along, and the store is
        masked by all of them: the value may vary along an axis the tensor does not (its lanes
        then share an address, and out-of-range ones would write garbage there), and the tensor
        may move along an axis the value is broadcast over (the epilogue of a row reduction that
        broadcasts back to the row, x - max(x), is stored over the whole row)."""
        axes = self.axes if value_axes is None else value_axes
        spanned = [a for a in self.axes if a.mask and (a in axes or a in self.axes_of(op))]
        mask = self.mask_of(spanned)
        masked = f", mask={mask}" if mask else ""
        self.line(f"tl.store({op.arg} + ({self.offset(op, spanned)}), "
                  f"{E.narrow(var, op.dtype)}{masked})")

    def elementwise(self, node: Node, operand_for) -> str:
        """Emit `node`; operand_for(value) gives the Operand of a value not yet in registers."""
        args = []
        for value in node.inputs:
            if value in self.values:
                args.append(self.values[value])
                continue
            scalar = E.scalar_constant(self.graph, value)
            if scalar is not None:
                args.append(E.literal(scalar))
                continue
            self.values[value] = self.load(operand_for(value))
            args.append(self.values[value])
        var = self.tmp()
        # quantize(relu(y)) is quantize(y) clamped at the zero point: one max less per element
        # (the relu itself is dropped as dead code unless something else reads it).
        nonneg = node.op == "quantize_linear" and args[0] in self.relu_inputs
        if nonneg:
            args[0] = self.relu_inputs[args[0]]
        self.line(f"{var} = {E.emit(node, args, self.graph, self.exact_quantize, nonneg)}")
        if node.op == "relu":
            self.relu_inputs[var] = args[0]
        self.values[node.outputs[0]] = var
        return var
