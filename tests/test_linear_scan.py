"""The linear recurrence h[t] = a[t] * h[t-1] + b[t] (the IR's linear_scan) in the scan generator
(compiler/codegen/scan.py), against its reference and a sequential loop: any axis, rows of many
chunks, odd lengths, size-1 and empty dims, 16-bit inputs, NaN and inf; torch's associative_scan
higher-order op (compiler/frontend/fx/scans.py) with the combine functions that have a kernel,
and those that stay in torch; its generic mode (compiler/fx_vmap.py); and transformers' Mamba
(tiny config) through torch.compile on both paths. The bounds sanitizer is on (conftest)."""
from __future__ import annotations

import sys

import pytest
import torch
import torch._higher_order_ops.associative_scan  # noqa: F401  (the module, below)
from torch.utils import _pytree as pytree

from trident.compiler.codegen import scan
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import DEVICE, assert_matches_reference, compile_with_reports, ops_in_torch

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

HOP = sys.modules["torch._higher_order_ops.associative_scan"]


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(scan, "MAX_CHUNK", 4)  # rows of many chunks at interpreter-friendly sizes


def recurrence(a: torch.Tensor, b: torch.Tensor, axis: int) -> torch.Tensor:
    """h[t] = a[t] * h[t-1] + b[t], h[-1] = 0, one step at a time (float64)."""
    a, b = a.double().movedim(axis, 0), b.double().movedim(axis, 0)
    h, out = torch.zeros_like(b[0]), []
    for t in range(b.shape[0]):
        h = a[t] * h + b[t]
        out.append(h)
    return (torch.stack(out) if out else torch.zeros_like(b)).movedim(0, axis)


def scan_graph(shape, axis, dtype=torch.float32):
    b = GraphBuilder("linear_scan")
    a = b.input("a", TensorType(tuple(shape), dtype))
    x = b.input("b", TensorType(tuple(shape), dtype))
    return b.finish([b.add1("linear_scan", [a, x], {"axis": axis})])


def coefficients(shape, rng, dtype=torch.float32):
    """Decay factors in (0, 1], as a discretized state space's exp(A * dt) are."""
    return (torch.rand(shape, generator=rng) * 0.9 + 0.1).to(dtype)


@pytest.mark.parametrize("shape, axis", [((3, 13), 1), ((13,), 0), ((2, 9, 5), 1), ((5, 2, 11), 2),
                                         ((9, 3), 0), ((2, 3, 7, 4), 2)])
