"""topk (and through it sorts and argsorts) through the sort generator (compiler/codegen/sort.py):
whole rows sorted in registers, checked against torch.sort(stable=True) bit for bit: every dtype
it takes (int64 keys in two passes), either direction, any axis (strided rows), rows that are not powers of two, ties, NaN,
infinities and signed zeros, size-1 and empty dims; what it does not take runs in torch, named by
explain; ONNX TopK against onnxruntime. The bounds sanitizer is on (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trident.compiler import group_kinds
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import compile_and_run
from trident.tools.explain import explain_graph, render_text

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
KEY_DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int16, torch.int8,
              torch.uint8, torch.bool]


def topk_graph(shape, dtype, axis, k, largest, outputs=(0, 1)):
    b = GraphBuilder("topk")
    x = b.input("x", TensorType(tuple(shape), dtype))
    made = b.add("topk", [x], {"k": k, "axis": axis, "largest": largest})
    return b.finish([made[o] for o in outputs])


def fresh(shape, dtype, rng) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=rng).bool()
    if dtype.is_floating_point:
        return (torch.randn(shape, generator=rng) * 4).to(dtype)
    low, high = (0, 256) if dtype == torch.uint8 else (-100, 100)
    return torch.randint(low, high, shape, generator=rng).to(dtype)


def same_bits(got: torch.Tensor, want: torch.Tensor) -> bool:
    """Equal element for element, floats by their bits (-0.0 is not 0.0, NaN is NaN)."""
    if got.dtype.is_floating_point:
        bits = {2: torch.int16, 4: torch.int32}[got.dtype.itemsize]
        return torch.equal(got.view(bits), want.view(bits))
    return torch.equal(got, want)


def check(shape, dtype, axis, k, largest, x):
    """Values and indices bit for bit against torch's stable sort; the engine's one kernel the sort."""
    engine, (values, indices) = compile_and_run(topk_graph(shape, dtype, axis, k, largest), [x])
    want_values, want_indices = torch.sort(x, dim=axis, descending=largest, stable=True)
    assert same_bits(values.cpu(), want_values.narrow(axis, 0, k))
    assert torch.equal(indices.cpu(), want_indices.narrow(axis, 0, k))
    assert [s.kind for s in engine.plan.steps] == ["kernel"] and torch_steps(engine) == []


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dtype", KEY_DTYPES)
def test_every_key_dtype_both_ways(dtype, largest, rng):
    shape = (5, 37)  # rows not a power of two; integers of a narrow range tie often
    check(shape, dtype, 1, 37, largest, fresh(shape, dtype, rng))


@pytest.mark.parametrize("shape, axis, k", [((3, 13), 1, 4), ((13,), 0, 13), ((2, 7, 5), 1, 3),
                                            ((6, 2, 9), 0, 6), ((4, 1, 11), 2, 1), ((1, 1), 1, 1),
                                            ((9, 1), 0, 5), ((70, 3), 1, 2)])
@pytest.mark.parametrize("largest", [True, False])
def test_any_axis_and_k(shape, axis, k, largest, rng):
    check(shape, torch.float32, axis, k, largest, fresh(shape, torch.float32, rng))


@pytest.mark.parametrize("largest", [True, False])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
def test_nan_infinities_and_signed_zeros(dtype, largest, rng):
    """torch orders NaN (of either sign bit) above +inf, keeps -0.0 and 0.0 equal (stable: in
    their order), and gives the values back as they were."""
    x = fresh((3, 12), dtype, rng)
    specials = torch.tensor([float("nan"), -float("nan"), float("inf"), -float("inf"), -0.0, 0.0,
                             -0.0, 0.0, float("nan")], dtype=dtype)
    x[:, :9] = specials[torch.randperm(9, generator=rng)]
    check((3, 12), dtype, 1, 12, largest, x)


def test_strided_rows_of_a_transposed_input(rng):
    """A sort along dim 0 of a [L, rows] tensor reads each row with stride `rows`."""
    check((33, 6), torch.float32, 0, 33, False, fresh((33, 6), torch.float32, rng))


def test_only_the_indices(rng):
    """An argsort: the values are not stored (nor loaded again)."""
    x = fresh((4, 10), torch.float32, rng)
    engine, (indices,) = compile_and_run(topk_graph((4, 10), torch.float32, 1, 10, True, (1,)), [x])
    assert torch.equal(indices.cpu(), torch.sort(x, dim=1, descending=True, stable=True).indices)


@pytest.mark.parametrize("shape, axis, k", [((0, 5), 1, 2), ((4, 0), 1, 0), ((3, 5), 1, 0)])
def test_empty(shape, axis, k):
    x = torch.randn(shape)
    engine, (values, indices) = compile_and_run(topk_graph(shape, torch.float32, axis, k, True), [x])
    want = torch.topk(x, k, dim=axis)
    assert values.shape == want.values.shape and indices.shape == want.indices.shape


def test_rows_past_the_limit_and_wide_keys_run_in_torch(monkeypatch, rng):
    monkeypatch.setattr(group_kinds, "MAX_SORT_LENGTH", 16)
    x = fresh((2, 17), torch.float32, rng)
    engine, (values, _) = compile_and_run(topk_graph((2, 17), torch.float32, 1, 3, True), [x])
    assert torch_steps(engine) == ["topk"] and torch.equal(values.cpu(), torch.topk(x, 3).values)
    wide = topk_graph((2, 5), torch.int64, 1, 2, True)
    assert "topk of int64 keys with k < the row (the sort kernel sorts their whole rows)" in \
        render_text(explain_graph(wide, "fp32"), passes=False, source=False)


@pytest.mark.parametrize("largest", [False, True])
@pytest.mark.parametrize("shape, axis", [((3, 37), 1), ((40, 2), 0), ((1, 1), 1)])
def test_int64_keys_in_two_passes(shape, axis, largest, rng):
    """Whole rows of int64 keys: the low halves sorted, then the high halves in that order (a
    two-digit radix sort). Keys that differ only in one half, the extremes, ties."""
    x = torch.randint(-2**62, 2**62, shape, generator=rng)
    special = torch.tensor([2**63 - 1, -2**63, 5, 5 + 2**32, 5 - 2**32, 5, 7, 7, -1, 0, 2**31, -2**31])
    n = min(x.numel(), special.numel())
    x.view(-1)[:n] = special[:n]
    check(shape, torch.int64, axis, shape[axis], largest, x)


@pytest.mark.parametrize("dtype", [np.float32, np.float16, np.int32])
@pytest.mark.parametrize("largest, sorted_", [(1, 1), (0, 1)])
def test_onnx_top_k_against_onnxruntime(dtype, largest, sorted_):
    model = make_model([node("TopK", ["x", "k"], ["v", "i"], axis=1, largest=largest, sorted=sorted_)],
                       {"x": (dtype, [3, 50, 4])}, ["v", "i"], initializers={"k": np.array([7], np.int64)})
    x = np.random.default_rng(3).integers(-20, 20, [3, 50, 4]).astype(dtype)  # ties among 50
    engine = check_engine(model, {"x": x})
    assert torch_steps(engine) == []


# ----------------------------------------------------------------- through torch.compile ----
SORTS = {
    "sort": lambda t: torch.sort(t),
    "sort_dim0_descending": lambda t: torch.sort(t, dim=0, descending=True),
    "sort_stable_method": lambda t: t.sort(stable=True, descending=True),
    "argsort": lambda t: torch.argsort(t, dim=1),
    "argsort_method_descending": lambda t: t.argsort(descending=True),
    "msort": lambda t: torch.msort(t),
    "topk_smallest": lambda t: torch.topk(t, 9, largest=False),
    "sort_of_int32_then_scaled": lambda t: torch.sort((t * 8).int(), dim=1).values * 2,
}


@pytest.mark.parametrize("name", sorted(SORTS))
def test_torch_sorts(name, rng):
    """torch.sort, argsort, msort and topk in the sort kernel, NaN included (distinct floats:
    torch's unstable order of ties is its kernel's, so none are drawn here but in the int32 row)."""
    from trident.compiler.testing import compile_with_reports, ops_in_torch

    x = fresh((4, 37), torch.float32, rng)
    x[0, 3] = float("nan")
    x, fn = x.to(DEV), SORTS[name]
    got, reports = compile_with_reports(fn, x)
    want = fn(x)
    for g, w in zip(*(r if isinstance(r, tuple) else (r,) for r in (got, want))):
        assert same_bits(g, w) if g.dtype.is_floating_point else torch.equal(g, w)
    assert ops_in_torch(reports) == []


def test_torch_sort_with_dynamic_shapes():
    """A shape-generic sort kernel holds the profile's longest row (codegen/dynamic_kernel.py)."""
    torch._dynamo.reset()
    sort = torch.compile(lambda t: torch.sort(t, dim=1, descending=True), backend="trident", dynamic=True)
    for n in (5, 9, 17):
        x = torch.randn(3, n, device=DEV)
        got, want = sort(x), torch.sort(x, dim=1, descending=True)
        assert torch.equal(got.values, want.values) and torch.equal(got.indices, want.indices)
    torch._dynamo.reset()


def test_int64_values_only(rng):
    """torch.sort(x).values of int64 keys: the values output holds the first pass's order."""
    x = torch.randint(-2**62, 2**62, (3, 37), generator=rng)
    _, (values,) = compile_and_run(topk_graph((3, 37), torch.int64, 1, 37, False, (0,)), [x])
    assert torch.equal(values.cpu(), torch.sort(x, dim=1).values)
