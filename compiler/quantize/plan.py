"""INT8 builds: the options build_engine takes, and the pipeline pass that calibrates, decides
each layer's precision and rewrites the graph (compiler/passes runs it after the float rewrites,
before lowering to fp16).

    build_engine(model, precision="int8", calibration=batches,    # or "model.calib" (a cache)
                 calibrator="entropy2",                            # minmax | entropy | entropy2 | percentile
                 percentile=99.99,
                 int8_exclude=["fc", "layer4.*"],                  # layers kept in FP16
                 layer_precisions={"conv1": "fp16"},               # per-layer overrides
                 int8_tolerance=0.02,                              # accuracy budget (relative L2)
                 calibration_cache="model.calib")                  # where to write the cache

Layers are named by IR node name, output value, or the module path of their weight ("layer1.0.conv1",
"fc"); names may be fnmatch patterns. Layers with no int8 kernel run in FP16 (mixed precision).
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Sequence

from trident.compiler import config
from trident.compiler.errors import TridentError
from trident.compiler.ir import Graph
from trident.compiler.quantize.cache import read_cache, write_cache
from trident.compiler.quantize.calibrate import as_batches, calibrate, rebatch
from trident.compiler.quantize.calibrators import DEFAULT_PERCENTILE, get_calibrator
from trident.compiler.quantize.qdq import notice
from trident.compiler.quantize.rewrite import (candidate_layers, layer_aliases, layer_key,
                                               layer_name, matches, quantize_layers,
                                               residual_branches)

LAYER_PRECISIONS = ("int8", "fp16")


@dataclass
class QuantReport:
    """What an int8 build decided (kept on BuildTrace.quantization)."""
    calibrator: str = ""
    thresholds: dict[str, float] = field(default_factory=dict)
    cache_path: Path | None = None
    precisions: dict[str, str] = field(default_factory=dict)   # layer name -> "int8" | "fp16"
    reasons: dict[str, str] = field(default_factory=dict)      # layer name -> why fp16
    search: object = None                                      # sensitivity.Search, if a budget was set


@dataclass
class QuantOptions:
    calibration: object = None
    calibrator: str = "entropy2"
    percentile: float = DEFAULT_PERCENTILE
    int8_exclude: Sequence[str] = ()
    layer_precisions: dict = field(default_factory=dict)
    int8_tolerance: float | None = None
    calibration_cache: str | Path | None = None
    quantize_residuals: bool = True
    report: QuantReport = field(default_factory=QuantReport)
    # Decisions of this build's first graph, reused when one build compiles the model again
    # (a dynamic-batch engine compiles one graph per batch size): same thresholds, same layers.
    decided: dict = field(default_factory=dict, repr=False, init=False)

    @classmethod
    def from_kwargs(cls, calibration=None, **kwargs) -> "QuantOptions":
        known = {f.name for f in fields(cls) if f.init and f.name not in ("calibration", "report")}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise TridentError(f"build_engine: unknown option(s) {', '.join(unknown)}; int8 options "
                               f"are {', '.join(sorted(known))}")
        options = cls(calibration=calibration, **kwargs)
        options.validate()
        return options

    def validate(self) -> None:
        get_calibrator(self.calibrator, self.percentile)
        if isinstance(self.int8_exclude, str):
            self.int8_exclude = [self.int8_exclude]
        for name, p in self.layer_precisions.items():
            if p not in LAYER_PRECISIONS:
                extra = (" (int8 engines run every non-int8 layer in fp16)" if p == "fp32" else "")
                raise TridentError(f'layer_precisions["{name}"] = {p!r}: choose one of '
                                   f"{', '.join(LAYER_PRECISIONS)}{extra}")
        if self.int8_tolerance is not None and not self.int8_tolerance > 0:
            raise TridentError(f"int8_tolerance must be > 0, got {self.int8_tolerance}")


def default_cache_path(graph: Graph, calibrator: str) -> Path:
    digest = hashlib.sha256(str(graph).encode()).hexdigest()[:12]
    return config.CACHE_DIR / "calibration" / f"{graph.name}-{digest}-{calibrator}.calib"


def quantize_pass(options: QuantOptions) -> Callable[[Graph], Graph]:
    """The pipeline pass for one int8 build (it fills options.report)."""
    def quantize(graph: Graph) -> Graph:
        return _quantize(graph, options)
    return quantize


def _check_patterns(graph: Graph, layers, options: QuantOptions) -> None:
    patterns = list(options.int8_exclude) + list(options.layer_precisions)
    unmatched = [p for p in patterns if not any(matches(n, [p]) for n in layers)]
    if unmatched:
        names = ", ".join(_describe(n) for n in layers[:40])
        raise TridentError(f"int8 layer override(s) {', '.join(map(repr, unmatched))} match no "
                           f"conv/matmul layer; layers: {names}{' ...' if len(layers) > 40 else ''}")


def _describe(node) -> str:
    """"convolution_3 (layer1.0.conv2)": the node name and the module path of its weight."""
    modules = [a for a in layer_aliases(node) if a not in (node.name, node.outputs[0])]
    return layer_name(node) + (f" ({', '.join(modules)})" if modules else "")


def _overrides(layers, options: QuantOptions) -> tuple[set[str], set[str]]:
    """(layer keys forced to fp16, layer keys forced to int8) by int8_exclude / layer_precisions."""
    forced_fp16, forced_int8 = set(), set()
    for node in layers:
        for pattern, p in options.layer_precisions.items():
            if matches(node, [pattern]):
                (forced_int8 if p == "int8" else forced_fp16).add(layer_key(node))
        if matches(node, options.int8_exclude):
            forced_fp16.add(layer_key(node))
    return forced_fp16, forced_int8


def _thresholds(graph: Graph, options: QuantOptions, calibrator, needed: list[str]):
    """(thresholds, calibration batches or None): from the cache file, or calibrated on the data
    (then written to the cache file)."""
    report, cal = options.report, options.calibration
    if isinstance(cal, (str, Path)):
        fields, thresholds = read_cache(cal)
        report.cache_path = Path(cal)
        report.calibrator = fields.get("calibrator", report.calibrator)
        return thresholds, None
    batches = rebatch(graph, as_batches(cal))
    thresholds = calibrate(graph, batches, needed, calibrator)
    path = Path(options.calibration_cache) if options.calibration_cache else \
        default_cache_path(graph, calibrator.name)
    extra = {"percentile": calibrator.percentile} if calibrator.name == "percentile" else {}
    report.cache_path = write_cache(path, thresholds, calibrator.name, **extra)
    notice(f"calibration cache ({calibrator.name}, {len(thresholds)} tensors) written to {path}")
    return thresholds, batches


def _within_budget(graph: Graph, layers, selected: set[str], forced_int8: set[str], batches,
                   options: QuantOptions, build) -> set[str]:
    """int8_tolerance: the layers that stay int8 (sensitivity.py), with the report filled in."""
    from trident.compiler.quantize.sensitivity import choose_int8_layers

    if batches is None:
        raise TridentError("int8_tolerance needs calibration data (batches), not only a cache")
    report = options.report
    order = [layer_key(n) for n in layers if layer_key(n) in selected]
    selected, search = choose_int8_layers(graph, order, batches, options.int8_tolerance, build,
                                          forced=forced_int8 & selected)
    report.search = search
    names = {layer_key(n): layer_name(n) for n in layers}
    for key in search.kept_fp16:
        report.reasons[names[key]] = f"int8_tolerance: sensitivity {search.sensitivity.get(key, 0):.3g}"
    notice(f"int8_tolerance {options.int8_tolerance:g}: {len(search.kept_fp16)} layer(s) kept in "
           f"fp16, output error {search.error:.4g} (all int8: {search.error_all_int8:.4g})")
    return selected


def _quantize(graph: Graph, options: QuantOptions) -> Graph:
    report = options.report
    layers = candidate_layers(graph)
    _check_patterns(graph, layers, options)
    if not layers:
        return graph

    def build(chosen: set[str], thresholds) -> Graph:
        return quantize_layers(graph, chosen, thresholds, residuals=options.quantize_residuals)

    forced_fp16, forced_int8 = _overrides(layers, options)
    wanted = [n for n in layers if layer_key(n) not in forced_fp16]
    for n in layers:
        report.precisions[layer_name(n)] = "fp16"
        if layer_key(n) in forced_fp16:
            report.reasons[layer_name(n)] = "excluded by the user"
    needed = list(dict.fromkeys(n.inputs[0] for n in wanted))
    if options.quantize_residuals:  # their thresholds let downsample branches store int8
        needed += [v for v in residual_branches(graph, wanted) if v not in needed]
    decided = options.decided
    if decided and set(needed) <= set(decided["thresholds"]):  # this build's graph at another batch
        return build(decided["selected"] & {layer_key(n) for n in wanted}, decided["thresholds"])
    calibrator = get_calibrator(options.calibrator, options.percentile)
    report.calibrator = calibrator.name
    if options.calibration is None:
        if any(n.op in ("qconv", "qmatmul", "quantize_linear", "dequantize_linear") for n in graph.nodes):
            for n in layers:  # an explicit Q/DQ model: layers without Q/DQ scales stay fp16
                report.reasons.setdefault(layer_name(n), "no Q/DQ scales in the model, no calibration")
            return graph
        raise TridentError("precision='int8' needs calibration=<iterable of input batches> or "
                           "calibration=<cache file>, or a model with QuantizeLinear/DequantizeLinear "
                           "nodes")
    thresholds, batches = _thresholds(graph, options, calibrator, needed)
    report.thresholds = {k: v for k, v in thresholds.items() if k in needed}
    missing = [n for n in wanted if n.inputs[0] not in thresholds]
    if missing:
        notice(f"calibration cache has no threshold for the inputs of {len(missing)} layer(s) "
               f"({', '.join(layer_name(n) for n in missing[:8])}); they run in fp16")
        for n in missing:
            report.reasons[layer_name(n)] = "no threshold in the calibration cache"
    selected = {layer_key(n) for n in wanted if n.inputs[0] in thresholds}
    if options.int8_tolerance is not None:
        selected = _within_budget(graph, layers, selected, forced_int8, batches, options,
                                  lambda chosen: build(chosen, thresholds))
    for n in layers:
        report.precisions[layer_name(n)] = "int8" if layer_key(n) in selected else "fp16"
    decided.update(thresholds=thresholds, selected=set(selected))
    return build(selected, thresholds)


def int8_graph(graph: Graph, calibration=None, **options) -> Graph:
    """The graph an int8 engine's kernels are generated from (after every pass, before fusion),
    for checking an engine, or measuring int8 accuracy, with the reference executor."""
    from trident.compiler.passes import PassOptions, run_pipeline

    quantization = QuantOptions.from_kwargs(calibration, **options)
    return run_pipeline(graph, PassOptions("int8", quantize=quantize_pass(quantization)))
