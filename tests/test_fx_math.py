"""torch's activations, math functions and pads through torch.compile(backend="trident"): the direct
converters (compiler/frontend/fx/math_ops.py) and the calls imported through torch's own
decomposition (compiler/frontend/fx/aten.py), run as kernels (bounds sanitizer on) against eager
torch, with infinities, NaN, signed zeros and values where the naive formulas lose their digits."""
from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from trident.compiler.frontend.fx.aten import traced_call
from trident.compiler.frontend.fx.registry import FUNCTIONS
from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

EDGES = [0.0, -0.0, 1e-30, -1e-30, 1e-8, -1e-8, 0.5, -0.5, 3.0, -3.0, 25.0, -25.0, 90.0, -90.0,
         math.inf, -math.inf, math.nan]


def with_edges(rows: int, cols: int) -> torch.Tensor:
    """Random normal values (not a multiple of any block), the edge values in the first row."""
    x = torch.randn(rows, cols) * 3
    x.view(-1)[:len(EDGES)] = torch.tensor(EDGES)
    return x.to(DEVICE)


def compiled_matches_eager(fn, x, *, rtol=1e-5, atol=1e-6):
    """Compiled == eager (NaN where eager has NaN), with nothing left in torch."""
    got, reports = compile_with_reports(fn, x)
    want = fn(x)
    torch.testing.assert_close(got, want, rtol=rtol, atol=atol, equal_nan=True)
    assert [str(i) for r in reports for i in r.in_torch] == []
    assert sum(r.torch_steps for r in reports) == 0 and sum(r.num_kernels for r in reports) > 0


