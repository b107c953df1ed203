"""What the generic codegen needs to know about int8 layers (qconv, qmatmul).

An int8 layer is an ordinary anchored group: the conv / GEMM tile runs on int8 operands with an
int32 accumulator (kernels/common.dot_acc), and the epilogue starts with the dequantization

    v0 = acc.to(fp32) * (x_scale * w_scale[n]) + bias[n]

then runs the fused elementwise ops (activation, residual add, ...) in fp32 registers. A
quantize_linear at the end of the epilogue stores int8 for the next int8 layer (prims.quantize:
round half to even, clamp to [-127, 127]), so consecutive int8 layers pass int8 tensors.

Weights are int8 constants, K-major: qmatmul's weight is stored [N, K] in the IR itself; qconv's
weight is packed to [OC, KH, KW, C] by the conv generator like any conv weight.
"""
from __future__ import annotations

from typing import Callable

from trident.compiler.codegen.expr import literal
from trident.compiler.ir import Graph, Node

INT8_ANCHORS = {"qconv": "conv", "qmatmul": "matmul"}


def is_int8_anchor(node: Node) -> bool:
    return node.op in INT8_ANCHORS


def initial_kind(node: Node, graph: Graph) -> tuple[str, str]:
    """The fusion group kind of an int8 layer (the float template it shares), and why."""
    t = graph.types
    if node.inputs[1] not in graph.constants:
        return "torch", "int8 layer with non-constant weights"
    if node.op == "qconv":
        if t[node.inputs[0]].rank != 4:
            return "torch", "int8 conv that is not 2-D"
        return "conv", "int8 anchor"
    if t[node.inputs[0]].rank < 2 or t[node.inputs[0]].rank > 4:
        return "torch", "int8 matmul of a vector or with more than 2 batch dims"
    return "matmul", "int8 anchor"


def weight_strides(anchor: Node, strides: tuple[int, ...]) -> tuple[int, int]:
    """(stride_k, stride_n) of the GEMM's B operand: qmatmul's weight is [N, K] (K-major)."""
    if anchor.op == "qmatmul":
        return strides[-1], strides[-2]
    return strides[-2], strides[-1]


def bias_of(anchor: Node) -> str | None:
    """The bias input of a conv / matmul / qconv / qmatmul anchor, if any."""
    position = 3 if is_int8_anchor(anchor) else 2
    return anchor.inputs[position] if len(anchor.inputs) > position else None


def dequantized(anchor: Node, acc: str, load_channel: Callable[[str], str]) -> str:
    """Expression of an int8 anchor's dequantized accumulator; load_channel(value) emits the load
    of a per-output-channel vector and returns its variable."""
    scale = load_channel(anchor.inputs[2])
    return f"{acc}.to(tl.float32) * ({literal(float(anchor.attrs['x_scale']))} * {scale})"
