"""The launch plan: what codegen produces and the runtime runs.

A Plan is the program with every compiler decision already made and nothing of how it was made:
- layouts: every value's shape, strides, dtype and offset (views share their source's memory);
- steps, in order: a kernel launch (name, generated source, argument values, launch config), a
  view (strides only), or an op that runs through torch (its IR node);
- constants: the weights, already packed in the layouts their kernels read;
- dynamic: for a profiled plan, the optimization profile and the templates that give the
  layouts, input shapes and torch-op attributes at any sizes of the profile (ir/shapes.py);
- index_bounds: integer inputs used as indices (token ids), and the size they index;
- a kernel step's index_checks: the other index tensors it gathers through, checked before it runs.
Fusion groups, their reasons and the autotuner's problems stay with the compiler (BuildTrace).

to_json()/from_json() write and read a plan field by field as plain JSON (the engine file's
header, runtime/format.py); the weights travel separately, as raw bytes.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from trident.compiler.errors import EngineFileError
from trident.compiler.ir.launch import LaunchConfig
from trident.compiler.ir.shapes import Poly, PolyTable, ShapeProfile, SizeRange, instantiate, is_constant
from trident.compiler.types import Node


@dataclass(frozen=True)
class Layout:
    shape: tuple[int, ...]
    strides: tuple[int, ...]
    dtype: torch.dtype
    offset: int = 0  # elements from the start of the buffer it views (views only)


@dataclass(frozen=True)
class IndexCheck:
    """Before (uncaptured) runs of a kernel that gathers through `indices`, every index must fall
    inside dim `axis` of `data` (negative ones count from the end); the engine reads the sizes
    from the layouts it runs at, so the check holds at every size of a profile. `node` names the
    gather in the error. The kernel clamps anyway: a CUDA-graph replay never reads outside."""
    indices: str
    data: str
    axis: int
    node: str


@dataclass(frozen=True)
class KernelStep:
    """Launch a generated kernel: `launch(*args, config=...)` of the module `source` defines."""
    kind: ClassVar[str] = "kernel"
    name: str
    source: str
    args: tuple[str, ...]       # values passed to launch(), in order: inputs, then outputs
    outputs: tuple[str, ...]
    config: LaunchConfig
    sizes: tuple[str, ...] = ()  # a shape-generic kernel: launch() takes sizes=(these symbols' values)
    # What the generator read to write `source` (compiler/codegen/spec.py): loading an engine
    # file regenerates the source from it and refuses the file unless the two agree.
    spec: dict | None = field(default=None, compare=False, repr=False)
    # Index tensors computed in the model (or constants) this kernel gathers through: checked by
    # the engine before the launch. Token-id inputs are checked once per run (Plan.index_bounds).
    index_checks: tuple[IndexCheck, ...] = ()

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(a for a in self.args if a not in self.outputs)


@dataclass(frozen=True)
class ViewStep:
    """Outputs are views of the input: the layouts give their strides and offsets."""
    kind: ClassVar[str] = "view"
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    node: Node | None = None    # the view op: loading a file recomputes the layouts from it


@dataclass(frozen=True)
class TorchStep:
    """An op with no kernel: its reference (compiler/ops/) runs on the engine's device."""
    kind: ClassVar[str] = "torch"
    node: Node
    # Why no kernel takes it (fusion's reason, for the compile report; engine files leave it out)
    reason: str = field(default="", compare=False)

    @property
    def inputs(self) -> tuple[str, ...]:
        return tuple(self.node.inputs)

    @property
    def outputs(self) -> tuple[str, ...]:
        return tuple(self.node.outputs)


Step = KernelStep | ViewStep | TorchStep


