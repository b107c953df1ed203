"""What the hand-written templates read, asked before a kernel is generated: by fusion (may a cast
run inside a conv's loads?) and by codegen (does a conv's input need an NHWC copy?)."""
from __future__ import annotations

from trident.compiler.ir import Graph, Node
from trident.kernels import conv as templates


def reads_any_layout(node: Node, graph: Graph) -> bool:
    """Does this conv's tile read its input through strides (the small-channel stem tile)?

    Then its input needs no NHWC copy, and a cast in front of it computes in the tile's loads.
    """
    if node.op != "conv":
        return False
    weight = graph.constants[node.inputs[1]]
    groups = node.attrs.get("groups", 1)
    c, oc = graph.types[node.inputs[0]].shape[1], weight.shape[0]
    kh, kw = weight.shape[2], weight.shape[3]
    if templates.is_depthwise(c, oc, groups) or (
            templates.is_pointwise_gemm(kh, kw, node.attrs["strides"], node.attrs["pads"], groups)
            and tuple(node.attrs["dilations"]) == (1, 1)):
        return False  # these tiles read dense NHWC
    n, _, oh, ow = graph.types[node.outputs[0]].shape
    tconf = templates.heuristic_config(n * oh * ow, oc // groups, c // groups, kh, kw, weight.dtype)
    return templates.use_small_c_tile(c // groups, tconf.BLOCK_K)
