"""Per-layer precision for `trident explain`: what each fused group computes in, and its scales."""
from __future__ import annotations

import torch

from trident.compiler.fusion import Group
from trident.compiler.ir import Graph

_NAMES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16", torch.int8: "int8",
          torch.uint8: "uint8"}


def _scale(graph: Graph, value: str) -> str:
    t = graph.constants.get(value)
    return "?" if t is None else (f"{float(t.reshape(-1)[0]):.4g}" if t.numel() == 1 else "per-channel")


def group_precision(group: Group, graph: Graph) -> str:
    """What a group computes in, and what it stores, e.g.
    "int8 (x_scale=0.0213, w_scale per-channel [0.0011 .. 0.0042]) -> int8 (scale=0.0157)"."""
    anchor = group.anchor
    if anchor.op in ("qconv", "qmatmul"):
        ws = graph.constants.get(anchor.inputs[2])
        w = (f"per-channel [{float(ws.min()):.3g} .. {float(ws.max()):.3g}]" if ws is not None
             else "per-channel")
        text = f"int8 (x_scale={anchor.attrs['x_scale']:.4g}, w_scale {w})"
    else:
        dtypes = {graph.types[i].dtype for i in anchor.inputs if i in graph.types}
        floats = [d for d in dtypes if d.is_floating_point]
        text = _NAMES.get(floats[0] if floats else graph.types[anchor.outputs[0]].dtype, "other")
        if torch.int8 in dtypes and not floats:
            text = "int8"  # an int8 max pool, reshape or copy
    return f"{text} -> {', '.join(_stored(group, graph))}"


def _stored(group: Group, graph: Graph) -> list[str]:
    """What the group's kernel stores: dtypes, with the scale of each int8 it quantizes."""
    mine = {id(n) for n in group.nodes}
    readers = graph.consumers()
    out = []
    for node in group.nodes:
        for value in node.outputs:
            if value not in graph.outputs and all(id(c) in mine for c in readers.get(value, [])):
                continue  # stays in registers
            if node.op == "quantize_linear":
                out.append(f"int8 (scale={_scale(graph, node.inputs[1])})")
            else:
                out.append(_NAMES.get(graph.types[value].dtype, str(graph.types[value].dtype)))
    return list(dict.fromkeys(out))

