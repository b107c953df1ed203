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


def node_levels(graph: torch.fx.Graph,
                is_supported: Callable[[torch.fx.Node], bool]) -> dict[torch.fx.Node, int]:
    """The level of every node (see the module docstring), in one pass over the graph."""
    level: dict[torch.fx.Node, int] = {}
    for node in graph.nodes:
        base = max((level[i] for i in node.all_input_nodes), default=0)
        unsupported = node.op in COMPUTE_OPS and not is_supported(node)
        level[node] = base + 1 if unsupported else base
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

    # fuse_by_partitions takes each partition as a dict of nodes (insertion-ordered).
    return fuse_by_partitions(gm, [dict.fromkeys(p) for p in partitions], prefix=prefix)


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


__all__ = ["Partitioning", "node_levels", "propose", "fuse", "partition_is_valid"]
