"""Fusion: partition the graph's nodes into groups, each of which becomes one kernel.

"Is it legal" (`can_fuse`) and "is it worth it" (`score`) are separate small functions, as in
Inductor. Every decision is recorded with its reason so `trident explain` can show why a group was
formed or a fusion refused.

Group kinds:
  matmul / conv / pool  an anchor op with an elementwise epilogue (bias, activation, residual)
  reduction             one reduction (softmax, layer norm, sum/mean/max) with elementwise
                        producers fused in front and consumers behind
  pointwise             a chain of elementwise ops over one iteration space (a table lookup,
                        an embedding's rows by token ids, a GatherElements, a concat and a
                        constant pad start one: each lane reads its own element)
  scan                  a running sum along one axis (cumsum) with an elementwise epilogue
  sort                  a topk (torch.sort, argsort) of whole rows along one axis, alone
  grouped_mm            a GEMM per group of sorted rows (a mixture-of-experts layer), alone
  scatter               a ScatterElements with few updates a row, whole rows in registers, alone
  horizontal            sibling convs that read the same input, launched as one kernel
  attention             softmax(q k^T * scale + mask) v as one fused kernel (no epilogue)
  mlp                   two matmul groups back to back (up projection + its epilogue, down
                        projection + its epilogue): the hidden activation is never stored
  view                  a reshape/transpose/slice that only changes strides (no kernel)
  torch                 an op with no kernel: runs through torch in place
"""
from __future__ import annotations

from dataclasses import dataclass, field

from trident.compiler import config
from trident.compiler.group_kinds import (MAX_ROW, PER_ELEMENT_MOVES, initial_kind, reduced_axes,
                                          reduction_length)
from trident.compiler.templates import mlp_refusal, norm_prologue_fits, reads_any_layout
from trident.compiler.ir import Graph, Node
from trident.compiler.ops import OPS, Kind
from trident.kernels.blas import library_gemm_fits

# More extra operands than this in one epilogue costs more registers than the fusion saves.
MAX_GROUP_INPUTS = 10
ANCHOR_KINDS = ("matmul", "conv", "pool")


@dataclass(eq=False)
class Group:
    kind: str
    nodes: list[Node]
    reasons: list[str] = field(default_factory=list)
    members: list["Group"] = field(default_factory=list)  # the conv groups of a horizontal group

    @property
    def anchor(self) -> Node:
        """The op the kernel is built around (the first node of a pointwise group). A
        per-element move computes per element, as the elementwise ops do: it anchors nothing."""
        for node in self.nodes:
            if OPS[node.op].kind != Kind.ELEMENTWISE and node.op not in PER_ELEMENT_MOVES:
                return node
        return self.nodes[0]

    @property
    def name(self) -> str:
        return "_".join(n.op for n in self.nodes)[:60]

    def produced(self) -> set[str]:
        return {o for n in self.nodes for o in n.outputs}

    def inputs(self) -> list[str]:
        made = self.produced()
        return list(dict.fromkeys(i for n in self.nodes for i in n.inputs if i not in made))

    def outputs(self, graph: Graph, consumers: dict[str, list[Node]]) -> list[str]:
        mine = {id(n) for n in self.nodes}
        return [o for n in self.nodes for o in n.outputs
                if o in graph.outputs or any(id(c) not in mine for c in consumers.get(o, []))]



# ------------------------------------------------------------------ legality, profit ----
def space_shapes(group: Group, graph: Graph) -> set[tuple]:
    """The output shapes an elementwise consumer may have to join this group."""
    anchor = group.anchor
    out = tuple(graph.types[anchor.outputs[0]].shape)
    if group.kind == "reduction" and _broadcasts_per_row(anchor, graph) and \
            reduction_length(anchor, graph) <= MAX_ROW:  # (a looped row is gone after its loop)
        return {tuple(graph.types[anchor.inputs[0]].shape), out}
    return {out}


def _broadcasts_per_row(anchor: Node, graph: Graph) -> bool:
    """Does the reduction's output broadcast against its input row by row (so an epilogue over
    the input shape, x - max(x), computes in the reduction's kernel)? With keepdims it does; without,
    only when the reduced axes lead (right-aligned broadcasting then lines the kept dims up)."""
    if anchor.attrs.get("keepdims", True):
        return True
    axes = reduced_axes(anchor, graph)
    return axes == tuple(range(len(axes)))


