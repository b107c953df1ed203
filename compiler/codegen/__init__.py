"""Codegen: fused groups -> a Program of kernel launches, views and torch fallbacks, and from it
the launch plan the runtime runs (Program.plan())."""
from __future__ import annotations

import dataclasses
import re

from trident.compiler.autotune.cache import canonical
from trident.compiler.codegen.attention import generate as generate_attention
from trident.compiler.codegen.kernels import GENERATORS, KernelSource
from trident.compiler.codegen.grouped_mm import generate as generate_grouped_mm
from trident.compiler.codegen.mlp import generate as generate_mlp
from trident.compiler.codegen.scan import generate as generate_scan
from trident.compiler.codegen.scatter import generate as generate_scatter
from trident.compiler.codegen.sort import generate as generate_sort
from trident.compiler.codegen.dynamic_kernel import render_dynamic
from trident.compiler.codegen.program import (Layout, Program, Step, is_nhwc, nhwc_strides,
                                              output_layout, torch_output_layouts, view_layouts)
from trident.compiler.codegen.spec import kernel_spec, parse
from trident.compiler.templates import reads_any_layout
from trident.compiler.codegen.writer import dense_strides
from trident.compiler.errors import EngineFileError, TridentError
from trident.compiler.fusion import Group
from trident.compiler.group_kinds import POINTWISE_DTYPES
from trident.compiler.ir import Graph, Node

NEEDS_NHWC = ("conv", "pool", "horizontal")
# Generators in modules of their own, built on kernels.py (which cannot import them).
OWN_MODULE = {"attention": generate_attention, "scan": generate_scan, "sort": generate_sort,
              "mlp": generate_mlp, "grouped_mm": generate_grouped_mm, "scatter": generate_scatter}


def generate(graph: Graph, groups: list[Group]) -> Program:
    """Decide every value's layout and turn each group into a step (kernel, view or torch).

    The graph and groups become the program's: layout copies are added to them in place.
    """
    consumers = graph.consumers()
    group_of = {id(n): g for g in groups for n in g.nodes}
    layouts: dict[str, Layout] = {}
    for name in graph.inputs:
        t = graph.types[name]
        layouts[name] = Layout(tuple(t.shape), dense_strides(t.shape), t.dtype)
    for name, tensor in graph.constants.items():
        layouts[name] = Layout(tuple(tensor.shape), tuple(tensor.stride()), tensor.dtype)
    program = Program(graph, [], layouts, dict(graph.constants))
    names: dict[str, int] = {}
    for group in groups:
        if group.kind in NEEDS_NHWC:
            _ensure_nhwc(group, program, names)
        outputs = group.outputs(graph, consumers)
        feeds = any(_feeds_nhwc(o, graph, consumers, group_of) for o in outputs)
        transposed = {o for o in outputs if _transposed_feeds_nhwc(o, graph, consumers, group_of)}
        _plan_group(group, outputs, feeds, program, names, consumers, transposed)
    return program


def _feeds_nhwc(value: str, graph: Graph, consumers: dict[str, list[Node]], group_of: dict) -> bool:
    """Does a conv or pool read `value`, directly or through reshapes that only add or drop unit
    dims (a 1-D conv's [N, C, L] -> [N, C, 1, L], compiler/passes/conv1d.py)?"""
    for reader in consumers.get(value, []):
        group = group_of.get(id(reader))
        if group is None:
            continue
        if group.kind in NEEDS_NHWC:
            return True
        if (group.kind == "view" and reader.op == "reshape"
                and _squeezed(graph.types[value].shape) == _squeezed(graph.types[reader.outputs[0]].shape)
                and _feeds_nhwc(reader.outputs[0], graph, consumers, group_of)):
            return True
    return False


def _transposed_feeds_nhwc(value: str, graph: Graph, consumers: dict[str, list[Node]], group_of: dict) -> bool:
    """Is `value` read by one transpose alone, whose result a conv or pool reads?"""
    readers = consumers.get(value, [])
    return (len(readers) == 1 and readers[0].op == "transpose"
            and _feeds_nhwc(readers[0].outputs[0], graph, consumers, group_of))


def _squeezed(shape) -> tuple:
    return tuple(d for d in shape if d != 1)


def _plan_group(group: Group, outputs: list[str], feeds_nhwc: bool, program: Program,
                names: dict[str, int], consumers: dict[str, list[Node]],
                transposed_feeds_nhwc: set[str] = frozenset()) -> None:
    graph, layouts = program.graph, program.layouts
    node = group.nodes[0]
    if group.kind == "view":
        viewed = view_layouts(node, layouts[node.inputs[0]])
        if viewed is None and node.op == "reshape" and \
                graph.types[node.inputs[0]].dtype in POINTWISE_DTYPES:
            # A reshape of a permuted tensor (a channel shuffle, Swin's window partition):
            # one copy kernel makes it dense, and the reshape is a view of the copy.
            why = f"{node.name or node.op}: not a view of its input, copied dense first"
            dense = _copy_to_layout(node.inputs[0], "dense", why, program, names)
            # A node of the plan's own (the graph's keeps reading the value it names).
            node = dataclasses.replace(node, inputs=(dense,) + tuple(node.inputs[1:]))
            group = Group("view", [node], group.reasons + [why])
            viewed = view_layouts(node, layouts[dense])
        if viewed is not None:
            layouts.update(zip(node.outputs, viewed))
            program.steps.append(Step("view", list(node.inputs), list(node.outputs), group))
            return
        group.kind = "torch"
        group.reasons.append(f"{node.name or node.op}: not expressible as a view; torch copies it")
    if group.kind == "torch":
        layouts.update(zip(node.outputs, torch_output_layouts(node, layouts, graph)))
        program.steps.append(Step("torch", list(node.inputs), list(node.outputs), group))
        return
    for value in outputs:
        layouts[value] = output_layout(group, value, graph, layouts, feeds_nhwc, consumers,
                                       value in transposed_feeds_nhwc)
    source = _kernel(group.kind, group, graph, layouts, outputs, _unique(group, names))
    for packed, (tensor, layout) in source.packed.items():
        program.constants[packed] = tensor
        layouts[packed] = layout
    program.steps.append(Step("kernel", [a for a in source.args if a not in outputs], outputs,
                              group, source))


