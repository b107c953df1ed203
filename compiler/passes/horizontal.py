"""Horizontal fusion: sibling matmuls that read the same input become one wider matmul.

A transformer's Q, K and V projections read the same hidden states with different weights;
concatenating the weights along N gives one launch with better tile occupancy. The split after it
is free: its outputs are views into the wide result.
"""
from __future__ import annotations

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.rewrite import Rebuild, rewrite


def _sibling_key(node: Node, graph: Graph):
    """Matmuls can merge when they share the input, and have constant 2-D weights (and biases)."""
    if node.op != "matmul" or node.inputs[1] not in graph.constants:
        return None
    weight = graph.constants[node.inputs[1]]
    if weight.dim() != 2 or any(i not in graph.constants for i in node.inputs[2:]):
        return None
    return (node.inputs[0], weight.shape[0], weight.dtype, len(node.inputs))


def merge_sibling_matmuls(graph: Graph) -> Graph:
    families: dict = {}
    for node in graph.nodes:
        key = _sibling_key(node, graph)
        if key is not None:
            families.setdefault(key, []).append(node)
    leader_of = {}
    for members in families.values():
        if len(members) > 1:
            for m in members:
                leader_of[id(m)] = members
    if not leader_of:
        return graph
    done: dict[int, list[str]] = {}

    def merge(node: Node, rb: Rebuild):
        members = leader_of.get(id(node))
        if members is None:
            return None
        if id(members[0]) not in done:
            weights = [graph.constants[m.inputs[1]] for m in members]
            ins = [rb.value(node.inputs[0]),
                   rb.builder.constant(torch.cat(weights, dim=1), "+".join(m.inputs[1] for m in members))]
            if len(node.inputs) > 2:
                biases = [graph.constants[m.inputs[2]] for m in members]
                ins.append(rb.builder.constant(torch.cat(biases), "+".join(m.inputs[2] for m in members)))
            name = "+".join(m.name or m.outputs[0] for m in members)
            wide = rb.builder.add1("matmul", ins, {}, name)
            rank = graph.types[node.outputs[0]].rank
            sizes = tuple(w.shape[1] for w in weights)
            outs = rb.builder.add("split", [wide], {"axis": rank - 1, "sizes": sizes}, name + "_split")
            for m, out in zip(members, outs):
                done[id(m)] = [out]
        return done[id(node)]

    return rewrite(graph, merge)
