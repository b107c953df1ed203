"""Scalar math for generated kernels, as @triton.jit functions.

Written with tl.exp / tl.exp2 / tl.erf / tl.sqrt only, so the same source runs on the GPU and in Triton's
interpreter (libdevice does not exist there). Inputs are fp32: kernels compute in fp32.

NaN in, NaN out, as torch and ONNX define max, min, clip, relu and their reductions: tl.maximum
and tl.minimum drop a NaN operand by default (maxnum on the GPU, np.fmax in the interpreter), and
tl.max / tl.min skip NaN (np.nanmax in the interpreter), so max-like math goes through the
functions below.
"""
import triton
import triton.language as tl


@triton.jit
def maximum(a, b):
    """max(a, b), NaN when either is NaN (torch.maximum; max.NaN on the GPU)."""
    return tl.maximum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def minimum(a, b):
    """min(a, b), NaN when either is NaN (torch.minimum)."""
    return tl.minimum(a, b, propagate_nan=tl.PropagateNan.ALL)


@triton.jit
def max_nan(x, axis: tl.constexpr):
    """tl.max over `axis`, NaN where the reduced values hold a NaN (torch.amax, ONNX ReduceMax).
    A NaN-propagating combine in tl.reduce would be one reduction on the GPU, but the interpreter
    runs custom combines element by element; a second (integer) reduction is cheap on both."""
    has_nan = tl.max((x != x).to(tl.int32), axis)
    return tl.where(has_nan > 0, float("nan"), tl.max(x, axis))


@triton.jit
def min_nan(x, axis: tl.constexpr):
    """tl.min over `axis`, NaN where the reduced values hold a NaN (torch.amin, ONNX ReduceMin)."""
    has_nan = tl.max((x != x).to(tl.int32), axis)
    return tl.where(has_nan > 0, float("nan"), tl.min(x, axis))


@triton.jit
def last_column(x):
    """Column BLOCK-1 of a [rows, BLOCK] tile, as [rows, 1] (a running product's whole product):
    a sum whose other lanes add -0.0, the addend that leaves every float as it is."""
    last = tl.arange(0, x.shape[1])[None, :] == x.shape[1] - 1
    if x.dtype.is_floating():
        return tl.sum(tl.where(last, x, -0.0), 1)[:, None]
    return tl.sum(tl.where(last, x, 0), 1)[:, None]


@triton.jit
def linear_recurrence(coef_left, h_left, coef_right, h_right):
    """tl.associative_scan's combine for h[t] = a[t] * h[t-1] + b[t]: a run of steps is the map
    h -> coef * h + h0 (coef the product of its a, h0 its h from h = 0 before it); the left run
    followed by the right one is that composition, which is associative."""
    return coef_left * coef_right, coef_right * h_left + h_right


@triton.jit
def relu(x):
    return maximum(x, 0.0)


@triton.jit
def neg(x):
    """-x as torch negates: Triton's unary minus compiles to 0 - x, which is +0.0 for x = +0.0
    where torch.neg gives -0.0 (the interpreter's numpy negation hides it). Multiplying by -1
    flips the sign of every float, zeros, infinities and NaNs included; integers wrap as in torch."""
    if x.dtype.is_floating():
        return x * -1.0
    return -x


@triton.jit
def to_bfloat16(x):
    """fp32 -> bf16 rounded to nearest even, the GPU's cvt.rn (Triton's interpreter truncates):
    add half an ulp of bf16 (less one when the kept bits are even), drop the low 16 bits. Carries
    round the largest finite values up to inf, as they should; NaN stays a (quiet) NaN."""
    bits = x.to(tl.uint32, bitcast=True)
    rounded = bits + 0x7FFF + ((bits >> 16) & 1)
    kept = tl.where(x != x, bits | 0x400000, rounded) >> 16
    return kept.to(tl.uint16).to(tl.bfloat16, bitcast=True)


@triton.jit
def tanh(x):
    # 1 - 2 / (exp(2x) + 1) saturates cleanly to +-1 for large |x| (no inf / inf).
    return 1.0 - 2.0 / (tl.exp(2.0 * x) + 1.0)


