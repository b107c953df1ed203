"""Memory planning: every intermediate tensor gets an offset in one preallocated arena.

What lives where:
- graph inputs: the caller's tensors; constants (weights, in kernel layouts): the engine's own;
- intermediates: the outputs of kernel and torch steps, in the arena (one uint8 tensor per engine
  and device), at offsets computed here;
- graph outputs, and any step output a graph output is a view of ("external" buffers): allocated
  outside the arena for every run (or once per CUDA graph), so no later step and no later run
  overwrites what a caller holds;
- views (reshape, transpose, slice ...): no memory of their own; a view keeps its base alive, so
  every step that reads a view counts as a reader of the base;
- torch-fallback steps: torch computes a temporary, which the engine copies into the step's
  planned arena slot (so the arena holds every intermediate and views of it stay valid); the
  temporary is freed at once by torch's caching allocator.

Liveness is stream-aware. Two buffers may share memory only if every access of one (its writer
and all its readers) is complete before the other's writer starts, by the schedule's
happens-before order. With one stream that is plain program order, i.e. the classic "lifetimes
do not overlap" rule; with several streams a buffer read on stream B is reused only by a step
that waits (directly or through events) for that read.

Offsets: greedy by size (largest first), each buffer at the lowest aligned offset that does not
overlap any already placed buffer it conflicts with (TFLite's and TensorRT's "greedy by size").
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Sequence

import torch

from trident.runtime.streams import StepIO

ALIGNMENT = 256  # bytes; every buffer starts on this boundary (vector loads, cache lines)


def layout_nbytes(layout) -> int:
    """Bytes a tensor with this layout spans from its first element (offset excluded)."""
    if any(s == 0 for s in layout.shape):
        return 0
    span = 1 + sum((size - 1) * abs(stride) for size, stride in zip(layout.shape, layout.strides))
    return span * layout.dtype.itemsize


def align(n: int, alignment: int = ALIGNMENT) -> int:
    return -(-n // alignment) * alignment


@dataclass(frozen=True)
class Buffer:
    value: str                 # the step output that owns the memory
    size: int                  # bytes
    writer: int                # the step that writes it
    readers: tuple[int, ...]   # work steps that read it, directly or through views

    @property
    def accesses(self) -> tuple[int, ...]:
        return (self.writer,) + self.readers

    @property
    def last(self) -> int:
        return max(self.accesses)


@dataclass
class MemoryPlan:
    offsets: dict[str, int]            # arena buffer -> byte offset
    buffers: dict[str, Buffer]         # every buffer a step writes (arena and external)
    external: list[str]                # buffers allocated per run: graph outputs and their bases
    alias: dict[str, str]              # view -> the buffer (or input/constant) it views
    arena_bytes: int
    alignment: int = ALIGNMENT

    @property
    def intermediate_bytes(self) -> int:
        """The sum of every arena buffer: what the arena would be without any reuse."""
        return sum(self.buffers[v].size for v in self.offsets)

    @property
    def external_bytes(self) -> int:
        return sum(self.buffers[v].size for v in self.external)

    def summary(self) -> dict:
        return {"arena_bytes": self.arena_bytes, "intermediate_bytes": self.intermediate_bytes,
                "output_bytes": self.external_bytes, "buffers": len(self.offsets),
                "reuse": round(self.intermediate_bytes / self.arena_bytes, 2)
                if self.arena_bytes else 1.0}


def find_buffers(steps: Sequence[StepIO], sizes: Callable[[str], int]
                 ) -> tuple[dict[str, Buffer], dict[str, str]]:
    """The buffers the steps write, each with its writer and readers, and the view -> base map."""
    alias: dict[str, str] = {}
    writer: dict[str, int] = {}
    readers: dict[str, list[int]] = {}

    def base(v: str) -> str:
        return alias.get(v, v)

    for i, s in enumerate(steps):
        if s.kind == "view":
            for o in s.outputs:
                alias[o] = base(s.inputs[0])
            continue
        for v in dict.fromkeys(s.inputs):
            b = base(v)
            if b in writer and i not in readers[b]:
                readers[b].append(i)
        for o in s.outputs:
            writer[o] = i
            readers[o] = []
    buffers = {v: Buffer(v, sizes(v), w, tuple(readers[v])) for v, w in writer.items()}
    return buffers, alias


def conflicts(a: Buffer, b: Buffer, happens_before: Callable[[int, int], bool]) -> bool:
    """Must a and b have disjoint memory? Not if all of one's accesses precede the other's write."""
    a_first = all(happens_before(x, b.writer) for x in a.accesses)
    b_first = all(happens_before(x, a.writer) for x in b.accesses)
    return not (a_first or b_first)


def assign_offsets(buffers: Sequence[Buffer], happens_before: Callable[[int, int], bool],
                   alignment: int = ALIGNMENT) -> tuple[dict[str, int], int]:
    """Greedy by size: offsets such that conflicting buffers never overlap; returns the offsets
    and the arena size (a multiple of `alignment`)."""
    order = sorted(buffers, key=lambda b: (-b.size, b.writer, b.value))
    placed: list[tuple[int, int, Buffer]] = []   # (offset, end, buffer)
    offsets: dict[str, int] = {}
    top = 0
    for buf in order:
        size = align(max(buf.size, 1), alignment)
        busy = sorted((off, end) for off, end, other in placed
                      if conflicts(buf, other, happens_before))
        offset = 0
        for off, end in busy:
            if offset + size <= off:
                break
            offset = max(offset, align(end, alignment))
        offsets[buf.value] = offset
        placed.append((offset, offset + size, buf))
        top = max(top, offset + size)
    return offsets, top


def plan_memory(steps: Sequence[StepIO], layouts: dict, graph_outputs: Sequence[str],
                happens_before: Callable[[int, int], bool] | None = None,
                alignment: int = ALIGNMENT) -> MemoryPlan:
    """Plan the arena for `steps` (sizes from `layouts`); happens_before defaults to program
    order (one stream)."""
    buffers, alias = find_buffers(steps, lambda v: layout_nbytes(layouts[v]))
    external = list(dict.fromkeys(alias.get(o, o) for o in graph_outputs
                                  if alias.get(o, o) in buffers))
    inside = [b for v, b in buffers.items() if v not in external]
    offsets, arena = assign_offsets(inside, happens_before or (lambda i, j: i < j), alignment)
    return MemoryPlan(offsets, buffers, external, alias, arena, alignment)


def overlapping_live_pairs(plan: MemoryPlan, happens_before: Callable[[int, int], bool]
                           ) -> list[tuple[str, str]]:
    """Pairs of arena buffers whose memory overlaps although they may be live together (a plan is
    correct when this is empty). Brute force, for tests and debugging."""
    bad = []
    items = [(v, plan.offsets[v], plan.offsets[v] + plan.buffers[v].size) for v in plan.offsets]
    for k, (a, a0, a1) in enumerate(items):
        for b, b0, b1 in items[k + 1:]:
            if a0 < b1 and b0 < a1 and plan.buffers[a].size and plan.buffers[b].size and \
                    conflicts(plan.buffers[a], plan.buffers[b], happens_before):
                bad.append((a, b))
    return bad


def peak_live_bytes(plan: MemoryPlan) -> int:
    """The most bytes of arena buffers live at one step in program order: a lower bound on any
    single-stream arena (without alignment padding)."""
    events: dict[int, int] = {}
    for v in plan.offsets:
        b = plan.buffers[v]
        events[b.writer] = events.get(b.writer, 0) + b.size
        events[b.last + 1] = events.get(b.last + 1, 0) - b.size
    peak = live = 0
    for step in sorted(events):
        live += events[step]
        peak = max(peak, live)
    return peak


# ------------------------------------------------------------------------------ arena ----
@dataclass
class Arena:
    """One uint8 tensor; `tensor(offset, layout)` is a typed, strided view into it."""
    nbytes: int
    device: torch.device
    buffer: torch.Tensor = field(init=False, repr=False)

    def __post_init__(self):
        self.buffer = torch.empty(self.nbytes, dtype=torch.uint8, device=self.device)
        self._typed: dict[torch.dtype, torch.Tensor] = {}   # the whole buffer as each dtype

    def tensor(self, offset: int, layout) -> torch.Tensor:
        extent = layout_nbytes(layout)
        size = layout.dtype.itemsize
        if offset % size or offset + extent > self.nbytes:
            raise AssertionError(f"arena slot [{offset}, {offset + extent}) does not fit the "
                                 f"{self.nbytes}-byte arena or the dtype's alignment")
        typed = self._typed.get(layout.dtype)
        if typed is None:  # (a view as a wider dtype needs a byte count it divides)
            typed = self._typed[layout.dtype] = self.buffer[:self.nbytes // size * size].view(layout.dtype)
        return typed.as_strided(layout.shape, layout.strides, offset // size)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(n) < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


__all__ = ["ALIGNMENT", "Arena", "Buffer", "MemoryPlan", "align", "assign_offsets", "conflicts",
           "find_buffers", "human_bytes", "layout_nbytes", "overlapping_live_pairs",
           "peak_live_bytes", "plan_memory"]