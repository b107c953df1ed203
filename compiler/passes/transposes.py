"""Move transposes below the elementwise ops that follow them, so those ops join a matmul's epilogue.

ConvNeXt ends each block with Linear -> permute(0, 3, 1, 2) -> layer scale (gamma [C, 1, 1]) ->
residual add. The permute (a view) between the matmul and the multiply keeps the multiply and the
add out of the matmul's epilogue: they run as a kernel of their own, reading the matmul's output
through the permutation. An elementwise op computes the same thing on the unpermuted tensor when
its other operands are read through the inverse permutation:

    f(transpose(a, p), b) == transpose(f(a, transpose(b, inverse(p))), p)

so the transpose moves below the op; repeated, it ends below the last elementwise op (or meets
another transpose and the two compose, or cancel). A constant operand is permuted here, at compile
time (gamma [C, 1, 1] becomes [C], broadcast over the last dim); any other operand gets a transpose
(a view: the residual input is read with permuted strides). Only transposes of values a matmul
epilogue computes (its output, through elementwise ops) move: those are the ones an epilogue can
take over, and leaving the others in place keeps the patterns later passes look for (attention's
head splits) intact. An op moves its transpose only when its other operands then leave nothing to
move back (see `_settles`), so the rounds converge.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.ops import OPS, Kind
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.reshapes import sink_in_rounds
from trident.compiler.passes.rewrite import Rebuild, rewrite

# Elementwise ops whose operands broadcast along a named axis, not right-aligned: a permutation
# would move that axis.
_AXIS_BROADCAST = {"batch_norm", "quantize_linear", "dequantize_linear"}


def inverse(perm: list[int]) -> list[int]:
    inv = [0] * len(perm)
    for i, p in enumerate(perm):
        inv[p] = i
    return inv


def _is_elementwise(node: Node | None) -> bool:
    return (node is not None and OPS[node.op].kind == Kind.ELEMENTWISE and len(node.outputs) == 1
            and node.op not in _AXIS_BROADCAST)


def _matmul_results(graph: Graph) -> set[str]:
    """Values computed from a matmul's output by elementwise ops alone (the matmul's included):
    the values a matmul epilogue could produce."""
    found: set[str] = set()
    for node in graph.nodes:
        if node.op == "matmul" or (_is_elementwise(node) and any(i in found for i in node.inputs)):
            found.update(node.outputs)
    return found


def _movable_transpose(value: str, producers: dict[str, Node], consumers,
                       epilogue_values: set[str]) -> Node | None:
    """The transpose producing `value` if it may sink: of a value a matmul epilogue computes, and
    read by nothing else (a second reader would still need the permuted tensor)."""
    node = producers.get(value)
    if node is None or node.op != "transpose" or len(consumers.get(value, [])) != 1:
        return None
    return node if node.inputs[0] in epilogue_values else None


def _settles(value: str, graph: Graph, perm: list[int], producers, epilogue_values) -> bool:
    """Whether reading operand `value` through the inverse of `perm` leaves nothing to sink back:
    a scalar, a constant, the same transpose (the two cancel), or a value no matmul epilogue
    computes (its new transpose is not movable). Otherwise two operands would trade the
    transpose back and forth."""
    if math.prod(_shape(graph, value)) == 1 or graph.is_constant(value):
        return True
    node = producers.get(value)
    if node is not None and node.op == "transpose":
        return list(node.attrs["perm"]) == perm
    return value not in epilogue_values


def _shape(graph: Graph, value: str) -> tuple:
    return tuple(graph.types[value].shape)


def _unpermuted_operand(value: str, graph: Graph, inv: list[int], rb: Rebuild) -> str:
    """Operand `value` (broadcasting against the op's output) read through permutation `inv`."""
    shape = _shape(graph, value)
    if math.prod(shape) == 1:
        return rb.value(value)  # a scalar broadcasts the same in every layout
    rank = len(inv)
    padded = (1,) * (rank - len(shape)) + shape
    constant = rb.constant(value)
    if constant is not None:  # permuted now, leading unit dims dropped (they broadcast anyway)
        moved = constant.reshape(padded).permute(inv)
        while moved.dim() > 1 and moved.shape[0] == 1:
            moved = moved.squeeze(0)
        return rb.builder.constant(moved.contiguous(), value)
    source = rb.value(value)
    if len(shape) < rank:
        source = rb.builder.add1("reshape", [source], {"shape": list(padded)})
    return rb.builder.add1("transpose", [source], {"perm": inv})


def _sink_once(graph: Graph) -> tuple[Graph, bool]:
    producers, consumers = graph.producers(), graph.consumers()
    epilogue_values = _matmul_results(graph)
    changed = False

    def sink(node: Node, rb: Rebuild):
        nonlocal changed
        if not _is_elementwise(node):
            return None
        out = _shape(graph, node.outputs[0])
        moved = [i for i in node.inputs if _shape(graph, i) == out
                 and _movable_transpose(i, producers, consumers, epilogue_values) is not None]
        if not moved:
            return None
        transpose = producers[moved[0]]
        perm = list(transpose.attrs["perm"])
        if not all(_settles(i, graph, perm, producers, epilogue_values)
                   for i in node.inputs if i != moved[0]):
            return None
        inv = inverse(perm)
        ins = []
        for value in node.inputs:
            if value == moved[0]:
                ins.append(rb.value(transpose.inputs[0]))
            else:
                ins.append(_unpermuted_operand(value, graph, inv, rb))
        changed = True
        inner = rb.builder.add1(node.op, ins, node.attrs, node.name)
        return rb.builder.add("transpose", [inner], {"perm": perm}, node.name + "_transpose")

    return rewrite(graph, sink), changed


def fold_transpose_chains(graph: Graph) -> Graph:
    """transpose(transpose(x, p), q) -> transpose(x, p∘q); the identity permutation -> nothing."""
    def fold(node: Node, rb: Rebuild):
        if node.op != "transpose":
            return None
        perm = list(node.attrs["perm"])
        inner = rb.value(node.inputs[0])
        inner_node = rb.producer(inner)
        if inner_node is not None and inner_node.op == "transpose":
            first = list(inner_node.attrs["perm"])
            perm = [first[p] for p in perm]
            inner = inner_node.inputs[0]
        if perm == list(range(len(perm))):
            return [inner]
        return rb.builder.add("transpose", [inner], {"perm": perm}, node.name)

    return eliminate_dead_code(rewrite(graph, fold))


def sink_transposes(graph: Graph) -> Graph:
    return sink_in_rounds(graph, _sink_once, fold_transpose_chains)


def matmul_rows_in_order(graph: Graph) -> Graph:
    """matmul(transpose(x, p), W) -> transpose(matmul(x, W), p) for a 2-D W and a p that keeps
    the last (K) dim last: the GEMM then walks x's rows in memory order, one GEMM over all of
    them, where the permuted rows (torch's nn.MultiheadAttention turns a batch-first input
    sequence-first before its input projection) could not be walked with one stride and made it
    a batched GEMM of a few rows per batch entry. The transpose, now of a matmul result, sinks
    further (sink_transposes) or stays a view."""
    producers = graph.producers()

    def hoist(node: Node, rb: Rebuild):
        if node.op != "matmul" or len(_shape(graph, node.inputs[1])) != 2:
            return None
        transpose = producers.get(node.inputs[0])
        if transpose is None or transpose.op != "transpose":
            return None
        perm = list(transpose.attrs["perm"])
        if perm[-1] != len(perm) - 1:
            return None  # K moves: not a reordering of rows
        ins = [rb.value(transpose.inputs[0])] + [rb.value(i) for i in node.inputs[1:]]
        rows = rb.builder.add1("matmul", ins, node.attrs, node.name)
        return rb.builder.add("transpose", [rows], {"perm": perm}, node.name + "_rows")

    return eliminate_dead_code(rewrite(graph, hoist))
