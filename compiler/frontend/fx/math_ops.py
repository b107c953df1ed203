"""torch's activations and math functions that the IR spells with other ops or attributes.

The ELU family, softplus, mish, softsign and the shrinks map onto the IR's ONNX-style activation
ops (one node each, which the pointwise code generator computes in registers); torch's extra
arguments (softplus's beta and threshold, elu's scale) become a multiply or a selection around
them. log1p and expm1 keep their accuracy near 0, where log(1 + x) and exp(x) - 1 lose every
digit. Variance and standard deviation are a mean, a centred square and a sum, divided by
N - correction.

As in decompose.py, only the converter context's `emit` / `shape` / `dtype` / `rank` / `cast`
are used, so this module imports nothing of the frontend but axes.py.
"""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx import axes as fx_axes
from trident.compiler.frontend.fx.helpers import _scalar


def _float_input(cx, x, what: str):
    if not cx.dtype(x).is_floating_point:
        raise UnsupportedError(f'fx node "{cx.node_name}": {what} of {cx.dtype(x)}')
    return x


# ------------------------------------------------------------------------ ELU family ----
def elu(cx, x, alpha=1.0, inplace: bool = False):
    return cx.emit("elu", [_float_input(cx, x, "elu")], alpha=float(alpha))


def aten_elu(cx, x, alpha=1.0, scale=1.0, input_scale=1.0):
    """scale * elu(x, alpha): what F.elu and F.selu become in core ATen."""
    if float(input_scale) != 1.0:
        raise UnsupportedError(f'fx node "{cx.node_name}": elu with input_scale {input_scale}')
    y = elu(cx, x, alpha)
    return y if float(scale) == 1.0 else cx.emit("mul", [y, _scalar(cx, float(scale), x)])


def selu(cx, x, inplace: bool = False):
    return cx.emit("selu", [_float_input(cx, x, "selu")])


def celu(cx, x, alpha=1.0, inplace: bool = False):
    return cx.emit("celu", [_float_input(cx, x, "celu")], alpha=float(alpha))


# ------------------------------------------------------------------- softplus family ----
def softplus(cx, x, beta=1.0, threshold=20.0):
    """log(1 + exp(beta * x)) / beta, and x itself where beta * x > threshold (torch's
    switch to the linear part: there the two differ by less than exp(-threshold))."""
    x = _float_input(cx, x, "softplus")
    beta, threshold = float(beta), float(threshold)
    scaled = x if beta == 1.0 else cx.emit("mul", [x, _scalar(cx, beta, x)])
    smooth = cx.emit("softplus", [scaled])
    if beta != 1.0:
        smooth = cx.emit("div", [smooth, _scalar(cx, beta, x)])
    linear = cx.emit("greater", [scaled, _scalar(cx, threshold, x)])
    return cx.emit("where", [linear, x, smooth])


def log_sigmoid(cx, x):
    """log(sigmoid(x)) = -softplus(-x), exact where sigmoid underflows."""
    x = _float_input(cx, x, "logsigmoid")
    return cx.emit("neg", [cx.emit("softplus", [cx.emit("neg", [x])])])


def mish(cx, x, inplace: bool = False):
    return cx.emit("mish", [_float_input(cx, x, "mish")])


def softsign(cx, x):
    return cx.emit("softsign", [_float_input(cx, x, "softsign")])


def hardshrink(cx, x, lambd=0.5):
    x = _float_input(cx, x, "hardshrink")
    return _nan_kept(cx, x, cx.emit("shrink", [x], lambd=float(lambd), bias=0.0))


def softshrink(cx, x, lambd=0.5):
    x, lambd = _float_input(cx, x, "softshrink"), float(lambd)
    return _nan_kept(cx, x, cx.emit("shrink", [x], lambd=lambd, bias=lambd))


def _nan_kept(cx, x, y):
    """y, but NaN where x is NaN: ONNX's Shrink gives 0 there, torch's shrinks NaN."""
    return cx.emit("where", [cx.emit("is_nan", [x]), x, y])


