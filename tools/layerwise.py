"""Layer-wise accuracy debugging (as Polygraphy's `run --mark all`): every intermediate tensor the
engine computes is compared with an oracle's, and the first layer whose error exceeds the
tolerance is named.

    trident layerwise MODEL --precision fp16 [--oracle reference|onnxruntime] [--tol 1e-2]
                            [--plot errors.png] [--no-fuse]
    trident layerwise MODEL --precision int8 [--calibration model.calib | random:N]

What is compared: every value a step of the engine produces (for a fused kernel, the values it
stores; with --no-fuse every op is its own kernel, so every IR value is observable). Oracles:
- reference: trident's reference executor (torch, fp32) on the graph after the fp32 passes, so
  every value the engine computes has a counterpart of the same name (an fp16 cast is compared
  with the value it casts);
- onnxruntime (ONNX models): the model with every intermediate added as a graph output; values
  are matched by tensor name, or by the ONNX node that made them when a pass renamed them.
Errors: relative L2 (||got - oracle|| / ||oracle||) and max abs error, per layer.
"""
from __future__ import annotations

import argparse
from dataclasses import dataclass, field

import torch

from trident.compiler.errors import InputError
from trident.compiler.ir import Graph
from trident.tools.common import add_model_arguments, load_graph, output_path, pyplot, quantization_options

ORACLES = ("reference", "onnxruntime")
PASS_THROUGH = ("cast", "identity")  # ops whose output is the oracle's input value, converted


@dataclass
class LayerError:
    index: int            # order of computation (position in the table)
    step: int             # the engine step that produced it
    value: str            # the IR value
    op: str               # the op that computes it
    node: str             # that op's node name
    kernel: str           # the step's kernel (or "torch")
    shape: tuple
    oracle_value: str     # the oracle's name for the same tensor
    rel_l2: float
    max_abs: float
    ok: bool


@dataclass
class LayerwiseReport:
    precision: str
    oracle: str
    tol: float
    fused: bool
    layers: list[LayerError]
    unmatched: list[str] = field(default_factory=list)  # values with no oracle counterpart

    @property
    def first_bad(self) -> LayerError | None:
        return next((layer for layer in self.layers if not layer.ok), None)

    @property
    def passed(self) -> bool:
        return self.first_bad is None

    def table(self) -> str:
        head = (f"{'#':>3} {'step':>4} {'value':34s} {'op':12s} {'kernel':32s} "
                f"{'rel L2':>9s} {'max abs':>9s}")
        lines = [head, "-" * len(head)]
        first = self.first_bad
        for layer in self.layers:
            mark = "  <-- first above tolerance" if layer is first else \
                ("  !" if not layer.ok else "")
            lines.append(f"{layer.index:3d} {layer.step:4d} {layer.value[:34]:34s} "
                         f"{layer.op[:12]:12s} {layer.kernel[:32]:32s} {layer.rel_l2:9.2e} "
                         f"{layer.max_abs:9.2e}{mark}")
        return "\n".join(lines)

    def __str__(self) -> str:
        out = [f"layer-wise comparison: trident {self.precision} "
               f"({'fused' if self.fused else 'one kernel per op'}) vs {self.oracle}; "
               f"{len(self.layers)} layers, tolerance {self.tol:g} (relative L2)",
               self.table()]
        if self.unmatched:
            out.append(f"not compared (no {self.oracle} counterpart): {', '.join(self.unmatched)}")
        first = self.first_bad
        if first is None:
            out.append(f"every layer is within tolerance (largest relative L2 error "
                       f"{max((la.rel_l2 for la in self.layers), default=0.0):.2e})")
        else:
            out.append(f"first layer above tolerance: #{first.index} {first.value} "
                       f"({first.op} node {first.node}, step {first.step}, kernel {first.kernel}): "
                       f"relative L2 error {first.rel_l2:.2e} > {self.tol:g}, max abs error "
                       f"{first.max_abs:.2e}")
        return "\n".join(out)

    def plot(self, path) -> None:
        """Relative L2 error per layer (log scale), the tolerance, the first layer above it."""
        plt = pyplot()
        n = len(self.layers)
        fig, ax = plt.subplots(figsize=(max(8, min(30, 0.25 * n + 4)), 5.5), dpi=110)
        xs = list(range(n))
        ys = [max(layer.rel_l2, 1e-12) for layer in self.layers]
        ax.semilogy(xs, ys, "o-", ms=3, lw=1, color="tab:blue", label="relative L2 error")
        ax.axhline(self.tol, color="tab:red", ls="--", lw=1, label=f"tolerance {self.tol:g}")
        first = self.first_bad
        if first is not None:
            ax.semilogy([first.index], [max(first.rel_l2, 1e-12)], "o", ms=10, mfc="none",
                        mec="tab:red", mew=2, label=f"first above: {first.value}")
        step = max(1, n // 60)
        ax.set_xticks(xs[::step])
        ax.set_xticklabels([layer.value[:24] for layer in self.layers][::step], rotation=90,
                           fontsize=7)
        ax.set_ylabel("relative L2 error vs " + self.oracle)
        ax.set_title(f"trident {self.precision} layer-wise error "
                     f"({'fused' if self.fused else 'one kernel per op'})", fontsize=10)
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="best")
        fig.tight_layout()
        fig.savefig(path)
        plt.close(fig)