def can_fuse(group: Group, node: Node, graph: Graph, depends_on) -> str | None:
    """None if `node` (elementwise) may join `group` as an epilogue, else the reason it may not."""
    if group.kind not in ANCHOR_KINDS + ("reduction", "pointwise", "scan"):
        return f"{group.kind} groups take no epilogue"
    if OPS[node.op].kind != Kind.ELEMENTWISE:
        return "only elementwise ops fuse as epilogues"
    out_shape = tuple(graph.types[node.outputs[0]].shape)
    if out_shape not in space_shapes(group, graph):
        return f"output shape {list(out_shape)} is not the group's iteration space"
    made = group.produced()
    for value in node.inputs:
        if value not in made and depends_on(value, group):
            return f"input {value} is computed from this group's outputs (would form a cycle)"
    return None


def can_fuse_prologue(producer: Group, reduction: Group, graph: Graph) -> str | None:
    """None if a pointwise group may be computed inside a reduction's loads."""
    if producer.kind != "pointwise":
        return "only pointwise groups fuse into a reduction's loads"
    space = tuple(graph.types[reduction.anchor.inputs[0]].shape)
    if tuple(graph.types[producer.nodes[-1].outputs[0]].shape) != space:
        return "shape differs from the reduction's input"
    return None


def score(group: Group, node: Node, graph: Graph,
          consumers: dict[str, list[Node]] | None = None) -> tuple[int, str]:
    """Bytes of memory traffic a fusion saves (> 0 to fuse), and why."""
    consumers = graph.consumers() if consumers is None else consumers
    extra = len(set(group.inputs()) | set(node.inputs))
    if extra > MAX_GROUP_INPUTS:
        return 0, f"would read {extra} tensors (> {MAX_GROUP_INPUTS}): too many registers"
    if node.op == "dequantize_linear" and any(c is not node for c in consumers.get(node.inputs[0], [])):
        # Its int8 input is stored for other readers anyway; dequantizing here would store a float
        # copy too. The reader's kernel dequantizes in registers instead (sibling absorption).
        return 0, "dequantization belongs in the reader's kernel (the int8 tensor is stored anyway)"
    if node.op == "dequantize_linear" and group.kind in ("conv", "matmul"):
        # A GEMM epilogue that quantizes and dequantizes again would store the float values for
        # the reader (an int8 residual branch): the int8 store is the point, the reader dequantizes.
        return 0, "dequantization belongs in the reader's kernel (store the int8 tensor instead)"
    t = graph.types[node.outputs[0]]
    saved = 2 * t.numel() * t.dtype.itemsize  # one store and one load of the intermediate
    return saved, f"saves {saved} bytes of traffic"


# ---------------------------------------------------------------------------- driver ----
def fuse(graph: Graph, enabled: bool = True) -> list[Group]:
    """Partition graph.nodes into groups in an order that respects every dependency.

    enabled=False gives one group per node (see `unfused`).
    """
    if not enabled:
        return unfused(graph)
    group_of: dict[int, Group] = {}
    producer_of: dict[str, Node] = graph.producers()
    consumers = graph.consumers()
    groups: list[Group] = []

    def group_for(value: str) -> Group | None:
        node = producer_of.get(value)
        return group_of.get(id(node)) if node is not None else None

    def depends_on(value: str, target: Group, _memo=None) -> bool:
        """Does `value` depend on `target` once groups run whole: is `target` upstream of the
        group computing `value`, through the inputs of every node of each group on the way? (A
        node-by-node walk misses a path through another node of a group: with x in group A and
        A also reading y of group C, a node reading x must not join C.)"""
        seen, stack = set(), [value]
        while stack:
            node = producer_of.get(stack.pop())
            if node is None:
                continue
            group = group_of.get(id(node))
            if group is target:
                return True
            key = id(group) if group is not None else id(node)
            if key in seen:
                continue
            seen.add(key)
            stack.extend(group.inputs() if group is not None else node.inputs)
        return False

    for node in graph.nodes:
        kind, why = initial_kind(node, graph)
        joined = None
        if kind == "pointwise":
            joined = _try_epilogue(node, graph, group_for, depends_on, consumers)
        if joined is None:
            joined = Group(kind, [node], [f"{node.name or node.op}: starts a {kind} group ({why})"])
            groups.append(joined)
            if kind == "reduction":
                _absorb_prologue(joined, graph, group_for, groups, group_of, depends_on,
                                 consumers)
            if kind == "conv":
                _absorb_input_cast(joined, graph, group_for, groups, group_of, consumers)
        else:
            joined.nodes.append(node)
            _absorb_siblings(joined, node, graph, group_for, groups, group_of, depends_on,
                             consumers)
        group_of[id(node)] = joined
    if config.FUSE_MLP:
        _merge_mlp(groups, graph, group_of, producer_of, consumers)
    _merge_horizontal(groups, graph, group_of, depends_on)
    return _topological(groups, group_of, producer_of)


