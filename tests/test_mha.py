"""nn.MultiheadAttention reaches the fused attention kernel (compiler/frontend/fx/attention.py):
through torch.compile (dynamo leaves F.multi_head_attention_forward), torch's native fast-path op,
and an ONNX export; one attention kernel per attention, the head split read through strides (no
copy kernels, no torch steps), results matching eager."""
import pytest
import torch
import torch.nn as nn

from trident.compiler.autotune import problem_of
from trident.compiler.build import BuildTrace, build_engine
from trident.compiler.testing import assert_backend_matches_eager, export_onnx, run_engine

from onnx_util import torch_steps


class EncoderBlock(nn.Module):
    """torchvision's ViT encoder block: pre-norm, nn.MultiheadAttention (need_weights=False), MLP."""

    def __init__(self, dim=32, heads=2, batch_first=True):
        super().__init__()
        self.batch_first = batch_first
        self.ln1, self.ln2 = nn.LayerNorm(dim), nn.LayerNorm(dim)
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=batch_first)
        self.mlp = nn.Sequential(nn.Linear(dim, 64), nn.GELU(), nn.Linear(64, dim))

    def forward(self, x):
        y = self.ln1(x)
        y, _ = self.attn(y, y, y, need_weights=False)
        x = x + y
        return x + self.mlp(self.ln2(x))


class MaskedAttention(nn.Module):
    """One nn.MultiheadAttention call with masks and options, its result(s) returned."""

    def __init__(self, dim=16, heads=2, kdim=None, masks=None, **call):
        super().__init__()
        self.attn = nn.MultiheadAttention(dim, heads, batch_first=True, kdim=kdim, vdim=kdim)
        self.call = call
        self.masks = list(masks or {})
        for name, mask in (masks or {}).items():  # buffers: constants of the compiled graph
            self.register_buffer(name, mask)

    def forward(self, q, kv):
        masks = {name: getattr(self, name) for name in self.masks}
        out, weights = self.attn(q, kv, kv, **masks, **self.call)
        return out if weights is None else (out, weights)


def dynamo_engines(model, inputs, precision="fp32"):
    """The engines torch.compile would build, through a backend that keeps their build traces."""
    built = []

    def backend(gm, example_inputs):
        trace = BuildTrace()
        engine = build_engine(gm, precision, example_inputs=example_inputs, trace=trace)
        built.append((engine, trace))
        return gm.forward

    torch._dynamo.reset()
    with torch.no_grad():
        torch.compile(model, backend=backend)(*inputs)
    return built


def templates(engine) -> list[str]:
    return [problem_of(s.source).get("template") for s in engine.plan.kernel_steps()]


def copy_kernels(trace) -> list:
    """Kernels that only move data (an identity / layout copy): what a view should have been."""
    movement = {"identity", "reshape", "transpose", "cast"}
    return [s for s in trace.program.steps if s.kind == "kernel" and {n.op for n in s.group.nodes} <= movement]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("batch_first", [True, False])
def test_encoder_block_is_one_engine_with_one_attention_kernel(precision, batch_first):
    torch.manual_seed(0)
    model = EncoderBlock(batch_first=batch_first).eval()
    x = torch.randn(2, 7, 32) if batch_first else torch.randn(7, 2, 32)
    ((engine, trace),) = dynamo_engines(model, (x,), precision)
    assert torch_steps(engine) == []
    assert templates(engine).count("attention") == 1
    assert "softmax" not in [n.op for n in trace.program.graph.nodes]
    # q, k, v come out of one QKV GEMM; the head split and merge are views. At fp16 the
    # feed-forward's two GEMMs run back to back as one kernel (kernels/mlp.py).
    if precision == "fp32":
        assert templates(engine).count("matmul") == 4
    else:
        assert templates(engine).count("matmul") == 2 and templates(engine).count("mlp") == 1
    assert copy_kernels(trace) == []  # (the fp16 engine's input and output casts fuse too)
    fresh = torch.randn(x.shape)
    with torch.no_grad():
        ref = model(fresh)
    tol = 1e-4 if precision == "fp32" else 2e-2
    torch.testing.assert_close(run_engine(engine, fresh)[0], ref, rtol=tol, atol=tol)


