"""Complex tensors, carried as pairs of real tensors.

trident has no complex dtype. Models use complex numbers for a few things on the way between real
tensors: rotary position embeddings written as `view_as_real(view_as_complex(x) * polar(1, θ))`
(Meta's Llama reference, Llama 4, DeepSeek-V2) and Fourier transforms read through `.real`
(FNet). Between such a source and such a sink, a complex value is carried as its real and
imaginary parts (`Complex`), and each op on it is real arithmetic on the parts:
(a + ib)(c + id) = (ac - bd) + i(ad + bc); a reshape, an index or a broadcast applies to both.

The converters here are looked up when a node's arguments hold a Complex (or a complex constant
beside a run-time value): `convert`. Where a complex value would leave the graph, or reach an op
this table lacks, compiler/dynamo.py keeps the complex region in torch (`complex_region`).
"""
from __future__ import annotations

import builtins
import operator
from dataclasses import dataclass
from typing import Any, Callable

import torch
import torch.fx
from torch.utils._pytree import tree_flatten

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.registry import FUNCTIONS, METHODS, converts

aten = torch.ops.aten

REAL_OF = {torch.complex64: torch.float32, torch.complex128: torch.float64, torch.complex32: torch.float16}
COMPLEX_OF = {real: cplx for cplx, real in REAL_OF.items()}


@dataclass
class Complex:
    """A complex value as its real and imaginary parts (run-time values or constants)."""
    re: Any
    im: Any


def pairs(cx: Ctx, v) -> Complex | None:
    """v as a Complex (a complex constant tensor or Python number split in parts), or None for a
    real value."""
    if isinstance(v, Complex):
        return v
    if isinstance(v, torch.Tensor) and v.is_complex():
        return Complex(v.real.clone(), v.imag.clone())
    if isinstance(v, complex):
        return Complex(v.real, v.imag)
    return None


def holds_complex(args, kwargs) -> bool:
    """Do a node's arguments need the complex table: a Complex, or a complex constant beside a
    run-time value (a real tensor times precomputed frequencies, `1j * angles`)?"""
    leaves = tree_flatten((args, kwargs))[0]
    if any(isinstance(x, Complex) for x in leaves):
        return True
    return any(isinstance(x, Val) for x in leaves) and \
        any(isinstance(x, complex) or (isinstance(x, torch.Tensor) and x.is_complex()) for x in leaves)


# ============================================================================== table ====
COMPLEX_FUNCTIONS: dict[Any, Callable] = {}
COMPLEX_METHODS: dict[str, Callable] = {}


def on_pairs(*targets):
    def register(fn: Callable) -> Callable:
        for t in targets:
            (COMPLEX_METHODS if isinstance(t, str) else COMPLEX_FUNCTIONS)[t] = fn
        return fn
    return register


def has_complex_converter(node: torch.fx.Node) -> bool:
    if node.op == "call_function":
        return node.target in COMPLEX_FUNCTIONS
    return node.op == "call_method" and node.target in COMPLEX_METHODS


def convert(cx: Ctx, node: torch.fx.Node, args, kwargs):
    table = COMPLEX_FUNCTIONS if node.op == "call_function" else COMPLEX_METHODS
    fn = table.get(node.target) if node.op in ("call_function", "call_method") else None
    if fn is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": {node.target} of a complex tensor '
                               "(trident carries complex values through a few ops only)")
    return fn(cx, *args, **kwargs)


def _real_op(target):
    """The real converter of the same call."""
    return METHODS[target] if isinstance(target, str) else FUNCTIONS.get(target)


def _mul(cx, a, b):
    return FUNCTIONS[operator.mul](cx, a, b)


def _add(cx, a, b):
    return FUNCTIONS[operator.add](cx, a, b)


def _sub(cx, a, b):
    return FUNCTIONS[operator.sub](cx, a, b)


