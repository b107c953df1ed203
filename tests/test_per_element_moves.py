"""Movement ops that pointwise kernels compute element by element (group_kinds.PER_ELEMENT_MOVES):
- table lookups (an embedding's Gather: rows of a constant table picked by token ids or by indices
  the model computes, codegen/moves.py table_lookup): BERT's word embedding + position add +
  LayerNorm is one kernel (GatherElements and computed indices: tests/test_gathers.py);
- concat (codegen/moves.py concat): each lane reads the piece its index falls in, and the ops after
  it (RoPE's rotate-half products, a BatchNorm + ReLU after a channel concat) fuse behind it.
- pad and slices with negative steps (flips) further down.
The bounds sanitizer is on (conftest), so a lane reading outside a tensor fails the test."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from onnx import TensorProto, helper, numpy_helper

from trident.compiler import InputError, build_engine
from trident.compiler.group_kinds import MAX_CONCAT_PIECES
from trident.compiler.testing import run_engine

from onnx_util import model_of

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

VOCAB, WIDTH, SEQ = 37, 33, 7  # none a multiple of a block


class EmbeddingNorm(torch.nn.Module):
    """BERT's embedding block: word rows + position rows, then LayerNorm."""

    def __init__(self, seq: int = SEQ):
        super().__init__()
        self.words = torch.nn.Embedding(VOCAB, WIDTH)
        self.positions = torch.nn.Parameter(torch.randn(seq, WIDTH))
        self.norm = torch.nn.LayerNorm(WIDTH)

    def forward(self, ids):
        return self.norm(self.words(ids) + self.positions)


def steps(engine) -> list[tuple[str, str]]:
    return [(s.kind, s.name if s.kind == "kernel" else s.node.op) for s in engine.plan.steps
            if s.kind != "view"]


def reference(model: EmbeddingNorm, ids: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.where(ids < 0, ids + VOCAB, ids))  # ONNX counts negative ids from the end


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-5), ("fp16", 2e-2)])
def test_embedding_add_layer_norm_is_one_kernel(precision, tolerance):
    torch.manual_seed(0)
    model = EmbeddingNorm().eval()
    ids = torch.randint(-VOCAB, VOCAB, (3, SEQ))
    engine = build_engine(model, precision, (ids,))
    (kind, name), = steps(engine)  # (at fp16 the cast to the fp32 output joins it too)
    assert kind == "kernel" and name.startswith("reduction_gather_add_layer_norm")
    for batch_ids in (ids, torch.randint(-VOCAB, VOCAB, (3, SEQ))):  # fresh ids, same engine
        (got,) = run_engine(engine, batch_ids)
        ref = reference(model, batch_ids)
        assert torch.allclose(got.float(), ref, rtol=tolerance, atol=tolerance)


def test_size_one_dims():
    torch.manual_seed(1)
    model = EmbeddingNorm(seq=1).eval()
    ids = torch.tensor([[VOCAB - 1]])
    (got,) = run_engine(build_engine(model, "fp32", (ids,)), ids)
    assert torch.allclose(got, reference(model, ids), rtol=1e-5, atol=1e-5)


def test_nan_and_inf_rows_reach_the_output():
    model = torch.nn.Embedding(VOCAB, WIDTH).eval()
    with torch.no_grad():
        model.weight[3] = float("nan")
        model.weight[5, 2] = float("inf")
    ids = torch.tensor([[3, 5, 0]])
    engine = build_engine(model, "fp32", (ids,))
    assert [k for k, _ in steps(engine)] == ["kernel"]
    (got,) = run_engine(engine, ids)
    assert torch.isnan(got[0, 0]).all() and torch.isinf(got[0, 1, 2]) and torch.isfinite(got[0, 2]).all()
    assert torch.equal(got[0, 2], model.weight[0].detach())


def test_an_id_outside_the_table_is_an_input_error():
    model = EmbeddingNorm().eval()
    ids = torch.randint(0, VOCAB, (2, SEQ))
    engine = build_engine(model, "fp32", (ids,))
    for bad in (VOCAB, -VOCAB - 1):
        wrong = ids.clone()
        wrong[1, 3] = bad
        with pytest.raises(InputError, match=rf'input "ids".*index {bad} is out of range .*{VOCAB} rows'):
            run_engine(engine, wrong)


