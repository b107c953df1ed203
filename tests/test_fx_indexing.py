"""Advanced indexing with several index tensors (compiler/frontend/fx/indexing.py): one gather of
the indexed axes flattened, checked against eager torch; indices out of range never read another
row; what it does not take is refused by name."""
import pytest
import torch
import torch.nn.functional as F
from torch.ops import aten

from trident.compiler import build_engine
from trident.compiler.errors import InputError, ShapeError, UnsupportedError
from trident.compiler.frontend.fx import _decompose
from trident.compiler.frontend.fx.context import Ctx, Val
from trident.compiler.frontend.fx.indexing import _getitem_tensor
from trident.compiler.ir import TensorType
from trident.compiler.testing import compile_with_reports, ops_in_torch, run_engine

from onnx_util import torch_steps

DEV = "cuda" if torch.cuda.is_available() else "cpu"


class PaddingMask(torch.nn.Module):
    """transformers' SDPA padding mask: the user's [B, L] mask indexed by two broadcast aranges."""

    def forward(self, x, mask):
        b, s = mask.shape
        keep = mask.bool()[torch.arange(b, device=mask.device)[:, None, None, None],
                           torch.arange(s, device=mask.device)[None, None, None, :]]
        return x.masked_fill(~keep, 0.0) * 2


class LastToken(torch.nn.Module):
    """A sequence-classification head's pooling: one row per sequence, at a run-time position."""

    def forward(self, h, last):
        return h[torch.arange(h.shape[0], device=h.device), last] + 1


class MiddleAxes(torch.nn.Module):
    """x[:, rows, cols] with the run-time index on the second indexed axis."""

    def forward(self, x, cols):
        rows = torch.tensor([[2], [0], [1]], device=x.device)
        return x[:, rows, cols] * 3


class TwoRunTimeIndices(torch.nn.Module):
    """SuperPoint's keypoint scores: `scores[keypoints[:, 0], keypoints[:, 1]]`."""

    def forward(self, scores, keypoints):
        return scores[:, keypoints[:, 0], keypoints[:, 1]] - 1


class AssignChosenRows(torch.nn.Module):
    """Informer's ProbSparse attention: `y[b_arange, h_arange, chosen, :] = rows` (index tensors
    on the leading axes, a run-time one among them)."""

    def forward(self, x, rows, chosen):
        y = x * 2
        b, h = y.shape[:2]
        y[torch.arange(b, device=y.device)[:, None, None], torch.arange(h, device=y.device)[None, :, None],
          chosen, :] = rows
        return y + 1


def compiled(module, *inputs):
    got, reports = compile_with_reports(module, *inputs, fallback=False)
    assert reports and sum(r.torch_steps for r in reports) == 0 and sum(r.num_kernels for r in reports) > 0
    return got


def test_padding_mask_of_two_aranges(rng):
    x = torch.randn(2, 3, 5, 7, generator=rng).to(DEV)
    mask = (torch.rand(2, 7, generator=rng) < 0.6).long().to(DEV)
    torch.testing.assert_close(compiled(PaddingMask(), x, mask), PaddingMask()(x, mask), rtol=0, atol=0)


def test_last_token_with_negative_and_run_time_indices(rng):
    h = torch.randn(4, 9, 6, generator=rng).to(DEV)
    last = torch.tensor([8, 0, -1, 3]).to(DEV)
    torch.testing.assert_close(compiled(LastToken(), h, last), LastToken()(h, last), rtol=0, atol=0)


def test_a_run_time_index_on_an_inner_axis(rng):
    x = torch.randn(2, 3, 5, 4, generator=rng).to(DEV)
    cols = torch.tensor([[4, -5], [0, 1], [2, 3]]).to(DEV)
    torch.testing.assert_close(compiled(MiddleAxes(), x, cols), MiddleAxes()(x, cols), rtol=0, atol=0)


def test_two_run_time_indices(rng):
    scores = torch.randn(3, 6, 7, generator=rng).to(DEV)
    keypoints = torch.tensor([[5, 6], [0, -7], [-1, 3], [2, 0]]).to(DEV)
    torch.testing.assert_close(compiled(TwoRunTimeIndices(), scores, keypoints),
                               TwoRunTimeIndices()(scores, keypoints), rtol=0, atol=0)


