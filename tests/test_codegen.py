"""Every template and fusion pattern, compiled and run (Triton interpreter on the CPU), against the
reference executor at FP32 and FP16, with shapes that are not multiples of the block sizes."""
import pytest
import torch

from trident.compiler.build import BuildTrace, compile_graph
from trident.compiler.templates import reads_any_layout
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference
from trident.kernels import prims

# after trident: importing trident.compiler switches Triton's interpreter on where there is no GPU
import triton  # noqa: E402
import triton.language as tl  # noqa: E402

PRECISIONS = ["fp32", "fp16"]


def randn(rng, *shape, scale=1.0):
    return torch.randn(*shape, generator=rng) * scale


def graph_of(shapes, body, name="t"):
    """Build a graph with float32 inputs of `shapes`; body(builder, *inputs) returns outputs."""
    b = GraphBuilder(name)
    xs = [b.input(f"x{k}", TensorType(tuple(s), torch.float32)) for k, s in enumerate(shapes)]
    outs = body(b, *xs)
    return b.finish(outs if isinstance(outs, list) else [outs])


def kinds(graph, precision="fp32"):
    trace = BuildTrace()
    program = compile_graph(graph, precision, trace)
    return [s.kind for s in program.steps], trace.groups


UNARY = ["neg", "abs", "exp", "log", "sqrt", "reciprocal", "relu", "sigmoid", "tanh", "erf",
         "silu", "hard_swish", "identity"]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("op", UNARY + ["gelu", "gelu_tanh", "leaky_relu", "hard_sigmoid", "clip"])
def test_unary_ops(op, precision, rng):
    attrs = {"gelu_tanh": {"approximate": "tanh"}, "leaky_relu": {"alpha": 0.1},
             "hard_sigmoid": {"alpha": 0.3, "beta": 0.4}, "clip": {"min": -0.5, "max": 0.7}}.get(op, {})
    positive = op in ("log", "sqrt", "reciprocal")
    x = randn(rng, 3, 5, 37)
    x = x.abs() + 0.5 if positive else x * 3
    g = graph_of([x.shape], lambda b, a: b.add1("gelu" if op == "gelu_tanh" else op, [a], attrs))
    assert_matches_reference(g, [x], precision, max_kernels=1 if precision == "fp32" else 1)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_broadcast_chain_is_one_kernel(precision, rng):
    def body(b, x, y, z):
        s = b.add1("add", [x, y])                       # [4,6,10] + [6,1]
        s = b.add1("mul", [s, z])                       # * [10]
        s = b.add1("pow", [s, b.constant(torch.tensor(2.0))])
        s = b.add1("sub", [s, b.constant(torch.tensor(1.5))])
        cond = b.add1("greater", [s, x])
        return b.add1("where", [cond, s, b.add1("tanh", [x])])
    x, y, z = randn(rng, 4, 6, 10), randn(rng, 6, 1), randn(rng, 10)
    g = graph_of([x.shape, y.shape, z.shape], body)
    # fp16 adds an input cast per input and an output cast; they fuse too.
    assert_matches_reference(g, [x, y, z], precision, max_kernels=1 if precision == "fp32" else 4)


def test_integer_and_bool_pointwise(rng):
    def body(b, x):
        i = b.add1("cast", [x], {"dtype": torch.int32})
        j = b.add1("add", [i, b.constant(torch.tensor([3], dtype=torch.int32))])
        m = b.add1("less", [j, b.constant(torch.tensor([2], dtype=torch.int32))])
        return [j, b.add1("not", [m])]
    x = randn(rng, 7, 9, scale=4)
    assert_matches_reference(graph_of([x.shape], body), [x], "fp32", max_kernels=1)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("shape_a,shape_b", [((37, 45), (45, 29)), ((2, 13, 24), (24, 40)),
                                            ((2, 3, 17, 19), (2, 3, 19, 23))])
def test_matmul_bias_activation_residual(shape_a, shape_b, precision, rng):
    out_shape = torch.Size(shape_a[:-1] + shape_b[-1:])
    weight_is_const = len(shape_b) == 2

    def body(b, a, res, *rest):
        w = b.constant(randn(rng, *shape_b, scale=0.2)) if weight_is_const else rest[0]
        y = b.add1("matmul", [a, w])
        y = b.add1("add", [y, b.constant(randn(rng, shape_b[-1]))])
        y = b.add1("gelu", [y])
        return b.add1("add", [y, res])
    shapes = [shape_a, out_shape] + ([] if weight_is_const else [shape_b])
    inputs = [randn(rng, *s) for s in shapes]
    g = graph_of(shapes, body)
    steps, _ = kinds(g)
    assert steps.count("kernel") == 1, steps
    assert_matches_reference(g, inputs, precision)