# -------------------------------------------------------------------- back-to-back MLP ----
def mlp_group_refusal(up: Group, down: Group, graph: Graph, consumers: dict[str, list[Node]]) -> str | None:
    """None if matmul group `up`, whose result `down`'s GEMM reads, may run with `down` as one
    `mlp` group (the result then never reaches memory), else why not."""
    hidden = down.anchor.inputs[0]
    if up.nodes[0] is not up.anchor or down.nodes[0] is not down.anchor:
        return "a projection with work before its GEMM"
    if (up.outputs(graph, consumers) != [hidden] or consumers.get(hidden) != [down.anchor]
            or hidden in graph.outputs):
        return "the up projection's result is read elsewhere too (it is stored anyway)"
    if len(set(up.inputs()) | set(down.inputs()) - {hidden}) > MAX_GROUP_INPUTS:
        return f"the two would read more than {MAX_GROUP_INPUTS} tensors"
    return mlp_refusal(up.anchor, down.anchor, graph)


def norm_prologue_refusal(norm: Group, up: Node, graph: Graph, consumers: dict[str, list[Node]]) -> str | None:
    """None if reduction group `norm`, a LayerNorm or RMSNorm over the channels whose result only
    the up projection of an `mlp` group reads, may be computed in that kernel's row loads (its
    row tile holds every channel), else why not."""
    anchor = norm.anchor
    if norm.nodes[-1] is not anchor or anchor.op not in ("layer_norm", "rms_norm"):
        return "not a LayerNorm or RMSNorm (after elementwise ops at most)"
    rank = graph.types[anchor.inputs[0]].rank
    if reduced_axes(anchor, graph) != (rank - 1,):
        return "a norm over more than the channels"
    out = anchor.outputs[0]
    if norm.outputs(graph, consumers) != [out] or consumers.get(out) != [up] or out in graph.outputs:
        return "its result is read elsewhere too"
    return norm_prologue_fits(anchor, graph)


def _absorb_norm(mlp: Group, graph: Graph, groups: list[Group], group_of, producer_of, consumers) -> None:
    up = mlp.nodes[0]
    node = producer_of.get(up.inputs[0])
    norm = group_of.get(id(node)) if node is not None else None
    if norm is None or norm.kind != "reduction":
        return
    refusal = norm_prologue_refusal(norm, up, graph, consumers)
    if refusal is not None:
        mlp.reasons.append(f"prologue {norm.name}: not fused ({refusal})")
        return
    _prepend(norm, mlp, "computed on the row tile (every channel is in it)", groups, group_of)


def _merge_mlp(groups: list[Group], graph: Graph, group_of, producer_of, consumers) -> None:
    for down in list(groups):
        if down.kind != "matmul" or down.anchor.inputs[0] not in producer_of:
            continue
        up = group_of.get(id(producer_of[down.anchor.inputs[0]]))
        if up is None or up.kind != "matmul" or up is down:
            continue
        refusal = mlp_group_refusal(up, down, graph, consumers)
        if refusal is not None:
            down.reasons.append(f"mlp: not fused with {up.name} ({refusal})")
            continue
        hidden = graph.types[down.anchor.inputs[0]]
        saved = 2 * hidden.numel() * hidden.dtype.itemsize
        merged = Group("mlp", up.nodes + down.nodes, up.reasons + down.reasons + [
            f"mlp: {up.anchor.name or up.anchor.op} and {down.anchor.name or down.anchor.op} run back to back "
            f"(the {list(hidden.shape)} hidden activation stays in registers: saves {saved} bytes of traffic)"])
        groups[groups.index(down)] = merged
        groups.remove(up)
        for n in merged.nodes:
            group_of[id(n)] = merged
        _absorb_norm(merged, graph, groups, group_of, producer_of, consumers)


# ------------------------------------------------------------------- horizontal fusion ----
MAX_HORIZONTAL = 4  # members per launch; more would make one config fit none of them


