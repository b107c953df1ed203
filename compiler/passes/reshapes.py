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

# Rounds until nothing moves. A round sinks every reshape as far as it goes (each node sees the
# reshapes its inputs were given earlier in the same round); what a round leaves is a reshape that
# met another and folds away, letting the next one move on. Transformers need a few rounds.
_MAX_ROUNDS = 16


def _reshape_source(value: str, rb: Rebuild) -> str | None:
    """x, where `value` (a name of the rebuilt graph) is reshape(x)."""
    node = rb.producer(value)
    return node.inputs[0] if node is not None and node.op == "reshape" else None


def _elementwise_inputs(node: Node, out: tuple, rb: Rebuild):
    """New inputs computing `node` on the unreshaped tensor, or None if the rule does not apply."""
    values = [rb.value(i) for i in node.inputs]
    reshaped = [v for v in values if _reshape_source(v, rb) is not None and rb.shape(v) == out]
    if not reshaped:
        return None
    source = _reshape_source(reshaped[0], rb)
    inner = rb.shape(source)
    ins = []
    for value in values:
        shape = rb.shape(value)
        if value == reshaped[0]:
            ins.append(source)
        elif math.prod(shape) == 1:
            ins.append(value)
        elif shape == out:  # a same-shape operand is reshaped to match (a view when dense)
            ins.append(rb.builder.add1("reshape", [value], {"shape": list(inner)}))
        elif shape[-1] == out[-1] == inner[-1] and math.prod(shape) == shape[-1]:
            ins.append(rb.builder.add1("reshape", [value], {"shape": [shape[-1]]}))
        else:
            return None
    return ins


def _matmul_inputs(node: Node, rb: Rebuild):
    a, b = (rb.value(i) for i in node.inputs[:2])
    rest = [rb.value(i) for i in node.inputs[2:]]
    a_src, b_src = _reshape_source(a, rb), _reshape_source(b, rb)
    if a_src is None:
        return None
    a_shape, x_shape = rb.shape(a), rb.shape(a_src)
    # (a source of rank 1 would make the matmul a vector's, which no template takes)
    if len(rb.shape(b)) == 2 and x_shape[-1] == a_shape[-1] and 2 <= len(x_shape) <= 4:
        return [a_src, b] + rest
    if b_src is None:
        return None
    b_shape, y_shape = rb.shape(b), rb.shape(b_src)
    if (x_shape[-2:] == a_shape[-2:] and y_shape[-2:] == b_shape[-2:]
            and x_shape[:-2] == y_shape[:-2] and 3 <= len(x_shape) <= 4):
        return [a_src, b_src] + rest
    return None


# Reductions a reshape does not sink past: an elementwise op that only they read stays after the
# reshape, in their kernel (a norm's squares moved above the reshape left it for the producer's
# epilogue, and an fp16 engine stored them in fp16: past 256 they overflowed, below 2^-12 they
# rounded away).
# (The norms and softmaxes are reductions too, but sinking past a softmax's scale is what the
# attention pattern pass relies on: only the plain reduce_* ops stop it.)
_REDUCTIONS = frozenset(name for name, op in OPS.items() if op.kind == Kind.REDUCTION and name.startswith("reduce_"))


def _only_reduced(value: str, consumers: dict[str, list[Node]]) -> bool:
    users = consumers.get(value, [])
    return bool(users) and all(user.op in _REDUCTIONS for user in users)


def _sink_once(graph: Graph) -> tuple[Graph, bool]:
    changed = False
    consumers = graph.consumers()

    def sink(node: Node, rb: Rebuild):
        nonlocal changed
        out = tuple(graph.types[node.outputs[0]].shape)
        if OPS[node.op].kind == Kind.ELEMENTWISE and len(node.outputs) == 1:
            if _only_reduced(node.outputs[0], consumers):
                return None
            ins = _elementwise_inputs(node, out, rb)
        elif node.op == "matmul":
            ins = _matmul_inputs(node, rb)
        else:
            return None
        if ins is None:
            return None
        changed = True
        inner = rb.builder.add1(node.op, ins, node.attrs, node.name)
        return rb.builder.add("reshape", [inner], {"shape": list(out)}, node.name + "_reshape")

    return rewrite(graph, sink), changed


def fold_reshape_chains(graph: Graph) -> Graph:
    """reshape(reshape(x)) -> reshape(x); a reshape to the shape it already has -> nothing."""
    def fold(node: Node, rb: Rebuild):
        if node.op != "reshape":
            return None
        target = list(graph.types[node.outputs[0]].shape)
        inner = rb.value(node.inputs[0])
        inner_node = rb.producer(inner)
        if inner_node is not None and inner_node.op == "reshape":
            inner = inner_node.inputs[0]
        if list(rb.shape(inner)) == target:
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
