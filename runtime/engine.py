"""The Engine: runs a launch plan (compiler/ir/plan.py) on one device.

- memory: every intermediate lives in one preallocated arena (runtime/memory.py); graph outputs
  get their own buffers;
- streams: on a GPU, steps of independent branches run on several CUDA streams ordered by events
  (runtime/streams.py); `streams=1` keeps one stream;
- CUDA graphs: on a GPU the launch sequence is captured once per input shape and replayed; a
  profiled engine captures a shape the second time it sees it (a decoder's one-off shapes run
  without capture) and keeps the graphs of the config.CUDA_GRAPH_SHAPES shapes used last;
- dynamic shapes: a plan built with an optimization profile (compiler/codegen/dynamic.py) runs
  at any sizes of the profile; its shape-generic kernels take the sizes as arguments;
- checks: inputs of the wrong count, dtype, shape or device raise InputError naming the input.

An engine runs one call at a time: calls made from several threads, or on several streams without
synchronizing them, share the arena and must be serialized by the caller (as a TensorRT execution
context must).
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import torch

from trident.compiler import config
from trident.compiler.errors import InputError, TridentError
from trident.compiler.ir import Node, TensorType
from trident.compiler.ir.plan import Layout, Plan
from trident.compiler.ir.shapes import instantiate
from trident.compiler.ops import evaluate
from trident.compiler.ops.common import index_out_of_range
from trident.kernels.loader import default_kernel_dir, load_kernel
from trident.runtime.format import save_engine
from trident.runtime.memory import Arena, MemoryPlan, human_bytes, layout_nbytes, plan_memory
from trident.runtime.streams import DEFAULT_MAX_STREAMS, Schedule, build_schedule, step_ios


def resolve_device(device: torch.device | str | None = None) -> torch.device:
    """The device an engine runs on: `device`, or the GPU if there is one, else the CPU; 'cuda'
    becomes 'cuda:<current>', so devices compare equal to tensors' devices."""
    device = torch.device(device if device is not None else ("cuda" if config.HAS_CUDA else "cpu"))
    if device.type == "cpu" and not config.INTERPRET:
        # (compiled Triton kernels take device pointers: a CPU tensor would fail at launch)
        raise TridentError("an engine on the CPU runs its kernels in Triton's interpreter: set "
                           "TRITON_INTERPRET=1 before importing trident, or put the model and "
                           "its inputs on a CUDA device")
    if device.type not in ("cpu", "cuda"):
        raise TridentError(f"trident runs engines on CUDA devices (or the CPU, in Triton's "
                           f"interpreter), not on {device.type!r}")
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


Sizes = dict  # symbol -> size, for a profiled engine (None for a static one)


@dataclass
class _Bound:
    """The engine at one input shape: layouts, torch-fallback nodes, arena views, and each
    shape-generic kernel's size arguments."""
    sizes: Sizes | None
    layouts: dict[str, Layout]
    nodes: dict[int, Node]
    arena: dict[str, torch.Tensor]
    size_args: dict[int, tuple[int, ...]]


@dataclass
class _Captured:
    graph: "torch.cuda.CUDAGraph"
    inputs: list[torch.Tensor]
    outputs: list[torch.Tensor]