# ------------------------------------------------------------------------- oracles ----
def reference_values(graph: Graph, inputs) -> dict[str, torch.Tensor]:
    """Every value of the graph after trident's fp32 passes, by the reference executor."""
    from trident.compiler.passes import PassOptions, run_pipeline
    from trident.compiler.reference import run_reference

    oracle = run_pipeline(graph.copy(), PassOptions("fp32"))
    return run_reference(oracle, list(inputs), keep_all=True)


def with_all_outputs(model):
    """A copy of an ONNX model whose outputs include every intermediate tensor."""
    import onnx

    proto = onnx.load(model) if not isinstance(model, onnx.ModelProto) else model
    proto = onnx.ModelProto.FromString(proto.SerializeToString())
    known = {o.name for o in proto.graph.output}
    for node in proto.graph.node:
        for name in node.output:
            if name and name not in known:
                proto.graph.output.append(onnx.ValueInfoProto(name=name))
                known.add(name)
    return proto


def onnxruntime_values(model, input_names, inputs) -> tuple[dict[str, torch.Tensor], object]:
    """Every intermediate of an ONNX model by onnxruntime (CPU); also returns the model."""
    try:
        import onnxruntime as ort
    except ImportError:
        raise InputError("--oracle onnxruntime needs onnxruntime: pip install onnxruntime") from None
    proto = with_all_outputs(model)
    options = ort.SessionOptions()
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    session = ort.InferenceSession(proto.SerializeToString(), options,
                                   providers=["CPUExecutionProvider"])
    feed = {n: x.detach().cpu().numpy() for n, x in zip(input_names, inputs)}
    names = [o.name for o in session.get_outputs()]
    values = dict(zip(names, session.run(names, feed)))
    return {k: torch.from_numpy(v.copy()) if hasattr(v, "shape") else torch.tensor(v)
            for k, v in values.items()}, proto


def _onnx_node_outputs(proto) -> dict[str, list[str]]:
    return {n.name: list(n.output) for n in proto.graph.node if n.name}


# ---------------------------------------------------------------------- comparison ----
def errors(got: torch.Tensor, ref: torch.Tensor) -> tuple[float, float]:
    """(relative L2 error, max abs error); non-finite differences count as infinite."""
    g, r = got.detach().cpu().double(), ref.detach().cpu().double()
    diff = (g - r).nan_to_num(nan=float("inf"), posinf=float("inf"), neginf=float("inf"))
    if diff.numel() == 0:
        return 0.0, 0.0
    d = diff.norm().item()
    ref_norm = r.nan_to_num().norm().item()
    return (d / ref_norm if ref_norm > 0 else d), diff.abs().max().item()


