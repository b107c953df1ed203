"""In-place writes in fx graphs (compiler/fx_mutation.py): readers after a write see it, through
torch.compile and through the fx importer; a write trident cannot make explicit runs the whole
graph in torch, said and counted."""
from __future__ import annotations

import operator
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

from trident.compiler.dynamo import recording_backend, trident_backend
from trident.compiler.errors import UnsupportedError
from trident.compiler.fx_mutation import make_writes_explicit, writes_in_place
from trident.compiler.testing import relative_error

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # (tests/conftest.py)


class ScaleInPlace(nn.Module):
    """timm's NormFreeBlock: `out.mul_(gain)`, then `out` is read again."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(4, 4, 1)
        self.gain = nn.Parameter(torch.tensor(0.7))

    def forward(self, x):
        out = self.conv(x)
        out.mul_(self.gain)
        return out * 2.0 + x


class Chain(nn.Module):
    def forward(self, x):
        y = x * 3
        y.add_(1)
        z = y.relu_()
        return y + z


class AugmentedAssign(nn.Module):
    def forward(self, x, r):
        y = x * 2
        alias = y
        y += r
        return alias - r


class InplaceRelu(nn.Module):
    def forward(self, x):
        y = x - 0.5
        z = F.relu(y, inplace=True)
        return y + z


class ViewAfterWrite(nn.Module):
    def forward(self, x):
        y = x * 2
        y.mul_(3)
        return y.view(-1) + 1


class CopyIntoState(nn.Module):
    """Mamba's cache: a state made in the graph, written with copy_ (a broadcast, a dtype
    change), then read."""

    def forward(self, x):
        state = torch.zeros(2, x.shape[0], x.shape[1], dtype=torch.int32)
        state.copy_(x * 10)  # (truncated toward zero)
        first = state[0].float()
        state.copy_(x[0] * 3)  # a row, broadcast over the whole state
        return first + state.sum(0).float()


class CopyIntoSlices(nn.Module):
    """DeepSeek's keys: an empty tensor filled block by block with copy_ into slices of it."""

    def forward(self, kv, rot):
        k = kv.new_empty(*kv.shape[:-1], kv.shape[-1] + rot.shape[-1])
        k[..., :kv.shape[-1]].copy_(kv * 2)
        k[..., kv.shape[-1]:].copy_(rot.expand(-1, kv.shape[1], -1))  # a broadcast
        return k * 1.5


class AddIntoSlice(nn.Module):
    """Gemma 3n's predictions: `y[1:] += z`, then rows of y read."""

    def forward(self, x, z):
        y = x * 2
        y[1:] += z
        return y[0] - y.sum(0)


class WriteThroughNestedViews(nn.Module):
    """A write into a view of a view, and a view made before it (overlapping the written block)
    read after it."""

    def forward(self, x):
        y = x + 1
        before = y[:, :3]
        y[1][2:].mul_(-1)
        y[0, 1:][:4].add_(10)
        return before * 3 + y[:, 2:5]


class RowBeforeAWriteOfTheWhole(nn.Module):
    """A row taken before the whole tensor is written in place, read after it."""

    def forward(self, x):
        y = x + 1
        first = y[0]
        y.mul_(3)
        return first * 2 + y[1:].sum(0)


class ViewBeforeWrite(nn.Module):
    def forward(self, x):
        y = x * 2
        v = y.view(-1)
        y.mul_(3)
        return v + 1


class WriteInput(nn.Module):
    def forward(self, x):
        x.add_(1)
        return x * 2


class WriteWeightView(nn.Module):
    """A write through a view of a weight changes the weight for every later call."""

    def __init__(self):
        super().__init__()
        self.table = nn.Parameter(torch.randn(5, 3), requires_grad=False)

    def forward(self, x):
        self.table.t().mul_(0.5)
        return x * 2


def _compiled(model, *inputs, **options):
    seen = []

    def backend(gm, example_inputs):
        out = trident_backend(gm, example_inputs, options={"precision": "fp32", **options})
        seen.append(out)
        return out
    out = torch.compile(model, backend=backend)(*inputs)
    return out, seen[0].trident_report


def _inputs(*shapes):
    torch.manual_seed(0)
    return tuple(torch.randn(s) for s in shapes)


