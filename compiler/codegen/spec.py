"""Kernel specs: what a generator read to write one kernel, as plain JSON, and the source it gives.

An engine file stores each kernel's spec beside its source. Loading regenerates the source from the
spec with this trident's generators and refuses the file unless both agree (compiler/verify.py), so
the code an engine runs is code this compiler writes: a file can change which kernel is generated
(as an edited ONNX model can), never what a kernel of a given spec contains.

A spec holds the fused group (its nodes, recursively its members), the type and layout of every
value the nodes touch, and of each constant its shape and dtype (and its value when it has one
element: generators inline those as literals). Larger constants are meta tensors when the spec
is rendered: a generator reads their shape and dtype only (packing a conv weight then packs a
meta tensor, whose layout is all the source needs).
"""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import EngineFileError
from trident.compiler.fusion import Group
from trident.compiler.ir import Graph, Node, TensorType
from trident.compiler.ir.plan import Layout, dtype_from_name, dtype_name, value_from, value_json


def _group_nodes(group: Group) -> list[Node]:
    return list(group.nodes) + [n for m in group.members for n in _group_nodes(m)]


def _node_json(node: Node) -> dict:
    return {"op": node.op, "name": node.name, "inputs": list(node.inputs),
            "outputs": list(node.outputs), "attrs": {k: value_json(v) for k, v in node.attrs.items()}}


def _group_json(group: Group) -> dict:
    return {"kind": group.kind, "nodes": [_node_json(n) for n in group.nodes],
            "members": [_group_json(m) for m in group.members]}


def _scalar(tensor: torch.Tensor):
    value = tensor.reshape(()).item()
    if isinstance(value, float) and not math.isfinite(value):
        return {"float": str(value)}
    return value


def kernel_spec(kind: str, group: Group, graph: Graph, layouts: dict[str, Layout],
                outputs: list[str], name: str) -> dict:
    """The generator's inputs for one kernel (what `render` needs to write it again)."""
    values = list(dict.fromkeys(v for n in _group_nodes(group) for v in (*n.inputs, *n.outputs)))
    values += [o for o in outputs if o not in values]
    constants = {}
    for v in values:
        t = graph.constants.get(v)
        if t is not None:
            entry = {"shape": list(t.shape), "dtype": dtype_name(t.dtype)}
            if t.numel() == 1:
                entry["value"] = _scalar(t)
            constants[v] = entry
    return {"kind": kind, "name": name, "outputs": list(outputs), "group": _group_json(group),
            "types": {v: {"shape": list(graph.types[v].shape), "dtype": dtype_name(graph.types[v].dtype)}
                      for v in values if v in graph.types},
            "layouts": {v: {"shape": list(layouts[v].shape), "strides": list(layouts[v].strides),
                            "dtype": dtype_name(layouts[v].dtype), "offset": layouts[v].offset}
                        for v in values if v in layouts},
            "constants": constants}


# --------------------------------------------------------------------------- reading ----
def _bad(where: str, what: str) -> EngineFileError:
    return EngineFileError(f"engine file: {where}: {what}")


def _obj(data, where: str) -> dict:
    if not isinstance(data, dict):
        raise _bad(where, "should be an object")
    return data


# Sizes, strides and element counts past this are no tensor trident builds (compiler/verify.py bounds
# layouts by it too).
MAX_ELEMENTS = 1 << 40


def _ints(data, where: str, low: int = 0) -> tuple[int, ...]:
    if not isinstance(data, list) or not all(type(v) is int and low <= v <= MAX_ELEMENTS for v in data):
        raise _bad(where, f"should be a list of integers from {low} to {MAX_ELEMENTS}")
    if len(data) > 8:
        raise _bad(where, "has more than 8 dims")
    return tuple(data)


def _shape(data, where: str) -> tuple[int, ...]:
    shape = _ints(data, where)
    if math.prod(shape) > MAX_ELEMENTS:
        raise _bad(where, f"{list(shape)} holds more than {MAX_ELEMENTS} elements")
    return shape


