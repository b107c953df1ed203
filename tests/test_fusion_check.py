"""`trident fusion-check` and check_fusion(): a pattern's fused kernels against the reference, and
a deliberately wrong kernel caught with a clear message."""
import re
import sys
import types

import pytest
import torch

import trident.compiler.codegen.expr as expr
import trident.compiler.codegen.kernels as kernels
from trident.compiler.errors import InputError
from trident.compiler.testing import check_fusion, pattern, pattern_graph
from trident.models import patterns
from trident.tools.cli import main
from trident.tools.fusion_check import parse_shapes


@pytest.mark.parametrize("name", ["bias_gelu", "residual_layer_norm", "matmul_bias_relu"])
def test_bundled_patterns_pass(name):
    report = check_fusion(getattr(patterns, name), max_kernels=1, precisions=["fp32"])
    assert report.passed, str(report)
    assert report.results[0].num_kernels == 1 < report.results[0].unfused_kernels


def test_report_lists_kernels_reasons_and_errors():
    report = check_fusion(patterns.add_relu_scale, seed=5)
    text = str(report)
    assert [r.precision for r in report.results] == ["fp32", "fp16"]
    assert "seed 5" in text and "fusion check passed" in text
    assert "kernel pointwise_add_relu_mul" in text and "fused into pointwise group" in text
    assert all(o.max_abs < 1e-2 for r in report.results for o in r.outputs)


def test_injected_wrong_expression_is_caught(monkeypatch):
    monkeypatch.setitem(expr.BINARY, "add", lambda a, b: f"({a} - {b})")
    report = check_fusion(patterns.bias_gelu, precisions=["fp32"], seed=1)
    assert not report.passed
    text = str(report)
    assert "fusion check FAILED" in text and "rerun with seed=1" in text
    (failure,) = report.failures()
    assert failure.startswith("fp32: output 0 (gelu, from pointwise_add_gelu)")
    assert "elements out of tolerance" in failure and "expected" in failure
    assert "the error is in a single op's kernel, not in the fusion" in text
    with pytest.raises(AssertionError, match="FAIL"):
        report.assert_ok()


def test_injected_fusion_only_bug_is_blamed_on_the_fusion(monkeypatch):
    """Corrupt the generated source only for kernels that fuse several ops."""
    original = kernels.GENERATORS["pointwise"]

    def broken(group, *args):
        source = original(group, *args)
        if len(group.nodes) > 1:  # value lines only ("v3 = (x1 + x2)"), not the index math
            source.source = re.sub(r"(?m)^(\s+v\d+ = .*) \+ ", r"\1 - ", source.source)
        return source

    monkeypatch.setitem(kernels.GENERATORS, "pointwise", broken)
    report = check_fusion(patterns.add_relu_scale, precisions=["fp32"])
    assert not report.passed
    assert "the unfused kernels (one per op) match the reference" in str(report)
    assert "the error comes from the fusion" in str(report)


def test_max_kernels_is_checked():
    @pattern((5, 7), (7,))
    def two_outputs(x, b):
        return torch.softmax(x + b, dim=-1), torch.exp(x)

    report = check_fusion(two_outputs, precisions=["fp32"], max_kernels=0)
    assert not report.passed and "expected at most 0" in str(report)


def test_shapes_from_module_companion_and_argument(monkeypatch, capsys):
    module = types.ModuleType("companion_patterns")
    exec("SHAPES = {'double': [(3, 4)]}\ndef double(x):\n    return x * 2\n", module.__dict__)
    monkeypatch.setitem(sys.modules, "companion_patterns", module)
    assert pattern_graph(module.double).types["x"].shape == (3, 4)
    assert main(["fusion-check", "companion_patterns:double", "--precisions", "fp32"]) == 0
    assert main(["fusion-check", "companion_patterns:double", "--shapes", "5x2",
                 "--precisions", "fp32"]) == 0
    assert "inputs f32[5,2]" in capsys.readouterr().out

    def scale(x):
        return x * 3.0

    assert pattern_graph(scale, [(2, 3)]).types["x"].shape == (2, 3)
    with pytest.raises(InputError, match="@pattern"):
        pattern_graph(scale)
    assert parse_shapes("8x100,100,scalar") == [(8, 100), (100,), ()]
    with pytest.raises(InputError):
        parse_shapes("8by100")


def test_cli_exit_codes(capsys, monkeypatch):
    assert main(["fusion-check", "trident.models.patterns:scaled_softmax", "--seed", "3"]) == 0
    out = capsys.readouterr().out
    assert "fusion check passed" in out and "reduction_mul_softmax" in out
    monkeypatch.setitem(expr.BINARY, "mul", lambda a, b: f"({a} + {b})")
    assert main(["fusion-check", "trident.models.patterns:scaled_softmax",
                 "--precisions", "fp32"]) == 1
    assert "fusion check FAILED" in capsys.readouterr().out


def test_cli_onnx_pattern(tmp_path, capsys):
    import onnx
    import onnx.helper as h

    graph = h.make_graph([h.make_node("Add", ["x", "y"], ["s"]), h.make_node("Relu", ["s"], ["r"])],
                         "add_relu", [h.make_tensor_value_info("x", onnx.TensorProto.FLOAT, ["n", 9]),
                                      h.make_tensor_value_info("y", onnx.TensorProto.FLOAT, [9])],
                         [h.make_tensor_value_info("r", onnx.TensorProto.FLOAT, ["n", 9])])
    path = tmp_path / "add_relu.onnx"
    onnx.save(h.make_model(graph, opset_imports=[h.make_opsetid("", 17)]), path)
    assert main(["fusion-check", str(path), "--batch", "3", "--precisions", "fp32"]) == 0
    assert "f32[3,9]" in capsys.readouterr().out


@pytest.mark.gpu
def test_gpu_times_fused_against_unfused():
    report = check_fusion(patterns.bias_gelu)
    assert report.passed, str(report)
    for r in report.results:
        assert r.fused_ms > 0 and r.unfused_ms > 0
    assert "vs unfused" in str(report)
