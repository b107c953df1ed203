"""Row-wise normalizations over rows longer than a kernel's tile, as looped reductions.

The softmax / layer-norm / RMS-norm kernels hold a whole row in registers, up to group_kinds.MAX_ROW
elements; longer rows ran in torch. Those are common: PoolFormer's group norm with one group
normalizes C x H x W (200,704 values at 224 x 224), a diffusion U-Net's 32-group norms 40,960 and
more. Sums, means and maxima loop over rows of any length (group_kinds.LOOPED_REDUCTIONS), so this pass
writes such a node as those reductions and the elementwise ops between them, in fp32 whatever the
model's precision (the casts fuse into the kernels):
- layer norm: mean, then the mean of the squared deviations (two passes: no cancellation);
- RMS norm: the mean of the squares;
- softmax / log-softmax: the maximum, then the sum of exp(x - max).
"""
from __future__ import annotations

import torch

from trident.compiler.group_kinds import MAX_ROW, reduction_length
from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

_ROWWISE = ("layer_norm", "rms_norm", "softmax", "log_softmax")


def loop_long_rows(graph: Graph) -> Graph:
    def lower(node: Node, rb: Rebuild):
        if node.op not in _ROWWISE or not _static(node, graph) or \
                reduction_length(node, graph) <= MAX_ROW:
            return None
        return _Rows(node, graph, rb).lower()

    return eliminate_dead_code(rewrite(graph, lower))


def _static(node: Node, graph: Graph) -> bool:
    return all(graph.types[v].is_static for v in list(node.inputs) + list(node.outputs))


class _Rows:
    """Emits one row-wise node as looped reductions and elementwise ops."""

    def __init__(self, node: Node, graph: Graph, rb: Rebuild):
        self.node, self.rb, self.b = node, rb, rb.builder
        x = graph.types[node.inputs[0]]
        self.dtype, rank = x.dtype, x.rank
        axis = node.attrs.get("axis", -1) % rank
        self.axes = [axis] if node.op in ("softmax", "log_softmax") else list(range(axis, rank))

    def op(self, op: str, *inputs: str, **attrs) -> str:
        return self.b.add1(op, list(inputs), attrs, name=self.node.name)

    def scalar(self, value: float) -> str:
        return self.b.constant(torch.tensor(value, dtype=torch.float32), f"{self.node.name}.scalar")

    def reduce(self, op: str, v: str) -> str:
        return self.op(op, v, axes=self.axes, keepdims=True)

    def lower(self) -> list[str]:
        n = self.node
        x = self.op("cast", self.rb.value(n.inputs[0]), dtype=torch.float32)
        y = getattr(self, "_" + n.op)(x)
        if n.op in ("layer_norm", "rms_norm"):
            y = self.op("mul", y, self.op("cast", self.rb.value(n.inputs[1]), dtype=torch.float32))
        if n.op == "layer_norm" and len(n.inputs) > 2:
            y = self.op("add", y, self.op("cast", self.rb.value(n.inputs[2]), dtype=torch.float32))
        return self.b.add("cast", [y], {"dtype": self.dtype}, n.name, outputs=n.outputs)

    def _layer_norm(self, x: str) -> str:
        centred = self.op("sub", x, self.reduce("reduce_mean", x))
        var = self.reduce("reduce_mean", self.op("mul", centred, centred))
        return self.op("div", centred, self._root(var))

    def _rms_norm(self, x: str) -> str:
        return self.op("div", x, self._root(self.reduce("reduce_mean", self.op("mul", x, x))))

    def _root(self, mean_square: str) -> str:
        return self.op("sqrt", self.op("add", mean_square, self.scalar(self.node.attrs.get("epsilon", 1e-5))))

    def _softmax(self, x: str) -> str:
        e = self.op("exp", self.op("sub", x, self.reduce("reduce_max", x)))
        return self.op("div", e, self.reduce("reduce_sum", e))

    def _log_softmax(self, x: str) -> str:
        shifted = self.op("sub", x, self.reduce("reduce_max", x))
        total = self.reduce("reduce_sum", self.op("exp", shifted))
        return self.op("sub", shifted, self.op("log", total))


__all__ = ["loop_long_rows"]
