"""sink_transposes: a transpose after a matmul moves below the elementwise ops that follow it, so
they join the matmul's epilogue (ConvNeXt's layer scale and residual add)."""
import pytest
import torch
import torch.nn as nn

import trident.compiler.passes as passes
from trident.compiler.build import BuildTrace, build_engine
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.passes.transposes import sink_transposes
from trident.compiler.reference import run_reference
from trident.compiler.testing import run_engine

TOL = {"fp32": dict(rtol=1e-4, atol=1e-4), "fp16": dict(rtol=2e-2, atol=2e-2)}


def randn(rng, *shape):
    return torch.randn(*shape, generator=rng)


def layer_scale_graph(rng, extra_reader=False):
    """[2, 5, 7, 12] @ [12, 6] -> permute to [2, 6, 5, 7] -> * gamma [6, 1, 1] -> + r -> + 0.5."""
    b = GraphBuilder("layer_scale")
    x = b.input("x", TensorType((2, 5, 7, 12), torch.float32))
    r = b.input("r", TensorType((2, 6, 5, 7), torch.float32))
    w = b.constant(randn(rng, 12, 6), "w")
    gamma = b.constant(randn(rng, 6, 1, 1), "gamma")
    half = b.constant(torch.tensor(0.5), "half")
    y = b.add1("matmul", [x, w])
    t = b.add1("transpose", [y], {"perm": [0, 3, 1, 2]})
    out = b.add1("add", [b.add1("add", [r, b.add1("mul", [gamma, t])]), half])
    outs = [out, b.add1("relu", [t])] if extra_reader else [out]
    return b.finish(outs)


def test_transpose_sinks_below_layer_scale_and_residual(rng):
    graph = layer_scale_graph(rng)
    moved = sink_transposes(graph)
    moved.verify()
    ops = [n.op for n in moved.nodes]
    assert ops.count("transpose") == 2  # the residual read through the inverse, the result back
    assert ops[-1] == "transpose" and moved.nodes[-1].attrs["perm"] == [0, 3, 1, 2]
    (mul,) = [n for n in moved.nodes if n.op == "mul"]
    assert mul.inputs[1] == moved.nodes[0].outputs[0]  # reads the matmul's output directly
    gamma = moved.constants[mul.inputs[0]]
    assert gamma.shape == (6,)  # permuted at compile time: broadcast over the last dim
    torch.testing.assert_close(gamma, graph.constants["gamma"].reshape(6))
    (residual,) = [n for n in moved.nodes if n.op == "transpose" and n.inputs == ("r",)]
    assert residual.attrs["perm"] == [0, 2, 3, 1]
    inputs = [randn(rng, 2, 5, 7, 12), randn(rng, 2, 6, 5, 7)]
    (want,), (got,) = run_reference(graph, inputs), run_reference(moved, inputs)
    assert got.shape == want.shape == (2, 6, 5, 7)
    torch.testing.assert_close(got, want, rtol=0, atol=0)


def test_transpose_with_other_readers_stays(rng):
    graph = layer_scale_graph(rng, extra_reader=True)
    assert [n.op for n in sink_transposes(graph).nodes] == [n.op for n in graph.nodes]


def test_transpose_of_an_input_stays():
    b = GraphBuilder("input_transpose")
    x = b.input("x", TensorType((3, 4, 5), torch.float32))
    graph = b.finish([b.add1("relu", [b.add1("transpose", [x], {"perm": [2, 0, 1]})])])
    assert [n.op for n in sink_transposes(graph).nodes] == ["transpose", "relu"]


def test_back_to_back_transposes_cancel(rng):
    """Sunk below the op, the transpose meets the next one and the two compose to nothing."""
    b = GraphBuilder("cancel")
    x = b.input("x", TensorType((2, 3, 5), torch.float32))
    y = b.add1("matmul", [x, b.constant(randn(rng, 5, 4), "w")])
    t = b.add1("transpose", [y], {"perm": [0, 2, 1]})
    graph = b.finish([b.add1("transpose", [b.add1("sigmoid", [t])], {"perm": [0, 2, 1]})])
    moved = sink_transposes(graph)
    assert [n.op for n in moved.nodes] == ["matmul", "sigmoid"]
    inputs = [randn(rng, 2, 3, 5)]
    torch.testing.assert_close(run_reference(moved, inputs)[0], run_reference(graph, inputs)[0],
                               rtol=0, atol=0)


class ConvNeXtBlock(nn.Module):
    """torchvision's CNBlock in eval: dwconv 7x7 -> NHWC LayerNorm -> MLP -> NCHW -> gamma -> +x."""

    def __init__(self, channels: int):
        super().__init__()
        self.dwconv = nn.Conv2d(channels, channels, 7, padding=3, groups=channels)
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.fc1, self.fc2 = nn.Linear(channels, 4 * channels), nn.Linear(4 * channels, channels)
        self.layer_scale = nn.Parameter(torch.randn(channels, 1, 1))

    def forward(self, x):
        y = self.dwconv(x).permute(0, 2, 3, 1)
        y = self.fc2(nn.functional.gelu(self.fc1(self.norm(y)))).permute(0, 3, 1, 2)
        return x + self.layer_scale * y  # stochastic depth is the identity in eval


