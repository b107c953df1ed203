"""Converters of torch.fft's discrete Fourier transforms (fft, ifft, rfft, irfft, in 1, 2 and n
dims) as products with DFT matrices: FNet's token mixing (`fftn(x).real`), Autoformer's
autocorrelation (`irfft(rfft(q) * conj(rfft(k)))`).

trident has no complex dtype: a complex value is carried as its real and imaginary parts
(frontend/fx/complex.py). Along one dim of n points the transform is the product with
exp(-+2 pi i j k / n) = C -+ i S (C and S the cosine and sine matrices, computed in float64 and
cast once): (re + i im)(C - i S) = (re C + im S) + i (im C - re S) forward, with the signs of S
turned for the inverse; two or four matrix products with constants, in the GEMM kernels (FNet's
TPU path does the same). A real signal has im = 0. `n` / `s` cut a signal (a slice) or pad it with
zeros (rows of the matrices dropped); rfft keeps the first n // 2 + 1 columns; irfft weighs the
bins of a one-sided spectrum by 1, 2, ..., 2, 1 (its Hermitian half) and keeps the real result.
Norms scale the matrices: "backward" 1/n on the inverse, "ortho" 1/sqrt(n), "forward" 1/n forward.

What stays in torch: dims longer than MAX_POINTS (an n x n matrix each); hfft and ihfft.
"""
from __future__ import annotations

import operator

import torch

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.complex import Complex, on_pairs, pairs
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.registry import FUNCTIONS, converts
from trident.compiler.ops.spectral import MAX_POINTS, dft_block

_NORMS = ("backward", "ortho", "forward")


def _both_tables(*targets):
    """A transform takes real signals (the converter table) and complex ones (the pairs')."""
    def register(fn):
        return on_pairs(*targets)(converts(*targets)(fn))
    return register


def _along(cx: Ctx, x, matrix: torch.Tensor, axis: int):
    """x times `matrix` (input index -> output index) along `axis`: a right product along the last
    axis, a left one with its transpose along the one before it, else through transposes."""
    rank = cx.rank(x)
    if axis == rank - 1:
        return cx.emit("matmul", [x, matrix])
    if axis == rank - 2:
        return cx.emit("matmul", [matrix.t().contiguous(), x])
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved = cx.emit("matmul", [cx.emit("transpose", [x], perm=perm), matrix])
    return cx.emit("transpose", [moved], perm=[perm.index(d) for d in range(rank)])


def _scale(n: int, norm, inverse: bool) -> float:
    if norm is None:
        norm = "backward"
    if norm not in _NORMS:
        raise UnsupportedError(f'norm={norm!r} (torch.fft takes {", ".join(_NORMS)})')
    power = {"backward": 1.0 if inverse else 0.0, "ortho": 0.5, "forward": 0.0 if inverse else 1.0}[norm]
    return n ** -power


def _fit(cx: Ctx, x, axis: int, n: int):
    """The signal cut to n points along axis, and how many points it has (fewer than n: the
    rest are zeros, left out of the product)."""
    length = cx.shape(x)[axis]
    if length <= n:
        return x, length
    return FUNCTIONS[operator.getitem](cx, x, (*[slice(None)] * axis, slice(0, n))), n


def _complex_along(cx: Ctx, z: Complex, axis: int, n: int, norm, inverse: bool, bins: int | None = None) -> Complex:
    """The n-point transform of z along axis (its first `bins` outputs: rfft)."""
    if not 0 < n <= MAX_POINTS:
        raise UnsupportedError(f'fx node "{cx.node_name}": a {n}-point transform (trident takes 1 to '
                               f"{MAX_POINTS} points, as matrix products)")
    dtype = cx.dtype(z.re)
    re, rows = _fit(cx, z.re, axis, n)
    im = None if z.im is None else _fit(cx, z.im, axis, n)[0]
    cos, sin = dft_block(rows, bins or n, n, _scale(n, norm, inverse), dtype)
    if inverse:
        sin = -sin
    re_cos, re_sin = _along(cx, re, cos, axis), _along(cx, re, sin, axis)
    if im is None:
        return Complex(re_cos, cx.emit("neg", [re_sin]))
    im_cos, im_sin = _along(cx, im, cos, axis), _along(cx, im, sin, axis)
    return Complex(cx.emit("add", [re_cos, im_sin]), cx.emit("sub", [im_cos, re_sin]))


