"""CumSum (and CumProd) through the scan generator (compiler/codegen/scan.py): a loop over the
row carries the running sum (product) from chunk to chunk, so rows longer than a block, ONNX's
exclusive and reverse, every dtype the generator takes, size-1 and empty dims, and the elementwise ops fused behind it are
checked against the torch reference (compiler/ops/indexing.py), and ONNX models against
onnxruntime. The bounds sanitizer is on (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trident.compiler import build_engine
from trident.compiler.codegen import scan
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, compile_and_run, run_engine

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

SMALL_CHUNK = 4  # rows of many chunks at interpreter-friendly sizes
FLAGS = [(False, False), (True, False), (False, True), (True, True)]  # (exclusive, reverse)


@pytest.fixture
def small_chunks(monkeypatch):
    monkeypatch.setattr(scan, "MAX_CHUNK", SMALL_CHUNK)


def cumsum_graph(shape, dtype, axis, exclusive=False, reverse=False, epilogue=None):
    b = GraphBuilder("cumsum")
    x = b.input("x", TensorType(tuple(shape), dtype))
    y = b.add1("cumsum", [x], {"axis": axis, "exclusive": exclusive, "reverse": reverse})
    return b.finish([epilogue(b, y) if epilogue else y])


def fresh(shape, dtype, rng) -> torch.Tensor:
    if dtype.is_floating_point:
        return torch.randn(shape, generator=rng).to(dtype)
    low, high = (0, 256) if dtype == torch.uint8 else (-100, 100)  # int8 sums wrap
    return torch.randint(low, high, shape, generator=rng).to(dtype)


def kinds(engine) -> list[str]:
    return [s.name.split("_")[0] if s.kind == "kernel" else s.kind for s in engine.plan.steps]


@pytest.mark.parametrize("exclusive, reverse", FLAGS)
@pytest.mark.parametrize("shape, axis", [((3, 13), 1), ((13,), 0), ((2, 7, 5), 1), ((5, 2, 9), 2),
                                         ((9, 3), 0), ((6, 8), 1)])
def test_rows_of_many_chunks(shape, axis, exclusive, reverse, small_chunks, rng):
    graph = cumsum_graph(shape, torch.float32, axis, exclusive, reverse)
    engine = assert_matches_reference(graph, [fresh(shape, torch.float32, rng)])
    assert kinds(engine) == ["scan"]


@pytest.mark.parametrize("exclusive, reverse", FLAGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int32,
                                   torch.int64, torch.int16, torch.int8, torch.uint8])
def test_every_dtype(dtype, exclusive, reverse, small_chunks, rng):
    shape = (3, 11)
    graph = cumsum_graph(shape, dtype, 1, exclusive, reverse)
    # Half floats round once at the store, as the reference does: one unit in the last place.
    ulp = {torch.float16: 1e-3, torch.bfloat16: 8e-3}.get(dtype, 1e-5)
    engine = assert_matches_reference(graph, [fresh(shape, dtype, rng)], tolerance=(2 * ulp, 2 * ulp))
    assert kinds(engine) == ["scan"]


def test_integer_sums_wrap_as_torch_casts_them_back(rng):
    x = torch.randint(2**29, 2**30, (2, 9), generator=rng, dtype=torch.int32)  # past int32
    _, (got,) = compile_and_run(cumsum_graph(x.shape, torch.int32, 1), [x])
    assert torch.equal(got.cpu(), torch.cumsum(x, 1).to(torch.int32))


@pytest.mark.parametrize("shape, axis", [((1, 1), 1), ((4, 1), 1), ((1, 6), 0), ((1, 6), 1),
                                         ((0, 5), 1), ((3, 0), 1), ((3, 0), 0)])
@pytest.mark.parametrize("exclusive, reverse", [(False, False), (True, True)])
def test_size_one_and_empty_dims(shape, axis, exclusive, reverse, rng):
    graph = cumsum_graph(shape, torch.float32, axis, exclusive, reverse)
    assert_matches_reference(graph, [fresh(shape, torch.float32, rng)])


def test_a_row_longer_than_the_largest_chunk(rng):
    shape = (2, scan.MAX_CHUNK + 5)
    graph = cumsum_graph(shape, torch.float32, 1, reverse=True)
    assert_matches_reference(graph, [fresh(shape, torch.float32, rng)], tolerance=(1e-4, 1e-4))


def test_nan_and_inf_reach_every_later_sum(small_chunks):
    x = torch.ones(2, 10)
    x[0, 3], x[1, 2], x[1, 6] = float("nan"), float("inf"), float("-inf")
    for reverse in (False, True):
        assert_matches_reference(cumsum_graph(x.shape, torch.float32, 1, reverse=reverse), [x])


def test_the_elementwise_ops_after_it_fuse_into_its_loop(small_chunks, rng):
    """RoBERTa's position ids: cumsum(mask) * mask + pad, one kernel."""
    def epilogue(b, y):
        mask = b.graph.inputs[0]
        return b.add1("add", [b.add1("mul", [y, mask]), b.constant(torch.tensor(1, dtype=torch.int64))])

    graph = cumsum_graph((3, 10), torch.int64, 1, epilogue=epilogue)
    engine = assert_matches_reference(graph, [torch.randint(0, 2, (3, 10), generator=rng)])
    assert kinds(engine) == ["scan"]


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("exclusive, reverse", FLAGS)
@pytest.mark.parametrize("axis", [0, 1, -1])
def test_onnx_cumsum_matches_onnxruntime(axis, exclusive, reverse, precision):
    pytest.importorskip("onnxruntime")
    model = make_model([node("CumSum", ["x", "axis"], exclusive=int(exclusive), reverse=int(reverse))],
                       {"x": (np.float32, [5, 7])}, ["y"],
                       initializers={"axis": np.array(axis, np.int32)})
    engine = check_engine(model, precision=precision)
    assert not torch_steps(engine)


