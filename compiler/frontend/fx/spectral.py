"""Converters of discrete Fourier transforms of real tensors whose result is read through `.real`
or `.imag` only (FNet's token mixing: `torch.fft.fftn(x, dim=(1, 2)).real`).

trident has no complex dtype, so a transform is carried as the pair of real tensors (re, im) of
its value (`Spectrum`), and only its parts leave it. Along one dim of n points the transform is
the product with the DFT matrix F[j, k] = exp(-2 pi i j k / n) = C - i S (C and S the cosine and
sine matrices, symmetric): (re + i im)(C - i S) = (re C + im S) + i (im C - re S), two or four
matrix products with constants, which run in the GEMM kernels (FNet's TPU path does the same).
A real input starts with im = 0. The matrices are computed in float64 and cast once, to the
input's dtype; norm "ortho" and "forward" scale them by 1/sqrt(n) and 1/n.

What stays in torch: complex inputs, a transform whose value is read other than through its
parts (compiler/dynamo.py keeps such a node, and its readers, in torch), output sizes other than
the input's (`s`), and dims longer than MAX_POINTS (an n x n matrix each).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx.axes import axis as _axis
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.registry import converts
from trident.compiler.ops.spectral import MAX_POINTS, dft_matrices

TRANSFORMS = (torch.fft.fftn, torch.fft.fft2, torch.fft.fft)
_NORMS = {None: 0.0, "backward": 0.0, "ortho": 0.5, "forward": 1.0}  # the power of 1/n


@dataclass
class Spectrum:
    """A complex value as its real and imaginary parts."""
    re: Any
    im: Any

    def part(self, cx: Ctx, name: str):
        if name in ("real", "imag"):
            return self.re if name == "real" else self.im
        raise UnsupportedError(f'fx node "{cx.node_name}": attribute "{name}" of a Fourier transform '
                               "(trident reads its .real and .imag only)")


def _along(cx: Ctx, x, matrix: torch.Tensor, axis: int):
    """x multiplied by a symmetric matrix along `axis`: a right product along the last axis, a
    left one (broadcast over the dims before) along the one before it, else through transposes."""
    rank = cx.rank(x)
    if axis == rank - 1:
        return cx.emit("matmul", [x, matrix])
    if axis == rank - 2:
        return cx.emit("matmul", [matrix, x])
    perm = [d for d in range(rank) if d != axis] + [axis]
    moved = cx.emit("matmul", [cx.emit("transpose", [x], perm=perm), matrix])
    return cx.emit("transpose", [moved], perm=[perm.index(d) for d in range(rank)])


def _transform(cx: Ctx, x, dims: list[int], norm) -> Spectrum:
    if isinstance(x, Spectrum) or not cx.dtype(x).is_floating_point:
        raise UnsupportedError(f'fx node "{cx.node_name}": a Fourier transform of {cx.dtype(x)} '
                               "(trident transforms real floats)")
    if norm not in _NORMS or not dims:
        raise UnsupportedError(f'fx node "{cx.node_name}": a Fourier transform over dims {dims} with norm={norm!r}')
    re, im = x, None
    for axis in dims:
        n = cx.shape(x)[axis]
        if n > MAX_POINTS:
            raise UnsupportedError(f'fx node "{cx.node_name}": a {n}-point transform (trident takes up '
                                   f"to {MAX_POINTS} as matrix products)")
        cos, sin = dft_matrices(n, n ** -_NORMS[norm], cx.dtype(x))
        re_cos, re_sin = _along(cx, re, cos, axis), _along(cx, re, sin, axis)
        if im is None:
            re, im = re_cos, cx.emit("neg", [re_sin])
        else:
            im_cos, im_sin = _along(cx, im, cos, axis), _along(cx, im, sin, axis)
            re, im = cx.emit("add", [re_cos, im_sin]), cx.emit("sub", [im_cos, re_sin])
    return Spectrum(re, im)


def _dims(cx: Ctx, x, s, dim, default: list[int]) -> list[int]:
    if s is not None:
        raise UnsupportedError(f'fx node "{cx.node_name}": a Fourier transform with s={s!r} '
                               "(trident transforms at the input's sizes)")
    if dim is None:
        return default
    dims = [dim] if isinstance(dim, int) else list(dim)
    return [_axis(d, cx.rank(x)) for d in dims]


@converts(torch.fft.fftn)
def _fftn(cx: Ctx, input, s=None, dim=None, norm=None):
    return _transform(cx, input, _dims(cx, input, s, dim, list(range(cx.rank(input)))), norm)


@converts(torch.fft.fft2)
def _fft2(cx: Ctx, input, s=None, dim=(-2, -1), norm=None):
    return _transform(cx, input, _dims(cx, input, s, dim, []), norm)


@converts(torch.fft.fft)
def _fft(cx: Ctx, input, n=None, dim=-1, norm=None):
    return _transform(cx, input, _dims(cx, input, n, dim, []), norm)
