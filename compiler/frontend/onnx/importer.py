"""The importer: loads and checks a model, converts its nodes through the converter table, and
finishes a typed IR Graph."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnx.inliner
import onnx.numpy_helper
import onnx.shape_inference
import onnx.version_converter
import torch
from onnx import TensorProto

from trident.compiler.errors import (InputError, ModelError, ShapeError, TridentError,
                                     UnsupportedError, where)
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import (DEFAULT_DOMAINS, DTYPES, MAX_OPSET,
                                                     MIN_OPSET, dtype_name, lookup,
                                                     supported_dtype_names, supported_onnx_ops)
from trident.compiler.ir import SUPPORTED_DTYPES, Dim, Graph, GraphBuilder, TensorType


class _Importer:
    def __init__(self, model: onnx.ModelProto, opset: int, inferred: dict[str, onnx.TypeProto]):
        self.model = model
        self.opset = opset
        self.inferred = inferred
        self.builder = GraphBuilder(model.graph.name or "onnx")
        self.values: dict[str, str] = {}          # ONNX value name -> IR value name
        self.initializers = {t.name: t for t in model.graph.initializer}
        self.bad_inputs: dict[str, str] = {}      # graph inputs trident cannot represent
        self.builder.reserve(self._all_onnx_names())

    def _all_onnx_names(self) -> set[str]:
        g = self.model.graph
        names = {v.name for v in g.input} | set(self.initializers)
        for node in g.node:
            names.update(node.output)
        return names - {""}

    # -- values ------------------------------------------------------------------------------
    def value(self, name: str, cx: NodeContext | None = None) -> str:
        if name in self.values:
            return self.values[name]
        if name in self.bad_inputs:
            raise UnsupportedError(f"{cx.loc if cx else 'graph'}: {self.bad_inputs[name]}")
        if name in self.initializers:
            tensor = self.tensor_from_proto(self.initializers[name], name, cx)
            self.builder.graph.constants[name] = tensor
            self.builder.graph.types[name] = TensorType.of(tensor)
            self.values[name] = name
            return name
        raise ModelError(f"{cx.loc if cx else 'graph'}: input '{name}' is not a graph input, "
                         f"an initializer or the output of an earlier node")

    def tensor_from_proto(self, proto: onnx.TensorProto, name: str,
                          cx: NodeContext | None) -> torch.Tensor:
        loc = cx.loc if cx else "graph"
        dtype = DTYPES.get(proto.data_type)
        if dtype is None:
            raise UnsupportedError(f"{loc}: tensor '{name}' has dtype "
                                   f"{dtype_name(proto.data_type)}; trident supports "
                                   f"{supported_dtype_names()}")
        try:
            return _to_torch(onnx.numpy_helper.to_array(proto))
        except Exception as e:  # truncated raw_data, missing external file, ...
            raise ModelError(f"{loc}: cannot read tensor '{name}': {e}") from None

    def add_inputs(self, batch_size: int | None) -> None:
        g = self.model.graph
        inputs = [v for v in g.input if v.name not in self.initializers]
        types = {v.name: _input_type(v) for v in inputs}
        batch_symbols = _batch_symbols(types, batch_size)
        for v in inputs:
            t = types[v.name]
            if isinstance(t, str):
                self.bad_inputs[v.name] = t
                continue
            t = TensorType(tuple(batch_size if d in batch_symbols else d for d in t.shape),
                           t.dtype)
            self.builder.graph.inputs.append(v.name)
            self.builder.graph.types[v.name] = t
            self.values[v.name] = v.name

    # -- nodes -------------------------------------------------------------------------------
    def inline(self, graph: onnx.GraphProto, prefix: str) -> list[str]:
        """Convert a subgraph's nodes into this graph (the branch an If takes when its condition
        is known at import); returns the IR values of the subgraph's outputs."""
        self.initializers.update((t.name, t) for t in graph.initializer)
        self.builder.reserve(o for node in graph.node for o in node.output if o)
        for index, node in enumerate(graph.node):
            self.convert_node(index, node, prefix=f"{prefix}/")
        return [self.value(o.name) for o in graph.output]

    def convert_node(self, index: int, proto: onnx.NodeProto, prefix: str = "") -> None:
        name = proto.name or f"{prefix}{proto.op_type}_{index}"
        cx = NodeContext(self, proto, name, self.opset)
        entry = lookup(proto.op_type, self.opset) if proto.domain in DEFAULT_DOMAINS else None
        if entry is None:
            op = proto.op_type if proto.domain in DEFAULT_DOMAINS else \
                f"{proto.domain}.{proto.op_type}"
            raise UnsupportedError(f"{where(cx, op, self.opset)}: op type '{op}' is not "
                                   f"supported. Supported ops: {', '.join(supported_onnx_ops())}")
        mark = len(self.builder.graph.nodes)
        try:
            cx.attrs = _parse_attributes(cx)
            outs = list(entry.fn(cx))
            self._bind_outputs(cx, outs, mark)
        except TridentError as e:
            if cx.loc in str(e):
                raise
            raise type(e)(f"{cx.loc}: {e}") from e
        except Exception as e:  # a bug, or a malformed model nobody checked: say where
            raise TridentError(f"{cx.loc}: converting the node failed: "
                               f"{type(e).__name__}: {e}") from e

    def _bind_outputs(self, cx: NodeContext, outs: list[str | None], mark: int) -> None:
        renamed: dict[str, str] = {}
        for k, onnx_name in enumerate(cx.proto.output):
            if not onnx_name:
                continue
            if k >= len(outs) or outs[k] is None:
                raise cx.error(UnsupportedError, f"output {k} ('{onnx_name}') is not supported")
            value = renamed.get(outs[k], outs[k])
            t = self.builder.type_of(value)
            if t.dtype not in SUPPORTED_DTYPES:
                raise cx.error(UnsupportedError, f"output '{onnx_name}' has dtype {t.dtype}")
            self._check_inferred(cx, onnx_name, t)
            if value in cx.created and value not in renamed.values():
                self._rename(value, onnx_name, mark)  # the IR value keeps the ONNX name
                renamed[value] = value = onnx_name
            self.values[onnx_name] = value

    def _check_inferred(self, cx: NodeContext, onnx_name: str, got: TensorType) -> None:
        """ONNX type inference must agree with the IR on an output's dtype and rank: when it
        does not, a converter is wrong (or the model mistyped). Dims are not compared: ONNX's
        shape inference is itself wrong in corners (pooling with ceil_mode) that onnxruntime
        and ONNX's reference implementation get right."""
        expected = self.inferred.get(onnx_name)
        if expected is None or expected.WhichOneof("value") != "tensor_type":
            return
        tt = expected.tensor_type
        dtype = DTYPES.get(tt.elem_type)
        if tt.elem_type and dtype is not None and dtype != got.dtype:
            raise cx.error(TridentError, f"output '{onnx_name}' is {got}, but ONNX type "
                                         f"inference says {dtype_name(tt.elem_type)}")
        if tt.HasField("shape") and len(tt.shape.dim) != got.rank:
            raise cx.error(TridentError, f"output '{onnx_name}' is {got}, but ONNX shape "
                                         f"inference gives it rank {len(tt.shape.dim)}")

    def _rename(self, old: str, new: str, mark: int) -> None:
        g = self.builder.graph
        for node in g.nodes[mark:]:
            node.outputs = tuple(new if o == old else o for o in node.outputs)
            node.inputs = tuple(new if i == old else i for i in node.inputs)
        if old in g.constants:
            g.constants[new] = g.constants.pop(old)
        g.types[new] = g.types.pop(old)

    # -- graph outputs -----------------------------------------------------------------------
    def finish(self) -> Graph:
        g = self.builder.graph
        produced = {o for node in g.nodes for o in node.outputs}
        outputs = []
        for out in self.model.graph.output:
            value = self.value(out.name)
            if value != out.name or value not in produced or value in outputs:
                # The output is a graph input, a constant or another value's alias: give it a
                # node of its own so the engine's outputs are always node outputs.
                target = self.builder.fresh(out.name) if out.name in g.types else out.name
                self.builder.reserve([target])
                value = self.builder.add("identity", [value], name=f"{out.name}.output",
                                         outputs=[target])[0]
            _check_declared(out, self.builder.type_of(value))
            outputs.append(value)
        if self.bad_inputs:  # an input no node uses still belongs to the engine's interface
            raise UnsupportedError(f"graph: {next(iter(self.bad_inputs.values()))}")
        _drop_unused_constants(g)
        return self.builder.finish(outputs)


