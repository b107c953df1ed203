"""In-place writes in an fx graph, made explicit as dataflow.

Dynamo and symbolic_trace record `out.mul_(g)` (or `x += y`, `F.relu(x, inplace=True)`, `x[i] = v`)
as a node whose later readers still name `out`. Run in order by torch that is right: the tensor
changed under them. A compiler that takes each node for a pure function of its arguments reads the
value from before the write (timm's NF-Nets scale each block's output with `out.mul_(gain)`, then
read `out`: 37% off, silently). `make_writes_explicit` points every reader after a write at the
write's result, so the graph says what torch does, for the importer and the partitioner alike
(a partition can no longer run a reader before a write left in torch).

A write into a view made by basic indexing (`k[..., :d].copy_(k_nope)`: DeepSeek's keys,
`x[1:] += y`: Gemma 3n's predictions) changes the tensor viewed as well: it is written through,
`x = assign(x, index, write)` after it, and every view of x read after the write is taken again
from that result.

A write into a graph input (a buffer dynamo lifted: transformers' static KV cache, written with
`keys.index_copy_(2, positions, k)`) is state the caller keeps. Where the caller asks
(`inputs_written`), it is made explicit as any other, and the input's final value becomes an
extra output of the graph (`return_written_inputs`), for the caller to copy back into the input
after the run, as AOTAutograd's functionalization does.

Some writes cannot be made explicit, and the graph must then run in torch as a whole: a write into
a weight or a constant, into a graph input other than through basic indexing (or where the
caller does not ask), and a write into memory other nodes see through a view other than basic
indexing (their values change too). Aliasing is read from the fake
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
# placeholder meta key: an input whose value may change from call to call (one the graph writes
# into; a partition's input computed by the graph), never a weight an engine bakes in
RUN_TIME_INPUT = "trident_run_time_input"
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
            self.add(node)

    def add(self, node: torch.fx.Node) -> None:
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

    def read_stale(self, root: torch.fx.Node, write: torch.fx.Node) -> list[torch.fx.Node]:
        """The nodes other than `root` that hold root's memory from before `write` and are read
        after it (views made earlier, or the tensor root is a view of): their readers need the
        write too."""
        when, written = self.order[write], set()
        node = written_operand(write)
        while node is not None:  # (x.add_(1).mul_(2): its readers after the write will read it)
            written.add(node)
            node = written_operand(node)
        return [m for m in self.members(root)
                if m is not write and m not in written and self.order.get(m, when) < when
                and any(self.order.get(u, when + 1) > when for u in m.users)]


def _is_basic_index(index) -> bool:
    """An index that makes a view (ints, slices, None, ...), not a copy (tensors, lists, bools)."""
    def scalar(i):
        if isinstance(i, torch.fx.Node):  # a symbolic size
            return not isinstance(example_value(i), torch.Tensor) and i.meta.get("example_value") is not None
        return i is None or (isinstance(i, int) and not isinstance(i, bool))

    def item(i):
        if isinstance(i, slice):
            return all(scalar(b) for b in (i.start, i.stop, i.step))
        return i is Ellipsis or scalar(i)
    return all(item(i) for i in (index if isinstance(index, tuple) else (index,)))


def _view_path(node: torch.fx.Node) -> tuple[torch.fx.Node, list[torch.fx.Node]]:
    """(tensor, views): node is views[-1], each view a basic indexing of the one before it (of
    tensor, the first), all of them views of tensor's memory; (node, []) when node is none. An
    in-place write's result is the memory it wrote (no index of its own), and so is a call that
    returned its argument's tensor itself."""
    views = []
    while True:
        if (node.op == "call_function" and node.target is operator.getitem and isinstance(node.args[0], torch.fx.Node)
                and isinstance(example_value(node.args[0]), torch.Tensor) and _is_basic_index(node.args[1])):
            views.append(node)
            node = node.args[0]
        elif written_operand(node) is not None:
            node = written_operand(node)
        elif _same_tensor(node):
            node = node.args[0]
        else:
            return node, views[::-1]


