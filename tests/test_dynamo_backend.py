"""torch.compile(model, backend="trident") (compiler/dynamo.py)."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch
import torch.nn.functional as F
from torch.utils._pytree import tree_flatten

from trident.compiler.dynamo import _FALLBACK, TridentSubgraph, trident_backend
from trident.models import MODELS

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # (tests/conftest.py)


class Spy:
    """The trident backend, keeping what it returned (to look inside)."""

    def __init__(self):
        self.compiled = []

    def __call__(self, gm, example_inputs, **kwargs):
        out = trident_backend(gm, example_inputs, **kwargs)
        self.compiled.append(out)
        return out

    def subgraphs(self) -> list[TridentSubgraph]:
        return [m for c in self.compiled for m in getattr(c, "children", lambda: [])()
                if isinstance(m, TridentSubgraph)]


def check(compiled, model, inputs, tol=1e-4):
    with torch.no_grad():
        got, ref = tree_flatten(compiled(*inputs))[0], tree_flatten(model(*inputs))[0]
    assert len(got) == len(ref)
    for g, r in zip(got, ref):
        assert g.shape == r.shape and g.dtype == r.dtype
        torch.testing.assert_close(g, r, rtol=tol, atol=tol)


@pytest.mark.parametrize("name", ["mlp", "multihead", "resnet_tiny", "bert_tiny"])
def test_matches_eager(name):
    build, make_inputs = MODELS[name]
    model = build()
    spy = Spy()
    compiled = torch.compile(model, backend=spy)
    check(compiled, model, make_inputs(1 if name == "resnet_tiny" else 2))
    subs = spy.subgraphs()
    assert len(subs) == 1 and len(subs[0].engines) == 1  # the whole model is one engine
    (entry,) = subs[0].engines.values()
    assert entry is not _FALLBACK


class WithUnsupported(torch.nn.Module):
    """An op trident does not support, between two supported regions."""

    def __init__(self, op: str = "cummax"):
        super().__init__()
        self.op = op
        self.a, self.b = torch.nn.Linear(16, 32), torch.nn.Linear(32, 8)

    def forward(self, x):
        h = torch.relu(self.a(x))
        h = torch.logcumsumexp(h, dim=1) if self.op == "logcumsumexp" else torch.cummax(h, dim=1).values
        return torch.sigmoid(self.b(h))


@pytest.mark.parametrize("op", ["logcumsumexp", "cummax"])
def test_unsupported_op_stays_in_torch(op):
    model = WithUnsupported(op).eval()
    spy = Spy()
    compiled = torch.compile(model, backend=spy)
    with pytest.warns(UserWarning, match=f"1 node\\(s\\) run in torch: .*{op}") as said:
        check(compiled, model, (torch.randn(4, 16),))
        check(compiled, model, (torch.randn(4, 16),))
    assert sum("run in torch" in str(w.message) for w in said) == 1  # once per compile
    (gm,) = spy.compiled
    targets = [str(n.target) for n in gm.graph.nodes if n.op == "call_function"]
    assert any(op in t for t in targets)  # the unsupported op runs in torch ...
    subs = spy.subgraphs()
    assert len(subs) == 2                 # ... between two trident engines
    for s in subs:
        (entry,) = s.engines.values()
        engine, _ = entry
        assert engine.num_kernels >= 1
    report = gm.trident_report
    assert [t.node for t in report.in_torch] == [n.name for n in gm.graph.nodes
                                                 if op in str(n.target)]
    assert report.num_kernels == sum(s.built_engines()[0].num_kernels for s in subs)
    assert op in report.render()


def test_fallback_false_raises():
    from trident.compiler.errors import UnsupportedError

    compiled = torch.compile(WithUnsupported("cummax").eval(), backend="trident",
                             options={"fallback": False})
    with pytest.raises(Exception, match="fallback=False.*cummax") as raised:
        compiled(torch.randn(4, 16))
    # dynamo wraps what a backend raises; the trident error is inside
    assert isinstance(getattr(raised.value, "inner_exception", raised.value), UnsupportedError)


def test_failed_partition_is_reported_once(monkeypatch):
    """A partition whose build fails runs in torch, says so once and lands in the report."""
    from trident.compiler import build
    from trident.compiler.errors import UnsupportedError

    def refuse(*args, **kwargs):
        raise UnsupportedError("no kernel for this today")

    monkeypatch.setattr(build, "compile_graph", refuse)
    build_model, make_inputs = MODELS["mlp"]
    model = build_model()
    spy = Spy()
    compiled = torch.compile(model, backend=spy, dynamic=False)
    with pytest.warns(UserWarning, match="a partition runs in torch.*no kernel for this today"):
        check(compiled, model, make_inputs(2))
    (gm,) = spy.compiled
    assert len(gm.trident_report.in_torch) == 1
    assert "partition fused_0" in gm.trident_report.in_torch[0].op


def test_int8_option_with_calibration():
    build_model, make_inputs = MODELS["mlp"]
    model = build_model()
    calibration = [make_inputs(4) for _ in range(3)]
    spy = Spy()
    compiled = torch.compile(model, backend=lambda gm, ex: spy(gm, ex, options={
        "precision": "int8", "calibration": calibration}))
    x = make_inputs(4)
    with torch.no_grad():
        got, ref = compiled(*x), model(*x)
    from trident.compiler.testing import relative_error
    assert relative_error(got, ref) < 0.05
    (sub,) = spy.subgraphs()
    assert len(sub.calibration) == 3  # the partition saw every calibration batch
    (engine,) = sub.built_engines()
    assert any("int8" in s.source for s in engine.plan.steps if s.kind == "kernel")


def test_inference_mode_and_fp16_option():
    build, make_inputs = MODELS["mlp"]
    model = build()
    with torch.inference_mode():
        compiled = torch.compile(model, backend="trident")
        check(compiled, model, make_inputs(3))
    torch._dynamo.reset()
    half = torch.compile(model, backend="trident", options={"precision": "fp16"})
    check(half, model, make_inputs(3), tol=2e-2)


def test_recompile_on_new_batch_size():
    build, make_inputs = MODELS["mlp"]
    model = build()
    spy = Spy()
    compiled = torch.compile(model, backend=spy)
    for batch in (2, 3, 5):
        check(compiled, model, make_inputs(batch))
    # dynamo recompiled once (dynamic batch): the first graph's engine is for batch 2, the
    # recompiled graph's one engine (a profile over the symbolic batch) runs batches 3 and 5
    assert len(spy.compiled) == 2
    static = [s for s in spy.subgraphs() if s.symbolic is None]
    dynamic = [s for s in spy.subgraphs() if s.symbolic is not None]
    assert {signature[0][0][0] for s in static for signature, _ in s.engines} == {2}
    assert dynamic and all(s.engines_built == 1 for s in dynamic)


class BreakingLayer(torch.nn.Module):
    """A layer whose forward breaks the graph: dynamo compiles its frame once and runs it for
    every instance, passing each one's own parameters."""

    def __init__(self):
        super().__init__()
        self.linear = torch.nn.Linear(8, 8)

    def forward(self, h):
        h = self.linear(h).relu()
        torch._dynamo.graph_break()
        return h + 1


