"""profile_engine(): per-step times, FLOPs and bytes from each kernel's problem, roofline plot."""
import json

import pytest
import torch

from trident.compiler import config
from trident.compiler.autotune import problem_of
from trident.compiler.build import compile_graph, engine_from, import_model
from trident.models import MODELS
from trident.tools.cli import main
from trident.tools.profiling import Peaks, profile_engine, step_cost


def engine_of(name, precision="fp32", batch=2):
    build, make_inputs = MODELS[name]
    inputs = make_inputs(batch)
    return engine_from(compile_graph(import_model(build(), inputs), precision)), inputs


def test_profile_mlp_rows_costs_and_order():
    engine, inputs = engine_of("mlp")
    report = profile_engine(engine, inputs, repeat=2, peaks=Peaks(100.0, 1000.0))
    launches = [k for k, s in enumerate(engine.plan.steps) if s.kind != "view"]
    assert sorted(r.index for r in report.steps) == launches
    times = [r.time_ms for r in report.steps]
    assert times == sorted(times, reverse=True) and all(t > 0 for t in times)
    first = next(r for r in report.steps if r.index == 0)  # x[2,64] @ W[64,256] + b, relu
    assert first.flops == 2 * 2 * 256 * 64 and first.template == "matmul"
    assert first.bytes == 4 * (2 * 64 + 64 * 256 + 256 + 2 * 256)
    assert all(r.roof_pct is not None and r.roof_pct >= 0 for r in report.steps)
    text = str(report)
    assert "matmul_matmul_relu" in text and "%roof" in text
    if not config.HAS_CUDA:
        assert "interpreter" in report.caveat and "interpreter" in text
        assert report.whole_ms == {} and "whole call" not in text  # (no GPU: no whole-call timing)


def test_conv_and_pool_costs():
    engine, _ = engine_of("resnet_tiny")
    plan = engine.plan
    for step in plan.kernel_steps():
        flops, moved = step_cost(step, plan)
        p = problem_of(step.source)
        assert flops > 0 and moved > 0
        if p["template"] == "conv":
            assert flops == 2 * p["M"] * p["N"] * p["K"] * p["groups"]


def test_roofline_plot_and_cli(tmp_path, capsys):
    pytest.importorskip("matplotlib")
    plot, data = tmp_path / "roof.png", tmp_path / "prof.json"
    assert main(["profile", "mlp", "--precision", "fp32", "--repeat", "1", "--peaks", "671,4250",
                 "--plot", str(plot), "--json", str(data)]) == 0
    out = capsys.readouterr().out
    assert "roofline peaks: 671 TFLOP/s, 4250 GB/s (given)" in out
    assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and plot.stat().st_size > 10_000
    figures = json.loads(data.read_text())
    assert len(figures["steps"]) == 4 and figures["peaks"]["tflops"] == 671


class TwoGraphs(torch.nn.Module):
    """Two Linear layers with a graph break between them: torch.compile hands over two graphs."""

    def __init__(self):
        super().__init__()
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        y = torch.relu(self.a(x))
        torch._dynamo.graph_break()
        return self.b(y) * 2


def two_graphs():
    torch.manual_seed(0)
    return TwoGraphs().eval(), (torch.randn(3, 16),)


def test_profile_through_torch_compile(tmp_path, capsys):
    data = tmp_path / "prof.json"
    assert main(["profile", f"{__file__}:two_graphs", "--torch-compile", "--precision", "fp32", "--repeat", "1",
                 "--peaks", "671,4250", "--json", str(data)]) == 0
    assert "torch.compile: 2 graph(s), 2 trident engine(s)" in capsys.readouterr().out
    steps = json.loads(data.read_text())["steps"]
    # each graph one GEMM with its epilogue (ReLU; the scale), named by engine
    assert sorted(s["name"] for s in steps) == ["e0:matmul_matmul_relu", "e1:matmul_matmul_mul"]
    assert all(s["time_ms"] > 0 and s["flops"] > 0 for s in steps)


@pytest.mark.gpu
def test_gpu_profile_through_torch_compile_times_whole_calls():
    from trident.tools.profile_compile import profile_torch_compile

    report = profile_torch_compile(f"{__file__}:two_graphs", 2, "fp16", repeat=3)
    # the model's call holds both engines' and the graph break's Python: never less than the engines
    assert 0 < report.whole_ms["engine"] <= report.whole_ms["model"], report.whole_ms


def test_profile_through_torch_compile_refuses_what_it_cannot_run(tmp_path):
    from trident.compiler.errors import InputError
    from trident.tools.profile_compile import profile_torch_compile

    onnx_file = tmp_path / "m.onnx"
    onnx_file.write_bytes(b"")
    with pytest.raises(InputError, match="needs a torch model"):
        profile_torch_compile(str(onnx_file), 2, "fp16")
    with pytest.raises(InputError, match="int8 needs calibration batches"):
        profile_torch_compile("mlp", 2, "int8")


@pytest.mark.gpu
def test_gpu_profile_with_measured_peaks(tmp_path):
    engine, inputs = engine_of("resnet_tiny", "fp16", batch=32)
    report = profile_engine(engine, [x.cuda() for x in inputs])
    assert report.peaks.tflops > 50 and report.peaks.gbps > 500, report.peaks
    assert not report.caveat
    assert all(r.time_ms > 0 and r.roof_pct is not None and r.roof_pct > 0 for r in report.steps)
    assert sum(r.roof_pct < 100 for r in report.steps) > 0, str(report)
    # the engine's whole call: its steps, plus the input copy and the gaps between launches
    assert report.whole_ms["engine"] > 0.5 * report.total_ms, str(report)
    assert "whole call:" in str(report)
    report.plot_roofline(tmp_path / "roofline.png")
    out = engine(*[x.cuda() for x in inputs])[0]  # the engine still runs normally afterwards
    assert torch.isfinite(out).all()
