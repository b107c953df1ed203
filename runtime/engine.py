"""The Engine: runs a launch plan (compiler/ir/plan.py) on one device.

- memory: every intermediate lives in one preallocated arena (runtime/memory.py); graph outputs
  get their own buffers;
- streams: on a GPU, steps of independent branches run on several CUDA streams ordered by events
  (runtime/streams.py); `streams=1` keeps one stream;
- CUDA graphs: on a GPU the launch sequence is captured once per batch size and replayed;
- dynamic batch: a plan built with a batch profile (compiler/codegen/dynamic.py) runs at any
  batch of the profile; its batch-generic kernels take the batch as an argument;
- checks: inputs of the wrong count, dtype, shape or device raise InputError naming the input.

An engine runs one call at a time: calls made from several threads, or on several streams without
synchronizing them, share the arena and must be serialized by the caller (as a TensorRT execution
context must).
"""
from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trident.compiler import config
from trident.compiler.errors import InputError
from trident.compiler.ir import Node, TensorType
from trident.compiler.ir.plan import Layout, Plan
from trident.compiler.ir.shapes import instantiate
from trident.compiler.ops import evaluate
from trident.kernels.loader import default_kernel_dir, load_kernel
from trident.runtime.format import save_engine
from trident.runtime.memory import Arena, MemoryPlan, human_bytes, layout_nbytes, plan_memory
from trident.runtime.streams import DEFAULT_MAX_STREAMS, Schedule, build_schedule, step_ios


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device an engine runs on: `device`, or the GPU if there is one, else the CPU; 'cuda'
    becomes 'cuda:<current>', so devices compare equal to tensors' devices."""
    device = torch.device(device if device is not None else ("cuda" if config.HAS_CUDA else "cpu"))
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


@dataclass
class _Bound:
    """The engine at one batch size: layouts, torch-fallback nodes and arena views."""
    batch: int | None
    layouts: dict[str, Layout]
    nodes: dict[int, Node]
    arena: dict[str, torch.Tensor]


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]


