"""What converters see of the import: `Val` (a tensor known only at run time: an IR value's
name), `Missing` (a result slot trident does not produce) and `Ctx` (typed access to values, and
`emit`, which adds an IR node or folds it when all its inputs are constants); `on_one_device` for
folds on a model that sits on a GPU."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import torch
import torch.fx
from torch.utils._pytree import tree_flatten, tree_unflatten

from trident.compiler.errors import ShapeError, TridentError, UnsupportedError
from trident.compiler.ir import GraphBuilder, Node, TensorType
from trident.compiler.ops import evaluate, infer_types


# =============================================================================== values ====
@dataclass(frozen=True)
class Val:
    """A tensor known only at run time: the name of an IR value."""
    name: str


@dataclass(frozen=True)
class Missing:
    """A result slot trident does not produce (max-pool indices, batch-norm saved statistics).
    Harmless until something reads it; then it is an UnsupportedError naming what it was."""
    what: str


def _has_val(obj) -> bool:
    return any(isinstance(x, Val) for x in tree_flatten(obj)[0])


def _has_tensor(obj) -> bool:
    return any(isinstance(x, (Val, torch.Tensor)) for x in tree_flatten(obj)[0])


class Ctx:
    """What converters see: typed access to values and `emit`, which adds an IR node or, when all
    its inputs are constants, folds it with the op's reference (ops.evaluate)."""

    def __init__(self, name: str):
        self.b = GraphBuilder(name)
        self.node_name = ""                                     # fx node being converted
        self.fx_node: torch.fx.Node | None = None                # ... and the node itself
        self._consts: dict[int, tuple[torch.Tensor, str]] = {}  # id(tensor) -> (tensor, IR name)
        self._scalars: dict[tuple, str] = {}                    # (dtype, value) -> IR name
        self.hints: dict[int, tuple[torch.Tensor, str]] = {}    # id(tensor) -> (tensor, name hint)
        self._made: set[int] = set()  # storages the import allocated (folds): writable in place

    # -- types ------------------------------------------------------------------------------
    def type(self, v) -> TensorType:
        if isinstance(v, Val):
            return self.b.type_of(v.name)
        if isinstance(v, torch.Tensor):
            return TensorType.of(v)
        raise self._not_tensor(v)

    def shape(self, v) -> tuple[int, ...]:
        return tuple(self.type(v).shape)

    def dtype(self, v) -> torch.dtype:
        return self.type(v).dtype

    def rank(self, v) -> int:
        return self.type(v).rank

    def _not_tensor(self, v) -> TridentError:
        if isinstance(v, Missing):
            return UnsupportedError(f'fx node "{self.node_name}": uses {v.what}, which trident '
                                    "does not compute")
        return ShapeError(f'fx node "{self.node_name}": expected a tensor, got {v!r}')

    # -- emitting -----------------------------------------------------------------------------
    def name_of(self, v) -> str:
        """The IR name of a tensor value; a constant becomes a graph constant on first use."""
        if isinstance(v, Val):
            return v.name
        if not isinstance(v, torch.Tensor):
            raise self._not_tensor(v)
        if v.dim() == 0:  # scalars recur (0.5, 1e-5, -10000): one constant per (dtype, value)
            key = (v.dtype, repr(v.item()))  # repr keeps -0.0 and nan apart
            if key not in self._scalars:
                hint = self.hints.get(id(v), (None, "scalar"))[1]
                self._scalars[key] = self.b.constant(v.detach().cpu().clone(), _clean(hint))
            return self._scalars[key]
        if id(v) not in self._consts:
            hint = self.hints.get(id(v), (None, "const"))[1]
            # A snapshot: the graph must not change when the user's module does later. IR
            # constants live on the CPU whatever device the model is on (dynamo hands over the
            # weights on the GPU, and a folded position table may sit there too): the engine
            # places every constant on its own device, and passes fold constants together.
            name = self.b.constant(v.detach().cpu().clone().contiguous(), _clean(hint))
            self._consts[id(v)] = (v, name)
        return self._consts[id(v)][1]

    def emit_multi(self, op: str, inputs: Sequence, **attrs) -> list:
        if not _has_val(list(inputs)):
            return self._fold(op, inputs, attrs)
        names = [self.name_of(v) for v in inputs]
        return [Val(o) for o in self.b.add(op, names, attrs, name=self.node_name)]

    def emit(self, op: str, inputs: Sequence, **attrs):
        (out,) = self.emit_multi(op, inputs, **attrs)
        return out

    def _fold(self, op: str, inputs: Sequence, attrs: dict) -> list[torch.Tensor]:
        tensors = []
        for v in inputs:
            if not isinstance(v, torch.Tensor):
                raise self._not_tensor(v)
            tensors.append(v.detach())
        tensors = on_one_device(tensors)
        node = Node(op, (), (), dict(attrs), self.node_name)
        types = infer_types(node, [TensorType.of(t) for t in tensors])
        with torch.no_grad():
            outs = evaluate(node, tensors, types)
        # An expanded constant stays a stride-0 view (a weight broadcast over a batch for bmm
        # would otherwise be copied once per batch entry); anything else is made dense.
        outs = [t if op == "expand" else t.contiguous() for t in outs]
        self.note_made(outs, tensors)
        # Name a folded tensor after what it came from: "fc.weight.transpose".
        source = next((self.hints[id(t)][1] for t in inputs if id(t) in self.hints), None)
        for t in outs:
            self.hints[id(t)] = (t, f"{source}.{op}" if source else self.node_name)
        return outs

    def cast(self, v, dtype: torch.dtype):
        """v as `dtype`: a Python number becomes a constant, a constant is folded, a run-time
        value gets a cast where its dtype differs."""
        if isinstance(v, (bool, int, float)):
            return torch.tensor(v, dtype=dtype)
        return v if self.dtype(v) == dtype else self.emit("cast", [v], dtype=dtype)

    # -- tensors the import made ----------------------------------------------------------------
    def note_made(self, outputs, inputs=()) -> None:
        """Records the storages of folded `outputs` that none of `inputs` shares (new tensors,
        not views of a model's own): a slice assignment may write into those in place."""
        taken = {_storage(t) for t in tree_flatten(inputs)[0] if isinstance(t, torch.Tensor)}
        for t in tree_flatten(outputs)[0]:
            if isinstance(t, torch.Tensor) and _storage(t) not in taken:
                self._made.add(_storage(t))

    def made_here(self, t: torch.Tensor) -> bool:
        return _storage(t) in self._made

    def written(self, t: torch.Tensor) -> None:
        """`t`'s storage changed in place: later uses snapshot it again (earlier ones keep the
        constant they took, as they ran before the write)."""
        for key, (tensor, _) in list(self._consts.items()):
            if _storage(tensor) == _storage(t):
                del self._consts[key]



def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def on_one_device(values):
    """`values` (any nesting) with CPU tensors moved to the one other device among them.

    Import folds what does not depend on the inputs; in a dynamo graph of a GPU model the
    weights and tensors made with device=... are on the GPU while the scalars converters make
    are CPU tensors, and many torch ops refuse to mix them (T5's torch.min of bucket indices)."""
    leaves, spec = tree_flatten(values)
    devices = {x.device for x in leaves if isinstance(x, torch.Tensor)}
    others = [d for d in devices if d.type != "cpu"]
    if len(devices) < 2 or len(others) != 1:
        return values
    moved = [x.to(others[0]) if isinstance(x, torch.Tensor) and x.device.type == "cpu" else x
             for x in leaves]
    return tree_unflatten(moved, spec)


def _clean(hint: str) -> str:
    return hint.replace("/", ".") or "const"
