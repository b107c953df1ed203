"""Memory planning (runtime/memory.py) and stream scheduling (runtime/streams.py).

The plans are pure data, so they are checked exhaustively on random graphs: every dependency is
ordered by the schedule (same stream or events), and no two buffers that may be live at the same
time share a byte of the arena, judged by an independent happens-before relation (the transitive
closure of the schedule's stream order and event waits).
"""
from __future__ import annotations

import functools

import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from trident.compiler.ir.plan import Layout
from trident.runtime.memory import (ALIGNMENT, Buffer, assign_offsets, conflicts, layout_nbytes,
                                    overlapping_live_pairs, peak_live_bytes, plan_memory)
from trident.runtime.streams import (StepIO, build_schedule, check_schedule, dependencies,
                                     ordering_edges, step_ios)


# ------------------------------------------------------------------ random programs ----
@st.composite
def random_steps(draw, max_steps: int = 24):
    """(steps, sizes, graph outputs): kernels/torch steps reading earlier values, and views."""
    values = ["in0", "in1"]
    steps, sizes = [], {}
    for i in range(draw(st.integers(1, max_steps))):
        kind = draw(st.sampled_from(["kernel", "kernel", "kernel", "torch", "view"]))
        if kind == "view":
            outs = tuple(f"v{i}_{j}" for j in range(draw(st.integers(1, 2))))
            steps.append(StepIO("view", (draw(st.sampled_from(values)),), outs))
        else:
            ins = tuple(dict.fromkeys(draw(st.lists(st.sampled_from(values), min_size=1,
                                                    max_size=3))))
            outs = tuple(f"t{i}_{j}" for j in range(draw(st.integers(1, 2))))
            for o in outs:
                sizes[o] = draw(st.integers(0, 5000))
            steps.append(StepIO(kind, ins, outs))
        values.extend(outs)
    made = values[2:]
    outputs = draw(st.lists(st.sampled_from(made), min_size=1, max_size=3)) if made else []
    return steps, sizes, outputs


def layouts_for(sizes: dict[str, int]) -> dict[str, Layout]:
    return {v: Layout((n,), (1,), torch.uint8) for v, n in sizes.items()}


def closure(schedule):
    """happens_before computed independently: reachability over the schedule's direct orderings."""
    succ: dict[int, set[int]] = {}
    for a, b in ordering_edges(schedule):
        succ.setdefault(a, set()).add(b)

    @functools.lru_cache(maxsize=None)
    def reach(a: int) -> frozenset[int]:
        out = set()
        for b in succ.get(a, ()):
            out.add(b)
            out |= reach(b)
        return frozenset(out)

    return lambda i, j: j in reach(i)


@settings(max_examples=150, deadline=None)
@given(random_steps(), st.integers(1, 4))
def test_schedule_orders_every_dependency(case, max_streams):
    steps, _, _ = case
    schedule = build_schedule(steps, max_streams)
    assert check_schedule(steps, schedule) == []
    assert schedule.num_streams <= max_streams
    hb = closure(schedule)
    for j, deps in enumerate(dependencies(steps)):
        for d in deps:
            assert schedule.happens_before(d, j) and hb(d, j)
    # the schedule's own (vector clock) relation never claims an order the GPU does not enforce
    work = [i for i, s in enumerate(steps) if s.kind != "view"]
    for i in work:
        for j in work:
            if schedule.happens_before(i, j):
                assert hb(i, j), (i, j)


@settings(max_examples=150, deadline=None)
@given(random_steps(), st.integers(1, 4))
def test_no_two_live_buffers_overlap(case, max_streams):
    steps, sizes, outputs = case
    schedule = build_schedule(steps, max_streams)
    plan = plan_memory(steps, layouts_for(sizes), outputs, schedule.happens_before)
    hb = closure(schedule)
    assert overlapping_live_pairs(plan, hb) == []
    for v, off in plan.offsets.items():
        assert off % ALIGNMENT == 0 and off + plan.buffers[v].size <= plan.arena_bytes
    # graph outputs (and what they view) live outside the arena
    for o in outputs:
        assert plan.alias.get(o, o) not in plan.offsets
    assert plan.arena_bytes <= sum(-(-max(b.size, 1) // ALIGNMENT) * ALIGNMENT
                                   for v, b in plan.buffers.items() if v in plan.offsets)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 30), st.integers(0, 8), st.integers(1, 10000)),
                min_size=1, max_size=40))