def _neg(cx, a):
    return FUNCTIONS[operator.neg](cx, a)


# ============================================================================ sources ====
@converts(torch.view_as_complex, aten.view_as_complex.default)
def _view_as_complex(cx: Ctx, x):
    if cx.shape(x)[-1] != 2 or not cx.dtype(x).is_floating_point:
        raise UnsupportedError(f'fx node "{cx.node_name}": view_as_complex of {cx.dtype(x)}'
                               f"{list(cx.shape(x))} (it takes a last dim of 2 floats)")
    take = FUNCTIONS[operator.getitem]
    return Complex(take(cx, x, (Ellipsis, 0)), take(cx, x, (Ellipsis, 1)))


@converts(torch.polar, aten.polar.default)
def _polar(cx: Ctx, magnitude, angle):
    return Complex(_mul(cx, magnitude, FUNCTIONS[torch.cos](cx, angle)),
                   _mul(cx, magnitude, FUNCTIONS[torch.sin](cx, angle)))


@converts(torch.complex, aten.complex.default)
def _complex(cx: Ctx, real, imag):
    return Complex(real, imag)


# ============================================================================== sinks ====
@on_pairs(torch.view_as_real, aten.view_as_real.default)
def _view_as_real(cx: Ctx, z):
    z = pairs(cx, z)
    return FUNCTIONS[torch.stack](cx, [z.re, z.im], -1)


@on_pairs(builtins.getattr)
def _getattr(cx: Ctx, z, name: str):
    z = pairs(cx, z)
    if name in ("real", "imag"):
        return z.re if name == "real" else z.im
    if name in ("shape", "ndim"):
        return FUNCTIONS[builtins.getattr](cx, z.re, name)
    if name == "dtype":
        return COMPLEX_OF[cx.dtype(z.re)]
    raise UnsupportedError(f'fx node "{cx.node_name}": attribute "{name}" of a complex tensor')


@on_pairs(torch.real, aten.real.default)
def _real(cx: Ctx, z):
    return pairs(cx, z).re


@on_pairs(torch.imag, aten.imag.default)
def _imag(cx: Ctx, z):
    return pairs(cx, z).im


@on_pairs(torch.abs, aten.abs.default, "abs")
def _abs(cx: Ctx, z):
    z = pairs(cx, z)
    return FUNCTIONS[torch.hypot](cx, z.re, z.im)


@on_pairs(torch.angle, aten.angle.default, "angle")
def _angle(cx: Ctx, z):
    z = pairs(cx, z)
    return FUNCTIONS[torch.atan2](cx, z.im, z.re)


# ========================================================================= arithmetic ====
@on_pairs(operator.mul, operator.imul, torch.mul, aten.mul.Tensor, "mul")
def _times(cx: Ctx, a, b):
    x, y = pairs(cx, a), pairs(cx, b)
    if x is None or y is None:
        z, r = (y, a) if x is None else (x, b)
        return Complex(_mul(cx, z.re, r), _mul(cx, z.im, r))
    return Complex(_sub(cx, _mul(cx, x.re, y.re), _mul(cx, x.im, y.im)),
                   _add(cx, _mul(cx, x.re, y.im), _mul(cx, x.im, y.re)))


@on_pairs(operator.truediv, operator.itruediv, torch.div, aten.div.Tensor, "div")
def _divide(cx: Ctx, a, b):
    x, y = pairs(cx, a), pairs(cx, b)
    divide = FUNCTIONS[operator.truediv]
    if y is None:
        return Complex(divide(cx, x.re, b), divide(cx, x.im, b))
    x = x or Complex(a, 0.0)
    norm = _add(cx, _mul(cx, y.re, y.re), _mul(cx, y.im, y.im))
    return Complex(divide(cx, _add(cx, _mul(cx, x.re, y.re), _mul(cx, x.im, y.im)), norm),
                   divide(cx, _sub(cx, _mul(cx, x.im, y.re), _mul(cx, x.re, y.im)), norm))