# erfc(z) = t * exp(-z^2 + P(t)), t = 1 / (1 + z / 2), z >= 0: the Chebyshev fit of Numerical
# Recipes' erfcc, fractional error under 1.2e-7 for every z. P's coefficients are scaled by log2(e)
# here, so the exponential is one exp2.
ERFC_C0 = tl.constexpr(-1.825748218405333)  # -1.26551223 * log2(e)
ERFC_C1 = tl.constexpr(1.4427292039075317)  # 1.00002368 * log2(e)
ERFC_C2 = tl.constexpr(0.5397006155284324)  # 0.37409196 * log2(e)
ERFC_C3 = tl.constexpr(0.1396300565225048)  # 0.09678418 * log2(e)
ERFC_C4 = tl.constexpr(-0.2687568603388257)  # -0.18628806 * log2(e)
ERFC_C5 = tl.constexpr(0.40232158165127635)  # 0.27886807 * log2(e)
ERFC_C6 = tl.constexpr(-1.637753152343414)  # -1.13520398 * log2(e)
ERFC_C7 = tl.constexpr(2.147474463933521)  # 1.48851587 * log2(e)
ERFC_C8 = tl.constexpr(-1.1861149450768025)  # -0.82215223 * log2(e)
ERFC_C9 = tl.constexpr(0.24651729790196045)  # 0.17087277 * log2(e)
LOG2E = tl.constexpr(1.4426950408889634)


# The same form with a degree-6 P, fitted here (Lawson's minimax iteration on t in [0, 1]) for
# results that are rounded to fp16 or bf16: fractional error under 2.1e-5 for every z, 12x under
# half an fp16 ulp (2.4e-4 at the least), three multiply-adds an element fewer.
ERFC16_C0 = tl.constexpr(-1.8257776161778025)  # -1.2655326070 * log2(e)
ERFC16_C1 = tl.constexpr(1.4452491043168136)  # 1.0017703419 * log2(e)
ERFC16_C2 = tl.constexpr(0.5056844038454041)  # 0.3505137188 * log2(e)
ERFC16_C3 = tl.constexpr(0.29069725489688086)  # 0.2014959826 * log2(e)
ERFC16_C4 = tl.constexpr(-0.4448807493320369)  # -0.3083678371 * log2(e)
ERFC16_C5 = tl.constexpr(-0.09241918242652584)  # -0.0640600957 * log2(e)
ERFC16_C6 = tl.constexpr(0.12147633248827892)  # 0.0842009774 * log2(e)


@triton.jit
def _reciprocal_of_at_least_one(d):
    """1 / d for d >= 1 (or inf), as rsqrt(d * d): a multiply and one MUFU.RSQ, where Triton's
    division (div.full.f32) wraps its reciprocal in range checks, seven instructions more, three of
    them on the critical path (sm_90). d * d >= 1 meets no denormal; past d = 1.8e19 it overflows to
    inf and the result is 0, as 1 / inf gives, where 1 / d would be under 5.4e-20."""
    return tl.math.rsqrt(d * d)


@triton.jit
def _erfc_of_magnitude(z, SHORT: tl.constexpr = False):
    """erfc(z) for z >= 0 (the fit above, or with SHORT the degree-6 one; inlined where it is
    called). t = 1 / (1 + z / 2) is 0 past z = 3.7e19, where erfc is 0 either way."""
    t = _reciprocal_of_at_least_one(1.0 + 0.5 * z)
    if SHORT:
        p = ERFC16_C6
        p = p * t + ERFC16_C5
        p = p * t + ERFC16_C4
        p = p * t + ERFC16_C3
        p = p * t + ERFC16_C2
        p = p * t + ERFC16_C1
        p = p * t + ERFC16_C0
    else:
        p = ERFC_C9
        p = p * t + ERFC_C8
        p = p * t + ERFC_C7
        p = p * t + ERFC_C6
        p = p * t + ERFC_C5
        p = p * t + ERFC_C4
        p = p * t + ERFC_C3
        p = p * t + ERFC_C2
        p = p * t + ERFC_C1
        p = p * t + ERFC_C0
    return t * tl.math.exp2(p - z * z * LOG2E)