@pytest.mark.parametrize("model, shapes", [
    (ScaleInPlace(), [(1, 4, 5, 3)]), (Chain(), [(3, 7)]), (AugmentedAssign(), [(3, 7), (3, 7)]),
    (InplaceRelu(), [(2, 9)]), (ViewAfterWrite(), [(3, 5)]), (CopyIntoState(), [(3, 5)]),
    (CopyIntoSlices(), [(2, 3, 5), (2, 1, 3)]), (AddIntoSlice(), [(3, 7), (2, 7)]),
    (WriteThroughNestedViews(), [(3, 7)]), (RowBeforeAWriteOfTheWhole(), [(3, 7)]),
], ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_readers_after_a_write_see_it(model, shapes):
    inputs = _inputs(*shapes)
    with torch.no_grad():
        want = model(*(x.clone() for x in inputs))
        got, report = _compiled(model.eval(), *inputs)
    assert relative_error(got, want) < 1e-6
    assert report.in_torch == [] and report.subgraphs, report.render()  # all of it in trident
    if isinstance(model, AugmentedAssign):
        return  # symbolic_trace itself records `y += r` as `y + r` (torch.fx's Proxy has no __iadd__)
    with torch.no_grad():  # and through the fx importer (symbolic_trace), as `trident profile` takes it
        from trident.compiler.build import build_engine

        engine = build_engine(model, "fp32", inputs, device="cpu")
        assert relative_error(engine(*inputs)[0], want) < 1e-6


@pytest.mark.parametrize("model, shapes, why", [
    (ViewBeforeWrite(), [(3, 5)], r'"v" shares \(a view, or the tensor viewed\) and is read after the write'),
    (WriteWeightView(), [(3, 5)], r'which views "\w*table\w*": a graph input or weight'),
], ids=["view_read_after", "weight_view"])
def test_a_write_trident_cannot_follow_runs_the_graph_in_torch(model, shapes, why):
    inputs = _inputs(*shapes)
    mine = tuple(x.clone() for x in inputs)
    with torch.no_grad():
        want = model(*(x.clone() for x in inputs))
        with pytest.warns(UserWarning, match="the whole graph runs in torch"):
            got, report = _compiled(model, *mine)
    assert relative_error(got, want) < 1e-6
    assert report.subgraphs == [] and len(report.in_torch) == 1
    assert re.search(why, report.in_torch[0].reason), report.in_torch[0].reason
    torch._dynamo.reset()
    with pytest.raises(Exception, match="the whole graph runs in torch"):  # dynamo wraps it
        _compiled(model, *_inputs(*shapes), fallback=False)
    # The fx importer refuses the symbolic trace (the same reason) and imports torch.export's
    # functional graph instead: the output is right (an engine never writes into its inputs).
    from trident.compiler.frontend.fx import _import_graph_module

    with pytest.raises(UnsupportedError, match="writes in place"):
        _import_graph_module(torch.fx.symbolic_trace(model), _inputs(*shapes), "m")
    from trident.compiler.build import build_engine

    with torch.no_grad():
        engine = build_engine(model, "fp32", _inputs(*shapes), device="cpu")
        assert relative_error(engine(*_inputs(*shapes))[0], want) < 1e-6


class WriteInputBlock(nn.Module):
    def forward(self, x, y):
        x[1:, :2].mul_(3)
        y.copy_(x[:, 1:] + 1)
        return x.sum(0)


@pytest.mark.parametrize("model, shapes", [(WriteInput(), [(3, 5)]), (WriteInputBlock(), [(3, 5), (3, 4)])],
                         ids=["whole", "block"])
def test_a_write_into_a_graph_input_is_copied_back_into_it(model, shapes):
    """The input's new value is an extra output of the graph, copied into the caller's tensor
    after the run (fx_mutation.return_written_inputs): in kernels, each call, as eager writes."""
    inputs = _inputs(*shapes)
    mine, eager = tuple(x.clone() for x in inputs), tuple(x.clone() for x in inputs)
    backend, reports = recording_backend({"precision": "fp32"})
    compiled = torch.compile(model, backend=backend)
    for _ in range(2):
        with torch.no_grad():
            got, want = compiled(*mine), model(*eager)
        assert relative_error(got, want) < 1e-6
        assert all(torch.equal(a, b) for a, b in zip(mine, eager))
    assert reports[0].in_torch == [] and reports[0].num_kernels > 0
    from trident.compiler.frontend.fx import _import_graph_module

    with pytest.raises(UnsupportedError, match="a graph input or weight"):  # (no caller to copy back)
        _import_graph_module(torch.fx.symbolic_trace(model), _inputs(*shapes), "m")


def test_slice_assignment_becomes_a_write_with_a_result():
    class Assign(nn.Module):
        def forward(self, x):
            y = x * 2
            y[:, 0] = 0.0
            return y + 1

    graphs = []
    torch.compile(Assign(), backend=lambda gm, _: graphs.append(gm) or gm.forward)(torch.randn(3, 4))
    (gm,) = graphs
    assert make_writes_explicit(gm) == []
    (write,) = [n for n in gm.graph.nodes if writes_in_place(n)]
    assert write.target.__name__ == "assign" and write.target is not operator.setitem
    (add,) = [n for n in gm.graph.nodes if n.target is operator.add]
    assert add.args[0] is write  # the reader after the assignment reads its result
    x = torch.randn(3, 4)
    want = Assign()(x)
    assert torch.equal(gm(x)[0], want)  # torch runs the rewritten graph as before
    torch._dynamo.reset()
    with torch.no_grad():
        got, report = _compiled(Assign(), x)
    assert torch.equal(got, want)


def test_writes_are_recognized():
    class Many(nn.Module):
        def forward(self, x):
            a = x + 1
            a.clamp_(min=0)
            torch.sigmoid_(a)
            b = F.hardtanh(a, -1.0, 1.0, True)  # inplace given by position
            c = F.hardtanh(a, -1.0, 1.0)
            return b + c

    graph = torch.fx.symbolic_trace(Many()).graph
    written = {n.name for n in graph.nodes if writes_in_place(n)}
    assert written == {"clamp_", "sigmoid_", "hardtanh"}, written


class NormFreeStyleBlock(nn.Module):
    """The shape of timm's NormFreeBlock (dm_nfnet_f0): weight-standardized convs, an in-place
    activation, `out.mul_(skipinit_gain)`, then `out * alpha + shortcut`."""

    def __init__(self, channels: int = 8):
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 1)
        self.gain = nn.Parameter(torch.tensor(0.8))

    @staticmethod
    def standardized(conv: nn.Conv2d, x):
        w = F.batch_norm(conv.weight.reshape(1, conv.out_channels, -1), None, None, training=True,
                         momentum=0.0, eps=1e-6).reshape_as(conv.weight)
        return F.conv2d(x, w, conv.bias, padding=conv.padding)

    def forward(self, x):
        out = F.silu(self.standardized(self.conv1, x), inplace=True)
        out = self.standardized(self.conv2, out)
        out.mul_(self.gain)
        return out * 0.2 + x