def test_imported_input_projection_writes_its_rows_in_order():
    """torch's MHA turns a batch-first input sequence-first before its input projection; the
    import moves that transpose below the GEMM (matmul_rows_in_order), and the GEMM keeps its rows
    in order in memory: the head splits read the transpose as strides, so no copy follows, and
    cuBLAS can compute the projection, bias and all (the library path writes dense rows)."""
    torch.manual_seed(0)
    model = EncoderBlock(batch_first=True).eval()
    x = torch.randn(2, 7, 32)
    trace = BuildTrace()
    engine = build_engine(model, "fp16", example_inputs=(x,), trace=trace)
    (qkv,) = [s for s in engine.plan.kernel_steps() if problem_of(s.source).get("N") == 3 * 32]
    assert "return library_gemm(" in qkv.source
    assert copy_kernels(trace) == [] and torch_steps(engine) == []
    fresh = torch.randn(x.shape)
    with torch.no_grad():
        ref = model(fresh)
    torch.testing.assert_close(run_engine(engine, fresh)[0], ref, rtol=2e-2, atol=2e-2)


def test_encoder_block_through_the_trident_backend():
    torch.manual_seed(1)
    model = EncoderBlock().eval()
    assert_backend_matches_eager(model, torch.randn(3, 5, 32))


def _masks(kind, n=2, lq=5, lk=6, heads=2):
    g = torch.Generator().manual_seed(3)
    if kind == "key_padding_bool":
        pad = torch.zeros(n, lk, dtype=torch.bool)
        pad[1, 4:] = True
        return {"key_padding_mask": pad}
    if kind == "attn_float":
        return {"attn_mask": torch.randn(lq, lk, generator=g)}
    if kind == "attn_bool_per_head":
        return {"attn_mask": torch.rand(n * heads, lq, lk, generator=g) > 0.7}
    if kind == "both":
        pad = torch.zeros(n, lk, dtype=torch.bool)
        pad[0, :2] = True
        return {"key_padding_mask": pad, "attn_mask": torch.rand(lq, lk, generator=g) > 0.8}
    return {}


@pytest.mark.parametrize("masks", ["none", "key_padding_bool", "attn_float", "attn_bool_per_head", "both"])
def test_masked_cross_attention(masks):
    torch.manual_seed(2)
    model = MaskedAttention(masks=_masks(masks), need_weights=False).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    ((engine, trace),) = dynamo_engines(model, (q, kv))
    assert torch_steps(engine) == []
    assert templates(engine).count("attention") == 1
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, q, kv)[0], model(q, kv), rtol=1e-4, atol=1e-4)


def test_causal_and_separate_key_dims():
    torch.manual_seed(4)
    mask = nn.Transformer.generate_square_subsequent_mask(6)
    model = MaskedAttention(kdim=12, masks={"attn_mask": mask}, need_weights=False, is_causal=True).eval()
    q, kv = torch.randn(2, 6, 16), torch.randn(2, 6, 12)
    ((engine, trace),) = dynamo_engines(model, (q, kv))
    (node,) = [n for n in trace.program.graph.nodes if n.op == "attention"]
    assert node.attrs.get("causal") == "top_left" and len(node.inputs) == 3
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, q, kv)[0], model(q, kv), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("average", [True, False])
def test_need_weights_returns_the_weights(average):
    torch.manual_seed(5)
    model = MaskedAttention(masks=_masks("key_padding_bool"), need_weights=True, average_attn_weights=average).eval()
    q, kv = torch.randn(2, 5, 16), torch.randn(2, 6, 16)
    ((engine, _),) = dynamo_engines(model, (q, kv))
    with torch.no_grad():
        ref_out, ref_weights = model(q, kv)
    out, weights = run_engine(engine, q, kv)
    torch.testing.assert_close(out, ref_out, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(weights, ref_weights, rtol=1e-4, atol=1e-5)


def test_unbatched_input():
    torch.manual_seed(6)
    model = MaskedAttention(need_weights=False).eval()
    q, kv = torch.randn(5, 16), torch.randn(6, 16)
    ((engine, _),) = dynamo_engines(model, (q, kv))
    assert templates(engine).count("attention") == 1
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, q, kv)[0], model(q, kv), rtol=1e-4, atol=1e-4)