def test_layers_sharing_a_compiled_frame_each_run_with_their_own_weights():
    model = torch.nn.Sequential(BreakingLayer(), BreakingLayer(), BreakingLayer()).eval()
    spy = Spy()
    compiled = torch.compile(model, backend=spy)
    check(compiled, model, (torch.randn(2, 8),))
    check(compiled, model, (torch.randn(2, 8),))
    layer_frames = [s for s in spy.subgraphs() if s.engines_built > 1]
    assert len(layer_frames) == 1 and layer_frames[0].engines_built == 3  # one per layer, kept


def test_a_constant_output_is_a_fresh_tensor_per_call():
    # A folded output (zeros_like) is an engine constant: a caller writing into its result (as
    # X-MOD's adapters write into torch.zeros_like) must not change what the next call returns.
    compiled = torch.compile(lambda h: (torch.zeros_like(h), h * 2), backend="trident")
    x = torch.randn(2, 4)
    with torch.no_grad():
        zeros, _ = compiled(x)
        zeros += 5
        again, doubled = compiled(x)
    assert torch.equal(again, torch.zeros(2, 4)) and torch.equal(doubled, x * 2)


class AntialiasedResizes(torch.nn.Module):
    """Antialiased resizes: their converter refuses them at import (torch's filter is not ONNX's),
    after the partitioner took them in (it sees the target, not the arguments)."""

    def __init__(self):
        super().__init__()
        self.conv1, self.conv2 = torch.nn.Conv2d(3, 4, 3), torch.nn.Conv2d(4, 4, 1)

    def forward(self, x):
        h = torch.relu(self.conv1(x))
        h = F.interpolate(h, size=(3, 3), mode="bilinear", antialias=True)
        h = torch.sigmoid(self.conv2(h)) * 2
        return F.interpolate(h, size=(2, 2), mode="bilinear", antialias=True) + 1


