"""The attention op through the compiler: its codegen against the reference executor, the pass that
finds attention spelled out in ops (fx and ONNX graphs exported from torch modules, and the
exporters' variations built by hand), the fx SDPA mappings and the ONNX Attention op. Each model's
attention must become exactly one fused kernel and match torch."""
import io
import math
import warnings

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
from onnx import TensorProto, helper

from trident.compiler.build import BuildTrace, build_engine, compile_graph
from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx import import_fx
from trident.compiler.frontend.onnx import import_onnx
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.passes.attention import causal_alignment, fuse_attention
from trident.compiler.testing import assert_matches_reference, run_engine

TOL = {"fp32": (1e-5, 1e-5), "fp16": (2e-2, 2e-2)}


def randn(rng, *shape):
    return torch.randn(*shape, generator=rng)


def attention_steps(engine) -> list:
    from trident.compiler.autotune import problem_of

    return [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "attention"]


def attention_kernels(engine) -> int:
    return len(attention_steps(engine))


def build(model, inputs=None, precision="fp32"):
    trace = BuildTrace()
    engine = build_engine(model, precision, example_inputs=inputs, trace=trace)
    return engine, trace


def assert_one_attention_per_layer(engine, trace, layers=1):
    final = trace.after_pass[-1][1]
    assert not any(n.op == "softmax" for n in final.nodes), final
    assert sum(n.op == "attention" for n in final.nodes) == layers
    assert attention_kernels(engine) == layers


# ------------------------------------------------------------------- op and codegen ----
def attention_graph(shapes, dtypes=None, **attrs):
    b = GraphBuilder("attention")
    dtypes = dtypes or [torch.float32] * len(shapes)
    xs = [b.input(f"x{i}", TensorType(tuple(s), d)) for i, (s, d) in enumerate(zip(shapes, dtypes))]
    return b.finish([b.add1("attention", xs, attrs)])


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("mask", [None, "bool", "additive", "padding"])
@pytest.mark.parametrize("causal", [None, "top_left", "bottom_right"])
def test_attention_op_is_one_kernel(precision, mask, causal, rng):
    shapes = [(2, 4, 19, 32), (2, 2, 23, 32), (2, 2, 23, 24)]
    dtypes = [torch.float32] * 3
    inputs = [randn(rng, *s) for s in shapes]
    if mask:
        shapes.append({"bool": (2, 1, 19, 23), "additive": (1, 4, 19, 23), "padding": (2, 1, 1, 23)}[mask])
        dtypes.append(torch.bool if mask == "bool" else torch.float32)
        inputs.append(torch.rand(shapes[-1], generator=rng) < 0.7 if mask == "bool" else randn(rng, *shapes[-1]))
    attrs = {"scale": 0.2} | ({"causal": causal} if causal else {})
    g = attention_graph(shapes, dtypes, **attrs)
    casts = sum(d == torch.float32 for d in dtypes) + 1  # fp16: the boundary casts are kernels too
    kernels = 1 if precision == "fp32" else 1 + casts
    engine = assert_matches_reference(g, inputs, precision, TOL[precision], max_kernels=kernels)
    assert attention_kernels(engine) == 1
    (source,) = [s.source for s in engine.plan.kernel_steps() if "attention_program(" in s.source]
    # a mask with one row for every query is read a key vector at a time
    assert ("MASK_PER_KEY=True" in source) == (mask == "padding")


@pytest.mark.parametrize("causal", ["top_left", "bottom_right"])
def test_generated_attention_pairs_causal_tiles(causal, rng, monkeypatch):
    """Past PAIR_MIN_ROWS query rows a causal engine's kernel pairs its query tiles (PAIRED in its
    config, half the programs in its grid); lowered here so a small problem takes that path."""
    from trident.kernels import attention as template
    monkeypatch.setattr(template, "PAIR_MIN_ROWS", 1)
    monkeypatch.setattr(template, "interpreter_block", lambda n: 16)  # several tiles a head
    shapes = [(2, 4, 75, 32), (2, 2, 83, 32), (2, 2, 83, 32)]
    g = attention_graph(shapes, scale=0.2, causal=causal)
    engine = assert_matches_reference(g, [randn(rng, *s) for s in shapes], "fp32", TOL["fp32"], max_kernels=1)
    (step,) = [s for s in engine.plan.kernel_steps() if "attention_program(" in s.source]
    assert step.config.get("PAIRED") == 1


