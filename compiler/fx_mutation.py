"""In-place writes in an fx graph, made explicit as dataflow.

Dynamo and symbolic_trace record `out.mul_(g)` (or `x += y`, `F.relu(x, inplace=True)`, `x[i] = v`)
as a node whose later readers still name `out`. Run in order by torch that is right: the tensor
changed under them. A compiler that takes each node for a pure function of its arguments reads the
value from before the write (timm's NF-Nets scale each block's output with `out.mul_(gain)`, then
read `out`: 37% off, silently). `make_writes_explicit` points every reader after a write at the
write's result, so the graph says what torch does, for the importer and the partitioner alike
(a partition can no longer run a reader before a write left in torch).

Some writes cannot be made explicit that way, and the graph must then run in torch as a whole:
a write into a graph input, a weight or a constant (state outside the graph), and a write into
memory other nodes see through a view (their values change too). Aliasing is read from the fake
tensors dynamo records for every node (`meta["example_value"]`); a graph without them (symbolic
trace) is judged by the ops that make views.
"""
from __future__ import annotations

import functools
import inspect
import operator

import torch
import torch.fx
from torch.multiprocessing.reductions import StorageWeakRef

AUGMENTED_ASSIGNMENTS = {operator.iadd, operator.isub, operator.imul, operator.itruediv, operator.ifloordiv,
                         operator.imod, operator.ipow, operator.iand, operator.ior, operator.ixor,
                         operator.ilshift, operator.irshift, operator.imatmul}
# Tensor methods and torch functions whose result shares its input's memory (for graphs that
# carry no fake tensors to tell).
VIEW_NAMES = {"view", "view_as", "reshape", "reshape_as", "transpose", "permute", "t", "T", "mT", "expand",
              "expand_as", "unsqueeze", "squeeze", "flatten", "unflatten", "narrow", "select", "split",
              "split_with_sizes", "chunk", "unbind", "movedim", "swapaxes", "as_strided", "diagonal", "detach",
              "contiguous", "getitem", "__getitem__", "unfold", "real", "imag", "view_as_real", "view_as_complex"}
WRITE_OPS = ("call_function", "call_method")
# gm.meta key: the graph's writes are explicit already (a partition of a graph that was rewritten,
# whose writes into its inputs are the parent's, with every later reader pointed at them).
EXPLICIT = "trident_writes_explicit"


def assign(target: torch.Tensor, index, value) -> torch.Tensor:
    """`target[index] = value` that returns `target`: what `operator.setitem` becomes, so readers
    after it can name its result."""
    target[index] = value
    return target


def _name(target) -> str:
    if isinstance(target, torch._ops.OpOverload):
        return target.overloadpacket.__name__
    return target if isinstance(target, str) else getattr(target, "__name__", "")


@functools.lru_cache(maxsize=None)
def _inplace_position(target) -> int | None:
    """Where a function takes `inplace` positionally (F.hardtanh(x, -1, 1, True)), or None.
    Cached: reading a builtin's signature costs more than the rest of the pass."""
    try:
        names = list(inspect.signature(target).parameters)
    except (TypeError, ValueError):
        return None
    return names.index("inplace") if "inplace" in names else None


def _inplace_flag(node: torch.fx.Node) -> bool:
    """F.relu(x, inplace=True) and the other functions with an `inplace` argument."""
    if node.kwargs.get("inplace") is True:
        return True
    if node.op != "call_function" or len(node.args) < 2:
        return False
    try:
        position = _inplace_position(node.target)
    except TypeError:  # an unhashable target
        return False
    return position is not None and position < len(node.args) and node.args[position] is True


def writes_in_place(node: torch.fx.Node) -> bool:
    """Does the node write into its first argument (x.add_, x += y, aten.fill_, x[i] = v, relu
    with inplace=True)?"""
    if node.op not in WRITE_OPS:
        return False
    target = node.target
    if target in AUGMENTED_ASSIGNMENTS or target is operator.setitem or target is assign:
        return True
    name = _name(target)
    return (name.endswith("_") and not name.startswith("_")) or _inplace_flag(node)


def written_operand(node: torch.fx.Node) -> torch.fx.Node | None:
    """The node whose tensor `node` writes in place, or None."""
    if writes_in_place(node) and node.args and isinstance(node.args[0], torch.fx.Node):
        return node.args[0]
    return None


def example_value(node: torch.fx.Node):
    """The value dynamo (example_value) or export (val) recorded for `node`, or None."""
    return node.meta.get("example_value", node.meta.get("val"))


