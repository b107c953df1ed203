"""reshape -> transpose -> reshape chains rewritten as one split, one transpose and one merge.

torch's ONNX export of nn.MultiheadAttention (torchvision's ViT) splits the heads of a sequence-
first [L, N, E] projection as Reshape [L, N*H, D] -> Transpose [N*H, L, D] -> Reshape [N, H, L, D].
Merging N with H in the first reshape is no view of the projection's [L, N, 3E] output (a copy per
operand), although the end result is one: x viewed as [L, N, H, D], permuted to [N, H, L, D]. This
pass finds the dims all three shapes are made of (their common factors), and writes the chain as
reshape(x, factors) -> transpose(factors) -> reshape(result): a split, a permutation and a merge of
neighbouring dims, views wherever the result is one. Elementwise ops with scalar operands between
the transpose and the last reshape (the exporter's scale on Q) move behind the new chain.
"""
from __future__ import annotations

import math

from trident.compiler.ir import Graph, Node
from trident.compiler.ops import OPS, Kind
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite


def common_factors(a: list[int], b: list[int]) -> tuple[list[int], list[list[int]], list[list[int]]] | None:
    """Sizes f with a and b both products of consecutive runs of f (unit dims dropped), and the runs
    (indices into f) making each dim of a and of b; None when no such f exists ([2, 3] vs [3, 2])."""
    a1, b1 = [d for d in a if d != 1], [d for d in b if d != 1]
    factors: list[int] = []
    i = j = 0
    ra, rb = 1, 1  # what is left of a[i], b[j]
    if a1:
        ra = a1[0]
    if b1:
        rb = b1[0]
    while i < len(a1) and j < len(b1):
        f = math.gcd(ra, rb)
        if f == 1 or (ra % f) or (rb % f) or (f != ra and f != rb):
            return None
        factors.append(f)
        ra, rb = ra // f, rb // f
        if ra == 1:
            i += 1
            ra = a1[i] if i < len(a1) else 1
        if rb == 1:
            j += 1
            rb = b1[j] if j < len(b1) else 1
    if i != len(a1) or j != len(b1):
        return None
    return factors, _runs(a, factors), _runs(b, factors)


def _runs(shape: list[int], factors: list[int]) -> list[list[int]]:
    """For each dim of shape, the indices of the consecutive factors whose product it is."""
    runs, k = [], 0
    for d in shape:
        run, size = [], 1
        while size < d:
            size *= factors[k]
            run.append(k)
            k += 1
        runs.append(run)
    return runs


def _merge_of(factors: list[int], shape: list[int]) -> bool:
    """Is each dim of shape a product of consecutive factors (no factor split)?"""
    got = common_factors(factors, shape)
    return got is not None and [d for d in got[0]] == [f for f in factors if f != 1]


def _scalar_elementwise(node: Node, graph: Graph) -> bool:
    if OPS[node.op].kind != Kind.ELEMENTWISE or len(node.outputs) != 1:
        return False
    others = node.inputs[1:]
    return all(graph.types[i].is_static and math.prod(graph.types[i].shape) == 1 for i in others)


class _Chain:
    """reshape r1 -> transpose t -> scalar elementwise ops -> reshape r2, each used once."""

    def __init__(self, r2: Node, graph: Graph, producers, consumers):
        self.ok = False
        self.between: list[Node] = []
        node = producers.get(r2.inputs[0])
        while node is not None and node.op != "transpose" and _scalar_elementwise(node, graph) \
                and _single_use(node, graph, consumers):
            self.between.insert(0, node)
            node = producers.get(node.inputs[0])
        if node is None or node.op != "transpose" or not _single_use(node, graph, consumers):
            return
        r1 = producers.get(node.inputs[0])
        if r1 is None or r1.op != "reshape" or not _single_use(r1, graph, consumers):
            return
        self.r1, self.t, self.r2 = r1, node, r2
        self.ok = True


def _single_use(node: Node, graph: Graph, consumers) -> bool:
    out = node.outputs[0]
    return out not in graph.outputs and len(consumers.get(out, [])) == 1


def _plan(chain: _Chain, graph: Graph):
    """(factor shape, permutation of the factors) or None."""
    shape = lambda v: list(graph.types[v].shape)  # noqa: E731
    x, s1, s3 = shape(chain.r1.inputs[0]), shape(chain.r1.outputs[0]), shape(chain.r2.outputs[0])
    if not all(isinstance(d, int) for d in x + s1 + s3):
        return None
    found = common_factors(x, s1)
    if found is None:
        return None
    factors, _, runs1 = found
    perm = [k for d in chain.t.attrs["perm"] for k in runs1[d]]
    permuted = [factors[k] for k in perm]
    if not _merge_of(permuted, s3):
        return None
    return factors, perm


def fold_head_splits(graph: Graph) -> Graph:
    producers, consumers = graph.producers(), graph.consumers()
    chains = {}
    for node in graph.nodes:
        if node.op == "reshape":
            chain = _Chain(node, graph, producers, consumers)
            if chain.ok:
                planned = _plan(chain, graph)
                if planned is not None and not _already_simple(chain, graph, planned):
                    chains[id(node)] = (chain, planned)
    skip = {id(n) for chain, _ in chains.values() for n in [chain.r1, chain.t] + chain.between}

    def fold(node: Node, rb: Rebuild):
        if id(node) in skip:
            return []  # rebuilt by the chain's last reshape; nothing else reads it
        if id(node) not in chains:
            return None
        chain, (factors, perm) = chains[id(node)]
        value = rb.builder.add1("reshape", [rb.value(chain.r1.inputs[0])], {"shape": factors}, chain.r1.name)
        value = rb.builder.add1("transpose", [value], {"perm": perm}, chain.t.name)
        for op in chain.between:
            value = rb.builder.add1(op.op, [value] + [rb.value(i) for i in op.inputs[1:]], op.attrs, op.name)
        return rb.builder.add("reshape", [value], {"shape": list(graph.types[node.outputs[0]].shape)}, node.name,
                              outputs=node.outputs)

    return eliminate_dead_code(rewrite(graph, fold)) if chains else graph


def _already_simple(chain: _Chain, graph: Graph, planned) -> bool:
    """The first reshape only splits dims already (no merge): nothing to gain."""
    factors, _ = planned
    return [d for d in graph.types[chain.r1.outputs[0]].shape if d != 1] == factors