def test_a_node_refused_at_import_runs_in_torch_and_the_rest_in_engines():
    model, x = AntialiasedResizes().eval(), torch.randn(2, 3, 7, 7)
    spy = Spy()
    compiled = torch.compile(model, backend=spy)
    with pytest.warns(UserWarning, match="runs around a node in torch.*antialias=True"):
        check(compiled, model, (x,))
    check(compiled, model, (x,))  # the split is kept: nothing is built again
    (gm,) = spy.compiled
    refused = [item.op for item in gm.trident_report.in_torch]
    assert len(refused) == 2 and all("interpolate" in op for op in refused)
    built = [s for s in gm.trident_report.subgraphs if s.built_engines()]  # (nested ones too)
    # conv1 + relu, conv2 + sigmoid + mul, the final add: each part an engine of its own
    assert len(built) == 3 and all(s.engines_built == 1 for s in built)
    assert not any("partition" in item.op for item in gm.trident_report.in_torch)


class FourierMixing(torch.nn.Module):
    """FNet's token mixing between two dense layers: the real part of a 2-D FFT, or (sqrt) of an
    op trident carries no complex values through."""

    def __init__(self, sqrt: bool = False):
        super().__init__()
        self.a, self.b = torch.nn.Linear(8, 8), torch.nn.Linear(8, 4)
        self.norm = torch.nn.LayerNorm(8)
        self.sqrt = sqrt

    def forward(self, x):
        h = torch.relu(self.a(x))
        spectrum = torch.fft.fftn(h, dim=(1, 2))
        return self.b(self.norm((spectrum.sqrt().real if self.sqrt else spectrum.real) + h))


def test_a_complex_value_stays_in_torch_with_what_reads_it():
    model, x = FourierMixing(sqrt=True).eval(), torch.randn(2, 5, 8)
    spy = Spy()
    with pytest.warns(UserWarning, match="complex"):
        check(torch.compile(model, backend=spy), model, (x,))
    (gm,) = spy.compiled
    assert len(gm.trident_report.in_torch) == 3  # the FFT, sqrt of its complex result, and its .real
    assert all(s.built_engines() for s in spy.subgraphs()) and len(spy.subgraphs()) == 2


def test_the_real_part_of_a_real_transform_is_one_engine():
    """fftn(h).real is carried as real parts (frontend/fx/spectral.py): nothing in torch."""
    model, x = FourierMixing().eval(), torch.randn(2, 5, 8)
    spy = Spy()
    check(torch.compile(model, backend=spy), model, (x,))
    (gm,) = spy.compiled
    assert gm.trident_report.in_torch == [] and len(spy.subgraphs()) == 1


def test_bad_option():
    model = MODELS["mlp"][0]()
    with pytest.raises(Exception, match="unknown option"):
        torch.compile(model, backend="trident", options={"precisoin": "fp16"})(torch.randn(2, 64))


def test_tune_option_reaches_the_build(monkeypatch):
    """options={"tune": ...} is the tuning level of the engine's build (compile_graph's tune)."""
    from trident.compiler import build

    levels = []
    real = build.compile_graph

    def spy(*args, **kwargs):
        levels.append(kwargs.get("tune"))
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "compile_graph", spy)
    model = MODELS["mlp"][0]().eval()
    x = torch.randn(2, 64)
    torch._dynamo.reset()
    out = torch.compile(model, backend="trident", options={"tune": "fast"})(x)
    torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
    assert levels == ["fast"]
    with pytest.raises(Exception, match="tune must be one of"):
        torch.compile(model, backend="trident", options={"tune": "max"})(x)