def _same_tensor(node: torch.fx.Node) -> bool:
    """Did the node return its first argument's tensor itself (`cache.to(device)` where it is
    there already, `.contiguous()` of a dense one): the same memory, shape, strides and dtype?"""
    if node.op not in WRITE_OPS or not node.args or not isinstance(node.args[0], torch.fx.Node):
        return False
    value, source = example_value(node), example_value(node.args[0])
    if not (isinstance(value, torch.Tensor) and isinstance(source, torch.Tensor)) or writes_in_place(node):
        return False
    storage = _storage(node)
    return (storage is not None and storage == _storage(node.args[0])
            and value.storage_offset() == source.storage_offset() and value.shape == source.shape
            and value.stride() == source.stride() and value.dtype == source.dtype)


class _WriteThrough:
    """Writes into basic-indexing views, put back into the tensor viewed. `latest` maps a tensor
    to its whole value after the latest write into it (one into the whole tensor, or a write
    through a view of it); `original` maps each such value back to the tensor (a later write
    may view either)."""

    def __init__(self, graph: torch.fx.Graph, order: dict, aliases: _Aliases):
        self.graph, self.order, self.aliases = graph, order, aliases
        self.original: dict = {}
        self.latest: dict = {}

    def applies(self, root: torch.fx.Node, stale: list) -> bool:
        """Is every stale node the tensor `root` is (or views), or a basic-indexing view of it?"""
        origin = self.origin(root)
        return all(self.origin(node) is origin for node in stale)

    def record(self, write: torch.fx.Node, root: torch.fx.Node) -> None:
        """A write into the whole of a tensor (not through a view) is its latest value."""
        if not _view_path(root)[1]:
            origin = self.origin(root)
            self.original[write], self.latest[origin] = origin, write

    def origin(self, node: torch.fx.Node) -> torch.fx.Node:
        """The tensor node views (by basic indexing), before any write-through."""
        tensor = _view_path(node)[0]
        return self.original.get(tensor, tensor)

    def __call__(self, write: torch.fx.Node, root: torch.fx.Node, stale: list) -> None:
        """After `write` (into root, a view): the tensor viewed with the written block assigned, and
        each stale view taken again from it, for the readers after the write."""
        path, origin = _view_path(root)[1], self.origin(root)
        made, where = [], write

        def emit(target, args, like):
            nonlocal where
            with self.graph.inserting_after(where):
                where = self.graph.call_function(target, args)
            where.meta = dict(like.meta)  # (the same memory: a view, or assign's target)
            self.aliases.add(where)
            made.append(where)
            self.order[where] = self.order[write] + len(made) / 1024
            return where

        views = [self.latest.get(origin, origin)]  # the tensor, and the views above the one written
        for view in path[:-1]:
            views.append(emit(operator.getitem, (views[-1], view.args[1]), view))
        value = write  # (a write into the tensor itself: its result is the tensor's new value)
        for parent, view in zip(reversed(views), reversed(path)):
            value = emit(assign, (parent, view.args[1], value), parent)
        self.original[value], self.latest[origin] = origin, value
        after, new = self.order[write], set(made)
        for node in stale:
            fresh = value
            for view in _view_path(node)[1]:
                fresh = emit(operator.getitem, (fresh, view.args[1]), view)
            new.update(made)
            node.replace_all_uses_with(fresh, delete_user_cb=lambda user: user not in new
                                       and self.order.get(user, -1) > after)


def _outside(root: torch.fx.Node, aliases: _Aliases) -> str | None:
    outside = aliases.outside(root)
    if outside is None:
        return None
    held = "" if outside is root else f', which views "{outside.name}"'
    return f'writes in place into "{root.name}"{held}: a graph input or weight (state kept outside the graph)'


def _stale(root: torch.fx.Node, stale: list) -> str:
    return (f'writes in place into "{root.name}", whose memory "{stale[0].name}" shares (a view, or the '
            "tensor viewed) and is read after the write")


def _drop_idle_sets(graph: torch.fx.Graph) -> bool:
    """`module.to(dtype)` inside a forward (Switch Transformers' router casts its classifier on
    every call) traces as `w.set_(w.to(dtype))`. Where `to` returned w itself (w had that dtype
    and device), the set_ changes nothing: it is dropped, with dynamo's bookkeeping call on it."""
    dropped = False
    for node in list(graph.nodes):
        if node.target is not torch.Tensor.set_ or len(node.args) != 2 or node.kwargs:
            continue
        tensor, source = node.args
        if not (isinstance(source, torch.fx.Node) and source.op == "call_method" and source.target == "to"
                and source.args[0] is tensor and _storage(tensor) is not None
                and _storage(source) == _storage(tensor)):
            continue
        for user in list(node.users):
            if not user.users and _name(user.target) == "_lower_version_count_by_1":
                graph.erase_node(user)
        node.replace_all_uses_with(tensor)
        graph.erase_node(node)
        dropped = True
    return dropped