@dataclass
class DynamicInfo:
    """What an engine needs to run a plan at any sizes of its optimization profile."""
    profile: ShapeProfile
    build_sizes: dict[str, int]          # the sizes the plan's layouts describe
    variables: dict[str, str]            # symbol -> the kernels' parameter name
    layouts: dict[str, Any]              # value -> template of (shape, strides, offset)
    inputs: dict[str, Any]               # plan input -> template of its shape
    node_attrs: dict[int, Any]           # torch step index -> template of its node's attrs
    _cache: dict = field(default_factory=dict, repr=False, compare=False)
    # (the base layouts' values, their varying layouts as one PolyTable): built at first use
    _table: Any = field(default=None, init=False, repr=False, compare=False)

    def key(self, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(sizes[s] for s in self.profile.symbols)

    def layouts_at(self, sizes: dict[str, int], base: dict[str, Layout]) -> dict[str, Layout]:
        key = self.key(sizes)
        if key not in self._cache:
            if len(self._cache) >= 256:   # one entry per shape seen: bounded
                self._cache.pop(next(iter(self._cache)))
            varying, table = self._layout_table(base)
            values = table.at(sizes)
            out = dict(base)
            start = 0
            for value, rank in varying:
                shape, strides = values[start:start + rank], values[start + rank:start + 2 * rank]
                out[value] = Layout(tuple(shape), tuple(strides), base[value].dtype, values[start + 2 * rank])
                start += 2 * rank + 1
            self._cache[key] = out
        return self._cache[key]

    def _layout_table(self, base: dict[str, Layout]) -> tuple[list[tuple[str, int]], PolyTable]:
        """The values of `base` whose layout varies, with their ranks, and one table of their
        shapes, strides and offsets, flattened in that order."""
        if self._table is None or self._table[0] != base.keys():
            varying, leaves = [], []
            for value in base:
                template = self.layouts.get(value)
                if template is None or is_constant(template):
                    continue
                shape, strides, offset = template
                if len(shape) != len(strides):
                    raise ValueError(f"layout of {value}: {len(shape)} dims but {len(strides)} strides")
                varying.append((value, len(shape)))
                leaves += [*shape, *strides, offset]
            self._table = (base.keys(), (varying, PolyTable(leaves)))
        return self._table[1]

    def input_shape(self, name: str, sizes: dict[str, int]) -> tuple[int, ...]:
        return tuple(instantiate(self.inputs[name], sizes))

    def shape_text(self, name: str) -> str:
        return "(" + ", ".join(str(t) for t in self.inputs[name]) + ")"


@dataclass
class Plan:
    name: str
    inputs: list[str]
    outputs: list[str]
    steps: list[Step]
    layouts: dict[str, Layout]
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # packed, kernel-ready
    dynamic: DynamicInfo | None = None
    index_bounds: dict[str, int] = field(default_factory=dict)  # input -> values must be below

    @property
    def num_kernels(self) -> int:
        """Kernel launches per run: generated kernels plus ops that run through torch."""
        return sum(s.kind in ("kernel", "torch") for s in self.steps)

    def kernel_steps(self) -> list[KernelStep]:
        return [s for s in self.steps if s.kind == "kernel"]

    def to_json(self) -> dict:
        out = {"name": self.name, "inputs": list(self.inputs), "outputs": list(self.outputs),
               "layouts": {v: _layout_json(lay) for v, lay in self.layouts.items()},
               "steps": [_step_json(s) for s in self.steps], "index_bounds": dict(self.index_bounds)}
        if self.dynamic is not None:
            out["dynamic"] = _dynamic_json(self.dynamic)
        return out

    @staticmethod
    def from_json(data: dict, constants: dict[str, torch.Tensor]) -> "Plan":
        """The plan `to_json` wrote; EngineFileError naming the field if one is malformed."""
        d = _Fields(data, "plan")
        layouts = {v: _layout_from(_Fields(lay, f"plan.layouts.{v}"))
                   for v, lay in d.object("layouts").items()}
        steps = [_step_from(_Fields(s, f"plan.steps[{k}]")) for k, s in enumerate(d.array("steps"))]
        dynamic = _dynamic_from(_Fields(data["dynamic"], "plan.dynamic")) if "dynamic" in data else None
        bounds = _Fields(d.object("index_bounds"), "plan.index_bounds")
        return Plan(d.string("name"), d.names("inputs"), d.names("outputs"), steps, layouts,
                    dict(constants), dynamic, {name: bounds.integer(name) for name in bounds.data})


# ----------------------------------------------------------------------------- JSON ----
class _Fields:
    """Typed reads of one JSON object, naming the field on a mismatch."""

    def __init__(self, data, where: str):
        if not isinstance(data, dict):
            raise EngineFileError(f"engine file: {where} should be an object, got {_kind(data)}")
        self.data, self.where = data, where

    def get(self, key: str, types, what: str):
        if key not in self.data:
            raise EngineFileError(f"engine file: {self.where}.{key} is missing")
        value = self.data[key]
        if not isinstance(value, types) or (isinstance(value, bool) and bool not in _tuple(types)):
            raise EngineFileError(f"engine file: {self.where}.{key} should be {what}, got "
                                  f"{_kind(value)}")
        return value

    def string(self, key: str) -> str:
        return self.get(key, str, "a string")

    def integer(self, key: str) -> int:
        return self.get(key, int, "an integer")

    def flag(self, key: str) -> bool:
        return self.get(key, bool, "true or false")

    def array(self, key: str) -> list:
        return self.get(key, list, "a list")

    def object(self, key: str) -> dict:
        return self.get(key, dict, "an object")

    def ints(self, key: str) -> tuple[int, ...]:
        values = self.array(key)
        if not all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            raise EngineFileError(f"engine file: {self.where}.{key} should hold integers")
        return tuple(values)

    def names(self, key: str) -> list[str]:
        values = self.array(key)
        if not all(isinstance(v, str) for v in values):
            raise EngineFileError(f"engine file: {self.where}.{key} should hold value names")
        return list(values)

    def dtype(self, key: str) -> torch.dtype:
        return dtype_from_name(self.string(key), f"{self.where}.{key}")


def _tuple(types) -> tuple:
    return types if isinstance(types, tuple) else (types,)


def _kind(value) -> str:
    return "null" if value is None else type(value).__name__


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).replace("torch.", "")


