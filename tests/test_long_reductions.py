"""Sums, means and maxima over more than a row kernel holds (group_kinds.MAX_ROW elements: a
squeeze-excite mean over 112 x 112) loop over their row in chunks: one kernel, with its
prologue fused, against the torch reference at fp32 and fp16, with lengths that are not
multiples of the chunk, NaN and inf, and a prologue value stored for another kernel."""
from __future__ import annotations

import pytest
import torch

from trident.compiler.build import BuildTrace, compile_graph
from trident.compiler.codegen.kernels import LOOP_BLOCK_R
from trident.compiler.group_kinds import MAX_ROW
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference

pytestmark = pytest.mark.compiles_for_hopper

LONG = MAX_ROW + LOOP_BLOCK_R + 5  # two full chunks past MAX_ROW and a ragged one


def graph_of(shape, body):
    b = GraphBuilder("long")
    x = b.input("x0", TensorType(tuple(shape), torch.float32))
    outs = body(b, x)
    return b.finish(outs if isinstance(outs, list) else [outs])


def steps_of(graph, precision="fp32"):
    trace = BuildTrace()
    program = compile_graph(graph, precision, trace)
    return [s.kind for s in program.steps]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("op,shape,attrs", [
    ("reduce_mean", (2, 3, 97, 97), dict(axes=(2, 3), keepdims=True)),   # SE over 97 x 97
    ("reduce_sum", (3, LONG), dict(axes=(1,), keepdims=False)),
    ("reduce_max", (LONG, 2), dict(axes=(0,), keepdims=True)),          # a strided row
    ("reduce_mean", (1, LONG), dict(axes=(1,), keepdims=True)),
])
def test_long_reduction_with_prologue_is_one_kernel(op, shape, attrs, precision):
    def body(b, x):
        pre = b.add1("mul", [b.add1("sigmoid", [x]), b.constant(torch.tensor(1.5))])
        return b.add1("tanh", [b.add1(op, [pre], attrs)])

    g = graph_of(shape, body)
    assert steps_of(g) == ["kernel"]
    x = torch.randn(*shape) * 3
    assert_matches_reference(g, [x], precision)


def test_long_max_keeps_nan_and_inf():
    g = graph_of((2, LONG), lambda b, x: b.add1("reduce_max", [x], dict(axes=(1,), keepdims=True)))
    x = torch.randn(2, LONG)
    x[0, LONG - 1] = float("nan")   # in the ragged last chunk
    x[1, 3] = float("inf")
    assert steps_of(g) == ["kernel"]
    assert_matches_reference(g, [x], "fp32")


def test_long_sum_stores_its_prologue_for_another_kernel():
    def body(b, x):
        pre = b.add1("exp", [x])
        total = b.add1("reduce_sum", [pre], dict(axes=(1,), keepdims=True))
        return [total, b.add1("neg", [pre])]  # pre is read again by a second kernel

    g = graph_of((2, LONG), body)
    assert steps_of(g)[0] == "kernel"
    assert_matches_reference(g, [torch.randn(2, LONG)], "fp32")


def test_long_softmax_runs_as_looped_reductions():
    g = graph_of((2, LONG), lambda b, x: b.add1("softmax", [x], dict(axis=-1)))
    steps = steps_of(g)
    assert "torch" not in steps and len(steps) <= 4  # max, sum of exp, and the division
    assert_matches_reference(g, [torch.randn(2, LONG)], "fp32")


def test_epilogue_over_the_row_does_not_join_a_looped_reduction():
    def body(b, x):  # x - max(x): the row is gone once the loop ends
        m = b.add1("reduce_max", [x], dict(axes=(1,), keepdims=True))
        return b.add1("sub", [x, m])

    g = graph_of((2, LONG), body)
    assert steps_of(g) == ["kernel", "kernel"]
    assert_matches_reference(g, [torch.randn(2, LONG)], "fp32")


def test_squeeze_excite_mean_of_a_channels_last_conv_output():
    from trident.compiler import build_engine
    from trident.compiler.testing import relative_error, run_engine

    class SqueezeExcite(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv2d(3, 5, 3, padding=1)

        def forward(self, x):
            y = torch.relu(self.conv(x))
            return y * torch.sigmoid(y.mean((2, 3), keepdim=True))

    model, x = SqueezeExcite().eval(), torch.randn(2, 3, 97, 95)
    engine = build_engine(model, "fp32", example_inputs=(x,))
    assert not [s for s in engine.plan.steps if s.kind == "torch"]
    (got,) = run_engine(engine, x)
    with torch.no_grad():
        assert relative_error(got, model(x)) < 1e-5


# ----------------------------------- row-wise normalizations over long rows (passes/long_rows) ----
ROWWISE = {
    "group_norm_one_group": (lambda: torch.nn.GroupNorm(1, 4), (2, 4, 50, 45)),   # PoolFormer
    "group_norm_two_groups": (lambda: torch.nn.GroupNorm(2, 4), (1, 4, 70, 70)),  # a U-Net's
    "layer_norm": (lambda: torch.nn.LayerNorm((3, 3000)), (2, 3, 3000)),
    "rms_norm": (lambda: torch.nn.RMSNorm(LONG), (2, LONG)),
    "softmax": (lambda: torch.nn.Softmax(-1), (3, LONG)),
    "log_softmax_inner_axis": (lambda: torch.nn.LogSoftmax(1), (2, LONG, 2)),
}


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-4), ("fp16", 2e-2)])
@pytest.mark.parametrize("name", sorted(ROWWISE))
def test_rowwise_normalizations_over_long_rows_run_as_looped_reductions(name, precision, tolerance):
    from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

    make, shape = ROWWISE[name]
    torch.manual_seed(0)
    model = make().eval()
    for p in model.parameters():
        p.data = torch.randn_like(p)
    x = torch.randn(*shape) * 3 + 1
    x.view(-1)[[5, 77]] = torch.tensor([float("nan"), float("inf")])  # their rows only
    model, x = model.to(DEVICE), x.to(DEVICE)
    got, reports = compile_with_reports(model, x, precision=precision)
    with torch.no_grad():
        want = model(x)
    torch.testing.assert_close(got.float(), want, rtol=tolerance, atol=tolerance, equal_nan=True)
    assert ops_in_torch(reports) == []