@pytest.mark.parametrize("bad", [[6, 1], [-7, 1], [1, 7], [1, -8]])
def test_an_index_out_of_range_on_either_axis_is_an_input_error(bad, rng):
    """(x[.., 1, 7] would be x[.., 2, 0] in the flattened table: the index goes past it instead)"""
    scores, keypoints = torch.randn(3, 6, 7, generator=rng), torch.tensor([[5, 6], [0, -7]])
    engine = build_engine(TwoRunTimeIndices(), "fp32", example_inputs=(scores, keypoints))
    engine.cuda_graph = False  # a replay skips the checks (kernels clamp; docs/memory-safety.md)
    torch.testing.assert_close(run_engine(engine, scores, keypoints)[0], TwoRunTimeIndices()(scores, keypoints))
    with pytest.raises(InputError, match="out of range|index"):
        run_engine(engine, scores, torch.tensor([[5, 6], bad]))


def test_an_assignment_at_index_tensors_on_the_leading_axes(rng):
    x, rows = torch.randn(2, 3, 7, 5, generator=rng).to(DEV), torch.randn(2, 3, 2, 5, generator=rng).to(DEV)
    chosen = torch.tensor([[[6, 0], [1, -2], [3, 4]], [[2, 5], [0, 6], [-1, 1]]]).to(DEV)
    torch.testing.assert_close(compiled(AssignChosenRows(), x, rows, chosen), AssignChosenRows()(x, rows, chosen),
                               rtol=0, atol=0)
    engine = build_engine(AssignChosenRows(), "fp32", example_inputs=(x.cpu(), rows.cpu(), chosen.cpu()))
    engine.cuda_graph = False  # (the index checks run on uncaptured calls)
    with pytest.raises(InputError, match="out of range|index"):  # 7 is past its axis, not the next row
        run_engine(engine, x.cpu(), rows.cpu(), torch.where(chosen.cpu() == 4, 7, chosen.cpu()))


@pytest.mark.parametrize("bad", [9, -10])
def test_a_run_time_index_out_of_range_is_an_input_error(bad, rng):
    # Out of its range is out of the flat table too, where the gather's check finds it, instead
    # of reading the next sequence's row.
    h, last = torch.randn(4, 9, 6, generator=rng), torch.tensor([8, 0, 1, 3])
    engine = build_engine(LastToken(), "fp32", example_inputs=(h, last))
    engine.cuda_graph = False  # a replay skips the checks (kernels clamp; docs/memory-safety.md)
    torch.testing.assert_close(run_engine(engine, h, last)[0], LastToken()(h, last), rtol=0, atol=0)
    with pytest.raises(InputError, match="out of range|index"):
        run_engine(engine, h, torch.tensor([8, bad, 1, 3]))


def _ctx_with(shape):
    cx = Ctx("indexing")
    cx.node_name = "getitem"
    return cx, Val(cx.b.input("x", TensorType(shape, torch.float32)))


def test_what_is_refused_is_named():
    cx, x = _ctx_with((3, 4, 5))
    with pytest.raises(ShapeError, match="index 3 is out of range for an axis of size 3"):
        _getitem_tensor(cx, x, (torch.tensor([0, 3]), torch.tensor([1, 1])))
    with pytest.raises(UnsupportedError, match="boolean mask"):
        _getitem_tensor(cx, x, (torch.tensor([True, False, True]),))
    with pytest.raises(UnsupportedError, match="None"):
        _getitem_tensor(cx, x, (torch.tensor([0]), None))


# ---------------------------------------------------------------------------- scatters ----
SCATTERS = {
    "one_hot_of_argmax_in_place": lambda t, i: torch.zeros_like(t).scatter_(1, t.argmax(1, keepdim=True), 1.0),
    "src_larger_than_index": lambda t, i: t.scatter(1, i, t[:, :3] * 10),
    "scatter_add": lambda t, i: torch.scatter_add(t, 0, i[:2].clamp(max=3), t[:3, :2]),
    "scatter_reduce_amax": lambda t, i: t.scatter_reduce(1, i, t * 2, "amax"),
    "value_with_reduce_add": lambda t, i: t.scatter(1, i, 7.0, reduce="add"),
}


@pytest.mark.parametrize("name", sorted(SCATTERS))
def test_scatters_run_in_the_scatter_kernel(name):
    """torch.scatter and its forms are the IR's scatter_elements, the scatter kernel (a few
    updates a row; indices checked by the engine). Distinct indices per row: torch's order among
    duplicate writes is its kernel's."""
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(4, 6, generator=gen).to(DEV)
    index = torch.stack([torch.randperm(6, generator=gen)[:2] for _ in range(4)]).to(DEV)
    fn = SCATTERS[name]
    got, reports = compile_with_reports(lambda t: fn(t, index), x)
    torch.testing.assert_close(got, fn(x, index))
    assert ops_in_torch(reports) == []