def test_matmul_reads_transposed_view(rng):
    def body(b, x, y):
        yt = b.add1("transpose", [y], {"perm": (0, 2, 1)})
        return b.add1("matmul", [x, yt])
    x, y = randn(rng, 3, 17, 20), randn(rng, 3, 21, 20)
    g = graph_of([x.shape, y.shape], body)
    assert kinds(g)[0] == ["view", "kernel"]
    assert_matches_reference(g, [x, y], "fp32")


CONV_CASES = [
    dict(cin=5, cout=7, k=3, stride=1, pads=(1, 1, 1, 1), dil=1, groups=1),
    dict(cin=6, cout=10, k=3, stride=2, pads=(0, 1, 2, 1), dil=1, groups=2),
    dict(cin=4, cout=6, k=3, stride=1, pads=(2, 2, 2, 2), dil=2, groups=1),
    dict(cin=8, cout=8, k=3, stride=2, pads=(1, 1, 1, 1), dil=1, groups=8),   # depthwise
    dict(cin=16, cout=24, k=1, stride=1, pads=(0, 0, 0, 0), dil=1, groups=1),
    dict(cin=3, cout=8, k=7, stride=2, pads=(3, 3, 3, 3), dil=1, groups=1),   # a ResNet stem
]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "k{k}s{stride}d{dil}g{groups}".format(**c))
def test_conv_bn_relu_residual(case, precision, rng):
    cin, cout, k = case["cin"], case["cout"], case["k"]
    x = randn(rng, 2, cin, 11, 9)
    attrs = dict(strides=(case["stride"],) * 2, pads=case["pads"], dilations=(case["dil"],) * 2,
                 groups=case["groups"])

    def body(b, x):
        w = b.constant(randn(rng, cout, cin // case["groups"], k, k, scale=0.3))
        y = b.add1("conv", [x, w], attrs, name="conv")
        bn = [b.constant(t) for t in (torch.rand(cout, generator=rng) + 0.5, randn(rng, cout),
                                      randn(rng, cout), torch.rand(cout, generator=rng) + 0.5)]
        y = b.add1("batch_norm", [y] + bn, {"epsilon": 1e-5})
        y = b.add1("relu", [y])
        return b.add1("add", [y, b.constant(randn(rng, 1, cout, 1, 1))])
    g = graph_of([x.shape], body)
    steps, groups = kinds(g, precision)
    conv_node = next(n for n in groups[-1].nodes if n.op == "conv")
    program_graph = compile_graph(g, precision).graph
    if reads_any_layout(conv_node, program_graph):
        # the small-channel tile reads the NCHW input itself; at fp16 the input cast runs in it too
        assert steps == ["kernel"], steps
        expected = (["cast"] if precision == "fp16" else []) + ["conv", "relu", "add"]
    else:
        assert steps == ["kernel", "kernel"], steps  # NHWC copy (with the cast at fp16), then conv
        expected = ["conv", "relu", "add"]
    assert [n.op for n in groups[-1].nodes][:len(expected)] == expected
    assert_matches_reference(g, [x], precision)


def test_conv_residual_from_another_branch(rng):
    def body(b, x):
        w1 = b.constant(randn(rng, 8, 8, 3, 3, scale=0.2))
        w2 = b.constant(randn(rng, 8, 8, 1, 1, scale=0.2))
        conv = dict(strides=(1, 1), pads=(1, 1, 1, 1), dilations=(1, 1), groups=1)
        h = b.add1("relu", [b.add1("conv", [x, w1], conv)])
        y = b.add1("conv", [h, w2], dict(conv, pads=(0, 0, 0, 0)))
        return b.add1("relu", [b.add1("add", [y, h])])
    x = randn(rng, 2, 8, 7, 7)
    g = graph_of([x.shape], body)
    assert_matches_reference(g, [x], "fp32", max_kernels=3)


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("op,attrs", [
    ("max_pool", dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), dilations=(1, 1), ceil_mode=False)),
    ("max_pool", dict(kernel=(2, 2), strides=(2, 2), pads=(0, 0, 1, 1), dilations=(1, 1), ceil_mode=True)),
    ("avg_pool", dict(kernel=(3, 3), strides=(2, 2), pads=(1, 1, 1, 1), ceil_mode=True, count_include_pad=True)),
    ("avg_pool", dict(kernel=(3, 2), strides=(1, 2), pads=(1, 0, 1, 1), ceil_mode=False, count_include_pad=False)),
])
def test_pooling_with_epilogue(op, attrs, precision, rng):
    x = randn(rng, 2, 6, 9, 11)
    g = graph_of([x.shape], lambda b, x: b.add1("sigmoid", [b.add1(op, [x], attrs)]))
    assert_matches_reference(g, [x], precision)


