"""`trident explain MODEL --torch-compile`: what torch.compile(backend="trident") makes of the
model: each graph dynamo hands over, its partitions, kernel launches, and every node or
partition that runs in torch with the reason (compiler/dynamo.py's CompileReport)."""
from __future__ import annotations

import warnings

import torch

from trident.compiler.errors import InputError
from trident.tools.common import load_model


def compile_reports(model, inputs, precision: str) -> list:
    _, reports = compiled_once(model, inputs, precision)
    torch._dynamo.reset()
    return reports


def compiled_once(model, inputs, precision: str) -> tuple:
    """(torch.compile(model, backend=trident), the reports of its graphs) after one call on
    `inputs`. The caller resets dynamo when done with it."""
    from trident.compiler.dynamo import recording_backend

    backend, reports = recording_backend({"precision": precision})
    torch._dynamo.reset()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the reports say it all
        compiled(*inputs)
    return compiled, reports


def torch_model(spec: str, batch: int, precision: str, command: str) -> tuple[torch.nn.Module, list]:
    """(model in eval mode, example inputs) for a command's --torch-compile, or an InputError."""
    model, inputs = load_model(spec, batch)
    if inputs is None:
        raise InputError(f"--torch-compile needs a torch model (module:function, a bundled or a zoo "
                         f"model), not the ONNX file {spec}")
    if precision == "int8":
        raise InputError(f"--torch-compile: int8 needs calibration batches; {command} fp32 or fp16")
    return model.eval(), list(inputs)


def explain_torch_compile(spec: str, batch: int, precision: str) -> str:
    model, inputs = torch_model(spec, batch, precision, "explain")
    reports = compile_reports(model, inputs, precision)
    lines = [f"== torch.compile(backend='trident'), {precision}: {len(reports)} graph(s) =="]
    for k, report in enumerate(reports):
        lines += [f"[graph {k}]", report.render()]
    total = sum(len(r.in_torch) + r.torch_steps for r in reports)
    lines.append(f"{sum(r.num_kernels for r in reports)} kernel launches; {total} op(s) or "
                 "partition(s) in torch")
    return "\n".join(lines)