def test_entry_point_without_importing_trident():
    """torch finds the backend through the torch_dynamo_backends entry point (pip install -e .)."""
    code = textwrap.dedent("""
        import sys, torch
        nn = torch.nn
        model = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4)).eval()
        x = torch.randn(3, 8)
        assert not any(m.startswith("trident") for m in sys.modules)
        out = torch.compile(model, backend="trident")(x)
        torch.testing.assert_close(out, model(x), rtol=1e-4, atol=1e-5)
        assert "trident.compiler.dynamo" in sys.modules
        print("ok")
    """)
    env = dict(os.environ, TRIDENT_QUIET="1")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert result.stdout.strip().endswith("ok")


@pytest.mark.parametrize("everywhere", [True, False])
def test_cuda_graphs_off_everywhere_reaches_the_backends_engines(monkeypatch, everywhere):
    # TRIDENT_CUDA_GRAPHS=0 (compute-sanitizer runs: capture breaks under it) wins over the
    # backend's cuda_graph option, as it does for engines built directly.
    from trident.compiler import config
    from trident.compiler.testing import compile_with_reports

    monkeypatch.setattr(config, "CUDA_GRAPHS", everywhere)
    model = torch.nn.Sequential(torch.nn.Linear(8, 4), torch.nn.ReLU()).eval()
    _, reports = compile_with_reports(model, torch.randn(2, 8), cuda_graph=True)
    engines = [e for r in reports for e in r.engines()]
    assert engines and all(e.cuda_graph is everywhere for e in engines)


class _RecordValues(torch.fx.Interpreter):
    """Runs a traced graph, keeping each node's value as dynamo would (meta["example_value"])."""

    def run_node(self, n):
        value = super().run_node(n)
        n.meta["example_value"] = value
        return value


def test_an_int_that_torch_reads_stays_in_torch_with_its_reader():
    """A partition returns tensors only: shape arithmetic (an int) that a node left in torch reads
    is left in torch too (transformers 4.x's Funnel), and the tensor math around it is fused."""
    from trident.compiler.dynamo import partition

    def f(x):
        n = x.size(0) * 2 - 1                    # ints: size, mul, sub
        order = torch.randperm(n)                # random: no converter, torch reads n
        return torch.relu(x).sum() + order.sum()

    gm = torch.fx.symbolic_trace(f)
    x = torch.randn(3, 4)
    _RecordValues(gm).run(x)
    fused, in_torch = partition(gm)
    left = {i.node: i.reason for i in in_torch}
    assert left["randperm"] == "no trident converter for this op"
    assert "no tensor" in left["sub"] and "no tensor" in left["mul"]
    torch.testing.assert_close(fused(x), f(x))