def _sum_of(combine):
    def convert(cx: Ctx, a, b, alpha=1):
        x, y = pairs(cx, a) or Complex(a, 0.0), pairs(cx, b) or Complex(b, 0.0)
        if alpha != 1:
            y = Complex(_mul(cx, y.re, alpha), _mul(cx, y.im, alpha))
        return Complex(combine(cx, x.re, y.re), combine(cx, x.im, y.im))
    return convert


on_pairs(operator.add, operator.iadd, torch.add, aten.add.Tensor, "add")(_sum_of(_add))
on_pairs(operator.sub, operator.isub, torch.sub, aten.sub.Tensor, "sub")(_sum_of(_sub))


@on_pairs(operator.neg, torch.neg, aten.neg.default, "neg")
def _negate(cx: Ctx, z):
    z = pairs(cx, z)
    return Complex(_neg(cx, z.re), _neg(cx, z.im))


@on_pairs(torch.exp, aten.exp.default, "exp")
def _exp(cx: Ctx, z):
    """e^(a + ib) = e^a (cos b + i sin b): `exp(1j * angles)`, another spelling of polar(1, angles)."""
    z = pairs(cx, z)
    magnitude = FUNCTIONS[torch.exp](cx, z.re)
    return Complex(_mul(cx, magnitude, FUNCTIONS[torch.cos](cx, z.im)),
                   _mul(cx, magnitude, FUNCTIONS[torch.sin](cx, z.im)))


@on_pairs(torch.log, aten.log.default, "log")
def _log(cx: Ctx, z):
    """log z = log |z| + i angle(z) (the principal branch, as torch's)."""
    return Complex(FUNCTIONS[torch.log](cx, _abs(cx, z)), _angle(cx, z))


@on_pairs(torch.conj, torch.conj_physical, aten.conj.default, aten._conj.default, "conj", "conj_physical")
def _conj(cx: Ctx, z):
    z = pairs(cx, z)
    return Complex(z.re, _neg(cx, z.im))


@on_pairs(torch.resolve_conj, aten.resolve_conj.default, "resolve_conj", "contiguous", "detach",
           torch.detach, aten.detach.default)
def _same(cx: Ctx, z, *_, **__):
    return pairs(cx, z)


# ========================================================================= movement ====
def _each_part(target):
    """A view, an index, a copy or a sum of a complex value: the same call on each part (a
    complex dtype argument as its parts' real one)."""
    def convert(cx: Ctx, z, *args, **kwargs):
        if holds_complex(args, kwargs):
            raise UnsupportedError(f'fx node "{cx.node_name}": {target} with a complex argument')
        dtypes = [a for a in (*args, *kwargs.values()) if isinstance(a, torch.dtype)]
        if any(not d.is_complex for d in dtypes):  # (`z.view(torch.float32)` reinterprets the pairs)
            raise UnsupportedError(f'fx node "{cx.node_name}": {target} of a complex tensor to {dtypes[0]}')
        args = [REAL_OF.get(a, a) if isinstance(a, torch.dtype) else a for a in args]
        kwargs = {k: REAL_OF.get(a, a) if isinstance(a, torch.dtype) else a for k, a in kwargs.items()}
        z, real = pairs(cx, z), _real_op(target)
        return Complex(real(cx, z.re, *args, **kwargs), real(cx, z.im, *args, **kwargs))
    return convert


for _target in (operator.getitem, torch.unsqueeze, torch.squeeze, torch.reshape, torch.transpose,
                torch.permute, torch.flatten, torch.clone, torch.narrow, torch.select, torch.movedim,
                torch.flip, torch.sum, torch.mean, aten.unsqueeze.default, aten.view.default,
                aten.reshape.default, aten.expand.default, aten.slice.Tensor, aten.select.int,
                aten.permute.default, aten.transpose.int, aten.clone.default, aten.squeeze.dim,
                aten.sum.dim_IntList, aten.mean.dim,
                "unsqueeze", "squeeze", "reshape", "view", "expand", "transpose", "permute", "flatten",
                "unflatten", "clone", "repeat", "narrow", "select", "movedim", "flip", "sum", "mean"):
    on_pairs(_target)(_each_part(_target))


