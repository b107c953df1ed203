"""Integer rows and quotients in the kernels: sums, products, maxima, minima, argmax and argmin of
integer tensors (codegen/reductions.py INTEGER_BODIES: exact, in int64 where torch sums into
int64, never through floats) and the IR's truncating integer div (prims.trunc_div), against the
torch reference: every integer dtype, values past 2^53 (which a float accumulator would round),
the extremes, odd and empty shapes; ONNX models against onnxruntime. The bounds sanitizer is on."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trident.compiler import group_kinds
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, compile_and_run

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

INTEGERS = [torch.int64, torch.int32, torch.int16, torch.int8, torch.uint8]
REDUCTIONS = {"reduce_sum": {"axes": [1], "keepdims": False}, "reduce_max": {"axes": [1], "keepdims": True},
              "reduce_min": {"axes": [0, 2], "keepdims": False},
              "reduce_prod": {"axes": [2], "keepdims": True},
              "argmax": {"axis": 1, "keepdims": False}, "argmin": {"axis": 2, "keepdims": True}}


def one_op(op, attrs, *types):
    b = GraphBuilder(op)
    inputs = [b.input(f"x{k}", TensorType(shape, dtype)) for k, (shape, dtype) in enumerate(types)]
    return b.finish([b.add1(op, inputs, attrs)])


def fresh(shape, dtype, rng, low=None, high=None) -> torch.Tensor:
    info = torch.iinfo(dtype)
    low = max(info.min, -1000) if low is None else low
    high = min(info.max, 1000) if high is None else high
    return torch.randint(low, high, shape, generator=rng, dtype=torch.int64).to(dtype)


def kinds(engine) -> list[str]:
    return [s.kind for s in engine.plan.steps]


@pytest.mark.parametrize("dtype", INTEGERS)
@pytest.mark.parametrize("op", sorted(REDUCTIONS))
def test_integer_reductions(op, dtype, rng):
    shape = (3, 37, 5)
    low, high = (-3, 3) if op == "reduce_prod" else (None, None)  # products of 5 stay in range
    x = fresh(shape, dtype, rng, 0 if dtype == torch.uint8 else low, high)
    engine = assert_matches_reference(one_op(op, REDUCTIONS[op], (shape, dtype)), [x])
    assert kinds(engine) == ["kernel"]


@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max", "reduce_min", "argmax"])
def test_int64_past_what_floats_hold(op, rng):
    """2^60-sized values differ in their last bits: fp32 or fp64 arithmetic would tie or round them."""
    x = fresh((4, 9), torch.int64, rng) + (1 << 60)
    x[1, 3] = torch.iinfo(torch.int64).max
    x[2, 5] = torch.iinfo(torch.int64).min
    attrs = {"axis": 1, "keepdims": False} if op == "argmax" else {"axes": [1], "keepdims": False}
    graph = one_op(op, attrs, ((4, 9), torch.int64))
    if op == "reduce_sum":
        x[1, 3] = 7  # (a sum of 2^60s would wrap: torch's and the kernel's the same, but unreadable)
    assert kinds(assert_matches_reference(graph, [x])) == ["kernel"]


@pytest.mark.parametrize("shape, attrs", [((4, 1, 3), {"axes": [1], "keepdims": True}),
                                          ((1, 1), {"axes": [0, 1], "keepdims": False}),
                                          ((3, 0), {"axes": [1], "keepdims": True}),
                                          ((0, 4), {"axes": [1], "keepdims": False})])
@pytest.mark.parametrize("op", ["reduce_sum", "reduce_max"])
def test_size_one_and_empty(op, shape, attrs, rng):
    assert_matches_reference(one_op(op, attrs, (shape, torch.int32)), [fresh(shape, torch.int32, rng)])


def test_rows_past_the_register_row_run_in_torch(monkeypatch, rng):
    """The looped path accumulates floats: an integer row longer than MAX_ROW stays in torch."""
    monkeypatch.setattr(group_kinds, "MAX_ROW", 16)
    graph = one_op("reduce_sum", {"axes": [1], "keepdims": False}, ((2, 17), torch.int64))
    engine = assert_matches_reference(graph, [fresh((2, 17), torch.int64, rng)])
    assert torch_steps(engine) == ["reduce_sum"]


def test_mean_of_integers_is_not_an_integer_kernel():
    graph = one_op("reduce_sum", {"axes": [1]}, ((2, 3), torch.bool))
    assert group_kinds.initial_kind(graph.nodes[0], graph) == \
        ("torch", "reduce_sum of torch.bool (integer rows: " + ", ".join(group_kinds.INTEGER_REDUCTIONS) + ")")


@pytest.mark.parametrize("dtype", INTEGERS)
def test_truncating_division(dtype, rng):
    info = torch.iinfo(dtype)
    a = fresh((5, 41), dtype, rng, info.min + 1, info.max)  # (MIN / -1 traps torch on the CPU)
    b = fresh((5, 41), dtype, rng, -9 if info.min < 0 else 1, 9)
    b[b == 0] = 7
    engine = assert_matches_reference(one_op("div", {}, ((5, 41), dtype), ((5, 41), dtype)), [a, b])
    assert kinds(engine) == ["kernel"]


@pytest.mark.parametrize("dtype", [torch.int64, torch.int32, torch.int8])
def test_division_by_minus_one_and_zero(dtype):
    """MIN / -1 wraps to MIN (torch's answer; the division itself has none and traps on the CPU);
    / 0 gives -1, CUDA's all-ones (torch raises on the CPU, so no reference runs here)."""
    low = torch.iinfo(dtype).min
    a = torch.tensor([low, low, 7, -7, 5], dtype=dtype)
    b = torch.tensor([-1, 1, -1, 0, 0], dtype=dtype)
    _, (got,) = compile_and_run(one_op("div", {}, ((5,), dtype), ((5,), dtype)), [a, b])
    assert got.cpu().tolist() == [low, low, -7, -1, -1]


def test_unsigned_division_by_zero_is_all_ones():
    a, b = torch.tensor([200, 9, 7], dtype=torch.uint8), torch.tensor([3, 0, 2], dtype=torch.uint8)
    _, (got,) = compile_and_run(one_op("div", {}, ((3,), torch.uint8), ((3,), torch.uint8)), [a, b])
    assert got.cpu().tolist() == [66, 255, 3]


def test_division_broadcast_and_fused(rng):
    """floor division as the torch frontend writes it (a truncated quotient corrected by the
    remainder's sign) in one pointwise kernel."""
    b = GraphBuilder("floordiv")
    x = b.input("x", TensorType((6, 10), torch.int64))
    y = b.input("y", TensorType((10,), torch.int64))
    q = b.add1("div", [x, y])
    graph = b.finish([b.add1("mul", [q, y])])
    divisor = fresh((10,), torch.int64, rng, 1, 20) * torch.tensor([1, -1] * 5)
    engine = assert_matches_reference(graph, [fresh((6, 10), torch.int64, rng), divisor])
    assert kinds(engine) == ["kernel"]


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_onnx_integer_reductions_and_division(dtype):
    model = make_model([node("ReduceSum", ["x", "axes"], ["s"], keepdims=0),
                        node("ReduceMax", ["x"], ["m"], axes=[1], keepdims=0),
                        node("Div", ["s", "m"], ["y"])],
                       {"x": (dtype, [4, 30])}, ["y"], initializers={"axes": np.array([1], np.int64)},
                       opset=13)
    x = np.random.default_rng(2).integers(1, 10_000, [4, 30]).astype(dtype)
    engine = check_engine(model, {"x": x})
    assert torch_steps(engine) == []
