"""Precision lowering: run the network's float math in fp16 (fp32 accumulation inside kernels).

Graph inputs and outputs keep the types the model declares (as TensorRT keeps I/O in fp32 unless
told otherwise): casts are inserted at the boundary, and fusion folds them into the first and last
kernels.
"""
from __future__ import annotations

import torch

from trident.compiler.ir import Graph, GraphBuilder

_LOW = {"fp16": torch.float16, "bf16": torch.bfloat16}
# The inputs that stay fp32. Quantization parameters: their precision is what the int8 scheme is
# built on. A resample's tables (its weights; the indices are integers): its kernel mixes in fp32.
_KEEP_FP32_INPUTS = {"quantize_linear": slice(1, 2), "dequantize_linear": slice(1, 2),
                     "qconv": slice(2, 3), "qmatmul": slice(2, 3), "resample": slice(1, None)}

# Elementwise arithmetic whose 0-dim fp32 operand may stay fp32 beside fp16 tensors (ops/inference.py)
_ARITHMETIC = {"add", "sub", "mul", "div", "maximum", "minimum"}


def lower_precision(graph: Graph, precision: str = "fp16") -> Graph:
    low = _LOW[precision]
    b = GraphBuilder(graph.name)
    b.reserve(graph.types)
    rename: dict[str, str] = {}
    keep = {name for node in graph.nodes
            for name in node.inputs[_KEEP_FP32_INPUTS.get(node.op, slice(0))]}
    keep |= exact_scalars(graph, low)
    for name in graph.inputs:
        b.input(name, graph.types[name])
        if graph.types[name].dtype == torch.float32:
            rename[name] = b.add1("cast", [name], {"dtype": low}, name=f"{name}_{precision}")
    for name, tensor in graph.constants.items():
        if tensor.dtype == torch.float32 and name not in keep:
            tensor = _to_low(tensor, low)
        b.graph.constants[name] = tensor
        b.graph.types[name] = type(graph.types[name]).of(tensor)
    for node in graph.nodes:
        attrs = dict(node.attrs)
        if attrs.get("dtype") == torch.float32:
            attrs["dtype"] = low
        outs = b.add(node.op, [rename.get(i, i) for i in node.inputs], attrs, node.name,
                     outputs=node.outputs)
        if node.op == "dequantize_linear" and b.type_of(outs[0]).dtype != low:
            rename[outs[0]] = b.add1("cast", outs, {"dtype": low}, name=f"{node.name}_{precision}")
    outputs = []
    for name in graph.outputs:
        value = rename.get(name, name)
        if b.type_of(value).dtype != graph.types[name].dtype:
            value = b.add1("cast", [value], {"dtype": graph.types[name].dtype}, name=f"{name}_out")
        outputs.append(value)
    return b.finish(outputs)


def exact_scalars(graph: Graph, low: torch.dtype) -> set[str]:
    """The 0-dim fp32 constants that stay fp32: those only arithmetic on float tensors reads (an
    RMSNorm's epsilon, a scale). As torch computes `x16 + eps` with eps in fp32, whatever x's
    dtype, the kernels compute with the model's value (a literal in their fp32 registers), and
    the result keeps the tensor's dtype. In fp16 GLM-4's 1.5625e-7 would be 1.79e-7 (subnormal:
    3 steps of 6e-8), 14% off, and an RMSNorm of a 1e-6 variance 0.8% off; 1e-12 would be 0.
    A value past `low`'s range is clamped as other constants are (_to_low): a mask scale of 1e6
    or fp32's minimum kept exact would give products that overflow `low` once stored."""
    consumers = graph.consumers()
    top = torch.finfo(low).max
    return {name for name, tensor in graph.constants.items()
            if tensor.dtype == torch.float32 and tensor.dim() == 0 and name in consumers
            and bool(tensor.abs() <= top)
            and all(_reads_beside_a_tensor(node, name, graph) for node in consumers[name])}


def _reads_beside_a_tensor(node, scalar: str, graph: Graph) -> bool:
    """Is `node` arithmetic in which `scalar` meets a float tensor (whose dtype the result keeps)?"""
    return node.op in _ARITHMETIC and any(v != scalar and graph.types[v].rank > 0
                                          and graph.types[v].dtype.is_floating_point for v in node.inputs)


def _to_low(tensor: torch.Tensor, low: torch.dtype) -> torch.Tensor:
    """An fp32 constant in `low`, its finite values past `low`'s range clamped to its largest finite
    ones (as TensorRT clamps weights), not rounded to inf: a mask scale such as transformers 4.x
    Funnel's INF = 1e6 stays a huge number, so `1e6 * (1 - mask)` is 0 where the mask is 1, where
    inf would give inf * 0 = NaN. Infinities and NaN stay what they are."""
    top = torch.finfo(low).max
    return torch.where(tensor.isfinite(), tensor.clamp(-top, top), tensor).to(low)