@triton.jit
def gelu_erf(x, SHORT: tl.constexpr = False):
    """x * Phi(x), Phi(x) = erfc(-x / sqrt 2) / 2 (torch's GELU, approximate="none").

    Through erfc rather than erf: one branch-free fit, a reciprocal and an exp2, where libdevice's
    erff evaluates two polynomials and selects (ptxas, sm_90: 27 instructions an element against
    33, and 40 bytes of spills in a 128x256 GEMM tile's epilogue against 344). ViT-B/16's GEMM +
    GELU (6,304 x 768 -> 3072, fp16) took 74.8 us with it against 82.3, BERT-base's at sequence
    512 175.2 against 192.5 (H200). It is also the more accurate form: erfc keeps its relative
    precision where Phi is tiny, so the result is within 2e-5 of x * Phi(x) relative (4e-7
    absolute) down to fp32's smallest normal numbers, where 0.5 * x * (1 + erf(x / sqrt 2)), as
    torch computes it, cancels in 1 + erf: 4% off at x = -5, 0 from x = -6 on. Saturates to x and
    to -0 (z * z overflowing gives exp2(-inf) = 0); NaN and -inf give NaN, +inf gives +inf.
    SHORT: the degree-6 fit (gelu_erf_half)."""
    z = tl.abs(x) * 0.7071067811865476
    erfc = _erfc_of_magnitude(z, SHORT)
    return x * tl.where(x >= 0, 1.0 - 0.5 * erfc, 0.5 * erfc)


@triton.jit
def gelu_erf_half(x):
    """gelu_erf for a result rounded to fp16 or bf16, through the degree-6 fit: within 3.3e-5 of
    x * Phi(x) relative, so at most one ulp from the correctly rounded fp16 value (0.5% of a dense
    sweep of [-12, 12] land one ulp off, next to rounding midpoints; the full fit, 0.01%). It is
    the epilogue of fp16 GEMMs such as ViT's and BERT's MLP up-projections, where the GELU's
    instructions are what the tile spends beyond its product. The same saturation, NaN and
    infinities as gelu_erf."""
    return gelu_erf(x, True)


@triton.jit
def erfc(x):
    """1 - erf(x) from the fit above, which keeps its relative precision in the tail, where
    1 - erf(x) cancels to 0 (erfc(5) = 1.5e-12); 2 - erfc(-x) below 0. erfc(inf) = 0,
    erfc(-inf) = 2, NaN stays NaN."""
    z = tl.abs(x)
    upper = _erfc_of_magnitude(z)
    return tl.where(x >= 0, upper, 2.0 - upper)


# atan(z) on |z| <= tan(pi / 8) = 0.414: z + z^3 P(z^2), the minimax fit of Cephes' atanf
# (relative error near 1e-7); wider arguments are reduced onto it through atan(x) = pi/4 +
# atan((x - 1) / (x + 1)) and pi/2 + atan(-1 / x).
ATAN_C0 = tl.constexpr(-3.33329491539e-1)
ATAN_C1 = tl.constexpr(1.99777106478e-1)
ATAN_C2 = tl.constexpr(-1.38776856032e-1)
ATAN_C3 = tl.constexpr(8.05374449538e-2)


@triton.jit
def atan(x):
    """Odd; +-pi/2 at +-inf; NaN stays NaN and -0 stays -0."""
    t = tl.abs(x)
    big = t > 2.414213562373095   # tan(3 pi / 8)
    mid = t > 0.41421356237309503  # tan(pi / 8)
    z = tl.where(big, -1.0 / t, tl.where(mid, (t - 1.0) / (t + 1.0), t))
    base = tl.where(big, 1.5707963267948966, tl.where(mid, 0.7853981633974483, 0.0))
    zz = z * z
    p = ((ATAN_C3 * zz + ATAN_C2) * zz + ATAN_C1) * zz + ATAN_C0
    r = base + (p * zz * z + z)
    return tl.where(x < 0, -r, tl.where(x == 0, x, r))


@triton.jit
def asin(x):
    """atan(x / sqrt(1 - x^2)), the square root's argument as (1 - x)(1 + x), which keeps its
    digits near |x| = 1 (+-pi/2 there: x / 0 is +-inf); NaN past |x| > 1, as torch gives."""
    return atan(x / tl.sqrt((1.0 - x) * (1.0 + x)))


@triton.jit
def acos(x):
    """2 atan(sqrt((1 - x) / (1 + x))): its digits near x = 1, where pi/2 - asin(x) cancels;
    pi at x = -1 (atan(inf)); NaN past |x| > 1."""
    return 2.0 * atan(tl.sqrt((1.0 - x) / (1.0 + x)))


