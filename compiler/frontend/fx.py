"""torch.fx frontend: an nn.Module, a torch.fx GraphModule or a torch.export ExportedProgram in,
an IR Graph out.

Four kinds of fx graph reach this importer, and one table of small converters serves them all:
- `torch.fx.symbolic_trace`: call_module leaves (nn.Conv2d, nn.Linear ...), torch.* / F.* /
  operator.* functions, Tensor methods, get_attr for parameters;
- `torch.export` (an nn.Module is exported, then decomposed to the core ATen set): aten overloads,
  parameters and buffers as placeholders named by the graph signature;
- `ExportedProgram.module()`: the same aten ops with get_attr parameters;
- dynamo (what a torch.compile backend receives): torch functions and methods, with parameters and
  buffers lifted to placeholders whose example inputs are the real tensors.

While importing, every fx node maps to a Python value: a `Val` (a tensor that is only known at run
time, i.e. an IR value), a torch.Tensor (a constant: parameter, buffer, or the result of folding),
or a plain Python object (an int from `x.size(1)`, a shape, a list of results). A node whose inputs
are all known at import time is folded instead of emitted, so shape arithmetic, position ids and
transposed weights never reach the IR.
"""
from __future__ import annotations

import builtins
import functools
import inspect
import math
import operator
import warnings
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple, Sequence

import torch
import torch.fx
import torch.nn as nn
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten, tree_unflatten

from trident.compiler.errors import ShapeError, TridentError, UnsupportedError
from trident.compiler.fx_mutation import assign, make_writes_explicit, writes_in_place
from trident.compiler.frontend import fx_decompose as decompose
from trident.compiler.frontend import fx_math
from trident.compiler.frontend.fx_aten import traced_call
from trident.compiler.frontend.fx_axes import axes as _axes
from trident.compiler.frontend.fx_axes import axis as _axis
from trident.compiler.frontend.fx_attention import Masks, Projections, multi_head_attention
from trident.compiler.frontend.fx_indexing import gather_adjacent
from trident.compiler.ir import SUPPORTED_DTYPES, Graph, GraphBuilder, Node, TensorType
from trident.compiler.ops import evaluate, infer_types

aten = torch.ops.aten

__all__ = ["import_fx", "supported_fx_target", "user_input_indices", "supported_targets",
           "target_label", "on_one_device"]


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


# ============================================================================== tables ====
FUNCTIONS: dict[Any, Callable] = {}  # call_function targets: aten, torch.*, F.*, operator.*
METHODS: dict[str, Callable] = {}    # call_method names (Tensor methods)
MODULES: dict[type, Callable] = {}   # call_module leaf types (symbolic_trace); fn(cx, module, ...)


def converts(*targets):
    """Register one converter for call_function targets (objects) and method names (strings)."""
    def register(fn: Callable) -> Callable:
        for t in targets:
            if isinstance(t, str):
                METHODS[t] = fn
            else:
                FUNCTIONS[t] = fn
        return fn
    return register


def converts_module(*types):
    def register(fn: Callable) -> Callable:
        for t in types:
            MODULES[t] = fn
        return fn
    return register


# ============================================================================= helpers ====
def _ints(args) -> list[int]:
    """Sizes given as varargs (x.view(2, -1)) or as one sequence (x.view((2, -1)))."""
    if len(args) == 1 and isinstance(args[0], (list, tuple, torch.Size)):
        args = args[0]
    return [int(a) for a in args]


def _tuple_n(v, n: int) -> list[int]:
    if isinstance(v, (list, tuple)):
        return [int(x) for x in v] if len(v) == n else [int(v[0])] * n
    return [int(v)] * n


def _proto(cx: Ctx, v):
    """A stand-in for torch.result_type: Vals become meta tensors of the right rank class."""
    if isinstance(v, Val):
        return torch.empty((1,) * cx.rank(v), dtype=cx.dtype(v), device="meta")
    return v


def _promote(cx: Ctx, *vs, dtype: torch.dtype | None = None) -> list:
    """Bring operands (Vals, constants, Python scalars) to one dtype: torch's promotion unless
    `dtype` is given."""
    dtype = dtype or _common_dtype(cx, vs)
    out = []
    for v in vs:
        if isinstance(v, Val):
            out.append(cx.cast(v, dtype))
        elif isinstance(v, torch.Tensor):
            out.append(v.to(dtype))
        else:
            out.append(torch.tensor(v, dtype=dtype))
    return out


def _common_dtype(cx: Ctx, vs: Sequence) -> torch.dtype:
    protos = [_proto(cx, v) for v in vs]
    if len(protos) == 1:
        return _scalar_dtype(protos[0])
    return functools.reduce(_result_type, protos)


def _result_type(a, b):
    """torch.result_type over a running result (a dtype stands for a 1-d tensor of it)."""
    if isinstance(a, torch.dtype):
        a = torch.empty(1, dtype=a, device="meta")
    return torch.result_type(a, b)


def _scalar_dtype(x) -> torch.dtype:
    if isinstance(x, torch.Tensor):
        return x.dtype
    if isinstance(x, bool):
        return torch.bool
    if isinstance(x, int):
        return torch.int64
    return torch.get_default_dtype()


def _binary(cx: Ctx, op: str, a, b):
    a, b = _promote(cx, a, b)
    return cx.emit(op, [a, b])


def _reshape(cx: Ctx, x, shape: Sequence[int]):
    """Reshape with -1 resolved (shapes are static), skipped when it changes nothing."""
    shape = list(torch.empty(cx.shape(x), device="meta").reshape(list(shape)).shape)
    if tuple(shape) == cx.shape(x):
        return x
    return cx.emit("reshape", [x], shape=shape)


def _transpose(cx: Ctx, x, perm: Sequence[int]):
    perm = [_axis(p, cx.rank(x)) for p in perm]
    if perm == list(range(len(perm))):
        return x
    return cx.emit("transpose", [x], perm=perm)


def _identity(cx: Ctx, x, *args, **kwargs):
    return x


# ========================================================================= elementwise ====
def _unary(op: str):
    def convert(cx: Ctx, x, inplace: bool = False):
        return cx.emit(op, [x])
    return convert


for _op, _targets in {
    "relu": [aten.relu.default, torch.relu, F.relu, torch.relu_, "relu"],
    "sigmoid": [aten.sigmoid.default, torch.sigmoid, F.sigmoid, "sigmoid"],
    "tanh": [aten.tanh.default, torch.tanh, F.tanh, "tanh"],
    "exp": [aten.exp.default, torch.exp, "exp"],
    "log": [aten.log.default, torch.log, "log"],
    "sqrt": [aten.sqrt.default, torch.sqrt, "sqrt"],
    "reciprocal": [aten.reciprocal.default, torch.reciprocal, "reciprocal"],
    "neg": [aten.neg.default, torch.neg, operator.neg, "neg", "__neg__"],
    "abs": [aten.abs.default, torch.abs, operator.abs, "abs", "__abs__"],
    "erf": [aten.erf.default, torch.erf, torch.special.erf, "erf"],
    "erfc": [aten.erfc.default, torch.erfc, torch.special.erfc, "erfc"],
    "asin": [aten.asin.default, torch.asin, torch.arcsin, "asin", "arcsin"],
    "acos": [aten.acos.default, torch.acos, torch.arccos, "acos", "arccos"],
    "atan": [aten.atan.default, torch.atan, torch.arctan, "atan", "arctan"],
    "silu": [aten.silu.default, F.silu],
    "hard_swish": [aten.hardswish.default, F.hardswish],
    "not": [aten.logical_not.default, torch.logical_not, "logical_not"],
    "sin": [aten.sin.default, torch.sin, "sin"],
    "cos": [aten.cos.default, torch.cos, "cos"],
    "tan": [aten.tan.default, torch.tan, "tan"],
    "floor": [aten.floor.default, torch.floor, "floor"],
    "ceil": [aten.ceil.default, torch.ceil, "ceil"],
    "is_nan": [aten.isnan.default, torch.isnan, "isnan"],
    "exp2": [aten.exp2.default, torch.exp2, torch.special.exp2, "exp2"],
    "log2": [aten.log2.default, torch.log2, "log2"],
}.items():
    converts(*_targets)(_unary(_op))


@converts(aten.sign.default, aten.sgn.default, torch.sign, torch.sgn, "sign", "sgn")
def _sign(cx: Ctx, x):
    """torch.sign is 0 at NaN (the IR's sign, ONNX's, keeps NaN)."""
    sign = cx.emit("sign", [x])
    if not cx.dtype(x).is_floating_point:
        return sign
    return cx.emit("where", [cx.emit("is_nan", [x]), torch.tensor(0, dtype=cx.dtype(x)), sign])


@converts(aten.bitwise_not.default, torch.bitwise_not, operator.invert, "bitwise_not")
def _bitwise_not(cx: Ctx, x):
    if cx.dtype(x) != torch.bool:
        raise UnsupportedError(f'fx node "{cx.node_name}": bitwise not of {cx.dtype(x)} '
                               "(only bool is supported)")
    return cx.emit("not", [x])


@converts(aten.rsqrt.default, torch.rsqrt, "rsqrt")
def _rsqrt(cx: Ctx, x):
    return cx.emit("reciprocal", [cx.emit("sqrt", [x])])


@converts(aten.gelu.default, F.gelu, "gelu")
def _gelu(cx: Ctx, x, approximate: str = "none"):
    return cx.emit("gelu", [x], approximate=approximate)


@converts(aten.leaky_relu.default, F.leaky_relu)
def _leaky_relu(cx: Ctx, x, negative_slope: float = 0.01, inplace: bool = False):
    return cx.emit("leaky_relu", [x], alpha=float(negative_slope))


@converts(F.rrelu, torch.rrelu)
def _rrelu(cx: Ctx, x, lower: float = 1.0 / 8, upper: float = 1.0 / 3, training: bool = False,
           inplace: bool = False):
    """In eval mode a leaky relu with the mean slope; training mode draws random slopes."""
    if training:
        raise UnsupportedError(f'fx node "{cx.node_name}": rrelu in training mode (random slopes)')
    return _leaky_relu(cx, x, (float(lower) + float(upper)) / 2)


@converts(aten.hardsigmoid.default, F.hardsigmoid)
def _hardsigmoid(cx: Ctx, x, inplace: bool = False):
    return cx.emit("hard_sigmoid", [x], alpha=1.0 / 6.0, beta=0.5)  # relu6(x + 3) / 6


@converts(aten.hardtanh.default, F.hardtanh)
def _hardtanh(cx: Ctx, x, min_val: float = -1.0, max_val: float = 1.0, inplace: bool = False):
    return cx.emit("clip", [x], min=float(min_val), max=float(max_val))


@converts(aten.relu6.default, F.relu6)
def _relu6(cx: Ctx, x, inplace: bool = False):
    return cx.emit("clip", [x], min=0.0, max=6.0)


converts(F.elu)(fx_math.elu)
converts(aten.elu.default)(fx_math.aten_elu)
converts(F.selu, torch.selu)(fx_math.selu)
converts(F.celu, torch.celu)(fx_math.celu)
converts(F.softplus, aten.softplus.default)(fx_math.softplus)
converts(F.logsigmoid)(fx_math.log_sigmoid)
converts(F.mish, aten.mish.default)(fx_math.mish)
converts(F.softsign)(fx_math.softsign)
converts(F.hardshrink, torch.hardshrink, aten.hardshrink.default, "hardshrink")(fx_math.hardshrink)
converts(F.softshrink, aten.softshrink.default)(fx_math.softshrink)
converts(F.glu, aten.glu.default)(fx_math.glu)
converts(torch.log1p, torch.special.log1p, aten.log1p.default, "log1p")(fx_math.log1p)
converts(torch.expm1, torch.special.expm1, aten.expm1.default, "expm1")(fx_math.expm1)
converts(torch.log10, aten.log10.default, "log10")(fx_math.log10)
converts(torch.signbit, aten.signbit.default, "signbit")(fx_math.signbit)
converts(torch.isclose, aten.isclose.default, "isclose")(fx_math.isclose)
converts(F.cosine_similarity, torch.cosine_similarity, aten.cosine_similarity.default)(fx_math.cosine_similarity)
converts(torch.var, aten.var.correction, aten.var.dim, "var")(fx_math.variance)
converts(torch.std, aten.std.correction, aten.std.dim, "std")(fx_math.std)


