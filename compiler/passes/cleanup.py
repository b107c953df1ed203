"""Constant folding, dead-code elimination, common-subexpression elimination."""
from __future__ import annotations

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.ops import evaluate
from trident.compiler.passes.rewrite import Rebuild, rewrite

# Folding an op that makes a large tensor out of small ones (Expand of a scalar) would bloat the
# engine with a constant that is cheaper to compute: leave those to the kernels.
_MAX_FOLDED_GROWTH = 1 << 16


def _fold(node: Node, rb: Rebuild) -> list[str] | None:
    inputs = [rb.constant(i) for i in node.inputs]
    if not node.inputs or any(t is None for t in inputs):
        return None
    out_types = [rb.source.types[o] for o in node.outputs]
    biggest_in = max(t.numel() for t in inputs)
    if any(t.numel() > max(biggest_in, _MAX_FOLDED_GROWTH) for t in out_types):
        return None
    outs = evaluate(node, inputs, out_types)
    return [rb.builder.constant(o.contiguous(), hint=name) for o, name in zip(outs, node.outputs)]


def fold_constants(graph: Graph) -> Graph:
    """Evaluate every node whose inputs are all constants."""
    return rewrite(graph, _fold)


def remove_identities(graph: Graph) -> Graph:
    """identity nodes (from ONNX Identity/Dropout, or passes) just rename their input."""
    return rewrite(graph, lambda node, rb: [rb.value(node.inputs[0])] if node.op == "identity" else None)


def eliminate_dead_code(graph: Graph) -> Graph:
    """Drop nodes and constants that no graph output depends on."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if any(o in live for o in node.outputs):
            kept.append(node)
            live.update(node.inputs)
    g = graph.copy()
    g.nodes = kept[::-1]
    g.constants = {k: v for k, v in graph.constants.items() if k in live}
    defined = set(g.inputs) | set(g.constants) | {o for n in g.nodes for o in n.outputs}
    g.types = {k: v for k, v in graph.types.items() if k in defined}
    return g


def _attr_key(value):
    if isinstance(value, (list, tuple)):
        return tuple(_attr_key(v) for v in value)
    return value if isinstance(value, (int, float, str, bool, type(None), torch.dtype)) else repr(value)


def _constant_key(tensor: torch.Tensor):
    # Only small constants are compared by value; big ones are kept apart (hashing is costly).
    if tensor.numel() > 64:
        return None
    return (tensor.dtype, tuple(tensor.shape), tuple(tensor.flatten().tolist()))


def eliminate_common_subexpressions(graph: Graph) -> Graph:
    """Merge nodes that compute the same op on the same inputs with the same attributes."""
    const_alias: dict[str, str] = {}
    by_value: dict = {}
    for name, tensor in graph.constants.items():
        key = _constant_key(tensor)
        if key is not None:
            const_alias[name] = by_value.setdefault(key, name)
    seen: dict = {}

    def merge(node: Node, rb: Rebuild) -> list[str] | None:
        inputs = tuple(rb.value(const_alias.get(i, i)) for i in node.inputs)
        key = (node.op, inputs, tuple(sorted((k, _attr_key(v)) for k, v in node.attrs.items())))
        if key in seen:
            return seen[key]
        outs = rb.builder.add(node.op, inputs, node.attrs, node.name, outputs=node.outputs)
        seen[key] = outs
        return outs

    return eliminate_dead_code(rewrite(graph, merge))
