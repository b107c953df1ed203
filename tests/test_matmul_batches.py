"""Matmuls with more than two batch dims (LongT5's blocked local attention) run as matmul kernels
with one batch dim (compiler/passes/batched_matmul.py); batch dims that broadcast against each
other stay in torch."""
from __future__ import annotations

import pytest
import torch

from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)


@pytest.mark.parametrize("shape_a, shape_b, in_kernels", [
    ((2, 3, 4, 5, 6), (2, 3, 4, 6, 7), True),   # the same batch dims
    ((2, 3, 4, 5, 6), (6, 7), True),            # a shared matrix
    ((1, 1, 1, 5, 6), (2, 3, 4, 6, 7), True),   # a shared left operand
    ((2, 3, 4, 5, 6), (1, 1, 1, 6, 7), True),
    ((3, 2, 1, 2, 1, 5), (3, 2, 1, 2, 5, 3), True),  # six dims, size-1 rows
    ((2, 1, 4, 5, 6), (2, 3, 4, 6, 7), False),  # batch dims broadcast against each other
])
def test_matmul_with_more_than_two_batch_dims(shape_a, shape_b, in_kernels):
    a, b = torch.randn(*shape_a, device=DEVICE), torch.randn(*shape_b, device=DEVICE)

    def fn(a, b):
        return torch.matmul(a * 2, b) + 1

    got, reports = compile_with_reports(fn, a, b)
    torch.testing.assert_close(got, fn(a, b), rtol=1e-5, atol=1e-5)
    assert ops_in_torch(reports) == ([] if in_kernels else ["matmul"])
