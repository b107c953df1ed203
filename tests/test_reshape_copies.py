"""A reshape that is not a view of its input (a channel shuffle, Swin's window partition: a
reshape after a transpose) runs as one copy kernel into a dense layout and a view of the copy,
never as a torch step; checked against eager torch at fp32 and fp16, odd sizes, size-1 dims."""
from __future__ import annotations

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.testing import relative_error, run_engine

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)


class ChannelShuffle(torch.nn.Module):
    """ShuffleNetV2's unit: conv, shuffle the channels of two groups, split, conv one half."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = torch.nn.Conv2d(channels, channels, 1)
        self.branch = torch.nn.Conv2d(channels // 2, channels // 2, 3, padding=1)

    def forward(self, x):
        x = self.conv(x)
        b, c, h, w = x.shape
        x = x.view(b, 2, c // 2, h, w).transpose(1, 2).reshape(b, c, h, w)
        kept, other = x.chunk(2, dim=1)
        return torch.cat([kept, self.branch(other)], 1)


class WindowPartition(torch.nn.Module):
    """Swin's window partition of a channels-last map, then a linear layer over each window."""

    def __init__(self, window: int, channels: int):
        super().__init__()
        self.window = window
        self.proj = torch.nn.Linear(channels, channels)

    def forward(self, x):
        b, h, w, c = x.shape
        k = self.window
        x = x.view(b, h // k, k, w // k, k, c).permute(0, 1, 3, 2, 4, 5).reshape(-1, k * k, c)
        return self.proj(x)


CASES = [(ChannelShuffle(6), (2, 6, 5, 3)), (ChannelShuffle(4), (1, 4, 1, 1)),
         (WindowPartition(3, 5), (2, 6, 9, 5)), (WindowPartition(1, 3), (1, 1, 1, 3))]


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-5), ("fp16", 3e-3)])
@pytest.mark.parametrize("case", range(len(CASES)))
def test_reshape_of_a_permuted_tensor_is_a_copy_kernel(case, precision, tol):
    module, shape = CASES[case]
    module = module.eval()
    x = torch.randn(*shape)
    with torch.no_grad():
        ref = module(x)
    engine = build_engine(module, precision, example_inputs=(x,))
    (got,) = run_engine(engine, x)
    assert got.shape == ref.shape
    assert relative_error(got.float(), ref) < tol
    assert not [s for s in engine.plan.steps if s.kind == "torch"]


def test_two_reshapes_of_one_value_share_its_copy():
    class TwoReads(torch.nn.Module):
        def forward(self, x):
            t = x.transpose(1, 2)
            return t.reshape(-1) * 2, t.reshape(x.shape[0], -1) + 1

    x = torch.randn(3, 4, 5)
    engine = build_engine(TwoReads(), "fp32", example_inputs=(x,))
    a, b = run_engine(engine, x)
    assert torch.equal(a, x.transpose(1, 2).reshape(-1) * 2)
    assert torch.equal(b, x.transpose(1, 2).reshape(3, -1) + 1)
    assert not [s for s in engine.plan.steps if s.kind == "torch"]


def test_the_graph_after_passes_still_computes_without_the_copy():
    """The copy is the plan's: the graph the passes left (what `trident explain` and the
    reference executor read) keeps its own reshape of the permuted value."""
    from trident.compiler.build import BuildTrace
    from trident.compiler.reference import run_reference

    module, x = ChannelShuffle(6).eval(), torch.randn(2, 6, 5, 3)
    trace = BuildTrace()
    engine = build_engine(module, "fp32", example_inputs=(x,), trace=trace)
    (expected,) = run_reference(trace.after_pass[-1][1], [x])
    assert relative_error(run_engine(engine, x)[0], expected) < 1e-5
