"""Rewrites that fold parameters into anchors: Conv+BatchNorm, bias adds into conv/matmul."""
from __future__ import annotations

import torch

from trident.compiler.ir import Node
from trident.compiler.passes.rewrite import Rebuild, rewrite


def fold_conv_batch_norm(graph):
    """conv -> batch_norm with constant parameters becomes one conv with scaled weights and bias."""
    producers = graph.producers()
    consumers = graph.consumers()

    def fold(node: Node, rb: Rebuild):
        if node.op != "batch_norm":
            return None
        conv = producers.get(node.inputs[0])
        params = [rb.constant(i) for i in node.inputs[1:]]
        if (conv is None or conv.op != "conv" or any(p is None for p in params)
                or len(consumers.get(conv.outputs[0], [])) != 1 or conv.outputs[0] in graph.outputs):
            return None
        weight = rb.constant(conv.inputs[1])
        if weight is None:
            return None
        scale, shift, mean, var = (p.double() for p in params)
        factor = scale / torch.sqrt(var + node.attrs.get("epsilon", 1e-5))
        bias = rb.constant(conv.inputs[2]).double() if len(conv.inputs) > 2 else torch.zeros_like(mean)
        w = (weight.double() * factor.reshape(-1, *[1] * (weight.dim() - 1))).to(weight.dtype)
        b = ((bias - mean) * factor + shift).to(weight.dtype)
        ins = [rb.value(conv.inputs[0]), rb.builder.constant(w, conv.inputs[1] + "_bn"),
               rb.builder.constant(b, conv.name + "_bias")]
        return rb.builder.add("conv", ins, conv.attrs, conv.name)

    # The conv feeding a folded BN is now dead; DCE removes it.
    from trident.compiler.passes.cleanup import eliminate_dead_code
    return eliminate_dead_code(rewrite(graph, fold))


def decompose_batch_norm(graph):
    """A batch_norm left over (not after a conv) is a per-channel multiply-add: fusable pointwise."""
    def decompose(node: Node, rb: Rebuild):
        if node.op != "batch_norm":
            return None
        params = [rb.constant(i) for i in node.inputs[1:]]
        if any(p is None for p in params):
            return None
        scale, shift, mean, var = (p.double() for p in params)
        rank = rb.source.types[node.inputs[0]].rank
        factor = scale / torch.sqrt(var + node.attrs.get("epsilon", 1e-5))
        dtype = rb.source.types[node.inputs[0]].dtype
        shape = (-1,) + (1,) * (rank - 2)
        mul = rb.builder.constant(factor.reshape(shape).to(dtype), node.name + "_scale")
        add = rb.builder.constant((shift - mean * factor).reshape(shape).to(dtype), node.name + "_shift")
        y = rb.builder.add1("mul", [rb.value(node.inputs[0]), mul], name=node.name + "_mul")
        return rb.builder.add("add", [y, add], name=node.name)

    return rewrite(graph, decompose)


def _channel_bias(tensor: torch.Tensor | None, channels: int, axis_from_end: int):
    """The per-channel vector if `tensor` broadcasts only along one channel axis, else None."""
    if tensor is None or tensor.numel() != channels:
        return None
    shape = list(tensor.shape)
    if len(shape) < axis_from_end or shape[-axis_from_end] != channels:
        return None
    return tensor.reshape(channels)


def fold_bias_into_anchor(graph):
    """conv(x, w) + per-channel constant -> conv(x, w, b); matmul(a, W) + row vector -> matmul(a, W, b).

    The bias then lives with the weights (TensorRT's fused bias), and the epilogue reads it once.
    """
    producers = graph.producers()
    consumers = graph.consumers()

    def fold(node: Node, rb: Rebuild):
        if node.op != "add":
            return None
        for anchor_in, bias_in in (node.inputs, node.inputs[::-1]):
            anchor = producers.get(anchor_in)
            if (anchor is None or anchor.op not in ("conv", "matmul") or len(anchor.inputs) > 2
                    or len(consumers.get(anchor_in, [])) != 1 or anchor_in in graph.outputs
                    or rb.constant(anchor.inputs[1]) is None):
                continue
            out_type = rb.source.types[node.outputs[0]]
            if out_type != rb.source.types[anchor_in]:
                continue  # the add broadcasts the anchor's output: not a bias
            if anchor.op == "conv":
                channels, axis = rb.source.types[anchor.inputs[1]].shape[0], out_type.rank - 1
            else:
                channels, axis = out_type.shape[-1], 1
            bias = _channel_bias(rb.constant(bias_in), channels, axis)
            if bias is None:
                continue
            ins = [rb.value(i) for i in anchor.inputs] + [rb.builder.constant(bias, bias_in)]
            return rb.builder.add(anchor.op, ins, anchor.attrs, anchor.name)
        return None

    from trident.compiler.passes.cleanup import eliminate_dead_code
    return eliminate_dead_code(rewrite(graph, fold))


def fold_pad_into_conv(graph):
    """conv(pad(x)) with zeros added on spatial dims only -> conv(x) with those pads added to its
    own: the TF-style 'same' padding of exported EfficientNets, no separate copy of the input."""
    producers = graph.producers()

    def fold(node: Node, rb: Rebuild):
        pad = producers.get(node.inputs[0]) if node.op == "conv" else None
        if pad is None or pad.op != "pad" or not _zero_spatial_pad(pad, graph):
            return None
        rank = graph.types[pad.inputs[0]].rank
        spatial = rank - 2
        extra = pad.attrs["pads"]
        pads = list(node.attrs["pads"])
        for d in range(spatial):
            pads[d] += extra[2 + d]
            pads[spatial + d] += extra[rank + 2 + d]
        ins = [rb.value(pad.inputs[0])] + [rb.value(i) for i in node.inputs[1:]]
        return rb.builder.add("conv", ins, dict(node.attrs, pads=pads), node.name)

    from trident.compiler.passes.cleanup import eliminate_dead_code
    return eliminate_dead_code(rewrite(graph, fold))


def _zero_spatial_pad(pad: Node, graph) -> bool:
    rank = graph.types[pad.inputs[0]].rank
    p = pad.attrs["pads"]
    return (pad.attrs.get("mode", "constant") == "constant" and pad.attrs.get("value", 0) == 0
            and all(v >= 0 for v in p) and not any(p[d] or p[rank + d] for d in (0, 1)))
