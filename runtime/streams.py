"""Multi-stream execution: which CUDA stream runs each step, and which events order them.

The schedule is a pure data structure computed from the program's steps (no CUDA needed), so the
CPU tests check it: every step runs after each step whose output it reads, either because both
are on one stream (streams run in program order) or through an event the consumer's stream waits
on (directly or transitively).

Assignment (greedy, in program order): a step continues the stream of a producer that is still
that stream's last step (a chain stays on one stream, no event); otherwise it takes a stream all
of whose work it already depends on; otherwise it opens a new stream, up to `max_streams`, then
shares the stream whose last step is oldest. Stream 0 is the caller's current stream; the other
streams fork from it at the start of a run (they wait on an event recorded on it) and it joins
them at the end, so a run is one unit of work on the caller's stream (and CUDA-graph capture sees
a closed fork/join).

Views run on the host (they only make tensor views) and are not scheduled: a view's data is its
base's, so reading a view depends on the step that produced the base.

`happens_before(i, j)` comes from vector clocks over the schedule; the memory planner uses it so
two tensors share arena memory only when every access of one is ordered before the other is
written (see runtime/memory.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

DEFAULT_MAX_STREAMS = 4


@dataclass(frozen=True)
class StepIO:
    """What scheduling and memory planning need of a step."""
    kind: str                  # "kernel" | "torch" | "view"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]


def step_ios(steps) -> list[StepIO]:
    """The StepIO of each Program step."""
    return [StepIO(s.kind, tuple(s.inputs), tuple(s.outputs)) for s in steps]


def is_work(step: StepIO) -> bool:
    return step.kind != "view"


def producers(steps: Sequence[StepIO]) -> dict[str, int | None]:
    """value -> the work step that writes its memory (for a view: its base's producer); values
    no step produces (graph inputs, constants) map to None or are absent."""
    made: dict[str, int | None] = {}
    for i, s in enumerate(steps):
        for o in s.outputs:
            made[o] = made.get(s.inputs[0]) if s.kind == "view" else i
    return made


def dependencies(steps: Sequence[StepIO]) -> list[frozenset[int]]:
    """For each step, the work steps it must run after (empty for views)."""
    made: dict[str, int | None] = {}
    deps = []
    for i, s in enumerate(steps):
        if s.kind == "view":
            deps.append(frozenset())
            for o in s.outputs:
                made[o] = made.get(s.inputs[0])
            continue
        deps.append(frozenset(made[v] for v in s.inputs if made.get(v) is not None))
        for o in s.outputs:
            made[o] = i
    return deps


@dataclass(frozen=True)
class Schedule:
    stream_of: tuple[int | None, ...]       # per step; None for views
    waits: tuple[tuple[int, ...], ...]      # per step: steps whose events its stream waits on first
    records: frozenset[int]                 # steps after which an event is recorded on their stream
    joins: tuple[int, ...]                  # steps whose events stream 0 waits on at the end
    num_streams: int
    clocks: tuple[tuple[int, ...] | None, ...]  # per step: vector clock before it starts
    position: tuple[int | None, ...]        # per step: its index among its stream's steps

    @property
    def multi_stream(self) -> bool:
        return self.num_streams > 1

    def happens_before(self, i: int, j: int) -> bool:
        """Is work step i complete before work step j starts, in every execution?"""
        if i == j:
            return False
        si = self.stream_of[i]
        if si == self.stream_of[j]:
            return i < j
        return self.clocks[j][si] >= self.position[i]

    def streams_used(self) -> list[int]:
        return sorted({s for s in self.stream_of if s is not None})

    def describe(self) -> str:
        lines = [f"{self.num_streams} stream(s)"]
        for i, s in enumerate(self.stream_of):
            if s is None:
                continue
            wait = f" waits on {list(self.waits[i])}" if self.waits[i] else ""
            lines.append(f"  step {i}: stream {s}{wait}")
        if self.joins:
            lines.append(f"  stream 0 joins {list(self.joins)}")
        return "\n".join(lines)


def assign_streams(steps: Sequence[StepIO], max_streams: int = DEFAULT_MAX_STREAMS) -> list[int | None]:
    """The stream of each work step (None for views); see the module docstring."""
    max_streams = max(1, int(max_streams))
    deps = dependencies(steps)
    ancestors: dict[int, int] = {}   # step -> bitmask of every step it transitively depends on
    stream_of: list[int | None] = [None] * len(steps)
    tails: list[int] = []            # per stream: its last step so far
    for j, s in enumerate(steps):
        if not is_work(s):
            continue
        mask = 0
        for d in deps[j]:
            mask |= ancestors[d] | (1 << d)
        ancestors[j] = mask
        chosen = None
        for d in sorted(deps[j], reverse=True):        # continue a producer's chain
            if tails[stream_of[d]] == d:
                chosen = stream_of[d]
                break
        if chosen is None:                             # a stream j already waits for entirely
            chosen = next((k for k, t in enumerate(tails) if (mask >> t) & 1), None)
        if chosen is None:
            if len(tails) < max_streams:
                tails.append(-1)
                chosen = len(tails) - 1
            else:
                chosen = min(range(len(tails)), key=lambda k: tails[k])
        stream_of[j] = chosen
        tails[chosen] = j
    return stream_of


def build_schedule(steps: Sequence[StepIO], max_streams: int = DEFAULT_MAX_STREAMS,
                   stream_of: Sequence[int | None] | None = None) -> Schedule:
    """Streams (assigned here unless given), the events each step waits on, and the joins."""
    steps = list(steps)
    deps = dependencies(steps)
    if stream_of is None:
        stream_of = assign_streams(steps, max_streams)
    stream_of = list(stream_of)
    used = sorted({s for s in stream_of if s is not None})
    num = (max(used) + 1) if used else 1
    position: list[int | None] = [None] * len(steps)
    count = [0] * num
    for i, s in enumerate(stream_of):
        if s is not None:
            position[i] = count[s]
            count[s] += 1
    # A side stream starts after the fork (it knows nothing of other streams' steps: -1).
    clock = [[-1] * num for _ in range(num)]
    before: list[tuple[int, ...] | None] = [None] * len(steps)
    after: list[list[int] | None] = [None] * len(steps)
    waits: list[tuple[int, ...]] = [()] * len(steps)
    records: set[int] = set()
    for j, s in enumerate(stream_of):
        if s is None:
            continue
        c = list(clock[s])
        mine = []
        for d in sorted(deps[j], reverse=True):  # latest first: its clock may cover the others
            t = stream_of[d]
            if t == s or c[t] >= position[d]:
                continue
            mine.append(d)
            records.add(d)
            c = [max(x, y) for x, y in zip(c, after[d])]
        waits[j] = tuple(mine)
        before[j] = tuple(c)
        c[s] = position[j]
        after[j] = c
        clock[s] = c
    joins = []
    main = list(clock[0])
    for s in range(1, num):
        tail = max((i for i, t in enumerate(stream_of) if t == s), default=None)
        if tail is not None and main[s] < position[tail]:
            joins.append(tail)
            records.add(tail)
            main = [max(x, y) for x, y in zip(main, after[tail])]
    return Schedule(tuple(stream_of), tuple(waits), frozenset(records), tuple(joins), num,
                    tuple(before), tuple(position))


def single_stream(steps: Sequence[StepIO]) -> Schedule:
    return build_schedule(steps, max_streams=1)


def ordering_edges(schedule: Schedule) -> set[tuple[int, int]]:
    """The direct orderings a schedule enforces (same-stream succession and event waits); their
    transitive closure is what the GPU guarantees. For checking schedules independently."""
    edges = set()
    last: dict[int, int] = {}
    for j, s in enumerate(schedule.stream_of):
        if s is None:
            continue
        if s in last:
            edges.add((last[s], j))
        last[s] = j
        for d in schedule.waits[j]:
            edges.add((d, j))
    return edges


def check_schedule(steps: Sequence[StepIO], schedule: Schedule) -> list[str]:
    """Every dependency that the schedule's streams and events do not order (empty: all good)."""
    edges = ordering_edges(schedule)
    succ: dict[int, set[int]] = {}
    for a, b in edges:
        succ.setdefault(a, set()).add(b)
    problems = []
    for j, ds in enumerate(dependencies(steps)):
        for d in ds:
            if not _reaches(succ, d, j):
                problems.append(f"step {j} reads step {d}'s output but is not ordered after it")
    for j, ds in enumerate(schedule.waits):
        problems += [f"step {j} waits on step {d}, which records no event"
                     for d in ds if d not in schedule.records]
    # The run ends when stream 0 has joined: every step must be ordered before that point.
    done = [i for i, s in enumerate(schedule.stream_of) if s == 0] + list(schedule.joins)
    problems += [f"join: step {j} records no event" for j in schedule.joins
                 if j not in schedule.records]
    for i, s in enumerate(schedule.stream_of):
        if s not in (None, 0) and i not in done and not any(_reaches(succ, i, e) for e in done):
            problems.append(f"step {i} (stream {s}) may still run when the engine returns")
    return problems


def _reaches(succ: dict[int, set[int]], a: int, b: int) -> bool:
    stack, seen = [a], {a}
    while stack:
        x = stack.pop()
        for y in succ.get(x, ()):
            if y == b:
                return True
            if y not in seen and y < b:
                seen.add(y)
                stack.append(y)
    return False
