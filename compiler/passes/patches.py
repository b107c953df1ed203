"""Patch embeddings as a GEMM over the image's (or the video's) patches (and transposed convs
whose kernel is their stride as a GEMM writing one block per pixel: `lower_patch_conv_transposes`).

A vision transformer's stem (ViT, DeiT, DINOv2, CLIP, Swin) and ConvNeXt's cut the image into
p x q patches and project each one: a conv whose kernel equals its stride, without padding, over
an input of a few channels (video transformers cut t x p x q tubelets with a 3-D one). The conv
templates run it as an implicit GEMM whose K loop gathers 3-channel pieces of image rows; on the
H200 (fp16, the input cast fused) that took 45 us at ViT-B/16's 32 x 3 x 224^2 and 165 us at
DINOv2's 8 x 3 x 518^2, where torch's copy of the patches into rows plus cuBLAS took 36 and 86
(docs/performance.md, "Patch embeddings").

This pass writes the conv as what it is: the patches, reshaped and transposed into rows
[N * Ho * Wo, C * p * q] (one copy of the image, which the input's cast joins), times the weight
[C * p * q, OC] with the conv's bias, the product viewed back as the NCHW output. That is the
layout the conv stored (NHWC), and the transformer's flatten-and-transpose of it is a view.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

# Inputs of this many channels or fewer: image stems. Wider inputs (ConvNeXt's 2 x 2 downsampling
# convs over 96-384 channels) read whole channel rows per tap, which the conv tile does well.
MAX_PATCH_CHANNELS = 4


def _constant_weight(node: Node, graph: Graph, rb: Rebuild, op: str, ranks=(4,)):
    """The weight of an `op` node of static shapes whose input has one of `ranks` (4: 2-D), if it
    is a constant of the input's rank; else None."""
    if node.op != op:
        return None
    rank = graph.types[node.inputs[0]].rank
    if rank not in ranks:
        return None
    if not all(graph.types[v].is_static for v in (node.inputs[0], node.outputs[0])):
        return None
    weight = rb.constant(node.inputs[1])
    return weight if weight is not None and weight.dim() == rank else None


def _patch_conv_weight(node: Node, graph: Graph, rb: Rebuild):
    """The constant weight of a 2-D or 3-D conv (video transformers' tubelets: VideoMAE, ViViT)
    that cuts its input into patches, else None."""
    weight = _constant_weight(node, graph, rb, "conv", ranks=(4, 5))
    if weight is None:
        return None
    c, *sizes = graph.types[node.inputs[0]].shape[1:]
    kernel = list(weight.shape[2:])
    a = node.attrs
    patches = (a.get("groups", 1) == 1 and list(a["strides"]) == kernel and not any(a["pads"])
               and list(a["dilations"]) == [1] * len(kernel) and math.prod(kernel) > 1
               and c <= MAX_PATCH_CHANNELS and all(s % k == 0 for s, k in zip(sizes, kernel)))
    return weight if patches else None


def lower_patch_convs(graph: Graph) -> Graph:
    """conv with kernel == stride (no padding, few input channels) -> patches as rows @ weight."""
    def lower(node: Node, rb: Rebuild):
        weight = _patch_conv_weight(node, graph, rb)
        if weight is None:
            return None
        n, c, *sizes = graph.types[node.inputs[0]].shape
        oc, kernel = weight.shape[0], list(weight.shape[2:])
        counts = [s // k for s, k in zip(sizes, kernel)]    # patches along each spatial dim
        dims = len(kernel)
        b = rb.builder
        split = [n, c] + [v for count, k in zip(counts, kernel) for v in (count, k)]
        x = b.add1("reshape", [rb.value(node.inputs[0])], {"shape": split}, name=node.name + "_patches")
        # [n, count_1, ..., count_d, c, k_1, ..., k_d]: a patch's values last, in the weight's order
        perm = [0] + [2 + 2 * i for i in range(dims)] + [1] + [3 + 2 * i for i in range(dims)]
        x = b.add1("transpose", [x], {"perm": perm}, name=node.name + "_patches_last")
        rows = b.add1("reshape", [x], {"shape": [n * math.prod(counts), c * math.prod(kernel)]},
                      name=node.name + "_rows")
        w2 = b.constant(weight.reshape(oc, c * math.prod(kernel)).t().contiguous(), node.inputs[1] + "_rows")
        y = b.add1("matmul", [rows, w2] + [rb.value(i) for i in node.inputs[2:]], name=node.name)
        y = b.add1("reshape", [y], {"shape": [n] + counts + [oc]}, name=node.name + "_channels_last")
        return b.add("transpose", [y], {"perm": [0, dims + 1] + list(range(1, dims + 1))},
                     node.name + "_channels_first", outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, lower))


def _is_patch_conv_transpose(node: Node, graph: Graph, rb: Rebuild) -> bool:
    """A transposed conv whose kernel equals its stride (U-Net decoders' and DPT's 2 x 2 / 4 x 4
    upsampling): each input pixel writes its own kh x kw block, no two blocks overlap."""
    weight = _constant_weight(node, graph, rb, "conv_transpose")
    if weight is None or (len(node.inputs) > 2 and rb.constant(node.inputs[2]) is None):
        return False
    a = node.attrs
    return (a.get("groups", 1) == 1 and list(a["strides"]) == list(weight.shape[2:])
            and not any(a["pads"]) and not any(a.get("output_padding") or [])
            and list(a["dilations"]) == [1, 1])


def lower_patch_conv_transposes(graph: Graph) -> Graph:
    """conv_transpose with kernel == stride -> pixels as rows @ weight [C, OC * kh * kw], each
    row's product the pixel's output block, moved into place by one transpose."""
    def lower(node: Node, rb: Rebuild):
        return _blocks_gemm(node, graph, rb) if _is_patch_conv_transpose(node, graph, rb) else None

    return eliminate_dead_code(rewrite(graph, lower))


def _blocks_gemm(node: Node, graph: Graph, rb: Rebuild) -> list[str]:
    n, c, h, w = graph.types[node.inputs[0]].shape
    weight = rb.constant(node.inputs[1])
    _, oc, kh, kw = weight.shape
    b = rb.builder
    pixels = b.add1("transpose", [rb.value(node.inputs[0])], {"perm": [0, 2, 3, 1]},
                    name=node.name + "_pixels_last")
    inputs = [b.add1("reshape", [pixels], {"shape": [n * h * w, c]}, name=node.name + "_rows"),
              b.constant(weight.reshape(c, oc * kh * kw).contiguous(), node.inputs[1] + "_blocks")]
    if len(node.inputs) > 2:  # each output channel's bias, once per position of its block
        bias = rb.constant(node.inputs[2]).repeat_interleave(kh * kw)
        inputs.append(b.constant(bias.contiguous(), node.inputs[2] + "_blocks"))
    blocks = b.add1("reshape", [b.add1("matmul", inputs, name=node.name)],
                    {"shape": [n, h, w, oc, kh, kw]}, name=node.name + "_blocks")
    placed = b.add1("transpose", [blocks], {"perm": [0, 3, 1, 4, 2, 5]}, name=node.name + "_in_place")
    return b.add("reshape", [placed], {"shape": [n, oc, h * kh, w * kw]}, node.name + "_nchw",
                 outputs=node.outputs)
