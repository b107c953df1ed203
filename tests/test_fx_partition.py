"""The linear partitioner of the torch.compile backend (compiler/fx_partition.py)."""
from __future__ import annotations

import pytest
import torch

from trident.compiler import fx_partition
from trident.compiler.frontend.fx import supported_fx_target

transformers = pytest.importorskip("transformers")


def dynamo_graph(model, *inputs):
    """The graph dynamo hands a backend, and its example inputs (lifted weights included)."""
    graphs = []

    def capture(gm, example_inputs):
        graphs.append((gm, list(example_inputs)))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=capture)(*inputs)
    torch._dynamo.reset()
    assert len(graphs) == 1
    return graphs[0]


@pytest.fixture(scope="module")
def gpt2_48():
    config = transformers.GPT2Config(n_layer=48, n_embd=32, n_head=2, vocab_size=100,
                                     n_positions=64)
    model = transformers.GPT2Model(config).eval()
    ids = torch.randint(0, 100, (1, 8), generator=torch.Generator().manual_seed(0))
    return (model, ids, *dynamo_graph(model, ids))


def every_kth_gelu_unsupported(k: int):
    """A support predicate with holes: every k-th GELU (one per layer's MLP) stays in torch."""
    seen = {}

    def supported(node):
        if "gelu" in str(node.target) or "pow" in str(node.target):  # GPT-2's tanh GELU: pow
            seen.setdefault(node, len(seen))
            if seen[node] % k == 0:
                return False
        return supported_fx_target(node)
    return supported


def test_gpt2_48_layers_is_one_partition(gpt2_48):
    _, _, gm, _ = gpt2_48
    parts = fx_partition.propose(gm.graph, supported_fx_target)
    assert len(gm.graph.nodes) > 2000
    assert parts.left_in_torch == [] and len(parts.partitions) == 1


def test_gpt2_48_layers_with_holes(gpt2_48):
    _, _, gm, example_inputs = gpt2_48
    predicate = every_kth_gelu_unsupported(2)
    parts = fx_partition.propose(gm.graph, predicate)
    holes = len(parts.left_in_torch)
    assert holes >= 24
    # at most one partition more than the unsupported nodes on the longest chain of them
    assert 2 <= len(parts.partitions) <= holes + 1
    assert fx_partition.partition_is_valid(gm.graph, parts.partitions)
    covered = {n for p in parts.partitions for n in p} | set(parts.left_in_torch)
    assert covered == {n for n in gm.graph.nodes if n.op in fx_partition.COMPUTE_OPS}
    # fusing keeps what the graph computes
    with torch.no_grad():
        ref = gm(*example_inputs)
    fused = fx_partition.fuse(gm, parts.partitions)
    assert sum(n.op == "call_module" for n in fused.graph.nodes) == len(parts.partitions)
    with torch.no_grad():
        out = fused(*example_inputs)
    torch.testing.assert_close(out, ref, rtol=0, atol=0)  # the same torch ops, regrouped


def test_levels_keep_partitions_acyclic():
    """a -> unsupported -> b, with a and b both supported: two partitions, never one."""
    graph = torch.fx.Graph()
    x = graph.placeholder("x")
    a = graph.call_function(torch.relu, (x,))
    u = graph.call_function(torch.sort, (a,))
    v = graph.call_function(lambda t: t, (u,))
    b = graph.call_function(torch.add, (a, v))
    graph.output(b)
    supported = lambda n: n is not u  # noqa: E731
    parts = fx_partition.propose(graph, supported)
    assert parts.left_in_torch == [u]
    assert [set(p) for p in parts.partitions] == [{a}, {v, b}]
    assert fx_partition.partition_is_valid(graph, parts.partitions)
    assert not fx_partition.partition_is_valid(graph, [[a, b], [v]])