def _drop_unused_constants(g: Graph) -> None:
    """Folding leaves the constants of shape subgraphs (and weights whose transposed copy
    replaced them) behind; none of them belongs in an engine."""
    used = {i for node in g.nodes for i in node.inputs}
    for name in [c for c in g.constants if c not in used]:
        del g.constants[name]
        del g.types[name]


def _tensor_proto(tensor: torch.Tensor, name: str) -> onnx.TensorProto:
    if tensor.dtype == torch.bfloat16:  # numpy has no bfloat16: hand ONNX the 16-bit payload
        return onnx.helper.make_tensor(name, TensorProto.BFLOAT16, list(tensor.shape),
                                       tensor.contiguous().view(torch.int16).numpy().tobytes(),
                                       raw=True)
    return onnx.numpy_helper.from_array(tensor.contiguous().numpy(), name)


def _to_torch(array) -> torch.Tensor:
    array = np.asarray(array)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: reinterpret the 16-bit payload
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _parse_attributes(cx: NodeContext) -> dict:
    attrs = {}
    for a in cx.proto.attribute:
        if a.ref_attr_name:
            raise cx.error(ModelError, f"attribute '{a.name}' refers to a function attribute "
                                       f"outside a function")
        if a.type == onnx.AttributeProto.GRAPHS:
            raise cx.error(UnsupportedError, f"subgraph list attribute '{a.name}'")
        value = onnx.helper.get_attribute_value(a)  # (a GRAPH stays a GraphProto: If's branches)
        if isinstance(value, bytes):
            value = value.decode("utf-8", errors="replace")
        elif a.type == onnx.AttributeProto.STRINGS:
            value = [v.decode("utf-8", errors="replace") for v in value]
        elif a.type in (onnx.AttributeProto.INTS, onnx.AttributeProto.FLOATS):
            value = list(value)
        attrs[a.name] = value
    return attrs


