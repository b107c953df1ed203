"""torch.fft's transforms (compiler/frontend/fx/spectral.py: DFT matrix products in the GEMM
kernels) against torch.fft: fft, ifft, rfft and irfft in 1, 2 and n dims along any dims, every
norm, odd, even and size-1 lengths, signals cut and padded (n, s), real and complex signals, a NaN;
a spectrum returned as a complex tensor stays in torch; transformers' FNet and an Autoformer-style
autocorrelation through torch.compile, every op in a kernel."""
from __future__ import annotations

import pytest
import torch

from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)


def check(fn, x, in_torch=0):
    got, reports = compile_with_reports(fn, x)
    want = fn(x)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4 * max(1.0, want.abs().max().item()))
    assert len(ops_in_torch(reports)) == in_torch, ops_in_torch(reports)


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("shape, dims", [((2, 9, 12), (1, 2)), ((3, 7, 5), (0, 2)), ((4, 1, 6), (1, 2)),
                                         ((5, 11), None)])
def test_fftn_real_and_imaginary_parts(shape, dims, norm, rng):
    x = torch.randn(shape, generator=rng).to(DEVICE)
    check(lambda t: torch.fft.fftn(t, dim=dims, norm=norm).real * 2, x)
    check(lambda t: torch.fft.fftn(t, dim=dims, norm=norm).imag + 1, x)


@pytest.mark.parametrize("dim", [0, 1, -1])
def test_fft_along_one_dim(dim, rng):
    x = torch.randn(6, 13, 5, generator=rng).to(DEVICE)

    def both(t):
        spectrum = torch.fft.fft(t, dim=dim)
        return spectrum.real - 2 * spectrum.imag
    check(both, x)


def test_fft2_of_the_last_two_dims(rng):
    check(lambda t: torch.fft.fft2(t).real, torch.randn(2, 3, 8, 10, generator=rng).to(DEVICE))


def test_a_nan_spreads_over_its_transformed_slice(rng):
    x = torch.randn(2, 5, 6, generator=rng)
    x[1, 2, 3] = float("nan")
    fn = lambda t: torch.fft.fftn(t, dim=(1, 2)).real  # noqa: E731
    got, _ = compile_with_reports(fn, x.to(DEVICE))
    assert torch.equal(torch.isnan(got.cpu()), torch.isnan(fn(x)))  # the whole of x[1], nothing of x[0]


def test_a_spectrum_returned_as_a_complex_tensor_stays_in_torch(rng):
    """The graph's output is complex: the transform and its reader run in torch."""
    x = torch.randn(2, 5, 6, generator=rng).to(DEVICE)
    fn = lambda t: torch.fft.fftn(t + 1, dim=(1, 2)) * 2  # noqa: E731
    got, reports = compile_with_reports(fn, x)
    torch.testing.assert_close(got, fn(x), rtol=1e-4, atol=1e-3)
    assert len(ops_in_torch(reports)) == 2, ops_in_torch(reports)  # (the fftn and the product)


def test_magnitudes_and_phases(rng):
    x = torch.randn(3, 12, generator=rng).to(DEVICE)
    # (phases of bins whose imaginary part is not an exact zero, whose sign picks -pi or pi)
    check(lambda t: torch.fft.rfft(t).abs() + torch.fft.fft(t)[:, 1:6].angle().sum(-1, keepdim=True), x)


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
@pytest.mark.parametrize("n", [None, 7, 16, 1])
def test_rfft_and_its_inverse(n, norm, rng):
    x = torch.randn(4, 11, generator=rng).to(DEVICE)
    check(lambda t: torch.view_as_real(torch.fft.rfft(t, n=n, norm=norm)), x)
    check(lambda t: torch.fft.irfft(torch.fft.rfft(t, norm=norm), n=n, norm=norm), x)


@pytest.mark.parametrize("n", [None, 9, 10, 4])
def test_irfft_of_a_spectrum(n, rng):
    """A one-sided spectrum with imaginary parts at bin 0 and n/2 (which irfft ignores)."""
    x = torch.randn(3, 6, 2, generator=rng).to(DEVICE)
    check(lambda t: torch.fft.irfft(torch.view_as_complex(t), n=n, dim=-1), x)


@pytest.mark.parametrize("dims", [(1, 2), (0, 2), None])
def test_rfftn_and_irfftn(dims, rng):
    x = torch.randn(3, 6, 7, generator=rng).to(DEVICE)
    check(lambda t: torch.view_as_real(torch.fft.rfftn(t, dim=dims)), x)
    check(lambda t: torch.fft.irfftn(torch.fft.rfftn(t, dim=dims), s=[t.shape[d] for d in (dims or range(3))],
                                     dim=dims), x)
    check(lambda t: torch.fft.irfft2(torch.fft.rfft2(t) * 2, s=(6, 7)), x)


@pytest.mark.parametrize("norm", [None, "ortho", "forward"])
def test_transforms_of_complex_signals(norm, rng):
    x = torch.randn(2, 5, 9, 2, generator=rng).to(DEVICE)
    z = lambda t: torch.view_as_complex(t)  # noqa: E731
    check(lambda t: torch.view_as_real(torch.fft.fft(z(t), norm=norm)), x)
    check(lambda t: torch.view_as_real(torch.fft.ifft(z(t), n=12, norm=norm)), x)
    check(lambda t: torch.view_as_real(torch.fft.ifft2(z(t), s=(4, 9), norm=norm)), x)
    check(lambda t: torch.view_as_real(torch.fft.ifftn(torch.fft.fftn(z(t), norm=norm), norm=norm)), x)


def test_autocorrelation_through_the_spectrum(rng):
    """Autoformer's period detection: irfft(rfft(q) * conj(rfft(k))) along time."""
    x = torch.randn(2, 2, 4, 10, generator=rng).to(DEVICE)

    def autocorrelation(t):
        q, k = t[0].permute(0, 2, 1), t[1].permute(0, 2, 1)
        spectrum = torch.fft.rfft(q.contiguous(), dim=-1) * torch.conj(torch.fft.rfft(k.contiguous(), dim=-1))
        return torch.fft.irfft(spectrum, n=10, dim=-1)
    check(autocorrelation, x)


def test_a_transform_of_a_longer_dim_runs_in_torch(rng, monkeypatch):
    from trident.compiler.frontend.fx import spectral

    monkeypatch.setattr(spectral, "MAX_POINTS", 8)
    x = torch.randn(2, 9, generator=rng).to(DEVICE)
    got, reports = compile_with_reports(lambda t: torch.fft.fft(t).real * 2, x)
    torch.testing.assert_close(got, torch.fft.fft(x).real * 2, rtol=1e-5, atol=1e-5)
    assert any("9-point transform" in item for item in ops_in_torch(reports))


def test_fnet_mixes_its_tokens_in_kernels():
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.FNetConfig(hidden_size=32, num_hidden_layers=2, intermediate_size=64, vocab_size=100,
                                     max_position_embeddings=64, use_tpu_fourier_optimizations=False)
    model = transformers.FNetModel(config).eval().to(DEVICE)
    ids = torch.randint(0, 100, (2, 11)).to(DEVICE)
    with torch.no_grad():
        want = model(ids).last_hidden_state
    got, reports = compile_with_reports(lambda t: model(t).last_hidden_state, ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert ops_in_torch(reports) == []
