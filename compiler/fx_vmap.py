"""A traced torch.vmap of a scalar function, lowered to broadcasting.

transformers 4.x builds its attention masks as a nest of torch.vmap over index aranges
(batch x head x query x key) around a function of scalar indices: comparisons, logical ands, a
lookup in the padding mask. Dynamo traces the nest as functorch calls around that function:

    _vmap_increment_nesting(size, randomness)    enter a level (outermost first)
    _add_batch_dim(x, 0, level)                  x[i] is the level's i-th example
    ... the function, on one example ...
    _remove_batch_dim(y, level, size, 0)         stack the level's results along dim 0
    _vmap_decrement_nesting()                    leave it (innermost first)

Inside, values are functorch's batched tensors, which nothing but the vmap around them can unwrap,
so such a region otherwise runs in torch, whole (compiler/dynamo.py). Where the function is
elementwise on scalars, the nest means broadcasting: give each level a dim of its own (level d of
D is dim d - 1 of D), let `_add_batch_dim` put its 1-D operand on its level's dim, run the
function's ops as they are on those tensors (broadcasting does what vmap would), and let the
outermost `_remove_batch_dim` expand the result to the levels' sizes. The region becomes plain
torch ops that trident converts.

Lowered only when every step is of that kind (otherwise the region is left as it is): one chain
of levels of sizes known at build (in a shape-generic graph dynamo makes them symbolic, and the
aranges they batch have no converter either: the region stays in torch), batch dims in and out
at 0, each batched operand a 1-D tensor of its level's size, every value the function computes a
scalar per example, and the function's ops elementwise or a full index (one scalar index per dim)
into a tensor from outside.

A second kind is lowered too: one level over an elementwise function of whole tensors, every
batched operand of one shape, batched along dim 0 and stacked back along dim 0 (torch's generic
associative_scan runs its combine function so on the CPU: Mamba's selective scan). Applying an
elementwise function to each example and stacking the results is applying it to the stack, so
`_add_batch_dim` and `_remove_batch_dim` are identities there; the function may read 0-d tensors
and numbers from outside, which broadcast alike either way.
"""
from __future__ import annotations

import operator

import torch
import torch.fx

from trident.compiler.fx_mutation import example_value

ENTER, LEAVE = "_vmap_increment_nesting", "_vmap_decrement_nesting"
ADD, REMOVE = "_add_batch_dim", "_remove_batch_dim"
NO_OPS = ("lazy_load_decompositions",)
ELEMENTWISE_METHODS = {
    "add", "sub", "mul", "div", "neg", "abs", "gt", "lt", "ge", "le", "eq", "ne", "to", "bool", "int", "long",
    "float", "logical_and", "logical_or", "logical_not", "logical_xor", "bitwise_and", "bitwise_or", "__and__",
    "__or__", "__xor__", "__invert__", "__rand__", "__ror__", "__add__", "__sub__", "__rsub__", "__mul__",
    "__neg__", "__floordiv__", "__mod__", "remainder", "new_ones", "new_zeros", "new_full", "where",
}
ELEMENTWISE_FUNCTIONS = {
    operator.add, operator.sub, operator.mul, operator.truediv, operator.floordiv, operator.mod, operator.neg,
    operator.gt, operator.lt, operator.ge, operator.le, operator.eq, operator.ne, operator.and_, operator.or_,
    operator.xor, operator.invert, torch.where, torch.logical_and, torch.logical_or, torch.logical_not,
    torch.bitwise_and, torch.bitwise_or, torch.eq, torch.ne, torch.gt, torch.lt, torch.ge, torch.le,
}
INDEXING = {torch.ops.aten.index, torch.ops.aten.index.Tensor}


def _name(node: torch.fx.Node) -> str:
    return getattr(node.target, "__name__", str(node.target)) if node.op == "call_function" else ""


def _functorch(node: torch.fx.Node, name: str) -> bool:
    module = str(getattr(node.target, "__module__", "") or "")
    return node.op == "call_function" and "functorch" in module and _name(node) == name


def lower_vmaps(gm: torch.fx.GraphModule) -> int:
    """Lower every region of `gm` that qualifies (see the module doc); returns how many."""
    lowered = 0
    nodes = list(gm.graph.nodes)
    i = 0
    while i < len(nodes):
        if _functorch(nodes[i], ENTER):
            end = _region_end(nodes, i)
            if end is None:
                break
            region = nodes[i:end + 1]
            planned = _plan(region)
            if planned is not None:
                _apply(gm.graph, region, *planned)
                lowered += 1
            i = end + 1
        else:
            i += 1
    if lowered:
        for node in list(gm.graph.nodes):  # functorch's loaders of its decompositions: no value
            if any(_functorch(node, name) for name in NO_OPS) and not node.users:
                gm.graph.erase_node(node)
        gm.graph.lint()
        gm.recompile()
    return lowered


