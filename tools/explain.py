"""`trident explain MODEL`: the IR after import and after each pass, the fusion groups with the
reasons they were formed or refused, and the generated Triton source of each kernel."""
from __future__ import annotations

import argparse

from trident.compiler.build import BuildTrace, compile_graph, import_model


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="show the IR, each pass, fusion groups and kernels")
    p.add_argument("model", help="an ONNX file, or module:function returning (nn.Module, inputs)")
    p.add_argument("--precision", default="fp16", choices=["fp32", "fp16", "int8"])
    p.add_argument("--passes", action="store_true", help="print the IR after every pass")
    p.add_argument("--no-source", action="store_true", help="omit generated kernel sources")
    p.set_defaults(func=run)


def load_model(spec: str):
    """An ONNX path, or `module:function` returning (model, example_inputs)."""
    if spec.endswith(".onnx") or ":" not in spec:
        return spec, None
    import importlib

    module, fn = spec.split(":", 1)
    return getattr(importlib.import_module(module), fn)()


def explain(model, example_inputs=None, precision: str = "fp16", passes: bool = False,
            source: bool = True) -> str:
    trace = BuildTrace()
    graph = import_model(model, example_inputs)
    program = compile_graph(graph, precision, trace)
    out = ["== imported IR ==", str(graph)]
    if passes:
        for name, g in trace.after_pass:
            out += [f"== after {name} ==", str(g)]
    else:
        out += ["== IR after passes ==", str(program.graph)]
    out.append("== fusion groups ==")
    for k, group in enumerate(trace.groups):
        out.append(f"[{k}] {group.kind}: {', '.join(n.name or n.op for n in group.nodes)}")
        out += [f"      - {r}" for r in group.reasons]
    out.append("== steps ==")
    for step in program.steps:
        label = step.kernel.name if step.kernel else step.group.nodes[0].op
        out.append(f"{step.kind:7s} {label}: {', '.join(step.inputs)} -> {', '.join(step.outputs)}")
    if source:
        for step in program.steps:
            if step.kernel is not None:
                out += [f"== kernel {step.kernel.name} ==", step.kernel.source]
    kernels = sum(s.kind in ("kernel", "torch") for s in program.steps)
    out.append(f"{len(program.graph.nodes)} nodes -> {kernels} kernels")
    return "\n".join(out)


def run(args: argparse.Namespace) -> int:
    model, inputs = load_model(args.model)
    print(explain(model, inputs, args.precision, args.passes, not args.no_source))
    return 0