def _str(data, where: str) -> str:
    if not isinstance(data, str):
        raise _bad(where, "should be a string")
    return data


def _names(data, where: str) -> tuple[str, ...]:
    if not isinstance(data, list) or not all(isinstance(v, str) for v in data):
        raise _bad(where, "should be a list of value names")
    return tuple(data)


def _node_from(data, where: str) -> Node:
    d = _obj(data, where)
    attrs = {_str(k, f"{where}.attrs"): value_from(v, f"{where}.attrs.{k}")
             for k, v in _obj(d.get("attrs"), f"{where}.attrs").items()}
    return Node(_str(d.get("op"), f"{where}.op"), _names(d.get("inputs"), f"{where}.inputs"),
                _names(d.get("outputs"), f"{where}.outputs"), attrs, _str(d.get("name"), f"{where}.name"))


def _group_from(data, where: str, depth: int = 0) -> Group:
    d = _obj(data, where)
    nodes, members = d.get("nodes"), d.get("members")
    if not isinstance(nodes, list) or not nodes or not isinstance(members, list) or depth > 1:
        raise _bad(where, "should hold a non-empty list of nodes and a list of members")
    return Group(_str(d.get("kind"), f"{where}.kind"),
                 [_node_from(n, f"{where}.nodes[{k}]") for k, n in enumerate(nodes)], [],
                 [_group_from(m, f"{where}.members[{k}]", depth + 1) for k, m in enumerate(members)])


def _constant(entry, where: str) -> torch.Tensor:
    d = _obj(entry, where)
    shape, dtype = _shape(d.get("shape"), f"{where}.shape"), dtype_from_name(_str(d.get("dtype"), where), where)
    if math.prod(shape) != 1:
        return torch.empty(shape, dtype=dtype, device="meta")
    value = value_from(d.get("value"), f"{where}.value")
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise _bad(where, "a one-element constant needs its value")
    try:
        return torch.tensor(value, dtype=dtype).reshape(shape)
    except (RuntimeError, OverflowError, TypeError) as e:
        raise _bad(where, f"value {value!r} does not fit {dtype} ({e})") from None


def parse(spec, where: str):
    """(kind, group, graph, layouts, outputs, name) of a spec; EngineFileError naming the field."""
    d = _obj(spec, where)
    types = {}
    for v, t in _obj(d.get("types"), f"{where}.types").items():
        t = _obj(t, f"{where}.types.{v}")
        types[v] = TensorType(_shape(t.get("shape"), f"{where}.types.{v}.shape"),
                              dtype_from_name(_str(t.get("dtype"), f"{where}.types.{v}"), f"{where}.types.{v}"))
    layouts = {}
    for v, lay in _obj(d.get("layouts"), f"{where}.layouts").items():
        lay = _obj(lay, f"{where}.layouts.{v}")
        offset = lay.get("offset")
        if type(offset) is not int or offset < 0:
            raise _bad(f"{where}.layouts.{v}.offset", "should be an integer >= 0")
        layouts[v] = Layout(_shape(lay.get("shape"), f"{where}.layouts.{v}.shape"),
                            _ints(lay.get("strides"), f"{where}.layouts.{v}.strides"),
                            dtype_from_name(_str(lay.get("dtype"), f"{where}.layouts.{v}"),
                                            f"{where}.layouts.{v}"), offset)
    constants = {v: _constant(c, f"{where}.constants.{v}")
                 for v, c in _obj(d.get("constants"), f"{where}.constants").items()}
    group = _group_from(d.get("group"), f"{where}.group")
    graph = Graph([], [], [], types, constants, "spec")
    return (_str(d.get("kind"), f"{where}.kind"), group, graph, layouts,
            list(_names(d.get("outputs"), f"{where}.outputs")), _str(d.get("name"), f"{where}.name"))


__all__ = ["kernel_spec", "parse"]