REDUCTIONS = [
    ("softmax", dict(axis=-1), (3, 5, 37)),
    ("softmax", dict(axis=1), (3, 37, 5)),
    ("reduce_sum", dict(axes=(1,), keepdims=False), (4, 29, 6)),
    ("reduce_mean", dict(axes=(2, 3), keepdims=True), (2, 5, 7, 9)),
    ("reduce_max", dict(axes=(0, 2), keepdims=False), (6, 3, 11)),
]


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("op,attrs,shape", REDUCTIONS, ids=lambda v: str(v))
def test_reduction_with_prologue_and_epilogue(op, attrs, shape, precision, rng):
    def body(b, x):
        pre = b.add1("mul", [b.add1("exp", [x]), b.constant(torch.tensor(0.5))])
        red = b.add1(op, [pre], attrs)
        return b.add1("tanh", [red])
    x = randn(rng, *shape)
    g = graph_of([x.shape], body)
    steps, groups = kinds(g)
    assert steps == ["kernel"], (steps, [gr.reasons for gr in groups])
    assert_matches_reference(g, [x], precision)


@pytest.mark.parametrize("precision", PRECISIONS)
def test_layer_norm_residual_gelu(precision, rng):
    def body(b, x, r):
        s = b.add1("add", [x, r])
        ln = b.add1("layer_norm", [s, b.constant(torch.rand(48, generator=rng) + 0.5),
                                   b.constant(randn(rng, 48))], dict(axis=-1, epsilon=1e-5))
        return [b.add1("gelu", [ln]), s]
    x, r = randn(rng, 3, 7, 48), randn(rng, 3, 7, 48)
    g = graph_of([x.shape, r.shape], body)
    assert kinds(g)[0] == ["kernel"]
    assert_matches_reference(g, [x, r], precision)


def test_sibling_matmuls_merge_into_one_kernel(rng):
    def body(b, x):
        outs = []
        for k in range(3):
            y = b.add1("matmul", [x, b.constant(randn(rng, 24, 16, scale=0.2))], name=f"proj{k}")
            outs.append(b.add1("add", [y, b.constant(randn(rng, 16))]))
        return b.add1("add", [b.add1("mul", [outs[0], outs[1]]), outs[2]])
    x = randn(rng, 2, 9, 24)
    g = graph_of([x.shape], body)
    steps, _ = kinds(g)
    assert steps == ["kernel", "view", "kernel"], steps  # one wide matmul, free split, one pointwise
    assert_matches_reference(g, [x], "fp32")


def test_reshape_that_cannot_view_is_a_copy_kernel_and_a_view(rng):
    def body(b, x):
        t = b.add1("transpose", [x], {"perm": (1, 0, 2)})
        return b.add1("reshape", [t], {"shape": (5, 12)})
    x = randn(rng, 3, 5, 4)
    g = graph_of([x.shape], body)
    assert kinds(g)[0] == ["view", "kernel", "view"]  # transpose, the dense copy, reshape
    assert_matches_reference(g, [x], "fp32")


def test_reshape_sinks_below_elementwise_so_no_copy_is_needed(rng):
    def body(b, x):
        t = b.add1("transpose", [x], {"perm": (1, 0, 2)})
        return b.add1("relu", [b.add1("reshape", [t], {"shape": (5, 12)})])
    x = randn(rng, 3, 5, 4)
    g = graph_of([x.shape], body)
    assert kinds(g)[0] == ["view", "kernel", "view"]  # relu reads the transposed view directly
    assert_matches_reference(g, [x], "fp32")