def _region_end(nodes: list, start: int) -> int | None:
    depth = 0
    for j in range(start, len(nodes)):
        depth += _functorch(nodes[j], ENTER) - _functorch(nodes[j], LEAVE)
        if depth == 0:
            return j
    return None


class _Refuse(Exception):
    """The region is not a vmap of a scalar function: leave it as it is."""


def _plan(region: list) -> tuple[dict, dict] | None:
    """({node: (how, detail)}, {node: lowered fake value}) for the region, or None where it does
    not qualify. how: "drop", "reshape" (to detail), "keep", "identity" or "expand" (to detail)."""
    for planner in (_Planner(region), _StackPlanner(region)):
        try:
            return planner.run(), planner.values
        except Exception:  # noqa: BLE001 - _Refuse, or a fake op that fails: try the next kind
            continue
    return None  # the region stays in torch


class _Planner:
    def __init__(self, region: list):
        self.region = region
        self.inside = set(region)
        self.sizes = [n.args[0] for n in region if _functorch(n, ENTER)]
        self.levels: dict[int, int] = {}  # functorch level -> depth (1-based)
        self.values: dict[torch.fx.Node, object] = {}  # the lowered region's fake values
        self.batched: set[torch.fx.Node] = set()

    def run(self) -> dict:
        entered = [n for n in self.region if _functorch(n, ENTER)]
        if not all(isinstance(s, int) and s >= 0 for s in self.sizes) or \
                self.region.index(entered[-1]) > min(self.region.index(n) for n in self.region
                                                     if _functorch(n, LEAVE)):
            raise _Refuse("not one chain of levels")
        mode = self._fake_mode()
        plan, depth = {}, 0
        with mode:
            for node in self.region:
                if _functorch(node, ENTER):
                    depth += 1
                    plan[node] = ("drop", None)
                elif _functorch(node, LEAVE):
                    depth -= 1
                    plan[node] = ("drop", None)
                elif any(_functorch(node, name) for name in NO_OPS):
                    plan[node] = ("drop", None)
                elif _functorch(node, ADD):
                    plan[node] = self._add(node, depth)
                elif _functorch(node, REMOVE):
                    plan[node] = self._remove(node, depth)
                else:
                    plan[node] = self._body(node)
        final = [n for n in self.region if plan[n][0] == "expand"]
        if len(final) != 1 or any(u not in self.inside for n in self.region if n is not final[0] for u in n.users):
            raise _Refuse("a value leaves the region other than its result")
        return plan

    def _fake_mode(self):
        """The fake-tensor mode of the values the region reads (dynamo's)."""
        outside = [example_value(a) for n in self.region for a in n.all_input_nodes if a not in self.inside]
        modes = [v.fake_mode for v in outside if getattr(v, "fake_mode", None) is not None]
        if not modes:
            raise _Refuse("no fake values to follow")
        return modes[0]

    def _value(self, arg):
        if isinstance(arg, torch.fx.Node):
            if arg in self.values:
                return self.values[arg]
            if arg in self.inside:
                raise _Refuse(f"{arg.name} has no lowered value")
            value = example_value(arg)
            if not isinstance(value, torch.Tensor) or torch._C._functorch.is_batchedtensor(value):
                raise _Refuse(f"{arg.name}: no plain tensor value")
            return value
        if isinstance(arg, (list, tuple)):
            return type(arg)(self._value(a) for a in arg)
        return arg

    def _add(self, node, depth: int):
        x, in_dim, level = node.args
        size = self.sizes[depth - 1]
        if in_dim != 0 or x in self.batched or self.levels.setdefault(level, depth) != depth:
            raise _Refuse("a batch dim other than 0, or of an outer level")
        value = self._value(x)
        if tuple(value.shape) != (size,):
            raise _Refuse("a batched operand that is not one index per example")
        shape = [1] * len(self.sizes)
        shape[depth - 1] = size
        self.values[node] = value.reshape(shape)
        self.batched.add(node)
        return ("reshape", tuple(shape))

    def _remove(self, node, depth: int):
        y, level, size, out_dim = node.args
        if out_dim != 0 or self.levels.get(level, depth) != depth or size != self.sizes[depth - 1]:
            raise _Refuse("a result stacked off dim 0, or out of level order")
        if depth > 1:
            self.values[node] = self._value(y)
            self.batched.add(node)
            return ("identity", None)
        self.values[node] = torch.broadcast_to(self._value(y), tuple(self.sizes)).contiguous()
        return ("expand", tuple(self.sizes))

    def _body(self, node):
        if node.op == "call_method" and node.target in ELEMENTWISE_METHODS:
            if node.target.startswith("new_") and tuple(node.args[1]) != ():
                raise _Refuse("a new tensor per example that is not a scalar")
            run = lambda *a, **k: getattr(a[0], node.target)(*a[1:], **k)  # noqa: E731
        elif node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
            run = node.target
        elif node.op == "call_function" and (node.target in INDEXING or node.target is operator.getitem):
            source, indices = node.args
            if not isinstance(indices, (tuple, list)) or source in self.batched or \
                    len(indices) != self._value(source).dim() or \
                    not all(isinstance(i, torch.fx.Node) for i in indices):
                raise _Refuse("an index that is not one scalar per dim of a tensor from outside")
            run = node.target
        else:
            raise _Refuse(f"{node.format_node()}: not elementwise")
        before = example_value(node)
        if isinstance(before, torch.Tensor) and before.dim() != 0:
            raise _Refuse("a value per example that is not a scalar")
        self.values[node] = run(*self._value(node.args), **self._value(node.kwargs))
        if any(isinstance(a, torch.fx.Node) and a in self.batched for a in node.all_input_nodes):
            self.batched.add(node)
        return ("keep", None)


