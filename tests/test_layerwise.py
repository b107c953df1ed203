"""Layer-wise accuracy debugging: every intermediate against an oracle; an injected error is
named at the layer where it starts."""
import warnings

import pytest
import torch

import trident.compiler.codegen.expr as expr
from trident.compiler.build import import_model
from trident.models import MODELS
from trident.tools.cli import main
from trident.tools.layerwise import compare_layers, with_all_outputs


def mlp():
    build, make_inputs = MODELS["mlp"]
    inputs = list(make_inputs(3))
    return import_model(build(), inputs), inputs


def corrupt_relu(monkeypatch, node_name):
    """Make the kernel expression of one relu node (by IR node name) wrong."""
    original = expr.UNARY["relu"]
    monkeypatch.setitem(expr.UNARY, "relu", lambda x, n: f"({original(x, n)} + 0.5)"
                        if n.name == node_name else original(x, n))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_clean_model_is_within_tolerance(precision):
    graph, inputs = mlp()
    report = compare_layers(graph, inputs, precision)
    assert report.passed, str(report)
    values = [la.value for la in report.layers]
    # the mlp is an nn.Sequential: its ReLUs are named after their index in it. At fp16 its
    # Linear pairs run back to back (kernels/mlp.py): relu_1 and relu_5 stay in registers.
    observed = ["relu_1", "relu_3", "relu_5"] if precision == "fp32" else ["relu_3"]
    assert observed == [v for v in values if v.startswith("relu")]
    assert len(values) >= len(observed) + 1 and not report.unmatched
    assert "every layer is within tolerance" in str(report)


def test_injected_error_is_named_where_it_starts(monkeypatch):
    corrupt_relu(monkeypatch, "relu_1")
    graph, inputs = mlp()
    fused = compare_layers(graph, inputs, "fp16", tol=1e-2)
    # at fp16 relu_1 lives in registers of the first back-to-back MLP kernel: the error shows at
    # the first value that kernel stores, after the input cast (fine)
    assert fused.first_bad is not None and (fused.first_bad.value, fused.first_bad.kernel[:4]) == ("relu_3", "mlp_")
    assert [la.ok for la in fused.layers[:fused.first_bad.index]] == [True]
    report = compare_layers(graph, inputs, "fp32", tol=1e-2)
    first = report.first_bad
    assert first is not None, str(report)
    assert (first.value, first.op, first.node) == ("relu_1", "relu", "relu_1")
    assert first.kernel.startswith("matmul_matmul_relu")
    assert all(la.ok for la in report.layers[:first.index])  # the layers before it are fine
    assert f"first layer above tolerance: #{first.index} relu_1 (relu node relu_1" in str(report)


def test_no_fuse_observes_every_ir_value(monkeypatch):
    corrupt_relu(monkeypatch, "relu_3")
    graph, inputs = mlp()
    report = compare_layers(graph, inputs, "fp32", fuse_ops=False)
    values = [la.value for la in report.layers]
    # one layer per matmul (bias folded in) and per relu: 4 linears, 3 relus, in model order
    assert [v.split("_")[0] for v in values] == ["linear", "relu"] * 3 + ["linear"]
    assert [v for v in values if v.startswith("relu")] == ["relu_1", "relu_3", "relu_5"]
    assert report.first_bad.value == "relu_3"


def onnx_file(tmp_path):
    build, make_inputs = MODELS["mlp"]
    path = tmp_path / "mlp.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(build(), make_inputs(2), str(path), dynamo=False, opset_version=17,
                          input_names=["x"], dynamic_axes={"x": {0: "batch"}})
    return path


def test_onnxruntime_oracle_and_cli(tmp_path, capsys, monkeypatch):
    pytest.importorskip("onnxruntime")
    import onnx

    path = onnx_file(tmp_path)
    marked = with_all_outputs(onnx.load(path))
    assert len(marked.graph.output) == sum(len(n.output) for n in marked.graph.node)
    plot = tmp_path / "errors.png"
    args = ["layerwise", str(path), "--oracle", "onnxruntime", "--batch", "4"]
    assert main(args + ["--precision", "fp16", "--no-fuse", "--plot", str(plot)]) == 0
    out = capsys.readouterr().out
    assert "vs onnxruntime" in out and "every layer is within tolerance" in out
    assert "/0/Gemm " in out  # a value a pass renamed, matched through its ONNX node
    assert "not compared" not in out
    assert plot.stat().st_size > 10_000

    corrupt_relu(monkeypatch, "/3/Relu")
    assert main(args + ["--precision", "fp32"]) == 1
    out = capsys.readouterr().out
    assert "first layer above tolerance: #1 /3/Relu_output_0 (relu node /3/Relu" in out


def test_torch_model_refuses_the_onnxruntime_oracle(capsys):
    assert main(["layerwise", "mlp", "--oracle", "onnxruntime"]) == 2
    assert "not one (use --oracle reference)" in capsys.readouterr().err