@triton.jit
def sign_bit(x):
    """x's sign bit, as torch.signbit: set for -0 and for a NaN that carries it (the fp32 bits as an
    int32 are negative exactly then)."""
    return x.to(tl.float32).to(tl.int32, bitcast=True) < 0


@triton.jit
def copysign(x, y):
    """|x| with y's sign bit (torch.copysign, C's), set in the bits: arithmetic cannot give a NaN a
    sign (x * -1 returns the NaN operand on the CPU and a canonical NaN on the GPU)."""
    magnitude = x.to(tl.float32).to(tl.int32, bitcast=True) & 0x7FFFFFFF
    sign = y.to(tl.float32).to(tl.int32, bitcast=True) & -2147483648
    return (magnitude | sign).to(tl.float32, bitcast=True)


@triton.jit
def atan2(y, x):
    """The angle of (x, y), as C's atan2: atan of the smaller magnitude over the larger (in
    [0, 1], so no quotient overflows), reflected into the quadrant; +-0 and +-pi from the zeros'
    signs, +-pi/4 and +-3pi/4 where both are infinite; NaN when either is."""
    ay = tl.abs(y)
    ax = tl.abs(x)
    steep = ay > ax
    small = tl.where(steep, ax, ay)
    large = tl.where(steep, ay, ax)
    # 0 / 0 and inf / inf: the angle of two equal magnitudes' ratio (0 and 1), not NaN
    ratio = tl.where(large == 0, 0.0, tl.where(small == float("inf"), 1.0, small / large))
    angle = atan(ratio)
    angle = tl.where(steep, 1.5707963267948966 - angle, angle)
    angle = tl.where(sign_bit(x), 3.141592653589793 - angle, angle)
    angle = tl.where(sign_bit(y), neg(angle), angle)  # (neg: -0 for y = -0, x > 0)
    return tl.where((x != x) | (y != y), x + y, angle)


@triton.jit
def trunc_div(a, b):
    """Integer a / b rounded toward zero, as torch and C divide integers. b = -1 negates: the most
    negative integer wraps to itself, as in torch, where the overflowing division has no defined
    result. b = 0 gives -1, the all-ones word CUDA's integer division leaves there (torch raises on
    the CPU). Signed operands only: uint8 divides in unsigned_div."""
    special = (b == 0) | (b == -1)
    quotient = a // tl.where(special, 1, b)
    return tl.where(b == -1, 0 - a, tl.where(b == 0, -1, quotient))


@triton.jit
def unsigned_div(a, b):
    """a / b of uint8 (the one unsigned type kernels take); b = 0 gives all ones, as trunc_div's -1
    does (written 255: an unsigned type takes no -1)."""
    quotient = a // tl.where(b == 0, 1, b)
    return tl.where(b == 0, 255, quotient)


@triton.jit
def hypot(x, y):
    """sqrt(x^2 + y^2) as the larger magnitude times sqrt(1 + r^2), r <= 1: no square overflows or
    underflows. inf when either is infinite, even beside a NaN (as C's hypot); else NaN if either is."""
    ax = tl.abs(x)
    ay = tl.abs(y)
    large = tl.maximum(ax, ay)
    small = tl.minimum(ax, ay)
    r = tl.where(large == 0, 0.0, small / large)
    out = large * tl.sqrt(1.0 + r * r)
    out = tl.where((x != x) | (y != y), x + y, out)
    return tl.where((ax == float("inf")) | (ay == float("inf")), float("inf"), out)


# -2 * sqrt(2 / pi) * log2(e): 2^(u * this) = exp(-2 * sqrt(2 / pi) * u)
GELU_TANH_EXP2 = tl.constexpr(-2.302208198144325)


@triton.jit
def gelu_tanh(x):
    """torch's tanh-form GELU, 0.5 x (1 + tanh(sqrt(2 / pi) u)) with u = x + 0.044715 x^3, as the
    equal x / (1 + exp(-2 sqrt(2 / pi) u)): one exp2 and one reciprocal, where the tanh form takes
    an exp, a division and 1 + tanh, which cancels for negative x (torch's fp32 GELU is 30% off at
    x = -5). A result under |x| * 5.4e-20 flushes to zero, as torch's does; -inf gives NaN, as
    torch's does."""
    u = x + 0.044715 * x * x * x
    return x * _reciprocal_of_at_least_one(1.0 + tl.exp2(u * GELU_TANH_EXP2))