def _kernels(engine) -> int:
    return len(engine.plan.kernel_steps())


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_convnext_blocks_fuse_layer_scale_and_residual(precision, monkeypatch):
    torch.manual_seed(0)
    model = nn.Sequential(ConvNeXtBlock(12), ConvNeXtBlock(12)).eval()
    x = torch.randn(2, 12, 5, 7)
    engine = build_engine(model, precision, example_inputs=(x,))
    fresh = torch.randn(2, 12, 5, 7)
    with torch.no_grad():
        want = model(fresh)
    (got,) = run_engine(engine, fresh)
    torch.testing.assert_close(got.float(), want, **TOL[precision])
    # Without the pass each block's layer scale and residual add are a pointwise kernel of
    # their own; with it they are the second matmul's epilogue.
    monkeypatch.setattr(passes, "sink_transposes", lambda graph: graph)
    unfused = build_engine(model, precision, example_inputs=(x,))
    assert _kernels(engine) == _kernels(unfused) - 2
    # (at fp16 each block's two GEMMs are one back-to-back MLP kernel, kernels/mlp.py)
    epilogues = [s.name for s in engine.plan.kernel_steps() if s.name.startswith(("matmul", "mlp"))]
    assert sum("mul_add" in name for name in epilogues) == 2
    assert all(name.startswith("mlp") == (precision == "fp16") for name in epilogues if "mul_add" in name)


class Downsample(nn.Module):
    """torchvision ConvNeXt's stage transition: LayerNorm over channels as permute -> LayerNorm ->
    permute back, then a 2x2 stride-2 conv."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=1e-6)
        self.conv = nn.Conv2d(channels, 2 * channels, 2, 2)

    def forward(self, x):
        return self.conv(self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_layer_norm_over_channels_feeds_the_next_conv_without_a_copy(precision):
    # The LayerNorm computes [N, H, W, C] rows, which permuted back are the NHWC tensor the conv
    # reads: stored as computed, not in the order the permute reads (NCHW) and copied to NHWC.
    torch.manual_seed(1)
    model = nn.Sequential(ConvNeXtBlock(64), Downsample(64)).eval()
    x = torch.randn(2, 64, 6, 6)
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=(x,), trace=trace)
    copied = [s.inputs[0] for s in trace.program.steps
              if s.kind == "kernel" and {n.op for n in s.group.nodes} == {"identity"}]
    assert set(copied) <= set(trace.program.graph.inputs), copied  # (fp32: the model input to NHWC)
    fresh = torch.randn(x.shape)
    with torch.no_grad():
        want = model(fresh)
    (got,) = run_engine(engine, fresh)
    torch.testing.assert_close(got.float(), want, **TOL[precision])


def test_two_matmul_results_do_not_trade_the_transpose(rng):
    """add(transpose(a @ w), b @ v): moving the transpose would put one on b @ v, which could move
    back; the pass leaves the op alone (and terminates)."""
    b = GraphBuilder("trade")
    x = b.input("x", TensorType((2, 3, 5), torch.float32))
    y = b.input("y", TensorType((2, 4, 5), torch.float32))
    t = b.add1("transpose", [b.add1("matmul", [x, b.constant(randn(rng, 5, 4), "w")])],
               {"perm": [0, 2, 1]})
    other = b.add1("matmul", [y, b.constant(randn(rng, 5, 3), "v")])
    graph = b.finish([b.add1("add", [t, other])])
    assert [n.op for n in sink_transposes(graph).nodes] == [n.op for n in graph.nodes]


class TransposedRows(nn.Module):
    """A matmul of permuted rows: (x.transpose(0, 1)) @ W, or a permutation of three batch dims."""

    def __init__(self, rank):
        super().__init__()
        self.rank = rank
        self.w = nn.Parameter(torch.randn(16, 24))

    def forward(self, x):
        rows = x.transpose(0, 1) if self.rank == 3 else x.permute(2, 0, 1, 3)
        return torch.matmul(rows, self.w) * 2.0


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("rank", [3, 4])
def test_matmul_rows_in_order_is_one_gemm_and_keeps_values(precision, rank, rng):
    # matmul_rows_in_order: the GEMM reads x's rows in memory order (one unbatched GEMM) and the
    # permutation moves to its result, a view, including when that result is the graph's output.
    from trident.compiler.autotune import problem_of
    from trident.compiler.build import BuildTrace

    torch.manual_seed(3)
    model = TransposedRows(rank).eval()
    x = randn(rng, 5, 3, 16) if rank == 3 else randn(rng, 2, 3, 4, 16)
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=[x], trace=trace)
    (gemm,) = [problem_of(s.source) for s in engine.plan.kernel_steps()
               if problem_of(s.source).get("template") == "matmul"]
    assert gemm["batch"] == 1 and gemm["M"] == x[..., 0].numel()
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, x)[0], model(x), **TOL[precision])