def _join(target):
    """torch.cat / torch.stack of complex values: of the parts."""
    def convert(cx: Ctx, tensors, *args, **kwargs):
        zs = [pairs(cx, t) or Complex(t, FUNCTIONS[torch.zeros_like](cx, t)) for t in tensors]
        real = _real_op(target)
        return Complex(real(cx, [z.re for z in zs], *args, **kwargs),
                       real(cx, [z.im for z in zs], *args, **kwargs))
    return convert


for _target in (torch.cat, torch.concat, aten.cat.default, torch.stack, aten.stack.default):
    on_pairs(_target)(_join(_target))


@on_pairs("to", aten._to_copy.default)
def _to(cx: Ctx, z, *args, **kwargs):
    """A move (devices are the engine's) or a cast: to a complex dtype, of the parts; to a real
    one, the real part (torch drops the imaginary part so, with a warning)."""
    dtypes = [a for a in (*args, kwargs.get("dtype")) if isinstance(a, torch.dtype)]
    z = pairs(cx, z)
    if not dtypes:
        return z
    cast = METHODS["to"]
    if dtypes[-1].is_complex:
        real = REAL_OF[dtypes[-1]]
        return Complex(cast(cx, z.re, real), cast(cx, z.im, real))
    return cast(cx, z.re, dtypes[-1])


# ======================================================================= partitioning ====
def _is_complex(node: torch.fx.Node) -> bool:
    value = node.meta.get("example_value", node.meta.get("val"))
    return isinstance(value, torch.Tensor) and value.is_complex()


def reads_complex(node: torch.fx.Node) -> bool:
    return any(map(_is_complex, node.all_input_nodes))


def touches_complex(node: torch.fx.Node) -> bool:
    """Does the node read or make a complex tensor (by the example values dynamo records)?"""
    return _is_complex(node) or reads_complex(node)


def why_complex_in_torch(node: torch.fx.Node) -> str:
    if reads_complex(node) and not has_complex_converter(node):
        return ("reads a complex tensor (trident carries complex values through view_as_complex / "
                "view_as_real, polar, arithmetic, exp, log, views, abs, angle and torch.fft only)")
    return ("reads or makes a complex tensor that a graph input or output, or an op left in torch, "
            "also holds (trident carries complex values between real tensors only)")


def _weight(node: torch.fx.Node) -> bool:
    """A lifted parameter or buffer (precomputed rotary frequencies): a constant here."""
    return node.op == "get_attr" or (node.op == "placeholder" and node.meta.get("tensor_dict", {})
                                     .get("_dynamo_static_input_type") is not None)


def complex_region(graph: torch.fx.Graph, supported_target, excluded=frozenset()) -> set[torch.fx.Node]:
    """The nodes touching complex tensors that the importer carries as pairs: each converts (its
    complex arguments by this table), and every complex value among them is made and read among
    them only, so none comes from a user input or from torch, and none reaches torch or the
    graph's output (a partition returns real tensors). `excluded`: nodes refused already."""
    def converts_here(node):
        if node.op in ("placeholder", "get_attr"):
            return _weight(node)
        return has_complex_converter(node) if reads_complex(node) else supported_target(node)

    region = {n for n in graph.nodes if touches_complex(n) and n not in excluded and converts_here(n)}
    changed = True
    while changed:
        kept = {n for n in region
                if all(m in region for m in n.all_input_nodes if _is_complex(m))
                and (not _is_complex(n) or all(u in region for u in n.users))}
        changed, region = kept != region, kept
    return region
