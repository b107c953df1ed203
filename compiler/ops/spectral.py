"""Discrete Fourier transforms (ONNX DFT and STFT) through torch.fft. ONNX stores complex values
as a trailing dim of 2 (real, imaginary); a trailing dim of 1 is a real signal."""
from __future__ import annotations

import math

import torch

from trident.compiler.ops.registry import Kind, op


# The longest axis whose DFT the compiler writes as matrix products (frontend/fx/spectral.py,
# passes/dft.py): its two n x n matrices take 32 MB at fp32.
MAX_POINTS = 2048


def dft_matrices(n: int, scale: float, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """(C, S) of the n-point DFT, F[j, k] = exp(-2 pi i j k / n) = C - i S, times `scale`: symmetric
    n x n matrices computed in float64 (the angle from jk mod n, exact), cast once to `dtype`."""
    return dft_block(n, n, n, scale, dtype)


def dft_block(rows: int, cols: int, n: int, scale: float, dtype: torch.dtype,
              row_weights: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The first `rows` x `cols` of the n-point (C, S), each row j times row_weights[j]: a signal
    shorter than n (zero padded), a one-sided spectrum, the inverse of one."""
    j, k = torch.arange(rows, dtype=torch.float64), torch.arange(cols, dtype=torch.float64)
    angle = 2 * math.pi * torch.remainder(torch.outer(j, k), n) / n
    weights = scale if row_weights is None else scale * row_weights.to(torch.float64)[:, None]
    return (torch.cos(angle) * weights).to(dtype), (torch.sin(angle) * weights).to(dtype)


def _as_complex(x):
    """The signal in float64 / complex128: the transforms run in double precision (as ONNX's
    reference), then round once to the input's type."""
    if x.shape[-1] == 1:
        return x[..., 0].to(torch.float64)
    return torch.view_as_complex(x.to(torch.float64).contiguous())


def _as_pairs(z, dtype):
    # (torch's inverse of a real signal is a conjugate view, which view_as_real refuses)
    return torch.view_as_real(z.resolve_conj()).to(dtype)


@op("dft", Kind.OPAQUE)
def dft(x, *, axis: int, length: int | None = None, inverse: bool = False, onesided: bool = False):
    """The DFT of length `length` (zero-padded or cut) along `axis` of the signal (axis counts the
    dims before the trailing real / complex one); onesided keeps the first length // 2 + 1 bins."""
    signal = _as_complex(x)
    if inverse and onesided:  # the first n // 2 + 1 bins of a real signal's spectrum: real out
        return torch.fft.irfft(signal, n=length, dim=axis).unsqueeze(-1).to(x.dtype)
    if inverse:
        z = torch.fft.ifft(signal, n=length, dim=axis)
    elif onesided and not signal.is_complex():
        z = torch.fft.rfft(signal, n=length, dim=axis)
    else:
        z = torch.fft.fft(signal, n=length, dim=axis)
        if onesided:
            z = z.narrow(axis, 0, z.shape[axis] // 2 + 1)
    return _as_pairs(z, x.dtype)


@op("stft", Kind.OPAQUE)
def stft(x, window=None, *, frame_step: int, frame_length: int, onesided: bool = True):
    """Frames of frame_length samples every frame_step, times the window, then a DFT each:
    [batch, frames, bins, 2]."""
    signal = _as_complex(x)  # [batch, length]
    frames = signal.unfold(1, frame_length, frame_step)  # [batch, frames, frame_length]
    if window is not None:
        frames = frames * window.to(frames.real.dtype if frames.is_complex() else frames.dtype)
    if onesided and not frames.is_complex():
        return _as_pairs(torch.fft.rfft(frames, dim=-1), x.dtype)
    return _as_pairs(torch.fft.fft(frames, dim=-1), x.dtype)
