"""The reference executor: runs any IR graph on the CPU with torch. The oracle of every test."""
from __future__ import annotations

from typing import Sequence

import torch

from trident.compiler.errors import InputError, TridentError, where
from trident.compiler.ir import Graph
from trident.compiler.ops import evaluate


def check_inputs(graph: Graph, inputs: Sequence[torch.Tensor]) -> dict[str, int]:
    """Check count, rank, dtype and static dims of `inputs`; returns the bound symbolic dims."""
    if len(inputs) != len(graph.inputs):
        raise InputError(f"{graph.name}: expected {len(graph.inputs)} inputs "
                         f"({', '.join(graph.inputs)}), got {len(inputs)}")
    symbols: dict[str, int] = {}
    for name, x in zip(graph.inputs, inputs):
        expected = graph.types[name]
        if not isinstance(x, torch.Tensor):
            raise InputError(f'input "{name}": expected a torch.Tensor, got {type(x).__name__}')
        if x.dtype != expected.dtype:
            raise InputError(f'input "{name}": expected dtype {expected.dtype}, got {x.dtype}')
        if x.dim() != expected.rank:
            raise InputError(f'input "{name}": expected shape {expected}, got rank {x.dim()} '
                             f"{tuple(x.shape)}")
        for axis, (want, got) in enumerate(zip(expected.shape, x.shape)):
            if isinstance(want, str):
                if symbols.setdefault(want, got) != got:
                    raise InputError(f'input "{name}": dim {axis} ("{want}") is {got}, but '
                                     f"another input bound it to {symbols[want]}")
            elif want != got:
                raise InputError(f'input "{name}": expected shape {expected}, got '
                                 f"{tuple(x.shape)} (dim {axis})")
    return symbols


def run_reference(graph: Graph, inputs: Sequence[torch.Tensor],
                  keep_all: bool = False) -> list[torch.Tensor] | dict[str, torch.Tensor]:
    """Evaluate `graph` on `inputs`; returns the outputs, or every value by name if keep_all."""
    check_inputs(graph, inputs)
    env: dict[str, torch.Tensor] = dict(graph.constants)
    env.update(zip(graph.inputs, inputs))
    for node in graph.nodes:
        try:
            outs = evaluate(node, [env[i] for i in node.inputs],
                            [graph.types[o] for o in node.outputs])
        except TridentError:
            raise
        except (RuntimeError, ValueError, IndexError) as e:
            raise TridentError(f"{where(node)}: reference evaluation failed: {e}") from None
        env.update(zip(node.outputs, outs))
    if keep_all:
        return env
    return [env[o] for o in graph.outputs]