def test_computed_indices_fuse_and_other_axes_gather_rows_of_a_transposed_table():
    class Shifted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.table = torch.nn.Parameter(torch.randn(VOCAB, WIDTH))

        def forward(self, ids):
            rows = self.table[(ids + 1) % VOCAB]           # indices computed in the graph
            cols = torch.index_select(self.table, 1, ids[0])  # a gather along axis 1
            return rows.sum() + cols.sum()

    model = Shifted().eval()
    ids = torch.randint(0, 5, (2, 4))
    engine = build_engine(model, "fp32", (ids,))
    in_torch = [op for kind, op in steps(engine) if kind == "torch"]
    assert in_torch == []  # (the axis-1 gather: passes/gathers.py); the engine checks the computed rows (IndexCheck)
    assert [c.indices for s in engine.plan.kernel_steps() for c in s.index_checks]
    (got,) = run_engine(engine, ids)
    with torch.no_grad():
        assert torch.allclose(got, model(ids), rtol=1e-5, atol=1e-4)


def test_onnx_gather_of_an_initializer_matches_onnxruntime():
    ort = pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(2)
    table = rng.standard_normal((VOCAB, 5, 3)).astype(np.float32)  # rows of rank 2
    bias = rng.standard_normal((5, 3)).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("Gather", ["table", "ids"], ["rows"], axis=0),
         helper.make_node("Add", ["rows", "bias"], ["out"])],
        "lookup",
        [helper.make_tensor_value_info("ids", TensorProto.INT32, [4, 2])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [4, 2, 5, 3])],
        [numpy_helper.from_array(table, "table"), numpy_helper.from_array(bias, "bias")])
    model = model_of(graph, 17)
    onnx.checker.check_model(model)
    ids = rng.integers(-VOCAB, VOCAB, (4, 2)).astype(np.int32)
    engine = build_engine(model, "fp32")
    assert [k for k, _ in steps(engine)] == ["kernel"]
    (got,) = run_engine(engine, torch.from_numpy(ids))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"ids": ids})
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("dtype", [torch.int64, torch.float32])
def test_remainder_and_fmod_keep_their_signs(dtype):
    """torch's % (the divisor's sign) and fmod (the dividend's) reach the mod / fmod ops."""
    class Remainders(torch.nn.Module):
        def forward(self, a, b):
            return a % b, torch.fmod(a, b), torch.remainder(a, 3)

    a = torch.tensor([[-7, -3, 0, 3, 7, 11]], dtype=dtype)
    b = torch.tensor([[3, -3, 5, -4, -2, 4]], dtype=dtype)
    got = run_engine(build_engine(Remainders(), "fp32", (a, b)), a, b)
    for g, want in zip(got, Remainders()(a, b)):
        assert torch.equal(g, want)


class RotateHalf(torch.nn.Module):
    """Llama's rotary embedding: x * cos + cat(-x2, x1) * sin."""

    def forward(self, x, cos, sin):
        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin


@pytest.mark.parametrize("precision, tolerance", [("fp32", 1e-6), ("fp16", 1e-2)])
def test_rotate_half_concat_fuses_with_its_products(precision, tolerance):
    torch.manual_seed(3)
    x, cos, sin = torch.randn(2, 3, 5, 14), torch.randn(5, 14), torch.randn(5, 14)
    engine = build_engine(RotateHalf(), precision, (x, cos, sin))
    # Nothing in torch, no kernel of its own for the negation (fold_negated_pieces: a sign after
    # the concat); the concat, both products and the sum in one kernel (at fp16 the engine's
    # input casts are the others).
    assert all(kind == "kernel" for kind, _ in steps(engine))
    assert any("concat_mul_mul_add" in name for _, name in steps(engine))
    assert not any("neg" in name for _, name in steps(engine))
    if precision == "fp32":
        assert len(steps(engine)) == 1
    (got,) = run_engine(engine, x, cos, sin)
    assert torch.allclose(got.float(), RotateHalf()(x, cos, sin), rtol=tolerance, atol=tolerance)


