"""The ONNX frontend: an onnx.ModelProto (or a path, or its bytes) in, a typed IR Graph out.

The model is loaded, passed through `onnx.checker` and `onnx.shape_inference`, then converted node
by node with CONVERTERS, a table of small functions keyed by ONNX op type and by the opset version
that gave the op its current semantics (hidet's frontend/onnx habit). Each converter reads its
node through a `NodeContext` and emits IR nodes with `cx.emit`, which folds a node into a constant
at once when all its inputs are constants: shape-computing subgraphs (Shape -> Gather -> Concat ->
Reshape) disappear at import, and Reshape sees a constant shape.

Every failure a model can cause surfaces as a trident error (compiler/errors.py) that names the
node, its op type and the opset; an unexpected exception inside a converter is re-raised as a
TridentError with the same location and the original message (and chained, for the traceback).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import onnx
import onnx.inliner
import onnx.numpy_helper
import onnx.shape_inference
import torch
from onnx import TensorProto

from trident.compiler.errors import (InputError, ModelError, ShapeError, TridentError,
                                     UnsupportedError, where)
from trident.compiler.ir import SUPPORTED_DTYPES, Dim, Graph, GraphBuilder, Node, TensorType
from trident.compiler.ops import evaluate, infer_types

MIN_OPSET = 13
MAX_OPSET = onnx.defs.onnx_opset_version()
_DEFAULT_DOMAINS = ("", "ai.onnx")

# ONNX element types trident represents; every other one (DOUBLE, STRING, INT16, FLOAT8*, ...)
# is an UnsupportedError that names the value.
_DTYPES: dict[int, torch.dtype] = {
    TensorProto.FLOAT: torch.float32, TensorProto.FLOAT16: torch.float16,
    TensorProto.BFLOAT16: torch.bfloat16, TensorProto.INT8: torch.int8,
    TensorProto.UINT8: torch.uint8, TensorProto.INT32: torch.int32,
    TensorProto.INT64: torch.int64, TensorProto.BOOL: torch.bool,
}
_ONNX_OF_DTYPE = {v: k for k, v in _DTYPES.items()}


def _dtype_name(elem_type: int) -> str:
    try:
        return TensorProto.DataType.Name(elem_type)
    except ValueError:
        return f"<unknown element type {elem_type}>"


def _supported_dtype_names() -> str:
    return ", ".join(sorted(_dtype_name(k) for k in _DTYPES))


# ================================================================== the converter table ====
Converter = Callable[["NodeContext"], Sequence["str | None"]]


@dataclass
class _Entry:
    since: int
    fn: Converter
    constant_inputs: tuple[int, ...]  # input slots that carry attributes (shape, axes, ...)


CONVERTERS: dict[str, list[_Entry]] = {}


def converter(*op_types: str, since: int = MIN_OPSET, constant_inputs: Sequence[int] = ()):
    """Register `fn` for `op_types` from opset `since` on (until a later registration)."""
    def register(fn: Converter) -> Converter:
        for op_type in op_types:
            entries = CONVERTERS.setdefault(op_type, [])
            entries.append(_Entry(since, fn, tuple(constant_inputs)))
            entries.sort(key=lambda e: e.since)
        return fn
    return register


def _lookup(op_type: str, opset: int) -> _Entry | None:
    chosen = None
    for entry in CONVERTERS.get(op_type, ()):
        if entry.since <= opset:
            chosen = entry
    return chosen


def supported_onnx_ops() -> list[str]:
    """The ONNX op types (default domain) the frontend converts, sorted."""
    return sorted(CONVERTERS)


def constant_input_slots(op_type: str, opset: int = MAX_OPSET) -> tuple[int, ...]:
    """Input slots of `op_type` whose value must be known at import (e.g. Reshape's shape).

    A static-shape compiler binds these at build time (TensorRT's shape tensors); the conformance
    runner uses this to bind such graph inputs through `constant_inputs`.
    """
    entry = _lookup(op_type, opset)
    return entry.constant_inputs if entry else ()


# ======================================================================= node context ====
@dataclass
class NodeContext:
    """What a converter sees of one ONNX node, and how it adds IR to the graph."""
    imp: "_Importer"
    proto: onnx.NodeProto
    name: str
    opset: int
    attrs: dict = field(default_factory=dict)
    created: list[str] = field(default_factory=list)  # IR values this node's conversion made

    @property
    def op_type(self) -> str:
        return self.proto.op_type

    @property
    def loc(self) -> str:
        return where(self, self.op_type, self.opset)

    def error(self, cls: type[TridentError], message: str) -> TridentError:
        return cls(f"{self.loc}: {message}")

    # -- inputs ------------------------------------------------------------------------------
    @property
    def num_inputs(self) -> int:
        return len(self.proto.input)

    def has(self, i: int) -> bool:
        """Is optional input `i` given? (ONNX marks a skipped optional input with '')."""
        return i < len(self.proto.input) and self.proto.input[i] != ""

    def input(self, i: int) -> str:
        if not self.has(i):
            raise self.error(ModelError, f"required input {i} is missing")
        return self.imp.value(self.proto.input[i], self)

    def type(self, i: int) -> TensorType:
        return self.imp.builder.type_of(self.input(i))

    def type_of(self, value: str) -> TensorType:
        return self.imp.builder.type_of(value)

    def const(self, i: int, what: str) -> torch.Tensor | None:
        """The value of input `i`, which must be a constant; None when the input is absent."""
        if not self.has(i):
            return None
        value = self.input(i)
        tensor = self.imp.builder.graph.constants.get(value)
        if tensor is None:
            raise self.error(UnsupportedError,
                             f"input '{what}' of node {self.name} must be a constant "
                             f"(data-dependent shapes are not supported); bind graph inputs "
                             f"that feed it with constant_inputs=")
        return tensor

    def const_ints(self, i: int, what: str) -> list[int] | None:
        tensor = self.const(i, what)
        if tensor is None:
            return None
        if tensor.dtype not in (torch.int64, torch.int32):
            raise self.error(ModelError, f"input '{what}' must be int64, got {tensor.dtype}")
        return [int(v) for v in tensor.reshape(-1).tolist()]

    def const_scalar(self, i: int, what: str):
        tensor = self.const(i, what)
        if tensor is None:
            return None
        if tensor.numel() != 1:
            raise self.error(ModelError, f"input '{what}' must hold one value, "
                                         f"got shape {tuple(tensor.shape)}")
        return tensor.reshape(-1)[0].item()

    # -- attributes --------------------------------------------------------------------------
    def attr(self, name: str, default=None):
        return self.attrs.get(name, default)

    def int_attr(self, name: str, default: int | None = None) -> int | None:
        value = self.attrs.get(name, default)
        if value is not None and not isinstance(value, int):
            raise self.error(ModelError, f"attribute '{name}' must be an int, got {value!r}")
        return value

    def flag(self, name: str, default: int) -> bool:
        """A 0/1 attribute (keepdims, ceil_mode, transA, ...): other values are a bad model,
        not 'true' (onnxruntime tests `== 1`, shape inference `!= 0`)."""
        value = self.int_attr(name, default)
        if value not in (0, 1):
            raise self.error(ModelError, f"attribute '{name}' must be 0 or 1, got {value}")
        return bool(value)

    def float_attr(self, name: str, default: float) -> float:
        value = self.attrs.get(name, default)
        if not isinstance(value, (int, float)):
            raise self.error(ModelError, f"attribute '{name}' must be a float, got {value!r}")
        return float(value)

    def str_attr(self, name: str, default: str) -> str:
        value = self.attrs.get(name, default)
        if not isinstance(value, str):
            raise self.error(ModelError, f"attribute '{name}' must be a string, got {value!r}")
        return value

    def ints_attr(self, name: str, default: Sequence[int] | None = None) -> list[int] | None:
        value = self.attrs.get(name, default)
        if value is None:
            return None
        if not isinstance(value, (list, tuple)) or not all(isinstance(v, int) for v in value):
            raise self.error(ModelError, f"attribute '{name}' must be a list of ints, "
                                         f"got {value!r}")
        return list(value)

    def axis(self, axis: int, rank: int, what: str = "axis") -> int:
        """Normalize an ONNX axis in [-rank, rank-1] to [0, rank-1]."""
        if not isinstance(axis, int) or not -rank <= axis < rank:
            raise self.error(ModelError, f"{what} {axis} is out of range for rank {rank}")
        return axis % rank

    def axes(self, axes: Sequence[int], rank: int, what: str = "axes") -> list[int]:
        out = [self.axis(a, rank, what) for a in axes]
        if len(set(out)) != len(out):
            raise self.error(ModelError, f"{what} {list(axes)} repeat an axis")
        return out

    def static_shape(self, value: str, what: str) -> tuple[int, ...]:
        t = self.type_of(value)
        if not t.is_static:
            raise self.error(UnsupportedError, f"{what} needs the static shape of its input, "
                                               f"got {t} (pass batch_size= or constant_inputs=)")
        return tuple(t.shape)

    # -- building ----------------------------------------------------------------------------
    def emit(self, op: str, *inputs: str, **attrs) -> str:
        (out,) = self.emit_multi(op, inputs, attrs, 1)
        return out

    def emit_multi(self, op: str, inputs: Sequence[str], attrs: dict, count: int) -> list[str]:
        """Add an IR node (or, when every input is a constant, its value as constants)."""
        b = self.imp.builder
        names = [b.fresh(f"{self.name}.{op}" if count == 1 else f"{self.name}.{op}.{k}")
                 for k in range(count)]
        self.created.extend(names)
        node = Node(op, tuple(inputs), tuple(names), dict(attrs), self.name)
        try:
            types = infer_types(node, [b.type_of(i) for i in inputs])
        except TridentError as e:
            raise type(e)(f"{self.loc}: IR {op}{_strip_location(str(e), node)}") from None
        if len(types) != count:
            raise TridentError(f"{self.loc}: IR {op} gives {len(types)} outputs, "
                               f"expected {count}")
        consts = b.graph.constants
        # DequantizeLinear of constant int8 weights stays a node: an int8 build reads the int8
        # weights and scales from it (compiler/quantize/qdq.py); the passes fold it otherwise.
        if inputs and all(i in consts for i in inputs) and op != "dequantize_linear":
            try:
                values = evaluate(node, [consts[i] for i in inputs], types)
            except (RuntimeError, ValueError, IndexError) as e:
                raise self.error(ModelError, f"folding IR {op} on constants failed: {e}") from None
            for name, value, t in zip(names, values, types):
                consts[name] = value
                b.graph.types[name] = t
            return names
        b.graph.nodes.append(node)
        for name, t in zip(names, types):
            b.graph.types[name] = t
        return names

    def constant(self, tensor: torch.Tensor, hint: str = "const") -> str:
        if tensor.dtype not in SUPPORTED_DTYPES:
            raise self.error(UnsupportedError, f"constant of dtype {tensor.dtype} is not "
                                               f"supported")
        name = self.imp.builder.constant(tensor, f"{self.name}.{hint}")
        self.created.append(name)
        return name

    def scalar(self, value, dtype: torch.dtype) -> str:
        return self.constant(torch.tensor(value, dtype=dtype), "scalar")

    def reshape(self, x: str, target: Sequence[int | None]) -> str:
        """Reshape to `target`, where None (or -1) marks a dim only known symbolically."""
        t = self.type_of(x)
        target = [-1 if d is None else d for d in target]
        if target.count(-1) > 1:
            raise self.error(UnsupportedError, f"reshape of {t} to {target} needs more than "
                                               f"one inferred (symbolic) dim")
        known = math.prod(d for d in target if d != -1)
        if -1 in target and t.is_static and known and t.numel() % known == 0:
            target[target.index(-1)] = t.numel() // known  # give the backend static shapes
        if tuple(t.shape) == tuple(target):
            return x
        return self.emit("reshape", x, shape=target)


def _strip_location(message: str, node: Node) -> str:
    """Drop the IR location prefix ops.infer_types puts on its messages (we add the ONNX one)."""
    prefix = where(node)
    return message[len(prefix):] if message.startswith(prefix) else f": {message}"


# ====================================================================== the converters ====
# ---- elementwise ---------------------------------------------------------------------------
_UNARY = {"Sqrt": "sqrt", "Reciprocal": "reciprocal", "Neg": "neg", "Abs": "abs", "Exp": "exp",
          "Log": "log", "Relu": "relu", "Sigmoid": "sigmoid", "Tanh": "tanh", "Erf": "erf",
          "HardSwish": "hard_swish", "Not": "not"}
_BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow",
           "Equal": "equal", "Less": "less", "Greater": "greater"}


def _unary_converter(ir_op: str) -> Converter:
    return lambda cx: [cx.emit(ir_op, cx.input(0))]


def _binary_converter(ir_op: str) -> Converter:
    return lambda cx: [cx.emit(ir_op, cx.input(0), cx.input(1))]


for _onnx_op, _ir_op in _UNARY.items():
    converter(_onnx_op)(_unary_converter(_ir_op))
for _onnx_op, _ir_op in _BINARY.items():
    converter(_onnx_op)(_binary_converter(_ir_op))


def _chain(ir_op: str) -> Converter:
    """Variadic ONNX ops (Max, Min, Sum) as a left fold of a binary IR op."""
    def convert(cx: NodeContext):
        values = [cx.input(i) for i in range(cx.num_inputs)]
        if not values:
            raise cx.error(ModelError, "needs at least one input")
        acc = values[0]
        for v in values[1:]:
            acc = cx.emit(ir_op, acc, v)
        return [acc]
    return convert


converter("Max")(_chain("maximum"))
converter("Min")(_chain("minimum"))
converter("Sum")(_chain("add"))


@converter("LeakyRelu")
def _leaky_relu(cx):
    return [cx.emit("leaky_relu", cx.input(0), alpha=cx.float_attr("alpha", 0.01))]


@converter("HardSigmoid")
def _hard_sigmoid(cx):
    return [cx.emit("hard_sigmoid", cx.input(0), alpha=cx.float_attr("alpha", 0.2),
                    beta=cx.float_attr("beta", 0.5))]


@converter("Gelu", since=20)
def _gelu(cx):
    approximate = cx.str_attr("approximate", "none")
    if approximate not in ("none", "tanh"):
        raise cx.error(ModelError, f"approximate must be 'none' or 'tanh', got {approximate!r}")
    return [cx.emit("gelu", cx.input(0), approximate=approximate)]


@converter("Clip", constant_inputs=(1, 2))
def _clip(cx):
    x = cx.input(0)
    dtype = cx.type(0).dtype
    bounds = {}
    for slot, key in ((1, "min"), (2, "max")):
        if cx.has(slot) and cx.input(slot) not in cx.imp.builder.graph.constants:
            # A bound computed at run time is still elementwise: max(x, lo) / min(x, hi).
            x = cx.emit("maximum" if key == "min" else "minimum", x, cx.input(slot))
            continue
        value = cx.const_scalar(slot, key)
        if value is not None:
            bounds[key] = value if dtype.is_floating_point else int(value)
    if not bounds:
        return [x]
    return [cx.emit("clip", x, **bounds)]


@converter("Where")
def _where(cx):
    return [cx.emit("where", cx.input(0), cx.input(1), cx.input(2))]


@converter("Cast")
def _cast(cx):
    to = cx.int_attr("to")
    if to is None:
        raise cx.error(ModelError, "attribute 'to' is required")
    dtype = _DTYPES.get(to)
    if dtype is None:
        raise cx.error(UnsupportedError, f"cast of '{cx.proto.input[0]}' to {_dtype_name(to)} "
                                         f"(output '{cx.proto.output[0]}'): trident supports "
                                         f"{_supported_dtype_names()}")
    x = cx.input(0)
    return [x if cx.type_of(x).dtype == dtype else cx.emit("cast", x, dtype=dtype)]


@converter("CastLike")
def _cast_like(cx):
    x, dtype = cx.input(0), cx.type(1).dtype
    return [x if cx.type_of(x).dtype == dtype else cx.emit("cast", x, dtype=dtype)]


@converter("Identity")
def _identity(cx):
    return [cx.input(0)]  # an alias: no node; graph outputs get one at the end if needed


@converter("Dropout", constant_inputs=(1, 2))
def _dropout(cx):
    training = cx.const_scalar(2, "training_mode")
    if training:
        ratio = cx.const_scalar(1, "ratio")
        if ratio is None or ratio != 0:
            raise cx.error(UnsupportedError, "Dropout in training mode (random masks) is not "
                                             "supported; trident is an inference compiler")
    x = cx.input(0)
    outs: list[str | None] = [x]
    if len(cx.proto.output) > 1 and cx.proto.output[1]:
        shape = cx.static_shape(x, "Dropout's mask output")
        outs.append(cx.constant(torch.ones(shape, dtype=torch.bool), "mask"))
    return outs


# ---- quantization --------------------------------------------------------------------------
def _quant_axis(cx: NodeContext, x: str, scale: str) -> int:
    """The axis a per-channel scale runs along (0 for a per-tensor scale, where it is unused)."""
    xt, st = cx.type_of(x), cx.type_of(scale)
    if st.rank == 0 or (st.rank == 1 and st.shape[0] == 1):
        return 0
    if st.rank != 1:
        raise cx.error(UnsupportedError, f"scale of shape {st} (blocked quantization) is not "
                                         f"supported; use a scalar or 1-D scale")
    axis = cx.axis(cx.int_attr("axis", 1), xt.rank)
    if st.shape[0] != xt.shape[axis]:
        raise cx.error(ShapeError, f"scale has {st.shape[0]} values, but axis {axis} of {xt} "
                                   f"has {xt.shape[axis]}")
    return axis


def _check_block_size(cx: NodeContext) -> None:
    if cx.int_attr("block_size", 0):
        raise cx.error(UnsupportedError, "blocked quantization (block_size) is not supported")


@converter("QuantizeLinear")
def _quantize_linear(cx):
    _check_block_size(cx)
    precision = cx.int_attr("precision", 0)
    if precision not in (0, TensorProto.FLOAT):
        raise cx.error(UnsupportedError, f"precision {_dtype_name(precision)} (trident divides "
                                         f"in float32)")
    x, scale = cx.input(0), cx.input(1)
    if cx.has(2):
        zero_point = cx.input(2)
    else:
        to = cx.int_attr("output_dtype", 0) or TensorProto.UINT8
        zero_point = cx.scalar(0, _quant_dtype(cx, to))
    if cx.type_of(zero_point).dtype not in (torch.int8, torch.uint8):
        raise cx.error(UnsupportedError, f"quantizing to {cx.type_of(zero_point).dtype}: trident "
                                         f"quantizes to int8 and uint8")
    return [cx.emit("quantize_linear", x, scale, zero_point, axis=_quant_axis(cx, x, scale))]


def _quant_dtype(cx: NodeContext, elem_type: int) -> torch.dtype:
    dtype = _DTYPES.get(elem_type)
    if dtype not in (torch.int8, torch.uint8, torch.int32):
        raise cx.error(UnsupportedError, f"quantized type {_dtype_name(elem_type)}: trident "
                                         f"supports INT8 and UINT8")
    return dtype


@converter("DequantizeLinear")
def _dequantize_linear(cx):
    _check_block_size(cx)
    x, scale = cx.input(0), cx.input(1)
    zero_point = cx.input(2) if cx.has(2) else cx.scalar(0, cx.type_of(x).dtype)
    y = cx.emit("dequantize_linear", x, scale, zero_point, axis=_quant_axis(cx, x, scale))
    to = cx.int_attr("output_dtype", 0)
    if to:
        dtype = _DTYPES.get(to)
        if dtype is None:
            raise cx.error(UnsupportedError, f"output_dtype {_dtype_name(to)}")
        if dtype != cx.type_of(y).dtype:
            y = cx.emit("cast", y, dtype=dtype)
    return [y]


# ---- matmul / conv -------------------------------------------------------------------------
@converter("MatMul")
def _matmul(cx):
    return [cx.emit("matmul", cx.input(0), cx.input(1))]


@converter("Gemm")
def _gemm(cx):
    a, b = cx.input(0), cx.input(1)
    for value in (a, b):
        if cx.type_of(value).rank != 2:
            raise cx.error(ShapeError, f"Gemm needs 2-D A and B, got {cx.type_of(a)} and "
                                       f"{cx.type_of(b)}")
    # Transposes of constant weights fold here, so the IR only sees a plain matmul.
    if cx.flag("transA", 0):
        a = cx.emit("transpose", a, perm=[1, 0])
    if cx.flag("transB", 0):
        b = cx.emit("transpose", b, perm=[1, 0])
    dtype = cx.type_of(a).dtype
    y = cx.emit("matmul", a, b)
    alpha, beta = cx.float_attr("alpha", 1.0), cx.float_attr("beta", 1.0)
    if alpha != 1.0:
        y = cx.emit("mul", y, cx.scalar(alpha, dtype))
    if cx.has(2) and beta != 0.0:
        c = cx.input(2)
        if beta != 1.0:
            c = cx.emit("mul", c, cx.scalar(beta, dtype))
        y = cx.emit("add", y, c)
    return [y]


def _auto_pads(cx: NodeContext, x: str, kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    """ONNX `pads` (begin..., end...), resolving auto_pad against the input's spatial dims."""
    spatial = len(kernel)
    auto_pad = cx.str_attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = cx.ints_attr("pads", [0] * 2 * spatial)
        if len(pads) != 2 * spatial or any(p < 0 for p in pads):
            raise cx.error(ModelError, f"pads {pads} must be {2 * spatial} non-negative ints")
        return pads
    if auto_pad == "VALID":
        return [0] * 2 * spatial
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise cx.error(ModelError, f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, "
                                   f"SAME_LOWER, VALID")
    sizes = cx.static_shape(x, f"auto_pad={auto_pad}")[2:]
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning.
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def _window(cx: NodeContext, x: str, kernel: Sequence[int] | None):
    """kernel, strides, dilations, pads of a conv/pool node, checked and defaulted."""
    rank = cx.type_of(x).rank
    spatial = rank - 2
    if spatial < 1:
        raise cx.error(ShapeError, f"input {cx.type_of(x)} needs a batch, a channel and at "
                                   f"least one spatial dim")
    kernel = cx.ints_attr("kernel_shape", kernel)
    if kernel is None:
        raise cx.error(ModelError, "attribute 'kernel_shape' is required")
    strides = cx.ints_attr("strides", [1] * spatial)
    dilations = cx.ints_attr("dilations", [1] * spatial)
    for label, values in (("kernel_shape", kernel), ("strides", strides),
                          ("dilations", dilations)):
        if len(values) != spatial or any(not isinstance(v, int) or v < 1 for v in values):
            raise cx.error(ModelError, f"{label} {values} must be {spatial} positive ints for "
                                       f"input {cx.type_of(x)}")
    return kernel, strides, dilations, _auto_pads(cx, x, kernel, strides, dilations)


@converter("Conv")
def _conv(cx):
    x, w = cx.input(0), cx.input(1)
    w_shape = cx.type_of(w).shape
    if cx.type_of(w).rank != cx.type_of(x).rank:
        raise cx.error(ShapeError, f"weight {cx.type_of(w)} and input {cx.type_of(x)} differ "
                                   f"in rank")
    kernel_default = list(w_shape[2:]) if all(isinstance(d, int) for d in w_shape[2:]) else None
    kernel, strides, dilations, pads = _window(cx, x, kernel_default)
    if kernel_default is not None and list(kernel) != kernel_default:
        raise cx.error(ModelError, f"kernel_shape {kernel} does not match the weight "
                                   f"{cx.type_of(w)}")
    groups = cx.int_attr("group", 1)
    if groups < 1:
        raise cx.error(ModelError, f"group {groups} must be positive")
    inputs = [x, w] + ([cx.input(2)] if cx.has(2) else [])
    return [cx.emit("conv", *inputs, strides=strides, pads=pads, dilations=dilations,
                    groups=groups)]


@converter("MaxPool")
def _max_pool(cx):
    if len(cx.proto.output) > 1 and cx.proto.output[1]:
        raise cx.error(UnsupportedError, "MaxPool's Indices output is not supported")
    x = cx.input(0)
    kernel, strides, dilations, pads = _window(cx, x, None)
    return [cx.emit("max_pool", x, kernel=kernel, strides=strides, pads=pads,
                    dilations=dilations, ceil_mode=cx.flag("ceil_mode", 0))]


@converter("AveragePool")
def _average_pool(cx):
    x = cx.input(0)
    kernel, strides, dilations, pads = _window(cx, x, None)
    if any(d != 1 for d in dilations):
        raise cx.error(UnsupportedError, f"AveragePool with dilations {dilations}")
    return [cx.emit("avg_pool", x, kernel=kernel, strides=strides, pads=pads,
                    ceil_mode=cx.flag("ceil_mode", 0),
                    count_include_pad=cx.flag("count_include_pad", 0))]


def _global_pool(ir_op: str) -> Converter:
    def convert(cx):
        x = cx.input(0)
        rank = cx.type_of(x).rank
        if rank < 3:
            raise cx.error(ShapeError, f"input {cx.type_of(x)} has no spatial dims")
        return [cx.emit(ir_op, x, axes=list(range(2, rank)), keepdims=True)]
    return convert


converter("GlobalAveragePool")(_global_pool("reduce_mean"))
converter("GlobalMaxPool")(_global_pool("reduce_max"))


# ---- normalization -------------------------------------------------------------------------
@converter("Softmax")
def _softmax(cx):
    x = cx.input(0)
    return [cx.emit("softmax", x, axis=cx.axis(cx.int_attr("axis", -1), cx.type_of(x).rank))]


@converter("BatchNormalization")
def _batch_norm(cx):
    if cx.flag("training_mode", 0):
        raise cx.error(UnsupportedError, "BatchNormalization in training mode")
    if any(cx.proto.output[1:]):
        raise cx.error(UnsupportedError, "running_mean / running_var outputs (training only)")
    x = cx.input(0)
    dtype = cx.type_of(x).dtype
    # Opset 15 lets scale/bias and mean/var have their own float types; the IR wants one.
    params = [cx.input(i) if cx.type(i).dtype == dtype
              else cx.emit("cast", cx.input(i), dtype=dtype) for i in range(1, 5)]
    return [cx.emit("batch_norm", x, *params, epsilon=cx.float_attr("epsilon", 1e-5))]


@converter("LayerNormalization", since=17)
def _layer_norm(cx):
    x, scale = cx.input(0), cx.input(1)
    rank = cx.type_of(x).rank
    axis = cx.axis(cx.int_attr("axis", -1), rank)
    eps = cx.float_attr("epsilon", 1e-5)
    inputs = [x, scale] + ([cx.input(2)] if cx.has(2) else [])
    outs: list[str | None] = [cx.emit("layer_norm", *inputs, axis=axis, epsilon=eps)]
    wanted = [len(cx.proto.output) > k and cx.proto.output[k] != "" for k in (1, 2)]
    if any(wanted):
        outs += _layer_norm_stats(cx, x, list(range(axis, rank)), eps, wanted)
    return outs


def _layer_norm_stats(cx: NodeContext, x: str, axes: list[int], eps: float,
                      wanted: list[bool]) -> list[str | None]:
    """LayerNormalization's optional Mean and InvStdDev outputs, in float32 (stash_type)."""
    if cx.int_attr("stash_type", 1) != 1:
        raise cx.error(UnsupportedError, "stash_type other than 1 (float32)")
    if cx.type_of(x).dtype != torch.float32:
        x = cx.emit("cast", x, dtype=torch.float32)
    mean = cx.emit("reduce_mean", x, axes=axes, keepdims=True)
    centered = cx.emit("sub", x, mean)
    var = cx.emit("reduce_mean", cx.emit("mul", centered, centered), axes=axes, keepdims=True)
    std = cx.emit("sqrt", cx.emit("add", var, cx.scalar(eps, torch.float32)))
    inv_std = cx.emit("reciprocal", std)
    return [mean if wanted[0] else None, inv_std if wanted[1] else None]


# ---- attention -----------------------------------------------------------------------------
@converter("Attention", since=23)
def _attention(cx):
    """ONNX Attention (opset 23+) as one IR attention node. 3-D Q/K/V [B, S, heads * D] are split
    into heads around it (views); past_key / past_value are concatenated in front of K / V (the
    present outputs). Causal masking is bottom-right aligned once a cache is given, top-left else."""
    for name, default in (("softcap", 0.0), ("left_window_size", -1), ("right_window_size", -1)):
        if cx.attr(name, default) != default:
            raise cx.error(UnsupportedError, f"attribute {name}={cx.attr(name)}")
    if len(cx.proto.output) > 3 and cx.proto.output[3]:
        raise cx.error(UnsupportedError, "output qk_matmul_output (a debug output of the scores)")
    if cx.has(6):
        raise cx.error(UnsupportedError, "input nonpad_kv_seqlen (an external KV cache)")
    if cx.has(4) != cx.has(5):
        raise cx.error(ModelError, "past_key and past_value must be given together")
    q, k, v = (cx.input(i) for i in range(3))
    rank = cx.type_of(q).rank
    if rank == 3:
        q = _split_heads(cx, q, "q_num_heads")
        k, v = (_split_heads(cx, x, "kv_num_heads") for x in (k, v))
    elif rank != 4:
        raise cx.error(ShapeError, f"Q must be 3-D or 4-D, got {cx.type_of(q)}")
    dtype = cx.type_of(q).dtype
    if cx.type_of(v).dtype != dtype:
        v = cx.emit("cast", v, dtype=dtype)
    past = 0
    if cx.has(4):
        past = cx.static_shape(cx.input(4), "past_key")[2]
        k = cx.emit("concat", cx.input(4), k, axis=2)
        v = cx.emit("concat", cx.input(5), v, axis=2)
    inputs = [q, k, v]
    if cx.has(3):
        mask = cx.input(3)
        t = cx.type_of(mask).dtype
        inputs.append(mask if t in (torch.bool, dtype) else cx.emit("cast", mask, dtype=dtype))
    attrs = {"scale": cx.float_attr("scale", 1.0 / math.sqrt(cx.type_of(q).shape[-1] or 1))}
    if cx.flag("is_causal", 0):
        attrs["causal"] = _causal_alignment(cx, past, cx.type_of(q).shape[-2], cx.type_of(k).shape[-2])
    y = cx.emit("attention", *inputs, **attrs)
    if rank == 3:
        b, h, s, d = cx.type_of(y).shape
        y = cx.reshape(cx.emit("transpose", y, perm=[0, 2, 1, 3]), [b, s, h * d])
    return [y, k if cx.has(4) else None, v if cx.has(4) else None]


def _split_heads(cx: NodeContext, x: str, heads_attr: str) -> str:
    """[B, S, heads * D] -> [B, heads, S, D] (a reshape and a transpose: views)."""
    heads = cx.int_attr(heads_attr)
    b, s, hidden = cx.static_shape(x, "Attention with 3-D inputs")
    if not heads or hidden % heads:
        raise cx.error(ModelError, f"3-D inputs need {heads_attr} dividing the hidden size {hidden}, "
                                   f"got {heads}")
    return cx.emit("transpose", cx.reshape(x, [b, s, heads, hidden // heads]), perm=[0, 2, 1, 3])


def _causal_alignment(cx: NodeContext, past: int, lq: int, lk: int) -> str:
    """ONNX's causal diagonal sits at offset past_sequence_length: top-left without a cache,
    bottom-right when the new keys are the new queries (a decoder step)."""
    if past == 0:
        return "top_left"
    if past == lk - lq:
        return "bottom_right"
    raise cx.error(UnsupportedError, f"causal attention over a {past}-token cache with {lq} queries "
                                     f"and {lk} keys (the diagonal fits neither alignment)")


# ---- reductions ----------------------------------------------------------------------------
_REDUCE = {"ReduceMean": "reduce_mean", "ReduceSum": "reduce_sum", "ReduceMax": "reduce_max"}


def _reduce(cx: NodeContext, axes: list[int] | None) -> list[str]:
    x = cx.input(0)
    rank = cx.type_of(x).rank
    if not axes:
        if cx.flag("noop_with_empty_axes", 0):
            return [x]
        axes = list(range(rank))
    axes = sorted(set(cx.axis(a, rank, "axes") for a in axes))
    return [cx.emit(_REDUCE[cx.op_type], x, axes=axes, keepdims=cx.flag("keepdims", 1))]


@converter("ReduceMean", "ReduceMax")
def _reduce_axes_attr(cx):
    return _reduce(cx, cx.ints_attr("axes"))


@converter("ReduceSum", constant_inputs=(1,))
@converter("ReduceMean", "ReduceMax", since=18, constant_inputs=(1,))
def _reduce_axes_input(cx):
    return _reduce(cx, cx.const_ints(1, "axes"))


# ---- movement ------------------------------------------------------------------------------
def _dims(t: TensorType) -> list[int | None]:
    return [d if isinstance(d, int) else None for d in t.shape]


@converter("Reshape", constant_inputs=(1,))
def _reshape(cx):
    x = cx.input(0)
    shape = cx.const_ints(1, "shape")
    in_dims = _dims(cx.type_of(x))
    allowzero = cx.flag("allowzero", 0)
    if shape.count(-1) > 1:
        raise cx.error(ModelError, f"shape {shape} has more than one -1")
    if allowzero and 0 in shape and -1 in shape:
        raise cx.error(ModelError, f"shape {shape} with allowzero=1 has both 0 and -1")
    target: list[int | None] = []
    for i, s in enumerate(shape):
        if s == 0 and not allowzero:
            if i >= len(in_dims):
                raise cx.error(ShapeError, f"shape {shape} copies dim {i} (0) of a rank "
                                           f"{len(in_dims)} input")
            target.append(in_dims[i])
        elif s < -1:
            raise cx.error(ModelError, f"shape {shape} has a negative size {s}")
        else:
            target.append(s)
    return [cx.reshape(x, target)]


@converter("Flatten")
def _flatten(cx):
    x = cx.input(0)
    dims = _dims(cx.type_of(x))
    axis = cx.int_attr("axis", 1)
    if not -len(dims) <= axis <= len(dims):
        raise cx.error(ModelError, f"axis {axis} is out of range for rank {len(dims)}")
    axis = axis + len(dims) if axis < 0 else axis
    head, tail = dims[:axis], dims[axis:]
    prod = lambda ds: None if None in ds else math.prod(ds)  # noqa: E731
    return [cx.reshape(x, [prod(head), prod(tail)])]


@converter("Unsqueeze", constant_inputs=(1,))
def _unsqueeze(cx):
    x = cx.input(0)
    dims = _dims(cx.type_of(x))
    axes = cx.const_ints(1, "axes")
    axes = cx.axes(axes, len(dims) + len(axes))
    it = iter(dims)
    target = [1 if k in axes else next(it) for k in range(len(dims) + len(axes))]
    return [cx.reshape(x, target)]


@converter("Squeeze", constant_inputs=(1,))
def _squeeze(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    axes = cx.const_ints(1, "axes")
    if axes is None:
        axes = [k for k, d in enumerate(t.shape) if d == 1]
    axes = cx.axes(axes, t.rank)
    for a in axes:
        if isinstance(t.shape[a], str):
            raise cx.error(UnsupportedError, f"squeezing symbolic dim {a} ('{t.shape[a]}') of {t}")
        if t.shape[a] != 1:
            raise cx.error(ShapeError, f"cannot squeeze axis {a} of {t}: its size is not 1")
    return [cx.reshape(x, [d for k, d in enumerate(_dims(t)) if k not in axes])]


@converter("Transpose")
def _transpose(cx):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    perm = cx.ints_attr("perm", list(reversed(range(rank))))
    if sorted(perm) != list(range(rank)):
        raise cx.error(ModelError, f"perm {perm} is not a permutation of {rank} axes")
    return [x if perm == list(range(rank)) else cx.emit("transpose", x, perm=perm)]


@converter("Concat")
def _concat(cx):
    values = [cx.input(i) for i in range(cx.num_inputs) if cx.has(i)]
    if not values:
        raise cx.error(ModelError, "needs at least one input")
    axis = cx.int_attr("axis")
    if axis is None:
        raise cx.error(ModelError, "attribute 'axis' is required")
    return [cx.emit("concat", *values, axis=cx.axis(axis, cx.type_of(values[0]).rank))]


@converter("Split", constant_inputs=(1,))
def _split(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    axis = cx.axis(cx.int_attr("axis", 0), t.rank)
    size = t.shape[axis]
    if not isinstance(size, int):
        raise cx.error(UnsupportedError, f"splitting symbolic dim {axis} of {t}")
    count = len(cx.proto.output)
    sizes = cx.const_ints(1, "split")
    if sizes is None:
        parts = cx.int_attr("num_outputs", count) or count
        if parts != count:
            raise cx.error(ModelError, f"num_outputs {parts} but the node has {count} outputs")
        step = -(-size // parts)  # ceil: the last part may be smaller (opset 18)
        sizes = [min(step, size - k * step) for k in range(parts)]
        if cx.opset < 18 and size % parts:
            raise cx.error(ShapeError, f"dim {axis} of {t} does not split into {parts} equal "
                                       f"parts")
    if len(sizes) != count or sum(sizes) != size or any(s < 0 for s in sizes):
        raise cx.error(ShapeError, f"split sizes {sizes} do not cover dim {axis} of {t} with "
                                   f"{count} outputs")
    return cx.emit_multi("split", [x], {"axis": axis, "sizes": sizes}, count)


@converter("Slice", constant_inputs=(1, 2, 3, 4))
def _slice(cx):
    x = cx.input(0)
    t = cx.type_of(x)
    starts, ends = cx.const_ints(1, "starts"), cx.const_ints(2, "ends")
    axes = cx.const_ints(3, "axes") or list(range(len(starts)))
    steps = cx.const_ints(4, "steps") or [1] * len(starts)
    if not len(starts) == len(ends) == len(axes) == len(steps):
        raise cx.error(ModelError, f"starts {starts}, ends {ends}, axes {axes} and steps "
                                   f"{steps} differ in length")
    attrs = {"starts": [], "ends": [], "axes": [], "steps": []}
    for start, end, axis, step in zip(starts, ends, cx.axes(axes, t.rank), steps):
        dim = t.shape[axis]
        if not isinstance(dim, int):
            raise cx.error(UnsupportedError, f"slicing symbolic dim {axis} of {t}")
        if step == 0:
            raise cx.error(ModelError, "slice step 0")
        start, end = _clamp_slice(start, end, step, dim)
        if (start, end, step) == (0, dim, 1):
            continue  # this axis is untouched
        for key, value in zip(("starts", "ends", "axes", "steps"), (start, end, axis, step)):
            attrs[key].append(value)
    if not attrs["axes"]:
        return [x]
    return [cx.emit("slice", x, **attrs)]


def _clamp_slice(start: int, end: int, step: int, dim: int) -> tuple[int, int]:
    """ONNX Slice's rule, to the IR's contract: 0 <= start, -1 <= end <= dim."""
    if dim == 0:
        return 0, 0
    start = start + dim if start < 0 else start
    end = end + dim if end < 0 else end
    if step > 0:
        return min(max(start, 0), dim), min(max(end, 0), dim)
    return min(max(start, 0), dim - 1), min(max(end, -1), dim - 1)


@converter("Gather")
def _gather(cx):
    x, indices = cx.input(0), cx.input(1)
    if cx.type_of(indices).dtype not in (torch.int32, torch.int64):
        raise cx.error(ModelError, f"indices must be int32 or int64, got {cx.type_of(indices)}")
    axis = cx.axis(cx.int_attr("axis", 0), cx.type_of(x).rank)
    return [cx.emit("gather", x, indices, axis=axis)]


@converter("Expand", constant_inputs=(1,))
def _expand(cx):
    x = cx.input(0)
    shape = cx.const_ints(1, "shape")
    if any(s < 0 for s in shape):
        raise cx.error(ModelError, f"shape {shape} has a negative size")
    return [cx.emit("expand", x, shape=shape)]


# ---- values known at import ----------------------------------------------------------------
@converter("Shape")
def _shape(cx):
    t = cx.type(0)
    start, end = cx.int_attr("start", 0), cx.int_attr("end", t.rank)
    start, end = [min(max(v + t.rank if v < 0 else v, 0), t.rank) for v in (start, end)]
    dims = t.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        raise cx.error(UnsupportedError, f"Shape of {t} has symbolic dims (data-dependent "
                                         f"shapes are not supported; pass batch_size=)")
    return [cx.constant(torch.tensor(dims, dtype=torch.int64), "shape")]


@converter("Size")
def _size(cx):
    t = cx.type(0)
    if not t.is_static:
        raise cx.error(UnsupportedError, f"Size of {t} has symbolic dims (data-dependent "
                                         f"shapes are not supported; pass batch_size=)")
    return [cx.constant(torch.tensor(t.numel(), dtype=torch.int64), "size")]


@converter("Constant")
def _constant(cx):
    if len(cx.attrs) != 1:
        raise cx.error(ModelError, f"needs exactly one value attribute, got {sorted(cx.attrs)}")
    (key, value), = cx.attrs.items()
    if key == "value":
        tensor = cx.imp.tensor_from_proto(value, cx.proto.output[0], cx)
    elif key == "sparse_value":
        tensor = _dense_from_sparse(cx, value)
    elif key in ("value_float", "value_floats"):
        tensor = torch.tensor(value, dtype=torch.float32)
    elif key in ("value_int", "value_ints"):
        tensor = torch.tensor(value, dtype=torch.int64)
    elif key in ("value_string", "value_strings"):
        raise cx.error(UnsupportedError, f"string constant '{cx.proto.output[0]}': trident "
                                         f"supports {_supported_dtype_names()}")
    else:
        raise cx.error(ModelError, f"unknown attribute '{key}'")
    return [cx.constant(tensor, "value")]


def _dense_from_sparse(cx: NodeContext, sparse: onnx.SparseTensorProto) -> torch.Tensor:
    values = cx.imp.tensor_from_proto(sparse.values, cx.proto.output[0], cx).reshape(-1)
    indices = torch.from_numpy(onnx.numpy_helper.to_array(sparse.indices).copy())
    dims = list(sparse.dims)
    dense = torch.zeros(math.prod(dims), dtype=values.dtype)
    if indices.dim() == 2:  # [NNZ, rank] coordinates -> linear offsets
        strides = torch.tensor([math.prod(dims[k + 1:]) for k in range(len(dims))])
        indices = (indices * strides).sum(dim=1)
    dense[indices.reshape(-1).long()] = values
    return dense.reshape(dims)


@converter("ConstantOfShape", constant_inputs=(0,))
def _constant_of_shape(cx):
    shape = cx.const_ints(0, "input")
    if any(s < 0 for s in shape):
        raise cx.error(ModelError, f"shape {shape} has a negative size")
    value = cx.attr("value")
    fill = (torch.zeros(1, dtype=torch.float32) if value is None
            else cx.imp.tensor_from_proto(value, cx.proto.output[0], cx))
    if fill.numel() != 1:
        raise cx.error(ModelError, f"value must hold one element, got {tuple(fill.shape)}")
    return [cx.constant(fill.reshape(-1)[0].expand(shape).clone(), "filled")]


@converter("Range", constant_inputs=(0, 1, 2))
def _range(cx):
    dtype = cx.type(0).dtype
    start, limit, delta = (cx.const_scalar(i, w) for i, w in
                           enumerate(("start", "limit", "delta")))
    if delta == 0:
        raise cx.error(ModelError, "delta is 0")
    count = max(math.ceil((limit - start) / delta), 0)
    # ONNX defines element k as start + k * delta (no accumulation error for floats).
    values = torch.arange(count, dtype=torch.float64 if dtype.is_floating_point else torch.int64)
    return [cx.constant((start + values * delta).to(dtype), "range")]


# ========================================================================= the importer ====
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
        dtype = _DTYPES.get(proto.data_type)
        if dtype is None:
            raise UnsupportedError(f"{loc}: tensor '{name}' has dtype "
                                   f"{_dtype_name(proto.data_type)}; trident supports "
                                   f"{_supported_dtype_names()}")
        try:
            return _to_torch(onnx.numpy_helper.to_array(proto))
        except Exception as e:  # truncated raw_data, missing external file, ...
            raise ModelError(f"{loc}: cannot read tensor '{name}': {e}") from None

    def add_inputs(self, constant_inputs: dict, batch_size: int | None) -> None:
        g = self.model.graph
        inputs = [v for v in g.input if v.name not in self.initializers]
        names = {v.name for v in inputs}
        for key in constant_inputs:
            if key not in names:
                raise InputError(f"constant_inputs names '{key}', which is not a graph input "
                                 f"(inputs: {', '.join(sorted(names)) or 'none'})")
        types = {v.name: _input_type(v) for v in inputs}
        batch_symbols = _batch_symbols(types, batch_size)
        for v in inputs:
            t = types[v.name]
            if isinstance(t, str):
                self.bad_inputs[v.name] = t
                continue
            t = TensorType(tuple(batch_size if d in batch_symbols else d for d in t.shape),
                           t.dtype)
            if v.name in constant_inputs:
                self._bind_constant(v.name, t, constant_inputs[v.name])
            else:
                self.builder.graph.inputs.append(v.name)
                self.builder.graph.types[v.name] = t
            self.values[v.name] = v.name

    def _bind_constant(self, name: str, t: TensorType, value) -> None:
        tensor = value.detach().cpu() if isinstance(value, torch.Tensor) else _to_torch(value)
        if tensor.dtype != t.dtype:
            raise InputError(f"constant_inputs['{name}'] has dtype {tensor.dtype}, the graph "
                             f"input is {t}")
        if tensor.dim() != t.rank or any(isinstance(d, int) and d != s
                                         for d, s in zip(t.shape, tensor.shape)):
            raise InputError(f"constant_inputs['{name}'] has shape {tuple(tensor.shape)}, the "
                             f"graph input is {t}")
        self.builder.graph.constants[name] = tensor
        self.builder.graph.types[name] = TensorType.of(tensor)

    # -- nodes -------------------------------------------------------------------------------
    def convert_node(self, index: int, proto: onnx.NodeProto) -> None:
        name = proto.name or f"{proto.op_type}_{index}"
        cx = NodeContext(self, proto, name, self.opset)
        entry = _lookup(proto.op_type, self.opset) if proto.domain in _DEFAULT_DOMAINS else None
        if entry is None:
            op = proto.op_type if proto.domain in _DEFAULT_DOMAINS else \
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
        dtype = _DTYPES.get(tt.elem_type)
        if tt.elem_type and dtype is not None and dtype != got.dtype:
            raise cx.error(TridentError, f"output '{onnx_name}' is {got}, but ONNX type "
                                         f"inference says {_dtype_name(tt.elem_type)}")
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
        if a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS):
            raise cx.error(UnsupportedError, f"subgraph attribute '{a.name}'")
        value = onnx.helper.get_attribute_value(a)
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
    dtype = _DTYPES.get(tt.elem_type)
    if dtype is None:
        return (f"graph input '{v.name}' has dtype {_dtype_name(tt.elem_type)}; trident "
                f"supports {_supported_dtype_names()}")
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
    if tt.elem_type and _DTYPES.get(tt.elem_type) not in (None, got.dtype):
        raise ModelError(f"graph output '{out.name}' is declared {_dtype_name(tt.elem_type)}, "
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


def _opset(model: onnx.ModelProto) -> int:
    versions = [o.version for o in model.opset_import if o.domain in _DEFAULT_DOMAINS]
    if not versions and model.opset_import:
        domains = ", ".join(f"{o.domain} (version {o.version})" for o in model.opset_import)
        raise UnsupportedError(f"the model imports only {domains}; trident converts ops of the "
                               f"default ONNX domain (ai.onnx), opsets {MIN_OPSET} to {MAX_OPSET}")
    if not versions:
        raise ModelError("the model imports no version of the default ONNX domain")
    opset = max(versions)
    if not MIN_OPSET <= opset <= MAX_OPSET:
        raise UnsupportedError(f"opset {opset} is not supported: trident imports opsets "
                               f"{MIN_OPSET} to {MAX_OPSET} (convert older models with "
                               f"onnx.version_converter.convert_version)")
    return opset


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


def _check_and_infer(model: onnx.ModelProto) -> onnx.ModelProto:
    _check_names(model)
    try:
        onnx.checker.check_model(model)
    except Exception as e:
        raise ModelError(f"the ONNX checker rejects the model: {e}") from None
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


def import_onnx(model, *, constant_inputs: dict | None = None,
                batch_size: int | None = None) -> Graph:
    """Convert an ONNX model (path, bytes or ModelProto) into a typed IR Graph.

    constant_inputs: graph inputs to bind to values at import; they become constants (and leave
        the graph's inputs), as a static-shape compiler binds shape tensors at build time.
    batch_size: the size that replaces a symbolic first dim of the graph inputs.
    """
    try:
        proto = _check_and_infer(_load(model))
        opset = _opset(proto)
        inferred = {v.name: v.type for v in proto.graph.value_info}
        importer = _Importer(proto, opset, inferred)
        importer.add_inputs(dict(constant_inputs or {}), batch_size)
        for index, node in enumerate(proto.graph.node):
            importer.convert_node(index, node)
        return importer.finish()
    except TridentError:
        raise
    except Exception as e:  # outside any node (inputs, outputs): still a trident error
        raise TridentError(f"importing the ONNX model failed: {type(e).__name__}: {e}") from e


__all__ = ["import_onnx", "supported_onnx_ops", "constant_input_slots", "CONVERTERS",
           "converter", "NodeContext"]
