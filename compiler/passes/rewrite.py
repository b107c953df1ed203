"""The one way passes change a graph: replay its nodes through a GraphBuilder.

A pass gives a function that, for each node, either returns None (keep the node as is) or emits
replacement nodes into the builder and returns the names that stand for the node's outputs.
Types are re-inferred for every emitted node, so a pass cannot leave a stale type behind.
"""
from __future__ import annotations

from typing import Callable

from trident.compiler.ir import Graph, GraphBuilder, Node

Rewriter = Callable[[Node, "Rebuild"], list[str] | None]


class Rebuild:
    def __init__(self, graph: Graph):
        self.source = graph
        self.builder = GraphBuilder(graph.name)
        self.builder.reserve(graph.types)
        self.rename: dict[str, str] = {}
        self.consumers = graph.consumers()
        for name in graph.inputs:
            self.builder.input(name, graph.types[name])
        for name, tensor in graph.constants.items():
            self.builder.graph.constants[name] = tensor
            self.builder.graph.types[name] = graph.types[name]
        self._producers: dict[str, Node] = {}  # of the new graph, indexed up to _indexed nodes
        self._indexed = 0

    def value(self, name: str) -> str:
        """The name in the new graph of value `name` of the old graph."""
        return self.rename.get(name, name)

    def producer(self, name: str) -> Node | None:
        """The node of the new graph that defines value `name` (None: an input or a constant)."""
        nodes = self.builder.graph.nodes
        for node in nodes[self._indexed:]:
            self._producers.update((o, node) for o in node.outputs)
        self._indexed = len(nodes)
        return self._producers.get(name)

    def shape(self, name: str) -> tuple:
        """The shape of value `name` of the new graph."""
        return tuple(self.builder.type_of(name).shape)

    def constant(self, name: str):
        """The tensor of a constant of the new graph, or None."""
        return self.builder.graph.constants.get(self.value(name))

    def emit(self, node: Node, inputs: list[str] | None = None, attrs: dict | None = None,
             op: str | None = None) -> list[str]:
        ins = [self.value(i) for i in node.inputs] if inputs is None else inputs
        return self.builder.add(op or node.op, ins, node.attrs if attrs is None else attrs,
                                node.name, outputs=None)


def rewrite(graph: Graph, rewriter: Rewriter) -> Graph:
    rb = Rebuild(graph)
    for node in graph.nodes:
        outs = rewriter(node, rb)
        if outs is None:
            outs = rb.builder.add(node.op, [rb.value(i) for i in node.inputs], node.attrs,
                                  node.name, outputs=node.outputs)
        rb.rename.update({old: new for old, new in zip(node.outputs, outs) if old != new})
    return rb.builder.finish([rb.value(o) for o in graph.outputs])