@pytest.mark.parametrize("dtype", [np.int32, np.int64])
def test_onnx_integer_cumsum_matches_onnxruntime(dtype):
    pytest.importorskip("onnxruntime")
    model = make_model([node("CumSum", ["x", "axis"], exclusive=1)], {"x": (dtype, [4, 6])}, ["y"],
                       initializers={"axis": np.array(1, np.int64)})
    assert not torch_steps(check_engine(model))


def test_a_dynamic_axis_runs_one_kernel_at_every_length():
    pytest.importorskip("onnxruntime")
    model = make_model([node("CumSum", ["x", "axis"], reverse=1), node("Mul", ["y", "x"], ["z"])],
                       {"x": (np.float32, ["batch", "seq"])}, ["z"],
                       initializers={"axis": np.array(1, np.int64)})
    engine = build_engine(model, shapes={"x": ((1, 1), (2, 8), (3, 40))})
    assert kinds(engine) == ["scan"]
    rng = np.random.default_rng(3)
    for shape in [(1, 1), (3, 5), (2, 8), (3, 40)]:
        x = rng.standard_normal(shape).astype(np.float32)
        (got,) = run_engine(engine, torch.from_numpy(x))
        want = np.cumsum(x[:, ::-1], 1)[:, ::-1] * x
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)


def test_float64_and_scalars_stay_in_torch(rng):
    for shape, dtype in [((3, 4), torch.float64), ((), torch.float32)]:
        graph = cumsum_graph(shape, dtype, 0)
        engine = assert_matches_reference(graph, [fresh(shape, dtype, rng)])
        assert kinds(engine) == ["torch"]


# ------------------------------------------------------------------------- CumProd ----
def cumprod_graph(shape, dtype, axis, exclusive=False, reverse=False):
    b = GraphBuilder("cumprod")
    x = b.input("x", TensorType(tuple(shape), dtype))
    return b.finish([b.add1("cumprod", [x], {"axis": axis, "exclusive": exclusive, "reverse": reverse})])


@pytest.mark.parametrize("exclusive, reverse", FLAGS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int32, torch.int64])
@pytest.mark.parametrize("shape, axis", [((3, 13), 1), ((13,), 0), ((5, 2, 9), 2), ((9, 3), 0)])
def test_running_products(shape, axis, dtype, exclusive, reverse, small_chunks, rng):
    """The scan generator's product: the carry multiplied chunk by chunk, 1 where nothing is."""
    x = (torch.rand(shape, generator=rng) * 0.6 + 0.7).to(dtype) if dtype.is_floating_point else \
        torch.randint(-3, 4, shape, generator=rng).to(dtype)
    engine = assert_matches_reference(cumprod_graph(shape, dtype, axis, exclusive, reverse), [x])
    assert kinds(engine) == ["scan"]


def test_torch_cumprod(rng):
    """torch.cumprod of floats, and of integers in int64 as torch multiplies them."""
    from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

    x = (torch.rand(3, 50, generator=rng) * 0.4 + 0.8).to(DEVICE)
    for fn in (lambda t: torch.cumprod(t, 1), lambda t: torch.cumprod((t * 3).int(), dim=0)):
        got, reports = compile_with_reports(fn, x)
        want = fn(x)
        assert got.dtype == want.dtype and ops_in_torch(reports) == []
        torch.testing.assert_close(got, want)

