"""kernels/exp2_split.py: the polynomial's accuracy (modelled here step by step in float32, as
the PTX computes it) and, on an sm_80+ GPU, the kernel itself against torch.exp2."""
import numpy as np
import pytest
import torch

from trident.kernels import exp2_split as split
from trident.kernels.common import is_interpreter

GPU = torch.cuda.is_available() and not is_interpreter() and split.HAVE_GLUON \
    and torch.cuda.get_device_capability()[0] >= 8


def polynomial_model(x: np.ndarray) -> np.ndarray:
    """The PTX's steps in float32: clamp, round by the 1.5 * 2^23 trick, 2^f, 2^n from bits."""
    f32 = np.float32
    x = np.maximum(x.astype(f32), f32(split.FLOOR))
    t = x + f32(split.ROUNDER)
    f = x - (t - f32(split.ROUNDER))
    c0, c1, c2, c3 = (f32(c) for c in split.POLY)
    p = (f * c3 + c2) * f
    p = (p + c1) * f + c0
    scale = ((t.view(np.int32) << 23) + np.int32(0x3F800000)).view(f32)
    return p * scale


def test_the_polynomial_is_within_its_stated_error_over_the_softmax_range():
    x = np.concatenate([np.linspace(-125, 0, 1_000_003), -np.random.default_rng(0).exponential(8, 100_000)])
    x = np.maximum(x, -125).astype(np.float32)
    rel = np.abs(polynomial_model(x).astype(np.float64) / np.exp2(x.astype(np.float64)) - 1)
    assert rel.max() <= 7.5e-5


def test_ptx_floats_and_the_split():
    assert split.ptx_float(1.0) == "0f3F800000" and split.ptx_float(-125.0) == "0fC2FA0000"
    asm = split.split_asm(1)
    assert asm.count("ex2.approx") == 3 and asm.count("mul.rn.f32 $3") == 1
    assert split.split_asm(2).count("ex2.approx") == 2
    for bad in (0, 5):
        with pytest.raises(ValueError, match="fma_share"):
            split.split_asm(bad)


def _run(x: torch.Tensor, share: int) -> torch.Tensor:
    from trident.kernels.gluon_hopper import gl, gluon

    @gluon.jit
    def kernel(x_ptr, y_ptr, n, SHARE: gl.constexpr, BLOCK: gl.constexpr):
        layout: gl.constexpr = gl.BlockedLayout([4], [32], [4], [0])
        offs = gl.program_id(0) * BLOCK + gl.arange(0, BLOCK, layout)
        x = gl.load(x_ptr + offs, mask=offs < n, other=0.0)
        gl.store(y_ptr + offs, split.exp2_split(x, SHARE), mask=offs < n)

    y = torch.full_like(x, -1.0)
    kernel[(-(-x.numel() // 512),)](x, y, x.numel(), share, 512, num_warps=4)
    return y


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs an sm_80+ GPU and Gluon")
@pytest.mark.parametrize("share", [0, 1, 2])
def test_gpu_matches_exp2(share):
    g = torch.Generator(device="cuda").manual_seed(share)
    x = torch.cat([torch.linspace(-125, 0, 100_003, device="cuda"),
                   -torch.rand(50_001, device="cuda", generator=g) * 40])
    y = _run(x, share)
    rel = (y.double() / torch.exp2(x.double()) - 1).abs().max().item()
    assert rel <= 8e-5, rel
    # each value fills one thread's 4 (a group with both MUFU and polynomial lanes)
    edge = torch.tensor([float("nan"), float("-inf"), -200.0, -125.5, -0.0, 0.0], device="cuda")
    out = _run(edge.repeat_interleave(4), share).view(-1, 4)
    assert out[0].isnan().all()
    assert ((out[1:4] >= 0) & (out[1:4] <= 2.0 ** -124)).all()  # underflow: 0, or 2^-125 by the polynomial
    assert ((out[4:] - 1).abs() <= 8e-5).all()


@pytest.mark.gpu
@pytest.mark.skipif(not GPU, reason="needs an sm_80+ GPU and Gluon")
@pytest.mark.parametrize("share", [1, 2])
def test_gpu_runs_the_polynomial_for_its_share(share):
    """At a point where the polynomial is off by ~7e-5 and MUFU.EX2 by < 1e-6, exactly `share`
    of every 4 outputs carry the polynomial's error."""
    x0 = np.linspace(-1, 0, 20001, dtype=np.float32)
    worst = float(x0[np.argmax(np.abs(polynomial_model(x0) / np.exp2(x0.astype(np.float64)) - 1))])
    y = _run(torch.full((4096,), worst, device="cuda"), share)
    off = ((y.double() / 2.0 ** worst - 1).abs() > 1e-5).view(-1, 4).sum(1)
    assert (off == share).all(), off.unique()
