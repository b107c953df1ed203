"""torch.linalg.solve_triangular as matrix products (compiler/frontend/fx/triangular.py) against
torch: lower and upper, unit and general diagonals, left and right, batches that broadcast, orders
1 to 100 (not powers of two), a NaN in the triangle the solve does not read; a gated-delta-net
chunk (Qwen3-Next) through torch.compile with every op in a kernel; orders past MAX_ORDER in torch."""
from __future__ import annotations

import pytest
import torch

from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

pytestmark = [pytest.mark.compiles_for_hopper, pytest.mark.usefixtures("fresh_dynamo")]  # (tests/conftest.py)


def system(batch, n, upper, rng):
    """A well-conditioned triangular matrix (off-diagonal entries small beside the diagonal)."""
    a = torch.randn(*batch, n, n, generator=rng) * 0.3 / n ** 0.5
    a = a + torch.diag_embed(1 + torch.rand(*batch, n, generator=rng))
    return a.triu() if upper else a.tril()


def check(fn, *inputs, in_torch=0):
    got, reports = compile_with_reports(fn, *inputs)
    torch.testing.assert_close(got, fn(*inputs), rtol=1e-4, atol=1e-4)
    assert len(ops_in_torch(reports)) == in_torch, ops_in_torch(reports)


@pytest.mark.parametrize("n", [1, 5, 64, 100])
@pytest.mark.parametrize("upper", [False, True])
@pytest.mark.parametrize("unit", [False, True])
def test_solve(n, upper, unit, rng):
    a, b = system((2,), n, upper, rng).to(DEVICE), torch.randn(2, n, 3, generator=rng).to(DEVICE)
    check(lambda a, b: torch.linalg.solve_triangular(a, b, upper=upper, unitriangular=unit), a, b)


@pytest.mark.parametrize("upper", [False, True])
def test_solve_from_the_right_with_broadcast_batches(upper, rng):
    a, b = system((1, 3), 7, upper, rng).to(DEVICE), torch.randn(2, 1, 4, 7, generator=rng).to(DEVICE)
    check(lambda a, b: torch.linalg.solve_triangular(a, b, upper=upper, left=False), a, b)


def test_the_other_triangle_is_not_read(rng):
    a, b = system((3,), 6, False, rng), torch.randn(3, 6, 2, generator=rng)
    a = a + torch.triu(torch.full((6, 6), float("nan")), 1)  # above the diagonal: ignored by the solve
    a[:, 2, 2] = float("nan")  # on it: ignored when the diagonal is the unit one
    check(lambda a, b: torch.linalg.solve_triangular(a, b, upper=False, unitriangular=True),
          a.to(DEVICE), b.to(DEVICE))


def test_gated_delta_chunk(rng):
    """Qwen3-Next's UT transform: a strictly lower system of k_beta k^T with decays, per chunk."""
    def chunk(key, value, beta, decay):
        k_beta, v_beta = key * beta[..., None], value * beta[..., None]
        cum = decay.cumsum(-1)
        mask = torch.ones(8, 8, dtype=torch.bool, device=key.device).triu(1)
        pairwise = (cum[..., :, None] - cum[..., None, :]).masked_fill(mask, float("-inf")).exp()
        ut = (k_beta @ key.transpose(-1, -2)) * pairwise
        return torch.linalg.solve_triangular(ut, v_beta, upper=False, unitriangular=True)
    key = torch.nn.functional.normalize(torch.randn(2, 3, 8, 4, generator=rng), dim=-1)
    inputs = (key, torch.randn(2, 3, 8, 5, generator=rng), torch.rand(2, 3, 8, generator=rng),
              -torch.rand(2, 3, 8, generator=rng))
    check(chunk, *(t.to(DEVICE) for t in inputs))


def test_an_order_past_the_limit_runs_in_torch(rng, monkeypatch):
    from trident.compiler.frontend.fx import triangular

    monkeypatch.setattr(triangular, "MAX_ORDER", 4)
    a, b = system((), 5, False, rng).to(DEVICE), torch.randn(5, 2, generator=rng).to(DEVICE)
    got, reports = compile_with_reports(lambda a, b: torch.linalg.solve_triangular(a, b, upper=False) * 2, a, b)
    torch.testing.assert_close(got, torch.linalg.solve_triangular(a, b, upper=False) * 2, rtol=1e-5, atol=1e-5)
    assert any("order 5" in item for item in ops_in_torch(reports))
