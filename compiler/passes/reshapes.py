"""Undo the exporters' reshapes around matmuls, so fusion sees through them.

torch.export writes a linear layer on [B, S, K] as view [B*S, K] -> addmm -> view [B, S, N], and a
batched attention matmul as reshape [B*H, S, D] -> bmm -> reshape [B, H, S, T]. The reshapes hide
the real operands: an activation after the view cannot join the matmul's epilogue, and reshaping a
transposed [B, H, S, D] to [B*H, S, D] costs a copy. This pass moves reshapes *down*, past
elementwise ops and matmuls (which compute the same thing on the unreshaped tensors), until they
meet and cancel.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.ops import OPS, Kind
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

_MAX_ROUNDS = 16  # each round moves every reshape down by one op


def _reshape_source(value: str, producers: dict[str, Node]) -> str | None:
    node = producers.get(value)
    return node.inputs[0] if node is not None and node.op == "reshape" else None


def _shape(graph: Graph, value: str) -> tuple:
    return tuple(graph.types[value].shape)


def _elementwise_inputs(node: Node, graph: Graph, producers, rb: Rebuild):
    """New inputs computing `node` on the unreshaped tensor, or None if the rule does not apply."""
    out = _shape(graph, node.outputs[0])
    reshaped = [i for i in node.inputs if _reshape_source(i, producers) is not None
                and _shape(graph, i) == out]
    if not reshaped:
        return None
    source = _reshape_source(reshaped[0], producers)
    inner = _shape(graph, source)
    ins = []
    for value in node.inputs:
        shape = _shape(graph, value)
        if value == reshaped[0]:
            ins.append(rb.value(source))
        elif math.prod(shape) == 1:
            ins.append(rb.value(value))
        elif shape == out:  # a same-shape operand is reshaped to match (a view when dense)
            ins.append(rb.builder.add1("reshape", [rb.value(value)], {"shape": list(inner)}))
        elif shape[-1] == out[-1] == inner[-1] and math.prod(shape) == shape[-1]:
            ins.append(rb.builder.add1("reshape", [rb.value(value)], {"shape": [shape[-1]]}))
        else:
            return None
    return ins


def _matmul_inputs(node: Node, graph: Graph, producers, rb: Rebuild):
    a, b = node.inputs[:2]
    a_src, b_src = _reshape_source(a, producers), _reshape_source(b, producers)
    if a_src is None:
        return None
    a_shape, x_shape = _shape(graph, a), _shape(graph, a_src)
    # (a source of rank 1 would make the matmul a vector's, which no template takes)
    if graph.types[b].rank == 2 and x_shape[-1] == a_shape[-1] and 2 <= len(x_shape) <= 4:
        return [rb.value(a_src)] + [rb.value(i) for i in node.inputs[1:]]
    if b_src is None:
        return None
    b_shape, y_shape = _shape(graph, b), _shape(graph, b_src)
    if (x_shape[-2:] == a_shape[-2:] and y_shape[-2:] == b_shape[-2:]
            and x_shape[:-2] == y_shape[:-2] and 3 <= len(x_shape) <= 4):
        return [rb.value(a_src), rb.value(b_src)] + [rb.value(i) for i in node.inputs[2:]]
    return None


def _sink_once(graph: Graph) -> tuple[Graph, bool]:
    producers = graph.producers()
    changed = False

    def sink(node: Node, rb: Rebuild):
        nonlocal changed
        if OPS[node.op].kind == Kind.ELEMENTWISE and len(node.outputs) == 1:
            ins = _elementwise_inputs(node, graph, producers, rb)
        elif node.op == "matmul":
            ins = _matmul_inputs(node, graph, producers, rb)
        else:
            return None
        if ins is None:
            return None
        changed = True
        inner = rb.builder.add1(node.op, ins, node.attrs, node.name)
        return rb.builder.add("reshape", [inner], {"shape": list(_shape(graph, node.outputs[0]))},
                              node.name + "_reshape")

    return rewrite(graph, sink), changed


def fold_reshape_chains(graph: Graph) -> Graph:
    """reshape(reshape(x)) -> reshape(x); a reshape to the shape it already has -> nothing."""
    def fold(node: Node, rb: Rebuild):
        if node.op != "reshape":
            return None
        target = list(_shape(graph, node.outputs[0]))
        inner = rb.value(node.inputs[0])
        inner_node = rb.producer(inner)
        if inner_node is not None and inner_node.op == "reshape":
            inner = inner_node.inputs[0]
        if list(rb.builder.type_of(inner).shape) == target:
            return [inner]
        return rb.builder.add("reshape", [inner], {"shape": target}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))


def sink_in_rounds(graph: Graph, sink_once, fold_chains) -> Graph:
    """Each round moves every movable view down by one op, then folds the views that met."""
    for _ in range(_MAX_ROUNDS):
        graph, changed = sink_once(graph)
        graph = fold_chains(graph)
        if not changed:
            break
    return graph


def sink_reshapes(graph: Graph) -> Graph:
    return sink_in_rounds(graph, _sink_once, fold_reshape_chains)
