"""Batched matmuls with more than two batch dims, as matmuls with one.

The matmul templates take at most two batch dims; LongT5's local attention (blocks of queries
against blocks of keys, [batch, blocks, heads, rows, d]) and lowered einsums make more. When both
operands have the same batch dims, or one of them has none (all ones), the batch dims are one:
each operand is reshaped to [batch, rows, cols] (a view when it is dense), the product reshaped
back. Batch dims that broadcast against each other otherwise stay one node, which runs in torch.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

MAX_RANK = 4  # two batch dims: what the templates take (compiler/fusion.py)


def flatten_matmul_batches(graph: Graph) -> Graph:
    def flatten(node: Node, rb: Rebuild):
        if node.op != "matmul" or len(node.inputs) != 2:
            return None
        a, b = (graph.types[v] for v in node.inputs)
        out = graph.types[node.outputs[0]]
        if max(a.rank, b.rank) <= MAX_RANK or min(a.rank, b.rank) < 2 or \
                not all(t.is_static for t in (a, b, out)):
            return None
        batch_a, batch_b = tuple(a.shape[:-2]), tuple(b.shape[:-2])
        ones_a, ones_b = math.prod(batch_a) == 1, math.prod(batch_b) == 1
        if not (batch_a == batch_b or ones_a or ones_b):
            return None
        def as_3d(value: str, shape: tuple, unbatched: bool) -> str:
            rows = list(shape[-2:]) if unbatched else [math.prod(shape[:-2]), *shape[-2:]]
            return rb.builder.add1("reshape", [rb.value(value)], {"shape": rows}, name=node.name)
        product = rb.builder.add1("matmul", [as_3d(node.inputs[0], a.shape, ones_a and not ones_b),
                                             as_3d(node.inputs[1], b.shape, ones_b and not ones_a)],
                                  dict(node.attrs), name=node.name)
        return rb.builder.add("reshape", [product], {"shape": list(out.shape)}, node.name,
                              outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, flatten))


__all__ = ["flatten_matmul_batches"]