def _real_from_half(cx: Ctx, z: Complex, axis: int, n: int, norm):
    """irfft along axis: the n real points whose one-sided spectrum z is (its first n // 2 + 1
    bins, each but the first and, n even, the last standing for itself and its conjugate)."""
    if not 0 < n <= MAX_POINTS:
        raise UnsupportedError(f'fx node "{cx.node_name}": a {n}-point transform (trident takes 1 to '
                               f"{MAX_POINTS} points, as matrix products)")
    re, rows = _fit(cx, z.re, axis, n // 2 + 1)
    weights = torch.full((rows,), 2.0)
    weights[0] = 1.0
    if n % 2 == 0 and rows > n // 2:
        weights[n // 2] = 1.0
    cos, sin = dft_block(rows, n, n, _scale(n, norm, True), cx.dtype(re), weights)
    out = _along(cx, re, cos, axis)
    if z.im is None:
        return out
    im = _fit(cx, z.im, axis, n // 2 + 1)[0]
    return cx.emit("sub", [out, _along(cx, im, sin, axis)])


def _signal(cx: Ctx, x) -> Complex:
    z = pairs(cx, x)
    if z is not None:
        return z
    if not cx.dtype(x).is_floating_point:
        x = cx.cast(x, torch.float32)  # (torch.fft promotes integers so)
    return Complex(x, None)


def _dims(cx: Ctx, x, s, dim) -> tuple[list[int], list[int | None]]:
    """The transformed axes (dim None: all, or the last len(s)) and their sizes (None: the
    signal's own)."""
    z = pairs(cx, x)
    rank = cx.rank(x if z is None else z.re)  # (no cast emitted here: _signal makes it)
    sizes = None if s is None else ([s] if isinstance(s, int) else list(s))
    if dim is None:
        dims = list(range(rank)) if sizes is None else list(range(rank - len(sizes), rank))
    else:
        dims = [dim] if isinstance(dim, int) else list(dim)
    sizes = sizes or [None] * len(dims)
    if len(sizes) != len(dims) or not dims:
        raise UnsupportedError(f'fx node "{cx.node_name}": a Fourier transform with s={s!r} over dims {dim!r}')
    return [_axis(d, rank) for d in dims], [None if v == -1 else v for v in sizes]


def _full(cx: Ctx, x, s, dim, norm, inverse: bool):
    z = _signal(cx, x)
    dims, sizes = _dims(cx, x, s, dim)
    for axis, n in zip(dims, sizes):
        z = _complex_along(cx, z, axis, n or cx.shape(z.re)[axis], norm, inverse)
    return z


def _onesided(cx: Ctx, x, s, dim, norm):
    if pairs(cx, x) is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": rfft of a complex tensor (torch takes real ones)')
    z = _signal(cx, x)
    dims, sizes = _dims(cx, x, s, dim)
    last, n = dims[-1], sizes[-1] or cx.shape(x)[dims[-1]]
    z = _complex_along(cx, z, last, n, norm, False, bins=n // 2 + 1)
    for axis, size in zip(dims[:-1], sizes[:-1]):
        z = _complex_along(cx, z, axis, size or cx.shape(z.re)[axis], norm, False)
    return z


def _from_half(cx: Ctx, x, s, dim, norm):
    z = _signal(cx, x)
    dims, sizes = _dims(cx, x, s, dim)
    for axis, size in zip(dims[:-1], sizes[:-1]):
        z = _complex_along(cx, z, axis, size or cx.shape(z.re)[axis], norm, True)
    last = dims[-1]
    n = sizes[-1] or 2 * (cx.shape(z.re)[last] - 1)
    return _real_from_half(cx, z, last, n, norm)


def _form(transform, default_dim):
    """A converter of one form of a transform: (input, n, dim, norm) in 1-D, (input, s, dim, norm)
    in 2 and n dims."""
    def convert(cx: Ctx, input, s=None, dim=default_dim, norm=None, n=None):
        return transform(cx, input, s if n is None else n, dim, norm)
    return convert


_FORMS = ((-1, (torch.fft.fft, torch.fft.ifft, torch.fft.rfft, torch.fft.irfft)),
          ((-2, -1), (torch.fft.fft2, torch.fft.ifft2, torch.fft.rfft2, torch.fft.irfft2)),
          (None, (torch.fft.fftn, torch.fft.ifftn, torch.fft.rfftn, torch.fft.irfftn)))
_TRANSFORMS = (lambda cx, x, s, dim, norm: _full(cx, x, s, dim, norm, False),
               lambda cx, x, s, dim, norm: _full(cx, x, s, dim, norm, True),
               _onesided, _from_half)
for _default_dim, _targets in _FORMS:
    for _target, _transform in zip(_targets, _TRANSFORMS):
        _both_tables(_target)(_form(_transform, _default_dim))