# Converted directly (one IR activation each, or a short composition).
DIRECT = {
    "elu": lambda x: F.elu(x, 0.7),
    "selu": F.selu,
    "celu": lambda x: F.celu(x, 0.5),
    "softplus": F.softplus,
    "softplus_beta_threshold": lambda x: F.softplus(x, beta=0.5, threshold=3.0),
    "logsigmoid": F.logsigmoid,
    "mish": F.mish,
    "softsign": F.softsign,
    "hardshrink": lambda x: F.hardshrink(x, 0.4),
    "softshrink": lambda x: F.softshrink(x, 0.4),
    "rrelu_eval": lambda x: F.rrelu(x, 0.1, 0.3, training=False),
    "glu": lambda x: F.glu(x, -1),
    "glu_dim0": lambda x: F.glu(x[:6], 0),
    "log1p": lambda x: torch.log1p(x),
    "expm1": lambda x: torch.expm1(x),
    "square": lambda x: x.square(),
    "atan": torch.atan,
    "sign": torch.sign,  # 0 at NaN, as torch (ONNX's Sign keeps NaN)
    # division rounding modes (Python's // on floats: torch's fmod-based form), integer floor
    "div_floor": lambda x: torch.div(x, 0.7, rounding_mode="floor"),
    "floordiv_negative": lambda x: x // -0.3,
    "div_floor_by_x": lambda x: torch.div(torch.full_like(x, 2.5), x, rounding_mode="floor"),
    "div_trunc": lambda x: torch.div(x, -0.7, rounding_mode="trunc"),
    "round_decimals": lambda x: torch.round(x, decimals=2) + torch.round(x * 100, decimals=-1),
    "fmax_fmin": lambda x: torch.fmax(x, x.flip(0)) - torch.fmin(x, x.flip(1)),
    "var_mean": lambda x: sum(torch.var_mean(x.nan_to_num(0.0, 0.0, 0.0), 1, keepdim=True)),
    "std_mean": lambda x: sum(torch.std_mean(x.nan_to_num(0.0, 0.0, 0.0), dim=0, correction=0)),
    "matmul_vector": lambda x: x.nan_to_num(0.0, 0.0, 0.0) @ torch.linspace(-1, 1, 18, device=x.device),
    "vector_matmul": lambda x: torch.linspace(-1, 1, 6, device=x.device) @ x.nan_to_num(0.0, 0.0, 0.0),
    "mT": lambda x: x.mT * 2,
    "argmax_keepdim": lambda x: x.nan_to_num(0.0, 0.0, 0.0).argmax(keepdim=True).float(),
    "sgn": lambda x: x.sgn(),
    "asin": lambda x: torch.asin(x / 4),  # (NaN past |x| > 1, as torch)
    "acos": lambda x: torch.arccos(x / 4),
    "erfc": torch.special.erfc,
    "isinf": lambda x: torch.isinf(x).float(),
    "trunc": lambda x: torch.trunc(x),
    "var_rows": lambda x: torch.var(x.nan_to_num(0.0, 0.0, 0.0), 1, keepdim=True),
    "var_unbiased_false": lambda x: x.nan_to_num(0.0, 0.0, 0.0).var(0, False),
    "std_every_dim": lambda x: torch.std(x.nan_to_num(0.0, 0.0, 0.0), correction=0),
    "std_correction_2": lambda x: x.nan_to_num(0.0, 0.0, 0.0).std(dim=(0, 1), correction=2),
    # N <= correction: a division by zero (NaN for one value, inf or NaN past it, as torch)
    "var_of_one_value": lambda x: x.nan_to_num(0.0, 0.0, 0.0)[:, :1].var(1),
    "var_correction_past_the_length": lambda x: x.nan_to_num(0.0, 0.0, 0.0)[:, :2].var(1, correction=3),
    "std_fractional_correction": lambda x: x.nan_to_num(0.0, 0.0, 0.0).std(1, correction=0.5),
    "rms_norm": lambda x: F.rms_norm(x.nan_to_num(0.0, 0.0, 0.0), (18,), torch.linspace(0.5, 2, 18, device=x.device)),
    "instance_norm": lambda x: F.instance_norm(x.nan_to_num(0.0, 0.0, 0.0).reshape(2, 3, 3, 6)),
    "mean_axis": lambda x: x.mean(axis=1),
    # the max taken as 0 where infinite: rows of -inf give -inf, rows holding +inf give +inf
    "logsumexp": lambda x: torch.logsumexp(x, 1),
    "logsumexp_dims_keepdim": lambda x: torch.logsumexp(x.reshape(2, 3, 18), (0, 2), keepdim=True),
    "logsumexp_rows_of_minus_inf": lambda x: torch.logsumexp(x.masked_fill(x < 0.5, -math.inf), 0),
    "logsumexp_integers": lambda x: torch.logsumexp(x.nan_to_num(0.0, 9.0, -9.0).int(), -1),
    "exp2": lambda x: torch.exp2(x / 4),   # (inf past 2^128, 0 far below: as torch)
    "log2": lambda x: torch.log2(x),       # -inf at +-0, NaN below 0
    "log10": lambda x: torch.log10(x.abs()),
    "signbit": lambda x: torch.signbit(x).float() + torch.signbit((x * 4).int()).float(),
    "isclose": lambda x: torch.isclose(x, x * (1 + 3e-6)).float() + torch.isclose(x, x.flip(0), 0.0, 0.5).float(),
    "isclose_equal_nan": lambda x: torch.isclose(x, x.flip(1), rtol=0.5, equal_nan=True).float(),
    "cosine_similarity": lambda x: F.cosine_similarity(x.nan_to_num(0.0, 0.0, 0.0), x.flip(0).nan_to_num(0.0, 0.0, 0.0)),
    "cosine_rows": lambda x: F.cosine_similarity(x.nan_to_num(0.0, 0.0, 0.0).reshape(3, 2, 18), torch.linspace(-1, 1, 18, device=x.device)[None, None], dim=-1),
    # F.pad's other modes: one IR pad each (ONNX's reflect / edge / wrap), a per-element move
    "pad_reflect": lambda x: F.pad(x.reshape(2, 3, 18), (5, 17), mode="reflect") * 2,
    "pad_replicate": lambda x: F.pad(x.reshape(1, 6, 18), (2, 30, 0, 3), mode="replicate") * 2,
    "pad_circular": lambda x: F.pad(x.reshape(1, 6, 18), (18, 1, 6, 0), mode="circular") * 2,
}