# (a bool dim is the old positional `unbiased` flag: the mean is then over every dim)
@converts(torch.var_mean, aten.var_mean.correction, aten.var_mean.dim)
def _var_mean(cx: Ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    variance = fx_math.variance(cx, x, dim, unbiased, keepdim, correction=correction)
    return variance, _mean(cx, x, None if isinstance(dim, bool) else dim, keepdim)


@converts(torch.std_mean, aten.std_mean.correction, aten.std_mean.dim)
def _std_mean(cx: Ctx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    deviation = fx_math.std(cx, x, dim, unbiased, keepdim, correction=correction)
    return deviation, _mean(cx, x, None if isinstance(dim, bool) else dim, keepdim)


@converts(aten.isinf.default, torch.isinf, "isinf")
def _isinf(cx: Ctx, x):
    return cx.emit("is_inf", [x], positive=True, negative=True)


@converts(aten.round.default, aten.round.decimals, torch.round, "round")
def _round(cx: Ctx, x, *, decimals: int = 0):
    """Half to even; with decimals, as torch computes it: round(x * 10^d) / 10^d, or for d < 0
    round(x / 10^-d) * 10^-d (the power rounded to x's dtype)."""
    if not decimals:
        return cx.emit("round", [x])
    power = torch.tensor(10.0 ** abs(int(decimals)), dtype=cx.dtype(x))
    if decimals > 0:
        return cx.emit("div", [cx.emit("round", [cx.emit("mul", [x, power])]), power])
    return cx.emit("mul", [cx.emit("round", [cx.emit("div", [x, power])]), power])


@converts(aten.trunc.default, torch.trunc, torch.fix, "trunc", "fix")
def _trunc(cx: Ctx, x):
    """Towards zero: ceil below 0, floor elsewhere (NaN and infinities stay)."""
    if not cx.dtype(x).is_floating_point:
        return x
    negative = _binary(cx, "less", x, 0.0)
    return cx.emit("where", [negative, cx.emit("ceil", [x]), cx.emit("floor", [x])])


@converts(torch.square, "square")
def _square(cx: Ctx, x):
    return _binary(cx, "mul", x, x)


@converts(aten.clamp.default, aten.clamp.Tensor, torch.clamp, torch.clip, "clamp", "clip")
def _clamp(cx: Ctx, x, min=None, max=None):
    if isinstance(min, (Val, torch.Tensor)) or isinstance(max, (Val, torch.Tensor)):
        if min is not None:
            x = _binary(cx, "maximum", x, min)
        return x if max is None else _binary(cx, "minimum", x, max)
    if min is None and max is None:
        return x
    as_num = float if cx.dtype(x).is_floating_point else int
    return cx.emit("clip", [x], min=None if min is None else as_num(min),
                   max=None if max is None else as_num(max))


@converts(aten.clamp_min.default, torch.clamp_min, "clamp_min")
def _clamp_min(cx: Ctx, x, min):
    return _clamp(cx, x, min=min)


@converts(aten.clamp_max.default, torch.clamp_max, "clamp_max")
def _clamp_max(cx: Ctx, x, max):
    return _clamp(cx, x, max=max)


# ----------------------------------------------------------------------- arithmetic ----
@converts(aten.add.Tensor, aten.add.Scalar, torch.add, operator.add, operator.iadd, "add",
          "__add__", "__radd__")
def _add(cx: Ctx, a, b, alpha=1):
    if isinstance(a, (tuple, list)):  # split(...) + chunk(...): sequences of results concatenate
        return type(a)(a) + type(a)(b)
    if alpha != 1:
        b = _binary(cx, "mul", b, alpha)
    return _binary(cx, "add", a, b)


@converts(aten.sub.Tensor, aten.sub.Scalar, torch.sub, operator.sub, operator.isub, "sub",
          "__sub__")
def _sub(cx: Ctx, a, b, alpha=1):
    if alpha != 1:
        b = _binary(cx, "mul", b, alpha)
    return _binary(cx, "sub", a, b)


@converts(aten.rsub.Scalar, aten.rsub.Tensor, torch.rsub, "__rsub__")
def _rsub(cx: Ctx, a, b, alpha=1):
    return _sub(cx, b, a, alpha)


@converts(aten.remainder.Tensor, aten.remainder.Scalar, torch.remainder, operator.mod, operator.imod,
          "remainder", "__mod__")
def _remainder(cx: Ctx, a, b):
    return _binary(cx, "mod", a, b)  # the divisor's sign, as Python's % and torch.remainder


@converts(aten.fmod.Tensor, aten.fmod.Scalar, torch.fmod, "fmod")
def _fmod(cx: Ctx, a, b):
    return _binary(cx, "fmod", a, b)  # the dividend's sign, as C's fmod


@converts(aten.mul.Tensor, aten.mul.Scalar, torch.mul, torch.multiply, operator.mul, operator.imul, "mul",
          "multiply", "__mul__", "__rmul__")
def _mul(cx: Ctx, a, b):
    return _binary(cx, "mul", a, b)


@converts(aten.div.Tensor, aten.div.Scalar, aten.div.Tensor_mode, torch.div, torch.true_divide,
          operator.truediv, operator.itruediv, "div", "__truediv__")
def _div(cx: Ctx, a, b, rounding_mode: str | None = None):
    if rounding_mode is None:
        return _float_binary(cx, "div", a, b)
    a, b = _promote(cx, a, b)
    floating = cx.dtype(a).is_floating_point
    if rounding_mode == "trunc":  # the IR's integer division truncates
        return _trunc(cx, cx.emit("div", [a, b])) if floating else cx.emit("div", [a, b])
    if rounding_mode == "floor":
        return _floor_div_float(cx, a, b) if floating else _floor_div_int(cx, a, b)
    raise UnsupportedError(f'fx node "{cx.node_name}": division with rounding_mode="{rounding_mode}"')


@converts(aten.floor_divide.default, aten.floor_divide.Scalar, torch.floor_divide, operator.floordiv,
          "floor_divide", "__floordiv__")
def _floor_divide(cx: Ctx, a, b):
    if not isinstance(a, (Val, torch.Tensor)) and not isinstance(b, (Val, torch.Tensor)):
        return a // b  # shape arithmetic on Python numbers
    return _div(cx, a, b, rounding_mode="floor")


def _remainder_across_zero(cx: Ctx, remainder, b, zero):
    """Where a truncated quotient is one above the floor: the remainder is nonzero and its sign
    differs from the divisor's."""
    nonzero = cx.emit("not", [cx.emit("equal", [remainder, zero])])
    differs = cx.emit("logical_xor", [cx.emit("less", [remainder, zero]), cx.emit("less", [b, zero])])
    return cx.emit("logical_and", [nonzero, differs])


def _floor_div_int(cx: Ctx, a, b):
    """Integers: the truncated quotient, one less where the remainder crosses zero."""
    quotient, remainder = cx.emit("div", [a, b]), cx.emit("fmod", [a, b])
    one_less = _remainder_across_zero(cx, remainder, b, torch.tensor(0, dtype=cx.dtype(a)))
    return cx.emit("sub", [quotient, cx.cast(one_less, cx.dtype(a))])


def _floor_div_float(cx: Ctx, a, b):
    """Floats, as torch computes them (Python's //): (a - fmod(a, b)) / b, one less where the
    remainder's sign differs from b's, rounded to the nearest integer below or at it; a / b where
    b is 0, and 0 with the quotient's sign where it is 0."""
    dtype = cx.dtype(a)
    zero, one, half = (torch.tensor(v, dtype=dtype) for v in (0.0, 1.0, 0.5))
    remainder = cx.emit("fmod", [a, b])
    div = cx.emit("div", [cx.emit("sub", [a, remainder]), b])
    off = _remainder_across_zero(cx, remainder, b, zero)
    div = cx.emit("where", [off, cx.emit("sub", [div, one]), div])
    floor = cx.emit("floor", [div])
    rounds_up = cx.emit("greater", [cx.emit("sub", [div, floor]), half])
    floor = cx.emit("where", [rounds_up, cx.emit("add", [floor, one]), floor])
    quotient = cx.emit("div", [a, b])
    floor = cx.emit("where", [cx.emit("equal", [div, zero]), cx.emit("mul", [zero, quotient]), floor])
    return cx.emit("where", [cx.emit("equal", [b, zero]), quotient, floor])


def _float_binary(cx: Ctx, op: str, a, b):
    """An op whose integer operands give floats (torch promotes them to the default dtype)."""
    a, b = _promote(cx, a, b)
    if not cx.dtype(a).is_floating_point:
        a, b = _promote(cx, a, b, dtype=torch.get_default_dtype())
    return cx.emit(op, [a, b])


@converts(aten.atan2.default, torch.atan2, torch.arctan2, "atan2", "arctan2")
def _atan2(cx: Ctx, y, x):
    return _float_binary(cx, "atan2", y, x)


@converts(aten.hypot.default, torch.hypot, "hypot")
def _hypot(cx: Ctx, a, b):
    return _float_binary(cx, "hypot", a, b)


@converts(aten.copysign.Tensor, aten.copysign.Scalar, torch.copysign, "copysign")
def _copysign(cx: Ctx, a, b):
    return _float_binary(cx, "copysign", a, b)


@converts(aten.pow.Tensor_Scalar, aten.pow.Tensor_Tensor, aten.pow.Scalar, torch.pow,
          operator.pow, "pow", "__pow__")
def _pow(cx: Ctx, a, b):
    return _binary(cx, "pow", a, b)


def _nan_ignoring(op: str):
    """fmax / fmin: `op` (maximum / minimum, which keep NaN), but the other operand where one is
    NaN (NaN only where both are)."""
    def convert(cx: Ctx, a, b):
        a, b = _promote(cx, a, b)
        both = cx.emit(op, [a, b])
        if not cx.dtype(a).is_floating_point:
            return both
        return cx.emit("where", [cx.emit("is_nan", [a]), b, cx.emit("where", [cx.emit("is_nan", [b]), a, both])])
    return convert


converts(aten.fmax.default, torch.fmax, "fmax")(_nan_ignoring("maximum"))
converts(aten.fmin.default, torch.fmin, "fmin")(_nan_ignoring("minimum"))


@converts(aten.maximum.default, torch.maximum, "maximum")
def _maximum(cx: Ctx, a, b):
    return _binary(cx, "maximum", a, b)


@converts(aten.minimum.default, torch.minimum, "minimum")
def _minimum(cx: Ctx, a, b):
    return _binary(cx, "minimum", a, b)


# ----------------------------------------------------------------------- comparisons ----
def _compare(op: str, negate: bool = False):
    # ne, le and ge are the negations of equal, greater and less. (With NaNs le/ge differ from
    # not-greater/not-less; models compare masks and indices, not NaNs.)
    def convert(cx: Ctx, a, b):
        out = _binary(cx, op, a, b)
        return cx.emit("not", [out]) if negate else out
    return convert


for _op, _neg, _targets in [
    ("equal", False, [aten.eq.Tensor, aten.eq.Scalar, torch.eq, operator.eq, "eq", "__eq__"]),
    ("equal", True, [aten.ne.Tensor, aten.ne.Scalar, torch.ne, operator.ne, "ne", "__ne__"]),
    ("less", False, [aten.lt.Tensor, aten.lt.Scalar, torch.lt, operator.lt, "lt", "__lt__"]),
    ("greater", False, [aten.gt.Tensor, aten.gt.Scalar, torch.gt, operator.gt, "gt", "__gt__"]),
    ("greater", True, [aten.le.Tensor, aten.le.Scalar, torch.le, operator.le, "le", "__le__"]),
    ("less", True, [aten.ge.Tensor, aten.ge.Scalar, torch.ge, operator.ge, "ge", "__ge__"]),
]:
    converts(*_targets)(_compare(_op, _neg))


@converts(aten.where.self, aten.where.ScalarSelf, aten.where.ScalarOther, aten.where.Scalar,
          torch.where)
def _where(cx: Ctx, condition, input, other):
    condition = _promote(cx, condition, dtype=torch.bool)[0]
    a, b = _promote(cx, input, other)
    return cx.emit("where", [condition, a, b])


@converts("where")
def _where_method(cx: Ctx, input, condition, other):
    """x.where(condition, other) is torch.where(condition, x, other): the tensor it is called on
    is the values, not the condition (Longformer masks its scores so)."""
    return _where(cx, condition, input, other)


def _as_bool(cx: Ctx, v):
    """Truth value as torch's logical ops take it: bool as is, anything else != 0."""
    if isinstance(v, (Val, torch.Tensor)) and cx.dtype(v) != torch.bool:
        return cx.emit("not", [_binary(cx, "equal", v, 0)])
    return _promote(cx, v, dtype=torch.bool)[0]


def _bool_only(cx: Ctx, what: str, *vs) -> None:
    if any(isinstance(v, (Val, torch.Tensor)) and cx.dtype(v) != torch.bool for v in vs):
        raise UnsupportedError(f'fx node "{cx.node_name}": bitwise {what} of integers '
                               "(only bool tensors)")


# The IR has no and/or/xor; on booleans they are selections and a comparison.
@converts(aten.logical_and.default, torch.logical_and, "logical_and")
def _logical_and(cx: Ctx, a, b):
    return cx.emit("where", [_as_bool(cx, a), _as_bool(cx, b), torch.tensor(False)])


@converts(aten.logical_or.default, torch.logical_or, "logical_or")
def _logical_or(cx: Ctx, a, b):
    return cx.emit("where", [_as_bool(cx, a), torch.tensor(True), _as_bool(cx, b)])


@converts(aten.logical_xor.default, torch.logical_xor, "logical_xor")
def _logical_xor(cx: Ctx, a, b):
    return cx.emit("not", [cx.emit("equal", [_as_bool(cx, a), _as_bool(cx, b)])])


@converts(aten.bitwise_and.Tensor, aten.bitwise_and.Scalar, torch.bitwise_and, operator.and_,
          "bitwise_and", "__and__")
def _bitwise_and(cx: Ctx, a, b):
    _bool_only(cx, "and", a, b)
    return _logical_and(cx, a, b)


@converts(aten.bitwise_or.Tensor, aten.bitwise_or.Scalar, torch.bitwise_or, operator.or_,
          "bitwise_or", "__or__")
def _bitwise_or(cx: Ctx, a, b):
    _bool_only(cx, "or", a, b)
    return _logical_or(cx, a, b)


@converts(aten.bitwise_xor.Tensor, aten.bitwise_xor.Scalar, torch.bitwise_xor, operator.xor,
          "bitwise_xor", "__xor__")
def _bitwise_xor(cx: Ctx, a, b):
    _bool_only(cx, "xor", a, b)
    return _logical_xor(cx, a, b)


@converts(aten.masked_fill.Scalar, aten.masked_fill.Tensor, torch.masked_fill, "masked_fill")
def _masked_fill(cx: Ctx, x, mask, value):
    value = _promote(cx, value, dtype=cx.dtype(x))[0]
    return _where(cx, mask, value, x)


# --------------------------------------------------------------------------- casts ----
@converts(aten._to_copy.default)
def _to_copy(cx: Ctx, x, dtype=None, layout=None, device=None, pin_memory=None,
             non_blocking=False, memory_format=None):
    return x if dtype is None else cx.cast(x, dtype)


@converts(aten.to.dtype, aten.to.dtype_layout, aten.to.device, aten.to.other, "to")
def _to(cx: Ctx, x, *args, **kwargs):
    """x.to(dtype) / x.to(device, dtype) / x.to(other): only the dtype matters here."""
    dtype = kwargs.get("dtype")
    for a in args:
        if isinstance(a, torch.dtype):
            dtype = a
        elif isinstance(a, (Val, torch.Tensor)):
            dtype = cx.dtype(a)
    return x if dtype is None else cx.cast(x, dtype)


@converts("type")
def _type(cx: Ctx, x, dtype=None, non_blocking=False):
    if not isinstance(dtype, torch.dtype):
        raise UnsupportedError(f'fx node "{cx.node_name}": Tensor.type({dtype!r})')
    return cx.cast(x, dtype)


@converts(aten.type_as.default, "type_as")
def _type_as(cx: Ctx, x, other):
    return cx.cast(x, cx.dtype(other))


for _method, _dtype in {"float": torch.float32, "half": torch.float16, "bfloat16": torch.bfloat16,
                        "int": torch.int32, "long": torch.int64, "bool": torch.bool}.items():
    converts(_method)(lambda cx, x, memory_format=None, _d=_dtype: cx.cast(x, _d))

converts(aten.alias.default, aten.detach.default, torch.detach, "detach")(_identity)
# An autograd flag (MRA sets it on its attention inputs): nothing an inference engine computes.
converts("requires_grad_")(lambda cx, x, requires_grad=True: x)


@converts(aten.clone.default, aten.lift_fresh_copy.default, torch.clone, "clone")
def _clone(cx: Ctx, x, *, memory_format=None):
    """A graph value as it is (values are never written in place); a constant the import holds
    copied, as torch copies it, so a slice assignment into the copy finds dense memory of its
    own (transformers 4.x's BLOOM and BioGPT clone an expanded mask, then write into it)."""
    if not isinstance(x, torch.Tensor):
        return x
    copy = x.clone(memory_format=torch.contiguous_format)
    cx.note_made(copy)
    return copy


@converts(aten.contiguous.default, "contiguous")
def _contiguous(cx: Ctx, x, memory_format=None):
    """As clone where a constant is not contiguous (torch copies it then); else itself."""
    return x if not isinstance(x, torch.Tensor) or x.is_contiguous() else _clone(cx, x)


# ============================================================================== matmul ====
@converts(aten.mm.default, aten.bmm.default, aten.matmul.default, torch.mm, torch.bmm,
          torch.matmul, operator.matmul, "matmul", "mm", "bmm", "__matmul__")
def _matmul(cx: Ctx, a, b):
    """torch.matmul; a 1-D operand is a one-row (first) or one-column (second) matrix whose dim
    the result drops, as torch defines it."""
    vector_a, vector_b = cx.rank(a) == 1, cx.rank(b) == 1
    if vector_a:
        a = _reshape(cx, a, [1, cx.shape(a)[0]])
    if vector_b:
        b = _reshape(cx, b, [cx.shape(b)[0], 1])
    y = _binary(cx, "matmul", a, _unbroadcast_weight(cx, a, b))
    if vector_a or vector_b:
        shape = list(cx.shape(y))
        drop = ([len(shape) - 2] if vector_a else []) + ([len(shape) - 1] if vector_b else [])
        y = _reshape(cx, y, [n for k, n in enumerate(shape) if k not in drop])
    return y


def _unbroadcast_weight(cx: Ctx, a, b):
    """A constant B expanded over batch dims that A has anyway (F.linear on a 3-D input that is
    not contiguous becomes bmm(A, W^T.expand(L, K, N))) as the 2-D weight it is: one [K, N]
    operand, which matmul broadcasts, instead of L copies and an L-batched GEMM."""
    if not isinstance(b, torch.Tensor) or b.dim() < 3 or cx.rank(a) < b.dim():
        return b
    batch = b.shape[:-2]
    if any(s != 1 and st != 0 for s, st in zip(batch, b.stride()[:-2])):
        return b  # really differs along a batch dim
    a_batch = cx.shape(a)[cx.rank(a) - b.dim():-2]
    if any(s not in (1, t) for s, t in zip(batch, a_batch)):
        return b  # B's batch dims would widen the result
    weight = b[(0,) * len(batch)]
    if id(b) in cx.hints:  # keep the weight's name: "attn.in_proj_weight.transpose"
        cx.hints[id(weight)] = (weight, cx.hints[id(b)][1].removesuffix(".expand"))
    return weight


@converts(aten.linear.default, F.linear)
def _linear(cx: Ctx, input, weight, bias=None):
    # y = x W^T + b. A constant W is transposed here, at import (emit folds it), so the IR
    # holds a plain [in, out] matmul operand.
    w_t = _transpose(cx, weight, [1, 0]) if cx.rank(weight) == 2 else weight
    y = _matmul(cx, input, w_t)
    return y if bias is None else _add(cx, y, bias)


@converts(aten.addmm.default, torch.addmm, "addmm")
def _addmm(cx: Ctx, input, mat1, mat2, beta=1, alpha=1):
    """beta * input + alpha * (mat1 @ mat2); beta = 0 ignores input, NaN included, as torch does."""
    y = _matmul(cx, mat1, mat2)
    if alpha != 1:
        y = _mul(cx, y, alpha)
    if beta == 0:
        return y
    return _add(cx, y, input if beta == 1 else _mul(cx, input, beta))


@converts(aten.baddbmm.default, torch.baddbmm, "baddbmm")
def _baddbmm(cx: Ctx, input, batch1, batch2, *, beta=1, alpha=1):
    """The batched addmm (BLOOM's ALiBi scores)."""
    return _addmm(cx, input, batch1, batch2, beta, alpha)


@converts(aten.t.default, torch.t, "t")
def _t(cx: Ctx, x):
    return x if cx.rank(x) < 2 else _transpose(cx, x, [1, 0])


def _matrix_transpose(cx: Ctx, x):
    """x.mT (and x.mH of a real tensor): the last two dims swapped."""
    rank = cx.rank(x)
    if rank < 2:
        raise ShapeError(f'fx node "{cx.node_name}": .mT of a {rank}-D tensor')
    return _transpose(cx, x, list(range(rank - 2)) + [rank - 1, rank - 2])


# ================================================================================ conv ====
def _conv_pads(cx: Ctx, padding, weight, dilation: list[int], n: int) -> list[int]:
    """Padding as the IR wants it: (begin..., end...). 'same' puts the odd pixel at the end."""
    if padding == "valid":
        return [0] * (2 * n)
    if padding == "same":
        k = cx.shape(weight)[2:]
        total = [d * (kk - 1) for d, kk in zip(dilation, k)]
        return [t // 2 for t in total] + [t - t // 2 for t in total]
    return _tuple_n(padding, n) * 2


def _conv(cx: Ctx, input, weight, bias=None, stride=1, padding=0, dilation=1, groups=1):
    n = cx.rank(weight) - 2
    strides, dilations = _tuple_n(stride, n), _tuple_n(dilation, n)
    pads = _conv_pads(cx, padding, weight, dilations, n)
    if isinstance(padding, str) and padding == "same" and any(s != 1 for s in strides):
        raise UnsupportedError(f'fx node "{cx.node_name}": padding="same" needs stride 1')
    dtype = _common_dtype(cx, [input, weight])
    inputs = _promote(cx, input, weight)
    if bias is not None:
        inputs += _promote(cx, bias, dtype=dtype)
    return cx.emit("conv", inputs, strides=strides, pads=pads, dilations=dilations,
                   groups=int(groups))


converts(aten.conv1d.default, aten.conv2d.default, aten.conv3d.default, aten.conv1d.padding,
         aten.conv2d.padding, torch.conv1d, torch.conv2d, torch.conv3d, F.conv1d, F.conv2d,
         F.conv3d)(_conv)


@converts(aten.convolution.default)
def _convolution(cx: Ctx, input, weight, bias, stride, padding, dilation, transposed,
                 output_padding, groups):
    if transposed:
        return _conv_transpose(cx, input, weight, bias, stride, padding, output_padding, groups,
                               dilation)
    return _conv(cx, input, weight, bias, stride, padding, dilation, groups)


def _conv_transpose(cx: Ctx, input, weight, bias=None, stride=1, padding=0, output_padding=0,
                    groups=1, dilation=1):
    """One IR conv_transpose (ONNX's: the same weight layout [C, OC / groups, k...]; torch's
    padding crops both ends of each spatial dim). It runs in torch inside the engine (DPT's
    reassemble stage, U-Net decoders) instead of sending its whole partition there."""
    n = cx.rank(weight) - 2
    if isinstance(padding, str):
        raise UnsupportedError(f'fx node "{cx.node_name}": transposed convolution with padding '
                               f"{padding!r}")
    dtype = _common_dtype(cx, [input, weight])
    inputs = _promote(cx, input, weight) + ([] if bias is None else _promote(cx, bias, dtype=dtype))
    return cx.emit("conv_transpose", inputs, strides=_tuple_n(stride, n),
                   pads=_tuple_n(padding, n) * 2, dilations=_tuple_n(dilation, n),
                   output_padding=_tuple_n(output_padding, n), groups=int(groups))


converts(F.conv_transpose1d, F.conv_transpose2d, F.conv_transpose3d, aten.conv_transpose1d.default,
         aten.conv_transpose2d.input, aten.conv_transpose3d.input)(_conv_transpose)


def _m_conv_transpose(cx: Ctx, m, x, output_size=None):
    if output_size is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": {type(m).__name__} with output_size')
    return _conv_transpose(cx, x, m.weight, m.bias, m.stride, m.padding, m.output_padding,
                           m.groups, m.dilation)


converts_module(nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)(_m_conv_transpose)


# ====================================================================== normalization ====
def _filled_if_none(t, shape, dtype, fill: float):
    return torch.full(tuple(shape), fill, dtype=dtype) if t is None else t


def _bn(cx: Ctx, x, weight, bias, mean, var, eps: float):
    c = (cx.shape(x)[1],)
    dt = cx.dtype(x)
    weight, bias = _filled_if_none(weight, c, dt, 1.0), _filled_if_none(bias, c, dt, 0.0)
    args = _promote(cx, x, weight, bias, mean, var, dtype=dt)
    return cx.emit("batch_norm", args, epsilon=float(eps))


@converts(aten._native_batch_norm_legit_no_training.default)
def _native_bn(cx: Ctx, input, weight, bias, running_mean, running_var, momentum, eps):
    y = _bn(cx, input, weight, bias, running_mean, running_var, eps)
    return (y, Missing("batch-norm saved mean"), Missing("batch-norm saved inverse std"))


@converts(aten.batch_norm.default)
def _aten_bn(cx: Ctx, input, weight, bias, running_mean, running_var, training, momentum, eps,
             cudnn_enabled=True):
    return _f_batch_norm(cx, input, running_mean, running_var, weight, bias, training,
                         momentum, eps)


@converts(F.batch_norm, torch.batch_norm)
def _f_batch_norm(cx: Ctx, input, running_mean, running_var, weight=None, bias=None,
                 training=False, momentum=0.1, eps=1e-5, *rest):
    if running_mean is None and running_var is None:  # batch statistics, and nothing to update
        return decompose.batch_norm_batch_stats(cx, input, weight, bias, eps)
    if training or running_mean is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": batch norm in training mode '
                               "(call model.eval() before compiling)")
    return _bn(cx, input, weight, bias, running_mean, running_var, eps)


@converts(aten._native_batch_norm_legit.no_stats)
def _native_bn_batch_stats(cx: Ctx, input, weight, bias, training, momentum, eps):
    y = decompose.batch_norm_batch_stats(cx, input, weight, bias, eps)
    return (y, Missing("batch-norm saved mean"), Missing("batch-norm saved inverse std"))


converts(torch.norm, aten.norm.ScalarOpt_dim, aten.norm.Scalar, "norm")(decompose.tensor_norm)
converts(torch.linalg.vector_norm, aten.linalg_vector_norm.default)(decompose.vector_norm)
converts(F.normalize)(decompose.normalize)
converts(torch._weight_norm, aten._weight_norm.default)(decompose.weight_norm)
converts(aten.group_norm.default, F.group_norm, torch.group_norm)(decompose.group_norm)
converts(aten.argmax.default, torch.argmax, "argmax")(decompose.arg_extreme("argmax"))
converts(aten.topk.default, torch.topk, "topk")(decompose.topk)
converts(torch.cdist, aten.cdist.default, aten._cdist_forward.default)(decompose.cdist)
converts(aten.argmin.default, torch.argmin, "argmin")(decompose.arg_extreme("argmin"))


def _ln(cx: Ctx, x, normalized_shape, weight, bias, eps):
    shape = _ints([normalized_shape])
    axis = cx.rank(x) - len(shape)
    dt = cx.dtype(x)
    weight = _promote(cx, _filled_if_none(weight, shape, dt, 1.0), dtype=dt)[0]
    inputs = [x, weight] + ([] if bias is None else _promote(cx, bias, dtype=dt))
    return cx.emit("layer_norm", inputs, axis=axis, epsilon=float(eps))


@converts(aten.native_layer_norm.default)
def _native_ln(cx: Ctx, input, normalized_shape, weight, bias, eps):
    return (_ln(cx, input, normalized_shape, weight, bias, eps),
            Missing("layer-norm saved mean"), Missing("layer-norm saved inverse std"))


@converts(aten.layer_norm.default, F.layer_norm, torch.layer_norm)
def _layer_norm(cx: Ctx, input, normalized_shape, weight=None, bias=None, eps=1e-5,
                cudnn_enable=True):
    return _ln(cx, input, normalized_shape, weight, bias, eps)


@converts(F.rms_norm, torch.rms_norm, aten.rms_norm.default)
def _rms_norm(cx: Ctx, input, normalized_shape, weight=None, eps=None):
    """x / sqrt(mean(x²) + eps) * weight over the last dims; eps defaults to the dtype's."""
    shape = _ints([normalized_shape])
    dt = cx.dtype(input)
    eps = torch.finfo(dt).eps if eps is None else float(eps)
    weight = _promote(cx, _filled_if_none(weight, shape, dt, 1.0), dtype=dt)[0]
    return cx.emit("rms_norm", [input, weight], axis=cx.rank(input) - len(shape), epsilon=eps)


@converts(F.instance_norm, torch.instance_norm)
def _instance_norm(cx: Ctx, input, running_mean=None, running_var=None, weight=None, bias=None,
                   use_input_stats=True, momentum=0.1, eps=1e-5, cudnn_enabled=False):
    """Each (sample, channel) normalized over its positions: a group norm with a group per
    channel. With running statistics instead (use_input_stats=False), a batch norm."""
    if not use_input_stats:
        return _bn(cx, input, weight, bias, running_mean, running_var, eps)
    return decompose.group_norm(cx, input, cx.shape(input)[1], weight, bias, eps)


def _aten_softmax_like(op: str):
    """aten._softmax / aten._log_softmax: half_to_float computes an fp16 input into fp32."""
    def convert(cx: Ctx, x, dim, half_to_float):
        y = cx.emit(op, [x], axis=_axis(dim, cx.rank(x)))
        return cx.cast(y, torch.float32) if half_to_float else y
    return convert


def _softmax_like(op: str):
    def convert(cx: Ctx, input, dim=None, _stacklevel=3, dtype=None):
        # F.softmax(x, dim, _stacklevel, dtype), but torch.softmax(x, dim, dtype), aten's and
        # x.softmax(dim, dtype): a dtype third is the dtype
        if isinstance(_stacklevel, torch.dtype):
            dtype = _stacklevel
        if dim is None:
            raise UnsupportedError(f'fx node "{cx.node_name}": {op} without dim')
        if dtype is not None:
            input = cx.cast(input, dtype)
        return cx.emit(op, [input], axis=_axis(dim, cx.rank(input)))
    return convert


converts(aten._softmax.default)(_aten_softmax_like("softmax"))
converts(aten._log_softmax.default)(_aten_softmax_like("log_softmax"))
_softmax = converts(aten.softmax.int, torch.softmax, F.softmax, "softmax")(_softmax_like("softmax"))
converts(aten.log_softmax.int, torch.log_softmax, F.log_softmax,
         "log_softmax")(_softmax_like("log_softmax"))


@converts(aten.scaled_dot_product_attention.default, F.scaled_dot_product_attention)
def _sdpa(cx: Ctx, query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False,
          scale=None, enable_gqa=False):
    """One IR attention node (torch's is_causal is top-left aligned)."""
    if dropout_p:
        raise UnsupportedError(f'fx node "{cx.node_name}": attention with dropout_p={dropout_p}')
    heads, kv_heads = cx.shape(query)[-3:-2], cx.shape(key)[-3:-2]
    # One K/V head broadcasts over every query head (torch broadcasts SDPA's batch dims; Falcon's
    # multi-query attention passes it so): grouped-query attention with one group.
    if heads != kv_heads and not enable_gqa and kv_heads != (1,):
        raise ShapeError(f'fx node "{cx.node_name}": query has {heads} heads, key {kv_heads}; '
                         f"different head counts need enable_gqa=True")
    scale = 1.0 / math.sqrt(cx.shape(query)[-1]) if scale is None else float(scale)
    inputs = [query, key, value] + ([] if attn_mask is None else [attn_mask])
    return cx.emit("attention", inputs, scale=scale, **({"causal": "top_left"} if is_causal else {}))


# What dynamo and torch.export may leave in an inference graph instead: one backend's kernel,
# whose extra results (log-sum-exp, RNG state ...) an inference graph never reads.
@converts(aten._scaled_dot_product_flash_attention_for_cpu.default)
def _sdpa_cpu(cx: Ctx, query, key, value, dropout_p=0.0, is_causal=False, *, attn_mask=None, scale=None):
    return (_sdpa(cx, query, key, value, attn_mask, dropout_p, is_causal, scale), Missing("attention log-sum-exp"))


@converts(aten._scaled_dot_product_flash_attention.default)
def _sdpa_flash(cx: Ctx, query, key, value, dropout_p=0.0, is_causal=False, return_debug_mask=False, *,
                scale=None):
    out = _sdpa(cx, query, key, value, None, dropout_p, is_causal, scale)
    return (out,) + tuple(Missing("flash attention's auxiliary results") for _ in range(8))


@converts(aten._scaled_dot_product_efficient_attention.default, aten._scaled_dot_product_cudnn_attention.default)
def _sdpa_biased(cx: Ctx, query, key, value, attn_bias, compute_log_sumexp, dropout_p=0.0, is_causal=False,
                 return_debug_mask=False, *, scale=None):
    out = _sdpa(cx, query, key, value, attn_bias, dropout_p, is_causal, scale)
    return (out,) + tuple(Missing("attention's auxiliary results") for _ in range(8))


# ======================================================================= multi-head attention ====
def _mha_batch_first(cx: Ctx, x, batched: bool):
    """A seq-first [L, N, E] operand (or an unbatched [L, E] one) as [N, L, E] (a view)."""
    return _transpose(cx, x, [1, 0, 2]) if batched else _reshape(cx, x, [1] + list(cx.shape(x)))


@converts(F.multi_head_attention_forward)
def _mha_forward(cx: Ctx, query, key, value, embed_dim_to_check, num_heads, in_proj_weight, in_proj_bias,
                 bias_k, bias_v, add_zero_attn, dropout_p, out_proj_weight, out_proj_bias, training=True,
                 key_padding_mask=None, need_weights=True, attn_mask=None, use_separate_proj_weight=False,
                 q_proj_weight=None, k_proj_weight=None, v_proj_weight=None, static_k=None, static_v=None,
                 average_attn_weights=True, is_causal=False):
    """torch's functional multi-head attention (what dynamo leaves of nn.MultiheadAttention)."""
    where = f'fx node "{cx.node_name}"'
    if bias_k is not None or bias_v is not None or add_zero_attn or static_k is not None or static_v is not None:
        raise UnsupportedError(f"{where}: multi-head attention with bias_k/bias_v, add_zero_attn or static_k/v")
    if training and dropout_p:
        raise UnsupportedError(f"{where}: multi-head attention with dropout in training mode")
    if cx.shape(query)[-1] != embed_dim_to_check:
        raise ShapeError(f"{where}: query has embedding size {cx.shape(query)[-1]}, expected {embed_dim_to_check}")
    batched = cx.rank(query) == 3
    if use_separate_proj_weight:
        e = embed_dim_to_check
        biases = [None] * 3 if in_proj_bias is None else [in_proj_bias[i * e:(i + 1) * e] for i in range(3)]
        proj = Projections(q_proj_weight, k_proj_weight, v_proj_weight, *biases, out_proj_weight, out_proj_bias)
    else:
        proj = Projections.packed(in_proj_weight, in_proj_bias, out_proj_weight, out_proj_bias, embed_dim_to_check)
    # torch uses the causal hint alone only here; otherwise the given attn_mask is the causal mask
    causal = bool(is_causal) and key_padding_mask is None and not need_weights
    masks = Masks(key_padding_mask, None if causal else attn_mask, causal)
    q, k, v = (_mha_batch_first(cx, x, batched) for x in (query, key, value))
    out, weights = multi_head_attention(cx, q, k, v, int(num_heads), proj, masks, bool(need_weights),
                                        bool(average_attn_weights))
    if batched:
        return _transpose(cx, out, [1, 0, 2]), weights
    return _reshape(cx, out, cx.shape(out)[1:]), None if weights is None else _reshape(cx, weights, cx.shape(weights)[1:])


@converts(aten._native_multi_head_attention.default)
def _native_mha(cx: Ctx, query, key, value, embed_dim, num_head, qkv_weight, qkv_bias, proj_weight, proj_bias,
                mask=None, need_weights=True, average_attn_weights=True, mask_type=None):
    """nn.MultiheadAttention's inference fast path, batch-first. mask_type: 0 an [L, S] attention
    mask, 1 a key padding mask [N, S], 2 a mask over [N, H, L, S] (taken as given)."""
    proj = Projections.packed(qkv_weight, qkv_bias, proj_weight, proj_bias, int(embed_dim))
    masks = Masks()
    if mask is not None:
        kind = mask_type if mask_type is not None else (1 if cx.rank(mask) == 2 and cx.shape(mask)[0] == cx.shape(query)[0]
                                                        and cx.shape(mask)[0] != cx.shape(query)[1] else 0)
        if kind == 1:
            masks.key_padding = mask
        elif kind == 0:
            masks.attn = mask
        else:
            n, h = cx.shape(query)[0], int(num_head)
            masks.attn = _reshape(cx, mask, [n * h] + list(cx.shape(mask)[-2:]))
    out, weights = multi_head_attention(cx, query, key, value, int(num_head), proj, masks, bool(need_weights),
                                        bool(average_attn_weights))
    return out, (Missing("multi-head attention weights (need_weights=False)") if weights is None else weights)


# ========================================================================= reductions ====
def _reducer(op: str):
    def convert(cx: Ctx, input, dim=None, keepdim=False, *, dtype=None, axis=None):
        if dtype is not None:
            input = cx.cast(input, dtype)
        dim = axis if axis is not None else dim  # (torch takes numpy's name too: I-BERT's mean)
        return cx.emit(op, [input], axes=_axes(cx, input, dim), keepdims=bool(keepdim))
    return convert


_mean = converts(aten.mean.dim, aten.mean.default, torch.mean, "mean")(_reducer("reduce_mean"))
converts(aten.sum.dim_IntList, aten.sum.default, torch.sum, "sum")(_reducer("reduce_sum"))
converts(aten.amax.default, torch.amax, "amax")(_reducer("reduce_max"))
converts(aten.prod.dim_int, aten.prod.default, torch.prod, "prod")(_reducer("reduce_prod"))


def _any_of(cx: Ctx, hit, dim, keepdim: bool):
    """Is any element of bool `hit` True along dim? A max of it as 0.0 / 1.0: float reductions run
    in the kernels."""
    ones = cx.cast(hit, torch.float32)
    most = cx.emit("reduce_max", [ones], axes=_axes(cx, hit, dim), keepdims=bool(keepdim))
    return _binary(cx, "greater", most, 0.0)


@converts(aten.any.default, aten.any.dim, aten.any.dims, torch.any, "any")
def _any(cx: Ctx, input, dim=None, keepdim=False):
    nonzero = cx.emit("not", [_binary(cx, "equal", input, 0)]) if cx.dtype(input) != torch.bool else input
    return _any_of(cx, nonzero, dim, keepdim)


@converts(aten.all.default, aten.all.dim, aten.all.dims, torch.all, "all")
def _all(cx: Ctx, input, dim=None, keepdim=False):
    """No element is zero (NaN counts as nonzero, as in torch)."""
    zero = _binary(cx, "equal", input, 0) if cx.dtype(input) != torch.bool else cx.emit("not", [input])
    return cx.emit("not", [_any_of(cx, zero, dim, keepdim)])


class MaxResult(NamedTuple):
    """What torch.max(x, dim) returns: `.values` and `.indices` (an argmax: the first extreme,
    NaN counting as one, as torch; left out by dead-code elimination where nothing reads it)."""
    values: Any
    indices: Any


def _extreme_indices(cx: Ctx, op: str, x, dim, keepdim: bool):
    return cx.emit(op, [x], axis=_axis(dim, cx.rank(x)), keepdims=bool(keepdim))


def _reduce_min(cx: Ctx, x, axes: list[int], keepdim: bool):
    """The IR has no reduce_min: min(x) = -max(-x)."""
    neg = cx.emit("neg", [x])
    return cx.emit("neg", [cx.emit("reduce_max", [neg], axes=axes, keepdims=keepdim)])


@converts(aten.amin.default, torch.amin, "amin")
def _amin(cx: Ctx, input, dim=None, keepdim=False):
    return _reduce_min(cx, input, _axes(cx, input, dim), bool(keepdim))


@converts(aten.min.dim, aten.min.default, aten.min.other, torch.min, "min")
def _min(cx: Ctx, input, dim=None, keepdim=False):
    if isinstance(dim, (Val, torch.Tensor)):  # torch.min(a, b) is the elementwise minimum
        return _minimum(cx, input, dim)
    y = _reduce_min(cx, input, _axes(cx, input, dim), bool(keepdim))
    return y if dim is None else MaxResult(y, _extreme_indices(cx, "argmin", input, dim, keepdim))


@converts(aten.max.dim, aten.max.default, aten.max.other, torch.max, "max")
def _max(cx: Ctx, input, dim=None, keepdim=False):
    if isinstance(dim, (Val, torch.Tensor)):  # torch.max(a, b) is the elementwise maximum
        return _maximum(cx, input, dim)
    y = cx.emit("reduce_max", [input], axes=_axes(cx, input, dim), keepdims=bool(keepdim))
    return y if dim is None else MaxResult(y, _extreme_indices(cx, "argmax", input, dim, keepdim))


# ============================================================================ pooling ====
def _pool_args(kernel_size, stride, padding, n: int):
    kernel = _tuple_n(kernel_size, n)
    strides = kernel if stride is None or stride == [] or stride == () else _tuple_n(stride, n)
    return kernel, strides, _tuple_n(padding, n) * 2


def _max_pool(n: int, with_indices: bool):
    def convert(cx: Ctx, input, kernel_size, stride=None, padding=0, dilation=1,
                ceil_mode=False, return_indices=False):
        kernel, strides, pads = _pool_args(kernel_size, stride, padding, n)
        y = cx.emit("max_pool", [input], kernel=kernel, strides=strides, pads=pads,
                    dilations=_tuple_n(dilation, n), ceil_mode=bool(ceil_mode))
        return (y, Missing("max-pool indices")) if with_indices or return_indices else y
    return convert


converts(aten.max_pool2d_with_indices.default)(_max_pool(2, True))
converts(aten.max_pool2d.default, F.max_pool2d, torch.max_pool2d)(_max_pool(2, False))
converts(aten.max_pool1d.default, F.max_pool1d, torch.max_pool1d)(_max_pool(1, False))


def _avg_pool(n: int):
    def convert(cx: Ctx, input, kernel_size, stride=None, padding=0, ceil_mode=False,
                count_include_pad=True, divisor_override=None):
        if divisor_override is not None:
            raise UnsupportedError(f'fx node "{cx.node_name}": avg pool with divisor_override')
        kernel, strides, pads = _pool_args(kernel_size, stride, padding, n)
        return cx.emit("avg_pool", [input], kernel=kernel, strides=strides, pads=pads,
                       ceil_mode=bool(ceil_mode), count_include_pad=bool(count_include_pad))
    return convert


converts(aten.avg_pool2d.default, F.avg_pool2d, torch._C._nn.avg_pool2d)(_avg_pool(2))
converts(aten.avg_pool1d.default, F.avg_pool1d, torch.avg_pool1d)(_avg_pool(1))


@converts(aten._adaptive_avg_pool2d.default, aten.adaptive_avg_pool2d.default,
          F.adaptive_avg_pool2d)
def _adaptive_avg_pool2d(cx: Ctx, input, output_size):
    spatial = cx.shape(input)[-2:]
    out = [s if o is None else int(o) for s, o in zip(spatial, _tuple_n(output_size, 2)
                                                      if output_size is not None else spatial)]
    rank = cx.rank(input)
    if out == [1, 1]:  # global average pooling: a mean over H, W
        return cx.emit("reduce_mean", [input], axes=[rank - 2, rank - 1], keepdims=True)
    if all(s % o == 0 for s, o in zip(spatial, out)):  # equal windows: a plain average pool
        k = [s // o for s, o in zip(spatial, out)]
        return cx.emit("avg_pool", [input], kernel=k, strides=k, pads=[0] * 4)
    return _adaptive_average(cx, input, [rank - 2, rank - 1], spatial, out)


def _adaptive_average(cx: Ctx, input, axes: list[int], sizes, outs):
    """An adaptive average pool whose windows differ in size, as one IR resample (the pointwise
    kernels look each output's window up in tables): along each axis, output o averages input
    [floor(o·n / m), ceil((o + 1)·n / m)). A window shorter than the longest repeats its first
    element, that element's weight split evenly between its copies: exact when the copies
    number a power of two (halving is exact), and an infinity stays an infinity (no weight of
    0). Windows of other lengths are refused."""
    tables, used = [], []
    for axis, n, m in zip(axes, sizes, outs):
        if n == m:
            continue
        starts = [o * n // m for o in range(m)]
        ends = [-((-(o + 1) * n) // m) for o in range(m)]
        taps = max(e - s for s, e in zip(starts, ends))
        columns = torch.zeros(taps, m, dtype=torch.int32)
        weights = torch.zeros(taps, m, dtype=torch.float64)
        for o, (start, end) in enumerate(zip(starts, ends)):
            copies = 1 + taps - (end - start)
            if copies & (copies - 1):
                raise UnsupportedError(f'fx node "{cx.node_name}": adaptive average pool from '
                                       f"{tuple(sizes)} to {list(outs)} (windows of lengths "
                                       f"{end - start} and {taps})")
            members = list(range(start, end)) + [start] * (copies - 1)
            columns[:, o] = torch.tensor(members, dtype=torch.int32)
            weights[:, o] = 1.0 / (end - start)
            weights[0, o] = weights[end - start:, o] = 1.0 / (end - start) / copies
        tables += [columns, weights.to(torch.float32)]
        used.append(axis)
    if not used:
        return input
    return cx.emit("resample", [input] + tables, axes=used, nearest=False)


@converts(aten.adaptive_avg_pool1d.default, torch.adaptive_avg_pool1d)  # (F.adaptive_avg_pool1d is it)
def _adaptive_avg_pool1d(cx: Ctx, input, output_size):
    """Over [..., L] to [..., out]: windows of L / out positions each, a mean over each window
    (SigLIP's attention-pooling head and Swin's pooler take out = 1: a mean over the sequence)."""
    shape = list(cx.shape(input))
    length, (out,) = shape[-1], _tuple_n(output_size, 1)
    if out < 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": adaptive average pool to {out}')
    if length % out:
        return _adaptive_average(cx, input, [len(shape) - 1], [length], [out])
    windows = _reshape(cx, input, shape[:-1] + [out, length // out])
    return cx.emit("reduce_mean", [windows], axes=[len(shape)], keepdims=False)


# torch's interpolation modes as ONNX Resize's: mode, and the coordinate mapping without
# align_corners. torch's nearest floors (x_out / scale); nearest-exact rounds the pixel centre;
# linear and cubic map pixel centres (half_pixel, which the IR's linear resize clamps at the edges as
# torch does; pytorch_half_pixel would put an output of length 1 at the first pixel, not the centre).
_INTERPOLATION = {"nearest": ("nearest", "asymmetric"), "nearest-exact": ("nearest", "half_pixel"),
                  "linear": ("linear", "half_pixel"), "bilinear": ("linear", "half_pixel"),
                  "trilinear": ("linear", "half_pixel"), "bicubic": ("cubic", "half_pixel")}


@converts(F.interpolate)
def _interpolate(cx: Ctx, input, size=None, scale_factor=None, mode="nearest", align_corners=None,
                 recompute_scale_factor=None, antialias=False):
    """One IR resize: output sizes and the scales of the coordinate mapping resolved as torch
    resolves them (a given scale_factor maps coordinates unless recompute_scale_factor)."""
    if mode not in _INTERPOLATION:
        raise UnsupportedError(f'fx node "{cx.node_name}": interpolate in mode {mode!r}')
    if antialias:  # (torch's antialiasing filter is not ONNX Resize's: 0.15 apart on a 5x6 -> 3x2)
        raise UnsupportedError(f'fx node "{cx.node_name}": interpolate with antialias=True')
    shape = list(cx.shape(input))
    spatial = len(shape) - 2
    if size is not None:
        out = _tuple_n(size, spatial)
        scales = [o / i for o, i in zip(out, shape[2:])]
    else:
        factors = [float(f) for f in (scale_factor if isinstance(scale_factor, (list, tuple))
                                      else [scale_factor] * spatial)]
        out = [math.floor(i * f) for i, f in zip(shape[2:], factors)]
        scales = [o / i for o, i in zip(out, shape[2:])] if recompute_scale_factor else factors
    if any(o < 1 for o in out):
        raise ShapeError(f'fx node "{cx.node_name}": interpolate of {shape} to spatial size {out}')
    kind, coordinates = _INTERPOLATION[mode]
    if align_corners and kind != "nearest":
        coordinates = "align_corners"
    return cx.emit("resize", [input], sizes=shape[:2] + out, scales=[1.0, 1.0] + scales, mode=kind,
                   coordinate_transformation_mode=coordinates,
                   nearest_mode="round_prefer_ceil" if mode == "nearest-exact" else "floor",
                   cubic_coeff_a=-0.75, exclude_outside=False, extrapolation_value=0.0,
                   antialias=False, roi=None)


@converts(F.adaptive_max_pool2d)
def _adaptive_max_pool2d(cx: Ctx, input, output_size, return_indices=False):
    spatial = cx.shape(input)[-2:]
    out = [s if o is None else int(o) for s, o in zip(spatial, _tuple_n(output_size, 2))]
    if out == [1, 1]:  # global max pooling: a max over H, W
        rank = cx.rank(input)
        y = cx.emit("reduce_max", [input], axes=[rank - 2, rank - 1], keepdims=True)
    elif all(s % o == 0 for s, o in zip(spatial, out)):
        k = [s // o for s, o in zip(spatial, out)]
        y = cx.emit("max_pool", [input], kernel=k, strides=k, pads=[0] * 4, dilations=[1, 1])
    else:
        raise UnsupportedError(f'fx node "{cx.node_name}": adaptive max pool from {spatial} '
                               f"to {out} (windows of unequal size)")
    return (y, Missing("max-pool indices")) if return_indices else y


@converts(aten.adaptive_max_pool2d.default)
def _aten_adaptive_max_pool2d(cx: Ctx, input, output_size):
    return _adaptive_max_pool2d(cx, input, output_size, return_indices=True)


# =========================================================================== movement ====
@converts(aten.view.default, aten._unsafe_view.default, aten.reshape.default, torch.reshape,
          "view", "reshape")
def _view(cx: Ctx, x, *shape):
    if len(shape) == 1 and isinstance(shape[0], torch.dtype):
        raise UnsupportedError(f'fx node "{cx.node_name}": view as another dtype')
    return _reshape(cx, x, _ints(shape))


@converts("view_as", "reshape_as")
def _view_as(cx: Ctx, x, other):
    return _reshape(cx, x, cx.shape(other))


@converts(aten.permute.default, torch.permute, "permute")
def _permute(cx: Ctx, x, *dims):
    return _transpose(cx, x, _ints(dims))


@converts(aten.transpose.int, torch.transpose, torch.swapaxes, "transpose", "swapaxes")
def _transpose2(cx: Ctx, x, dim0, dim1):
    perm = list(range(cx.rank(x)))
    a, b = _axis(dim0, cx.rank(x)), _axis(dim1, cx.rank(x))
    perm[a], perm[b] = perm[b], perm[a]
    return _transpose(cx, x, perm)


@converts(aten.expand.default, "expand")
def _expand(cx: Ctx, x, *sizes, implicit=False):
    sizes = _ints(sizes)
    shape = cx.shape(x)
    lead = len(sizes) - len(shape)
    target = [shape[i - lead] if s == -1 else s for i, s in enumerate(sizes)]
    if tuple(target) == shape:
        return x
    return cx.emit("expand", [x], shape=target)


@converts("expand_as")
def _expand_as(cx: Ctx, x, other):
    return _expand(cx, x, cx.shape(other))


@converts(aten.repeat_interleave.self_int, torch.repeat_interleave, "repeat_interleave")
def _repeat_interleave(cx: Ctx, x, repeats, dim=None, *, output_size=None):
    """Each element `repeats` times in a row along dim (GPT-J's rotary sin / cos): x viewed with a
    unit dim after dim, expanded to `repeats` there and merged back. Per-element counts (a tensor)
    give a shape that depends on their values: not supported."""
    if isinstance(repeats, torch.Tensor) and repeats.numel() == 1:
        repeats = int(repeats)
    if not isinstance(repeats, int):
        raise UnsupportedError(f'fx node "{cx.node_name}": repeat_interleave with per-element counts '
                               f"(the output's shape depends on their values)")
    if dim is None:
        x, dim = _reshape(cx, x, [-1]), 0
    dim = _axis(dim, cx.rank(x))
    shape = list(cx.shape(x))
    spread = _reshape(cx, x, shape[:dim + 1] + [1] + shape[dim + 1:])
    grown = _expand(cx, spread, shape[:dim + 1] + [repeats] + shape[dim + 1:])
    return _reshape(cx, grown, shape[:dim] + [shape[dim] * repeats] + shape[dim + 1:])


@converts(aten.repeat.default, "repeat")
def _repeat(cx: Ctx, x, *repeats):
    """x [d0, d1, ...] repeated [r0, r1, ...] times (leading repeats add dims, as torch's do): view
    it as [1, d0, 1, d1, ...], expand to [r0, d0, r1, d1, ...] (a view) and reshape to
    [r0 * d0, ...] (one copy kernel), as ONNX Tile is lowered."""
    repeats = _ints(repeats)
    if len(repeats) < cx.rank(x) or any(r < 0 for r in repeats):
        raise UnsupportedError(f'fx node "{cx.node_name}": repeat {repeats} of a {cx.rank(x)}-D tensor '
                               f"(one non-negative count per dim, at least)")
    shape = [1] * (len(repeats) - cx.rank(x)) + list(cx.shape(x))
    if all(r == 1 for r in repeats):
        return _reshape(cx, x, shape)
    spread = _reshape(cx, x, [v for d in shape for v in (1, d)])
    grown = cx.emit("expand", [spread], shape=[v for r, d in zip(repeats, shape) for v in (r, d)])
    return _reshape(cx, grown, [r * d for r, d in zip(repeats, shape)])


@converts(aten.unsqueeze.default, torch.unsqueeze, "unsqueeze")
def _unsqueeze(cx: Ctx, x, dim):
    shape = list(cx.shape(x))
    shape.insert(_axis(dim, len(shape) + 1), 1)
    return _reshape(cx, x, shape)


@converts(aten.squeeze.dim, aten.squeeze.dims, aten.squeeze.default, torch.squeeze, "squeeze")
def _squeeze(cx: Ctx, x, dim=None):
    shape = cx.shape(x)
    dims = range(len(shape)) if dim is None else _axes(cx, x, dim)
    drop = {d for d in dims if shape[d] == 1}
    return _reshape(cx, x, [s for d, s in enumerate(shape) if d not in drop])


@converts(aten.flatten.using_ints, torch.flatten, "flatten")
def _flatten(cx: Ctx, x, start_dim=0, end_dim=-1):
    shape = cx.shape(x)
    if not shape:
        return _reshape(cx, x, [1])
    a, b = _axis(start_dim, len(shape)), _axis(end_dim, len(shape))
    return _reshape(cx, x, list(shape[:a]) + [math.prod(shape[a:b + 1])] + list(shape[b + 1:]))


@converts(torch.einsum, aten.einsum.default)
def _einsum(cx: Ctx, equation, *operands):
    """One IR einsum node (compiler/passes/einsum.py writes it out as kernels' ops)."""
    if len(operands) == 1 and isinstance(operands[0], (list, tuple)):
        operands = tuple(operands[0])
    return cx.emit("einsum", list(operands), equation=str(equation).replace(" ", ""))


@converts(aten.cat.default, torch.cat, torch.concat, torch.concatenate)
def _cat(cx: Ctx, tensors, dim=0, *, axis=None):
    dim = dim if axis is None else axis  # (torch takes numpy's name too: Funnel writes axis=)
    # torch.cat skips 1-D empty tensors whatever the other operands' rank (transformers 4.x's
    # DynamicCache starts each layer's keys as torch.tensor([]))
    tensors = [t for t in tensors if tuple(cx.shape(t)) != (0,)]
    tensors = _promote(cx, *tensors)
    if len(tensors) == 1:
        return tensors[0]
    return cx.emit("concat", tensors, axis=_axis(dim, cx.rank(tensors[0])))


@converts(F.unfold, aten.im2col.default)
def _im2col(cx: Ctx, input, kernel_size, dilation=1, padding=0, stride=1):
    """F.unfold over [N, C, H, W] (ConvBERT's span-based convolution): each sliding window's
    C * kh * kw values as a column, [N, C * kh * kw, L]. Each tap of the window is a strided slice
    of the zero-padded image ([N, C, OH, OW], a view); the taps stacked after the channels are the
    columns, in torch's (channel, tap row, tap column) order: one concat kernel."""
    (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (_tuple_n(v, 2) for v in (kernel_size, dilation, padding, stride))
    if cx.rank(input) != 4:
        raise UnsupportedError(f'fx node "{cx.node_name}": unfold of a {cx.rank(input)}-D input (4-D is)')
    x = _pad(cx, input, [pw, pw, ph, ph]) if ph or pw else input
    n, c, hp, wp = cx.shape(x)
    oh, ow = (hp - dh * (kh - 1) - 1) // sh + 1, (wp - dw * (kw - 1) - 1) // sw + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f'fx node "{cx.node_name}": unfold windows of {kh}x{kw} do not fit {hp}x{wp}')
    taps = []
    for i in range(kh):
        for j in range(kw):
            tap = _aten_slice(cx, x, 2, i * dh, i * dh + (oh - 1) * sh + 1, sh)
            tap = _aten_slice(cx, tap, 3, j * dw, j * dw + (ow - 1) * sw + 1, sw)
            taps.append(_reshape(cx, tap, [n, c, 1, oh * ow]))
    stacked = taps[0] if len(taps) == 1 else cx.emit("concat", taps, axis=2)
    return _reshape(cx, stacked, [n, c * kh * kw, oh * ow])


@converts(F.fold, aten.col2im.default)
def _col2im(cx: Ctx, input, output_size, kernel_size, dilation=1, padding=0, stride=1):
    """F.fold of windows that tile the output without overlap (kernel == stride, no padding or
    dilation: MobileViT-v2 folds its patches back so): [N, C * kh * kw, L] rearranged into
    [N, C, H, W], a reshape, a transpose and a reshape. Overlapping windows sum where they meet:
    not supported."""
    (h, w), (kh, kw), (dh, dw), (ph, pw), (sh, sw) = (
        _tuple_n(v, 2) for v in (output_size, kernel_size, dilation, padding, stride))
    if (sh, sw) != (kh, kw) or (dh, dw) != (1, 1) or ph or pw or h % kh or w % kw:
        raise UnsupportedError(f'fx node "{cx.node_name}": fold of overlapping or padded windows '
                               f"(kernel {kh}x{kw}, stride {sh}x{sw}, padding {ph}x{pw}, dilation {dh}x{dw})")
    if cx.rank(input) != 3:
        raise UnsupportedError(f'fx node "{cx.node_name}": fold of a {cx.rank(input)}-D input (3-D is)')
    n, rows, blocks = cx.shape(input)
    if rows % (kh * kw) or blocks != (h // kh) * (w // kw):
        raise ShapeError(f'fx node "{cx.node_name}": fold of {list(cx.shape(input))} into {h}x{w} '
                         f"by {kh}x{kw} windows: expected [N, C * {kh * kw}, {(h // kh) * (w // kw)}]")
    c = rows // (kh * kw)
    x = _reshape(cx, input, [n, c, kh, kw, h // kh, w // kw])
    return _reshape(cx, _transpose(cx, x, [0, 1, 4, 2, 5, 3]), [n, c, h, w])


@converts(aten.constant_pad_nd.default)
def _constant_pad_nd(cx: Ctx, input, pad, value=0):
    return _pad(cx, input, pad, "constant", value)


@converts(F.pad, torch._C._nn.pad)
def _pad(cx: Ctx, input, pad, mode="constant", value=None):
    # torch's pad list runs from the last dim backwards: (last_begin, last_end, prev_begin, ...).
    # A constant pad: each padded axis becomes concat(fill, x, fill), each cropped one a slice,
    # which later passes can fold into a convolution's padding. The others: one IR pad.
    if mode != "constant":
        return _edge_pad(cx, input, pad, mode)
    x, rank = input, cx.rank(input)
    for k in range(len(pad) // 2):
        axis, begin, end = rank - 1 - k, int(pad[2 * k]), int(pad[2 * k + 1])
        size = cx.shape(x)[axis]
        if begin < 0 or end < 0:
            x = _aten_slice(cx, x, axis, max(-begin, 0), size - max(-end, 0))
        parts = []
        for n in (max(begin, 0), max(end, 0)):
            shape = list(cx.shape(x))
            shape[axis] = n
            parts.append(torch.full(shape, 0 if value is None else value, dtype=cx.dtype(x))
                         if n else None)
        pieces = [p for p in (parts[0], x, parts[1]) if p is not None]
        x = _cat(cx, pieces, axis) if len(pieces) > 1 else x
    return x


_PAD_MODES = {"reflect": "reflect", "replicate": "edge", "circular": "wrap"}


def _edge_pad(cx: Ctx, x, pad, mode: str):
    """F.pad in reflect / replicate / circular mode: one IR pad (ONNX's reflect / edge / wrap)."""
    if mode not in _PAD_MODES:
        raise UnsupportedError(f'fx node "{cx.node_name}": pad mode "{mode}"')
    rank, pad = cx.rank(x), [int(p) for p in pad]
    if min(pad, default=0) < 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": a {mode} pad that crops ({pad})')
    pads = [0] * (2 * rank)
    for k in range(len(pad) // 2):
        pads[rank - 1 - k], pads[2 * rank - 1 - k] = pad[2 * k], pad[2 * k + 1]
    return cx.emit("pad", [x], pads=pads, mode=_PAD_MODES[mode], value=0)


for _n in (1, 2, 3):
    converts(getattr(aten, f"reflection_pad{_n}d").default)(
        lambda cx, x, padding: _edge_pad(cx, x, padding, "reflect"))
    converts(getattr(aten, f"replication_pad{_n}d").default)(
        lambda cx, x, padding: _edge_pad(cx, x, padding, "replicate"))


@converts(aten.stack.default, torch.stack)
def _stack(cx: Ctx, tensors, dim=0):
    axis = _axis(dim, cx.rank(tensors[0]) + 1)
    return _cat(cx, [_unsqueeze(cx, t, axis) for t in tensors], axis)


def _split_sizes(cx: Ctx, x, dim, split) -> tuple[int, list[int]]:
    axis = _axis(dim, cx.rank(x))
    size = cx.shape(x)[axis]
    if isinstance(split, int):
        return axis, [min(split, size - i) for i in range(0, size, split)] or [0]
    return axis, [int(s) for s in split]


def _split_into(cx: Ctx, x, axis: int, sizes: list[int]) -> tuple:
    if len(sizes) == 1:
        return (x,)
    return tuple(cx.emit_multi("split", [x], axis=axis, sizes=sizes))


@converts(aten.split.Tensor, aten.split_with_sizes.default, torch.split, "split",
          "split_with_sizes")
def _split(cx: Ctx, x, split_size_or_sections, dim=0):
    axis, sizes = _split_sizes(cx, x, dim, split_size_or_sections)
    return _split_into(cx, x, axis, sizes)


@converts(aten.chunk.default, torch.chunk, "chunk")
def _chunk(cx: Ctx, x, chunks, dim=0):
    size = cx.shape(x)[_axis(dim, cx.rank(x))]
    return _split(cx, x, max(1, -(-size // int(chunks))), dim)


@converts(aten.unbind.int, torch.unbind, "unbind")
def _unbind(cx: Ctx, x, dim=0):
    axis = _axis(dim, cx.rank(x))
    parts = _split_into(cx, x, axis, [1] * cx.shape(x)[axis])
    return tuple(_squeeze(cx, p, axis) for p in parts)


# ----------------------------------------------------------------- slicing, indexing ----
def _slice_and_reshape(cx: Ctx, x, slices: list[tuple[int, int, int, int]], shape: list[int]):
    """Apply (axis, start, end, step) slices, then reshape to `shape` (drops/adds unit dims)."""
    for axis, start, end, step in slices:
        if step <= 0:
            raise UnsupportedError(f'fx node "{cx.node_name}": slice step {step}')
    # A full slice is dropped, except of a constant: folded, it keeps the name "<weight>.slice"
    # at every size, which a shape-generic build matches across its probes (a position table
    # sliced to the sequence is the whole table at the profile's max).
    if not isinstance(x, torch.Tensor):
        slices = [s for s in slices if (s[1], s[2], s[3]) != (0, cx.shape(x)[s[0]], 1)]
    if slices:
        x = cx.emit("slice", [x], starts=[s[1] for s in slices], ends=[s[2] for s in slices],
                    axes=[s[0] for s in slices], steps=[s[3] for s in slices])
    return _reshape(cx, x, shape)


def _norm_slice(size: int, start, end, step) -> tuple[int, int, int]:
    start, end, step = slice(start, end, step).indices(size)  # Python's clamping rules
    return start, max(end, start), step


@converts(aten.slice.Tensor)
def _aten_slice(cx: Ctx, x, dim=0, start=None, end=None, step=1):
    axis = _axis(dim, cx.rank(x))
    shape = list(cx.shape(x))
    s = _norm_slice(shape[axis], start, end, step)
    shape[axis] = len(range(*s))
    return _slice_and_reshape(cx, x, [(axis, *s)], shape)


@converts(aten.flip.default, torch.flip, "flip")
def _flip(cx: Ctx, x, *dims, **named):
    """A slice with step -1 along each dim (as ONNX exporters write it), which
    compiler/passes/resample.py reverses in the pointwise kernels. dims positional (a list or each
    its own argument) or named (`x.flip(dims=...)`, `torch.flip(x, dims=...)`)."""
    if set(named) - {"dims"}:
        raise UnsupportedError(f'fx node "{cx.node_name}": flip with {sorted(named)}')
    dims = named["dims"] if "dims" in named else dims
    dims = dims[0] if len(dims) == 1 and isinstance(dims[0], (list, tuple)) else dims
    shape, rank = list(cx.shape(x)), cx.rank(x)
    axes = sorted({_axis(d, rank) for d in dims})
    if not axes or any(shape[a] == 0 for a in axes):
        return x
    return cx.emit("slice", [x], starts=[shape[a] - 1 for a in axes], ends=[-1] * len(axes),
                   axes=axes, steps=[-1] * len(axes))


@converts(aten.select.int, torch.select, "select")
def _select(cx: Ctx, x, dim, index):
    return _getitem_tensor(cx, x, (slice(None),) * _axis(dim, cx.rank(x)) + (int(index),))


@converts(aten.narrow.default, torch.narrow, "narrow")
def _narrow(cx: Ctx, x, dim, start, length):
    return _aten_slice(cx, x, dim, start, start + length)


def _getitem_tensor(cx: Ctx, x, idx):
    """x[idx] for ints, slices, None, Ellipsis, one list of ints, and one index tensor with full
    slices elsewhere."""
    if isinstance(idx, list) and any(k is None or k is Ellipsis or isinstance(k, slice) for k in idx):
        idx = tuple(idx)  # a list holding slices indexes as a tuple does (torch keeps numpy's old rule)
    idx = _list_index(cx, x, idx if isinstance(idx, tuple) else (idx,))
    tensor_pos = [i for i, k in enumerate(idx) if isinstance(k, (Val, torch.Tensor))]
    if tensor_pos:
        return _index_with_tensor(cx, x, idx, tensor_pos)
    shape = cx.shape(x)
    idx = _full_index(cx, idx, len(shape))
    slices, out_shape, axis = [], [], 0
    for k in idx:
        if k is None:
            out_shape.append(1)
            continue
        size = shape[axis]
        if isinstance(k, bool) or not isinstance(k, (int, slice)):
            raise UnsupportedError(f'fx node "{cx.node_name}": index {k!r}')
        if isinstance(k, int):
            i = _axis(k, size)
            slices.append((axis, i, i + 1, 1))
        else:
            s = _norm_slice(size, k.start, k.stop, k.step)
            slices.append((axis, *s))
            out_shape.append(len(range(*s)))
        axis += 1
    return _slice_and_reshape(cx, x, slices, out_shape)


def _full_index(cx: Ctx, idx: tuple, rank: int) -> tuple:
    """idx with its Ellipsis (or the missing trailing dims) spelled out as full slices."""
    real = sum(1 for k in idx if k is not None and k is not Ellipsis)
    if real > rank:
        raise ShapeError(f'fx node "{cx.node_name}": {real} indices for a rank-{rank} tensor')
    if Ellipsis in idx:
        e = idx.index(Ellipsis)
        return idx[:e] + (slice(None),) * (rank - real) + idx[e + 1:]
    return idx + (slice(None),) * (rank - real)


def _list_index(cx: Ctx, x, idx: tuple) -> tuple:
    """One Python list of ints in an index (Falcon's fused_qkv[..., [-2], :]) as what it selects: a
    slice where its entries are an evenly spaced ascending run, else a constant index tensor;
    negative entries count from the end. (Several lists index jointly: left to the tensor path.)"""
    lists = [k for k in idx if isinstance(k, list)]
    if len(lists) != 1 or not lists[0] or any(isinstance(k, (Val, torch.Tensor)) for k in idx) \
            or not all(isinstance(i, int) and not isinstance(i, bool) for i in lists[0]):
        return idx
    shape = cx.shape(x)
    idx = _full_index(cx, idx, len(shape))
    axis = [k for k in idx if k is not None].index(lists[0])
    size = shape[axis]
    if any(not -size <= i < size for i in lists[0]):
        raise ShapeError(f'fx node "{cx.node_name}": index {lists[0]} is out of range for a dim of size {size}')
    entries = [i % size for i in lists[0]]
    step = entries[1] - entries[0] if len(entries) > 1 else 1
    if step > 0 and entries == list(range(entries[0], entries[0] + step * len(entries), step)):
        selected = slice(entries[0], entries[-1] + 1, step)
    else:
        selected = torch.tensor(entries)
    return tuple(selected if k is lists[0] else k for k in idx)


def _index_with_tensor(cx: Ctx, x, idx, tensor_pos: list[int]):
    full = all(isinstance(k, slice) and k == slice(None) for i, k in enumerate(idx)
               if i not in tensor_pos)
    adjacent = tensor_pos == list(range(tensor_pos[0], tensor_pos[0] + len(tensor_pos)))
    if not full or not adjacent or Ellipsis in idx:
        raise UnsupportedError(f'fx node "{cx.node_name}": advanced indexing other than index '
                               "tensors on adjacent axes with full slices elsewhere")
    indices = [idx[i] for i in tensor_pos]
    if any(cx.dtype(index) == torch.bool for index in indices):
        raise UnsupportedError(f'fx node "{cx.node_name}": boolean mask indexing '
                               "(data-dependent shape)")
    if len(indices) == 1:
        return cx.emit("gather", [x, indices[0]], axis=tensor_pos[0])
    return gather_adjacent(cx, x, tensor_pos[0], indices, lambda index: isinstance(index, Val))


@converts(operator.getitem)
def _getitem(cx: Ctx, obj, idx):
    if isinstance(obj, (Val, torch.Tensor)):
        return _getitem_tensor(cx, obj, idx)
    return obj[idx]  # multi-result nodes (split, max_pool2d_with_indices) and shapes


@converts(aten.index.Tensor)
def _aten_index(cx: Ctx, x, indices):
    # In aten.index a None entry keeps that dimension whole (unlike Python's x[None]).
    return _getitem_tensor(cx, x, tuple(slice(None) if i is None else i for i in indices))


@converts(aten.embedding.default, torch.embedding)
def _aten_embedding(cx: Ctx, weight, indices, padding_idx=-1, scale_grad_by_freq=False,
                    sparse=False):
    return cx.emit("gather", [weight, indices], axis=0)


@converts(F.embedding)
def _f_embedding(cx: Ctx, input, weight, padding_idx=None, max_norm=None, norm_type=2.0,
                 scale_grad_by_freq=False, sparse=False):
    if max_norm is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": embedding with max_norm')
    return cx.emit("gather", [weight, input], axis=0)


@converts(aten.index_select.default, torch.index_select, "index_select")
def _index_select(cx: Ctx, x, dim, index):
    return cx.emit("gather", [x, index], axis=_axis(dim, cx.rank(x)))


@converts(aten.gather.default, torch.gather, "gather")
def _gather_elements(cx: Ctx, x, dim, index, sparse_grad=False):
    return cx.emit("gather_elements", [x, index], axis=_axis(dim, cx.rank(x)))


@converts(aten.cumsum.default, torch.cumsum, "cumsum")
def _cumsum(cx: Ctx, x, dim, dtype=None):
    if dtype is None and not cx.dtype(x).is_floating_point:
        dtype = torch.int64  # torch sums integers and booleans in int64
    if dtype is not None:
        x = cx.cast(x, dtype)
    return cx.emit("cumsum", [x], axis=_axis(dim, cx.rank(x)))


# ------------------------------------------------------------------ strided views ----
# A view is a map from output positions to input elements. The IR's values are dense, so a view
# becomes movement ops when the map is a slice / permutation / broadcast of a contiguous block
# (they fuse into their neighbours), and a gather with a constant index otherwise.
def _strided_as_movement(cx: Ctx, x, size: list[int], stride: list[int], offset: int):
    """The view (size, stride, offset) of the contiguous elements of x as slice, reshape,
    transpose and expand, or None when it is not one."""
    n = math.prod(cx.shape(x))
    dims = sorted(((d, sz, st) for d, (sz, st) in enumerate(zip(size, stride))
                   if sz != 1 and st != 0), key=lambda t: -t[2])
    block = 1
    for _, sz, st in reversed(dims):
        if st != block:
            return None
        block *= sz
    if offset < 0 or offset + block > n or 0 in size:
        return None
    y = _reshape(cx, x, [n])
    if (offset, block) != (0, n):
        y = cx.emit("slice", [y], starts=[offset], ends=[offset + block], axes=[0], steps=[1])
    y = _reshape(cx, y, [sz for _, sz, _ in dims])
    y = _transpose(cx, y, sorted(range(len(dims)), key=lambda i: dims[i][0]))
    y = _reshape(cx, y, [sz if sz != 1 and st != 0 else 1 for sz, st in zip(size, stride)])
    return _expand(cx, y, list(size))


def _view_by_index(cx: Ctx, x, index: torch.Tensor):
    """x viewed through `index` (flat positions into x's contiguous elements): movement ops when
    `index` is a strided view of arange (its strides say which), else a gather."""
    if index.dtype == torch.int64 and index.numel() and index._base is not None:
        moved = _strided_as_movement(cx, x, list(index.shape), list(index.stride()),
                                     index.storage_offset())
        if moved is not None:
            return moved
    flat = _reshape(cx, x, [math.prod(cx.shape(x))])
    return cx.emit("gather", [flat, index.contiguous()], axis=0)


def _arange_like(cx: Ctx, x) -> torch.Tensor:
    return torch.arange(math.prod(cx.shape(x)), dtype=torch.int64).reshape(cx.shape(x))


def _input_layout(cx: Ctx) -> tuple[tuple[int, ...], int] | None:
    """(strides, storage offset) torch recorded for the first argument of the node being
    converted (export and dynamo record them), or None."""
    node = cx.fx_node
    arg = node.args[0] if node is not None and node.args else None
    meta = arg.meta.get("val", arg.meta.get("example_value")) if isinstance(arg, torch.fx.Node) \
        else None
    if not isinstance(meta, torch.Tensor):
        return None
    try:
        return tuple(int(s) for s in meta.stride()), int(meta.storage_offset())
    except (TypeError, RuntimeError):  # symbolic strides
        return None


def _storage_index(shape, strides, offset: int, size, stride, new_offset: int):
    """For an input laid out as (shape, strides, offset) in its storage, the flat index of the
    input element that each position of the view (size, stride, new_offset) reads; None when the
    view reads storage the input does not cover. (Input elements sharing storage hold the same
    value, so any of them will do.)"""
    def last(sh, st, off):
        return off + sum((d - 1) * s for d, s in zip(sh, st) if d > 0)
    storage = max(last(shape, strides, offset), last(size, stride, new_offset)) + 1
    base = torch.arange(storage, dtype=torch.int64)
    position = torch.as_strided(base, shape, strides, offset).reshape(-1)
    inverse = torch.full((storage,), -1, dtype=torch.int64)
    inverse[position] = torch.arange(position.numel(), dtype=torch.int64)
    index = inverse[torch.as_strided(base, size, stride, new_offset)]
    return None if bool((index < 0).any()) else index


def _contiguous_strides(shape) -> tuple[int, ...]:
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= max(d, 1)
    return tuple(reversed(strides))


@converts(aten.as_strided.default, torch.as_strided, "as_strided")
def _as_strided(cx: Ctx, x, size, stride, storage_offset=None):
    size, stride = _ints([size]), _ints([stride])
    if isinstance(x, torch.Tensor):
        return torch.as_strided(x, size, stride, storage_offset).clone()
    layout = _input_layout(cx)
    if layout is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": as_strided needs the input\'s strides, '
                               "which only torch.export and dynamo graphs record")
    strides, offset = layout
    new_offset = offset if storage_offset is None else int(storage_offset)
    shape = cx.shape(x)
    contiguous = all(a == b for a, b, d in zip(strides, _contiguous_strides(shape), shape)
                     if d != 1)
    if contiguous and new_offset >= offset:
        try:  # a view of arange: its strides tell _view_by_index which movement ops it is
            index = torch.as_strided(torch.arange(math.prod(shape), dtype=torch.int64), size,
                                     stride, new_offset - offset)
            return _view_by_index(cx, x, index)
        except RuntimeError:  # beyond the input's elements: the general map says where
            pass
    index = _storage_index(shape, strides, offset, size, stride, new_offset)
    if index is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": as_strided{(size, stride, new_offset)}'
                               f" reads storage outside its input (strides {strides}, offset "
                               f"{offset})")
    return _view_by_index(cx, x, index)


@converts(aten.unfold.default, "unfold")
def _unfold(cx: Ctx, x, dimension, size, step):
    if isinstance(x, torch.Tensor):
        return x.unfold(dimension, size, step).clone()
    return _view_by_index(cx, x, _arange_like(cx, x).unfold(dimension, size, step))


@converts(aten.movedim.int, aten.movedim.intlist, torch.movedim, torch.moveaxis, "movedim",
          "moveaxis")
def _movedim(cx: Ctx, x, source, destination):
    rank = cx.rank(x)
    source = [_axis(d, rank) for d in _ints([source])]
    destination = [_axis(d, rank) for d in _ints([destination])]
    perm = [-1] * rank
    for s, d in zip(source, destination):
        perm[d] = s
    rest = iter(d for d in range(rank) if d not in source)
    return _transpose(cx, x, [p if p >= 0 else next(rest) for p in perm])


@converts(aten.unflatten.int, torch.unflatten, "unflatten")
def _unflatten(cx: Ctx, x, dim, sizes):
    shape = list(cx.shape(x))
    d = _axis(dim, len(shape))
    return _reshape(cx, x, shape[:d] + _ints([sizes]) + shape[d + 1:])


@converts(aten.slice_scatter.default, torch.slice_scatter, "slice_scatter")
def _slice_scatter(cx: Ctx, input, src, dim=0, start=None, end=None, step=1):
    """input with input[start:end] along dim replaced by src (what functionalization turns a
    slice assignment into): the pieces before and after, concatenated around src."""
    axis = _axis(dim, cx.rank(input))
    size = cx.shape(input)[axis]
    start, end, step = _norm_slice(size, start, end, step)
    if step != 1:
        raise UnsupportedError(f'fx node "{cx.node_name}": slice_scatter with step {step}')
    src = _promote(cx, src, dtype=cx.dtype(input))[0]
    pieces = [_aten_slice(cx, input, axis, 0, start), src, _aten_slice(cx, input, axis, end, size)]
    pieces = [p for p in pieces if cx.shape(p)[axis] > 0]
    return pieces[0] if len(pieces) == 1 else cx.emit("concat", pieces, axis=axis)


@converts(aten.select_scatter.default, torch.select_scatter, "select_scatter")
def _select_scatter(cx: Ctx, input, src, dim, index):
    axis = _axis(dim, cx.rank(input))
    i = _axis(int(index), cx.shape(input)[axis])
    return _slice_scatter(cx, input, _unsqueeze(cx, src, axis), axis, i, i + 1)


def _aten_overloads(*names: str) -> list:
    """aten overloads by "op.overload" name, skipping those this torch does not have."""
    found = []
    for name in names:
        packet, _, overload = name.partition(".")
        found.append(getattr(getattr(aten, packet, None), overload or "default", None))
    return [f for f in found if f is not None]


# Functionalized graphs spell views as copies; each computes what its view does.
for _convert, _names in [
    (_view, ["view_copy.default"]), (_permute, ["permute_copy.default"]),
    (_expand, ["expand_copy.default"]), (_unsqueeze, ["unsqueeze_copy.default"]),
    (_squeeze, ["squeeze_copy.dim", "squeeze_copy.dims", "squeeze_copy.default"]),
    (_aten_slice, ["slice_copy.Tensor"]), (_transpose2, ["transpose_copy.int"]),
    (_t, ["t_copy.default"]), (_identity, ["alias_copy.default", "detach_copy.default"]),
    (_select, ["select_copy.int"]), (_unfold, ["unfold_copy.default"]),
    (_as_strided, ["as_strided_copy.default"]),
]:
    converts(*_aten_overloads(*_names))(_convert)


# ==================================================================== shapes, factories ====
@converts(aten.sym_size.int, "size")
def _size(cx: Ctx, x, dim=None):
    shape = cx.shape(x)
    return torch.Size(shape) if dim is None else shape[_axis(dim, len(shape))]


@converts(aten.sym_numel.default, "numel")
def _numel(cx: Ctx, x):
    return math.prod(cx.shape(x))


@converts("dim")
def _dim(cx: Ctx, x):
    return cx.rank(x)


@converts("item")
def _item(cx: Ctx, x):
    # Dynamo passes Python float attributes (eps, momentum) as 0-d tensors and reads them back
    # with .item(); those are constants here. The item of a run-time tensor is data-dependent.
    if isinstance(x, torch.Tensor):
        return x.item()
    raise UnsupportedError(f'fx node "{cx.node_name}": .item() of a run-time tensor')


@converts(builtins.getattr)
def _getattr(cx: Ctx, x, name: str):
    if isinstance(x, (Val, torch.Tensor)):
        attrs = {"shape": lambda: torch.Size(cx.shape(x)), "dtype": lambda: cx.dtype(x),
                 "ndim": lambda: cx.rank(x), "T": lambda: _t(cx, x), "H": lambda: _t(cx, x),
                 "mT": lambda: _matrix_transpose(cx, x), "mH": lambda: _matrix_transpose(cx, x),
                 "device": lambda: torch.device("cpu")}
        if name in attrs:
            return attrs[name]()
        raise UnsupportedError(f'fx node "{cx.node_name}": tensor attribute "{name}"')
    return getattr(x, name)


def _filled_like(fill):
    def convert(cx: Ctx, x, *args, dtype=None, layout=None, device=None, pin_memory=None,
                memory_format=None, requires_grad=False):
        value = args[0] if fill is None else fill
        out = torch.full(cx.shape(x), value, dtype=dtype or cx.dtype(x))
        cx.note_made(out)  # a new tensor: writes into it (RWKV's output rows) are the import's
        return out
    return convert


converts(aten.zeros_like.default, torch.zeros_like)(_filled_like(0))
converts("new_zeros", aten.new_zeros.default)(decompose.new_filled(0))
converts("new_ones", aten.new_ones.default)(decompose.new_filled(1))
converts("new_full", aten.new_full.default)(decompose.new_filled(None))
converts("new_empty", aten.new_empty.default)(decompose.new_filled(0))
converts("new_tensor")(decompose.new_tensor)


@converts(torch.amp.autocast_mode._enter_autocast, torch.amp.autocast_mode._exit_autocast)
def _autocast_region(cx: Ctx, *args):
    """A traced `torch.autocast` block (transformers 4.x computes its rotary embeddings in one,
    disabled): the engine's precision decides every op's dtype, so entering and leaving it is
    nothing to compute (both stay in one partition: the exit reads only the entry)."""
    return None


converts(torch.triu, aten.triu.default, "triu")(decompose.triangle(upper=True))
converts(torch.tril, aten.tril.default, "tril")(decompose.triangle(upper=False))
converts(operator.setitem)(decompose.setitem)
converts(assign)(decompose.assign)
converts("zero_", aten.zero_.default)(decompose.fill_in_place(0))
converts("fill_", aten.fill_.Scalar)(decompose.fill_in_place(None))
converts(torch.roll, aten.roll.default, "roll")(decompose.roll)
converts(torch.addcmul, aten.addcmul.default, "addcmul")(decompose.addcmul)
converts(torch.addcdiv, aten.addcdiv.default, "addcdiv")(decompose.addcdiv)
converts(aten.ones_like.default, torch.ones_like)(_filled_like(1))
converts(aten.full_like.default, torch.full_like)(_filled_like(None))


@converts(aten.dropout.default, F.dropout, torch.dropout, aten.native_dropout.default)
def _dropout(cx: Ctx, input, p=0.5, training=True, inplace=False):
    if training and p > 0:
        raise UnsupportedError(f'fx node "{cx.node_name}": dropout in training mode '
                               "(call model.eval() before compiling)")
    return input


# Run-time checks that export and dynamo leave in graphs; shapes are static here, so they hold.
for _t_ in (aten._assert_tensor_metadata.default, aten._assert_scalar.default,
            aten._assert_async.msg, aten.sym_constrain_range_for_size.default, torch._assert,
            torch.fx._symbolic_trace._assert_is_none):
    converts(_t_)(lambda cx, *a, **k: None)


# ============================================================== call_module converters ====
@converts_module(nn.Conv1d, nn.Conv2d, nn.Conv3d)
def _m_conv(cx: Ctx, m, x):
    if m.padding_mode != "zeros":
        raise UnsupportedError(f'fx node "{cx.node_name}": conv padding_mode "{m.padding_mode}"')
    return _conv(cx, x, m.weight, m.bias, m.stride, m.padding, m.dilation, m.groups)


@converts_module(nn.Linear)
def _m_linear(cx: Ctx, m, x):
    return _linear(cx, x, m.weight, m.bias)


@converts_module(nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
def _m_bn(cx: Ctx, m, x):
    return _f_batch_norm(cx, x, m.running_mean, m.running_var, m.weight, m.bias,
                        m.training or not m.track_running_stats, m.momentum, m.eps)


@converts_module(nn.LayerNorm)
def _m_ln(cx: Ctx, m, x):
    return _ln(cx, x, m.normalized_shape, m.weight, m.bias, m.eps)


@converts_module(nn.Embedding)
def _m_embedding(cx: Ctx, m, x):
    return _f_embedding(cx, x, m.weight, m.padding_idx, m.max_norm)


for _cls, _make in {
    nn.ReLU: lambda m: _unary("relu"), nn.Sigmoid: lambda m: _unary("sigmoid"),
    nn.Tanh: lambda m: _unary("tanh"), nn.SiLU: lambda m: _unary("silu"),
    nn.Hardswish: lambda m: _unary("hard_swish"),
}.items():
    MODULES[_cls] = lambda cx, m, x, _op=_make(None): _op(cx, x)

MODULES[nn.GELU] = lambda cx, m, x: _gelu(cx, x, m.approximate)
MODULES[nn.LeakyReLU] = lambda cx, m, x: _leaky_relu(cx, x, m.negative_slope)
MODULES[nn.Hardsigmoid] = lambda cx, m, x: _hardsigmoid(cx, x)
MODULES[nn.Hardtanh] = lambda cx, m, x: _hardtanh(cx, x, m.min_val, m.max_val)
MODULES[nn.ReLU6] = lambda cx, m, x: _hardtanh(cx, x, 0.0, 6.0)
MODULES[nn.Softmax] = lambda cx, m, x: _softmax(cx, x, m.dim)
MODULES[nn.Identity] = lambda cx, m, x, *a, **k: x
MODULES[nn.Dropout] = lambda cx, m, x: _dropout(cx, x, m.p, m.training)
MODULES[nn.Flatten] = lambda cx, m, x: _flatten(cx, x, m.start_dim, m.end_dim)
MODULES[nn.MaxPool1d] = lambda cx, m, x: _max_pool(1, False)(
    cx, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
MODULES[nn.MaxPool2d] = lambda cx, m, x: _max_pool(2, False)(
    cx, x, m.kernel_size, m.stride, m.padding, m.dilation, m.ceil_mode, m.return_indices)
MODULES[nn.AvgPool1d] = lambda cx, m, x: _avg_pool(1)(
    cx, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad)
MODULES[nn.AvgPool2d] = lambda cx, m, x: _avg_pool(2)(
    cx, x, m.kernel_size, m.stride, m.padding, m.ceil_mode, m.count_include_pad,
    m.divisor_override)
MODULES[nn.AdaptiveAvgPool2d] = lambda cx, m, x: _adaptive_avg_pool2d(cx, x, m.output_size)
MODULES[nn.AdaptiveAvgPool1d] = lambda cx, m, x: _adaptive_avg_pool1d(cx, x, m.output_size)
MODULES[nn.Unfold] = lambda cx, m, x: _im2col(cx, x, m.kernel_size, m.dilation, m.padding, m.stride)
MODULES[nn.GroupNorm] = lambda cx, m, x: decompose.group_norm(cx, x, m.num_groups, m.weight, m.bias, m.eps)


# ============================================================================ importer ====
def _target_name(target) -> str:
    if isinstance(target, str):
        return f"Tensor.{target}"
    if isinstance(target, type):
        if target.__module__.startswith("torch.nn.modules"):
            return f"torch.nn.{target.__name__}"
        return f"{target.__module__}.{target.__qualname__}"
    if isinstance(target, torch._ops.OpOverload):
        return str(target)
    name = getattr(target, "__name__", None) or repr(target)
    module = getattr(target, "__module__", None) or "torch"
    # Where users find these functions, not where they are defined (torch._C._nn.gelu is F.gelu).
    module = {"torch._C._nn": "torch.nn.functional", "torch._C._special": "torch.special",
              "_operator": "operator", "torch.functional": "torch",
              "torch._C._VariableFunctions": "torch"}.get(module, module)
    return f"{module}.{name}"


def target_label(node: torch.fx.Node) -> str:
    """What an fx node calls, as users write it: `aten.cumsum.default`, `Tensor.view`, ..."""
    if node.op == "call_module":
        return f"module {node.target}"
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return _target_name(node.target)


def supported_targets() -> list[str]:
    """Every fx target with a converter: aten overloads, torch functions, methods, modules."""
    names = {_target_name(t) for t in FUNCTIONS} | {f"Tensor.{m}" for m in METHODS}
    names |= {_target_name(t) for t in MODULES} | {"torch.nn.Sequential"}
    return sorted(names)


def _module_converter(module: nn.Module):
    return MODULES.get(type(module))


def supported_fx_target(node: torch.fx.Node) -> bool:
    """Cheap check (for partitioning around unsupported nodes): can import_fx convert `node`?

    True for nodes with a converter, for nodes with no fx-node inputs (they fold), and for calls
    torch's decomposition turns into ops with converters (fx_aten, judged on the recorded example
    values). A convertible target can still fail on unusual arguments.
    """
    if node.op in ("placeholder", "output", "get_attr"):
        return True
    if node.op == "call_function":
        return node.target in FUNCTIONS or not node.all_input_nodes or _decomposes(node)
    if node.op == "call_method":
        return node.target in METHODS or not node.all_input_nodes or _decomposes(node)
    if node.op == "call_module":
        root = node.graph.owning_module
        if root is None:
            return False
        module = root.get_submodule(node.target)
        return _module_converter(module) is not None or isinstance(module, nn.Sequential)
    return False


def _decomposes(node: torch.fx.Node) -> bool:
    """A call without a converter that torch's decomposition turns into ops with converters
    (fx_aten), judged on the example values dynamo and export record for its inputs."""
    try:
        args, kwargs = torch.fx.node.map_arg((node.args, node.kwargs), _example_of)
    except LookupError:
        return False
    return traced_call(node.op, node.target, args, kwargs, _meta_tensor, _has_converter) \
        is not None


def _example_of(node: torch.fx.Node):
    """A meta tensor for a node that computes a tensor of static shape, its value for one that
    computes a Python number; LookupError otherwise (a symbolic size, no record)."""
    example = node.meta.get("val", node.meta.get("example_value"))
    if isinstance(example, torch.Tensor) and all(isinstance(d, int) for d in example.shape):
        return torch.empty(tuple(example.shape), dtype=example.dtype, device="meta")
    if type(example) in (int, float, bool):
        return example
    raise LookupError(node.name)


def _meta_tensor(a):
    return a if isinstance(a, torch.Tensor) else None


def _has_converter(target) -> bool:
    return target in FUNCTIONS


def _node_label(gm: torch.fx.GraphModule, node: torch.fx.Node) -> str:
    """IR node names: a module call is named by its module path (`layer1.0.conv1`, as in the
    user's model and in ONNX exports); a bare nn.Sequential index by its type (`relu_1`)."""
    if node.op != "call_module":
        return node.name
    target = str(node.target)
    if target.isdigit():
        return f"{type(gm.get_submodule(target)).__name__.lower()}_{target}"
    return target


class _Importer:
    def __init__(self, name: str):
        self.cx = Ctx(name)

    # -- the loop ----------------------------------------------------------------------------
    def run(self, gm: torch.fx.GraphModule, placeholders: list, label: str | None = None) -> Any:
        """Map each node of `gm` to a value; `placeholders` are the values of its placeholders.
        `label` names every IR node the graph makes (a decomposed call: its own fx node's name)."""
        env: dict[torch.fx.Node, Any] = {}
        feed = iter(placeholders)
        for node in gm.graph.nodes:
            self.cx.node_name = label or _node_label(gm, node)
            self.cx.fx_node = node
            if node.op == "placeholder":
                env[node] = next(feed, _NO_EXAMPLE)
                if env[node] is _NO_EXAMPLE:
                    env[node] = _placeholder_default(node)
            elif node.op == "get_attr":
                env[node] = self._get_attr(gm, node)
            elif node.op == "output":
                return torch.fx.node.map_arg(node.args[0], lambda n: env[n])
            else:
                args = torch.fx.node.map_arg(node.args, lambda n: env[n])
                kwargs = torch.fx.node.map_arg(node.kwargs, lambda n: env[n])
                env[node] = self._call_located(gm, node, args, kwargs)
                self._check_against_meta(node, env[node])
                if isinstance(env[node], torch.Tensor):  # folded: name it after its fx node
                    self.cx.hints.setdefault(id(env[node]), (env[node], node.name))
        raise TridentError(f"{gm.__class__.__name__}: fx graph has no output node")

    def _get_attr(self, gm, node):
        obj = gm
        for part in node.target.split("."):
            obj = getattr(obj, part)
        if isinstance(obj, torch.Tensor):
            self.cx.hints.setdefault(id(obj), (obj, node.target))
            return obj
        return obj  # a submodule, for higher-order ops; converters that get one will refuse it

    def _call_located(self, gm, node: torch.fx.Node, args, kwargs):
        """_call, with any unexpected failure turned into a TridentError naming the node."""
        try:
            return self._call(gm, node, args, kwargs)
        except UnsupportedError as e:
            # the refused node, of the outermost graph (a call traced through torch's own
            # decomposition is one node of it): torch.compile's partition splits around it
            e.fx_node = node.name
            raise
        except TridentError:
            raise
        except Exception as e:  # noqa: BLE001  (a converter bug or torch refusing a fold)
            raise TridentError(f'fx node "{node.name}" ({target_label(node)}): '
                               f"{type(e).__name__}: {e}") from e

    def _call(self, gm, node: torch.fx.Node, args, kwargs):
        if node.op == "call_module":
            return self._call_module(gm, node, args, kwargs)
        table = FUNCTIONS if node.op == "call_function" else METHODS
        convert = table.get(node.target)
        constant = not _has_val((args, kwargs))
        if convert is not None and (_has_tensor((args, kwargs)) or _is_python_op(node)):
            try:
                return convert(self.cx, *args, **kwargs)
            except TypeError as e:
                raise UnsupportedError(f'fx node "{node.name}" ({target_label(node)}): '
                                       f"arguments the converter does not take: {e}") from None
            except UnsupportedError:
                # Constants only (a mask built from torch.ones and aranges): torch computes it
                # now, whatever the converter takes. Not a write: it could land in the model.
                if not constant or writes_in_place(node):
                    raise
        if constant:
            out = _fold_with_torch(node, args, kwargs)
            self.cx.note_made(out, (args, kwargs))
            return out
        if convert is None:  # torch's own decomposition of the call, when it has converters
            traced = traced_call(node.op, node.target, args, kwargs, self._meta_of, _has_converter)
            if traced is not None:
                graph, tensors = traced
                return self.run(graph, tensors, label=self.cx.node_name)
        raise _unsupported(node)

    def _meta_of(self, v) -> torch.Tensor | None:
        """A meta tensor of a tensor argument's shape and dtype (fx_aten traces on those)."""
        if isinstance(v, torch.Tensor):
            return torch.empty(tuple(v.shape), dtype=v.dtype, device="meta")
        if not isinstance(v, Val):
            return None
        t = self.cx.type(v)
        if not t.is_static:
            raise LookupError(v.name)
        return torch.empty(tuple(t.shape), dtype=t.dtype, device="meta")

    def _call_module(self, gm, node, args, kwargs):
        module = gm.get_submodule(node.target)
        if node.target == "_guards_fn":  # ExportedProgram.module() input checks
            return None
        for name, t in list(module.named_parameters()) + list(module.named_buffers()):
            self.cx.hints.setdefault(id(t), (t, f"{node.target}.{name}"))
        if not _has_val((args, kwargs)) and not isinstance(module, nn.Sequential):
            return _fold_with_torch(node, args, kwargs, module)
        convert = _module_converter(module)
        if convert is not None:
            return convert(self.cx, module, *args, **kwargs)
        if isinstance(module, nn.Sequential):
            return self._inline(module, args, kwargs, node)
        raise _unsupported(node, type(module))

    def _inline(self, module: nn.Module, args, kwargs, node):
        """A container left as a leaf by a custom tracer: trace it and import its graph here."""
        try:
            sub = torch.fx.symbolic_trace(module)
        except Exception as e:  # noqa: BLE001  (tracing user code raises anything)
            raise UnsupportedError(f'fx node "{node.name}": cannot trace {type(module).__name__}'
                                   f": {e}") from None
        return self.run(sub, list(args) + list(kwargs.values()))

    def _check_against_meta(self, node: torch.fx.Node, value) -> None:
        """export and dynamo record what torch computed for each node; a converter that
        disagrees has a bug, and saying so here names the node instead of a wrong answer later."""
        meta = node.meta.get("val", node.meta.get("example_value"))
        metas, values = (meta, value) if isinstance(meta, (list, tuple)) else ([meta], [value])
        if not isinstance(values, (list, tuple)) or len(metas) != len(values):
            return
        for m, v in zip(metas, values):
            if not isinstance(m, torch.Tensor) or not isinstance(v, (Val, torch.Tensor)):
                continue
            if not all(isinstance(d, int) for d in m.shape):
                continue  # symbolic shapes: the example inputs decided ours
            got = self.cx.type(v)
            if tuple(m.shape) != got.shape or m.dtype != got.dtype:
                raise ShapeError(f'fx node "{node.name}" ({target_label(node)}): '
                                 f"imported as {got}, but torch computed "
                                 f"{TensorType(tuple(m.shape), m.dtype)}")

    # -- graph inputs and outputs -----------------------------------------------------------
    def input(self, name: str, x) -> Any:
        """A graph input for a tensor example; a non-tensor example (a SymInt's int) is constant."""
        if not isinstance(x, torch.Tensor):
            return _python_value(x)
        if x.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(f'input "{name}" has dtype {x.dtype}; supported: '
                                   f"{sorted(str(d) for d in SUPPORTED_DTYPES)}")
        return Val(self.cx.b.input(name, TensorType.of(x)))

    def constant(self, t: torch.Tensor, hint: str) -> torch.Tensor:
        self.cx.hints.setdefault(id(t), (t, hint))
        return t

    def finish(self, result) -> Graph:
        outputs = []
        for v in tree_flatten(result)[0]:
            if v is None:
                continue
            if not isinstance(v, (Val, torch.Tensor)):
                raise UnsupportedError(f"graph output {v!r} is not a tensor")
            outputs.append(self.cx.name_of(v))
        return self.cx.b.finish(outputs)


_NO_EXAMPLE = object()


def _placeholder_default(node: torch.fx.Node):
    if node.args:  # symbolic_trace records a forward() default as the placeholder's argument
        return node.args[0]
    raise TridentError(f'placeholder "{node.name}" has no example input (for a torch.export '
                       "graph, pass the ExportedProgram: its signature tells weights from inputs)")


def _is_python_op(node: torch.fx.Node) -> bool:
    """Converters that also work on plain Python objects (x.size()[1], a tuple's item)."""
    return node.target in (operator.getitem, builtins.getattr)


def _fold_with_torch(node: torch.fx.Node, args, kwargs, module: nn.Module | None = None):
    """Nothing here depends on a run-time input: compute it now with torch itself."""
    args, kwargs = on_one_device((args, kwargs))
    with torch.no_grad():
        if node.op == "call_function":
            out = node.target(*args, **kwargs)
        elif node.op == "call_method":
            out = getattr(args[0], node.target)(*args[1:], **kwargs)
        else:
            out = module(*args, **kwargs)
    return out.detach() if isinstance(out, torch.Tensor) else out


def _unsupported(node: torch.fx.Node, module_type: type | None = None) -> UnsupportedError:
    target = _target_name(module_type or node.target)
    return UnsupportedError(f'fx node "{node.name}": unsupported {node.op} target {target}; '
                            f"supported targets: {', '.join(supported_targets())}")


def _in_place(convert: Callable) -> Callable:
    """x.op_(...), once fx_mutation has pointed x's later readers at it: x.op(...) in x's dtype
    (an in-place op never changes its tensor's dtype: fp16 x.mul_(fp32 y) stays fp16)."""
    def write(cx: Ctx, x, *args, **kwargs):
        out = convert(cx, x, *args, **kwargs)
        return cx.cast(out, cx.dtype(x)) if isinstance(x, Val) and isinstance(out, Val) else out
    return write


def _register_in_place_methods() -> None:
    """Tensor.add_, relu_, clamp_, masked_fill_ ... from the converters of their out-of-place
    forms (zero_ and fill_, which write into constants the import made, have their own)."""
    for name, convert in list(METHODS.items()):
        in_place = name + "_"
        if not name.startswith("_") and in_place not in METHODS and hasattr(torch.Tensor, in_place):
            METHODS[in_place] = _in_place(convert)


_register_in_place_methods()


# ========================================================================== entry points ====
def _is_weight(node: torch.fx.Node, example) -> bool:
    """Is this tensor placeholder part of the model rather than a user input?

    Dynamo lifts module parameters and buffers to placeholders and marks them static; under
    dynamic shapes it also passes Python float attributes (eps, momentum) as 0-d float64 tensors,
    the only tensor placeholders it records no tensor_dict for.
    """
    if isinstance(example, nn.Parameter):
        return True
    if node.meta.get("tensor_dict", {}).get("_dynamo_static_input_type") is not None:
        return True
    return ("example_value" in node.meta and "tensor_dict" not in node.meta
            and example.dim() == 0)


def _python_value(x):
    """A SymInt example (dynamo with dynamic shapes) stands for the size it was traced at."""
    if isinstance(x, (torch.SymInt, torch.SymFloat, torch.SymBool)):
        hint = x.node.hint
        return hint if hint is not None else int(x)
    return x


def user_input_indices(gm: torch.fx.GraphModule, example_inputs: Sequence) -> list[int]:
    """Which example inputs import_fx keeps as graph inputs, in order.

    A dynamo graph lifts parameters and buffers to placeholders; import_fx makes those constants,
    so a torch.compile backend must call the engine with `[args[i] for i in these]` only. Other
    graphs keep every tensor input.
    """
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    return [i for i, (n, x) in enumerate(zip(placeholders, example_inputs))
            if isinstance(x, torch.Tensor) and not _is_weight(n, x)]


def _import_graph_module(gm: torch.fx.GraphModule, example_inputs: Sequence, name: str) -> Graph:
    unexplicit = make_writes_explicit(gm)
    if unexplicit:
        node, why = unexplicit[0]
        raise UnsupportedError(f'fx node "{node.name}" ({target_label(node)}) {why}')
    imp = _Importer(name)
    keep = set(user_input_indices(gm, example_inputs))
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    values = []
    for i, (node, x) in enumerate(zip(placeholders, example_inputs)):
        values.append(imp.input(node.name, x) if i in keep or not isinstance(x, torch.Tensor)
                      else imp.constant(x, node.name))
    return imp.finish(imp.run(gm, values))


def _import_exported(ep: torch.export.ExportedProgram, example_inputs: Sequence,
                     name: str) -> Graph:
    from torch.export.graph_signature import InputKind, OutputKind

    if _needs_decomposition(ep):
        ep = _decompose(ep)  # to the core ATen set the table covers
    imp = _Importer(name)
    user = iter(tree_flatten(list(example_inputs))[0])
    placeholders = [n for n in ep.graph_module.graph.nodes if n.op == "placeholder"]
    values = []
    for spec, node in zip(ep.graph_signature.input_specs, placeholders):
        if spec.kind == InputKind.USER_INPUT:
            values.append(imp.input(node.name, next(user)))
        elif spec.kind in (InputKind.PARAMETER, InputKind.BUFFER, InputKind.CONSTANT_TENSOR):
            t = ep.state_dict.get(spec.target)
            t = ep.constants[spec.target] if t is None else t
            values.append(imp.constant(t, spec.target))
        else:
            raise UnsupportedError(f'exported input "{node.name}" of kind {spec.kind.name}')
    results = imp.run(ep.graph_module, values)
    # Buffer mutations (none in eval mode) come before the user's outputs; keep the outputs.
    return imp.finish([v for v, spec in zip(results, ep.graph_signature.output_specs)
                       if spec.kind == OutputKind.USER_OUTPUT])


def _needs_decomposition(ep: torch.export.ExportedProgram) -> bool:
    """Decomposing costs seconds on a big model; skip it when every aten op has a converter."""
    return any(isinstance(n.target, torch._ops.OpOverload) and n.target not in FUNCTIONS
               for n in ep.graph_module.graph.nodes if n.op == "call_function")


# Kept whole when decomposing: it becomes one IR attention node (one fused kernel), where core
# ATen's decomposition would spell it out in a dozen ops.
_KEEP_UNDECOMPOSED = (aten.scaled_dot_product_attention.default,)


def _decompose(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    table = torch.export.default_decompositions()
    for op in _KEEP_UNDECOMPOSED:
        table.pop(op, None)
    return ep.run_decompositions(table)


def _symbolic_trace(module: nn.Module, example_inputs: tuple) -> torch.fx.GraphModule:
    """torch.fx.symbolic_trace, with forward's unsupplied optional arguments fixed to defaults."""
    params = list(inspect.signature(module.forward).parameters.values())[len(example_inputs):]
    concrete = {p.name: p.default for p in params if p.default is not inspect.Parameter.empty}
    return torch.fx.symbolic_trace(module, concrete_args=concrete or None)


def _export(module: nn.Module, example_inputs: tuple):
    """torch.export, decomposed to the core ATen set."""
    with warnings.catch_warnings():  # torch.export's internal pytree deprecation noise
        warnings.filterwarnings("ignore", message=".*LeafSpec.*", category=FutureWarning)
        return _decompose(torch.export.export(module, example_inputs))


def _import_module(module: nn.Module, example_inputs: tuple, name: str) -> Graph:
    """Trace a module: symbolic_trace first (a fraction of a second even for ResNet-50), and
    torch.export (seconds, but it sees through data-dependent Python) when tracing or importing
    the traced graph fails."""
    try:
        return _import_graph_module(_symbolic_trace(module, example_inputs), example_inputs, name)
    except Exception as trace_error:  # noqa: BLE001  (tracing fails in many ways on user code)
        try:
            exported = _export(module, example_inputs)
        except Exception as export_error:  # noqa: BLE001
            raise UnsupportedError(f"cannot trace {name}: symbolic_trace failed ({trace_error}); "
                                   f"torch.export failed ({export_error})") from None
        return _import_exported(exported, example_inputs, name)


def _check_eval_mode(module: nn.Module) -> None:
    """BatchNorm and dropout compute something else in training mode; say so up front rather
    than fail later on the ops training mode traces to."""
    stateful = (nn.modules.batchnorm._BatchNorm, nn.modules.dropout._DropoutNd)
    training = [name or type(module).__name__ for name, m in module.named_modules()
                if m.training and isinstance(m, stateful)]
    if training:
        raise UnsupportedError(f"{type(module).__name__}: {', '.join(training[:3])}"
                               f"{' ...' if len(training) > 3 else ''} in training mode "
                               "(call model.eval() before compiling)")


def import_fx(gm_or_module, example_inputs: Sequence) -> Graph:
    """Import an nn.Module, fx.GraphModule or ExportedProgram as an IR Graph.

    `example_inputs` fix every shape (the IR here is static): for a dynamo graph they are what
    the backend was handed (parameters included); otherwise the model's positional inputs.
    Graph inputs are named after the placeholders.
    """
    example_inputs = tuple(example_inputs)
    model = gm_or_module
    name = type(model).__name__
    if isinstance(model, nn.Module) and not isinstance(model, torch.fx.GraphModule):
        _check_eval_mode(model)
        return _import_module(model, example_inputs, name)
    if isinstance(model, torch.export.ExportedProgram):
        graph = _import_exported(model, example_inputs, name)
    elif isinstance(model, torch.fx.GraphModule):
        graph = _import_graph_module(model, example_inputs, name)
    else:
        raise UnsupportedError(f"import_fx takes an nn.Module, fx.GraphModule or "
                               f"ExportedProgram, not {type(gm_or_module).__name__}")
    return graph