def test_attention_reads_a_packed_qkv_split_through_strides(rng):
    # [B, S, 3*H*D] -> split -> head views -> attention -> back to [B, S, H*D]: one kernel, no copies.
    b = GraphBuilder("qkv")
    x = b.input("x", TensorType((2, 9, 3 * 16), torch.float32))
    parts = b.add("split", [x], {"axis": 2, "sizes": [16, 16, 16]})
    heads = [b.add1("transpose", [b.add1("reshape", [p], {"shape": [2, 9, 2, 8]})], {"perm": [0, 2, 1, 3]})
             for p in parts]
    o = b.add1("attention", heads, {"scale": 0.35, "causal": "top_left"})
    o = b.add1("reshape", [b.add1("transpose", [o], {"perm": [0, 2, 1, 3]})], {"shape": [2, 9, 16]})
    engine = assert_matches_reference(b.finish([o]), [randn(rng, 2, 9, 48)], "fp32", TOL["fp32"], max_kernels=1)
    assert attention_kernels(engine) == 1


def test_attention_empty_and_size_one_dims(rng):
    for shapes in ([(1, 1, 1, 16), (1, 1, 1, 16), (1, 1, 1, 16)], [(2, 1, 5, 16), (2, 1, 1, 16), (2, 1, 1, 8)]):
        g = attention_graph(shapes, scale=0.5)
        assert_matches_reference(g, [randn(rng, *s) for s in shapes], "fp32", TOL["fp32"], max_kernels=1)
    shapes = [(2, 1, 0, 16), (2, 1, 3, 16), (2, 1, 3, 16)]
    g = attention_graph(shapes, scale=0.5)
    assert_matches_reference(g, [randn(rng, *s) for s in shapes], "fp32", TOL["fp32"])


def test_attention_the_template_cannot_run_falls_back_to_torch(rng):
    shapes = [(2, 2, 2, 3, 5, 8)] * 3  # rank 6
    g = attention_graph(shapes, scale=0.3)
    trace = BuildTrace()
    compile_graph(g, "fp32", trace)
    (group,) = trace.groups
    assert group.kind == "torch" and "rank-6" in group.reasons[0]
    assert_matches_reference(g, [randn(rng, *s) for s in shapes], "fp32", TOL["fp32"])


def test_attention_op_rejects_bad_operands():
    with pytest.raises(ShapeError, match="dtype"):
        attention_graph([(1, 2, 3, 4)] * 3, [torch.float32, torch.float16, torch.float32], scale=1.0)
    with pytest.raises(ShapeError, match="causal"):
        attention_graph([(1, 2, 3, 4)] * 3, scale=1.0, causal="diagonal")


# ------------------------------------------------------------ the decomposed pattern ----
class MHA(nn.Module):
    """Attention written out, as models without SDPA and older exporters have it."""

    def __init__(self, dim=32, heads=4, mask="none", seq=13):
        super().__init__()
        self.heads, self.mask = heads, mask
        self.qkv, self.out = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.register_buffer("causal", torch.full((seq, seq), float("-inf")).triu(1))

    def heads_of(self, x):
        b, s, d = x.shape
        qkv = self.qkv(x)
        return [qkv[..., i * d:(i + 1) * d].reshape(b, s, self.heads, -1).transpose(1, 2) for i in range(3)]

    def forward(self, x, keep=None):
        b, s, d = x.shape
        q, k, v = self.heads_of(x)
        scores = q @ k.transpose(-2, -1) / math.sqrt(d // self.heads)
        if self.mask == "additive":
            scores = scores + (1.0 - keep[:, None, None, :].float()) * -10000.0
        elif self.mask == "where":
            scores = scores.masked_fill(~keep[:, None, None, :], float("-inf"))
        elif self.mask == "causal":
            scores = scores + self.causal
        ctx = scores.softmax(-1) @ v
        return self.out(ctx.transpose(1, 2).reshape(b, s, d))


class SDPA(MHA):
    def forward(self, x, keep=None):
        b, s, d = x.shape
        q, k, v = self.heads_of(x)
        mask = None if keep is None else keep[:, None, None, :]
        ctx = F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=self.mask == "causal")
        return self.out(ctx.transpose(1, 2).reshape(b, s, d))


def module_inputs(mask, rng):
    x = randn(rng, 2, 13, 32)
    keep = torch.rand(2, 13, generator=rng) < 0.7
    keep[:, 0] = True
    return (x, keep) if mask in ("additive", "where") or mask == "bool" else (x,)


def onnx_of(module, inputs) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, still works
        torch.onnx.export(module, inputs, f, dynamo=False, opset_version=17)
    return f.getvalue()


