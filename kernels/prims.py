"""Scalar math for generated kernels, as @triton.jit functions.

Written with tl.exp / tl.erf / tl.sqrt only, so the same source runs on the GPU and in Triton's
interpreter (libdevice does not exist there). Inputs are fp32: kernels compute in fp32.
"""
import triton
import triton.language as tl


@triton.jit
def tanh(x):
    # 1 - 2 / (exp(2x) + 1) saturates cleanly to +-1 for large |x| (no inf / inf).
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


@triton.jit
def gelu_erf(x):
    return 0.5 * x * (1.0 + tl.erf(x * 0.7071067811865476))


@triton.jit
def gelu_tanh(x):
    return 0.5 * x * (1.0 + tanh(0.7978845608028654 * (x + 0.044715 * x * x * x)))


@triton.jit
def silu(x):
    return x / (1.0 + tl.exp(-x))


@triton.jit
def hard_sigmoid(x, alpha, beta):
    return tl.minimum(tl.maximum(alpha * x + beta, 0.0), 1.0)


@triton.jit
def hard_swish(x):
    return x * tl.minimum(tl.maximum(x * (1.0 / 6.0) + 0.5, 0.0), 1.0)


@triton.jit
def leaky_relu(x, alpha):
    return tl.where(x >= 0.0, x, alpha * x)


@triton.jit
def round_half_even(x):
    """Round to the nearest integer, ties to even (torch.round, ONNX QuantizeLinear).

    Works on |x| so that |x| - floor(|x|) is exact (no floor(x + 0.5) double rounding)."""
    a = tl.abs(x)
    f = tl.floor(a)
    d = a - f
    odd = (f - 2.0 * tl.floor(f * 0.5)) == 1.0
    r = tl.where((d > 0.5) | ((d == 0.5) & odd), f + 1.0, f)
    return tl.where(x < 0.0, -r, r)


@triton.jit
def quantize(x, scale, zero_point, lo, hi):
    """QuantizeLinear on fp32 registers: clamp(round_half_even(x / scale) + zero_point, lo, hi)."""
    q = round_half_even(x / scale) + zero_point
    return tl.minimum(tl.maximum(q, lo), hi)
