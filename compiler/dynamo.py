"""The torch.compile backend: `torch.compile(model, backend="trident")`.

Registered through the `torch_dynamo_backends` entry point (pyproject.toml), so torch finds it
without trident being imported first.

Dynamo hands the backend an fx graph of torch functions (parameters and buffers lifted to
placeholders) and example inputs. The graph is partitioned with torch's
CapabilityBasedPartitioner: maximal subgraphs of nodes the fx frontend converts
(`supported_fx_target`) become trident engines; every other node stays in torch, between them.
Each partition builds its engine lazily, at its first call with a new input signature (shapes,
dtypes, device), and keeps one engine per signature. A partition with symbolic sizes (dynamic=True,
torch._dynamo.mark_dynamic) builds one engine with an optimization profile over them
(compiler/dynamo_shapes.py) that serves every size in range; `engines_built` counts its builds.
Weights are baked into the engines at their first call (as any inference compiler does).

Options (`torch.compile(model, backend="trident", options={...})`):
  precision   "fp32" (the default everywhere in trident: eager's numerics) | "fp16"
  cuda_graph  True (default): engines replay CUDA graphs on a GPU; their outputs are cloned
              before they are handed to torch, so later calls never overwrite them
  fallback    True (default): a partition trident cannot build (an unusual argument, say) runs in
              torch, with a warning; False raises the TridentError instead
  min_nodes   1: partitions with fewer compute nodes stay in torch
"""
from __future__ import annotations

import warnings
from typing import Any, Sequence

import torch
import torch.fx
from torch.utils._pytree import tree_flatten, tree_unflatten

from trident.compiler import config as _config  # (also: Triton's interpreter without CUDA)
from trident.compiler.dynamo_shapes import build_options, fits, symbolic_inputs
from trident.compiler.errors import TridentError

DEFAULTS = {"precision": _config.DEFAULT_PRECISION, "cuda_graph": True, "fallback": True, "min_nodes": 1}
_NON_COMPUTE = ["_operator.getitem", "operator.getitem"]


def trident_backend(gm: torch.fx.GraphModule, example_inputs: Sequence, **kwargs):
    """A torch.compile backend: returns a callable that runs `gm` with trident engines."""
    options = dict(DEFAULTS)
    options.update(kwargs.get("options") or {})
    unknown = set(options) - set(DEFAULTS)
    if unknown:
        raise TridentError(f"trident backend: unknown option(s) {sorted(unknown)}; known: "
                           f"{sorted(DEFAULTS)}")
    if options["precision"] not in ("fp32", "fp16"):
        raise TridentError(f"trident backend: precision must be 'fp32' or 'fp16', got "
                           f"{options['precision']!r}")
    split = partition(gm)
    if split is None:
        return gm.forward
    weights = _weight_placeholders(gm, example_inputs)
    placeholders = {n.name: n for n in split.graph.nodes if n.op == "placeholder"}
    for node in split.graph.nodes:
        if node.op != "call_module" or not node.target.startswith("fused_"):
            continue
        sub = split.get_submodule(node.target)
        if _compute_nodes(sub) < options["min_nodes"]:
            continue
        weight_args = [isinstance(a, torch.fx.Node) and a.op == "placeholder"
                       and a.name in weights and a.name in placeholders for a in node.args]
        setattr(split, node.target, TridentSubgraph(sub, weight_args, options))
    split.recompile()
    return split


def partition(gm: torch.fx.GraphModule) -> torch.fx.GraphModule | None:
    """`gm` with every maximal supported subgraph fused into a `fused_<k>` submodule (None if
    nothing is supported)."""
    from torch.fx.passes.infra.partitioner import CapabilityBasedPartitioner
    from torch.fx.passes.operator_support import OperatorSupport

    from trident.compiler.frontend.fx import supported_fx_target

    class Support(OperatorSupport):
        def is_node_supported(self, submodules, node: torch.fx.Node) -> bool:
            return node.op in ("call_function", "call_method", "call_module") and \
                supported_fx_target(node)

    partitioner = CapabilityBasedPartitioner(gm, Support(), allows_single_node_partition=True,
                                             non_compute_ops=_NON_COMPUTE)
    partitions = partitioner.propose_partitions()
    if not partitions:
        return None
    return partitioner.fuse_partitions(partitions)


def _compute_nodes(gm: torch.fx.GraphModule) -> int:
    return sum(n.op in ("call_function", "call_method", "call_module")
               and str(getattr(n.target, "__name__", n.target)) != "getitem"
               for n in gm.graph.nodes)