class NativeAttention(nn.Module):
    """torch's fused inference op, as nn.MultiheadAttention's fast path calls it."""

    def __init__(self, dim=16, heads=2):
        super().__init__()
        self.mha = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x, pad):
        m = self.mha
        out, _ = torch._native_multi_head_attention(x, x, x, m.embed_dim, m.num_heads, m.in_proj_weight,
                                                    m.in_proj_bias, m.out_proj.weight, m.out_proj.bias, pad,
                                                    False, True, 1)
        return out


def test_native_multi_head_attention_op():
    torch.manual_seed(7)
    model = NativeAttention().eval()
    x = torch.randn(2, 6, 16)
    pad = torch.zeros(2, 6, dtype=torch.bool)
    pad[1, 3:] = True
    trace = BuildTrace()
    engine = build_engine(model, "fp32", example_inputs=(x, pad), trace=trace)
    assert torch_steps(engine) == []
    assert templates(engine).count("attention") == 1
    with torch.no_grad():
        ref = model(x, pad)
    got = run_engine(engine, x, pad)[0]
    keep = ~pad[:, :, None].expand_as(ref)  # torch's fast path leaves padded query rows unspecified
    torch.testing.assert_close(got[keep], ref[keep], rtol=1e-4, atol=1e-4)


def test_onnx_export_of_the_block_fuses_attention():
    torch.manual_seed(8)
    model = EncoderBlock().eval()
    x = torch.randn(2, 7, 32)
    trace = BuildTrace()
    engine = build_engine(export_onnx(model, (x,)), "fp32", trace=trace)
    assert torch_steps(engine) == []
    assert templates(engine).count("attention") == 1
    assert "softmax" not in [n.op for n in trace.program.graph.nodes]
    fresh = torch.randn(2, 7, 32)
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, fresh)[0], model(fresh), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("via", ["fx", "dynamo-onnx"])
def test_block_imported_whole_runs_unbatched_gemms_and_no_copies(via):
    # torch.export and torch's dynamo ONNX exporter see nn.MultiheadAttention's batch-first input
    # turned sequence-first: the input projection is bmm(x^T, W^T.expand(L, ...)) (fx) or
    # MatMul(Transpose(x), W) (ONNX). Its rows are walked in x's order as one GEMM (no L-batched
    # GEMM of N rows each, no weight copied L times), and the Q/K/V head splits stay views.
    from trident.tools.zoo_run import export_onnx as dynamo_export

    torch.manual_seed(10)
    model = EncoderBlock().eval()
    x = torch.randn(3, 11, 32)
    trace = BuildTrace()
    source = model if via == "fx" else dynamo_export(model, (x,))
    engine = build_engine(source, "fp32", example_inputs=[x] if via == "fx" else None, trace=trace)
    assert torch_steps(engine) == []
    assert templates(engine).count("attention") == 1
    gemms = [problem_of(s.source) for s in engine.plan.kernel_steps()
             if problem_of(s.source).get("template") == "matmul"]
    assert len(gemms) == 4 and all(p["batch"] == 1 for p in gemms), gemms
    assert max(t.dim() for t in trace.program.graph.constants.values()) <= 2
    assert copy_kernels(trace) == []
    fresh = torch.randn(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, fresh)[0], model(fresh), rtol=1e-4, atol=1e-4)


