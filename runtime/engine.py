"""The Engine: runs a compiled Program's steps in order on one device."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence

import torch

from trident.compiler import config
from trident.compiler.codegen import load_kernel
from trident.compiler.codegen.program import Layout, Program
from trident.compiler.errors import InputError
from trident.compiler.ops import evaluate
from trident.compiler.reference import check_inputs


def default_device() -> torch.device:
    return torch.device("cuda" if config.HAS_CUDA else "cpu")


def _normalize(device: torch.device | str) -> torch.device:
    """'cuda' -> 'cuda:0' (the current device), so devices compare equal to tensors' devices."""
    device = torch.device(device)
    if device.type == "cuda" and device.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return device


class Engine:
    """A compiled model: `engine(*inputs)` returns the list of its outputs."""

    def __init__(self, program: Program, device: torch.device | str | None = None,
                 kernel_dir: Path | None = None, cuda_graph: bool = True):
        self.program = program
        # On a GPU the launch sequence is captured once and replayed (no per-kernel Python cost).
        self.cuda_graph = cuda_graph
        self._graph = None
        self.device = _normalize(device if device is not None else default_device())
        self.kernel_dir = kernel_dir or config.CACHE_DIR / "kernels"
        self.constants = {name: self._place(t, program.layouts[name])
                          for name, t in program.constants.items()}
        self.launchers = [load_kernel(s.kernel, self.kernel_dir).launch if s.kind == "kernel" else None
                          for s in program.steps]

    # -- public -------------------------------------------------------------------------------
    @property
    def graph(self):
        return self.program.graph

    @property
    def num_kernels(self) -> int:
        """Kernel launches per run: generated kernels plus ops that run through torch."""
        return sum(s.kind in ("kernel", "torch") for s in self.program.steps)

    def __call__(self, *inputs: torch.Tensor) -> list[torch.Tensor]:
        """Run the engine. With CUDA graphs, the returned tensors are the engine's own output
        buffers: the next call overwrites them (clone what you keep), as with TensorRT bindings."""
        inputs = self._prepare(inputs)
        if self.cuda_graph and self.device.type == "cuda":
            return self._replay(inputs)
        return self._run(inputs)

    def _run(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        env = dict(self.constants)
        env.update(zip(self.graph.inputs, inputs))
        for step, launch in zip(self.program.steps, self.launchers):
            self._run_step(step, launch, env)
        return [env[o] for o in self.graph.outputs]

    def _replay(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        if self._graph is None:
            self._static_inputs = [x.clone() for x in inputs]
            self._run(self._static_inputs)  # compiles every kernel outside the capture
            torch.cuda.synchronize(self.device)
            self._graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(self._graph):
                self._static_outputs = self._run(self._static_inputs)
        for static, x in zip(self._static_inputs, inputs):
            static.copy_(x)
        self._graph.replay()
        return list(self._static_outputs)

    # -- internals ----------------------------------------------------------------------------
    def _place(self, tensor: torch.Tensor, layout: Layout) -> torch.Tensor:
        out = torch.empty_strided(layout.shape, layout.strides, dtype=layout.dtype, device=self.device)
        out.copy_(tensor)
        return out

    def _prepare(self, inputs: Sequence[torch.Tensor]) -> list[torch.Tensor]:
        check_inputs(self.graph, inputs)
        ready = []
        for name, x in zip(self.graph.inputs, inputs):
            if x.device != self.device:
                raise InputError(f'input "{name}": expected a tensor on {self.device}, got one on '
                                 f"{x.device}")
            ready.append(x.contiguous())  # kernels were generated for dense inputs
        return ready

    def _alloc(self, value: str) -> torch.Tensor:
        lay = self.program.layouts[value]
        return torch.empty_strided(lay.shape, lay.strides, dtype=lay.dtype, device=self.device)

    def _run_step(self, step, launch, env: dict) -> None:
        if step.kind == "kernel":
            outs = [self._alloc(v) for v in step.outputs]
            env.update(zip(step.outputs, outs))
            launch(*[env[a] for a in step.kernel.args], config=step.kernel.config)
        elif step.kind == "view":
            source = env[step.inputs[0]]
            for value in step.outputs:
                lay = self.program.layouts[value]
                env[value] = source.as_strided(lay.shape, lay.strides, source.storage_offset() + lay.offset)
        else:
            node = step.group.nodes[0]
            outs = evaluate(node, [env[i] for i in node.inputs],
                            [self.graph.types[o] for o in node.outputs])
            for value, out in zip(node.outputs, outs):
                lay = self.program.layouts[value]
                if tuple(out.stride()) != lay.strides and out.numel() > 1:
                    fixed = self._alloc(value)
                    fixed.copy_(out)
                    out = fixed
                env[value] = out