def _input_type(v: onnx.ValueInfoProto) -> TensorType | str:
    """A graph input's TensorType, or a message saying why trident cannot represent it."""
    if v.type.WhichOneof("value") != "tensor_type":
        return f"graph input '{v.name}' is a {v.type.WhichOneof('value')}, not a tensor"
    tt = v.type.tensor_type
    dtype = DTYPES.get(tt.elem_type)
    if dtype is None:
        return (f"graph input '{v.name}' has dtype {dtype_name(tt.elem_type)}; trident "
                f"supports {supported_dtype_names()}")
    if not tt.HasField("shape"):
        return f"graph input '{v.name}' has no shape (unknown rank)"
    shape: list[Dim] = []
    for k, d in enumerate(tt.shape.dim):
        if d.HasField("dim_value") and d.dim_value < 0:
            raise ModelError(f"graph input '{v.name}' has dim {d.dim_value} at axis {k}; expected "
                             f"a size >= 0, or a symbolic name (dim_param) for a dynamic dim")
        if d.HasField("dim_value"):
            shape.append(int(d.dim_value))
        else:
            shape.append(d.dim_param or f"{v.name}.d{k}")
    return TensorType(tuple(shape), dtype)


def _batch_symbols(types: dict, batch_size: int | None) -> set:
    """The symbols batch_size replaces: those naming the first dim of any input."""
    if batch_size is None:
        return set()
    if not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size must be a positive int, got {batch_size!r}")
    return {t.shape[0] for t in types.values()
            if isinstance(t, TensorType) and t.rank and isinstance(t.shape[0], str)}