def horizontal_key(group: Group, graph: Graph):
    """Convs with equal keys compute on the same input with the same window: they may share a
    launch. None for groups that cannot take part."""
    anchor = group.anchor
    if group.kind != "conv" or anchor.op != "conv" or group.nodes[0] is not anchor:
        return None
    if anchor.attrs.get("groups", 1) != 1:
        return None
    weight = graph.constants[anchor.inputs[1]]
    a = anchor.attrs
    return (anchor.inputs[0], tuple(weight.shape[2:]), weight.dtype, tuple(a["strides"]),
            tuple(a["pads"]), tuple(a["dilations"]))


def can_merge_horizontal(a: Group, b: Group, depends_on) -> str | None:
    """None if a and b may run as one launch: neither reads what the other computes."""
    if any(depends_on(v, a) for v in b.inputs()) or any(depends_on(v, b) for v in a.inputs()):
        return "one reads what the other computes"
    return None


def horizontal_score(members: list[Group]) -> tuple[int, str]:
    """Launches saved (> 0 to merge), and why."""
    if len(members) > MAX_HORIZONTAL:
        return 0, f"more than {MAX_HORIZONTAL} siblings"
    return len(members) - 1, f"saves {len(members) - 1} launch(es) and reads the input once"


def _merge_horizontal(groups: list[Group], graph: Graph, group_of, depends_on) -> None:
    families: dict = {}
    for group in groups:
        key = horizontal_key(group, graph)
        if key is not None:
            families.setdefault(key, []).append(group)
    for family in families.values():
        members = [family[0]]
        for other in family[1:]:
            refusal = can_merge_horizontal(members[0], other, depends_on)
            if refusal is None and all(can_merge_horizontal(m, other, depends_on) is None
                                       for m in members[1:]):
                members.append(other)
            else:
                other.reasons.append(f"horizontal: not merged with {members[0].name} ({refusal})")
        saved, why = horizontal_score(members)
        if saved <= 0:
            continue
        names = ", ".join(m.anchor.name or m.anchor.op for m in members)
        merged = Group("horizontal", [n for m in members for n in m.nodes],
                       [r for m in members for r in m.reasons] + [f"horizontal: {names} ({why})"],
                       members)
        groups[groups.index(members[0])] = merged
        for m in members[1:]:
            groups.remove(m)
        for n in merged.nodes:
            group_of[id(n)] = merged


def unfused(graph: Graph) -> list[Group]:
    """One group per node, in graph order: fusion disabled. Every IR value is then stored (so each
    can be observed) and each op runs as its own kernel (the baseline fused kernels are timed
    against)."""
    groups = []
    for node in graph.nodes:
        kind, why = initial_kind(node, graph)
        groups.append(Group(kind, [node], [f"{node.name or node.op}: starts a {kind} group ({why}; "
                                           f"fusion disabled)"]))
    return groups


def _topological(groups: list[Group], group_of, producer_of) -> list[Group]:
    """Order groups so each runs after the groups it reads from.

    Fusing an epilogue can make a group read a value computed by a group formed after it; the
    cycle checks in can_fuse guarantee an order exists. Ties keep the graph's order.
    """
    position = {id(g): k for k, g in enumerate(groups)}
    deps = {id(g): {id(group_of[id(producer_of[v])]) for v in g.inputs() if v in producer_of}
            - {id(g)} for g in groups}
    ordered, done = [], set()
    while len(ordered) < len(groups):
        ready = [g for g in groups if id(g) not in done and deps[id(g)] <= done]
        if not ready:
            raise AssertionError("fusion formed a cycle between groups")
        first = min(ready, key=lambda g: position[id(g)])
        ordered.append(first)
        done.add(id(first))
    return ordered


def residual_for_norm(group: Group, node: Node, graph: Graph, consumers: dict[str, list[Node]]) -> str | None:
    """Why a residual add should not join this GEMM's epilogue, or None: under RESIDUAL_INTO_NORM,
    a 16-bit or fp32 GEMM with nothing after its bias is cuBLAS's whole job (kernels/blas.py, addmm),
    and the LayerNorm (RMSNorm) reading the sum can add it in its loads for about the price of
    reading the residual; with the add in its epilogue the GEMM runs on a Triton tile or as
    cuBLAS plus a pass (docs/performance.md, "Library GEMMs"). With the library off
    (LIBRARY_GEMM) the GEMM is a Triton tile either way, and the add stays in its epilogue."""
    if not (config.RESIDUAL_INTO_NORM and config.LIBRARY_GEMM):
        return None
    if group.kind != "matmul" or len(group.nodes) != 1 or node.op != "add":
        return None
    anchor = group.anchor
    if anchor.op != "matmul" or len(graph.types[anchor.inputs[1]].shape) != 2:
        return None
    a, b, out = (graph.types[v].dtype for v in (*anchor.inputs[:2], anchor.outputs[0]))
    if not library_gemm_fits(a, b, out, outputs=1, out_dense=True):
        return None
    total = node.outputs[0]
    if not any(c.op in ("layer_norm", "rms_norm") and c.inputs[0] == total for c in consumers.get(total, [])):
        return None
    return "left to the LayerNorm that reads the sum: the GEMM stays cuBLAS's whole job (RESIDUAL_INTO_NORM)"


