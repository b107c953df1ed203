"""`trident compile` and `trident run` end to end on the bundled tiny models."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch

from trident.models import MODELS
from trident.tools.cli import main

# torch.onnx.export's TorchScript exporter announces its own deprecation
pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def export_onnx(name: str, path, dynamic: bool):
    build, make_inputs = MODELS[name]
    model, inputs = build(), make_inputs(2)
    names = ["input_ids"] if name.startswith("bert") else ["x"]
    axes = {n: {0: "batch"} for n in names} if dynamic else None
    torch.onnx.export(model, inputs, str(path), dynamo=False, input_names=names, dynamic_axes=axes)
    return model, make_inputs


def test_compile_and_run_onnx_with_a_batch_profile(tmp_path, capsys):
    model, make_inputs = export_onnx("resnet_tiny", tmp_path / "resnet_tiny.onnx", dynamic=True)
    engine_path = tmp_path / "resnet_tiny.engine"
    assert main(["compile", str(tmp_path / "resnet_tiny.onnx"), "-o", str(engine_path),
                 "--precision", "fp32", "--batch", "1:2:4"]) == 0
    out = capsys.readouterr().out
    assert "optimization profile batch min 1, opt 2, max 4" in out and "arena" in out
    report = tmp_path / "run.json"
    assert main(["run", str(engine_path), "--batch", "1", "--iterations", "2", "--warmup", "0",
                 "--json", str(report)]) == 0
    out = capsys.readouterr().out
    for needle in ("latency (ms): min", "median", "p90", "p99", "throughput:", "memory: arena",
                   "input x: float32[1, 3, 32, 32]"):
        assert needle in out
    figures = json.loads(report.read_text())
    assert figures["batch"] == 1 and figures["latency"]["runs"] == 2
    assert figures["memory"]["arena_bytes"] > 0 and figures["memory"]["weights_bytes"] > 0
    # the engine file computes what the model does
    from trident.compiler.build import load_engine

    x = make_inputs(1)
    with torch.no_grad():
        torch.testing.assert_close(load_engine(engine_path)(*x)[0], model(*x), rtol=1e-4, atol=1e-4)


def test_compile_symbolic_batch_defaults_to_one(tmp_path, capsys):
    export_onnx("bert_tiny", tmp_path / "bert.onnx", dynamic=True)
    assert main(["compile", str(tmp_path / "bert.onnx"), "-o", str(tmp_path / "bert.engine"),
                 "--precision", "fp32"]) == 0
    out = capsys.readouterr().out
    assert "building for batch 1" in out and "input input_ids: int64[1, 16]" in out
    assert main(["run", str(tmp_path / "bert.engine"), "--iterations", "1"]) == 0
    assert "throughput" in capsys.readouterr().out


def test_compile_torch_export_program_and_profile(tmp_path, capsys):
    build, make_inputs = MODELS["mlp"]
    torch.export.save(torch.export.export(build(), make_inputs(2)), str(tmp_path / "mlp.pt2"))
    assert main(["compile", str(tmp_path / "mlp.pt2"), "-o", str(tmp_path / "mlp.engine")]) == 0
    assert "fp32, static shapes" in capsys.readouterr().out  # the default precision
    assert main(["run", str(tmp_path / "mlp.engine"), "--iterations", "1", "--profile"]) == 0
    out = capsys.readouterr().out
    assert "matmul" in out  # the per-kernel table (or the message that the profiler is missing)


def test_compile_errors_are_clear(tmp_path, capsys):
    assert main(["compile", str(tmp_path / "missing.onnx"), "-o", str(tmp_path / "x.engine")]) == 2
    assert "no such file" in capsys.readouterr().err
    (tmp_path / "junk.engine").write_bytes(b"junk")
    assert main(["run", str(tmp_path / "junk.engine")]) == 2
    assert "not a trident engine file" in capsys.readouterr().err
    assert main(["compile", "mlp", "--batch", "4:2:1", "-o", str(tmp_path / "x.engine")]) == 2
    assert "min <= opt <= max" in capsys.readouterr().err


def test_console_entry_point(tmp_path):
    """`python -m trident.tools run` (what the `trident` script runs) on a compiled file."""
    engine = tmp_path / "multihead.engine"
    assert main(["compile", "multihead", "-o", str(engine), "--precision", "fp32"]) == 0
    env = dict(os.environ, TRIDENT_QUIET="1")
    result = subprocess.run([sys.executable, "-m", "trident.tools", "run", str(engine),
                             "--iterations", "1"], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "latency" in result.stdout
