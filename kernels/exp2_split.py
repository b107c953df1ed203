"""exp2 with a share of the exponentials computed on the FMA pipe (Gluon, sm_80+).

An SM's special-function unit (MUFU.EX2) takes 16 exponentials a clock; its FP32 pipes take 128
FMAs. In kernels/attention_hopper.py at head dim 64 the softmax's exponentials cost the SFU as
long as both matrix multiplies cost the tensor cores, and the two take turns (docs/attention.md).
FlashAttention-4 moves part of the exponentials to the FMA pipe as a polynomial; so does this:
of every 4 values a thread holds, `fma_share` take the polynomial and the rest MUFU.EX2.

The polynomial: x = n + f with n = round(x) (the 1.5 * 2^23 trick: adding it leaves n in the
low mantissa bits, no conversion instruction), 2^f by a degree-3 fit on [-1/2, 1/2], times 2^n
built in the exponent field. Relative error at most 7.5e-5 over [-125, 0] (fp16 keeps 4.9e-4):
tests/test_exp2_split.py checks it against the PTX's own arithmetic. Inputs below -125 give
2^-125 (fp16 and the running sums see 0); NaN stays NaN. The softmax only feeds it x <= 0.
"""
from __future__ import annotations

import struct

from trident.kernels.gluon_hopper import HAVE_GLUON

# 2^f ~ C0 + C1 f + C2 f^2 + C3 f^3 on [-1/2, 1/2] (relative-error minimax, float32)
POLY = (0.9999280571937561, 0.6932609677314758, 0.2426111251115799, 0.0551716648042202)
FLOOR = -125.0  # 2^round(x) stays a normal float32 (biased exponent >= 1) for 2^f >= 1/sqrt(2)
ROUNDER = 12582912.0  # 1.5 * 2^23
PACK = 4


def ptx_float(value: float) -> str:
    """A float32 literal as PTX writes it (0f + its 8 hex digits)."""
    return "0f" + struct.pack(">f", value).hex().upper()


def _polynomial(out: str, x: str) -> str:
    c0, c1, c2, c3 = (ptx_float(c) for c in POLY)
    return (f"max.NaN.f32 x, {x}, {ptx_float(FLOOR)}; "
            f"add.rn.f32 t, x, {ptx_float(ROUNDER)}; sub.rn.f32 r, t, {ptx_float(ROUNDER)}; sub.rn.f32 f, x, r; "
            f"fma.rn.f32 p, f, {c3}, {c2}; fma.rn.f32 p, p, f, {c1}; fma.rn.f32 p, p, f, {c0}; "
            f"mov.b32 b, t; shl.b32 b, b, 23; add.s32 b, b, 0x3F800000; mov.b32 s, b; mul.rn.f32 {out}, p, s; ")


def split_asm(fma_share: int) -> str:
    """PTX for PACK values ($PACK.. in, $0.. out): the last fma_share by the polynomial."""
    if not 0 < fma_share <= PACK:
        raise ValueError(f"fma_share={fma_share}: 1 to {PACK} of every {PACK}")
    lines = ["{ .reg .f32 x, t, r, f, p, s; .reg .b32 b; "]
    for i in range(PACK):
        out, x = f"${i}", f"${PACK + i}"
        lines.append(f"ex2.approx.ftz.f32 {out}, {x}; " if i < PACK - fma_share else _polynomial(out, x))
    return "".join(lines) + "}"


if HAVE_GLUON:
    from trident.kernels.gluon_hopper import gl, gluon

    ASM_1 = gl.constexpr(split_asm(1))
    ASM_2 = gl.constexpr(split_asm(2))
    CONSTRAINTS = gl.constexpr(",".join(["=f"] * PACK + ["f"] * PACK))

    @gluon.jit
    def exp2_split(x, FMA_SHARE: gl.constexpr):
        """2^x (float32) with FMA_SHARE of every 4 values a thread holds on the FMA pipe (0: all
        on MUFU.EX2, gl.exp2; at most 2). The thread's value count must be a multiple of 4 where FMA_SHARE > 0."""
        gl.static_assert(FMA_SHARE >= 0 and FMA_SHARE <= 2)
        if FMA_SHARE == 1:
            return gl.inline_asm_elementwise(ASM_1, CONSTRAINTS, [x], dtype=gl.float32, is_pure=True, pack=4)
        elif FMA_SHARE == 2:
            return gl.inline_asm_elementwise(ASM_2, CONSTRAINTS, [x], dtype=gl.float32, is_pure=True, pack=4)
        else:
            return gl.exp2(x)