@pytest.mark.parametrize("via", ["fx", "onnx"])
@pytest.mark.parametrize("mask", ["none", "additive", "where", "causal"])
def test_decomposed_attention_becomes_one_kernel(via, mask, rng):
    module = MHA(mask=mask).eval()
    inputs = module_inputs(mask, rng)
    engine, trace = build(module if via == "fx" else onnx_of(module, inputs), inputs if via == "fx" else None)
    assert_one_attention_per_layer(engine, trace)
    (node,) = [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]
    assert node.attrs.get("causal") == ("top_left" if mask == "causal" else None)  # a constant mask, folded
    assert len(node.inputs) == (4 if mask in ("additive", "where") else 3)
    torch.testing.assert_close(run_engine(engine, *inputs)[0], module(*inputs), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("mask", ["none", "bool", "causal"])
def test_sdpa_module_is_one_kernel(mask, rng):
    # Through ONNX too, but for the boolean mask (its IsNaN guard: the next test); the TorchScript
    # exporter writes is_causal as a Trilu-built mask, which folds to a constant.
    module = SDPA(mask=mask).eval()
    inputs = module_inputs(mask, rng)
    for model in (module, onnx_of(module, inputs)) if mask != "bool" else (module,):
        engine, trace = build(model, inputs if model is module else None)
        assert_one_attention_per_layer(engine, trace)
        (node,) = [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]
        assert node.attrs.get("causal") == ("top_left" if mask == "causal" else None)
        torch.testing.assert_close(run_engine(engine, *inputs)[0], module(*inputs), rtol=1e-5, atol=1e-5)


def test_exported_sdpa_with_a_bool_mask_fuses_with_its_nan_guard(rng):
    # Exporters write a boolean-mask SDPA as softmax(scores + where(mask, 0, -inf)) and then
    # where(isnan(p), 0, p): one kernel in its zero_nan_rows mode.
    module = SDPA(mask="bool").eval()
    inputs = module_inputs("bool", rng)
    engine, trace = build(onnx_of(module, inputs))
    assert_one_attention_per_layer(engine, trace)
    final = trace.after_pass[-1][1]
    assert not any(n.op == "is_nan" for n in final.nodes)
    (node,) = [n for n in final.nodes if n.op == "attention"]
    assert node.attrs["zero_nan_rows"] is True
    torch.testing.assert_close(run_engine(engine, *inputs)[0], module(*inputs), rtol=1e-5, atol=1e-5)


def guarded_sdpa_model(shapes):
    """The exporters' boolean-mask SDPA, spelled out: Q K^T * s + Where(M, 0, -inf), Softmax, the
    IsNaN guard, MatMul V."""
    nodes = [helper.make_node("Transpose", ["K"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["Q", "kt"], ["qk"]), helper.make_node("Mul", ["qk", "s"], ["qks"]),
             helper.make_node("Where", ["M", "zero", "minus_inf"], ["bias"]),
             helper.make_node("Add", ["qks", "bias"], ["scores"]),
             helper.make_node("Softmax", ["scores"], ["p"], axis=-1), helper.make_node("IsNaN", ["p"], ["nan"]),
             helper.make_node("Where", ["nan", "zero", "p"], ["p0"]), helper.make_node("MatMul", ["p0", "V"], ["Y"])]
    types = {"M": BOOL}
    graph = helper.make_graph(
        nodes, "guarded_sdpa", [helper.make_tensor_value_info(n, types.get(n, F32), x) for n, x in shapes.items()],
        [helper.make_tensor_value_info("Y", F32, shapes["Q"][:-1] + shapes["V"][-1:])],
        [helper.make_tensor("s", F32, [], [0.25]), helper.make_tensor("zero", F32, [], [0.0]),
         helper.make_tensor("minus_inf", F32, [], [-math.inf])])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ORT_IR_VERSION)


def test_guarded_sdpa_matches_onnxruntime_on_nan_and_inf(rng):
    # NaN and inf where the guard acts: a NaN query row, a +inf key seen by some rows and masked for
    # others (+inf meets the mask's -inf as NaN: those rows are NaN rows too, as in the graph), a
    # fully masked row, and then a NaN value, which 0 * NaN carries into every row's column.
    shapes = {"Q": (1, 2, 9, 16), "K": (1, 2, 37, 16), "V": (1, 2, 37, 8), "M": (1, 1, 9, 37)}
    feeds = {n: _np(rng, *x) for n, x in shapes.items() if n != "M"}
    feeds["M"] = (torch.rand(1, 1, 9, 37, generator=rng) < 0.8).numpy()
    feeds["M"][..., 4, :] = False
    feeds["M"][..., 5, 20] = False
    feeds["Q"][0, :, 1, 3] = math.nan
    feeds["K"][0, :, 20, 0] = math.inf      # +inf scores where q[..., 0] > 0, -inf (hidden) elsewhere
    model = guarded_sdpa_model(shapes)
    engine, trace = build(model.SerializeToString())
    assert_one_attention_per_layer(engine, trace)
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString())
    for step in range(2):
        if step:
            feeds["V"][0, 1, 30, 2] = math.nan
        got = run_engine(engine, *[torch.from_numpy(feeds[n]) for n in shapes])[0].numpy()
        want = session.run(None, feeds)[0]
        zero_rows = (want == 0).all(-1)
        assert zero_rows.any() and not zero_rows.all() and np.isnan(want).any() == bool(step)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)  # NaN where, and only where, ORT has it