def capture_steps(engine, inputs) -> list[tuple[int, object, str, torch.Tensor]]:
    """Run the engine step by step; (step index, step, value, copy) for every value a kernel or
    torch step produces (views are skipped: they show their source's data again)."""
    seen = []

    def on_step(k, step, run, env):
        run()
        if step.kind != "view":
            seen.extend((k, step, v, env[v].detach().clone()) for v in step.outputs)

    engine.run_steps(*[x.to(engine.device) for x in inputs], on_step=on_step)
    return seen


def compare_layers(graph: Graph, inputs, precision: str = "fp16", oracle: str = "reference",
                   onnx_model=None, tol: float = 1e-2, fuse_ops: bool = True,
                   program=None, quantization=None) -> LayerwiseReport:
    """Compile `graph` (or use `program`, compiled from it), run it on `inputs` keeping every
    intermediate, and compare each with the oracle's (see the module docstring).
    quantization: int8's QuantOptions (calibration), as compile_graph takes them."""
    from trident.compiler.build import compile_graph, engine_from

    if oracle not in ORACLES:
        raise InputError(f"oracle must be one of {ORACLES}, got {oracle!r}")
    if program is None:
        program = compile_graph(graph.copy(), precision, fuse_ops=fuse_ops,
                                quantization=quantization)
    engine = engine_from(program)
    node_names: dict[str, list[str]] = {}
    if oracle == "reference":
        truth = reference_values(graph, inputs)
    else:
        if onnx_model is None:
            raise InputError("--oracle onnxruntime compares with an ONNX model; this model is "
                             "not one (use --oracle reference)")
        truth, proto = onnxruntime_values(onnx_model, graph.inputs, inputs)
        truth.update((n, x.cpu()) for n, x in zip(graph.inputs, inputs))  # casts of inputs
        node_names = _onnx_node_outputs(proto)
    made_by = {o: n for s in program.steps for n in s.group.nodes for o in n.outputs}
    produced = set(made_by)

    def counterpart(value: str) -> str | None:
        for _ in range(8):  # follow casts and copies back to the value they convert
            if value in truth:
                return value
            node = made_by.get(value)
            if node is None:
                return None
            outs = node_names.get(node.name, [])
            if len(outs) == 1 and outs[0] in truth and outs[0] not in produced:
                return outs[0]  # a pass renamed the ONNX node's output
            if node.op not in PASS_THROUGH:
                return None
            value = node.inputs[0]
        return None

    layers, unmatched = [], []
    for k, step, value, got in capture_steps(engine, inputs):
        name = counterpart(value)
        ref = truth.get(name) if name else None
        if ref is None or tuple(ref.shape) != tuple(got.shape):
            unmatched.append(value)
            continue
        rel, max_abs = errors(got, ref)
        node = made_by[value]
        kernel = step.name if step.kind == "kernel" else "torch"
        ok = rel <= tol  # NaN and inf fail
        layers.append(LayerError(len(layers), k, value, node.op, node.name or node.op, kernel,
                                 tuple(got.shape), name, rel, max_abs, ok))
    return LayerwiseReport(precision, oracle, tol, fuse_ops, layers, unmatched)


# ------------------------------------------------------------------------- command ----
def register(subparsers) -> None:
    p = subparsers.add_parser("layerwise", help="compare every intermediate tensor with an "
                              "oracle; name the first layer above tolerance",
                              description=__doc__)
    add_model_arguments(p)
    p.add_argument("--oracle", default="reference", choices=ORACLES, help="what to compare with")
    p.add_argument("--tol", type=float, default=1e-2, help="relative L2 tolerance")
    p.add_argument("--plot", metavar="ERRORS.png", help="plot the error of every layer")
    p.add_argument("--seed", type=int, default=0, help="random-input seed (ONNX models)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    loaded = load_graph(args.model, args.batch, args.seed)
    quantization = quantization_options(loaded, args.precision, args.calibration)
    report = compare_layers(loaded.graph, loaded.inputs, args.precision, args.oracle,
                            loaded.onnx, args.tol, not args.no_fuse, quantization=quantization)
    print(report)
    if args.plot:
        report.plot(output_path(args.plot))
        print(f"wrote {args.plot}")
    return 0 if report.passed else 1
