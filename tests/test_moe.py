"""Mixture-of-experts layers: the grouped GEMM kernel (kernels/grouped_mm.py) against the torch
reference at fp32 and fp16 (groups of every size, empty ones, rows past the last group, offsets
that are not a partition, odd sizes, transposed expert weights), the torch.fx converters of the
dispatch around it (torch._grouped_mm, transformers' grouped_mm_fallback, histc, the inverse
permutation's row assignment, row gathers of computed tensors), and transformers' MoE models
(tiny configs) through torch.compile against eager, every op in a kernel. The bounds sanitizer is
on (conftest)."""
from __future__ import annotations

import pytest
import torch

from trident.compiler.frontend.fx import import_fx
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import (assert_matches_reference, compile_and_run, compile_with_reports,
                                      ops_in_torch, relative_error)

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

DEV = "cuda" if torch.cuda.is_available() else "cpu"


def grouped_graph(S, K, N, E, dtype=torch.float32, offs_dtype=torch.int32, weight_strides=None):
    b = GraphBuilder("grouped_mm")
    x = b.input("x", TensorType((S, K), dtype))
    w = b.input("w", TensorType((E, K, N), dtype))
    offs = b.input("offs", TensorType((E,), offs_dtype))
    return b.finish([b.add1("grouped_mm", [x, w, offs])])


def kinds(engine) -> list[str]:
    return [s.kind for s in engine.plan.steps]


def grouped_kernels(engine) -> int:
    return sum(s.kind == "kernel" and s.name.startswith("grouped_mm") for s in engine.plan.steps)


@pytest.mark.parametrize("counts", [[10, 0, 7, 12, 3], [0, 0, 37, 0, 0], [1] * 5, [9, 9, 9, 9, 1],
                                    [3, 4, 5, 0, 0]])  # the last: rows past the groups are 0
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_grouped_mm_against_the_reference(counts, precision, rng):
    S, K, N, E = 37, 20, 24, 5
    graph = grouped_graph(S, K, N, E)
    offs = torch.tensor(counts).cumsum(0).to(torch.int32)
    inputs = [torch.randn(S, K, generator=rng), torch.randn(E, K, N, generator=rng), offs]
    engine = assert_matches_reference(graph, inputs, precision)
    assert grouped_kernels(engine) == 1 and "torch" not in kinds(engine)  # (fp16: the casts around it)


@pytest.mark.parametrize("offs", [[5, 3, 40, 12], [-4, 10, 100, 100], [37, 37, 37, 37], [5, 2**32 + 3, 9, 40]])
def test_offsets_that_are_no_partition_stay_inside(offs, rng):
    """Clamped into [0, S] and made non-decreasing, in the kernel as in the reference: no read or
    write outside x and out (the sanitizer watches). An offset past 2^32 clamps to S, not to its
    low 32 bits."""
    S, K, N, E = 37, 8, 16, 4
    inputs = [torch.randn(S, K, generator=rng), torch.randn(E, K, N, generator=rng),
              torch.tensor(offs, dtype=torch.int64)]
    assert_matches_reference(grouped_graph(S, K, N, E, offs_dtype=torch.int64), inputs)


