"""passes/reshapes.py's sinking of reshapes past elementwise ops, where a reduction reads them.

A reshape moved down past `y * y` put the squares in another kernel, before the reshape (a linear's
epilogue, or one of their own), and an fp16 engine stored them in fp16: a row's norm overflowed
past 256 and came out 0.996 off (SwiftFormer's F.normalize after a linear on an NHWC view, through
torch.compile; below 2^-12 the squares rounded away and its fp16 output was NaN). The squares now stay with the
sum, in its kernel's fp32 registers, as torch computes a norm."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from trident.compiler.testing import compile_with_reports, relative_error

DEV = "cuda" if torch.cuda.is_available() else "cpu"


class NormalizedAfterAView(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, x):  # x: [2, 8, 8, 8], channels last
        return F.normalize(self.linear(x).reshape(2, 64, 8), dim=-1)


@pytest.mark.parametrize("magnitude", [1e-4, 1.0, 1e3])
def test_a_norm_after_a_view_keeps_its_squares_in_its_kernel(magnitude):
    torch.manual_seed(0)
    module = NormalizedAfterAView().eval().to(DEV)
    x = torch.randn(2, 8, 8, 8, device=DEV) * magnitude
    with torch.no_grad():
        ref = module(x)
    got, reports = compile_with_reports(module, x, precision="fp16")
    assert torch.isfinite(got).all() and relative_error(got.float(), ref) < 5e-3
    names = [s.name for r in reports for e in r.engines() for s in e.plan.steps if s.kind == "kernel"]
    assert any(name.startswith("reduction_mul_reduce_sum") for name in names), names  # the squares in the sum's kernel