class Engine:
    """A compiled model: `engine(*inputs)` returns the list of its outputs."""

    def __init__(self, plan: Plan, device: torch.device | str | None = None,
                 kernel_dir: Path | None = None, cuda_graph: bool = True,
                 streams: int | None = None):
        self.plan = plan
        self.dynamic = plan.dynamic   # BatchInfo of a batch-profile build
        # On a GPU the launch sequence is captured once per batch size and replayed.
        self.cuda_graph = cuda_graph
        self.device = resolve_device(device)
        self.kernel_dir = kernel_dir or default_kernel_dir()
        self.constants = {name: self._place(t, plan.layouts[name]) for name, t in plan.constants.items()}
        self.launchers = [load_kernel(s.name, s.source, self.kernel_dir).launch if s.kind == "kernel" else None
                          for s in plan.steps]
        # The launch keywords of each kernel step, built once (the per-call path reuses them).
        self._launch_kwargs = [s.config.to_dict() if s.kind == "kernel" else None for s in plan.steps]
        self._index = {id(s): k for k, s in enumerate(plan.steps)}
        # Several streams only pay off (and only exist) on a GPU; on the CPU steps run in order.
        if streams is None:
            streams = DEFAULT_MAX_STREAMS if self.device.type == "cuda" else 1
        ios = step_ios(plan.steps)
        self.schedule: Schedule = build_schedule(ios, streams)
        self.memory: MemoryPlan = plan_memory(ios, self.layouts_at(self.max_batch),
                                              plan.outputs, self.schedule.happens_before)
        self.arena = Arena(self.memory.arena_bytes, self.device)
        self._bound: dict[int | None, _Bound] = {}
        self._graphs: dict[int | None, _Captured] = {}
        self._active: _Bound | None = None
        self._cuda_streams = None
        self.file_info: dict | None = None   # the header, for an engine loaded from a file

    # -- public -------------------------------------------------------------------------------
    @property
    def inputs(self) -> list[str]:
        return self.plan.inputs

    @property
    def outputs(self) -> list[str]:
        return self.plan.outputs

    @property
    def num_kernels(self) -> int:
        """Kernel launches per run: generated kernels plus ops that run through torch."""
        return self.plan.num_kernels

    @property
    def captured_batches(self) -> set[int | None]:
        """The batch sizes whose launch sequence is captured in a CUDA graph (None: static)."""
        return set(self._graphs)

    @property
    def profile(self):
        """The batch profile (min, opt, max) of a dynamic-batch engine, else None."""
        return self.dynamic.profile if self.dynamic is not None else None

    @property
    def max_batch(self) -> int | None:
        return self.dynamic.profile.max if self.dynamic is not None else None

    @property
    def num_streams(self) -> int:
        return self.schedule.num_streams

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the engine. With CUDA graphs, the returned tensors are the engine's own output
        buffers: the next call with the same batch size overwrites them (clone what you keep),
        as with TensorRT bindings."""
        batch, inputs = self._prepare(inputs)
        if self.cuda_graph and self.device.type == "cuda":
            return self._replay(inputs, batch)
        return self._run(inputs, batch=batch)

    def run_steps(self, *inputs: torch.Tensor, on_step=None) -> list[torch.Tensor]:
        """Run eagerly, one step at a time (no CUDA graph): the hook the profiler and the
        layer-wise debugger use. `on_step(index, step, run, env)` stands in for each step: it must
        call `run()` (which runs the step and puts its outputs in `env`) at least once; it may call
        it again (to time it) and read `env` afterwards. Intermediates live in the arena: read a
        step's outputs in its on_step call (a later step may reuse their memory)."""
        batch, inputs = self._prepare(inputs)
        return self._run(inputs, on_step, batch=batch)

    def save(self, path) -> None:
        """Write the engine to one file (runtime/format.py); `trident.load_engine` reads it."""
        save_engine(self.plan, path, self.device,
                    {"cuda_graph": self.cuda_graph, "streams": self.schedule.num_streams,
                     "arena_bytes": self.memory.arena_bytes})

    def input_specs(self, batch: int | None = None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, shape, dtype) of each input; a dynamic engine's at `batch` (default: opt)."""
        specs = []
        for name in self.plan.inputs:
            lay = self.plan.layouts[name]
            shape = tuple(lay.shape)
            if self.dynamic is not None:
                shape = self.dynamic.input_shape(name, batch or self.dynamic.profile.opt)
            specs.append((name, shape, lay.dtype))
        return specs

    def layouts_at(self, batch: int | None) -> dict[str, Layout]:
        if self.dynamic is None or batch is None:
            return self.plan.layouts
        return self.dynamic.layouts_at(batch, self.plan.layouts)

    def memory_report(self) -> dict:
        """Bytes of the arena, of all intermediates (without reuse), of weights and of outputs."""
        weights = sum(t.untyped_storage().nbytes() for t in self.constants.values())
        report = self.memory.summary()
        report.update(weights_bytes=weights, streams=self.schedule.num_streams,
                      total_bytes=self.memory.arena_bytes + weights + self.memory.external_bytes)
        return report

    def describe_memory(self) -> str:
        r = self.memory_report()
        return (f"arena {human_bytes(r['arena_bytes'])} (intermediates without reuse "
                f"{human_bytes(r['intermediate_bytes'])}), weights {human_bytes(r['weights_bytes'])}, "
                f"outputs {human_bytes(r['output_bytes'])}")

    # -- input checks ---------------------------------------------------------------------------
    def check_inputs(self, inputs: Sequence) -> int | None:
        """Raise InputError unless `inputs` fit the engine; returns the batch (dynamic engines)."""
        names = self.plan.inputs
        if len(inputs) != len(names):
            raise InputError(f"{self.plan.name}: expected {len(names)} input(s) "
                             f"({self._describe_inputs()}), got {len(inputs)}")
        batch = None
        for k, (name, x) in enumerate(zip(names, inputs)):
            where = f'input "{name}" (#{k + 1} of {len(names)})'
            expected = self.plan.layouts[name]
            if not isinstance(x, torch.Tensor):
                raise InputError(f"{where}: expected a torch.Tensor, got {type(x).__name__}")
            if x.dtype != expected.dtype:
                raise InputError(f"{where}: expected dtype {expected.dtype}, got {x.dtype}")
            if x.device != self.device:
                raise InputError(f"{where}: expected a tensor on {self.device}, got one on "
                                 f"{x.device}")
            batch = self._check_shape(where, name, tuple(x.shape), batch)
        return batch

    def _check_shape(self, where: str, name: str, shape: tuple, batch: int | None) -> int | None:
        if self.dynamic is None:
            want = tuple(self.plan.layouts[name].shape)
            if shape != want:
                raise InputError(f"{where}: expected shape {want}, got {shape}")
            return batch
        info = self.dynamic
        expected = info.shape_text(name)
        if len(shape) != len(info.inputs[name]):
            raise InputError(f"{where}: expected shape {expected} (rank {len(info.inputs[name])}), "
                             f"got {shape}")
        mine = info.batch_of(name, shape)
        if mine is None and any(not isinstance(t, int) for t in info.inputs[name]):
            raise InputError(f"{where}: shape {shape} does not fit {expected} for any batch "
                             f"(profile {info.profile})")
        if mine is not None:
            info.profile.check(mine, name, shape)
            if batch is not None and mine != batch:
                raise InputError(f"{where}: batch {mine}, but an earlier input has batch {batch}")
            batch = mine
        want = info.input_shape(name, batch if batch is not None else info.profile.opt)
        if shape != want:
            raise InputError(f"{where}: expected shape {expected}"
                             + (f" = {want} at batch {batch}" if batch is not None else "")
                             + f", got {shape}")
        return batch

    def _describe_inputs(self) -> str:
        parts = []
        for name in self.plan.inputs:
            lay = self.plan.layouts[name]
            shape = self.dynamic.shape_text(name) if self.dynamic else str(tuple(lay.shape))
            parts.append(f"{name}: {str(lay.dtype).replace('torch.', '')}{shape}")
        return ", ".join(parts)

    def _prepare(self, inputs: Sequence[torch.Tensor]) -> tuple[int | None, list[torch.Tensor]]:
        """Checked inputs, dense (kernels were generated for dense inputs), and their batch."""
        batch = self.check_inputs(inputs)
        return batch, [x.contiguous() for x in inputs]

    def _batch_from(self, inputs: Sequence[torch.Tensor]) -> int | None:
        if self.dynamic is None:
            return None
        for name, x in zip(self.plan.inputs, inputs):
            b = self.dynamic.batch_of(name, tuple(x.shape))
            if b is not None:
                return b
        return self.dynamic.profile.opt

    # -- running --------------------------------------------------------------------------------
    def _run(self, inputs: Sequence[torch.Tensor], on_step=None, batch=None) -> list[torch.Tensor]:
        if batch is None:
            batch = self._batch_from(inputs)
        bound = self._bind(batch)
        env = dict(self.constants)
        env.update(zip(self.plan.inputs, inputs))
        env.update(bound.arena)
        for value in self.memory.external:  # allocated before any side stream forks
            env[value] = self._empty(bound.layouts[value])
        self._active = bound
        try:
            if on_step is None and self.schedule.multi_stream and self.device.type == "cuda":
                self._run_streams(env)
            else:
                for k, (step, launch) in enumerate(zip(self.plan.steps, self.launchers)):
                    if on_step is None:
                        self._run_step(step, launch, env)
                    else:
                        on_step(k, step, functools.partial(self._run_step, step, launch, env), env)
        finally:
            self._active = None
        return [env[o] for o in self.plan.outputs]

    def _run_streams(self, env: dict) -> None:
        sched = self.schedule
        main = torch.cuda.current_stream(self.device)
        if self._cuda_streams is None:
            side = [torch.cuda.Stream(device=self.device) for _ in range(sched.num_streams - 1)]
            events = {k: torch.cuda.Event() for k in sched.records}
            self._cuda_streams = (side, events, torch.cuda.Event())
        side, events, fork = self._cuda_streams
        streams = [main] + side
        fork.record(main)
        for s in side:
            s.wait_event(fork)
        for k, (step, launch) in enumerate(zip(self.plan.steps, self.launchers)):
            s = sched.stream_of[k]
            if s is None:
                self._run_step(step, launch, env)
                continue
            stream = streams[s]
            for d in sched.waits[k]:
                stream.wait_event(events[d])
            if s == 0:
                self._run_step(step, launch, env)
            else:
                with torch.cuda.stream(stream):
                    self._run_step(step, launch, env)
            if k in sched.records:
                events[k].record(stream)
        for k in sched.joins:
            main.wait_event(events[k])

    def _replay(self, inputs: Sequence[torch.Tensor], batch: int | None) -> list[torch.Tensor]:
        captured = self._graphs.get(batch)
        if captured is None:
            static_inputs = [x.clone() for x in inputs]
            self._run(static_inputs, batch=batch)  # compiles every kernel outside the capture
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._run(static_inputs, batch=batch)
            captured = self._graphs[batch] = _Captured(graph, static_inputs, outputs)
        for static, x in zip(captured.inputs, inputs):
            static.copy_(x)
        captured.graph.replay()
        return list(captured.outputs)

    def _run_step(self, step, launch, env: dict) -> None:
        bound = self._active or self._bind(self._default_batch())
        k = self._index[id(step)]
        if step.kind == "kernel":
            for value in step.outputs:
                if value not in env:
                    env[value] = self._empty(bound.layouts[value])
            if step.batched:
                launch(*[env[a] for a in step.args], config=self._launch_kwargs[k], nb=bound.batch)
            else:
                launch(*[env[a] for a in step.args], config=self._launch_kwargs[k])
        elif step.kind == "view":
            source = env[step.inputs[0]]
            for value in step.outputs:
                lay = bound.layouts[value]
                env[value] = source.as_strided(lay.shape, lay.strides,
                                               source.storage_offset() + lay.offset)
        else:
            node = bound.nodes.get(k, step.node)
            outs = evaluate(node, [env[i] for i in node.inputs],
                            [TensorType(bound.layouts[o].shape, bound.layouts[o].dtype) for o in node.outputs])
            for value, out in zip(node.outputs, outs):
                dst = env.get(value)
                if dst is None:
                    dst = env[value] = self._empty(bound.layouts[value])
                dst.copy_(out)  # into its arena slot (or output buffer), in the planned layout

    # -- internals ----------------------------------------------------------------------------
    def _default_batch(self) -> int | None:
        return self.dynamic.build_batch if self.dynamic is not None else None

    def _bind(self, batch: int | None) -> _Bound:
        bound = self._bound.get(batch)
        if bound is None:
            layouts = self.layouts_at(batch)
            arena = {}
            for value, offset in self.memory.offsets.items():
                lay = layouts[value]
                if layout_nbytes(lay) > self.memory.buffers[value].size:
                    raise AssertionError(f"{value} needs more memory at batch {batch} than at the "
                                         f"profile's max batch")
                arena[value] = self.arena.tensor(offset, lay)
            nodes = {}
            if self.dynamic is not None and batch is not None:
                for k, template in self.dynamic.node_attrs.items():
                    node = self.plan.steps[k].node
                    nodes[k] = Node(node.op, node.inputs, node.outputs,
                                    instantiate(template, batch), node.name)
            bound = self._bound[batch] = _Bound(batch, layouts, nodes, arena)
        return bound

    def _place(self, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = torch.empty_strided(layout.shape, layout.strides, dtype=layout.dtype, device=self.device)
        out.copy_(tensor)
        return out

    def _empty(self, lay: Layout) -> torch.Tensor:
        return torch.empty_strided(lay.shape, lay.strides, dtype=lay.dtype, device=self.device)

    def _alloc(self, value: str) -> torch.Tensor:
        bound = self._active or self._bind(self._default_batch())
        return self._empty(bound.layouts[value])