@pytest.mark.parametrize("S, K, N, E", [(1, 1, 1, 1), (130, 70, 33, 3), (5, 16, 200, 9)])
def test_grouped_mm_sizes(S, K, N, E, rng):
    counts = torch.randint(0, S + 1, (E,), generator=rng)
    offs = (counts.cumsum(0) * S // max(int(counts.sum()), 1)).to(torch.int32)
    inputs = [torch.randn(S, K, generator=rng), torch.randn(E, K, N, generator=rng), offs]
    assert_matches_reference(grouped_graph(S, K, N, E), inputs)


def test_empty_rows():
    engine, (out,) = compile_and_run(grouped_graph(0, 4, 8, 2), [torch.randn(0, 4), torch.randn(2, 4, 8),
                                                                   torch.zeros(2, dtype=torch.int32)])
    assert out.shape == (0, 8)


# ---------------------------------------------------------------------- torch frontend ----
def _check(fn, *inputs, in_torch=(), tolerance=1e-5):
    inputs = [x.to(DEV) for x in inputs]
    got, reports = compile_with_reports(fn, *inputs)
    want = fn(*inputs)
    assert relative_error(got.float(), want.float()) < tolerance
    assert sorted(ops_in_torch(reports)) == sorted(in_torch)


def test_torch_grouped_mm_with_transposed_weights(rng):
    """transformers hands [E, N, K] weights over transposed: read through their strides. (torch's
    own grouped_mm takes bf16 only: one bf16 rounding of the output apart; it leaves rows past the
    last group unwritten, so the groups here cover every row.)"""
    weight = torch.randn(4, 24, 16, generator=rng).bfloat16()
    offs = torch.tensor([5, 5, 20, 33], dtype=torch.int32)
    _check(lambda x, w, o: torch._grouped_mm(x, w.transpose(-2, -1), offs=o) * 2,
           torch.randn(33, 16, generator=rng).bfloat16(), weight, offs, tolerance=1e-2)


@pytest.mark.parametrize("bounds", [(8, 0, 7), (5, -2.0, 2.0), (3, 0.5, 0.75)])
def test_histc(bounds, rng):
    """torch's bin formula, the top edge in the last bin, values outside and NaN in none."""
    bins, low, high = bounds
    x = torch.randn(300, generator=rng) * 3
    x[:4] = torch.tensor([float("nan"), high, low, float("inf")])
    _check(lambda t: torch.histc(t, bins=bins, min=low, max=high), x)


@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
def test_histc_of_integers(dtype, rng):
    """CUDA's histc counts integers (transformers' int32 expert ids there): the bounds truncated
    to integers, the counts in the input's dtype. The CPU's histc takes floats only (dynamo's fake
    tensors refuse it there too), so the graph is symbolically traced and the reference is the
    float histc of the same values with the truncated bounds."""
    class Count(torch.nn.Module):
        def forward(self, ids):
            return torch.histc(ids, bins=7, min=0.7, max=6.2)  # bounds 0 and 6
    ids = torch.randint(-2, 9, (301,), generator=rng, dtype=dtype)
    graph = import_fx(torch.fx.symbolic_trace(Count()), (ids,))
    engine, (got,) = compile_and_run(graph, [ids])
    want = torch.histc(ids.float(), bins=7, min=0, max=6)
    assert got.dtype == dtype and torch.equal(got.cpu(), want.to(dtype))
    assert "torch" not in kinds(engine)


def test_inverse_permutation_by_row_assignment(rng):
    """transformers' MoE: `inverse[perm] = arange(n)`, then rows gathered back through it. perm is
    a full sort's order: the scatter is an argsort of it (passes/permutations.py), in a kernel."""
    def unsort(keys, rows):
        perm = torch.argsort(keys)
        inverse = torch.empty_like(perm)
        inverse[perm] = torch.arange(perm.numel(), device=perm.device)
        return (rows[perm] * 2)[inverse]
    _check(unsort, torch.randn(20, generator=rng), torch.randn(20, 6, generator=rng))


@pytest.mark.parametrize("case", ["top_k_only", "not_counting"])
def test_row_assignments_that_are_no_inverse_stay_scatters(case, rng):
    """Rows of a partial top-k (not every row named) or values other than 0..n-1: a ScatterND,
    in kernels (passes/scatter_rows.py: the scatter kernel for a few rows, else each row's last
    writer)."""
    def assign(keys, base):
        if case == "top_k_only":
            rows = torch.topk(keys, 5).indices
            values = torch.arange(5, device=keys.device)
        else:
            rows, values = torch.argsort(keys), torch.arange(20, device=keys.device) * 3
        out = base.clone()
        out[rows] = values
        return out
    _check(assign, torch.randn(20, generator=rng), torch.arange(20) * -1, in_torch=[])


# ------------------------------------------------------------------ transformers models ----
t = pytest.importorskip("transformers")
V = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
         vocab_size=100, max_position_embeddings=64, num_key_value_heads=1)
MODELS = {
    "mixtral": lambda: t.MixtralModel(t.MixtralConfig(**V, num_local_experts=4, num_experts_per_tok=2)),
    "qwen2_moe": lambda: t.Qwen2MoeModel(t.Qwen2MoeConfig(**V, num_experts=4, num_experts_per_tok=2,
                                                          moe_intermediate_size=32,
                                                          shared_expert_intermediate_size=32)),
    "olmoe": lambda: t.OlmoeModel(t.OlmoeConfig(**V, num_experts=4, num_experts_per_tok=2)),
}


@pytest.mark.parametrize("name", sorted(MODELS))
def test_moe_models_through_torch_compile(name):
    """The experts' GEMMs, the router's top-k, the sort by expert, the histogram of tokens per
    expert, the gathers and the inverse permutation: every op in a kernel."""
    torch.manual_seed(0)
    model = MODELS[name]().eval().to(DEV)
    ids = torch.randint(0, 100, (2, 8), device=DEV)
    with torch.no_grad():
        want = model(input_ids=ids).last_hidden_state
    got, reports = compile_with_reports(lambda x: model(input_ids=x).last_hidden_state, ids)
    assert relative_error(got, want) < 1e-5
    assert ops_in_torch(reports) == []


def test_moe_model_through_torch_export():
    """build_engine of the nn.Module (torch.export): the inverse permutation is an index_put there."""
    from trident.compiler import build_engine
    from trident.compiler.testing import run_engine

    torch.manual_seed(0)
    model = MODELS["mixtral"]().eval()
    ids = torch.randint(0, 100, (2, 8))

    class LastHidden(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model(input_ids=x).last_hidden_state

    with torch.no_grad():
        want = LastHidden()(ids)
    engine = build_engine(LastHidden().eval(), example_inputs=(ids,), precision="fp32")
    (got,) = run_engine(engine, ids)
    assert relative_error(got.cpu(), want) < 1e-5
    assert [s.node.op for s in engine.plan.steps if s.kind == "torch"] == []
