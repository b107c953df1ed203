"""Calibrators: from a tensor's statistics over the calibration set to its threshold T.

Symmetric linear quantization (TensorRT's definition): scale = T / 127, q = clamp(round(x / scale),
-127, 127). Each calibrator sees the same statistics of |x| and picks T:

  minmax      T = max |x| over the calibration set.
  entropy     TensorRT's KL-divergence calibrator (below), on statistics collected *after* fusion.
  entropy2    the same algorithm on statistics collected *before* fusion (TensorRT's default and
              recommended variant; trident's default).
  percentile  T = the p-th percentile of |x| (p = 99.99 unless given), read off the histogram.

What distinguishes entropy from entropy2 in trident is only where the statistics come from
(compiler/quantize/calibrate.py), as in TensorRT (IInt8EntropyCalibrator calibrates after layer
fusion, IInt8EntropyCalibrator2 before): entropy2 observes the fp32 graph as the float rewrites
left it, before lowering and fusion; entropy observes the graph the FP16 engine runs, i.e. after
lowering, with every tensor rounded to fp16 as the engine's kernels store it. The tensors that
feed int8 layers are stored by a kernel in both cases (a conv or GEMM always reads its input from
memory), so both find a threshold for every one of them; the KL algorithm is the same.

The entropy algorithm (Migacz, "8-bit Inference with TensorRT", GTC 2017): a histogram of |x| with
2048 bins over [0, max |x|]; for each candidate i = 128 .. 2048:
  P = the first i bins, with the count of every bin above folded into bin i - 1;
  Q = the first i bins (without the folded tail) merged into 128 levels of i // 128 bins each (the
      last level takes the remainder), each level's count spread evenly over the bins of that level
      that are non-zero in P; bins that are zero in P stay zero in Q;
  both are smoothed (a tiny epsilon moved onto their zero bins, as TensorRT and MXNet do) and
  normalized, and KL(P || Q) is computed.
The i with the smallest divergence wins, and T = (i + 0.5) * bin width.
One departure, from NVIDIA's pytorch-quantization: bin 0 (which holds the exact zeros, a spike
after every ReLU) is given bin 1's count first, since zeros quantize exactly at any threshold.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

BINS = 2048        # histogram resolution of |x|
LEVELS = 128       # positive int8 levels: 0 .. 127 (T maps to 127)
DEFAULT_PERCENTILE = 99.99
_EPS = 1e-4        # smoothing mass per zero bin (MXNet's _smooth_distribution)


@dataclass
class TensorStats:
    """What the calibration pass collected for one tensor: max |x| and a histogram of |x|."""
    absmax: float = 0.0
    hist: np.ndarray | None = None  # int64 [BINS] over [0, absmax]; None for minmax

    @property
    def bin_width(self) -> float:
        return self.absmax / BINS


@dataclass(frozen=True)
class Calibrator:
    name: str
    needs_histogram: bool
    after_fusion: bool = False   # statistics from the fp16, fused graph (entropy) or not
    percentile: float = DEFAULT_PERCENTILE

    def threshold(self, stats: TensorStats) -> float:
        if stats.absmax <= 0.0:
            return 0.0
        if self.name == "minmax":
            return float(stats.absmax)
        if self.name == "percentile":
            return percentile_threshold(stats.hist, stats.bin_width, self.percentile)
        return entropy_threshold(stats.hist, stats.bin_width)


CALIBRATOR_NAMES = ("minmax", "entropy", "entropy2", "percentile")


def get_calibrator(name: str, percentile: float = DEFAULT_PERCENTILE) -> Calibrator:
    from trident.compiler.errors import TridentError

    name = name.lower()
    if name not in CALIBRATOR_NAMES:
        raise TridentError(f"unknown calibrator {name!r}; choose one of {', '.join(CALIBRATOR_NAMES)}")
    if not 0.0 < percentile <= 100.0:
        raise TridentError(f"percentile must be in (0, 100], got {percentile}")
    return Calibrator(name, needs_histogram=name != "minmax", after_fusion=name == "entropy",
                      percentile=percentile)


def _smooth(p: np.ndarray) -> np.ndarray | None:
    """Move _EPS onto every zero bin, taken evenly from the non-zero ones; None if all zero."""
    zeros = p == 0
    n_zeros = int(zeros.sum())
    n_nonzeros = p.size - n_zeros
    if n_nonzeros == 0:
        return None
    return p + np.where(zeros, _EPS, -_EPS * n_zeros / n_nonzeros)


def _kl(p: np.ndarray, q: np.ndarray) -> float:
    p = p / p.sum()
    q = q / q.sum()
    mask = p > 0
    return float(np.sum(p[mask] * np.log(p[mask] / q[mask])))


def entropy_divergences(hist: np.ndarray, levels: int = LEVELS) -> np.ndarray:
    """KL(P || Q) for every candidate i = levels .. len(hist) (index i - levels); inf if undefined."""
    hist = np.asarray(hist, dtype=np.float64).copy()
    if len(hist) > 1:
        # Zeros quantize exactly, whatever T is; after a ReLU they are a spike in bin 0 that would
        # dominate every candidate where bin 0 shares a level (i >= 256) and push T down to
        # i < 256. NVIDIA's pytorch-quantization does the same: bin 0 counts as bin 1.
        hist[0] = hist[1]
    n = len(hist)
    tail = np.concatenate([np.cumsum(hist[::-1])[::-1], [0.0]])  # tail[i] = sum(hist[i:])
    csum = np.concatenate([[0.0], np.cumsum(hist)])             # csum[k] = sum(hist[:k])
    cnz = np.concatenate([[0], np.cumsum(hist != 0)])           # non-zero bins among hist[:k]
    out = np.full(n - levels + 1, np.inf)
    for i in range(levels, n + 1):
        p = hist[:i].copy()
        p[-1] += tail[i]
        nonzero = p != 0
        merged = i // levels
        starts = np.arange(levels) * merged
        ends = np.append(starts[1:], i)                            # the last level runs to i
        counts = csum[ends] - csum[starts]                         # Q's levels: hist, no fold
        norms = (cnz[ends] - cnz[starts]).astype(np.float64)       # non-zero bins of P per level
        norms[-1] += float(nonzero[-1]) - float(hist[i - 1] != 0)  # P's last bin holds the fold
        per_bin = np.divide(counts, norms, out=np.zeros(levels), where=norms != 0)
        q = np.repeat(per_bin, ends - starts)
        q[~nonzero] = 0.0
        ps, qs = _smooth(p), _smooth(q)
        if ps is None or qs is None or np.any(qs <= 0):
            continue
        out[i - levels] = _kl(ps, qs)
    return out


def entropy_threshold(hist: np.ndarray, bin_width: float, levels: int = LEVELS) -> float:
    """TensorRT's entropy threshold: (argmin_i KL(P_i || Q_i) + 0.5) * bin width."""
    divergence = entropy_divergences(hist, levels)
    if not np.isfinite(divergence).any():
        return float(len(hist) * bin_width)
    i = int(np.argmin(divergence)) + levels
    return float((i + 0.5) * bin_width)


def percentile_threshold(hist: np.ndarray, bin_width: float, percentile: float) -> float:
    """The p-th percentile of |x| from its histogram, interpolated linearly inside the bin where
    the cumulative count crosses p% (NVIDIA's pytorch-quantization and ONNX Runtime take that
    bin's lower edge; interpolating keeps the same bin and is within one bin width of both)."""
    hist = np.asarray(hist, dtype=np.float64)
    total = hist.sum()
    if total == 0:
        return 0.0
    target = total * percentile / 100.0
    cdf = np.cumsum(hist)
    k = int(np.searchsorted(cdf, target))
    k = min(k, len(hist) - 1)
    before = cdf[k - 1] if k > 0 else 0.0
    inside = (target - before) / hist[k] if hist[k] > 0 else 1.0
    return float((k + min(max(inside, 0.0), 1.0)) * bin_width)