def test_against_a_sequential_loop(shape, axis, small_chunks, rng):
    a, b = coefficients(shape, rng), torch.randn(shape, generator=rng)
    engine = assert_matches_reference(scan_graph(shape, axis), [a, b])
    assert [s.kind for s in engine.plan.steps] == ["kernel"]
    from trident.compiler.testing import run_engine
    (got,) = run_engine(engine, a, b)
    torch.testing.assert_close(got.cpu().double(), recurrence(a, b, axis), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("shape, axis", [((1, 1), 1), ((4, 1), 1), ((1, 6), 1), ((0, 5), 1), ((3, 0), 1)])
def test_size_one_and_empty_dims(shape, axis, rng):
    assert_matches_reference(scan_graph(shape, axis), [coefficients(shape, rng), torch.randn(shape, generator=rng)])


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_16_bit_inputs_recur_in_fp32(dtype, small_chunks, rng):
    a, b = coefficients((3, 21), rng, dtype), torch.randn(3, 21, generator=rng).to(dtype)
    assert_matches_reference(scan_graph((3, 21), 1, dtype), [a, b])


def test_nan_and_inf_reach_every_later_step(small_chunks):
    a = torch.full((2, 9), 0.5)
    b = torch.ones(2, 9)
    b[0, 2], b[1, 5] = float("nan"), float("inf")
    assert_matches_reference(scan_graph((2, 9), 1), [a, b])


# ------------------------------------------------------------- torch's associative_scan ----
def linear(a_left, b_left, a_right, b_right):
    return [a_left * a_right, a_right * b_left + b_right]


def linear_written_otherwise(a_left, b_left, a_right, b_right):
    return [a_right * a_left, b_right + b_left * a_right]


def scan_of(combine, leaves: int, pick: int = -1):
    """A function that scans its `leaves` inputs along dim 1 with `combine` through the
    higher-order op (what associative_scan(..., combine_mode="pointwise") traces to), then uses
    leaf `pick` of the result."""
    def fn(*xs):
        out = HOP.associative_scan_op(combine, [torch.movedim(x, 1, 0) for x in xs[:leaves]], ())
        return torch.movedim(out[pick], 0, 1) * 2
    return fn


@pytest.mark.parametrize("combine", [linear, linear_written_otherwise])
def test_the_linear_recurrence_is_one_kernel(combine, rng):
    a, b = coefficients((3, 17, 4), rng).to(DEVICE), torch.randn(3, 17, 4, generator=rng).to(DEVICE)
    for pick in (0, 1):  # the running product of a, and h
        got, reports = compile_with_reports(scan_of(combine, 2, pick), a, b)
        want = torch.cumprod(a, 1) * 2 if pick == 0 else recurrence(a, b, 1) * 2
        torch.testing.assert_close(got.double(), want.double(), rtol=1e-5, atol=1e-5)
        assert ops_in_torch(reports) == []


@pytest.mark.parametrize("combine, torch_scan", [(lambda x, y: [x + y], torch.cumsum),
                                                 (lambda x, y: [y * x], torch.cumprod)])
def test_sums_and_products(combine, torch_scan, rng):
    x = (torch.rand(3, 17, generator=rng) + 0.5).to(DEVICE)
    got, reports = compile_with_reports(scan_of(combine, 1), x)
    torch.testing.assert_close(got, torch_scan(x, 1) * 2)
    assert ops_in_torch(reports) == []


def test_other_combine_functions_stay_in_torch(rng):
    """A running maximum has no kernel: the scan runs in torch, the rest around it does not."""
    x = torch.randn(3, 17, generator=rng).to(DEVICE)
    got, reports = compile_with_reports(scan_of(lambda p, q: [torch.maximum(p, q)], 1), x)
    torch.testing.assert_close(got, torch.cummax(x, 1).values * 2)
    in_torch = ops_in_torch(reports)
    assert len(in_torch) == 1 and "not a sum, a product or a linear recurrence" in in_torch[0]


def test_the_generic_mode_runs_in_kernels(rng):
    """combine_mode="generic" (the CPU's): torch's own log-depth scan, its combine function under
    one torch.vmap per level; compiler/fx_vmap.py lowers each vmap of an elementwise function of
    stacks to the function of the stacks, and the rest is slices, concats and pads."""
    def combine(left, right):
        return left[0] * right[0], right[0] * left[1] + right[1]

    def fn(a, b):
        return HOP.associative_scan(combine, (a, b), dim=2, combine_mode="generic")[1] * 2

    a, b = coefficients((2, 3, 11, 4), rng).to(DEVICE), torch.randn(2, 3, 11, 4, generator=rng).to(DEVICE)
    got, reports = compile_with_reports(fn, a, b)
    torch.testing.assert_close(got.double(), recurrence(a, b, 2) * 2, rtol=1e-5, atol=1e-5)
    assert ops_in_torch(reports) == []


# ------------------------------------------------------------------------------ Mamba ----
def _pointwise_associative_scan(combine_fn, xs, dim, reverse=False, combine_mode="pointwise"):
    """torch's associative_scan as it runs in pointwise mode, which it allows on CUDA only: the
    leaves moved to dim 0, the higher-order op with the combine function on flat leaves."""
    leaves, spec = pytree.tree_flatten(xs)
    moved = [torch.movedim(x, dim, 0) for x in leaves]
    if reverse:
        moved = [torch.flip(x, [0]) for x in moved]

    def flat(*args):
        n = len(moved)
        left, right = (pytree.tree_unflatten(list(args[i:i + n]), spec) for i in (0, n))
        return pytree.tree_leaves(combine_fn(left, right))

    out = HOP.associative_scan_op(flat, moved, ())
    out = [torch.flip(x, [0]) for x in out] if reverse else out
    return pytree.tree_unflatten([torch.movedim(x, 0, dim) for x in out], spec)


@pytest.mark.parametrize("path", ["pointwise", "as_it_comes"])
def test_mamba_scans_its_state_space_in_kernels(path, monkeypatch):
    """transformers' Mamba under torch.compile: on a GPU its selective scan is the higher-order
    op in pointwise mode (one kernel); on the CPU torch allows only the generic mode, so the
    first case puts the GPU's path in there (the eager reference runs first, unchanged)."""
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    config = transformers.MambaConfig(hidden_size=32, num_hidden_layers=2, vocab_size=100, state_size=8,
                                      expand=2)  # (use_cache: its states copy_ into a cache)
    model = transformers.MambaModel(config).eval().to(DEVICE)
    ids = torch.randint(0, 100, (2, 11)).to(DEVICE)
    with torch.no_grad():
        want = model(ids).last_hidden_state
    if path == "pointwise":
        monkeypatch.setattr(HOP, "associative_scan", _pointwise_associative_scan)
    got, reports = compile_with_reports(lambda t: model(t).last_hidden_state, ids)
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)
    assert ops_in_torch(reports) == []
