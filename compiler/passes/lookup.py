"""Producer / consumer lookups over a graph a pattern-matching pass reads (attention, GELU)."""
from __future__ import annotations

from trident.compiler.ir import Graph, Node


class GraphLookup:
    """The graph's producers and consumers, indexed once, and the questions patterns ask of them."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()

    def single_use(self, value: str) -> Node | None:
        """The producer of `value` if only one node reads `value` and it is no graph output."""
        if value in self.graph.outputs or len(self.consumers.get(value, [])) != 1:
            return None
        return self.producers.get(value)

    def scalar(self, value: str) -> float | None:
        """The number of a one-element floating-point constant, else None."""
        tensor = self.graph.constants.get(value)
        if tensor is None or tensor.numel() != 1 or not tensor.dtype.is_floating_point:
            return None
        return float(tensor.reshape(-1)[0])

    def shape(self, value: str) -> tuple:
        return tuple(self.graph.types[value].shape)