def _weight_placeholders(gm: torch.fx.GraphModule, example_inputs: Sequence) -> set[str]:
    """Names of `gm`'s placeholders that are model weights (lifted parameters and buffers)."""
    from trident.compiler.frontend.fx import user_input_indices

    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    users = set(user_input_indices(gm, example_inputs))
    return {n.name for i, (n, x) in enumerate(zip(placeholders, example_inputs))
            if isinstance(x, torch.Tensor) and i not in users}


def _signature(args: Sequence) -> tuple:
    key = []
    for a in args:
        if isinstance(a, torch.Tensor):
            key.append((tuple(a.shape), a.dtype, a.device))
        elif isinstance(a, (int, float, bool)):
            key.append(("value", a))
        else:
            key.append(("other", type(a).__name__))
    return tuple(key)


_FALLBACK = object()


class TridentSubgraph(torch.nn.Module):
    """Runs one supported partition: a trident engine per input signature (built lazily)."""

    def __init__(self, gm: torch.fx.GraphModule, weight_args: list[bool], options: dict):
        super().__init__()
        self.gm = gm
        self.weight_args = weight_args
        self.options = options
        self.engines: dict[tuple, Any] = {}
        self.symbolic = symbolic_inputs(gm)   # dynamic sizes: one engine serves them all
        self.engines_built = 0
        output = next(n for n in gm.graph.nodes if n.op == "output")
        leaves, self._out_spec = tree_flatten(output.args[0])
        self._num_outputs = len(leaves)

    def forward(self, *args):
        # An inference engine computes no gradients (and Triton's interpreter reads raw data).
        args = tuple(a.detach() if isinstance(a, torch.Tensor) else a for a in args)
        entry = self._dynamic_entry(args) if self.symbolic else None
        if entry is None:
            key = _signature(args)
            entry = self.engines.get(key)
            if entry is None:
                entry = self.engines[key] = self._build(args)
        if entry is _FALLBACK:
            return self.gm(*args)
        engine, keep = entry
        outs = engine(*[args[i] for i in keep])
        if engine.cuda_graph and engine.device.type == "cuda":
            outs = [o.clone() for o in outs]  # the engine's buffers: the next replay rewrites them
        return tree_unflatten(list(outs), self._out_spec)

    def _dynamic_entry(self, args: Sequence):
        """The engine with a profile over the symbolic sizes that fits `args` (built if none
        does); None to fall back to one engine per concrete signature."""
        entries = self.engines.setdefault(self.symbolic.key(args), [])
        sizes = self.symbolic.symbols_of(args)
        for entry in entries:
            if entry is _FALLBACK or fits(entry[0], sizes):
                return entry
        entry = self._build(args, **build_options(self.symbolic, args))
        if entry is _FALLBACK and not entries:
            self.symbolic = None  # no profile: engines per concrete size, as for static graphs
            return None
        entries.append(entry)
        return entry

    def _build(self, args: Sequence, **profile):
        from trident.compiler import build_engine
        from trident.compiler.frontend.fx import user_input_indices

        def example(a, is_weight: bool):
            if is_weight and isinstance(a, torch.Tensor) and not isinstance(a, torch.nn.Parameter):
                return torch.nn.Parameter(a, requires_grad=False)  # marks it a weight for import_fx
            return a

        examples = [example(a, w) for a, w in zip(args, self.weight_args + [False] * len(args))]
        devices = {a.device for a in args if isinstance(a, torch.Tensor)}
        device = next(iter(devices)) if len(devices) == 1 else None
        try:
            keep = user_input_indices(self.gm, examples)
            with torch.inference_mode(False), torch.no_grad():
                engine = build_engine(self.gm, precision=self.options["precision"],
                                      example_inputs=examples, device=device, **profile)
            self.engines_built += 1
            if len(engine.outputs) != self._num_outputs:
                raise TridentError(f"the engine has {len(engine.outputs)} outputs, the "
                                   f"partition {self._num_outputs}")
            engine.cuda_graph = bool(self.options["cuda_graph"])
        except TridentError as e:
            if not self.options["fallback"]:
                raise
            warnings.warn(f"trident backend: a partition runs in torch: {e}", stacklevel=2)
            return _FALLBACK
        return engine, keep


__all__ = ["trident_backend", "partition", "TridentSubgraph"]
