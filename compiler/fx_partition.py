"""Splitting an fx graph into the parts trident compiles and the nodes that stay in torch, in time
linear in the graph.

One sweep over the nodes in topological order gives each node a level: the largest number of
unsupported nodes on any path that reaches it (an unsupported node counts itself). Supported
nodes of one level form one partition. That keeps the partitions' dependencies acyclic: along
any path levels never decrease, and a path that leaves a partition through an unsupported node
arrives at a strictly higher level, so no path can leave a partition and come back to it. Every
supported node joins the partition of its level, so runs of supported nodes are maximal up to
the unsupported nodes between them: a graph with k unsupported nodes on its longest chain of
them has at most k + 1 partitions.

(torch's CapabilityBasedPartitioner merges partitions pairwise, checking for cycles by graph
searches, and takes minutes on a transformer of a few thousand nodes.)

Barriers: calls that act by side effect, in graph order, with no data edge to what they order
(functorch's `_vmap_increment_nesting` / `_vmap_decrement_nesting` around a traced torch.vmap:
transformers 4.x builds its attention masks so). No partition spans one (every node after a
barrier gets a higher level than every node before it), and after fusing the graph is put back
in an order that keeps each barrier between the nodes it had before and after it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch.fx

COMPUTE_OPS = ("call_function", "call_method", "call_module")


@dataclass
class Partitioning:
    """Supported nodes grouped into partitions (graph order inside each), and the compute
    nodes left to torch."""
    partitions: list[list[torch.fx.Node]] = field(default_factory=list)
    left_in_torch: list[torch.fx.Node] = field(default_factory=list)


def is_barrier(node: torch.fx.Node) -> bool:
    """A call whose effect is its place in the graph (see the module docstring)."""
    return node.op == "call_function" and getattr(node.target, "__name__", "") in BARRIERS and \
        str(getattr(node.target, "__module__", "")).startswith("torch._functorch")


BARRIERS = ("_vmap_increment_nesting", "_vmap_decrement_nesting")


def node_levels(graph: torch.fx.Graph,
                is_supported: Callable[[torch.fx.Node], bool]) -> dict[torch.fx.Node, int]:
    """The level of every node (see the module docstring), in one pass over the graph."""
    level: dict[torch.fx.Node, int] = {}
    floor = top = 0  # floor: the least level after the last barrier; top: the highest so far
    for node in graph.nodes:
        if is_barrier(node):
            floor = top + 1
        base = max([floor] + [level[i] for i in node.all_input_nodes])
        unsupported = node.op in COMPUTE_OPS and not is_supported(node)
        level[node] = base + 1 if unsupported else base
        top = max(top, level[node])
    return level


def propose(graph: torch.fx.Graph,
            is_supported: Callable[[torch.fx.Node], bool]) -> Partitioning:
    """Maximal acyclic partitions of the supported compute nodes of `graph`."""
    level = node_levels(graph, is_supported)
    by_level: dict[int, list[torch.fx.Node]] = {}
    result = Partitioning()
    for node in graph.nodes:
        if node.op not in COMPUTE_OPS:
            continue
        if is_supported(node):
            by_level.setdefault(level[node], []).append(node)
        else:
            result.left_in_torch.append(node)
    result.partitions = [by_level[k] for k in sorted(by_level)]
    return result


def fuse(gm: torch.fx.GraphModule, partitions: list[list[torch.fx.Node]],
         prefix: str = "fused_") -> torch.fx.GraphModule:
    """`gm` with each partition replaced by a call of a `<prefix><k>` submodule."""
    from torch.fx.passes.utils.fuser_utils import fuse_by_partitions

    position = {node.name: k for k, node in enumerate(gm.graph.nodes)}
    barriers = [position[n.name] for n in gm.graph.nodes if is_barrier(n)]
    firsts = {f"{prefix}{k}": position[p[0].name] for k, p in enumerate(partitions)}
    # fuse_by_partitions takes each partition as a dict of nodes (insertion-ordered).
    fused = fuse_by_partitions(gm, [dict.fromkeys(p) for p in partitions], prefix=prefix)
    if barriers:
        _keep_barriers_in_place(fused.graph, {**position, **firsts}, barriers)
        fused.recompile()
    return fused


def _keep_barriers_in_place(graph: torch.fx.Graph, position: dict[str, int], barriers: list[int]) -> None:
    """Reorders `graph` (fused: its topological sort moved the barriers, which have no inputs, to
    the front) so that every node stays on its side of each barrier: a topological order of the
    data edges plus, for each barrier, an edge from every node before it and to every node after
    it (`position`: each node's place before fusing, a fused call's that of its first member).
    No partition spans a barrier (node_levels), so the constraints hold together."""
    import bisect
    import heapq

    nodes = list(graph.nodes)
    output = nodes.pop()  # (stays last)
    place: dict[torch.fx.Node, int] = {}
    for n in nodes:  # a node fusing made (an item of a fused call's results) goes with its inputs
        place[n] = position.get(n.name, max((place[i] for i in n.all_input_nodes), default=0))
    index = {n: i for i, n in enumerate(nodes)}
    segment = {n: bisect.bisect_left(barriers, place[n]) for n in nodes}
    wall = {barriers.index(place[n]): n for n in nodes if is_barrier(n)}
    walls, present = set(wall.values()), set(nodes)
    members: dict[int, list] = {}
    for n in nodes:
        if n not in walls:
            members.setdefault(segment[n], []).append(n)

    def after(n):  # what must run before n
        needs = set(n.all_input_nodes)
        k = segment[n]
        if n in walls:
            needs.update(members.get(k, ()))
        if k > 0:
            needs.add(wall[k - 1])
        return needs & present

    waiting = {n: after(n) for n in nodes}
    users: dict = {n: [] for n in nodes}
    for n, needs in waiting.items():
        for m in needs:
            users[m].append(n)
    count = {n: len(needs) for n, needs in waiting.items()}
    ready = [(segment[n], place[n], index[n], n) for n in nodes if count[n] == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        *_, n = heapq.heappop(ready)
        order.append(n)
        for u in users[n]:
            count[u] -= 1
            if count[u] == 0:
                heapq.heappush(ready, (segment[u], place[u], index[u], u))
    if len(order) != len(nodes):
        raise RuntimeError("fx_partition: the barriers and the data edges admit no order")
    for n in reversed(order):
        output.prepend(n)
        output = n


def partition_is_valid(graph: torch.fx.Graph, partitions: list[list[torch.fx.Node]]) -> bool:
    """No node in two partitions, and no path that leaves a partition and comes back into it
    (so each partition can run as one call). For tests: a search per partition."""
    owner: dict[torch.fx.Node, int] = {}
    for k, part in enumerate(partitions):
        for node in part:
            if node in owner:
                return False
            owner[node] = k
    for k, part in enumerate(partitions):
        members = set(part)
        stack = [u for n in part for u in n.users if u not in members]
        seen: set[torch.fx.Node] = set()
        while stack:
            node = stack.pop()
            if node in members:
                return False
            if node in seen:
                continue
            seen.add(node)
            stack.extend(node.users)
    return True


__all__ = ["Partitioning", "is_barrier", "node_levels", "propose", "fuse", "partition_is_valid"]