@pytest.mark.parametrize("name", sorted(DIRECT))
def test_direct_converters_match_eager(name):
    compiled_matches_eager(DIRECT[name], with_edges(6, 18))


# No converter of their own: imported through torch's decomposition to core ATen.
DECOMPOSED = {
    "broadcast_to": lambda x: x.broadcast_to(2, 6, 18) * 2,
    "pixel_shuffle": lambda x: F.pixel_shuffle(x.reshape(1, 12, 3, 3), 2) + 1,
    "channel_shuffle": lambda x: F.channel_shuffle(x.reshape(1, 6, 3, 6), 3) + 1,
    "nan_to_num": lambda x: torch.nan_to_num(x, 1.0, 2.0, -2.0),
    "tile": lambda x: x.tile(2, 1) + 1,
    "lerp": lambda x: torch.lerp(x, x * 2, 0.3),
    "diff": lambda x: torch.diff(x, dim=1),
    "swapdims": lambda x: x.swapdims(0, 1) + 1,
    "pairwise_distance": lambda x: F.pairwise_distance(x.nan_to_num(0.0, 1.0, 1.0), x.nan_to_num(0.0, 1.0, 1.0) * 0.5 + 1),
    "frac": lambda x: torch.frac(x),
}


@pytest.mark.parametrize("name", sorted(DECOMPOSED))
def test_calls_without_a_converter_import_through_torchs_decomposition(name):
    compiled_matches_eager(DECOMPOSED[name], with_edges(6, 18))


def test_log1p_and_expm1_keep_their_digits_near_zero():
    # log(1 + 1e-10) is log(1) = 0 in fp32; the corrected forms keep every digit
    x = torch.cat([torch.logspace(-30, 1, 200), -torch.logspace(-30, -0.01, 200)]).to(DEVICE)
    for fn in (torch.log1p, torch.expm1):
        got, _ = compile_with_reports(fn, x)
        want = fn(x.double())
        assert ((got.double() - want).abs() / want.abs()).max() < 1e-6, fn.__name__


def test_inverse_trigonometry_and_erfc_keep_their_digits():
    # asin and acos near |x| = 1, atan across its reduction's seams (tan(pi/8), tan(3pi/8)),
    # erfc in its tail, where 1 - erf(x) would cancel to 0
    seams = torch.tensor([0.41421354, 0.41421357, 2.4142134, 2.4142137, 0.99999994, -0.99999994])
    x = torch.cat([torch.linspace(-1, 1, 2001), seams, torch.randn(300) * 30]).to(DEVICE)
    for fn, rtol in ((torch.atan, 3e-7), (torch.asin, 3e-7), (torch.acos, 3e-7)):
        got, _ = compile_with_reports(fn, x)
        want = fn(x.double())
        ok = want.isfinite() & (want != 0)
        assert ((got.double() - want).abs() / want.abs())[ok].max() < rtol, fn.__name__
    t = torch.linspace(-6, 9, 3001, device=DEVICE)
    got, _ = compile_with_reports(torch.special.erfc, t)
    want = torch.special.erfc(t.double())
    assert ((got.double() - want).abs() / want).max() < 2e-5  # (exp2 of -z^2 rounds at z = 9)
    assert ((got.double() - want).abs() / want)[t < 4].max() < 2e-6


@pytest.mark.parametrize("fn", [torch.atan2, torch.hypot], ids=["atan2", "hypot"])
def test_two_argument_math_at_every_pair_of_edges(fn):
    """atan2 and hypot, one IR op each, at every pair of edge values (signed zeros choose 0 or
    pi, infinities the diagonals; hypot is inf beside a NaN, as C's), beside random pairs whose
    magnitudes differ by up to 1e30 (the squares would overflow), against float64."""
    edges = torch.tensor(EDGES)
    y, x = torch.meshgrid(edges, edges, indexing="ij")
    spread = torch.randn(2, 7, 41) * torch.logspace(-15, 15, 41)
    y = torch.cat([y.reshape(-1), spread[0].reshape(-1)]).to(DEVICE)
    x = torch.cat([x.reshape(-1), spread[1].reshape(-1)]).to(DEVICE)
    got, reports = compile_with_reports(fn, y, x)
    want = fn(y.double(), x.double()).float()
    torch.testing.assert_close(got, want, rtol=3e-7, atol=0, equal_nan=True)
    numbers = ~want.isnan()
    assert torch.equal(torch.signbit(got[numbers]), torch.signbit(want[numbers]))  # -0 and +0 apart
    assert ops_in_torch(reports) == [] and sum(r.num_kernels for r in reports) > 0