def test_linear_layer_reshapes_cancel_and_activation_fuses(rng):
    def body(b, x):  # what torch.export writes for nn.Linear + GELU on [B, S, K]
        flat = b.add1("reshape", [x], {"shape": (6, 8)})
        y = b.add1("matmul", [flat, b.constant(randn(rng, 8, 12, scale=0.3))])
        y = b.add1("add", [y, b.constant(randn(rng, 12))])
        return b.add1("gelu", [b.add1("reshape", [y], {"shape": (2, 3, 12)})])
    x = randn(rng, 2, 3, 8)
    g = graph_of([x.shape], body)
    steps, groups = kinds(g)
    assert steps == ["kernel"] and [n.op for n in groups[0].nodes] == ["matmul", "gelu"]
    assert_matches_reference(g, [x], "fp32")


def test_attention_transpose_reshape_is_a_view(rng):
    def body(b, p, v):  # [B,H,S,S] @ [B,H,S,D] -> transpose -> [B,S,H*D]
        o = b.add1("matmul", [p, v])
        t = b.add1("transpose", [o], {"perm": (0, 2, 1, 3)})
        return b.add1("reshape", [t], {"shape": (2, 5, 12)})
    p, v = randn(rng, 2, 3, 5, 5), randn(rng, 2, 3, 5, 4)
    g = graph_of([p.shape, v.shape], body)
    assert kinds(g)[0] == ["kernel", "view", "view"]
    assert_matches_reference(g, [p, v], "fp32")


def test_generated_source_is_readable_file(tmp_path, rng):
    from trident.kernels.loader import load_kernel

    g = graph_of([(4, 5)], lambda b, x: b.add1("relu", [b.add1("add", [x, x])]))
    program = compile_graph(g, "fp32")
    kernel = program.steps[0].kernel
    assert kernel.source.startswith("# trident generated kernel: pointwise_add_relu")
    assert "add = add(x0, x0)" in kernel.source  # the header lists the IR nodes it covers
    module = load_kernel(kernel.name, kernel.source, tmp_path)
    assert module.__file__.startswith(str(tmp_path)) and hasattr(module, "launch")