class VmapMask(torch.nn.Module):
    """transformers 4.x's way: a causal mask built by nested torch.vmap over index aranges, a
    disabled autocast block around part of the math, keys concatenated onto an empty cache."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)

    def forward(self, x):
        n = x.shape[1]
        rows, cols = torch.arange(n), torch.arange(n)
        visible = torch.vmap(torch.vmap(lambda i, j: j <= i, in_dims=(None, 0)), in_dims=(0, None))(rows, cols)
        with torch.autocast("cpu", enabled=False):
            keys = torch.cat([torch.tensor([]), self.fc(x)], dim=-2)
        scores = keys @ x.transpose(-1, -2)
        return torch.softmax(scores.masked_fill(~visible, float("-inf")), -1) @ x


def test_a_traced_vmap_mask_becomes_broadcasts_and_the_rest_is_fused():
    from trident.compiler.testing import compile_with_reports

    torch._dynamo.reset()
    model, x = VmapMask().eval(), torch.randn(2, 5, 8)
    with torch.no_grad():
        got, reports = compile_with_reports(model, x, precision="fp32")
        torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    assert [i for r in reports for i in r.in_torch] == []
    assert sum(r.torch_steps for r in reports) == 0 and sum(r.num_kernels for r in reports) > 0


class PaddedCausalVmap(torch.nn.Module):
    """transformers 4.x's sdpa mask: vmap over batch, head, query and key indices of a scalar
    function that compares positions and looks the key up in the padding mask."""

    def forward(self, x, keep):
        b, n = keep.shape

        def visible(bi, hi, qi, ki):
            return (ki <= qi) & keep[bi, ki].bool()
        for dims in ((None, None, None, 0), (None, None, 0, None), (None, 0, None, None), (0, None, None, None)):
            visible = torch.vmap(visible, in_dims=dims)
        mask = visible(torch.arange(b), torch.arange(1), torch.arange(n), torch.arange(n))
        q = x.view(b, n, 2, 4).transpose(1, 2)
        return torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=mask)


def test_a_padded_causal_vmap_mask_is_lowered_and_matches():
    from trident.compiler.fx_vmap import lower_vmaps
    from trident.compiler.testing import compile_with_reports

    torch._dynamo.reset()
    x, keep = torch.randn(2, 6, 8), torch.ones(2, 6, dtype=torch.long)
    keep[1, :2] = 0
    counts = []

    def counting(gm, example_inputs):
        counts.append(lower_vmaps(gm))
        assert not any("functorch" in str(getattr(n.target, "__module__", "")) for n in gm.graph.nodes)
        return gm.forward
    with torch.no_grad():
        torch.compile(PaddedCausalVmap(), backend=counting)(x, keep)
        assert counts == [1]
        torch._dynamo.reset()
        got, reports = compile_with_reports(PaddedCausalVmap(), x, keep, precision="fp32")
        want = PaddedCausalVmap()(x, keep)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5, equal_nan=True)
    assert [i for r in reports for i in r.in_torch] == []


def test_a_vmap_mask_over_symbolic_lengths_stays_in_torch_and_matches():
    """dynamo's second length recompiles with symbolic sizes: the nest is left to torch (its
    aranges of symbolic length have no converter either), and every length still matches."""
    from trident.compiler.dynamo import recording_backend

    backend, reports = recording_backend({"precision": "fp32"})
    torch._dynamo.reset()
    model = PaddedCausalVmap()
    compiled = torch.compile(model, backend=backend)
    with torch.no_grad():
        for n in (6, 9, 11):
            x, keep = torch.randn(2, n, 8), torch.ones(2, n, dtype=torch.long)
            keep[1, :2] = 0
            torch.testing.assert_close(compiled(x, keep), model(x, keep), rtol=1e-5, atol=1e-5)
    assert [i for i in reports[0].in_torch] == []
    assert any("torch.vmap" in i.reason for r in reports[1:] for i in r.in_torch)


class VmapRows(torch.nn.Module):
    """A vmap whose function works on rows, not scalars: not a broadcast."""

    def forward(self, x):
        return torch.vmap(lambda row: torch.cumsum(row, 0) * 2)(torch.relu(x)) + 1


def test_a_vmap_of_a_row_function_runs_in_torch_in_its_order_and_the_rest_is_fused():
    from trident.compiler.testing import compile_with_reports

    torch._dynamo.reset()
    model, x = VmapRows().eval(), torch.randn(3, 5)
    with torch.no_grad():
        got, reports = compile_with_reports(model, x, precision="fp32")
    torch.testing.assert_close(got, model(x), rtol=1e-5, atol=1e-5)
    reasons = {i.reason for r in reports for i in r.in_torch}
    assert reasons == {"part of a torch.vmap, which runs in torch whole"}, reasons
    assert sum(r.num_kernels for r in reports) > 0

@pytest.mark.parametrize("how", ["out_dims=1", "in_dims=1"])
def test_a_vmap_off_dim_0_is_left_to_torch(how):
    from trident.compiler.fx_vmap import lower_vmaps

    def f(x):
        rows, cols = torch.arange(x.shape[0]), torch.arange(x.shape[1])
        pair = torch.vmap(lambda i, j: i * 10 + j, in_dims=(None, 0))
        if how == "out_dims=1":
            grid = torch.vmap(pair, in_dims=(0, None), out_dims=1)(rows, cols)
        else:
            grid = torch.vmap(pair, in_dims=(1, None))(rows[None, :], cols)[..., 0]
        return x + grid.T if how == "out_dims=1" else x + grid

    counts = []

    def counting(gm, example_inputs):
        counts.append(lower_vmaps(gm))
        return gm.forward
    torch._dynamo.reset()
    x = torch.randn(3, 4)
    torch.testing.assert_close(torch.compile(f, backend=counting)(x), f(x))
    assert counts == [0]


class RunningTotal(torch.nn.Module):
    """A layer that keeps state in a buffer it writes every call."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 8)
        self.register_buffer("total", torch.zeros(8))

    def forward(self, x):
        y = self.fc(x)
        self.total.add_(y.sum(0))
        return y * 2


