"""1-D convolutions run through the 2-D conv templates (compiler/passes/conv1d.py): nn.Conv1d via
fx and ONNX Conv with a 1-D kernel, at fp32 and fp16, against torch / onnxruntime, with no torch
step left and the epilogue (bias, activation) in the conv's kernel."""
import numpy as np
import pytest
import torch
import torch.nn as nn

from onnx_util import check_engine, make_model, node, torch_steps
from trident.compiler.autotune import problem_of
from trident.compiler.build import BuildTrace, build_engine
from trident.compiler.testing import assert_backend_matches_eager, run_engine

# (C, OC, L, K, stride, padding, dilation, groups): odd lengths, size-1 dims, grouped, depthwise
CASES = {
    "plain": (5, 7, 13, 3, 1, 1, 1, 1),
    "strided": (6, 9, 17, 3, 2, 1, 1, 1),
    "dilated": (4, 6, 19, 3, 1, 2, 2, 1),
    "grouped": (6, 9, 11, 5, 1, 2, 1, 3),
    "depthwise": (8, 8, 15, 7, 1, 3, 1, 8),
    "wide_channels": (40, 24, 9, 3, 1, 1, 1, 1),
    "kernel_1": (5, 3, 7, 1, 1, 0, 1, 1),
    "length_1": (3, 4, 1, 1, 1, 0, 1, 1),
    "one_out_channel": (4, 1, 10, 4, 3, 0, 1, 1),
}
TOLERANCE = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 2e-2)}


def stem(c, oc, k, stride, padding, dilation, groups, bias=True):
    return nn.Sequential(nn.Conv1d(c, oc, k, stride, padding, dilation, groups, bias=bias), nn.GELU())


def kernel_templates(engine) -> list[str]:
    return [problem_of(s.source).get("template") for s in engine.plan.kernel_steps()]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_conv1d_module_runs_as_one_conv_kernel(case, precision):
    c, oc, length, k, stride, padding, dilation, groups = CASES[case]
    torch.manual_seed(0)
    model = stem(c, oc, k, stride, padding, dilation, groups).eval()
    x = torch.randn(2, c, length) + 0.1
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=(x,), trace=trace)
    assert torch_steps(engine) == []
    assert [t for t in kernel_templates(engine) if t != "pointwise"] in (["conv"], ["depthwise"], ["matmul"])
    # The GELU runs in the conv's epilogue. Besides it there are at most the engine's boundary
    # copies: the user's [N, C, L] input to length-major (or its fp16 cast, written so) and the
    # fp16 engine's output cast.
    assert any("gelu" in [n.op for n in s.group.nodes] and s.group.kind == "conv" for s in trace.program.steps)
    assert all({n.op for n in s.group.nodes} <= {"cast", "identity"}
               for s in trace.program.steps if s.kind == "kernel" and s.group.kind == "pointwise")
    assert len(engine.plan.kernel_steps()) <= (2 if precision == "fp32" else 3)
    fresh = torch.randn(2, c, length)
    with torch.no_grad():
        ref = model(fresh)
        got = run_engine(engine, fresh)[0]
    assert got.shape == ref.shape
    rtol, atol = TOLERANCE[precision]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol)


def test_conv1d_without_bias_and_batch_1():
    torch.manual_seed(1)
    model = stem(3, 5, 3, 1, 1, 1, 1, bias=False).eval()
    x = torch.randn(1, 3, 8)
    engine = build_engine(model, "fp32", example_inputs=(x,))
    assert torch_steps(engine) == []
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, x)[0], model(x), rtol=1e-4, atol=1e-5)


class WhisperStem(nn.Module):
    """Whisper's audio stem: conv -> GELU -> strided conv -> GELU -> [N, L, C], plus positions."""

    def __init__(self, mels=6, dim=16, length=9):
        super().__init__()
        self.conv1 = nn.Conv1d(mels, dim, 3, padding=1)
        self.conv2 = nn.Conv1d(dim, dim, 3, stride=2, padding=1)
        self.positions = nn.Parameter(torch.randn(length, dim))

    def forward(self, x):
        x = nn.functional.gelu(self.conv1(x))
        x = nn.functional.gelu(self.conv2(x))
        return x.permute(0, 2, 1) + self.positions


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_whisper_stem_has_no_copies_between_its_convs(precision):
    torch.manual_seed(2)
    model = WhisperStem().eval()
    x = torch.randn(2, 6, 17)
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=(x,), trace=trace)
    assert torch_steps(engine) == []
    # conv1 + GELU, conv2 + GELU, the position add: the reshapes between them are views (the
    # fp16 engine adds its input cast, which writes the length-major layout conv1 reads)
    assert kernel_templates(engine) == ["pointwise"] * (precision == "fp16") + ["conv", "conv", "pointwise"]
    assert not any(n.op == "conv" and trace.program.graph.types[n.inputs[0]].rank == 3
                   for n in trace.program.graph.nodes)
    fresh = torch.randn(2, 6, 17)
    with torch.no_grad():
        ref = model(fresh)
    got = run_engine(engine, fresh)[0]
    rtol, atol = TOLERANCE[precision]
    torch.testing.assert_close(got.float(), ref, rtol=rtol, atol=atol)


def test_conv1d_through_torch_compile():
    torch.manual_seed(3)
    model = WhisperStem().eval()
    assert_backend_matches_eager(model, torch.randn(2, 6, 17), atol=1e-5)


def onnx_conv1d(c, oc, length, k, stride, pad, dilation, groups, seed):
    rng = np.random.default_rng(seed)
    w = rng.standard_normal((oc, c // groups, k)).astype(np.float32)
    b = rng.standard_normal(oc).astype(np.float32)
    nodes = [node("Conv", ["x", "w", "b"], ["c"], kernel_shape=[k], strides=[stride], pads=[pad, pad + 1],
                  dilations=[dilation], group=groups),
             node("Relu", ["c"], ["y"])]
    return make_model(nodes, {"x": (np.float32, [2, c, length])}, ["y"], {"w": w, "b": b})


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("case", ["plain", "strided", "dilated", "grouped", "depthwise", "length_1"])
def test_onnx_conv1d_runs_as_kernel(case, precision):
    c, oc, length, k, stride, padding, dilation, groups = CASES[case]
    model = onnx_conv1d(c, oc, length, k, stride, padding, dilation, groups, seed=4)
    engine = check_engine(model, precision=precision, tol=TOLERANCE[precision])
    assert torch_steps(engine) == []


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.gpu
def test_gpu_conv1d_whisper_stem(dtype):
    """Whisper-tiny's stem shapes (80 mels -> 384, length 3000 -> 1500) on the GPU."""
    torch.manual_seed(5)
    model = WhisperStem(80, 384, 1500).eval().cuda()
    x = torch.randn(4, 80, 3000, device="cuda")
    precision = "fp16" if dtype == torch.float16 else "fp32"
    engine = build_engine(model, precision, example_inputs=(x,))
    assert torch_steps(engine) == []
    with torch.no_grad():
        ref = model(x)
    got = engine(x)[0].float()
    assert ((got - ref).norm() / ref.norm()).item() < (1e-2 if precision == "fp16" else 1e-3)