@pytest.mark.parametrize("precision", PRECISIONS)
@pytest.mark.parametrize("k", [1, 3])
def test_sibling_convs_share_one_launch(k, precision, rng):
    def body(b, x):  # a ResNet block's downsample and first conv, plus a third sibling
        conv = dict(strides=(1, 1), pads=(k // 2,) * 4, dilations=(1, 1), groups=1)
        outs = []
        for oc, act in ((12, "relu"), (20, None), (8, "sigmoid")):
            y = b.add1("conv", [x, b.constant(randn(rng, oc, 6, k, k, scale=0.3)),
                                b.constant(randn(rng, oc))], conv)
            outs.append(b.add1(act, [y]) if act else y)
        return outs
    x = randn(rng, 2, 6, 7, 9)
    g = graph_of([x.shape], body)
    steps, groups = kinds(g, precision)
    merged = [gr for gr in groups if gr.kind == "horizontal"]
    assert len(merged) == 1 and len(merged[0].members) == 3, [gr.kind for gr in groups]
    assert steps.count("kernel") <= 2, steps  # (plus an NHWC copy of the input, if needed)
    assert_matches_reference(g, [x], precision)


def test_dependent_convs_are_not_merged(rng):
    def body(b, x):
        conv = dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1)
        y = b.add1("conv", [x, b.constant(randn(rng, 6, 6, 1, 1, scale=0.3))], conv, name="y")
        z = b.add1("conv", [x, b.constant(randn(rng, 6, 6, 1, 1, scale=0.3))], conv, name="z")
        after_y = b.add1("conv", [y, b.constant(randn(rng, 6, 6, 1, 1, scale=0.3))], conv,
                         name="after_y")
        return b.add1("add", [z, after_y], name="z_plus")  # z's epilogue needs after_y, after y
    x = randn(rng, 2, 6, 5, 5)
    g = graph_of([x.shape], body)
    _, groups = kinds(g)
    group_of = {n.name: gr for gr in groups for n in gr.nodes}
    assert group_of["y"] is not group_of["z"]  # merging them would form a cycle
    assert any("horizontal: not merged" in r for r in group_of["z"].reasons + group_of["y"].reasons)
    assert_matches_reference(g, [x], "fp32")


@pytest.fixture
def persistent_one_program(monkeypatch):
    """Every GEMM-like kernel launches persistently with one program per grid row (per conv group
    or matmul batch), so that program's tile loop visits every tile."""
    import trident.kernels.conv as conv
    import trident.kernels.matmul as matmul

    for templates in (conv, matmul):
        plain = templates.heuristic_config
        monkeypatch.setattr(templates, "heuristic_config",
                            lambda *a, plain=plain, **k: plain(*a, **k).replace(PERSISTENT=1))
    monkeypatch.setattr("trident.kernels.common.num_sms", lambda: 1)


@pytest.mark.parametrize("case", [CONV_CASES[1], CONV_CASES[4], CONV_CASES[5]],
                         ids=["grouped_3x3", "pointwise", "stem"])
def test_persistent_conv_tile_loop(case, persistent_one_program, rng):
    cin, cout, k = case["cin"], case["cout"], case["k"]
    attrs = dict(strides=(case["stride"],) * 2, pads=case["pads"], dilations=(case["dil"],) * 2,
                 groups=case["groups"])

    def body(b, x):
        y = b.add1("conv", [x, b.constant(randn(rng, cout, cin // case["groups"], k, k, scale=0.3))], attrs)
        return b.add1("relu", [y])
    x = randn(rng, 3, cin, 19, 17)  # M = 3*19*17 or its strided part: several 16..64-row tiles
    g = graph_of([x.shape], body)
    program = compile_graph(g, "fp16")
    assert any("PERSISTENT': 1" in s.kernel.source for s in program.steps if s.kind == "kernel")
    assert_matches_reference(g, [x], "fp16")


def test_persistent_matmul_and_horizontal_tile_loops(persistent_one_program, rng):
    def body(b, x, y):
        z = b.add1("matmul", [x, y])                            # batched: one grid row per batch
        conv = dict(strides=(1, 1), pads=(1,) * 4, dilations=(1, 1), groups=1)
        a = b.add1("conv", [z, b.constant(randn(rng, 12, 4, 3, 3, scale=0.3))], conv)
        c = b.add1("conv", [z, b.constant(randn(rng, 20, 4, 3, 3, scale=0.3))], conv)
        return [b.add1("relu", [a]), c]
    x, y = randn(rng, 2, 4, 37, 33), randn(rng, 2, 4, 33, 70)
    g = graph_of([x.shape, y.shape], body)
    assert "horizontal" in [gr.kind for gr in kinds(g, "fp32")[1]]
    assert_matches_reference(g, [x, y], "fp32")


# --------------------------------------------------- index math and masks in the source ----
def test_contiguous_store_address_is_the_lane_index(rng):
    """A conv's NHWC output is contiguous along the pixel axis: its address is offs_m * C, not
    the per-element n/h/w decomposition (which cost the int8 epilogues their integer pipe)."""
    x = randn(rng, 2, 16, 6, 5)

    def body(b, x):
        y = b.add1("conv", [x, b.constant(randn(rng, 24, 16, 1, 1, scale=0.3))],
                   dict(strides=(1, 1), pads=(0, 0, 0, 0), dilations=(1, 1), groups=1))
        return b.add1("relu", [y])
    g = graph_of([x.shape], body)
    program = compile_graph(g, "fp32")
    conv = next(s.kernel.source for s in program.steps if s.kind == "kernel" and "conv" in s.kernel.name)
    store = next(line for line in conv.splitlines() if "tl.store(" in line)
    assert "offs_m[:, None] * 24" in store and "i0" not in store, store
    assert_matches_reference(g, [x], "fp32")


_FOLD_CHECK = """
import triton, triton.language as tl
from triton.backends.compiler import GPUTarget
from trident.kernels import prims

@triton.jit
def copy(x_ptr, y_ptr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    fits = prims.in_bounds(offs, 4096, BLOCK)
    ragged = prims.in_bounds(offs, 4000, BLOCK)
    tl.store(y_ptr + offs, tl.load(x_ptr + offs, mask=fits), mask=fits)
    tl.store(y_ptr + offs, 1.0, mask=ragged)

src = triton.compiler.ASTSource(fn=copy, signature={"x_ptr": "*fp32", "y_ptr": "*fp32", "BLOCK": "constexpr"},
                                constexprs={"BLOCK": 1024})
print(triton.compile(src, target=GPUTarget("cuda", 90, 32)).asm["ttgir"])
"""


def test_in_bounds_mask_folds_away_when_the_block_divides(tmp_path):
    """Compiled for sm_90 on this machine (Triton's compiler needs no GPU; the interpreter is off in
    the child process): the mask of a block that divides its extent is gone from the load and the
    store, the ragged one stays."""
    import os
    import subprocess
    import sys

    env = dict(os.environ, TRITON_INTERPRET="0")
    script = tmp_path / "fold_check.py"  # (@triton.jit wants its source in a file)
    script.write_text(_FOLD_CHECK)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, env=env, timeout=300)
    if done.returncode != 0:
        pytest.skip(f"cannot compile for sm_90 here: {done.stderr.strip().splitlines()[-1:]}")
    ir = done.stdout.splitlines()
    loads = [line.split(":")[0] for line in ir if "tt.load" in line]
    stores = [line.split(":")[0] for line in ir if "tt.store" in line]
    assert len(loads) == 1 and loads[0].count(",") == 0, loads  # no mask operand
    assert sorted(s.count(",") for s in stores) == [1, 2], stores  # (ptr, value) and (ptr, value, mask)


@triton.jit
def _quantize_both(x_ptr, exact_ptr, fast_ptr, n, scale, inv_scale, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    x = tl.load(x_ptr + offs, mask=offs < n, other=0.0)
    tl.store(exact_ptr + offs, prims.quantize(x, scale, inv_scale, 0, -127.0, 127.0), mask=offs < n)
    tl.store(fast_ptr + offs, prims.requantize(x, inv_scale, 0, -127.0, 127.0), mask=offs < n)


def test_requantize_is_within_one_step_of_exact_quantize():
    """prims.requantize (x * 1/scale) against prims.quantize (x / scale, correctly rounded): equal
    except where x / scale sits within an ulp of a rounding tie; +-inf clamp to the bounds."""
    g = torch.Generator().manual_seed(5)
    scale = 0.0371
    x = torch.cat([torch.randn(20000, generator=g) * 3,
                   (torch.arange(-300, 300) + 0.5) * scale,  # near ties
                   torch.tensor([float("inf"), float("-inf"), 1e30, -1e30])])
    inv = float(1 / torch.tensor(scale, dtype=torch.float32))
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    exact, fast = (torch.empty(x.numel(), dtype=torch.int32, device=dev) for _ in range(2))
    _quantize_both[(triton.cdiv(x.numel(), 4096),)](x.to(dev), exact, fast, x.numel(), scale, inv, BLOCK=4096)
    exact, fast = exact.cpu(), fast.cpu()
    reference = torch.clamp(torch.round(x / torch.tensor(scale)), -127, 127).to(torch.int32)
    assert torch.equal(exact, reference)
    assert (fast - exact).abs().max() <= 1
    assert (fast[:20000] != exact[:20000]).float().mean() < 1e-3  # random values: ties are rare
    assert fast[-4:].tolist() == [127, -127, 127, -127]


@pytest.mark.parametrize("members,elem,expect", [(1, 2, (4, 64)), (2, 2, (3, 64)), (3, 2, (2, 64)),
                                                  (5, 2, (2, 32)), (3, 1, (2, 128)), (8, 1, (2, 32))])
def test_horizontal_members_share_shared_memory(members, elem, expect):
    # Three sibling convs at 4 stages of 128x128x64 fp16 asked for 256 KB on an H200 (over its
    # 227): a horizontal kernel's shared config gives up stages, then K depth, until all fit.
    from trident.compiler.codegen.kernels import _fit_members
    from trident.kernels.common import PIPELINE_SMEM_BUDGET, tile_config

    cfg = _fit_members(tile_config(128, 128, 128 // elem, 8, 4, 4, PERSISTENT=2), members, elem)
    assert (cfg.num_stages, cfg.BLOCK_K) == expect
    assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.PERSISTENT) == (128, 128, 2)
    fits = members * cfg.num_stages * (cfg.BLOCK_M + cfg.BLOCK_N) * cfg.BLOCK_K * elem <= PIPELINE_SMEM_BUDGET
    assert fits or (cfg.num_stages, cfg.BLOCK_K * elem) == (2, 32)  # at the floor: as small as it goes