def dtype_from_name(name: str, where: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise EngineFileError(f"engine file: {where}: unknown dtype {name!r}")
    return dtype


def _layout_json(lay: Layout) -> dict:
    return {"shape": list(lay.shape), "strides": list(lay.strides), "dtype": dtype_name(lay.dtype),
            "offset": lay.offset}


def _layout_from(f: _Fields) -> Layout:
    return Layout(f.ints("shape"), f.ints("strides"), f.dtype("dtype"), f.integer("offset"))


def _config_json(cfg: LaunchConfig) -> dict:
    return {"params": dict(cfg.params), "num_warps": cfg.num_warps, "num_stages": cfg.num_stages}


def _config_from(f: _Fields) -> LaunchConfig:
    params = f.object("params")
    for key, value in params.items():
        if not isinstance(value, int) or isinstance(value, bool):
            raise EngineFileError(f"engine file: {f.where}.params.{key} should be an integer")
    stages = f.data.get("num_stages")
    if stages is not None and (not isinstance(stages, int) or isinstance(stages, bool)):
        raise EngineFileError(f"engine file: {f.where}.num_stages should be an integer or null")
    return LaunchConfig(tuple(params.items()), f.integer("num_warps"), stages)


def _step_json(step: Step) -> dict:
    if step.kind == "kernel":
        return {"kind": "kernel", "name": step.name, "source": step.source, "args": list(step.args),
                "outputs": list(step.outputs), "config": _config_json(step.config),
                "sizes": list(step.sizes), "spec": step.spec,
                "index_checks": [_check_json(c) for c in step.index_checks]}
    if step.kind == "view":
        out = {"kind": "view", "inputs": list(step.inputs), "outputs": list(step.outputs)}
        if step.node is not None:
            out["node"] = _node_json(step.node)
        return out
    return {"kind": "torch", "node": _node_json(step.node)}


def _step_from(f: _Fields) -> Step:
    kind = f.string("kind")
    if kind == "kernel":
        return KernelStep(f.string("name"), f.string("source"), tuple(f.names("args")),
                          tuple(f.names("outputs")),
                          _config_from(_Fields(f.object("config"), f"{f.where}.config")),
                          tuple(f.names("sizes")), f.object("spec"),
                          tuple(_check_from(_Fields(c, f"{f.where}.index_checks[{k}]"))
                                for k, c in enumerate(f.array("index_checks"))))
    if kind == "view":
        node = _node_from(_Fields(f.object("node"), f"{f.where}.node")) if "node" in f.data else None
        return ViewStep(tuple(f.names("inputs")), tuple(f.names("outputs")), node)
    if kind == "torch":
        return TorchStep(_node_from(_Fields(f.object("node"), f"{f.where}.node")))
    raise EngineFileError(f"engine file: {f.where}.kind: unknown step kind {kind!r}")


def _check_json(check: IndexCheck) -> dict:
    return {"indices": check.indices, "data": check.data, "axis": check.axis, "node": check.node}


def _check_from(f: _Fields) -> IndexCheck:
    return IndexCheck(f.string("indices"), f.string("data"), f.integer("axis"), f.string("node"))


def _node_json(node: Node) -> dict:
    return {"op": node.op, "name": node.name, "inputs": list(node.inputs),
            "outputs": list(node.outputs), "attrs": {k: value_json(v) for k, v in node.attrs.items()}}


def _node_from(f: _Fields) -> Node:
    attrs = {k: value_from(v, f"{f.where}.attrs.{k}") for k, v in f.object("attrs").items()}
    return Node(f.string("op"), tuple(f.names("inputs")), tuple(f.names("outputs")), attrs,
                f.string("name"))


def value_json(value):
    """An IR attribute value (or template of one) as JSON: numbers, strings, booleans and None as
    they are; lists; tuples, dtypes, size polynomials and str-keyed dicts tagged, so they come
    back as what they were."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"float": str(value)}
    if isinstance(value, torch.dtype):
        return {"dtype": dtype_name(value)}
    if isinstance(value, Poly):
        return {"poly": [[c, [[sym, p] for sym, p in m]] for c, m in value.terms]}
    if isinstance(value, tuple):
        return {"tuple": [value_json(v) for v in value]}
    if isinstance(value, list):
        return [value_json(v) for v in value]
    if isinstance(value, dict) and all(isinstance(k, str) for k in value):
        return {"dict": {k: value_json(v) for k, v in value.items()}}
    raise TypeError(f"a plan cannot store a {type(value).__name__} attribute ({value!r:.80})")


def value_from(data, where: str):
    if data is None or isinstance(data, (bool, int, float, str)):
        return data
    if isinstance(data, list):
        return [value_from(v, f"{where}[{k}]") for k, v in enumerate(data)]
    if not isinstance(data, dict) or len(data) != 1:
        raise EngineFileError(f"engine file: {where}: malformed value {data!r:.80}")
    (tag, body), = data.items()
    if tag == "tuple" and isinstance(body, list):
        return tuple(value_from(v, f"{where}[{k}]") for k, v in enumerate(body))
    if tag == "dict" and isinstance(body, dict):
        return {k: value_from(v, f"{where}.{k}") for k, v in body.items()}
    if tag == "dtype" and isinstance(body, str):
        return dtype_from_name(body, where)
    if tag == "float" and body in ("inf", "-inf", "nan"):
        return float(body)
    if tag == "poly" and isinstance(body, list):
        return _poly_from(body, where)
    raise EngineFileError(f"engine file: {where}: malformed value {data!r:.80}")


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _poly_from(body: list, where: str) -> Poly:
    terms = []
    for term in body:
        ok = isinstance(term, list) and len(term) == 2 and _is_int(term[0]) \
            and isinstance(term[1], list)
        factors = term[1] if ok else []
        if not ok or len(body) > 64 or len(factors) > 8 or not all(
                isinstance(f, list) and len(f) == 2 and isinstance(f[0], str)
                and _is_int(f[1]) and 0 < f[1] <= 4 for f in factors):
            raise EngineFileError(f"engine file: {where}: malformed size polynomial {body!r:.80}")
        terms.append((term[0], tuple((f[0], f[1]) for f in factors)))
    return Poly(tuple(terms))


def _dynamic_json(info: DynamicInfo) -> dict:
    return {"symbols": {s: {"min": r.min, "opt": r.opt, "max": r.max}
                        for s, r in info.profile.symbols.items()},
            "input_dims": {v: list(dims) for v, dims in info.profile.inputs.items()},
            "build_sizes": dict(info.build_sizes), "variables": dict(info.variables),
            "layouts": {v: value_json(t) for v, t in info.layouts.items()},
            "inputs": {v: value_json(t) for v, t in info.inputs.items()},
            "node_attrs": {str(k): value_json(t) for k, t in info.node_attrs.items()}}


def _dynamic_from(f: _Fields) -> DynamicInfo:
    symbols = {}
    table = f.object("symbols")
    if not 1 <= len(table) <= 8:
        raise EngineFileError(f"engine file: {f.where}.symbols should name 1 to 8 sizes")
    for s, r in table.items():
        if not (s.isprintable() and 0 < len(s) <= 64):
            raise EngineFileError(f"engine file: {f.where}.symbols: {s!r:.80} is not a size name "
                                  f"(1 to 64 printable characters)")
        rf = _Fields(r, f"{f.where}.symbols.{s}")
        lo, opt, hi = rf.integer("min"), rf.integer("opt"), rf.integer("max")
        if not 0 <= lo <= opt <= hi:
            raise EngineFileError(f"engine file: {rf.where} should have 0 <= min <= opt <= max, "
                                  f"got {[lo, opt, hi]}")
        symbols[s] = SizeRange(lo, opt, hi)
    dims = {}
    for v, d in f.object("input_dims").items():
        if not isinstance(d, list) or len(d) > 8 or \
                not all((_is_int(x) and x >= 0) or (isinstance(x, str) and x in symbols) for x in d):
            raise EngineFileError(f"engine file: {f.where}.input_dims.{v} should hold at most 8 "
                                  f"sizes and symbol names")
        dims[v] = tuple(d)
    sizes = _Fields(f.object("build_sizes"), f"{f.where}.build_sizes")
    names = _Fields(f.object("variables"), f"{f.where}.variables")
    for key, fields in (("build_sizes", sizes), ("variables", names)):
        unknown = sorted(set(fields.data) - set(symbols))
        if unknown:
            raise EngineFileError(f"engine file: {f.where}.{key}: {unknown[:3]} are not symbols")
    node_attrs = {}
    for k, t in f.object("node_attrs").items():
        if not k.isdigit():
            raise EngineFileError(f"engine file: {f.where}.node_attrs: {k!r} is not a step index")
        node_attrs[int(k)] = value_from(t, f"{f.where}.node_attrs.{k}")
    return DynamicInfo(ShapeProfile(symbols, dims), {s: sizes.integer(s) for s in sizes.data},
                       {s: names.string(s) for s in names.data},
                       {v: value_from(t, f"{f.where}.layouts.{v}") for v, t in f.object("layouts").items()},
                       {v: value_from(t, f"{f.where}.inputs.{v}") for v, t in f.object("inputs").items()},
                       node_attrs)


__all__ = ["DynamicInfo", "IndexCheck", "KernelStep", "Layout", "Plan", "Step", "TorchStep", "ViewStep",
           "dtype_from_name", "dtype_name", "value_from", "value_json"]
