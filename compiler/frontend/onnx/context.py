"""NodeContext: what a converter sees of one ONNX node, and how it adds IR to the graph."""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol, Sequence

import onnx
import torch

from trident.compiler.errors import ModelError, TridentError, UnsupportedError, where
from trident.compiler.ir import SUPPORTED_DTYPES, GraphBuilder, Node, TensorType
from trident.compiler.ops import evaluate, infer_types

class ImportState(Protocol):
    """What converters reach of the importer (importer._Importer): declared here so that the
    context needs no import of the importer, which imports the context."""
    builder: GraphBuilder

    def value(self, name: str, cx: "NodeContext | None" = None) -> str: ...

    def tensor_from_proto(self, proto, name: str, cx: "NodeContext | None") -> torch.Tensor: ...

    def inline(self, graph: onnx.GraphProto, prefix: str) -> list[str]: ...


@dataclass
class NodeContext:
    """What a converter sees of one ONNX node, and how it adds IR to the graph."""
    imp: ImportState
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
                consts[name] = value.contiguous()  # (a folded expand is a stride-0 view)
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