def test_copysign_takes_every_sign_bit():
    """copysign(a, b) at every pair of edge values, b's NaNs with either sign bit: |a| with b's sign
    bit, compared bit for bit (signed zeros and NaNs' signs included)."""
    edges = torch.tensor(EDGES + [-math.nan])
    a, b = (t.reshape(-1).to(DEVICE) for t in torch.meshgrid(edges, edges, indexing="ij"))
    got, reports = compile_with_reports(lambda a, b: torch.copysign(a, b), a, b)
    want = torch.copysign(a, b)
    assert torch.equal(torch.signbit(got), torch.signbit(want))
    torch.testing.assert_close(got, want, rtol=0, atol=0, equal_nan=True)
    assert ops_in_torch(reports) == [] and sum(r.num_kernels for r in reports) > 0


def test_cosine_similarity_of_a_zero_vector_is_zero():
    """Each norm is clamped to eps before the division (torch's order): a zero row gives 0, not NaN;
    tiny rows below eps give their scaled product, as torch."""
    x = torch.randn(5, 33)
    x[1] = 0.0
    x[2] = 1e-12
    y = torch.randn(5, 33)
    got, reports = compile_with_reports(lambda a, b: F.cosine_similarity(a, b, dim=1, eps=1e-8), x.to(DEVICE), y.to(DEVICE))
    torch.testing.assert_close(got, F.cosine_similarity(x, y, dim=1, eps=1e-8).to(DEVICE), rtol=1e-5, atol=1e-7)
    assert got[1].item() == 0.0 and ops_in_torch(reports) == []


def test_cosine_similarity_broadcast_along_its_dim_runs_in_torch():
    x, y = torch.randn(4, 7), torch.randn(4, 1)
    got, reports = compile_with_reports(lambda a, b: F.cosine_similarity(a, b, dim=1) * 2, x.to(DEVICE), y.to(DEVICE))
    torch.testing.assert_close(got, (F.cosine_similarity(x, y, dim=1) * 2).to(DEVICE))
    assert any("cosine_similarity" in op for op in ops_in_torch(reports))


def test_two_argument_math_promotes_integers():
    y = torch.arange(-3, 4).to(DEVICE)
    got, reports = compile_with_reports(lambda a, b: torch.atan2(a, b) + torch.hypot(a.float(), b.float()), y, y.flip(0))
    want = torch.atan2(y, y.flip(0)) + torch.hypot(y.float(), y.flip(0).float())
    torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-6)
    assert ops_in_torch(reports) == []


