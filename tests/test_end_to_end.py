"""The in-repo models end to end: imported through ONNX and through FX, compiled to fused Triton
kernels, run (interpreter on the CPU, the GPU where present) and compared with torch FP32."""
import warnings

import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.build import BuildTrace
from trident.models import MODELS

TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}  # relative L2 error of the output


def export_onnx(model, inputs, path):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, inputs, str(path), dynamo=False, opset_version=17)
    return str(path)


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("frontend", ["onnx", "fx"])
@pytest.mark.parametrize("name", ["resnet_tiny", "bert_tiny", "mlp"])
def test_model_matches_torch(name, frontend, precision, tmp_path):
    build, make_inputs = MODELS[name]
    model = build().eval()
    inputs = make_inputs(2)
    with torch.no_grad():
        expected = model(*inputs)
    source = export_onnx(model, inputs, tmp_path / f"{name}.onnx") if frontend == "onnx" else model
    trace = BuildTrace()
    engine = build_engine(source, precision, example_inputs=inputs, trace=trace)
    device = engine.device
    got = engine(*[x.to(device) for x in inputs])[0].float().cpu()
    err = ((got - expected).norm() / expected.norm()).item()
    assert err <= TOLERANCE[precision], f"{name} via {frontend} at {precision}: {err:.2e}"
    assert engine.num_kernels < len(trace.program.graph.nodes)  # fusion happened
