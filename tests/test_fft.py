"""Fourier transforms of real tensors read through .real / .imag (compiler/frontend/fx/spectral.py:
DFT matrix products in the GEMM kernels) against torch.fft: fftn, fft2 and fft along any dims,
every norm, odd and size-1 lengths, a NaN; transforms read otherwise and complex inputs stay in
torch; transformers' FNet (tiny config) through torch.compile, every op in a kernel."""
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


def test_a_transform_read_as_a_complex_tensor_stays_in_torch(rng):
    """|X| reads the complex value itself: the transform and its reader run in torch."""
    check(lambda t: torch.fft.fftn(t, dim=(1, 2)).abs() + 1, torch.randn(2, 5, 6, generator=rng).to(DEVICE),
          in_torch=2)


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
