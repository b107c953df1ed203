"""The torch functions the fx frontend writes out as other IR ops (compiler/frontend/
fx/decompose.py), through both fx entry points, against eager torch at fp32 (and fp16 where
the op is in a model's fp16 path), on random data with odd sizes and size-1 dims."""
from __future__ import annotations

import math
import operator

import pytest
import torch
import torch.nn.functional as F

from trident.compiler import build_engine, group_kinds
from trident.compiler.errors import UnsupportedError
from trident.compiler.testing import compile_with_reports, ops_in_torch, relative_error, run_engine

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # torch.compile builds for its inputs' device


def _check(module, *inputs, tol=1e-5, kernels=True):
    module = module.eval()
    with torch.no_grad():
        ref = module(*inputs)
    engine = build_engine(module, "fp32", example_inputs=inputs)
    (got,) = run_engine(engine, *inputs)
    assert got.shape == ref.shape
    assert relative_error(got, ref) < tol, relative_error(got, ref)
    if kernels:
        assert engine.num_kernels > 0 and not [s for s in engine.plan.steps if s.kind == "torch"]
    return engine


class StandardizedConv(torch.nn.Module):
    """timm's ScaledStdConv2d: the weight standardised per output channel by a batch norm in
    training mode over the weight itself (no running statistics)."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.randn(6, 3, 3, 3))
        self.gain = torch.nn.Parameter(torch.rand(6) + 0.5)

    def forward(self, x):
        w = F.batch_norm(self.weight.reshape(1, 6, -1), None, None, weight=self.gain,
                         training=True, momentum=0.0, eps=1e-6).reshape_as(self.weight)
        return F.conv2d(x, w, padding=1)


def test_weight_standardization_folds_into_the_conv():
    _check(StandardizedConv(), torch.randn(2, 3, 7, 5))


class BatchStats(torch.nn.Module):
    def forward(self, x):
        return F.batch_norm(x, None, None, training=True, eps=1e-3)


@pytest.mark.parametrize("shape", [(3, 5, 7), (2, 4, 3, 5), (1, 3, 1, 2)])
def test_batch_norm_with_batch_statistics_of_an_input(shape):
    _check(BatchStats(), torch.randn(*shape) * 3 + 1)


def test_batch_norm_in_training_mode_with_running_statistics_is_refused():
    bn = torch.nn.BatchNorm2d(3)

    class Model(torch.nn.Module):
        def forward(self, x):
            return F.batch_norm(x, bn.running_mean, bn.running_var, training=True)

    with pytest.raises(UnsupportedError, match="training mode"):
        build_engine(Model(), "fp32", example_inputs=(torch.randn(2, 3, 4, 4),))


class Norm(torch.nn.Module):
    def __init__(self, how, **kw):
        super().__init__()
        self.how, self.kw = how, kw

    def forward(self, x):
        if self.how == "method":
            return x.norm(**self.kw)
        if self.how == "torch":
            return torch.norm(x, **self.kw)
        return torch.linalg.vector_norm(x, **self.kw)


@pytest.mark.parametrize("how,kw", [
    ("method", dict(p=2, dim=(1, 2), keepdim=True)),       # ConvNeXt-V2's GRN
    ("method", dict(dim=-1)),
    ("torch", dict(p="fro")),
    ("torch", dict(p=1, dim=0)),
    ("vector", dict(ord=float("inf"), dim=1)),
    ("vector", dict(ord=-float("inf"), dim=1, keepdim=True)),
    ("vector", dict(ord=3.0, dim=(0, 2))),
    ("vector", dict(ord=0, dim=2)),
])
def test_vector_norms(how, kw):
    x = torch.randn(3, 5, 7)
    x[0, 1, :3] = 0  # zeros count for ord 0
    _check(Norm(how, **kw), x)


class GRN(torch.nn.Module):
    """ConvNeXt-V2's global response normalisation (timm: norm + addcmul), channels last."""

    def __init__(self, dim):
        super().__init__()
        self.gamma = torch.nn.Parameter(torch.randn(dim) * 0.1)
        self.beta = torch.nn.Parameter(torch.randn(dim) * 0.1)

    def forward(self, x):
        g = x.norm(p=2, dim=(1, 2), keepdim=True)
        n = g / (g.mean(dim=-1, keepdim=True) + 1e-6)
        return x + torch.addcmul(self.beta.view(1, 1, 1, -1), self.gamma.view(1, 1, 1, -1), x * n)


def test_global_response_norm():
    _check(GRN(6), torch.randn(2, 5, 3, 6))


class AddC(torch.nn.Module):
    def __init__(self, fn, value):
        super().__init__()
        self.fn, self.value = fn, value

    def forward(self, a, b, c):
        return self.fn(a, b, c, value=self.value)


@pytest.mark.parametrize("fn", [torch.addcmul, torch.addcdiv])
@pytest.mark.parametrize("value", [1, -0.5])
def test_addcmul_and_addcdiv(fn, value):
    a, b, c = torch.randn(4, 1, 5), torch.randn(1, 3, 5), torch.rand(4, 3, 1) + 0.5
    _check(AddC(fn, value), a, b, c)