def test_fp16_engine_keeps_one_attention_kernel(rng):
    module = MHA(mask="additive").eval()
    inputs = module_inputs("additive", rng)
    engine, trace = build(module, inputs, "fp16")
    assert_one_attention_per_layer(engine, trace)
    torch.testing.assert_close(run_engine(engine, *inputs)[0], module(*inputs), rtol=2e-2, atol=2e-2)


class WindowAttention(nn.Module):
    """Swin's window attention as timm writes it unfused: scores of [images * windows, heads, N, N]
    get a relative position bias per head, then a mask per window through a 5-D view."""

    def __init__(self, dim=32, heads=2, n=10, windows=3):
        super().__init__()
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv, self.proj = nn.Linear(dim, 3 * dim), nn.Linear(dim, dim)
        self.rel = nn.Parameter(torch.randn(1, heads, n, n))
        mask = torch.zeros(windows, n, n)
        mask[1, :5, 5:] = mask[2, :, ::2] = -100.0
        self.register_buffer("mask", mask)

    def forward(self, x):
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0] * self.scale, qkv[1], qkv[2]
        attn = q @ k.transpose(-2, -1) + self.rel
        windows = self.mask.shape[0]
        attn = attn.view(-1, windows, self.heads, n, n) + self.mask.unsqueeze(1).unsqueeze(0)
        attn = attn.view(-1, self.heads, n, n).softmax(-1)
        return self.proj((attn @ v).transpose(1, 2).reshape(b, n, -1))


@pytest.mark.parametrize("via", ["fx", "onnx"])
def test_swin_window_attention_is_one_kernel_and_copies_nothing(via, rng):
    module = WindowAttention().eval()
    x = randn(rng, 6, 10, 32)  # 2 images x 3 windows
    engine, trace = build(module if via == "fx" else onnx_of(module, (x,)), (x,) if via == "fx" else None)
    assert_one_attention_per_layer(engine, trace)
    (node,) = [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]
    assert len(trace.after_pass[-1][1].types[node.inputs[0]].shape) == 5  # [images, windows, heads, N, D]
    # the QKV projection, attention, the output projection (ONNX picks Q, K, V out with scalar
    # Gathers: views of the projection's output)
    assert engine.num_kernels == 3
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, x)[0], module(x), rtol=1e-5, atol=1e-5)


def _pattern_graph(rng, body, shapes):
    b = GraphBuilder("pattern")
    xs = [b.input(f"x{i}", TensorType(s, torch.float32)) for i, s in enumerate(shapes)]
    g = b.finish(body(b, *xs))
    return g, [randn(rng, *s) for s in shapes]


def _scalar(b, value):
    return b.constant(torch.tensor(value))