@pytest.mark.parametrize("accumulate", [False, True])
def test_index_put_through_torch_export(accumulate):
    """torch.export writes `y[rows] = v` (and index_put_ with accumulate) as aten.index_put: a
    ScatterND of the rows (passes/scatter_rows.py), or with accumulate index_add's adding scatter
    (repeated rows add up), in the scatter kernel."""
    class Put(torch.nn.Module):
        def forward(self, x, rows):
            y = x * 1.0
            y.index_put_((rows,), x[:4] * 2, accumulate=accumulate)
            return y

    x = torch.randn(6, 3)
    rows = torch.tensor([5, 0, 5, 2]) if accumulate else torch.tensor([5, 0, 3, 2])
    engine = build_engine(Put(), example_inputs=(x, rows), precision="fp32")
    (got,) = run_engine(engine, x, rows)
    torch.testing.assert_close(got.cpu(), Put()(x, rows))
    in_torch = [s.node.op for s in engine.plan.steps if s.kind == "torch"]
    assert in_torch == []  # (4 rows: the scatter kernel, a ScatterND's or index_add's)


INDEX_ADDS = {
    "rows": lambda a, s, i: a.index_add(0, i, s),
    "rows_alpha": lambda a, s, i: torch.index_add(a, 0, i, s, alpha=2.0),
    "columns": lambda a, s, i: a.t().index_add(1, i, s.t()) * 1,
    "in_place": lambda a, s, i: a.clone().index_add_(0, i, s),
}


@pytest.mark.parametrize("name", sorted(INDEX_ADDS))
def test_index_add_in_the_scatter_kernel(name):
    """index_add (a repeated index adds up): a ScatterElements that adds, its index spread over the
    source's shape."""
    gen = torch.Generator().manual_seed(3)
    x, source = torch.randn(6, 5, generator=gen).to(DEV), torch.randn(4, 5, generator=gen).to(DEV)
    rows = torch.tensor([5, 0, 5, 2]).to(DEV)
    fn = INDEX_ADDS[name]
    got, reports = compile_with_reports(lambda a, s: fn(a, s, rows), x, source)
    torch.testing.assert_close(got, fn(x, source, rows))
    assert ops_in_torch(reports) == []


class OneHot(torch.nn.Module):
    def forward(self, classes):
        return torch.nn.functional.one_hot(classes, 4) * 3


@pytest.mark.parametrize("bad", [4, -1])
def test_one_hot_of_a_class_outside_its_width_is_an_input_error(bad):
    """torch raises on such a class; the engine's gather of identity rows reports it."""
    classes = torch.tensor([[0, 3], [2, 1]])
    engine = build_engine(OneHot(), "fp32", example_inputs=(classes,))
    engine.cuda_graph = False  # (the index checks run on uncaptured calls)
    torch.testing.assert_close(run_engine(engine, classes)[0], OneHot()(classes))
    with pytest.raises(InputError, match="out of range|index"):
        run_engine(engine, torch.tensor([[0, 3], [bad, 1]]))


class StaticCache(torch.nn.Module):
    """transformers' static KV cache: a step's keys written into a preallocated buffer at their
    positions (`index_copy_` along the sequence), then attention over the whole buffer."""

    def __init__(self, length=40):
        super().__init__()
        self.register_buffer("keys", torch.zeros(1, 2, length, 8))

    def forward(self, q, k, positions):
        self.keys.index_copy_(2, positions, k)
        return q @ self.keys.transpose(-1, -2)


@pytest.mark.parametrize("steps", [[24, 1], [3, 3]])
def test_a_static_cache_written_by_index_copy(steps):
    """A prefill of more rows than the scatter kernel walks (each row's last writer,
    passes/scatter_rows.py), then decode steps of one, into the module's buffer as eager does."""
    gen = torch.Generator().manual_seed(5)
    model, eager = StaticCache().to(DEV), StaticCache().to(DEV)
    start, calls = 0, []
    for n in steps:
        positions = torch.arange(start, start + n).to(DEV)
        q, k = torch.randn(1, 2, n, 8, generator=gen).to(DEV), torch.randn(1, 2, n, 8, generator=gen).to(DEV)
        got, reports = compile_with_reports(model, q, k, positions)
        torch.testing.assert_close(got, eager(q, k, positions))
        calls.append(ops_in_torch(reports))
        start += n
    torch.testing.assert_close(model.keys, eager.keys)
    assert calls == [[]] * len(steps)