@triton.jit
def silu(x):
    return x / (1.0 + tl.exp(-x))


@triton.jit
def hard_sigmoid(x, alpha, beta):
    return minimum(maximum(alpha * x + beta, 0.0), 1.0)


@triton.jit
def hard_swish(x):
    return x * minimum(maximum(x * (1.0 / 6.0) + 0.5, 0.0), 1.0)


@triton.jit
def leaky_relu(x, alpha):
    return tl.where(x >= 0.0, x, alpha * x)


# 1.5 * 2^23: adding it to |v| < 2^22 lands where fp32's spacing is exactly 1, so the FPU's own
# round-half-to-even rounds v to an integer, and the sum's low mantissa bits are that integer
# (two's complement, offset by ROUNDER_BITS, ROUNDER's bit pattern). Both directions of
# int <-> float conversion then cost one full-rate add each instead of an I2F / F2I, which run at a
# quarter of the FP32 rate and dominated the int8 epilogues (requantize, int8 residuals).
ROUNDER = tl.constexpr(12582912.0)
ROUNDER_BITS = tl.constexpr(0x4B400000)


@triton.jit
def small_int_to_float(i):
    """fp32 of integers with |i| < 2^22 (int8 / uint8 values), exactly, without an I2F."""
    return (i.to(tl.int32) + ROUNDER_BITS).to(tl.float32, bitcast=True) - ROUNDER


@triton.jit
def quantize(x, scale, inv_scale, zero_point, lo, hi):
    """QuantizeLinear on fp32 registers: clamp(round_half_even(x / scale) + zero_point, lo, hi),
    as an int32 (zero_point, lo, hi are integers; callers narrow it to int8 / uint8).

    x / scale exactly as IEEE division rounds it, but without a divide: q = x * (1 / scale) is
    within an ulp, and one Newton step with an exact fma residual makes it the correctly rounded
    quotient (Markstein), given inv_scale = fl(1 / scale). A plain `/` is the approximate
    div.full.f32 on NVIDIA, and div_rn made the H200's int8 ResNet-50 2.4x slower.
    Clamping before rounding gives the same result (lo - zero_point and hi - zero_point are
    integers) and keeps |v| small enough for the ROUNDER add, which rounds and converts at once
    (a floor-based round-half-even took ~40% of an int8 residual conv kernel: 484 -> 302 us)."""
    q = x * inv_scale
    refined = tl.fma(tl.fma(-q, scale, x), inv_scale, q)
    q = tl.where(refined == refined, refined, q)  # x = +-inf: the residual is NaN, q is right
    return _clamp_round(q, zero_point, lo, hi)


@triton.jit
def requantize(x, inv_scale, zero_point, lo, hi):
    """quantize() as x * (1 / scale): within an ulp of x / scale before rounding, so one step off
    only when x / scale lies within an ulp of a rounding tie. For values a kernel computed (GEMM
    and conv epilogues, reductions), whose low bits already differ from the reference's (fp32
    registers, FMA contraction, no fp16 rounding in between): there the exact division buys
    nothing, and its refinement and inf guard were a sixth of an int8 residual conv's instructions.
    NaN gives lo (as quantize), +-inf the clamp bounds."""
    return _clamp_round(x * inv_scale, zero_point, lo, hi)


@triton.jit
def _clamp_round(q, zero_point, lo, hi):
    """clamp(round_half_even(q) + zero_point, lo, hi) as an int32: clamping first keeps |q| small
    enough for the ROUNDER add, which rounds and converts at once."""
    v = tl.minimum(tl.maximum(q, lo - zero_point), hi - zero_point)
    return (v + ROUNDER).to(tl.int32, bitcast=True) - ROUNDER_BITS + zero_point


@triton.jit
def in_bounds(offs, extent, BLOCK: tl.constexpr):
    """offs < extent for the lanes of BLOCK-wide tiles. When extent is a nonzero multiple of BLOCK
    the tiles fit exactly: the mask is then constant true, and the compiler drops it (and the
    per-element predicate math of every masked load and store it guards). An extent of 0 is a
    multiple of every BLOCK, but there no lane is in bounds."""
    fits = (extent % BLOCK == 0) & (extent > 0)
    return tl.where(fits, True, offs < extent)  # (`|` gives int32 in the interpreter)
