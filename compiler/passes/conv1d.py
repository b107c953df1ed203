"""1-D convolutions (and pools) as 2-D ones of height 1, so that the conv (pool) templates run them.

The conv templates are 2-D (NHWC tiles). A Conv1d on [N, C, L] is exactly a Conv2d on the view
[N, C, 1, L] with the weight [OC, C/g, 1, K]: this pass writes it so, with reshapes around the conv.
The reshapes cost nothing: a [N, C, L] tensor stored length-major ([N, L, C], what a conv writes)
views as NHWC [N, C, 1, L], and the conv's NHWC output views back as [N, OC, OL]. `sink_reshapes`
(which runs next) then moves the output reshape past the elementwise ops that follow, so they join
the conv's epilogue (Whisper's conv -> GELU stems), and cancels it against the next conv's input
reshape.
"""
from __future__ import annotations

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite


def _lowerable(node: Node, graph: Graph, rb: Rebuild) -> bool:
    if node.op != "conv" or graph.types[node.inputs[0]].rank != 3:
        return False
    static = all(graph.types[v].is_static for v in (node.inputs[0], node.outputs[0]))
    return static and rb.constant(node.inputs[1]) is not None


def _pool_as_2d(node: Node, graph: Graph, rb: Rebuild):
    """max_pool / avg_pool over [N, C, L] -> the 2-D pool over [N, C, 1, L] (SEW's squeeze), whose
    template runs it; None where it is not one."""
    if node.op not in ("max_pool", "avg_pool") or len(node.attrs["kernel"]) != 1:
        return None
    if not all(graph.types[v].is_static for v in (node.inputs[0], node.outputs[0])):
        return None
    n, c, length = graph.types[node.inputs[0]].shape
    a = node.attrs
    attrs = dict(a, kernel=[1, a["kernel"][0]], strides=[1, a["strides"][0]], pads=[0, a["pads"][0], 0, a["pads"][1]])
    if a.get("dilations") is not None:
        attrs["dilations"] = [1, a["dilations"][0]]
    x = rb.builder.add1("reshape", [rb.value(node.inputs[0])], {"shape": [n, c, 1, length]}, name=node.name + "_as_2d")
    y = rb.builder.add1(node.op, [x], attrs, name=node.name)
    return rb.builder.add("reshape", [y], {"shape": list(graph.types[node.outputs[0]].shape)},
                          node.name + "_as_1d", outputs=node.outputs)


def lower_conv1d(graph: Graph) -> Graph:
    """conv over [N, C, L] with a constant weight -> reshape, 2-D conv (H = 1), reshape back; 1-D
    pools likewise."""
    def lower(node: Node, rb: Rebuild):
        if node.op in ("max_pool", "avg_pool"):
            return _pool_as_2d(node, graph, rb)
        if not _lowerable(node, graph, rb):
            return None
        n, c, length = graph.types[node.inputs[0]].shape
        out_shape = list(graph.types[node.outputs[0]].shape)
        weight = rb.constant(node.inputs[1])
        a = node.attrs
        x = rb.builder.add1("reshape", [rb.value(node.inputs[0])], {"shape": [n, c, 1, length]},
                            name=node.name + "_as_2d")
        w = rb.builder.constant(weight.unsqueeze(2), node.inputs[1] + "_2d")
        attrs = dict(a, strides=[1, a["strides"][0]], dilations=[1, a["dilations"][0]],
                     pads=[0, a["pads"][0], 0, a["pads"][1]])
        ins = [x, w] + [rb.value(i) for i in node.inputs[2:]]
        y = rb.builder.add1("conv", ins, attrs, name=node.name)
        return rb.builder.add("reshape", [y], {"shape": out_shape}, node.name + "_as_1d",
                              outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, lower))