class NegatedPieces(torch.nn.Module):
    """Negated pieces the pass folds (the middle one of three) and those it leaves: a negation read
    elsewhere too, a concat along another axis, integers."""

    def forward(self, a, b, c, n):
        middle = torch.cat((a, -b, c), -1)
        shared = -a
        kept = torch.cat((shared, c), -1) + shared.sum(-1, keepdim=True)
        leading = torch.cat((-a, c), 0)
        return middle * 2, kept, leading, torch.cat((-n, n), -1)


def test_negated_pieces_keep_every_sign():
    a = torch.tensor([[0.0, -0.0, float("inf")], [float("nan"), -1.5, 2.0]])
    b = torch.tensor([[1.0, -0.0], [float("-inf"), 0.0]])
    c = torch.randn(2, 3)
    n = torch.randint(-9, 9, (2, 4))
    model = NegatedPieces()
    engine = build_engine(model, "fp32", (a, b, c, n))
    assert not [op for kind, op in steps(engine) if kind == "torch"]
    # -b is folded; -a (read by three ops, once after CSE) and the integers' -n keep their kernels
    assert sum("neg" in name for _, name in steps(engine)) == 2
    got, want = run_engine(engine, a, b, c, n), model(a, b, c, n)
    for g, w in zip(got, want):
        assert g.dtype == w.dtype and torch.equal(g.isnan(), w.isnan())
        finite = ~w.isnan()
        assert torch.equal(g[finite], w[finite])
        assert torch.equal(torch.signbit(g[finite]), torch.signbit(w[finite]))  # -0.0 stays -0.0


class ChannelConcat(torch.nn.Module):
    """DenseNet / Inception: branches concatenated along channels, then BatchNorm + ReLU."""

    def __init__(self, widths=(3, 5, 1)):
        super().__init__()
        self.branches = torch.nn.ModuleList(torch.nn.Conv2d(4, w, 3, padding=1) for w in widths)
        self.norm = torch.nn.BatchNorm2d(sum(widths))

    def forward(self, x):
        return torch.relu(self.norm(torch.cat([b(x) for b in self.branches], 1)))