class Roll(torch.nn.Module):
    def __init__(self, shifts, dims):
        super().__init__()
        self.shifts, self.dims = shifts, dims

    def forward(self, x):
        return torch.roll(x, shifts=self.shifts, dims=self.dims) * 2


@pytest.mark.parametrize("shifts,dims", [((-3, -3), (1, 2)), ((3, 3), (1, 2)), (1, 0), (9, -1),
                                         (0, 1), (7, None), ((2, -1), (0, 0))])
def test_roll(shifts, dims):
    _check(Roll(shifts, dims), torch.randn(2, 7, 5, 3))


class WindowMask(torch.nn.Module):
    """torchvision Swin's shifted-window mask: new_zeros, slice assignments of a running
    count, then a computed mask added to scores. It folds into one constant at import."""

    def forward(self, x):
        h, w = x.shape[1], x.shape[2]
        mask = x.new_zeros((h, w))
        count = 0
        for hs in ((0, -4), (-4, -2), (-2, None)):
            for ws in ((0, -3), (-3, -1), (-1, None)):
                mask[hs[0]:hs[1], ws[0]:ws[1]] = count
                count += 1
        mask = mask.view(1, h, w, 1)
        ones = x.new_ones(1, 1, w, 1)
        full = x.new_full((1, h, 1, 1), 0.5)
        return x + mask * ones + full + x.new_empty(h, w).zero_().view(1, h, w, 1)


def test_window_mask_from_new_zeros_and_slice_assignments_folds():
    engine = _check(WindowMask(), torch.randn(2, 9, 8, 3))
    assert engine.num_kernels == 1  # one add kernel: the mask is a constant


class WriteIntoInput(torch.nn.Module):
    def forward(self, x):
        y = x * 2
        y[:, 0] = 0
        return y


def _graph_writing_into_a_buffer() -> torch.fx.GraphModule:
    """x + table after `table.view(20)[0] = 1.0`, as an fx graph (tracing a module that does
    this would run the write itself: torch.fx executes attribute code while tracing)."""
    root = torch.nn.Module()
    root.register_buffer("table", torch.randn(4, 5))
    g = torch.fx.Graph()
    x, table = g.placeholder("x"), g.get_attr("table")
    flat = g.call_method("view", (table, 20))
    g.call_function(operator.setitem, (flat, 0, 1.0))
    g.output(g.call_function(operator.add, (x, table)))
    return torch.fx.GraphModule(root, g)


def test_slice_assignment_into_a_model_buffer_is_refused_and_never_written():
    from trident.compiler.frontend.fx import import_fx

    gm = _graph_writing_into_a_buffer()
    before = gm.table.clone()
    with pytest.raises(UnsupportedError, match='writes in place into "view", which views "table": a graph input or weight'):
        import_fx(gm, (torch.randn(4, 5),))
    assert torch.equal(gm.table, before)