def _check_declared(out: onnx.ValueInfoProto, got: TensorType) -> None:
    """A graph output declared with another dtype or rank than it computes is a bad model.
    (Declared dims that differ are only a stale annotation: onnxruntime warns and goes on.)"""
    if out.type.WhichOneof("value") != "tensor_type":
        return
    tt = out.type.tensor_type
    if tt.elem_type and DTYPES.get(tt.elem_type) not in (None, got.dtype):
        raise ModelError(f"graph output '{out.name}' is declared {dtype_name(tt.elem_type)}, "
                         f"but computes to {got}")
    if tt.HasField("shape") and len(tt.shape.dim) != got.rank:
        raise ShapeError(f"graph output '{out.name}' is declared with rank {len(tt.shape.dim)}, "
                         f"but computes to {got}")


# ============================================================================ loading ====
def _load(model) -> onnx.ModelProto:
    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        try:
            return onnx.load_model_from_string(bytes(model))
        except Exception as e:
            raise ModelError(f"cannot parse the model bytes as ONNX: {type(e).__name__}: {e}") \
                from None
    if isinstance(model, (str, os.PathLike)):
        path = Path(model)
        if not path.is_file():
            raise ModelError(f"cannot read {path}: no such file")
        try:
            return onnx.load(str(path))
        except Exception as e:
            raise ModelError(f"cannot load {path} as ONNX: {type(e).__name__}: {e}") from None
    raise ModelError(f"import_onnx expects a path, bytes or onnx.ModelProto, got "
                     f"{type(model).__name__}")


def _upgrade(model: onnx.ModelProto) -> tuple[onnx.ModelProto, int]:
    """The model at an opset trident converts, and that opset. Models older than MIN_OPSET go
    through onnx.version_converter (ONNX's own upgrade path; trident has no converters for the
    old semantics)."""
    versions = [o.version for o in model.opset_import if o.domain in DEFAULT_DOMAINS]
    if not versions and model.opset_import:
        domains = ", ".join(f"{o.domain} (version {o.version})" for o in model.opset_import)
        raise UnsupportedError(f"the model imports only {domains}; trident converts ops of the "
                               f"default ONNX domain (ai.onnx), opsets {MIN_OPSET} to {MAX_OPSET}")
    if not versions:
        raise ModelError("the model imports no version of the default ONNX domain")
    opset = max(versions)
    if opset > MAX_OPSET:
        raise UnsupportedError(f"opset {opset} is newer than this onnx package knows "
                               f"({MAX_OPSET})")
    if opset >= MIN_OPSET:
        return model, opset
    try:
        upgraded = onnx.version_converter.convert_version(model, MIN_OPSET)
        onnx.checker.check_model(upgraded)
    except Exception as e:
        message = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UnsupportedError(f"opset {opset}: onnx.version_converter cannot upgrade the model "
                               f"to opset {MIN_OPSET}, the oldest trident imports ({message})") \
            from None
    return upgraded, MIN_OPSET


def _check_names(model: onnx.ModelProto) -> None:
    """Names are UTF-8 strings in ONNX; protobuf hands over bytes where they are not."""
    g = model.graph
    named = [(f"node {k} (op {n.op_type})", [n.name, *n.input, *n.output]) for k, n in enumerate(g.node)]
    named += [("graph input", [v.name for v in g.input]), ("graph output", [v.name for v in g.output]),
              ("initializer", [t.name for t in g.initializer])]
    for where_, names in named:
        for name in names:
            if not isinstance(name, str):
                raise ModelError(f"{where_}: name {name!r} is not valid UTF-8")


