"""Converters of what the import computes or drops: sizes and tensor attributes, .item(), tensors
made like others (*_like, new_*), triangles, writes (setitem, fill_), roll, addcmul / addcdiv,
autocast regions, dropout and the run-time asserts export and dynamo leave."""
from __future__ import annotations

import builtins
import math
import operator

import torch
import torch.fx
import torch.nn.functional as F

from trident.compiler.errors import UnsupportedError
from trident.compiler.fx_mutation import assign
from trident.compiler.frontend.fx import decompose
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.linear import _matrix_transpose, _t
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten


# ==================================================================== shapes, factories ====
def _python_rounding(fn):
    """math.ceil / floor / trunc of a Python number (a symbolic size's arithmetic: NLLB-MoE's
    expert capacity), known at import."""
    def convert(cx: Ctx, x):
        if isinstance(x, (Val, torch.Tensor)):
            raise UnsupportedError(f'fx node "{cx.node_name}": math.{fn.__name__} of a tensor')
        return fn(x)
    return convert


for _fn in (math.ceil, math.floor, math.trunc):
    converts(_fn)(_python_rounding(_fn))


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


@converts(torch.arange, aten.arange.default, aten.arange.start, aten.arange.start_step)
def _arange(cx: Ctx, *bounds, dtype=None, layout=None, device=None, pin_memory=None, requires_grad=False):
    """torch.arange of sizes (a decoder's key positions, `arange(past + 1)` under dynamic shapes):
    a constant at import, at each size a profile probes. Bounds computed at run time would give
    the engine a length no shape holds: refused."""
    if any(isinstance(b, (Val, torch.Tensor)) for b in bounds):
        raise UnsupportedError(f'fx node "{cx.node_name}": arange with bounds computed at run time')
    made = torch.arange(*bounds, dtype=dtype)
    cx.note_made(made)
    return made


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
converts(aten.empty_like.default, torch.empty_like)(_filled_like(0))  # (contents unspecified: zeros)


def _filled(fill):
    """torch.zeros / ones / empty / full of sizes (under dynamic shapes a size dynamo computed): a
    constant at import, as any factory of Python numbers is. full's dtype follows its value where
    none is given, as torch's does."""
    def convert(cx: Ctx, *size, fill_value=None, dtype=None, layout=None, device=None, pin_memory=None,
                requires_grad=False, memory_format=None):
        if fill is None:  # torch.full(size, fill_value)
            size, fill_value = (size[:1], size[1]) if len(size) == 2 else (size, fill_value)
        shape = size[0] if len(size) == 1 and isinstance(size[0], (list, tuple)) else size
        value = fill_value if fill is None else fill
        if any(isinstance(v, (Val, torch.Tensor)) for v in (*shape, value)):
            raise UnsupportedError(f'fx node "{cx.node_name}": a factory of sizes or a value computed at run time')
        if fill is not None:
            dtype = dtype or torch.get_default_dtype()
        made = torch.full([int(n) for n in shape], value, dtype=dtype)
        cx.note_made(made)
        return made
    return convert


converts(torch.zeros, aten.zeros.default)(_filled(0))
converts(torch.ones, aten.ones.default)(_filled(1))
converts(torch.empty, aten.empty.memory_format)(_filled(0))  # (contents unspecified: zeros)
converts(torch.full, aten.full.default)(_filled(None))


@converts(torch.Size)
def _size_of(cx: Ctx, sizes=()):
    """torch.Size of sizes (dynamo records `torch.Size([b, s])` of symbolic ones)."""
    if any(isinstance(n, (Val, torch.Tensor)) for n in sizes):
        raise UnsupportedError(f'fx node "{cx.node_name}": torch.Size of a run-time value')
    return torch.Size([int(n) for n in sizes])


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