def test_int8_calibration_of_a_graph_that_writes_its_state():
    """Calibration batches hold the user's inputs only; the state runs on a copy (the caller's
    buffer changes once per call, as in eager)."""
    torch.manual_seed(0)
    model, eager = RunningTotal().eval(), RunningTotal().eval()
    eager.load_state_dict(model.state_dict())
    calibration = [(torch.randn(4, 8),) for _ in range(3)]
    compiled = torch.compile(model, backend=lambda gm, ex: trident_backend(gm, ex, options={
        "precision": "int8", "calibration": calibration}))
    from trident.compiler.testing import relative_error

    for _ in range(2):
        x = torch.randn(4, 8)
        with torch.no_grad():
            got, want = compiled(x), eager(x)
        assert relative_error(got, want) < 0.05
    assert relative_error(model.total, eager.total) < 0.05


def test_a_scalar_tensor_one_partition_hands_another_is_read_every_call():
    """A 0-d tensor computed by the graph reaches a later partition as an input: it looks like the
    floats dynamo passes as 0-d tensors (weights an engine bakes in), but the parent graph says
    it is none, so each call's value is used."""
    def f(x):
        t = torch.linalg.svdvals(x * 2).sum()  # (svdvals stays in torch: three partitions)
        return x * torch.linalg.svdvals(x + t).sum() + t

    torch._dynamo.reset()
    compiled = torch.compile(f, backend=lambda gm, ex: trident_backend(gm, ex, options={"precision": "fp32"}))
    gen = torch.Generator().manual_seed(0)
    for _ in range(3):
        x = torch.randn(3, 4, generator=gen)
        torch.testing.assert_close(compiled(x), f(x))


def test_a_size_one_partition_computes_and_another_reads_is_computed_again():
    """A partition returns tensors only: `x.shape[1] + 1` read past a node in torch is computed
    again in the reader's partition, and no partition falls back to torch."""
    def f(x):
        n = x.shape[1] + 1
        a = torch.relu(x) * 2
        return torch.linalg.svdvals(a) * n + a.sum()

    torch._dynamo.reset()
    spy = Spy()
    compiled = torch.compile(f, backend=lambda gm, ex: spy(gm, ex, options={"precision": "fp32"}), dynamic=True)
    gen = torch.Generator().manual_seed(1)
    for m in (4, 6, 9):
        x = torch.randn(3, m, generator=gen)
        torch.testing.assert_close(compiled(x), f(x))
    in_torch = [item.op for gm in spy.compiled for item in gm.trident_report.in_torch]
    assert len(in_torch) == 1 and "svdvals" in in_torch[0], in_torch


def test_a_0d_cpu_input_takes_the_device_of_the_others():
    """transformers' caches keep counters (`cumulative_length`, `sliding_window_tensor`) as 0-d
    CPU tensors beside a model on the GPU, as torch allows: the engine runs on the GPU, and such an
    input is moved there for it."""
    from trident.compiler.dynamo import _call_device, _on_device

    gpu_like, counter = torch.empty(2, 3, device="meta"), torch.tensor(7)
    assert _call_device([counter, gpu_like, 3]) == torch.device("meta")
    assert _call_device([counter, 3]) == torch.device("cpu")
    assert _call_device([torch.empty(2), gpu_like]) is None   # (trident says so before building)
    assert _on_device(counter, torch.device("meta")).device.type == "meta"
    assert _on_device(torch.empty(2), torch.device("meta")).device.type == "cpu"  # (the engine refuses it)
    assert _on_device(3, torch.device("meta")) == 3