class _StackPlanner(_Planner):
    """One level over an elementwise function of whole tensors (the module doc's second kind)."""

    def run(self) -> dict:
        if len(self.sizes) != 1 or not isinstance(self.sizes[0], int):
            raise _Refuse("not one level of a known size")
        self.example_shape: tuple | None = None
        plan = {}
        with self._fake_mode():
            for node in self.region:
                if any(_functorch(node, name) for name in (ENTER, LEAVE) + NO_OPS):
                    plan[node] = ("drop", None)
                elif _functorch(node, ADD):
                    plan[node] = self._add_whole(node)
                elif _functorch(node, REMOVE):
                    plan[node] = self._remove_whole(node)
                else:
                    plan[node] = self._elementwise(node)
        leaving = [u for n in self.region if plan[n][0] != "drop" and not _functorch(n, REMOVE)
                   for u in n.users if u not in self.inside]
        if leaving:
            raise _Refuse("a batched value leaves the region")
        return plan

    def _per_example(self, shape) -> None:
        shape = tuple(shape)
        if self.example_shape not in (None, shape):
            raise _Refuse("values of different shapes per example")
        self.example_shape = shape

    def _add_whole(self, node):
        x, in_dim, _ = node.args
        value = self._value(x)
        if in_dim != 0 or x in self.inside or value.dim() == 0 or value.shape[0] != self.sizes[0]:
            raise _Refuse("a batched operand that is not a stack along dim 0 from outside")
        self._per_example(value.shape[1:])
        self.values[node] = value
        self.batched.add(node)
        return ("identity", None)

    def _remove_whole(self, node):
        y, _, size, out_dim = node.args
        if out_dim != 0 or size != self.sizes[0] or y not in self.batched:
            raise _Refuse("a result stacked off dim 0")
        self.values[node] = self.values[y]
        return ("identity", None)

    def _elementwise(self, node):
        if node.op == "call_method" and node.target in ELEMENTWISE_METHODS and not node.target.startswith("new_"):
            run = lambda *a, **k: getattr(a[0], node.target)(*a[1:], **k)  # noqa: E731
        elif node.op == "call_function" and node.target in ELEMENTWISE_FUNCTIONS:
            run = node.target
        else:
            raise _Refuse(f"{node.format_node()}: not elementwise")
        for arg in node.all_input_nodes:
            if arg not in self.batched and self._value(arg).dim() != 0:
                raise _Refuse("a tensor from outside that is not 0-d")
        before = example_value(node)
        if not isinstance(before, torch.Tensor):
            raise _Refuse("a value that is not a tensor")
        self._per_example(before.shape)
        self.values[node] = run(*self._value(node.args), **self._value(node.kwargs))
        self.batched.add(node)
        return ("keep", None)


def _apply(graph: torch.fx.Graph, region: list, plan: dict, values: dict) -> None:
    """Rewrite the region as its plan says; every value it keeps or makes gets its lowered fake
    value (the partitioner and the importer read them)."""
    for node in region:
        how, detail = plan[node]
        if how == "keep":
            node.meta["example_value"] = values[node]
        elif how == "identity":
            node.replace_all_uses_with(node.args[0])
        elif how in ("reshape", "expand"):
            with graph.inserting_before(node):
                if how == "reshape":
                    new = graph.call_method("reshape", (node.args[0], detail))
                else:
                    wide = graph.call_method("expand", (node.args[0], *detail))
                    wide.meta["example_value"] = values[node]
                    new = graph.call_method("contiguous", (wide,))
            new.meta["example_value"] = values[node]
            node.replace_all_uses_with(new)
    for node in reversed(region):
        if plan[node][0] != "keep":
            graph.erase_node(node)