def test_index_copy_along_an_inner_axis_with_repeats_and_a_scalar_index():
    gen = torch.Generator().manual_seed(6)
    x, source = torch.randn(5, 30, 3, generator=gen).to(DEV), torch.randn(5, 20, 3, generator=gen).to(DEV)
    rows = torch.randperm(30, generator=gen)[:20].to(DEV)
    got, reports = compile_with_reports(lambda a, s: a.index_copy(1, rows, s) * 2, x, source)
    torch.testing.assert_close(got, x.index_copy(1, rows, source) * 2)
    one = torch.tensor(4).to(DEV)
    got, more = compile_with_reports(lambda a, s: torch.index_copy(a, 1, one, s[:, :1]) + 1, x, source)
    torch.testing.assert_close(got, torch.index_copy(x, 1, one, source[:, :1]) + 1)
    assert ops_in_torch(reports) == [] and ops_in_torch(more) == []


class Fold(torch.nn.Module):
    """F.fold (col2im: VOLO's outlook attention puts its patches back so)."""

    def __init__(self, output_size=(7, 9), **windows):
        super().__init__()
        self.output_size, self.windows = output_size, windows or {"kernel_size": 3, "padding": 1, "stride": 2}

    def forward(self, patches):
        return F.fold(patches, self.output_size, **self.windows) * 2


class AddAtColumns(torch.nn.Module):
    """index_put at a run-time index tensor on the second axis, added in or written."""

    def __init__(self, accumulate: bool):
        super().__init__()
        self.accumulate = accumulate

    def forward(self, x, cols, values):
        return torch.ops.aten.index_put(x, [None, cols], values, self.accumulate) + 1


@pytest.mark.parametrize("output_size, windows", [
    ((7, 9), dict(kernel_size=3, padding=1, stride=2)),  # VOLO's: overlapping, padded
    ((6, 8), dict(kernel_size=(2, 3), stride=1)),  # overlapping everywhere, not square
    ((9, 7), dict(kernel_size=2, dilation=2, padding=(0, 1), stride=(3, 2))),  # dilated, gaps between
    ((5, 7), dict(kernel_size=1, stride=2)),  # every other position, the rest zeros
    ((4, 6), dict(kernel_size=2, stride=2)),  # windows tiling the output: a reshape and a transpose
], ids=["volo", "overlapping", "dilated", "strided", "tiled"])
def test_fold_adds_the_windows_where_they_lie(output_size, windows, rng):
    fold = Fold(output_size, **windows)
    unfolded = F.unfold(torch.zeros(1, 3, *output_size), **windows)  # (the patches' shape for 3 channels)
    patches = torch.randn(2, *unfolded.shape[1:], generator=rng).to(DEV)
    torch.testing.assert_close(compiled(fold, patches), fold(patches), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("accumulate", [True, False])
def test_index_put_after_a_whole_axis(accumulate, rng):
    x, values = torch.randn(3, 6, 4, generator=rng).to(DEV), torch.randn(3, 5, 4, generator=rng).to(DEV)
    # repeated columns: added in twice when accumulating (written, a repeat would leave the order to chance)
    cols = torch.tensor([4, 0, 4, 2, -1] if accumulate else [4, 0, 3, 2, -1]).to(DEV)
    torch.testing.assert_close(compiled(AddAtColumns(accumulate), x, cols, values),
                               AddAtColumns(accumulate)(x, cols, values), rtol=1e-6, atol=1e-6)


class UnfoldFold(torch.nn.Module):
    """VOLO's outlook attention in outline: each window's values taken out (unfold), reweighted,
    and put back (fold), the windows overlapping."""

    def forward(self, x):
        patches = F.unfold(x, 3, padding=1, stride=2)
        return F.fold(patches * patches.softmax(dim=1), x.shape[-2:], 3, padding=1, stride=2)


def test_unfold_and_fold_stay_whole_when_an_export_is_decomposed(rng):
    """(torch.export's decompositions, which the importer runs when an op has no converter, would
    write the fold as an index_put adding every window in one ScatterND)"""
    x = torch.randn(2, 4, 7, 9, generator=rng)
    program = _decompose(torch.export.export(UnfoldFold(), (x,)))
    assert {aten.im2col.default, aten.col2im.default} <= {n.target for n in program.graph.nodes}
    engine = build_engine(program, "fp32", example_inputs=(x,))
    assert torch_steps(engine) == []
    torch.testing.assert_close(run_engine(engine, x)[0], UnfoldFold()(x), rtol=1e-5, atol=1e-5)