def _check_rewritten(g, inputs, attentions=1):
    fused = fuse_attention(g)
    fused.verify()
    assert sum(n.op == "attention" for n in fused.nodes) == attentions
    assert not any(n.op == "softmax" for n in fused.nodes) or attentions == 0
    from trident.compiler.reference import run_reference

    for got, want in zip(run_reference(fused, inputs), run_reference(g, inputs)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    return fused


def test_scale_on_q_and_k_separately_behind_exporter_reshapes(rng):
    # torch's ONNX exporter: K^T as reshape [B*H, L, D] -> transpose -> reshape back, each of Q and
    # K^T multiplied by sqrt(scale); the pass must undo the reshapes and fold both factors.
    def body(b, q, k, v):
        kt = b.add1("reshape", [k], {"shape": [6, 7, 8]})
        kt = b.add1("mul", [b.add1("transpose", [kt], {"perm": [0, 2, 1]}), _scalar(b, 0.5)])
        kt = b.add1("reshape", [kt], {"shape": [2, 3, 8, 7]})
        s = b.add1("matmul", [b.add1("mul", [q, _scalar(b, 0.5)]), kt])
        return [b.add1("matmul", [b.add1("softmax", [s], {"axis": -1}), v])]
    g, inputs = _pattern_graph(rng, body, [(2, 3, 5, 8), (2, 3, 7, 8), (2, 3, 7, 8)])
    fused = _check_rewritten(g, inputs)
    (node,) = [n for n in fused.nodes if n.op == "attention"]
    assert node.attrs["scale"] == pytest.approx(0.25) and node.inputs[1] == "x1"


def test_mask_added_before_the_scale_is_scaled_too(rng):
    def body(b, q, k, v, m):
        s = b.add1("matmul", [q, b.add1("transpose", [k], {"perm": [0, 2, 1]})])
        s = b.add1("div", [b.add1("add", [s, m]), _scalar(b, 4.0)])
        return [b.add1("matmul", [b.add1("softmax", [s], {"axis": 2}), v])]
    _check_rewritten(*_pattern_graph(rng, body, [(3, 5, 8), (3, 7, 8), (3, 7, 6), (5, 7)]))


def test_mask_of_the_full_score_shape_either_side_of_the_add(rng):
    def body(b, q, k, v, m):
        s = b.add1("mul", [b.add1("matmul", [q, b.add1("transpose", [k], {"perm": [0, 1, 3, 2]})]), _scalar(b, 0.3)])
        return [b.add1("matmul", [b.add1("softmax", [b.add1("add", [m, s])], {"axis": -1}), v])]
    _check_rewritten(*_pattern_graph(rng, body, [(1, 2, 5, 8), (1, 2, 7, 8), (1, 2, 7, 8), (1, 2, 5, 7)]))


def test_scores_read_elsewhere_are_not_rewritten(rng):
    def body(b, q, k, v):
        s = b.add1("matmul", [q, b.add1("transpose", [k], {"perm": [0, 2, 1]})])
        p = b.add1("softmax", [s], {"axis": -1})
        return [b.add1("matmul", [p, v]), p]  # output_attentions=True
    g, inputs = _pattern_graph(rng, body, [(2, 5, 8), (2, 7, 8), (2, 7, 8)])
    _check_rewritten(g, inputs, attentions=0)


def test_softmax_over_another_axis_is_not_attention(rng):
    def body(b, q, k, v):
        s = b.add1("matmul", [q, b.add1("transpose", [k], {"perm": [0, 2, 1]})])
        return [b.add1("matmul", [b.add1("softmax", [s], {"axis": 1}), v])]
    _check_rewritten(*_pattern_graph(rng, body, [(2, 7, 8), (2, 7, 8), (2, 7, 8)]), attentions=0)


def test_causal_alignment_of_constant_masks():
    top = torch.full((4, 6), -math.inf).triu(1)
    bottom = torch.full((4, 6), torch.finfo(torch.float32).min).triu(3)
    assert causal_alignment(top, 4, 6) == "top_left"
    assert causal_alignment(bottom[None, None], 4, 6) == "bottom_right"
    assert causal_alignment(torch.ones(6, 6, dtype=torch.bool).tril(), 6, 6) == "top_left"
    assert causal_alignment(torch.full((4, 6), -100.0).triu(1), 4, 6) is None  # -100 does not disable
    assert causal_alignment(top.expand(2, 4, 6).clone(), 4, 6) is None  # one mask per batch


# --------------------------------------------------------------------- fx mappings ----
class Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, q, k, v):
        return self.fn(q, k, v)


def test_fx_sdpa_gqa_and_causal(rng):
    q, k, v = randn(rng, 2, 4, 9, 16), randn(rng, 2, 2, 11, 16), randn(rng, 2, 2, 11, 8)
    module = Call(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True, scale=0.4))
    engine, trace = build(module, (q, k, v))
    (node,) = [n for n in trace.imported.nodes if n.op == "attention"]
    assert node.attrs == {"scale": 0.4, "causal": "top_left"}
    assert attention_kernels(engine) == 1
    torch.testing.assert_close(run_engine(engine, q, k, v)[0], module(q, k, v), rtol=1e-5, atol=1e-5)