def _storage(node: torch.fx.Node):
    """The storage of the node's example value, or None where it has none to show: not a tensor,
    or a tensor inside a vmap (transformers 4.x builds its masks so), whose storage torch does
    not expose (the view ops then tell the aliases)."""
    value = example_value(node)
    if not isinstance(value, torch.Tensor):
        return None
    try:
        return StorageWeakRef(value.untyped_storage())
    except (NotImplementedError, RuntimeError):
        return None


def _root(node: torch.fx.Node) -> torch.fx.Node:
    """The node that made the tensor a chain of writes writes into."""
    while (base := written_operand(node)) is not None:
        node = base
    return node


class _Aliases:
    """Which nodes share a node's memory: by fake-tensor storage where the graph records it,
    else by the ops that make views."""

    def __init__(self, graph: torch.fx.Graph, order: dict):
        self.order = order
        self.groups: dict = {}
        for node in graph.nodes:
            storage = _storage(node)
            if storage is not None:
                self.groups.setdefault(storage, []).append(node)

    def members(self, root: torch.fx.Node) -> list[torch.fx.Node]:
        """The nodes that may share root's memory (root included)."""
        storage = _storage(root)
        if storage is not None:
            return self.groups.get(storage, [])
        viewed, node = [], root
        while _name(node.target) in VIEW_NAMES and node.args and isinstance(node.args[0], torch.fx.Node):
            node = node.args[0]
            viewed.append(node)
        return [root] + viewed + [u for u in root.users if _name(u.target) in VIEW_NAMES]

    def outside(self, root: torch.fx.Node) -> torch.fx.Node | None:
        """A graph input, weight or constant whose memory root shares (root itself, or what it
        views): writing there changes state the caller keeps."""
        return next((m for m in self.members(root) if m.op in ("placeholder", "get_attr")), None)

    def read_stale(self, root: torch.fx.Node, write: torch.fx.Node) -> torch.fx.Node | None:
        """A node other than `root` that holds root's memory from before `write` and is read after
        it (a view made earlier, or the tensor root is a view of): its readers would need the
        write too. None when there is none."""
        when = self.order[write]
        for m in self.members(root):
            if (m is not root and written_operand(m) is None and self.order.get(m, when) < when
                    and any(self.order.get(u, when + 1) > when for u in m.users)):
                return m
        return None


def _why_not(write: torch.fx.Node, root: torch.fx.Node, aliases: _Aliases) -> str | None:
    outside = aliases.outside(root)
    if outside is not None:
        held = "" if outside is root else f', which views "{outside.name}"'
        return (f'writes in place into "{root.name}"{held}: a graph input or weight (state kept '
                "outside the graph)")
    stale = aliases.read_stale(root, write)
    if stale is not None:
        return (f'writes in place into "{root.name}", whose memory "{stale.name}" shares (a view, or the '
                "tensor viewed) and is read after the write")
    return None


def make_writes_explicit(gm: torch.fx.GraphModule) -> list[tuple[torch.fx.Node, str]]:
    """Rewrites `gm` so every node that reads a tensor after an in-place write into it reads the
    write's result (torch runs the rewritten graph exactly as before: an in-place op returns the
    tensor it wrote). `x[i] = v` becomes `assign(x, i, v)`. Returns the writes that cannot be
    made explicit, each with why (the graph must then run in torch as it is); empty when every
    write was, and the graph is then marked EXPLICIT."""
    if gm.meta.get(EXPLICIT):
        return []
    graph = gm.graph
    order = {node: i for i, node in enumerate(graph.nodes)}
    aliases = _Aliases(graph, order)
    problems, changed = [], False
    for node in list(graph.nodes):
        base = written_operand(node)
        if base is None:
            continue
        why = _why_not(node, _root(base), aliases)
        if why is not None:
            problems.append((node, why))
            continue
        if node.target is operator.setitem:
            with graph.inserting_after(node):
                write = graph.call_function(assign, node.args, node.kwargs)
            write.meta = dict(node.meta)
            node.replace_all_uses_with(write)
            graph.erase_node(node)
            order[write] = order.pop(node)
            node = write
        position = order[node]
        readers = base.replace_all_uses_with(node, delete_user_cb=lambda user: user is not node
                                             and order.get(user, -1) > position)
        changed = changed or bool(readers) or node.target is assign
    if changed:
        gm.recompile()
    gm.meta[EXPLICIT] = not problems
    return problems


__all__ = ["EXPLICIT", "assign", "make_writes_explicit", "writes_in_place", "written_operand"]