def _check(model: onnx.ModelProto) -> None:
    _check_names(model)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"the ONNX checker rejects the model: {e}") from None


def _inline_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    if model.functions:  # model-local functions: inline them so the table sees plain ops
        try:
            model = onnx.inliner.inline_local_functions(model)
        except Exception as e:
            raise ModelError(f"cannot inline the model's local functions: {e}") from None
    try:
        # Not strict: an op trident will name as unsupported must not fail here first.
        return onnx.shape_inference.infer_shapes(model, check_type=True)
    except Exception as e:
        raise ModelError(f"ONNX shape inference fails on the model: {e}") from None


def bind_inputs(model, values: dict) -> onnx.ModelProto:
    """A copy of `model` whose graph inputs named in `values` are initializers holding those
    values (torch tensors, numpy arrays or nested lists of the input's dtype and shape).

    This is how a graph input that feeds a shape slot (Reshape's shape, Resize's sizes, TopK's
    K, ...) gets a value at build time, as a static-shape compiler binds TensorRT's shape tensors:
    `build_engine(model, constant_inputs={"shape": [2, 3]})`."""
    model = _load(model)
    if not values:
        return model
    initialized = {t.name for t in model.graph.initializer}
    inputs = {v.name: v for v in model.graph.input if v.name not in initialized}
    bound = onnx.ModelProto()
    bound.CopyFrom(model)
    for name, value in values.items():
        if name not in inputs:
            raise InputError(f"constant_inputs names '{name}', which is not a graph input "
                             f"(inputs: {', '.join(sorted(inputs)) or 'none'})")
        t = _input_type(inputs[name])
        if isinstance(t, str):
            raise UnsupportedError(f"constant_inputs['{name}']: {t}")
        if isinstance(value, torch.Tensor):
            tensor = value.detach().cpu()
        elif isinstance(value, np.ndarray):
            tensor = _to_torch(value)
        else:  # a number or a (nested) list: the input's dtype
            tensor = torch.tensor(value, dtype=t.dtype)
        if tensor.dtype != t.dtype:
            raise InputError(f"constant_inputs['{name}'] has dtype {tensor.dtype}, the graph "
                             f"input is {t}")
        if tensor.dim() != t.rank or any(isinstance(d, int) and d != s
                                         for d, s in zip(t.shape, tensor.shape)):
            raise InputError(f"constant_inputs['{name}'] has shape {tuple(tensor.shape)}, the "
                             f"graph input is {t}")
        bound.graph.initializer.append(_tensor_proto(tensor, name))
    kept = [v for v in bound.graph.input if v.name not in values]
    del bound.graph.input[:]
    bound.graph.input.extend(kept)
    return bound


def import_onnx(model, *, constant_inputs: dict | None = None,
                batch_size: int | None = None) -> Graph:
    """Convert an ONNX model (path, bytes or ModelProto) into a typed IR Graph.

    constant_inputs: graph inputs to bind to values at import (see bind_inputs); they become
        constants and leave the graph's inputs.
    batch_size: the size that replaces a symbolic first dim of the graph inputs.
    """
    try:
        proto = bind_inputs(model, dict(constant_inputs or {}))
        _check(proto)
        proto, opset = _upgrade(proto)
        proto = _inline_and_infer(proto)
        inferred = {v.name: v.type for v in proto.graph.value_info}
        importer = _Importer(proto, opset, inferred)
        importer.add_inputs(batch_size)
        for index, node in enumerate(proto.graph.node):
            importer.convert_node(index, node)
        return importer.finish()
    except TridentError:
        raise
    except Exception as e:  # outside any node (inputs, outputs): still a trident error
        raise TridentError(f"importing the ONNX model failed: {type(e).__name__}: {e}") from e