def test_integer_floor_division_matches_torch():
    """a // b on integers: the truncated quotient (prims.trunc_div), one less where the
    remainder's sign differs from the divisor's, all in the kernels."""
    x = torch.arange(-20, 21).to(DEVICE)
    for fn in (lambda x: x // -3, lambda x: torch.floor_divide(x, 4), lambda x: torch.div(x, -7, rounding_mode="floor"),
               lambda x: x // x.flip(0).clamp(min=1)):
        got, reports = compile_with_reports(fn, x)
        assert torch.equal(got, fn(x))
        assert ops_in_torch(reports) == []


def test_a_random_call_stays_in_torch():
    _, reports = compile_with_reports(lambda x: torch.relu(x) + torch.rand_like(x) * 0,
                                      torch.randn(4, 8, device=DEVICE))
    assert [i.op for r in reports for i in r.in_torch] == ["torch.rand_like"]


def test_the_traced_call_is_cached_on_shapes_dtypes_and_arguments():
    meta = torch.empty(3, 5, device="meta")

    def trace(x, dim):
        return traced_call("call_function", torch.logsumexp, (x, dim), {},
                                   lambda a: a if isinstance(a, torch.Tensor) else None,
                                   lambda t: t in FUNCTIONS)

    first, again, other = trace(meta, 1), trace(meta, 1), trace(meta, 0)
    assert first is not None and first[0] is again[0] and other[0] is not first[0]
    assert trace(meta.int(), 1) is None or trace(meta.int(), 1)[0] is not first[0]


def test_in_place_methods_internals_and_symbolic_sizes_are_not_decomposed():
    x = torch.empty(3, 5, device="meta")
    take = lambda a: a if isinstance(a, torch.Tensor) else None  # noqa: E731
    assert traced_call("call_method", "logit_", (x,), {}, take, lambda t: True) is None

    # vmap's internals change global state when called: never traced
    assert traced_call("call_function", torch._functorch.predispatch._add_batch_dim,
                               (x, 0, 1), {}, take, lambda t: True) is None

    def symbolic(a):
        raise LookupError("a symbolic size")
    assert traced_call("call_function", torch.logsumexp, (x, 1), {}, symbolic,
                               lambda t: True) is None


def test_dynamic_shapes_still_match():
    def fn(x):
        return torch.logsumexp(F.mish(x), -1)

    torch._dynamo.reset()
    compiled = torch.compile(fn, backend="trident", dynamic=True)
    for rows in (3, 5):
        x = torch.randn(rows, 7, device=DEVICE)
        torch.testing.assert_close(compiled(x), fn(x), rtol=1e-5, atol=1e-6)


@pytest.mark.skipif(DEVICE.type != "cpu", reason="x.numpy() of a CUDA tensor is a host copy: a CPU-side graph")
def test_numpy_operators_on_tensors():
    """`x.numpy() % 3 != 1` under dynamo (Reformer's bucket arithmetic): numpy's operators on
    arrays are torch's on tensors, converted as those; numpy's true division is not, and stays."""
    def buckets(x):
        return torch.from_numpy((x.numpy() % 3) != 1) * x

    x = torch.arange(12).reshape(3, 4)
    got, reports = compile_with_reports(buckets, x)
    assert torch.equal(got, buckets(x)) and ops_in_torch(reports) == []
    halves = lambda t: torch.from_numpy(t.numpy() / 2)  # noqa: E731  (float64)
    got, reports = compile_with_reports(halves, x)
    assert torch.equal(got, halves(x)) and any("wrapped_truediv" in i for i in ops_in_torch(reports))


@pytest.mark.skipif(DEVICE.type != "cpu", reason="x.numpy() of a CUDA tensor is a host copy: a CPU-side graph")
def test_a_numpy_promotion_unlike_torchs_runs_that_node_in_torch():
    """numpy multiplies an int64 array by 0.5 into float64 where torch gives float32: the node's
    recorded dtype disagrees with the converter's, so that node runs in torch and the partition
    is split around it, not given up."""
    def scaled(x):
        return torch.from_numpy(x.numpy() * 0.5) + torch.from_numpy(x.numpy() % 3)

    x = torch.arange(12).reshape(3, 4)
    got, reports = compile_with_reports(scaled, x)
    in_torch = ops_in_torch(reports)
    assert got.dtype == torch.float64 and torch.equal(got, scaled(x))
    assert "wrapped_mul" in in_torch[0] and "imported as f32[3,4], but torch computed f64[3,4]" in in_torch[0]
    assert not any("wrapped_mod" in item for item in in_torch)  # (the float64 sum: a torch step)


def test_logsumexp_over_nothing_is_minus_inf():
    """torch's logsumexp of an empty dim is -inf (a sum of no exponentials is 0)."""
    fn = lambda x: torch.logsumexp(x[:, :0] * 2, 1) + x[:, 0]  # noqa: E731
    compiled_matches_eager(fn, with_edges(6, 18))