def _ensure_nhwc(group: Group, program: Program, names: dict[str, int]) -> None:
    """Conv and pool tiles read dense NHWC: copy any other layout first (one pointwise kernel)."""
    anchors = [m.anchor for m in group.members] or [group.anchor]
    node = anchors[0]
    value = node.inputs[0]
    layout = program.layouts.get(value)
    if layout is None or is_nhwc(layout) or reads_any_layout(node, program.graph):
        return  # (no layout yet: a cast fused in front of the conv produces it in registers)
    copy = _copy_to_layout(value, "nhwc", f"{value}: copied to NHWC for {node.name or node.op}",
                           program, names)
    for anchor in anchors:  # the siblings of a horizontal group share the input
        reads_copy = dataclasses.replace(anchor, inputs=(copy,) + tuple(anchor.inputs[1:]))
        _read_instead(group, anchor, reads_copy)


def _read_instead(group: Group, old: Node, new: Node) -> None:
    """The group computes `new` where it computed `old`: a node of the plan's own, so the graph
    the passes left (what explain and the reference executor read) keeps its node."""
    for g in [group] + group.members:
        g.nodes = [new if n is old else n for n in g.nodes]


def _copy_to_layout(value: str, layout_name: str, why: str, program: Program,
                    names: dict[str, int]) -> str:
    """The name of `value` copied to a "dense" (row-major) or "nhwc" layout: one pointwise
    kernel, appended the first time a copy to that layout is asked for."""
    copy = f"{value}__{layout_name}"
    if copy in program.layouts:
        return copy
    layout = program.layouts[value]
    strides = nhwc_strides(layout.shape) if layout_name == "nhwc" else dense_strides(layout.shape)
    program.graph.types[copy] = program.graph.types[value]
    program.layouts[copy] = Layout(layout.shape, tuple(strides), layout.dtype)
    copy_group = Group("pointwise", [Node("identity", (value,), (copy,), {},
                                          f"{value}_to_{layout_name}")], [why])
    source = _kernel("pointwise", copy_group, program.graph, program.layouts, [copy],
                     _unique(copy_group, names))
    program.steps.append(Step("kernel", [value], [copy], copy_group, source))
    return copy


def _unique(group: Group, names: dict[str, int]) -> str:
    base = re.sub(r"\W+", "_", f"{group.kind}_{group.name}")[:48]
    names[base] = names.get(base, -1) + 1
    return f"{base}_{names[base]}" if names[base] else base


def _kernel(kind: str, group: Group, graph: Graph, layouts: dict[str, Layout], outputs: list[str],
            name: str) -> KernelSource:
    """The generated kernel, its source ending with the PROBLEM it declares: the template and sizes
    the autotuner searches over, readable (as a literal) from an engine file's kernel alone."""
    spec = kernel_spec(kind, group, graph, layouts, outputs, name)
    generator = OWN_MODULE.get(kind) or GENERATORS[kind]
    source = generator(group, graph, layouts, outputs, name)
    declared = (f"\n\n# What trident's autotuner searches configs for (a literal; see "
                f"compiler/autotune/tuner.py)\nPROBLEM = {canonical(source.problem)!r}\n")
    return dataclasses.replace(source, source=source.source + declared, spec=spec)


def render(spec, where: str) -> KernelSource:
    """The kernel a spec (codegen/spec.py) describes, written by this trident's generators; a
    shape-generic kernel's spec holds one spec per probe of its grid (codegen/dynamic_kernel.py),
    and its kernel's `sizes` are the symbols its launch() takes. EngineFileError naming `where`
    when the spec is malformed or describes no kernel these generators write."""
    if isinstance(spec, dict) and "probes" in spec:
        return render_dynamic(spec, where, _render_one)
    return _render_one(spec, where)


def _render_one(spec, where: str) -> KernelSource:
    if isinstance(spec, dict) and "probes" in spec:
        raise EngineFileError(f"engine file: {where}: a probe's spec should describe one kernel")
    kind, group, graph, layouts, outputs, name = parse(spec, where)
    if kind not in OWN_MODULE and kind not in GENERATORS:
        raise EngineFileError(f"engine file: {where}.kind: no kernel generator {kind!r}")
    try:
        return _kernel(kind, group, graph, layouts, outputs, name)
    except TridentError as e:
        raise EngineFileError(f"engine file: {where}: its kernel cannot be generated ({e})") from None
    except (KeyError, IndexError, TypeError, ValueError, AttributeError, ZeroDivisionError,
            RuntimeError, AssertionError, OverflowError, StopIteration) as e:
        raise EngineFileError(f"engine file: {where}: its kernel cannot be generated "
                              f"({type(e).__name__}: {e})") from None


__all__ = ["Program", "Step", "generate", "render"]