def _written_input(root: torch.fx.Node, aliases: _Aliases, write_through: _WriteThrough) -> torch.fx.Node | None:
    """The graph input a write into `root` changes where it is the tensor root is or views by
    basic indexing, and no other input or weight shares its memory; else None."""
    origin = write_through.origin(root)
    outside = [m for m in aliases.members(root) if m.op in ("placeholder", "get_attr")]
    return origin if origin.op == "placeholder" and outside == [origin] else None


def make_writes_explicit(gm: torch.fx.GraphModule,
                         inputs_written: list | None = None) -> list[tuple[torch.fx.Node, str]]:
    """Rewrites `gm` so every node that reads a tensor after an in-place write into it reads the
    write's result (torch runs the rewritten graph exactly as before: an in-place op returns the
    tensor it wrote). `x[i] = v` becomes `assign(x, i, v)`. Returns the writes that cannot be
    made explicit, each with why (the graph must then run in torch as it is); empty when every
    write was, and the graph is then marked EXPLICIT. inputs_written: where given, writes into
    graph inputs are made explicit too, and it receives (input, its final value) for each input
    written (when every write was made explicit)."""
    if gm.meta.get(EXPLICIT):
        return []
    graph = gm.graph
    changed = _drop_idle_sets(graph)
    order = {node: i for i, node in enumerate(graph.nodes)}
    aliases = _Aliases(graph, order)
    write_through = _WriteThrough(graph, order, aliases)
    problems, inputs_seen = [], {}  # (an ordered set)
    for node in list(graph.nodes):
        base = written_operand(node)
        if base is None:
            continue
        root = _root(base)
        why = _outside(root, aliases)
        written_input = None
        if why and inputs_written is not None:
            written_input = _written_input(root, aliases, write_through)
            why = None if written_input is not None else why
        stale = [] if why else aliases.read_stale(root, node)
        if stale and not write_through.applies(root, stale):
            why = _stale(root, stale)
        if why is not None:
            problems.append((node, why))
            continue
        if node.target is operator.setitem:
            with graph.inserting_after(node):
                write = graph.call_function(assign, node.args, node.kwargs)
            write.meta = dict(node.meta)
            if example_value(base) is not None:  # (assign returns its target: its memory)
                write.meta["example_value"] = example_value(base)
                aliases.add(write)
            node.replace_all_uses_with(write)
            graph.erase_node(node)
            order[write] = order.pop(node)
            node = write
        position = order[node]
        readers = base.replace_all_uses_with(node, delete_user_cb=lambda user: user is not node
                                             and order.get(user, -1) > position)
        if stale or (written_input is not None and _view_path(root)[1]):
            write_through(node, root, stale)  # (an input's new value is read: by the caller)
        write_through.record(node, root)
        if written_input is not None:
            inputs_seen[written_input] = None
        changed = changed or bool(readers) or bool(stale) or node.target is assign or written_input is not None
    if changed:
        gm.recompile()
    gm.meta[EXPLICIT] = not problems
    if inputs_written is not None and not problems:
        inputs_written += [(state, write_through.latest[state]) for state in inputs_seen]
    return problems


def return_written_inputs(gm: torch.fx.GraphModule, inputs_written: list) -> list[int] | None:
    """Appends each written input's final value to the graph's outputs (a tuple) and marks the
    input RUN_TIME_INPUT; returns the inputs' positions among the placeholders, in the order of
    the values appended. None where the outputs are no tuple (the graph is left as it is)."""
    output = next(n for n in gm.graph.nodes if n.op == "output")
    if not isinstance(output.args[0], tuple):
        return None
    output.args = (output.args[0] + tuple(final for _, final in inputs_written),)
    placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]
    for state, _ in inputs_written:
        state.meta[RUN_TIME_INPUT] = True
    gm.recompile()
    return [placeholders.index(state) for state, _ in inputs_written]


__all__ = ["EXPLICIT", "RUN_TIME_INPUT", "assign", "make_writes_explicit", "return_written_inputs",
           "writes_in_place", "written_operand"]