def test_nf_net_style_block_matches_torch():
    torch.manual_seed(0)
    block = NormFreeStyleBlock().eval()
    x = torch.randn(1, 8, 6, 5)
    with torch.no_grad():
        want = block(x)
        got, report = _compiled(block, x)
    assert relative_error(got, want) < 1e-5 and report.in_torch == [], report.render()


class BlockWrites(nn.Module):
    """Writes into computed tensors: MViT-v2's relative positions added into a block of the
    attention scores, an int index with an Ellipsis, an in-place add into a column, and a
    computed value written into a tensor the graph made (new_zeros-like)."""

    def forward(self, x, v):
        a = x.softmax(-1) * 2
        a[:, :, 1:, 1:] = a[:, :, 1:, 1:] + v
        a[0, ..., -1] = 7.0
        a[:, 1] += 1
        b = torch.zeros(2, 3, 5, 5)
        b[:, :, :2] = v[:, :, :2, :1]
        return a + b


def test_slice_assignments_into_computed_tensors_fuse():
    x, v = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 4, 4)
    torch._dynamo.reset()
    with torch.no_grad():
        got, report = _compiled(BlockWrites(), x, v)
    assert torch.allclose(got, BlockWrites()(x, v), rtol=1e-6, atol=1e-6)
    assert report.in_torch == [] and report.torch_steps == 0


class StridedAssignments(nn.Module):
    """Slice assignments with steps into a computed tensor: a constant, a broadcast row, and a
    block whose step runs past its stop."""

    def forward(self, x, r):
        y = x * 2
        y[:, ::2] = 0.0
        y[1:, 1::3] = r[:, None]
        y[0, 5:2] = 7.0  # (empty)
        y[2:, 3:8:4] = r[:1, None] * x[2:, 3:8:4]
        return y + 1


def test_strided_slice_assignments_into_a_computed_tensor():
    x, r = torch.randn(4, 9), torch.randn(3)
    with torch.no_grad():
        got, report = _compiled(StridedAssignments(), x, r)
    assert torch.equal(got, StridedAssignments()(x, r))
    assert report.in_torch == [] and report.subgraphs, report.render()


class CastsItsLayer(nn.Module):
    """Switch Transformers' router: `self.classifier = self.classifier.to(dtype)` on every call,
    which dynamo records as `weight.set_(weight.to(dtype))`."""

    def __init__(self, dtype):
        super().__init__()
        self.classifier = nn.Linear(6, 4).to(dtype)

    def forward(self, x):
        self.classifier = self.classifier.to(torch.float32)
        return self.classifier(x).softmax(-1)


def test_a_cast_of_a_layer_to_its_own_dtype_is_no_write():
    x = _inputs((3, 6))[0]
    model = CastsItsLayer(torch.float32)
    with torch.no_grad():
        want = model(x)
        got, report = _compiled(model, x)
    assert relative_error(got, want) < 1e-6
    assert report.in_torch == [] and report.subgraphs, report.render()


def test_a_cast_of_a_layer_to_another_dtype_changes_the_layer():
    """(dynamo replays that cast beside the graph, which then reads the cast weight)"""
    x = _inputs((3, 6))[0]
    model = CastsItsLayer(torch.float64)
    with torch.no_grad():
        got, report = _compiled(model, x)
    assert model.classifier.weight.dtype == torch.float32  # as eager leaves it
    assert relative_error(got, model(x)) < 1e-6 and report.in_torch == []
