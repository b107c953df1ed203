"""Explicit quantization: ONNX Q/DQ models (onnxruntime's quantize_static with QuantFormat.QDQ,
NVIDIA's toolkits) run as int8 with the scales they carry.

The pattern, per conv / matmul:
    y = Conv(DequantizeLinear(xq, sx, 0), DequantizeLinear(Wq, sw, 0, axis=0), b)
becomes y = qconv(xq, Wq, sw, b; x_scale = sx): the int8 kernel reads xq and the int8 weights and
dequantizes in its epilogue; the QuantizeLinear that makes xq stays, and fusion puts it in the
epilogue of the kernel that produces x. The weight may reach the layer through movement ops
(Gemm's transB becomes a transpose); its scales must then run along the layer's output channels.

It runs first in the int8 pipeline, before constant folding would turn DequantizeLinear(Wq) into
float weights. The int8 kernels are symmetric: a layer whose activation is uint8 or has a non-zero
zero point, or whose weights are not int8 with zero points 0, keeps the dequantized float path
(the Q/DQ pairs run as written, the layer in fp16), with a notice.
"""
from __future__ import annotations

import sys

import torch

from trident.compiler import config
from trident.compiler.ir import Graph, Node
from trident.compiler.ops import evaluate
from trident.compiler.passes.rewrite import Rebuild, rewrite

_WEIGHT_PATH_OPS = ("transpose", "reshape", "identity")


def notice(message: str) -> None:
    if not config.QUIET:
        print(f"trident: {message}", file=sys.stderr)


def _scalar(graph: Graph, value: str):
    t = graph.constants.get(value)
    return None if t is None or t.numel() != 1 else t.reshape(())


def _zero_point_ok(graph: Graph, node: Node) -> str | None:
    """None if node's (a dequantize_linear) zero point is int8 and all zero, else why not."""
    if len(node.inputs) > 2:
        zp = graph.constants.get(node.inputs[2])
        if zp is None:
            return "a non-constant zero point"
        if zp.dtype != torch.int8:
            return f"{str(zp.dtype).replace('torch.', '')} quantization"
        if bool((zp != 0).any()):
            return f"zero point {zp.flatten()[0].item()} (asymmetric)"
    elif graph.types[node.inputs[0]].dtype != torch.int8:
        return f"{str(graph.types[node.inputs[0]].dtype).replace('torch.', '')} quantization"
    return None


def _activation(graph: Graph, producers, value: str):
    """(int8 value, scale) of a per-tensor symmetric DequantizeLinear feeding a layer, or why not."""
    dq = producers.get(value)
    if dq is None or dq.op != "dequantize_linear":
        return None, None
    if graph.types[dq.inputs[0]].dtype != torch.int8:
        return None, f"activation is {graph.types[dq.inputs[0]].dtype}, not int8"
    scale = _scalar(graph, dq.inputs[1])
    if scale is None:
        return None, "activation scale is not one constant"
    why = _zero_point_ok(graph, dq)
    if why:
        return None, f"activation has {why}"
    return (dq.inputs[0], float(scale.float())), None


def _weight(graph: Graph, producers, value: str, out_axis: int):
    """(int8 weight, fp32 per-output-channel scale) behind a layer's weight input, or why not."""
    path = []
    node = producers.get(value)
    while node is not None and node.op in _WEIGHT_PATH_OPS:
        path.append(node)
        node = producers.get(node.inputs[0])
    if node is None or node.op != "dequantize_linear":
        return None, None
    wq, scale = graph.constants.get(node.inputs[0]), graph.constants.get(node.inputs[1])
    if wq is None or scale is None:
        return None, "weights or their scales are not constants"
    if wq.dtype != torch.int8:
        return None, f"weights are {wq.dtype}, not int8"
    why = _zero_point_ok(graph, node)
    if why:
        return None, f"weights have {why}"
    # Carry the scales through the movement ops alongside the weights, as a full-size tensor.
    axis = node.attrs.get("axis", 1) % wq.dim()
    full = scale.float().reshape([-1 if d == axis else 1 for d in range(wq.dim())]) \
        if scale.numel() > 1 else scale.float().reshape([1] * wq.dim())
    w, s = wq.float(), full.expand(wq.shape).contiguous()
    for step in reversed(path):
        w, s = evaluate(step, [w])[0], evaluate(step, [s])[0]
    dims = [d for d in range(w.dim()) if d != out_axis]
    lo, hi = s.amin(dim=dims), s.amax(dim=dims)
    if not torch.equal(lo, hi):
        return None, "weight scales do not run along the output channels"
    return (w.round().to(torch.int8), hi.contiguous()), None


def fold_qdq_into_layers(graph: Graph) -> Graph:
    """conv / matmul between DequantizeLinear nodes -> qconv / qmatmul (see the module docstring)."""
    producers = graph.producers()

    def fold(node: Node, rb: Rebuild):
        if node.op not in ("conv", "matmul"):
            return None
        act, why = _activation(graph, producers, node.inputs[0])
        if act is None and why is None:
            return None  # not a quantized layer
        out_axis = 0 if node.op == "conv" else 1
        weight, wwhy = _weight(graph, producers, node.inputs[1], out_axis)
        why = why or wwhy
        if weight is None and why is None:
            why = "weights are not dequantized int8 constants"
        if why is None and node.op == "conv" and graph.types[node.inputs[0]].rank != 4:
            why = "not a 2-D convolution"
        if why is None and node.op == "matmul" and (weight[0].dim() != 2
                                                    or not 2 <= graph.types[node.inputs[0]].rank <= 4):
            why = "not a matmul by a 2-D weight"
        if why is not None:
            notice(f'layer "{node.name or node.outputs[0]}": {why}; it runs on the dequantized '
                   f"float path (int8 kernels need symmetric int8 with zero points 0)")
            return None
        (xq, x_scale), (wq, w_scale) = act, weight
        if node.op == "matmul":
            wq = wq.t().contiguous()  # stored K-major: [N, K]
        ins = [rb.value(xq), rb.builder.constant(wq, f"{node.inputs[1]}_int8"),
               rb.builder.constant(w_scale, f"{node.inputs[1]}_wscale")]
        ins += [rb.value(i) for i in node.inputs[2:]]
        attrs = dict(node.attrs, x_scale=x_scale, dtype=graph.types[node.outputs[0]].dtype)
        return rb.builder.add("qconv" if node.op == "conv" else "qmatmul", ins, attrs, node.name)

    from trident.compiler.passes.cleanup import eliminate_dead_code
    return eliminate_dead_code(rewrite(graph, fold))