def test_channel_concat_of_convs_then_batch_norm_relu():
    torch.manual_seed(4)
    model = ChannelConcat()
    x = torch.randn(2, 4, 7, 9)
    model.train()(x)  # settle the BatchNorm statistics
    model.eval()
    engine = build_engine(model, "fp32", (x,))
    assert not [op for kind, op in steps(engine) if kind == "torch"]
    (got,) = run_engine(engine, x)
    with torch.no_grad():
        assert torch.allclose(got, model(x), rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("shapes, axis", [
    (((2, 0, 3), (2, 4, 3), (2, 1, 3)), 1),   # an empty piece and a size-1 one
    (((1, 5), (1, 5)), 0),                     # along a leading size-1 dim
    (((3, 2), (3, 7)), -1),
    (((1, 2, 1, 1), (1, 3, 1, 1)), 1),         # trailing size-1 dims (a 1x1 feature map)
    (((1, 1, 2), (1, 1, 3)), 2),
    (((3, 1), (2, 1)), 0),                     # trailing size-1 dims (the kernel's axes skip them)
])
def test_concat_edges(shapes, axis):
    class Cat(torch.nn.Module):
        def forward(self, *xs):
            return torch.cat(xs, axis) + 1

    xs = tuple(torch.randn(s) for s in shapes)
    engine = build_engine(Cat(), "fp32", xs)
    assert not [op for kind, op in steps(engine) if kind == "torch"]
    (got,) = run_engine(engine, *xs)
    assert torch.equal(got, Cat()(*xs))


def test_concat_keeps_integers_and_nan():
    class Cat(torch.nn.Module):
        def forward(self, a, b, f, g):
            return torch.cat((a, b), 1), torch.cat((f, g), 0)

    a, b = torch.randint(-9, 9, (2, 3)), torch.randint(-9, 9, (2, 4))
    f, g = torch.tensor([[float("nan"), 1.0]]), torch.tensor([[float("inf"), -2.0]])
    got = run_engine(build_engine(Cat(), "fp32", (a, b, f, g)), a, b, f, g)
    assert torch.equal(got[0], torch.cat((a, b), 1))
    assert torch.isnan(got[1][0, 0]) and torch.equal(got[1][1:], g) and got[1][0, 1] == 1.0


@pytest.mark.parametrize("pieces", [MAX_CONCAT_PIECES + 1, 3 * MAX_CONCAT_PIECES + 2,
                                    MAX_CONCAT_PIECES ** 2 + 3])   # the last needs three levels
def test_a_concat_of_many_pieces_is_a_tree_of_concat_kernels(pieces):
    class Cat(torch.nn.Module):
        def forward(self, x):
            return torch.cat([x * k for k in range(pieces)], 1) + 1

    x = torch.randn(2, 3)
    engine = build_engine(Cat(), "fp32", (x,))
    assert not [op for kind, op in steps(engine) if kind == "torch"]
    (got,) = run_engine(engine, x)
    assert torch.equal(got, Cat()(x))


def test_dense_block_concat_of_conv_outputs_then_batch_norm_relu():
    """DenseNet: each layer's conv output joins a concat of all before it, then BN + ReLU."""
    class Dense(torch.nn.Module):
        def __init__(self, layers=11):
            super().__init__()
            self.convs = torch.nn.ModuleList(torch.nn.Conv2d(3, 2, 3, padding=1) for _ in range(layers))
            self.norm = torch.nn.BatchNorm2d(3 + 2 * layers)

        def forward(self, x):
            return torch.relu(self.norm(torch.cat([x] + [c(x) for c in self.convs], 1)))

    model = Dense().eval()
    model.norm.running_mean.uniform_(-0.5, 0.5)
    model.norm.running_var.uniform_(0.5, 2)
    x = torch.randn(2, 3, 5, 7)
    engine = build_engine(model, "fp32", (x,))
    assert not [op for kind, op in steps(engine) if kind == "torch"]
    (got,) = run_engine(engine, x)
    with torch.no_grad():
        assert torch.allclose(got, model(x), rtol=1e-5, atol=1e-5)


def padded_shape(shape, pads):
    rank = len(shape)
    return [size + pads[d] + pads[rank + d] for d, size in enumerate(shape)]


def onnx_pad(shape, pads, mode="constant", value=None):
    """An ONNX model: y = Pad(x * 2) + 1 (fx lowers torch's constant pads to concats instead)."""
    inits = [numpy_helper.from_array(np.array(pads, np.int64), "pads"),
             numpy_helper.from_array(np.array(2.0, np.float32), "two"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    pad_inputs = ["doubled", "pads"]
    if value is not None:
        inits.append(numpy_helper.from_array(np.array(value, np.float32), "value"))
        pad_inputs.append("value")
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]),
         helper.make_node("Pad", pad_inputs, ["padded"], mode=mode),
         helper.make_node("Add", ["padded", "one"], ["y"])],
        "pad", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, padded_shape(shape, pads))], inits)
    return model_of(graph, 18)


@pytest.mark.parametrize("pads, value", [
    ((0, 0, 1, 0, 0, 2), None),           # the last dim, zeros
    ((0, 2, 1, 1, 0, 0), -1.5),           # two dims, one side each
    ((1, 0, 3, 0, 0, 0), float("-inf")),  # a leading dim
])
def test_constant_pad_fuses_with_what_follows(pads, value):
    engine = pad_matches_onnxruntime(onnx_pad((2, 3, 5), pads, value=value), (2, 3, 5), seed=5)
    assert [name for _, name in steps(engine)] == ["pointwise_mul", "pointwise_pad_add"]


