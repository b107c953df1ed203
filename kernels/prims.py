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


# 1.5 * 2^23: adding it to |v| < 2^22 lands where fp32's spacing is exactly 1, so the FPU's own
# round-half-to-even rounds v to an integer; subtracting it back is exact.
ROUNDER = tl.constexpr(12582912.0)


@triton.jit
def quantize(x, scale, inv_scale, zero_point, lo, hi):
    """QuantizeLinear on fp32 registers: clamp(round_half_even(x / scale) + zero_point, lo, hi).

    x / scale exactly as IEEE division rounds it, but without a divide: q = x * (1 / scale) is
    within an ulp, and one Newton step with an exact fma residual makes it the correctly rounded
    quotient (Markstein), given inv_scale = fl(1 / scale). A plain `/` is the approximate
    div.full.f32 on NVIDIA, and div_rn made the H200's int8 ResNet-50 2.4x slower.
    Clamping before rounding gives the same result (lo - zero_point and hi - zero_point are
    integers) and keeps |v| small enough for the ROUNDER add/subtract: two instructions, where a
    floor-based round-half-even took ~40% of an int8 residual conv kernel (484 -> 302 us)."""
    q = x * inv_scale
    refined = tl.fma(tl.fma(-q, scale, x), inv_scale, q)
    q = tl.where(refined == refined, refined, q)  # x = +-inf: the residual is NaN, q is right
    v = tl.minimum(tl.maximum(q, lo - zero_point), hi - zero_point)
    return (v + ROUNDER) - ROUNDER + zero_point