def test_fx_sdpa_backend_variants(rng):
    q, k, v = randn(rng, 1, 2, 5, 8), randn(rng, 1, 2, 6, 8), randn(rng, 1, 2, 6, 8)
    aten = torch.ops.aten
    module = Call(lambda q, k, v: aten._scaled_dot_product_flash_attention_for_cpu.default(q, k, v, is_causal=True)[0])
    graph = import_fx(torch.fx.symbolic_trace(module), (q, k, v))
    assert [n.op for n in graph.nodes] == ["attention"]
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True)
    engine = build_engine(torch.fx.symbolic_trace(module), "fp32", example_inputs=(q, k, v))
    torch.testing.assert_close(run_engine(engine, q, k, v)[0], expected, rtol=1e-5, atol=1e-5)


def test_fx_sdpa_refusals(rng):
    q, k = randn(rng, 1, 4, 5, 8), randn(rng, 1, 2, 5, 8)
    with pytest.raises(ShapeError, match="enable_gqa"):
        import_fx(torch.fx.symbolic_trace(Call(F.scaled_dot_product_attention)), (q, k, k))
    with pytest.raises(UnsupportedError, match="dropout"):
        import_fx(Call(lambda q, k, v: F.scaled_dot_product_attention(q, k, v, dropout_p=0.1)), (q, q, q))


# -------------------------------------------------------------- ONNX Attention op ----
def attention_model(inputs, outputs, opset=23, **attrs):
    """One ONNX Attention node; inputs/outputs: (name, shape, elem_type) with "" skipping a slot."""
    node = helper.make_node("Attention", [n for n, *_ in inputs], [n for n, *_ in outputs], **attrs)
    info = [helper.make_tensor_value_info(n, t, s) for n, s, t in inputs if n]
    outs = [helper.make_tensor_value_info(n, t, s) for n, s, t in outputs if n]
    graph = helper.make_graph([node], "attention", info, outs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)])


F32, BOOL = TensorProto.FLOAT, TensorProto.BOOL
ORT_IR_VERSION = 8  # opset 17's; a newer onnx writes its own by default, which older onnxruntimes refuse


def check_against_onnx_reference(model, feeds):
    from onnx.reference import ReferenceEvaluator

    engine = build_engine(model.SerializeToString(), "fp32")
    assert attention_kernels(engine) == 1
    got = run_engine(engine, *[torch.from_numpy(x) for x in feeds.values()])
    want = ReferenceEvaluator(model).run(None, feeds)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g.numpy(), w, rtol=1e-5, atol=1e-5)


def _np(rng, *shape):
    return randn(rng, *shape).numpy()


def test_onnx_attention_4d_gqa_bool_mask(rng):
    q, k, v = _np(rng, 2, 4, 5, 8), _np(rng, 2, 2, 7, 8), _np(rng, 2, 2, 7, 8)
    keep = (torch.rand(2, 1, 5, 7, generator=rng) < 0.7).numpy()
    model = attention_model([("Q", q.shape, F32), ("K", k.shape, F32), ("V", v.shape, F32), ("M", keep.shape, BOOL)],
                            [("Y", (2, 4, 5, 8), F32)])
    check_against_onnx_reference(model, dict(Q=q, K=k, V=v, M=keep))


def test_onnx_attention_3d_heads_causal_float_mask(rng):
    q, k, v, m = _np(rng, 2, 5, 4 * 8), _np(rng, 2, 7, 2 * 8), _np(rng, 2, 7, 2 * 6), _np(rng, 5, 7)
    model = attention_model([("Q", q.shape, F32), ("K", k.shape, F32), ("V", v.shape, F32), ("M", m.shape, F32)],
                            [("Y", (2, 5, 4 * 6), F32)], q_num_heads=4, kv_num_heads=2, is_causal=1, scale=0.3)
    check_against_onnx_reference(model, dict(Q=q, K=k, V=v, M=m))


def test_onnx_attention_kv_cache_is_bottom_right_causal(rng):
    q, k, v = _np(rng, 1, 2, 4, 8), _np(rng, 1, 2, 4, 8), _np(rng, 1, 2, 4, 8)
    pk, pv = _np(rng, 1, 2, 3, 8), _np(rng, 1, 2, 3, 8)
    model = attention_model([("Q", q.shape, F32), ("K", k.shape, F32), ("V", v.shape, F32), ("", None, F32),
                             ("PK", pk.shape, F32), ("PV", pv.shape, F32)],
                            [("Y", (1, 2, 4, 8), F32), ("PRK", (1, 2, 7, 8), F32), ("PRV", (1, 2, 7, 8), F32)],
                            is_causal=1)
    graph = import_onnx(model)
    (node,) = [n for n in graph.nodes if n.op == "attention"]
    assert node.attrs["causal"] == "bottom_right"
    check_against_onnx_reference(model, dict(Q=q, K=k, V=v, PK=pk, PV=pv))


