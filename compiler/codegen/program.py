"""From fused groups to a Program: every value's static layout, and the ordered launch steps.

Shapes are static, so the layout (strides) of every value is decided here, once:
- conv and pool groups write channels-last (NHWC) outputs, as their kernels want;
- a pointwise group writes NHWC if it reads an NHWC tensor of its own shape or feeds a conv/pool;
- everything else is contiguous;
- a view (reshape, transpose, slice, split, expand) takes whatever strides the view op gives on a
  meta tensor with its input's strides; a reshape that cannot be a view becomes a copy kernel.
Kernels bake these strides into their source; the runtime passes tensors laid out this way.

A Program keeps what the compiler knows of each step (its fusion group, the kernel's problem for
the autotuner and the profiler); `Program.plan()` is the launch plan the runtime runs without
any of that (compiler/ir/plan.py).
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Sequence

import torch

from trident.compiler.codegen.writer import dense_strides
from trident.compiler.errors import where
from trident.compiler.fusion import Group
from trident.compiler.group_kinds import INDEXED_OPS, VIEW_OPS
from trident.compiler.ir import Graph, Node
from trident.compiler.ir.plan import (DynamicInfo, IndexCheck, KernelStep, Layout, Plan, TorchStep,
                                      ViewStep)
from trident.compiler.ops import evaluate


@dataclass
class Step:
    kind: str                     # "kernel" | "view" | "torch"
    inputs: list[str]
    outputs: list[str]
    group: Group
    kernel: "object | None" = None  # codegen.kernels.KernelSource for kind == "kernel"
    sizes: tuple[str, ...] = ()     # a shape-generic kernel (codegen/dynamic.py): the sizes launch takes


@dataclass
class Program:
    graph: Graph
    steps: list[Step]
    layouts: dict[str, Layout]
    constants: dict[str, torch.Tensor] = field(default_factory=dict)  # packed, kernel-ready
    dynamic: DynamicInfo | None = None  # a profiled program's templates (codegen/dynamic.py)

    def plan(self) -> Plan:
        """The launch plan of this program: layouts, steps, the constants its steps read."""
        steps = [_plan_step(s, self.graph.inputs) for s in self.steps]
        needed = set(self.graph.inputs).union(self.graph.outputs, *(s.inputs for s in steps),
                                              *(s.outputs for s in steps))
        dynamic = self.dynamic
        if dynamic is not None:
            dynamic = dataclasses.replace(dynamic, layouts={v: t for v, t in dynamic.layouts.items()
                                                            if v in needed}, _cache={})
        return Plan(self.graph.name, list(self.graph.inputs), list(self.graph.outputs), steps,
                    {v: lay for v, lay in self.layouts.items() if v in needed},
                    {v: t for v, t in self.constants.items() if v in needed}, dynamic,
                    index_bounds(self.graph))


def index_bounds(graph: Graph) -> dict[str, int]:
    """Graph inputs used as gather indices (token ids), and the size of the dim they index."""
    bounds: dict[str, int] = {}
    for node in graph.nodes:
        if node.op == "gather" and len(node.inputs) > 1 and node.inputs[1] in graph.inputs:
            size = graph.types[node.inputs[0]].shape[node.attrs.get("axis", 0)]
            if isinstance(size, int):
                name = node.inputs[1]
                bounds[name] = min(size, bounds.get(name, size))
    return bounds


def index_checks(nodes: Sequence[Node], inputs: Sequence[str]) -> tuple[IndexCheck, ...]:
    """The index tensors a kernel computing `nodes` gathers through, for the engine to check
    before it launches: all but the token ids (a Gather's graph-input indices, which
    index_bounds checks once per run). Fusion starts a group at every gather, so its indices
    come from memory, where the engine can read them."""
    checks = []
    for node in nodes:
        if node.op not in INDEXED_OPS or (node.op == "gather" and node.inputs[1] in inputs):
            continue
        checks.append(IndexCheck(node.inputs[1], node.inputs[0], node.attrs.get("axis", 0), where(node)))
    return tuple(dict.fromkeys(checks))


def _plan_step(step: Step, inputs: Sequence[str]):
    if step.kind == "kernel":
        k = step.kernel
        return KernelStep(k.name, k.source, tuple(k.args), tuple(step.outputs), k.config, step.sizes,
                          k.spec, index_checks(step.group.nodes, inputs))
    if step.kind == "view":
        node = step.group.nodes[0]
        return ViewStep(tuple(step.inputs), tuple(step.outputs),
                        Node(node.op, tuple(node.inputs), tuple(node.outputs), dict(node.attrs), node.name))
    node = step.group.nodes[0]
    return TorchStep(Node(node.op, tuple(node.inputs), tuple(node.outputs), dict(node.attrs), node.name),
                     step.group.reasons[0] if step.group.reasons else "")


def transposed_dense_strides(shape, perm, nhwc: bool = False) -> tuple[int, ...]:
    """Strides for `shape` such that permuting by `perm` gives a dense (contiguous) tensor, or
    (nhwc, rank 4) a dense NHWC one."""
    permuted = [shape[p] for p in perm]
    dense = nhwc_strides(permuted) if nhwc and len(shape) == 4 else dense_strides(permuted)
    strides = [0] * len(shape)
    for i, p in enumerate(perm):
        strides[p] = dense[i]
    return tuple(strides)


def nhwc_strides(shape) -> tuple[int, ...]:
    n, c, h, w = shape
    return (h * w * c, 1, w * c, c)


def is_nhwc(layout: Layout) -> bool:
    return len(layout.shape) == 4 and _same_strides(layout.shape, layout.strides,
                                                     nhwc_strides(layout.shape))


def _same_strides(shape, a, b) -> bool:
    """Strides equal on every dim that has more than one element (others never move)."""
    return all(x == y for s, x, y in zip(shape, a, b) if s != 1)


def _meta(layout: Layout) -> torch.Tensor:
    return torch.empty_strided(layout.shape, layout.strides, dtype=layout.dtype, device="meta")


def same_elements(a: Layout, b: Layout) -> bool:
    """Do the two layouts address the same elements? (A size-1 dim's stride never matters.)"""
    return (tuple(a.shape), a.dtype, a.offset) == (tuple(b.shape), b.dtype, b.offset) and all(
        n == 1 or x == y for n, x, y in zip(a.shape, a.strides, b.strides))


def view_layouts(node: Node, source: Layout) -> list[Layout] | None:
    """The layouts a view op gives, or None if the op would have to copy."""
    x = _meta(source)
    a = node.attrs
    try:
        if node.op == "reshape":
            outs = [x.view(tuple(a["shape"]))]
        elif node.op == "transpose":
            outs = [x.permute(tuple(a["perm"]))]
        elif node.op == "expand":
            outs = [evaluate(node, [x])[0]]
        elif node.op == "identity":
            outs = [x]
        elif node.op == "split":
            outs = list(torch.split(x, list(a["sizes"]), dim=a["axis"]))
        elif node.op == "slice":
            if any(s < 0 for s in a["steps"]):
                return None  # negative strides: torch cannot view them
            index = [slice(None)] * x.dim()
            for start, end, axis, step in zip(a["starts"], a["ends"], a["axes"], a["steps"]):
                index[axis] = slice(start, end, step)
            outs = [x[tuple(index)]]
        else:
            return None
    except RuntimeError:
        return None
    return [Layout(tuple(o.shape), tuple(o.stride()), o.dtype, o.storage_offset() + 0)
            for o in outs]


STRIDED_READERS = ("attention", "matmul")  # templates that read their operands through any strides


def only_strided_reads(node: Node, source: Layout, consumers: dict[str, list[Node]]) -> bool:
    """Does view op `node`, reading a tensor stored as `source`, give views, and so every view
    op after it, with attention or matmul reading what they end in? Then how the tensor is
    stored costs its readers no copy and no uncoalesced elementwise pass."""
    outs = view_layouts(node, source)
    if outs is None:
        return False
    for value, layout in zip(node.outputs, outs):
        for reader in consumers.get(value, []):
            if reader.op in VIEW_OPS:
                if not only_strided_reads(reader, layout, consumers):
                    return False
            elif reader.op not in STRIDED_READERS:
                return False
    return True


def output_layout(group: Group, value: str, graph: Graph, layouts: dict[str, Layout],
                  feeds_nhwc: bool, consumers: dict[str, list[Node]] | None = None,
                  transposed_feeds_nhwc: bool = False) -> Layout:
    """transposed_feeds_nhwc: the value's one reader is a transpose whose result a conv or pool
    reads."""
    t = graph.types[value]
    shape = tuple(t.shape)
    contiguous = Layout(shape, dense_strides(shape), t.dtype)
    readers = (consumers or {}).get(value, [])
    if (group.kind not in ("conv", "pool", "horizontal") and len(readers) == 1
            and readers[0].op == "transpose" and value not in graph.outputs):
        # Store in the order the transpose reads, so its result is dense and a reshape after it
        # (attention's [B,H,S,D] -> [B,S,H*D]) is a free view instead of a copy; dense NHWC when
        # a conv reads it (ConvNeXt's downsampling LayerNorm, [N,H,W,C] permuted to [N,C,H,W]
        # for the 2x2 conv: stored [N,H,W,C] as computed, not copied to NHWC after). A GEMM whose
        # views only attention or GEMMs read keeps its rows in order, so cuBLAS can write them
        # (nn.MultiheadAttention's input projection: its rows made sequence-first again by a
        # transpose, then split into heads that attention reads as strides).
        if group.kind == "matmul" and only_strided_reads(readers[0], contiguous, consumers):
            return contiguous
        return Layout(shape, transposed_dense_strides(shape, readers[0].attrs["perm"], transposed_feeds_nhwc),
                      t.dtype)
    if len(shape) == 3 and group.kind == "pointwise" and feeds_nhwc:
        # [N, C, L] stored length-major: the NHWC [N, C, 1, L] a lowered 1-D conv reads, as a view.
        return Layout(shape, transposed_dense_strides(shape, (0, 2, 1)), t.dtype)
    if len(shape) != 4:
        return contiguous
    nhwc = Layout(shape, nhwc_strides(shape), t.dtype)
    if group.kind in ("conv", "pool", "horizontal"):
        return nhwc
    if group.kind == "pointwise":
        reads_nhwc = any(i in layouts and layouts[i].shape == shape and is_nhwc(layouts[i])
                         and not _same_strides(shape, layouts[i].strides, dense_strides(shape))
                         for i in group.inputs())
        return nhwc if (reads_nhwc or feeds_nhwc) else contiguous
    return contiguous


def torch_output_layouts(node: Node, layouts: dict[str, Layout], graph: Graph) -> list[Layout]:
    """Predict the strides torch gives an op run in place, from its meta kernel."""
    metas = [_meta(layouts[i]) for i in node.inputs]
    outs = evaluate(node, metas, [graph.types[o] for o in node.outputs])
    return [Layout(tuple(o.shape), tuple(o.stride()), o.dtype) for o in outs]