def test_random_lifetimes_one_stream(spec):
    """Buffers with random [writer, last use] lifetimes: overlapping lifetimes never share memory."""
    buffers = [Buffer(f"b{k}", size, start, (start + length,) if length else ())
               for k, (start, length, size) in enumerate(spec)]
    order = lambda i, j: i < j  # noqa: E731
    offsets, arena = assign_offsets(buffers, order)
    for k, a in enumerate(buffers):
        for b in buffers[k + 1:]:
            live_together = not (a.last < b.writer or b.last < a.writer)
            disjoint = (offsets[a.value] + a.size <= offsets[b.value]
                        or offsets[b.value] + b.size <= offsets[a.value])
            assert disjoint or not live_together
            assert conflicts(a, b, order) == live_together
    peak = max(sum(b.size for b in buffers if b.writer <= t <= b.last)
               for t in range(0, 40))
    assert peak <= arena <= sum(-(-b.size // ALIGNMENT) * ALIGNMENT for b in buffers)


def test_views_keep_their_base_alive():
    steps = [StepIO("kernel", ("x",), ("a",)),
             StepIO("view", ("a",), ("a_view",)),
             StepIO("kernel", ("x",), ("b",)),
             StepIO("kernel", ("b",), ("c",)),
             StepIO("kernel", ("a_view", "c"), ("d",))]
    sizes = {"a": 1000, "b": 1000, "c": 1000, "d": 8}
    plan = plan_memory(steps, layouts_for(sizes), ["d"])
    assert plan.alias["a_view"] == "a"
    assert plan.buffers["a"].readers == (4,)
    # a is read (through its view) by step 4, so b and c cannot take its memory; b can share
    # with nothing live at steps 2..3 but a; c may reuse b's? no: b is read by step 3, c written
    # there. Three distinct slots.
    assert len({plan.offsets[v] for v in ("a", "b", "c")}) == 3
    assert plan.external == ["d"]


def test_reuse_after_last_read():
    chain = [StepIO("kernel", ("x",), ("a",)), StepIO("kernel", ("a",), ("b",)),
             StepIO("kernel", ("b",), ("c",)), StepIO("kernel", ("c",), ("d",))]
    plan = plan_memory(chain, layouts_for({"a": 4096, "b": 4096, "c": 4096, "d": 4}), ["d"])
    assert plan.arena_bytes == 2 * 4096  # a and c share, b alone: ping-pong
    assert plan.offsets["a"] == plan.offsets["c"]
    assert plan.intermediate_bytes == 3 * 4096
    assert peak_live_bytes(plan) == 2 * 4096


def test_streams_delay_reuse_until_a_join():
    # x -> a -> (b on one branch, c on another) -> d joins. With two streams, b's memory may not
    # go to c (they may run at the same time), with one stream it may not either (b read at 3);
    # and e (after the join) may reuse a only if every reader of a is ordered before it.
    steps = [StepIO("kernel", ("x",), ("a",)),          # 0
             StepIO("kernel", ("a",), ("b",)),          # 1
             StepIO("kernel", ("a",), ("c",)),          # 2
             StepIO("kernel", ("b", "c"), ("d",)),      # 3
             StepIO("kernel", ("d",), ("e",))]          # 4
    two = build_schedule(steps, 2)
    assert two.stream_of[1] != two.stream_of[2]
    assert not two.happens_before(1, 2) and not two.happens_before(2, 1)
    assert check_schedule(steps, two) == []
    sizes = {"a": 512, "b": 512, "c": 512, "d": 512, "e": 4}
    plan = plan_memory(steps, layouts_for(sizes), ["e"], two.happens_before)
    assert plan.offsets["b"] != plan.offsets["c"]
    assert overlapping_live_pairs(plan, two.happens_before) == []


def test_single_chain_uses_one_stream_and_no_events():
    steps = [StepIO("kernel", (f"v{i}",), (f"v{i + 1}",)) for i in range(6)]
    schedule = build_schedule(steps, 4)
    assert schedule.num_streams == 1 and not schedule.records and not schedule.joins


def test_layout_nbytes_of_strided_views():
    assert layout_nbytes(Layout((2, 3, 4, 5), (60, 1, 15, 3), torch.float16)) == 240
    assert layout_nbytes(Layout((4, 8), (1, 0), torch.float32)) == 16  # broadcast: 4 distinct
    assert layout_nbytes(Layout((0, 8), (8, 1), torch.float32)) == 0


# ------------------------------------------------------------------- real programs ----
def _engine(name: str):
    from trident.compiler import build_engine
    from trident.models import MODELS

    build, make_inputs = MODELS[name]
    model = build()
    return model, make_inputs, build_engine(model, "fp32", make_inputs(2))


def test_inception_schedule_has_parallel_branches():
    from trident.compiler.build import compile_graph, import_model
    from trident.models import MODELS

    build, make_inputs = MODELS["inception_tiny"]
    program = compile_graph(import_model(build(), make_inputs(2)), "fp32")
    steps = step_ios(program.steps)
    schedule = build_schedule(steps, 4)
    # four branches per block; the two that open with a 1x1 conv of the block input share one
    # horizontal launch, so three run side by side
    assert schedule.num_streams == 3
    assert check_schedule(steps, schedule) == []
    plan = plan_memory(steps, program.layouts, program.graph.outputs, schedule.happens_before)
    assert overlapping_live_pairs(plan, closure(schedule)) == []
    single = plan_memory(steps, program.layouts, program.graph.outputs)
    assert single.arena_bytes <= plan.arena_bytes < plan.intermediate_bytes


def test_engine_arena_reuses_memory_and_outputs_survive():
    from trident.runtime.engine import Engine

    model, make_inputs, engine = _engine("multihead")
    assert engine.num_streams == 1  # on the CPU the engine keeps one stream
    report = engine.memory_report()
    assert report["arena_bytes"] < report["intermediate_bytes"]
    assert engine.arena.buffer.numel() == report["arena_bytes"]
    x1, x2 = make_inputs(2), make_inputs(2)
    out1 = engine(*x1)
    kept = [o.clone() for o in out1]
    out2 = engine(*x2)
    # a later call does not overwrite an earlier call's outputs
    assert all(torch.equal(a, b) for a, b in zip(out1, kept))
    with torch.no_grad():
        for got, ref in zip(out2, model(*x2)):
            torch.testing.assert_close(got, ref, rtol=1e-4, atol=1e-5)
    # a plan for several streams (less reuse) runs to the same result
    multi = Engine(engine.plan, streams=4)
    assert multi.schedule.num_streams == 3  # one per head
    assert multi.memory_report()["arena_bytes"] >= report["arena_bytes"]
    assert all(torch.equal(a, b) for a, b in zip(multi(*x2), out2))