def glu(cx, x, dim=-1):
    """a * sigmoid(b), a and b the two halves of x along dim (conformers' convolution module)."""
    axis = fx_axes.axis(dim, cx.rank(x))
    size = cx.shape(x)[axis]
    if size % 2:
        raise ShapeError(f'fx node "{cx.node_name}": glu halves dim {axis} of {list(cx.shape(x))}, '
                         f"an odd size")
    a, b = cx.emit_multi("split", [x], axis=axis, sizes=[size // 2, size // 2])
    return cx.emit("mul", [a, cx.emit("sigmoid", [b])])


# ------------------------------------------------------------------ log1p and expm1 ----
def log1p(cx, x):
    """log(1 + x) to full precision: u = 1 + x rounds, and log(u) * x / (u - 1) corrects for
    the rounding (Goldberg); x itself where u rounds to 1, u where it is infinite."""
    x = _float_input(cx, x, "log1p")
    u = cx.emit("add", [x, _scalar(cx, 1.0, x)])
    corrected = cx.emit("div", [cx.emit("mul", [cx.emit("log", [u]), x]),
                                cx.emit("sub", [u, _scalar(cx, 1.0, x)])])
    tiny = cx.emit("equal", [u, _scalar(cx, 1.0, x)])
    huge = cx.emit("equal", [u, _scalar(cx, math.inf, x)])
    return cx.emit("where", [tiny, x, cx.emit("where", [huge, u, corrected])])


def expm1(cx, x):
    """exp(x) - 1 to full precision: u = exp(x) rounds, and (u - 1) * x / log(u) corrects
    (Kahan); x itself where u rounds to 1, u - 1 where log(u) is infinite or x is large."""
    x = _float_input(cx, x, "expm1")
    u = cx.emit("exp", [x])
    less = cx.emit("sub", [u, _scalar(cx, 1.0, x)])
    corrected = cx.emit("div", [cx.emit("mul", [less, x]), cx.emit("log", [u])])
    tiny = cx.emit("equal", [u, _scalar(cx, 1.0, x)])
    # where exp(x) is infinite or 0, u - 1 is already exact (inf, -1)
    edge = cx.emit("logical_or", [cx.emit("equal", [u, _scalar(cx, math.inf, x)]),
                                  cx.emit("equal", [u, _scalar(cx, 0.0, x)])])
    return cx.emit("where", [tiny, x, cx.emit("where", [edge, less, corrected])])


# --------------------------------------------------------- logarithms, sign bits ----
LOG10_2 = math.log10(2.0)


def log10(cx, x):
    """log2(x) * log10(2): one IR log2 (tl.log2) and a multiply."""
    x = _float_input(cx, x, "log10")
    return cx.emit("mul", [cx.emit("log2", [x]), _scalar(cx, LOG10_2, x)])


def signbit(cx, x):
    """The sign bit: the IR's sign_bit on floats (-0 and negative NaNs included), x < 0 on integers."""
    if cx.dtype(x).is_floating_point:
        return cx.emit("sign_bit", [x])
    if cx.dtype(x) == torch.bool:
        return cx.emit("logical_and", [x, torch.tensor(False)])
    return cx.emit("less", [x, _scalar(cx, 0, x)])


# ------------------------------------------------------------------ isclose, cosine ----
def isclose(cx, a, b, rtol=1e-05, atol=1e-08, equal_nan=False):
    """torch.isclose on floats: a == b (equal infinities), or a finite |a - b| within
    atol + |rtol * b|; two NaNs where equal_nan."""
    for v in (a, b):
        _float_input(cx, v, "isclose")
    close = cx.emit("equal", [a, b])
    if equal_nan:
        both = cx.emit("logical_and", [cx.emit("is_nan", [a]), cx.emit("is_nan", [b])])
        close = cx.emit("logical_or", [close, both])
    if float(rtol) == 0.0 and float(atol) == 0.0:
        return close
    error = cx.emit("abs", [cx.emit("sub", [a, b])])
    allowed = cx.emit("add", [cx.emit("abs", [cx.emit("mul", [b, _scalar(cx, float(rtol), b)])]),
                              _scalar(cx, float(atol), b)])
    # a NaN or infinite error is never within the tolerance (inf <= inf would be)
    finite = cx.emit("not", [cx.emit("logical_or", [
        cx.emit("is_nan", [error]), cx.emit("is_inf", [error])])])
    within = cx.emit("logical_and", [finite, cx.emit("less_equal", [error, allowed])])
    return cx.emit("logical_or", [close, within])


def cosine_similarity(cx, x1, x2, dim=1, eps=1e-8):
    """torch's: each operand divided by its 2-norm along dim (at least eps) first, which keeps the
    result in [-1, 1], then the sum of their product."""
    for v in (x1, x2):
        _float_input(cx, v, "cosine_similarity")
    rank = max(cx.rank(x1), cx.rank(x2))
    axis = fx_axes.axis(dim, rank)
    owns = [axis - rank + cx.rank(v) for v in (x1, x2)]  # dim's axis in each operand
    if min(owns) < 0 or cx.shape(x1)[owns[0]] != cx.shape(x2)[owns[1]]:
        raise UnsupportedError(f'fx node "{cx.node_name}": cosine_similarity of an operand broadcast '
                               f"along dim {dim}")
    units = []
    for v, own in zip((x1, x2), owns):
        norm = cx.emit("sqrt", [cx.emit("reduce_sum", [cx.emit("mul", [v, v])], axes=[own], keepdims=True)])
        norm = cx.emit("maximum", [norm, _scalar(cx, float(eps), v)])
        units.append(cx.emit("div", [v, norm]))
    return cx.emit("reduce_sum", [cx.emit("mul", units)], axes=[axis], keepdims=False)


# ----------------------------------------------------------- variance, std deviation ----
def variance(cx, x, dim=None, unbiased=None, keepdim=False, *, correction=None, sqrt=False):
    """Σ (x - mean)² / (N - correction) over dim (every dim when None); correction 1 unless
    given (or unbiased=False: 0). torch's old positional form var(x, unbiased) is accepted."""
    if isinstance(dim, bool):  # var(x, False): the old (input, unbiased) signature
        dim, unbiased = None, dim
    x = _float_input(cx, x, "var")
    if correction is None:
        correction = 1 if unbiased is None or unbiased else 0
    axes = fx_axes.axes(cx, x, dim)
    count = math.prod(cx.shape(x)[a] for a in axes)
    mean = cx.emit("reduce_mean", [x], axes=axes, keepdims=True)
    centred = cx.emit("sub", [x, mean])
    squares = cx.emit("mul", [centred, centred])
    if float(correction).is_integer():
        # a mean over N - correction, whose length a shape-generic kernel takes as a size
        extra = {"correction": int(correction)} if correction else {}
        var = cx.emit("reduce_mean", [squares], axes=axes, keepdims=bool(keepdim), **extra)
    else:
        total = cx.emit("reduce_sum", [squares], axes=axes, keepdims=bool(keepdim))
        # a fractional correction: a float divisor of each size. N <= correction: torch divides
        # by max(0, N - correction), giving inf or nan
        divisor = max(count - float(correction), 0.0)
        var = cx.emit("div", [total, _scalar(cx, divisor, x)])
    return cx.emit("sqrt", [var]) if sqrt else var


def std(cx, x, dim=None, unbiased=None, keepdim=False, *, correction=None):
    return variance(cx, x, dim, unbiased, keepdim, correction=correction, sqrt=True)


__all__ = ["aten_elu", "celu", "cosine_similarity", "elu", "expm1", "glu", "hardshrink", "isclose", "log10",
           "log1p", "log_sigmoid", "mish", "selu", "signbit", "softplus", "softshrink", "softsign", "std",
           "variance"]