def test_a_pad_before_trailing_size_one_dims():
    ort = pytest.importorskip("onnxruntime")
    model = onnx_pad((2, 3, 1), (0, 2, 0, 0, 1, 0), value=0.5)
    x = np.random.default_rng(7).standard_normal((2, 3, 1)).astype(np.float32)
    (got,) = run_engine(build_engine(model, "fp32"), torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize("pads, mode", [
    ((0, 0, 2, 0, 0, 2), "reflect"),    # the last dim, both sides
    ((0, 2, 4, 0, 1, 0), "reflect"),    # two dims, up to the size minus one
    ((1, 0, 3, 0, 2, 1), "edge"),       # a leading dim, past the size
    ((0, 2, 5, 0, 3, 5), "wrap"),       # a whole period
    ((0, 0, 1, 0, 0, 0), "reflect"),
])
def test_reflect_edge_and_wrap_pads_fuse(pads, mode):
    engine = pad_matches_onnxruntime(onnx_pad((2, 3, 5), pads, mode=mode), (2, 3, 5), seed=8)
    assert [name for _, name in steps(engine)] == ["pointwise_mul", "pointwise_pad_add"]


def pad_matches_onnxruntime(model, shape, seed: int):
    """The engine of `model`, after checking it gives onnxruntime's output exactly."""
    ort = pytest.importorskip("onnxruntime")
    x = np.random.default_rng(seed).standard_normal(shape).astype(np.float32)
    engine = build_engine(model, "fp32")
    (got,) = run_engine(engine, torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got.numpy(), want)
    return engine


@pytest.mark.parametrize("pads, mode", [((0, 0, -1, 0, 0, 1), "constant")])
def test_crops_stay_in_torch(pads, mode):
    engine = pad_matches_onnxruntime(onnx_pad((2, 3, 5), pads, mode=mode), (2, 3, 5), seed=6)
    assert ("torch", "pad") in steps(engine)


def test_padding_an_empty_tensor_runs_in_torch():
    ort = pytest.importorskip("onnxruntime")
    model = onnx_pad((2, 0, 5), (0, 1, 0, 0, 0, 1))
    x = np.zeros((2, 0, 5), np.float32)
    engine = build_engine(model, "fp32")
    assert ("torch", "pad") in steps(engine)
    (got,) = run_engine(engine, torch.from_numpy(x))
    (want,) = ort.InferenceSession(model.SerializeToString()).run(None, {"x": x})
    np.testing.assert_array_equal(got.numpy(), want)


# --------------------------------------------- slices with negative steps (passes/resample.py) ----
def onnx_slice(shape, starts, ends, axes, strides):
    """y = Slice(x * 2) + 1, the ONNX form of torch.flip and x[::-k]."""
    inits = [numpy_helper.from_array(np.array(v, np.int64), n)
             for v, n in ((starts, "starts"), (ends, "ends"), (axes, "axes"), (strides, "steps"))]
    inits += [numpy_helper.from_array(np.array(2.0, np.float32), "two"),
              numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    out = list(shape)
    for start, end, axis, step in zip(starts, ends, axes, strides):
        out[axis] = len(range(*slice(start, end, step).indices(shape[axis])))
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["doubled"]),
         helper.make_node("Slice", ["doubled", "starts", "ends", "axes", "steps"], ["sliced"]),
         helper.make_node("Add", ["sliced", "one"], ["y"])],
        "slice", [helper.make_tensor_value_info("x", TensorProto.FLOAT, list(shape))],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out)], inits)
    return model_of(graph, 18)


@pytest.mark.parametrize("starts, ends, axes, strides", [
    ((-1,), (-2**63,), (2,), (-1,)),             # a flip of the last dim, as exporters write it
    ((4, -1), (0, -2**63), (1, 2), (-2, -1)),    # every other row backwards, and a flip
    ((3, 1), (-2**63, 2**63 - 1), (0, 2), (-1, 3)),  # a negative and a positive step
])
def test_negative_steps_are_reversed_in_the_pointwise_kernels(starts, ends, axes, strides):
    engine = pad_matches_onnxruntime(onnx_slice((2, 6, 5), starts, ends, axes, strides), (2, 6, 5), seed=9)
    assert [kind for kind, _ in steps(engine)].count("torch") == 0
    assert any("resample" in name for _, name in steps(engine))


@pytest.mark.parametrize("flip", [
    lambda x: torch.flip(x, [1]) * 2, lambda x: torch.flip(x, (0, 2)) + 1, lambda x: x.flip(-1).relu(),
    lambda x: torch.fliplr(x) - 1, lambda x: torch.flipud(x[:, 1:4]) * 3,
    lambda x: (torch.flip(x.int(), [2]) * 2).float(),
])
def test_torch_flip_runs_in_the_pointwise_kernels(flip):
    from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

    x = torch.randn(3, 5, 7)
    x.view(-1)[[1, 8]] = torch.tensor([float("inf"), float("nan")])
    x = x.to(DEVICE)
    got, reports = compile_with_reports(flip, x)
    torch.testing.assert_close(got, flip(x), rtol=0, atol=0, equal_nan=True)
    assert ops_in_torch(reports) == []
