"""What the hand-written templates take, asked before a kernel is generated: by fusion (may a cast
run inside a conv's loads? does the attention template run this node?) and by codegen (does a
conv's input need an NHWC copy?). Outside the codegen package, so that fusion can ask without
importing codegen (which imports fusion's groups)."""
from __future__ import annotations

import math

import torch

from trident.compiler.ir import Graph, Node
from trident.kernels import attention as attention_template
from trident.kernels import conv as templates
from trident.kernels import mlp as mlp_template

ATTENTION_DTYPES = (torch.float16, torch.bfloat16, torch.float32)


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


def attention_kind(node: Node, graph: Graph) -> tuple[str, str]:
    """("attention", why) when the template runs this node, else ("torch", why not)."""
    q, k, v = (graph.types[i] for i in node.inputs[:3])
    if not q.rank == k.rank == v.rank or q.rank not in attention_template.RANKS:
        return "torch", f"attention over rank-{q.rank} operands (the template takes rank 3 to 5)"
    if q.dtype not in ATTENTION_DTYPES:
        return "torch", f"attention in {q.dtype}"
    if max(q.shape[-1], v.shape[-1]) > attention_template.MAX_HEAD_DIM:
        return "torch", f"head dim past {attention_template.MAX_HEAD_DIM}"
    if q.shape[:-3] != k.shape[:-3] or (q.rank == 3 and q.shape[0] != k.shape[0]) or k.shape[:-1] != v.shape[:-1]:
        return "torch", "attention whose K/V batch broadcasts"
    if not math.isfinite(node.attrs["scale"]):
        return "torch", f"attention with scale {node.attrs['scale']}"
    if len(node.inputs) > 3:
        mask = graph.types[node.inputs[3]]
        if mask.dtype != torch.bool and mask.dtype not in ATTENTION_DTYPES:
            return "torch", f"attention mask of dtype {mask.dtype}"
    return "attention", "fused attention: one launch, scores never stored"


def mlp_refusal(up: Node, down: Node, graph: Graph) -> str | None:
    """None if the back-to-back template (kernels/mlp.py) computes `down(up(x))`, two float
    GEMMs on constant 2-D weights, the second reading the first's (epilogue's) result; else why not."""
    t = graph.types
    if up.op != "matmul" or down.op != "matmul":
        return "not two float matmuls"
    w1, w2 = up.inputs[1], down.inputs[1]
    if w1 not in graph.constants or w2 not in graph.constants or t[w1].rank != 2 or t[w2].rank != 2:
        return "a projection without a constant 2-D weight"
    dtypes = {t[v].dtype for v in (up.inputs[0], w1, down.inputs[0], w2)}
    if len(dtypes) != 1:
        return f"operands of dtypes {sorted(str(d) for d in dtypes)}"
    c_in, hidden, c_out = t[w1].shape[0], t[w1].shape[1], t[w2].shape[1]
    return mlp_template.fits(c_in, hidden, c_out, dtypes.pop())


def norm_prologue_fits(norm: Node, graph: Graph) -> str | None:
    """None if the back-to-back template can compute this norm over the channels in its row loads."""
    return mlp_template.norm_fits(graph.types[norm.inputs[0]].shape[-1])
