"""A torch function or Tensor method with no converter of its own, imported through torch's own
decomposition of it.

dynamo and symbolic_trace hand the frontend torch-level calls (`F.glu`, `F.mish`,
`Tensor.broadcast_to`, `torch.logsumexp`, `F.pixel_shuffle` ...), while torch.export's graphs are
decomposed to the core ATen set, which the converter table covers. So a call without a converter
is traced once, alone, to core ATen (`make_fx` over fake tensors of its inputs' shapes and dtypes,
torch's core decompositions, functionalized so that no op writes in place) and, when every op of
that small graph has a converter, imported op by op: the call fuses like any other, and its
meaning is torch's own. Anything else (an op without a converter, a random op, data-dependent
shapes, a symbolic size) leaves the call in torch.

The traced graph depends only on the target, the non-tensor arguments and the tensors' shapes and
dtypes; it is cached on those, so the partitioner's question and the importer's answer trace once.
"""
from __future__ import annotations

import operator
import warnings
from typing import Any, Callable

import torch
import torch.fx
from torch.fx.experimental.proxy_tensor import make_fx
from torch.utils._pytree import tree_flatten, tree_unflatten

_CACHE: dict[Any, torch.fx.GraphModule | None] = {}
_CACHE_LIMIT = 512


def traced_call(kind: str, target, args, kwargs, meta_of: Callable[[Any], torch.Tensor | None],
                supported: Callable[[Any], bool]):
    """(graph, leaves): `target` called on `args`/`kwargs` as a core-ATen fx graph whose
    placeholders take `leaves` (the tensor arguments, in order), or None when it cannot be
    imported so. `meta_of` maps an argument to a meta tensor of its shape and dtype, or None for a
    non-tensor; it raises LookupError for a tensor whose shape is not static."""
    if kind == "call_method" and (target.startswith("_") or target.endswith("_")):
        return None  # in place, or private (fx_mutation makes writes explicit; a fallback must not hide one)
    if kind == "call_function" and not _public_torch_function(target):
        return None  # (vmap's and dynamo's internals change global state when called)
    flat, spec = tree_flatten((args, kwargs))
    try:
        metas = [meta_of(a) for a in flat]
    except LookupError:
        return None
    slots = [i for i, m in enumerate(metas) if m is not None]
    if not slots:
        return None
    key = _key(kind, target, flat, metas)
    if key not in _CACHE:
        if len(_CACHE) >= _CACHE_LIMIT:
            _CACHE.clear()
        _CACHE[key] = _trace(kind, target, flat, spec, slots, [metas[i] for i in slots], supported)
    graph = _CACHE[key]
    return None if graph is None else (graph, [flat[i] for i in slots])


_TORCH_MODULES = ("torch", "torch.functional", "torch.nn.functional", "torch._C._nn",
                  "torch.special", "torch._C._special", "torch.linalg", "torch._C._linalg",
                  "torch._ops.aten")


def _public_torch_function(target) -> bool:
    """One of torch's public functions or an aten op: what the decomposition table knows."""
    name = getattr(target, "__name__", "")
    return (getattr(target, "__module__", None) in _TORCH_MODULES and bool(name)
            and not name.startswith("_"))


def _key(kind, target, flat, metas):
    parts = []
    for a, m in zip(flat, metas):
        if m is not None:
            parts.append(("tensor", tuple(m.shape), m.dtype))
        elif isinstance(a, (int, float, bool, str, type(None), torch.dtype, torch.device,
                            torch.memory_format, torch.layout)):
            parts.append((type(a).__name__, a))
        else:
            parts.append(("object", id(a)))  # (an unusual argument: cached per object)
    return kind, target, tuple(parts)


def _trace(kind, target, flat, spec, slots, metas, supported) -> torch.fx.GraphModule | None:
    def call(*tensors):
        leaves = list(flat)
        for i, t in zip(slots, tensors):
            leaves[i] = t
        args, kwargs = tree_unflatten(leaves, spec)
        if kind == "call_method":
            return getattr(torch.Tensor, target)(*args, **kwargs)
        return target(*args, **kwargs)

    table = torch._decomp.core_aten_decompositions()
    table.pop(torch.ops.aten.scaled_dot_product_attention.default, None)  # one attention node
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            graph = make_fx(torch.func.functionalize(call), decomposition_table=table,
                            tracing_mode="real")(*metas)
    except Exception:  # noqa: BLE001  (torch refuses many calls in many ways: stay in torch)
        return None
    _on_the_cpu(graph)
    return graph if _importable(graph, supported) else None


def _on_the_cpu(graph: torch.fx.GraphModule) -> None:
    """Tensors the decomposition makes from nothing (aten.full, aten.scalar_tensor) were traced on
    the meta device; the importer folds them, on the CPU as its other constants."""
    meta = torch.device("meta")
    for node in graph.graph.nodes:
        if node.kwargs.get("device") == meta:
            node.kwargs = {**node.kwargs, "device": torch.device("cpu")}


def _importable(graph: torch.fx.GraphModule, supported: Callable[[Any], bool]) -> bool:
    for node in graph.graph.nodes:
        if node.op in ("placeholder", "output", "get_attr"):
            continue
        if node.op != "call_function":
            return False
        if node.target is operator.getitem or not node.all_input_nodes:
            continue  # (an item of a result; a tensor made from nothing: folded at import)
        schema = getattr(node.target, "_schema", None)
        if schema is not None and (schema.is_mutable or _is_random(node.target)):
            return False
        if not supported(node.target):
            return False
    return True


def _is_random(target) -> bool:
    return torch.Tag.nondeterministic_seeded in getattr(target, "tags", ())


__all__ = ["traced_call"]