def _try_epilogue(node, graph, group_for, depends_on, consumers):
    for value in node.inputs:
        group = group_for(value)
        if group is None:
            continue
        refusal = can_fuse(group, node, graph, depends_on) or residual_for_norm(group, node, graph, consumers)
        if refusal is None:
            saved, why = score(group, node, graph, consumers)
            if saved > 0:
                group.reasons.append(f"{node.name or node.op}: fused into {group.kind} group ({why})")
                return group
            refusal = why
        group.reasons.append(f"{node.name or node.op}: not fused ({refusal})")
    return None


def _absorb_siblings(group: Group, node: Node, graph, group_for, groups, group_of, depends_on,
                     consumers):
    """Pull in pointwise groups that only feed `node` (e.g. the tanh(x) of where(c, s, tanh(x))).

    Their nodes compute in the same space just before `node`, and their results never touch memory.
    """
    shape = graph.types[node.outputs[0]].shape
    for value in node.inputs:
        other = group_for(value)
        if other is None or other is group or other.kind != "pointwise":
            continue
        if any(graph.types[o].shape != shape for n in other.nodes for o in n.outputs):
            continue
        readers = [c for o in other.produced() for c in consumers.get(o, [])]
        if any(c is not node and group_of.get(id(c)) is not other for c in readers):
            continue
        if any(depends_on(v, group) for v in other.inputs()):
            continue
        group.nodes[-1:-1] = other.nodes
        group.reasons.append(f"{other.name}: fused as a sibling input of {node.name or node.op}")
        for n in other.nodes:
            group_of[id(n)] = group
        groups.remove(other)


def _absorb_input_cast(conv: Group, graph, group_for, groups, group_of, consumers) -> None:
    """A lone float cast feeding a stem conv (the fp16 engine's input cast) runs in its loads."""
    producer = group_for(conv.anchor.inputs[0])
    if (producer is None or producer.kind != "pointwise" or len(producer.nodes) != 1
            or producer.nodes[0].op != "cast" or not reads_any_layout(conv.anchor, graph)
            or len(consumers.get(conv.anchor.inputs[0], [])) != 1
            or conv.anchor.inputs[0] in graph.outputs
            or not graph.types[producer.nodes[0].inputs[0]].dtype.is_floating_point):
        return
    conv.nodes.insert(0, producer.nodes[0])
    conv.reasons.append("input cast: fused into the conv's loads (the tile reads any layout)")
    group_of[id(producer.nodes[0])] = conv
    groups.remove(producer)


def _absorb_prologue(reduction: Group, graph, group_for, groups, group_of, depends_on,
                     consumers) -> None:
    producer = group_for(reduction.anchor.inputs[0])
    if producer is None:
        return
    refusal = can_fuse_prologue(producer, reduction, graph)
    if refusal is None and any(depends_on(v, producer) for v in reduction.anchor.inputs[1:]):
        refusal = "another input of the reduction is computed from it"
    if refusal is None and any(group_of.get(id(c)) not in (producer, None)
                               for o in producer.produced() for c in consumers.get(o, [])):
        refusal = "its result is already read by another kernel"
    if refusal is not None:
        reduction.reasons.append(f"prologue {producer.name}: not fused ({refusal})")
        return
    # The producer's nodes now compute inside the reduction's loads; values the producer shares
    # with other consumers are still stored (they become outputs of this group).
    _prepend(producer, reduction, "fused into the reduction's loads", groups, group_of)


def _prepend(prologue: Group, group: Group, why: str, groups: list[Group], group_of) -> None:
    """`prologue`'s nodes now compute at the start of `group` (one kernel less)."""
    group.nodes[:0] = prologue.nodes
    group.reasons.append(f"prologue {prologue.name}: {why}")
    for n in prologue.nodes:
        group_of[id(n)] = group
    groups.remove(prologue)