@pytest.mark.parametrize("entry", ["dynamo"])
def test_through_torch_compile_nothing_is_left_in_torch(entry):
    class Model(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = StandardizedConv()
            self.grn = GRN(6)

        def forward(self, x):
            y = self.conv(x).permute(0, 2, 3, 1)
            y = torch.roll(self.grn(y), shifts=(-1, 2), dims=(1, 2))
            return WindowMask()(y)

    model = Model().eval().to(DEVICE)
    x = torch.randn(2, 3, 9, 8, device=DEVICE)
    got, reports = compile_with_reports(model, x, precision="fp32")
    with torch.no_grad():
        ref = model(x)
    assert relative_error(got, ref) < 1e-5
    assert reports and all(not r.in_torch for r in reports), [r.render() for r in reports]
    assert sum(r.num_kernels for r in reports) > 0


class MaskFromConstants(torch.nn.Module):
    """transformers' padding mask when no attention mask is passed: ones, then indexed by two
    broadcast aranges; all constants, so it folds at import."""

    def forward(self, x):
        b, s = x.shape[0], x.shape[1]
        mask = torch.ones(b, s, device=x.device).to(torch.bool)
        picked = mask[torch.arange(b, device=x.device)[:, None, None],
                      torch.arange(s, device=x.device)[None, None, :]]
        return x.masked_fill(~picked.transpose(1, 2), -1.0) * 2


def test_constant_advanced_indexing_folds_through_torch_compile():
    x = torch.randn(3, 5, 1, device=DEVICE)
    got, reports = compile_with_reports(MaskFromConstants(), x, precision="fp32", fallback=False)
    assert torch.equal(got, MaskFromConstants()(x))
    assert reports and sum(r.num_kernels for r in reports) > 0


def _valid_topk(x, values, indices, k, dim):
    """torch.topk's contract, ties in any order (torch's own order among equal values is its
    kernel's): the k largest values sorted (NaN first, as the largest), indices that point at
    them, no index twice."""
    want = torch.topk(x, k, dim).values
    torch.testing.assert_close(values, want, rtol=0, atol=0, equal_nan=True)
    torch.testing.assert_close(torch.gather(x, dim, indices), values, rtol=0, atol=0, equal_nan=True)
    assert (indices.sort(dim).values.diff(dim=dim) > 0).all()


@pytest.mark.parametrize("path", ["sort", "picks"])
@pytest.mark.parametrize("k, dim", [(1, -1), (2, -1), (3, 1), (8, 0)], ids=str)
def test_topk_picks_the_largest_with_nan_first_and_no_index_twice(k, dim, path, monkeypatch):
    """Rows of all -inf, of ties at +inf, with a NaN, with one finite value among -inf: every pick
    past the finite ones still takes an index not taken before. Through the sort kernel, and as
    argmax picks (rows longer than the sort kernel takes)."""
    if path == "picks":
        monkeypatch.setattr(group_kinds, "MAX_SORT_LENGTH", 2)
    torch.manual_seed(k)
    x = torch.randn(9, 6, 11)
    x[0, 0, :] = -math.inf
    x[0, 1, 2] = math.nan
    x[0, 2, :4] = math.inf
    x[0, 3, :] = -math.inf
    x[0, 3, 5] = 1.0
    x[1, :, 3] = -math.inf
    got, reports = compile_with_reports(lambda t: torch.topk(t, k, dim=dim), x.to(DEVICE))
    _valid_topk(x.to(DEVICE), got[0], got[1], k, dim)
    assert not [s for r in reports for s in r.in_torch]


def test_topk_of_softmax_as_moe_routers_use_it():
    """Mixtral's router: softmax over 8 experts, the top 2, renormalised."""
    def route(logits):
        weights, experts = torch.topk(torch.softmax(logits, dim=-1), 2, dim=-1)
        return weights / weights.sum(-1, keepdim=True), experts
    logits = torch.randn(37, 8).to(DEVICE)
    (weights, experts), reports = compile_with_reports(route, logits)
    want_weights, want_experts = route(logits)
    torch.testing.assert_close(weights, want_weights)
    assert torch.equal(experts, want_experts)  # (distinct random values: no ties)
    assert not [s for r in reports for s in r.in_torch]


def test_topk_of_any_k_either_way_and_of_integers_in_the_sort_kernel():
    x = torch.randn(5, 20).to(DEVICE)
    for fn in (lambda t: torch.topk(t, 9).values, lambda t: torch.topk(t, 2, largest=False).values,
               lambda t: torch.topk((t * 10).int(), 2).values):
        got, reports = compile_with_reports(fn, x)
        assert torch.equal(got, fn(x)) and ops_in_torch(reports) == []


def test_topk_of_int64_keys_is_a_torch_step_inside_the_engine():
    """The sort kernel sorts int64 keys whole rows at a time: a top-4 of them is torch's, in the
    engine."""
    x = torch.randint(-50, 50, (5, 20)).to(DEVICE)
    got, reports = compile_with_reports(lambda t: torch.topk(t * 3, 4).values + 1, x)
    assert torch.equal(got, torch.topk(x * 3, 4).values + 1)
    assert ops_in_torch(reports) == ["topk"]


@pytest.mark.parametrize("rows1, rows2, options", [
    (7, 9, {}),                                               # differences (torch's small-case form)
    (40, 33, {}),                                             # torch's matmul form past 25 rows
    (7, 30, {"p": 1}), (9, 4, {"p": math.inf}),
    (7, 9, {"compute_mode": "use_mm_for_euclid_dist"}),
    (40, 30, {"compute_mode": "donot_use_mm_for_euclid_dist"}),
], ids=str)
def test_cdist_matches_torch_in_each_of_its_forms(rows1, rows2, options):
    """torch.cdist computed as torch computes it (the matmul form clamps the rounding below 0 of a
    point's distance to itself: a row repeated across x1 and x2 gives no NaN). The matmul form
    loses digits by design, |x|² - 2 x·y + |y|² cancelling, in torch as here: about sqrt(eps) * |x|
    where two points nearly coincide, so it is compared with that tolerance."""
    torch.manual_seed(rows1)
    x1, x2 = torch.randn(3, rows1, 6), torch.randn(3, rows2, 6)
    x2[:, 1] = x1[:, 2]
    fn = lambda a, b: torch.cdist(a, b, **options)  # noqa: E731
    got, reports = compile_with_reports(fn, x1.to(DEVICE), x2.to(DEVICE))
    want = fn(x1, x2).to(DEVICE)
    by_matmul = options.get("p", 2) == 2 and options.get("compute_mode") != "donot_use_mm_for_euclid_dist" and (
        options.get("compute_mode") == "use_mm_for_euclid_dist" or max(rows1, rows2) > 25)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=5e-3 if by_matmul else 1e-5)
    assert not got.isnan().any() and not [s for r in reports for s in r.in_torch]


def test_cdist_with_another_p_runs_in_torch():
    x1, x2 = torch.randn(7, 5).to(DEVICE), torch.randn(9, 5).to(DEVICE)
    got, reports = compile_with_reports(lambda a, b: torch.cdist(a, b, p=3), x1, x2)
    torch.testing.assert_close(got, torch.cdist(x1, x2, p=3))
    assert [s for r in reports for s in r.in_torch]