def test_onnx_attention_refusals():
    shapes = [("Q", (1, 2, 4, 8), F32), ("K", (1, 2, 4, 8), F32), ("V", (1, 2, 4, 8), F32)]
    with pytest.raises(UnsupportedError, match="softcap"):
        import_onnx(attention_model(shapes, [("Y", (1, 2, 4, 8), F32)], softcap=30.0))
    with pytest.raises(UnsupportedError, match="qk_matmul_output"):
        import_onnx(attention_model(shapes, [("Y", (1, 2, 4, 8), F32), ("", None, F32), ("", None, F32),
                                             ("QK", (1, 2, 4, 4), F32)]))


def test_onnx_attention_spelled_out_with_sqrt_scales(rng):
    # The pattern the ONNX spec (and torch's exporter) writes: Q*sqrt(s), K*sqrt(s), Transpose, MatMul,
    # Add mask, Softmax, MatMul.
    s = 0.125 ** 0.5
    nodes = [helper.make_node("Mul", ["Q", "s"], ["qs"]), helper.make_node("Mul", ["K", "s"], ["ks"]),
             helper.make_node("Transpose", ["ks"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["qs", "kt"], ["qk"]), helper.make_node("Add", ["qk", "M"], ["qkm"]),
             helper.make_node("Softmax", ["qkm"], ["p"], axis=-1), helper.make_node("MatMul", ["p", "V"], ["Y"])]
    shapes = {"Q": (2, 3, 5, 8), "K": (2, 3, 6, 8), "V": (2, 3, 6, 4), "M": (2, 1, 1, 6)}
    graph = helper.make_graph(nodes, "sdpa", [helper.make_tensor_value_info(n, F32, s_) for n, s_ in shapes.items()],
                              [helper.make_tensor_value_info("Y", F32, (2, 3, 5, 4))],
                              [helper.make_tensor("s", F32, [], [s])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=ORT_IR_VERSION)
    feeds = {n: _np(rng, *shape) for n, shape in shapes.items()}
    engine, trace = build(model.SerializeToString())
    assert_one_attention_per_layer(engine, trace)
    (node,) = [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]
    assert node.attrs["scale"] == pytest.approx(0.125)
    import onnxruntime as ort

    want = ort.InferenceSession(model.SerializeToString()).run(None, feeds)[0]
    np.testing.assert_allclose(run_engine(engine, *[torch.from_numpy(x) for x in feeds.values()])[0].numpy(), want,
                               rtol=1e-5, atol=1e-5)


class TorchMHA(nn.Module):
    """nn.MultiheadAttention batch-first, as torchvision's ViT calls it."""

    def __init__(self, width=32, heads=4):
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)

    def forward(self, x):
        return self.attention(x, x, x, need_weights=False)[0]


def test_multihead_attention_through_the_dynamo_exporter_is_one_kernel(rng):
    # torch.onnx.export(dynamo=True) writes Q*sqrt(s) and K^T*sqrt(s) on head-split views
    # [B*H, L, D] -> [B, H, L, D]; sink_reshapes moves those reshapes past the scales and Q K^T, so
    # the scores reach the softmax through a reshape [B*H, L, L] -> [B, H, L, L].
    from trident.tools.zoo_run import export_onnx

    module = TorchMHA().eval()
    x = randn(rng, 3, 11, 32)
    engine, trace = build(export_onnx(module, (x,)))
    assert_one_attention_per_layer(engine, trace)
    (node,) = [n for n in trace.after_pass[-1][1].nodes if n.op == "attention"]
    assert node.attrs["scale"] == pytest.approx(1 / math.sqrt(8))
    torch.testing.assert_close(run_engine(engine, x)[0], module(x), rtol=1e-5, atol=1e-5)


def test_a_mask_inside_a_batch_regrouping_is_not_absorbed(rng):
    # A mask added before the scores' batch dims are regrouped is in the other grouping: the pass
    # leaves that graph alone rather than guess how the mask broadcasts.
    b = GraphBuilder("regrouped")
    q, kt, v = (b.input(n, TensorType(s, torch.float32)) for n, s in
                (("q", (6, 5, 8)), ("kt", (6, 8, 5)), ("v", (2, 3, 5, 8))))
    mask = b.input("mask", TensorType((6, 5, 5), torch.float32))
    scores = b.add1("add", [b.add1("matmul", [q, kt]), mask])
    probs = b.add1("softmax", [b.add1("reshape", [scores], {"shape": [2, 3, 5, 5]})], {"axis": -1})
    graph = b.finish([b.add1("matmul", [probs, v])])
    assert not any(n.op == "attention" for n in fuse_attention(graph).nodes)


# ------------------------------------------------------------------ tuning, batches ----
def test_attention_tuning_candidates_start_with_the_heuristic(rng):
    from trident.compiler.autotune import LaunchConfig as Config, problem_of
    from trident.compiler.autotune.space import candidates, flops, prune_reason

    module = MHA(mask="additive").eval()
    engine, _ = build(module, module_inputs("additive", rng))
    (step,) = attention_steps(engine)
    problem = dict(problem_of(step.source), Lq=4096, Lk=4096, D=64, DV=64, dtype=torch.float16)  # as if on a GPU
    base = Config.of(4, 4, BLOCK_M=128, BLOCK_N=64)
    for level in ("fast", "full"):
        cands = candidates(problem, base, level)
        assert cands[0] == base and len(cands) > 1 and len(set(cands)) == len(cands)
        assert all(prune_reason(c, problem) is None for c in cands[1:])
    assert prune_reason(Config.of(4, 2, BLOCK_M=128, BLOCK_N=128), dict(problem, D=128, DV=128)) == "registers"
    assert prune_reason(Config.of(8, 4, BLOCK_M=128, BLOCK_N=128), dict(problem, D=128, DV=128)) == "shared memory"
    assert flops(problem) == 2.0 * 8 * 4096 * 4096 * 128


def test_attention_engine_over_a_batch_profile(rng):
    module = MHA(mask="additive").eval()
    engine = build_engine(module, "fp32", example_inputs=module_inputs("additive", rng), batch=(1, 2, 4))
    for batch in (1, 3, 4):
        x, keep = randn(rng, batch, 13, 32), torch.rand(batch, 13, generator=rng) < 0.7
        keep[:, 0] = True
        torch.testing.assert_close(run_engine(engine, x, keep)[0], module(x, keep), rtol=1e-5, atol=1e-5)


def test_fp16_softmax_in_fp32_between_casts(rng):
    # transformers: softmax(scores, dtype=float32).to(query.dtype) in an fp16 model
    def body(b, q, k, v):
        s = b.add1("matmul", [q, b.add1("transpose", [k], {"perm": [0, 2, 1]})])
        p = b.add1("softmax", [b.add1("cast", [s], {"dtype": torch.float32})], {"axis": -1})
        return [b.add1("matmul", [b.add1("cast", [p], {"dtype": torch.float16}), v])]
    b = GraphBuilder("fp16")
    xs = [b.input(f"x{i}", TensorType((2, 5 + 2 * (i > 0), 8), torch.float16)) for i in range(3)]
    g = b.finish(body(b, *xs))
    fused = fuse_attention(g)
    assert [n.op for n in fused.nodes] == ["attention"]  # K^T of K^T is K: no transpose left
    inputs = [randn(rng, *g.types[x].shape).half() for x in g.inputs]
    assert_matches_reference(g, inputs, "fp16", TOL["fp16"], max_kernels=1)


# ----------------------------------------------------------------------------- GPU ----
GPU_MODELS = [  # (batch, sequence, width, heads, mask): BERT-base, ViT-B/16, Whisper's encoder, a long causal LM
    (8, 512, 768, 12, "additive"), (32, 197, 768, 12, "none"), (4, 1500, 384, 6, "none"), (2, 4096, 1024, 16, "causal")]


@pytest.mark.gpu
@pytest.mark.parametrize("batch,seq,width,heads,mask", GPU_MODELS)
def test_gpu_engines_run_attention_as_one_kernel(batch, seq, width, heads, mask):
    module = MHA(width, heads, mask, seq).eval().cuda()
    g = torch.Generator().manual_seed(0)
    x = torch.randn(batch, seq, width, generator=g).cuda()
    keep = (torch.rand(batch, seq, generator=g) < 0.9).cuda()
    inputs = (x, keep) if mask == "additive" else (x,)
    for model in (module, SDPA(width, heads, mask if mask != "additive" else "none", seq).eval().cuda()):
        trace = BuildTrace()
        engine = build_engine(model, "fp16", example_inputs=inputs if model is module else (x,), trace=trace)
        assert_one_attention_per_layer(engine, trace)
        got = engine(*(inputs if model is module else (x,)))[0].float()
        with torch.no_grad():
            ref = model(*(inputs if model is module else (x,)))
        assert ((got - ref).norm() / ref.norm()).item() < 1e-2
