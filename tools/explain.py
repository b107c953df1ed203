"""`trident explain MODEL`: the IR after import and after each pass, the fusion groups with the
reasons they were formed or refused, and the generated Triton source of each kernel; `--html`
writes the same as one self-contained page with the graph drawn."""
from __future__ import annotations

import argparse
from dataclasses import dataclass

from trident.compiler.build import BuildTrace, compile_graph, import_model
from trident.compiler.codegen.program import Program
from trident.compiler.ir import Graph
from trident.tools.common import add_model_arguments, load_graph, output_path, quantization_options


def register(subparsers) -> None:
    p = subparsers.add_parser("explain", help="show the IR, each pass, fusion groups and kernels")
    add_model_arguments(p)
    p.add_argument("--passes", action="store_true", help="print the IR after every pass")
    p.add_argument("--no-source", action="store_true", help="omit generated kernel sources")
    p.add_argument("--torch-compile", action="store_true",
                   help="explain torch.compile(backend='trident') instead: its partitions, kernel "
                        "launches, and what runs in torch and why")
    p.add_argument("--html", metavar="REPORT.html",
                   help="also write everything (every pass, every source) as one self-contained "
                        "HTML page with the graph drawn, nodes coloured by fusion group")
    p.set_defaults(func=run)


@dataclass
class Explanation:
    """Everything `explain` shows: what each stage of the build produced."""
    imported: Graph
    trace: BuildTrace
    program: Program
    precision: str
    fused: bool = True

    @property
    def num_kernels(self) -> int:
        return sum(s.kind in ("kernel", "torch") for s in self.program.steps)

    def summary(self) -> str:
        return f"{len(self.program.graph.nodes)} nodes -> {self.num_kernels} kernels"


def explain_graph(graph: Graph, precision: str = "fp16", fuse_ops: bool = True,
                  quantization=None) -> Explanation:
    trace = BuildTrace(imported=graph)
    program = compile_graph(graph.copy(), precision, trace, fuse_ops, quantization)
    return Explanation(graph, trace, program, precision, fuse_ops)


def step_label(step) -> str:
    return step.kernel.name if step.kernel else step.group.nodes[0].op


def _tactic(step) -> str:
    """A kernel step whose GEMM product comes from cuBLAS (kernels/blas.py) says so."""
    if step.kernel is None or not step.kernel.config.get("BLAS"):
        return ""
    if "return library_gemm(" in step.kernel.source:  # a bias at most: cuBLAS does it all
        return "  (cuBLAS)"
    return "  (product: cuBLAS; epilogue: Triton)"


def render_text(ex: Explanation, passes: bool = False, source: bool = True) -> str:
    out = ["== imported IR ==", str(ex.imported)]
    if passes:
        for name, g in ex.trace.after_pass:
            out += [f"== after {name} ==", str(g)]
    else:
        out += ["== IR after passes ==", str(ex.program.graph)]
    out.append("== fusion groups ==" + ("" if ex.fused else " (fusion disabled)"))
    for k, group in enumerate(ex.trace.groups):
        out.append(f"[{k}] {group.kind}: {', '.join(n.name or n.op for n in group.nodes)}")
        if ex.precision == "int8":
            from trident.compiler.quantize.report import group_precision
            out.append(f"      precision: {group_precision(group, ex.program.graph)}")
        out += [f"      - {r}" for r in group.reasons]
    out.append("== steps ==")
    for step in ex.program.steps:
        out.append(f"{step.kind:7s} {step_label(step)}: {', '.join(step.inputs)} -> "
                   f"{', '.join(step.outputs)}{_tactic(step)}")
    if source:
        for step in ex.program.steps:
            if step.kernel is not None:
                out += [f"== kernel {step.kernel.name} ==", step.kernel.source]
    out.append(ex.summary())
    return "\n".join(out)


def explain(model, example_inputs=None, precision: str = "fp16", passes: bool = False,
            source: bool = True, fuse_ops: bool = True) -> str:
    ex = explain_graph(import_model(model, example_inputs), precision, fuse_ops)
    return render_text(ex, passes, source)


def run(args: argparse.Namespace) -> int:
    if args.torch_compile:
        from trident.tools.explain_compile import explain_torch_compile

        print(explain_torch_compile(args.model, args.batch, args.precision))
        return 0
    loaded = load_graph(args.model, args.batch)
    quantization = quantization_options(loaded, args.precision, args.calibration)
    ex = explain_graph(loaded.graph, args.precision, not args.no_fuse, quantization)
    print(render_text(ex, args.passes, not args.no_source))
    if args.html:
        from trident.tools.explain_html import render_html

        output_path(args.html).write_text(render_html(ex), encoding="utf-8")
        print(f"wrote {args.html}")
    return 0