class Engine:
    """A compiled model: `engine(*inputs)` returns the list of its outputs."""

    def __init__(self, plan: Plan, device: torch.device | str | None = None,
                 kernel_dir: Path | None = None, cuda_graph: bool | None = None,
                 streams: int | None = None):
        self.plan = plan
        self.dynamic = plan.dynamic   # DynamicInfo of a profiled build
        # On a GPU the launch sequence is captured once per input shape and replayed.
        self.cuda_graph = config.CUDA_GRAPHS if cuda_graph is None else cuda_graph
        self.device = resolve_device(device)
        self.kernel_dir = kernel_dir or default_kernel_dir()
        self.constants = {name: self._place(t, plan.layouts[name]) for name, t in plan.constants.items()}
        # An output that is a constant (a folded zeros_like, a weight returned as is) is copied:
        # a caller that writes into its result must not change what the next call returns.
        self._copied_outputs = [o in self.constants for o in plan.outputs]
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
        # The arena is planned for the profile's largest shapes (polynomials peak at the max).
        self.memory: MemoryPlan = plan_memory(ios, self.layouts_at(self.max_sizes),
                                              plan.outputs, self.schedule.happens_before)
        self.arena = Arena(self.memory.arena_bytes, self.device)
        self._bound: OrderedDict[tuple | None, _Bound] = OrderedDict()
        self._views: dict[str, tuple[Layout, torch.Tensor]] = {}   # value -> its last arena view
        self._graphs: OrderedDict[tuple | None, _Captured] = OrderedDict()
        self._seen: OrderedDict[tuple | None, int] = OrderedDict()
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
    def captured_shapes(self) -> set[tuple | None]:
        """The sizes (a tuple in the profile's symbol order; None: static) whose launch sequence
        is captured in a CUDA graph."""
        return set(self._graphs)

    @property
    def profile(self):
        """The optimization profile (ir/shapes.py ShapeProfile) of a profiled engine, else None."""
        return self.dynamic.profile if self.dynamic is not None else None

    @property
    def max_sizes(self) -> Sizes | None:
        return self.dynamic.profile.point("max") if self.dynamic is not None else None

    def sizes_key(self, sizes: Sizes | None):
        return None if sizes is None else self.dynamic.key(sizes)

    @property
    def num_streams(self) -> int:
        return self.schedule.num_streams

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the engine. With CUDA graphs, the returned tensors are the engine's own output
        buffers: the next call with the same shapes overwrites them (clone what you keep), as
        with TensorRT bindings."""
        sizes, inputs = self._prepare(inputs)
        if self.cuda_graph and self.device.type == "cuda" and self._worth_capturing(sizes):
            return self._replay(inputs, sizes)
        return self._run(inputs, sizes=sizes)

    def run_steps(self, *inputs: torch.Tensor, on_step=None) -> list[torch.Tensor]:
        """Run eagerly, one step at a time (no CUDA graph): the hook the profiler and the
        layer-wise debugger use. `on_step(index, step, run, env)` stands in for each step: it must
        call `run()` (which runs the step and puts its outputs in `env`) at least once; it may call
        it again (to time it) and read `env` afterwards. Intermediates live in the arena: read a
        step's outputs in its on_step call (a later step may reuse their memory)."""
        sizes, inputs = self._prepare(inputs)
        return self._run(inputs, on_step, sizes=sizes)

    def save(self, path) -> None:
        """Write the engine to one file (runtime/format.py); `trident.load_engine` reads it."""
        save_engine(self.plan, path, self.device,
                    {"cuda_graph": self.cuda_graph, "streams": self.schedule.num_streams,
                     "arena_bytes": self.memory.arena_bytes})

    def input_specs(self, sizes: Sizes | None = None) -> list[tuple[str, tuple[int, ...], torch.dtype]]:
        """(name, shape, dtype) of each input; a profiled engine's at `sizes` ({symbol: size},
        the others at their opt)."""
        specs = []
        for name in self.plan.inputs:
            lay = self.plan.layouts[name]
            shape = tuple(lay.shape)
            if self.dynamic is not None:
                shape = self.dynamic.input_shape(name, {**self.profile.point("opt"), **(sizes or {})})
            specs.append((name, shape, lay.dtype))
        return specs

    def layouts_at(self, sizes: Sizes | None) -> dict[str, Layout]:
        if self.dynamic is None or sizes is None:
            return self.plan.layouts
        return self.dynamic.layouts_at(sizes, self.plan.layouts)

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
    def check_inputs(self, inputs: Sequence) -> Sizes | None:
        """Raise InputError unless `inputs` fit the engine; returns the sizes (profiled engines)."""
        names = self.plan.inputs
        if len(inputs) != len(names):
            raise InputError(f"{self.plan.name}: expected {len(names)} input(s) "
                             f"({self._describe_inputs()}), got {len(inputs)}")
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
            if self.dynamic is None and tuple(x.shape) != tuple(expected.shape):
                raise InputError(f"{where}: expected shape {tuple(expected.shape)}, got "
                                 f"{tuple(x.shape)}")
        return None if self.dynamic is None else self._sizes_of(inputs)

    def _sizes_of(self, inputs: Sequence[torch.Tensor]) -> Sizes:
        """The symbols' sizes the inputs' shapes give (each inside the profile, all consistent)."""
        info = self.dynamic
        sizes: dict[str, int] = {}
        found: dict[str, str] = {}
        for k, (name, x) in enumerate(zip(self.plan.inputs, inputs)):
            where = f'input "{name}" (#{k + 1} of {len(inputs)})'
            template, shape = info.inputs[name], tuple(x.shape)
            if len(shape) != len(template):
                raise InputError(f"{where}: expected shape {info.shape_text(name)} (rank "
                                 f"{len(template)}), got {shape}")
            for dim, (t, size) in enumerate(zip(template, shape)):
                solved = t.solve(size) if not isinstance(t, int) else None
                if solved is None:
                    continue
                symbol, value = solved
                info.profile.check(name, dim, symbol, value, shape)
                if symbol in sizes and sizes[symbol] != value:
                    raise InputError(f"{where}: dim {dim} gives {symbol} = {value}, but "
                                     f"{found[symbol]} gives {symbol} = {sizes[symbol]}")
                sizes[symbol] = value
                found[symbol] = f"{where.split(' (')[0]} dim {dim}"
        for symbol, r in info.profile.symbols.items():
            if symbol not in sizes:
                sizes[symbol] = r.opt  # a static symbol (min == max), or one no input shows
        for k, (name, x) in enumerate(zip(self.plan.inputs, inputs)):
            want = info.input_shape(name, sizes)
            if tuple(x.shape) != want:
                raise InputError(f'input "{name}" (#{k + 1} of {len(inputs)}): expected shape '
                                 f"{info.shape_text(name)} = {want} at "
                                 f"{', '.join(f'{s}={v}' for s, v in sizes.items())}, got "
                                 f"{tuple(x.shape)}")
        return sizes

    def _describe_inputs(self) -> str:
        parts = []
        for name in self.plan.inputs:
            lay = self.plan.layouts[name]
            shape = self.dynamic.shape_text(name) if self.dynamic else str(tuple(lay.shape))
            parts.append(f"{name}: {str(lay.dtype).replace('torch.', '')}{shape}")
        return ", ".join(parts)

    def _prepare(self, inputs: Sequence[torch.Tensor]) -> tuple[Sizes | None, list[torch.Tensor]]:
        """Checked inputs, dense (kernels were generated for dense inputs), and their sizes."""
        sizes = self.check_inputs(inputs)
        return sizes, [x.contiguous() for x in inputs]

    # -- running --------------------------------------------------------------------------------
    def _run(self, inputs: Sequence[torch.Tensor], on_step=None, sizes=None) -> list[torch.Tensor]:
        if sizes is None and self.dynamic is not None:
            sizes = self._sizes_of(inputs)
        if not self._capturing():
            self._check_indices(inputs)
        bound = self._bind(sizes)
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
        return [env[o].clone() if copied else env[o]
                for o, copied in zip(self.plan.outputs, self._copied_outputs)]

    def _check_indices(self, inputs: Sequence[torch.Tensor]) -> None:
        """Token ids index inside their table. Kernels clamp them (no lane reads outside the
        table), so an id out of range is reported here, before every run that is not a CUDA-graph
        replay (reading the values waits for the GPU, which a replay must not)."""
        for k, (name, x) in enumerate(zip(self.plan.inputs, inputs)):
            size = self.plan.index_bounds.get(name)
            bad = None if size is None else index_out_of_range(x, size)
            if bad is not None:
                raise InputError(f'input "{name}" (#{k + 1} of {len(inputs)}): index {bad} is out '
                                 f"of range for a table of {size} rows (expected {-size} .. {size - 1})")

    def _check_gathers(self, step, env: dict, layouts: dict[str, Layout]) -> None:
        """The index tensors a kernel gathers through that the model computes (or holds as
        constants): read back before it launches, as the torch gather does, on runs that are not
        a CUDA-graph replay. The kernel clamps them, so it never reads outside its data."""
        for check in step.index_checks:
            size = layouts[check.data].shape[check.axis]
            bad = index_out_of_range(env[check.indices], size)
            if bad is not None:
                raise InputError(f"{check.node}: index {bad} (of {check.indices!r}) is out of range "
                                 f"for a dim of size {size} (expected {-size} .. {size - 1})")

    def _capturing(self) -> bool:
        return self.device.type == "cuda" and torch.cuda.is_current_stream_capturing()

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

    def _worth_capturing(self, sizes: Sizes | None) -> bool:
        """Static engines capture at once; profiled ones at the second call with a shape."""
        key = self.sizes_key(sizes)
        if key is None or key in self._graphs:
            return True
        self._seen[key] = self._seen.pop(key, 0) + 1
        while len(self._seen) > 4 * config.CUDA_GRAPH_SHAPES:
            self._seen.popitem(last=False)
        return self._seen[key] >= 2

    def _replay(self, inputs: Sequence[torch.Tensor], sizes: Sizes | None) -> list[torch.Tensor]:
        key = self.sizes_key(sizes)
        captured = self._graphs.get(key)
        if captured is None:
            static_inputs = [x.clone() for x in inputs]
            self._run(static_inputs, sizes=sizes)  # compiles every kernel outside the capture
            torch.cuda.synchronize(self.device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph):
                outputs = self._run(static_inputs, sizes=sizes)
            captured = self._graphs[key] = _Captured(graph, static_inputs, outputs)
            while len(self._graphs) > config.CUDA_GRAPH_SHAPES:  # least recently used goes
                self._graphs.popitem(last=False)
        self._graphs.move_to_end(key)
        for static, x in zip(captured.inputs, inputs):
            static.copy_(x)
        captured.graph.replay()
        return list(captured.outputs)

    def _run_step(self, step, launch, env: dict) -> None:
        bound = self._active or self._bind(self._default_sizes())
        k = self._index[id(step)]
        if step.kind == "kernel":
            if step.index_checks and not self._capturing():
                self._check_gathers(step, env, bound.layouts)
            for value in step.outputs:
                if value not in env:
                    env[value] = self._empty(bound.layouts[value])
            if step.sizes:
                launch(*[env[a] for a in step.args], config=self._launch_kwargs[k],
                       sizes=bound.size_args[k])
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
    def _default_sizes(self) -> Sizes | None:
        return self.dynamic.build_sizes if self.dynamic is not None else None

    def _bind(self, sizes: Sizes | None) -> _Bound:
        key = self.sizes_key(sizes)
        bound = self._bound.get(key)
        if bound is None:
            layouts = self.layouts_at(sizes)
            arena = {value: self._arena_view(value, offset, layouts[value], sizes)
                     for value, offset in self.memory.offsets.items()}
            nodes, size_args = {}, {}
            if sizes is not None:
                for k, template in self.dynamic.node_attrs.items():
                    node = self.plan.steps[k].node
                    nodes[k] = Node(node.op, node.inputs, node.outputs,
                                    instantiate(template, sizes), node.name)
                for k, step in enumerate(self.plan.steps):
                    if step.kind == "kernel" and step.sizes:
                        size_args[k] = tuple(sizes[s] for s in step.sizes)
            bound = self._bound[key] = _Bound(sizes, layouts, nodes, arena, size_args)
            while len(self._bound) > 4 * config.CUDA_GRAPH_SHAPES:
                self._bound.popitem(last=False)
        self._bound.move_to_end(key)
        return bound

    def _arena_view(self, value: str, offset: int, lay: Layout, sizes: Sizes | None) -> torch.Tensor:
        """The arena slot of `value` laid out as `lay`. Kept while the layout stays: most values of
        a profiled plan keep theirs at every size, and a decoder binds a new size at every token."""
        kept = self._views.get(value)
        if kept is not None and kept[0] == lay:
            return kept[1]
        if layout_nbytes(lay) > self.memory.buffers[value].size:
            raise TridentError(f"{value} needs more memory at sizes {sizes} than at the "
                               f"profile's max sizes {self.max_sizes}")
        view = self.arena.tensor(offset, lay)
        self._views[value] = (lay, view)
        return view

    def _place(self, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = torch.empty_strided(layout.shape, layout.strides, dtype=layout.dtype, device=self.device)
        out.copy_(tensor)
        return out

    def _empty(self, lay: Layout) -> torch.Tensor:
        return torch.empty_strided(lay.shape, lay.strides, dtype=lay.dtype, device=self.device)

    def _alloc(self, value: str) -> torch.Tensor:
        bound = self._active or self._bind(self._default_sizes())
        return self._empty(bound.layouts[value])