def test_deep_encoder_stack_keeps_every_residual_in_its_layer_norm():
    # A reshape sunk through one block's residual add reaches the next block's add; the pass
    # used to move each reshape one op per round for a fixed number of rounds, so past the
    # seventh block the residual adds ran in a reshaped 2-D form with a copy of the attention
    # output (a reshape of its transpose) and an add kernel of their own.
    torch.manual_seed(11)
    depth = 20
    model = nn.Sequential(*[EncoderBlock() for _ in range(depth)]).eval()
    x = torch.randn(2, 5, 32)
    trace = BuildTrace()
    engine = build_engine(model, "fp32", example_inputs=[x], trace=trace)
    assert copy_kernels(trace) == []
    assert templates(engine).count("reduction") == 2 * depth  # each LayerNorm, its residual add fused
    assert len(engine.plan.kernel_steps()) == 7 * depth  # + QKV, attention, out proj, FC1, FC2
    fresh = torch.randn(x.shape)
    with torch.no_grad():
        torch.testing.assert_close(run_engine(engine, fresh)[0], model(fresh), rtol=1e-4, atol=1e-4)


@pytest.mark.gpu
def test_gpu_vit_b16_sized_block_fp16():
    """A ViT-B/16 encoder block's shapes (197 tokens, 12 heads of 64) on the GPU, fp16."""
    torch.manual_seed(9)
    model = EncoderBlock(768, 12).eval().cuda()
    x = torch.randn(8, 197, 768, device="cuda")
    ((engine, trace),) = dynamo_engines(model, (x,), "fp16")
    assert templates(engine).count("attention") == 1
    assert torch_steps(engine) == []
    with torch.no_grad():
        ref = model(x)
    got = engine(x)[0].float()
    assert ((got - ref).norm() / ref.norm()).item() < 1e-2


def test_common_factors_of_reshapes():
    from trident.compiler.passes.heads import common_factors

    assert common_factors([1, 7, 2, 32], [7, 4, 16]) == ([7, 2, 2, 16], [[], [0], [1], [2, 3]], [[0], [1, 2], [3]])
    assert common_factors([6], [2, 3]) == ([2, 3], [[0, 1]], [[0], [1]])
    assert common_factors([2, 3], [3, 2]) is None
    assert common_factors([4, 1], [1, 4]) == ([4], [[0], []], [[], [0]])


@pytest.mark.parametrize("shapes", [((5, 2, 12), (5, 6, 4), (2, 3, 5, 4)),   # the exporter's head split
                                    ((6, 4), (4, 6), (2, 2, 6)),           # no common factors: kept
                                    ((3, 1, 8), (3, 4, 2), (4, 3, 2))])
def test_fold_head_splits_keeps_values(shapes):
    """reshape -> transpose(1, 0, ...) -> scale -> reshape, rewritten or not, computes the same."""
    from trident.compiler.ir import GraphBuilder, TensorType
    from trident.compiler.passes.heads import fold_head_splits
    from trident.compiler.reference import run_reference as run_graph

    x_shape, s1, s3 = shapes
    b = GraphBuilder("chain")
    x = b.input("x", TensorType(tuple(x_shape), torch.float32))
    r1 = b.add1("reshape", [x], {"shape": list(s1)})
    perm = [1, 0] + list(range(2, len(s1)))
    t = b.add1("transpose", [r1], {"perm": perm})
    m = b.add1("mul", [t, b.constant(torch.tensor(0.5))])
    graph = b.finish([b.add1("reshape", [m], {"shape": list(s3)})])
    folded = fold_head_splits(graph)
    value = torch.randn(x_shape)
    torch.testing.assert_close(run_graph(folded, [value])[0], run_graph(graph, [value])[0])
    firsts = [n for n in folded.nodes if n.op == "reshape"]
    if shapes[0] == (5, 2, 12):  # now a pure split first: [5, 2, 3, 4]
        assert firsts[0].attrs["shape"] == [5, 2, 3, 4]
