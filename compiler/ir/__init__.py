"""trident's IR: one Node type, a Graph of named values, typed tensors (the graph the passes
rewrite); ir/plan.py holds the launch plan codegen lowers it to, which the runtime runs.

Values are named by strings (as in ONNX): a value is a graph input, a constant, or the output of
exactly one node. Nodes are kept in topological order. Passes build new graphs rather than
mutating shared ones, so any stage can be dumped and compared with the next.
"""
from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from typing import Iterable

import torch

from trident.compiler.errors import TridentError, where
from trident.compiler.ops import get_op, infer_types
from trident.compiler.types import (DTYPE_NAMES, FLOAT_DTYPES, SUPPORTED_DTYPES, Dim, Node,
                                    TensorType)


@dataclass
class Graph:
    nodes: list[Node]
    inputs: list[str]
    outputs: list[str]
    types: dict[str, TensorType]
    constants: dict[str, torch.Tensor] = field(default_factory=dict)
    name: str = "graph"

    # -- queries ---------------------------------------------------------------------------
    def producers(self) -> dict[str, Node]:
        return {out: node for node in self.nodes for out in node.outputs}

    def consumers(self) -> dict[str, list[Node]]:
        users: dict[str, list[Node]] = {}
        for node in self.nodes:
            for name in dict.fromkeys(node.inputs):
                users.setdefault(name, []).append(node)
        return users

    def is_constant(self, value: str) -> bool:
        return value in self.constants

    def copy(self) -> "Graph":
        return Graph([Node(n.op, n.inputs, n.outputs, dict(n.attrs), n.name) for n in self.nodes],
                     list(self.inputs), list(self.outputs), dict(self.types), dict(self.constants),
                     self.name)

    # -- checks and printing ----------------------------------------------------------------
    def verify(self) -> None:
        """Raise TridentError if the graph breaks an IR invariant (SSA, topological order, types)."""
        defined = set(self.inputs) | set(self.constants)
        if len(defined) != len(self.inputs) + len(self.constants):
            raise TridentError("a graph input is also a constant")
        for name in defined:
            if name not in self.types:
                raise TridentError(f'value "{name}" has no type')
        for node in self.nodes:
            get_op(node.op, node)
            for i in node.inputs:
                if i not in defined:
                    raise TridentError(f'{where(node)}: input "{i}" is used before it is defined')
            for o in node.outputs:
                if o in defined:
                    raise TridentError(f'{where(node)}: output "{o}" is defined twice')
                defined.add(o)
            expected = infer_types(node, [self.types[i] for i in node.inputs])
            got = [self.types.get(o) for o in node.outputs]
            if expected != got:
                raise TridentError(f"{where(node)}: recorded output types "
                                   f"{[str(t) for t in got]} differ from inferred "
                                   f"{[str(t) for t in expected]}")
        for o in self.outputs:
            if o not in defined:
                raise TridentError(f'graph output "{o}" is never defined')

    def __str__(self) -> str:
        lines = [f"graph {self.name}("
                 + ", ".join(f"{i}: {self.types[i]}" for i in self.inputs) + ") {"]
        for name, t in self.constants.items():
            lines.append(f"  const {name}: {TensorType.of(t)}")
        for node in self.nodes:
            types = ", ".join(str(self.types[o]) for o in node.outputs)
            label = f"  # {node.name}" if node.name else ""
            lines.append(f"  {node}  -> {types}{label}")
        lines.append(f"  return {', '.join(self.outputs)}")
        lines.append("}")
        return "\n".join(lines)


class GraphBuilder:
    """Builds a Graph node by node, inferring each output's type as it goes.

    Frontends and passes both use it, so every graph that leaves one is typed and ordered.
    """

    def __init__(self, name: str = "graph"):
        self.graph = Graph([], [], [], {}, {}, name)
        self._counter = itertools.count()
        self._used: set[str] = set()

    def fresh(self, hint: str = "v") -> str:
        hint = hint or "v"
        name = hint
        while name in self._used:
            name = f"{hint}_{next(self._counter)}"
        self._used.add(name)
        return name

    def reserve(self, names: Iterable[str]) -> None:
        self._used.update(names)

    def input(self, name: str, ttype: TensorType) -> str:
        self._used.add(name)
        self.graph.inputs.append(name)
        self.graph.types[name] = ttype
        return name

    def constant(self, tensor: torch.Tensor, hint: str = "const") -> str:
        name = self.fresh(hint)
        self.graph.constants[name] = tensor
        self.graph.types[name] = TensorType.of(tensor)
        return name

    def add(self, op: str, inputs: Iterable[str], attrs: dict | None = None, name: str = "",
            outputs: Iterable[str] | None = None) -> list[str]:
        """Append one node; returns the names of its outputs."""
        inputs = tuple(inputs)
        node = Node(op, inputs, (), dict(attrs or {}), name)
        out_types = infer_types(node, [self.graph.types[i] for i in inputs])
        if outputs is None:
            base = name or op
            outputs = [self.fresh(base if len(out_types) == 1 else f"{base}.{k}")
                       for k in range(len(out_types))]
        else:
            outputs = list(outputs)
            self.reserve(outputs)
        node.outputs = tuple(outputs)
        for o, t in zip(outputs, out_types):
            self.graph.types[o] = t
        self.graph.nodes.append(node)
        return list(outputs)

    def add1(self, op: str, inputs: Iterable[str], attrs: dict | None = None, name: str = "") -> str:
        (out,) = self.add(op, inputs, attrs, name)
        return out

    def type_of(self, value: str) -> TensorType:
        return self.graph.types[value]

    def finish(self, outputs: Iterable[str]) -> Graph:
        self.graph.outputs = list(outputs)
        return self.graph


__all__ = ["DTYPE_NAMES", "FLOAT_DTYPES", "SUPPORTED_DTYPES", "Dim", "Graph", "GraphBuilder", "Node",
           "TensorType"]
