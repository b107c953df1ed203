"""ScatterElements (torch.scatter, scatter_add, scatter_reduce) through the scatter generator
(compiler/codegen/scatter.py): whole rows in registers, a row's few updates applied in order,
against the torch reference: every reduction, float and integer data, any axis, indices shorter
than the data on other dims, negative and repeated indices (the last update wins, as torch's CPU
scatter), empty dims; an index out of range is the engine's error; what the kernel does not take
runs in torch; ONNX models against onnxruntime. The bounds sanitizer is on (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trident.compiler import group_kinds
from trident.compiler.errors import InputError
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, compile_and_run

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

REDUCTIONS = ["none", "add", "mul", "max", "min"]


def scatter_graph(shape, index_shape, axis, reduction, dtype=torch.float32):
    b = GraphBuilder("scatter")
    x = b.input("x", TensorType(tuple(shape), dtype))
    index = b.input("index", TensorType(tuple(index_shape), torch.int64))
    updates = b.input("updates", TensorType(tuple(index_shape), dtype))
    return b.finish([b.add1("scatter_elements", [x, index, updates], {"axis": axis, "reduction": reduction})])


def fresh(shape, dtype, rng):
    if dtype.is_floating_point:
        return torch.randn(shape, generator=rng).to(dtype)
    return torch.randint(-9, 10, shape, generator=rng).to(dtype)


def kinds(engine) -> list[str]:
    return [s.kind for s in engine.plan.steps]


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, index_shape, axis", [((4, 9), (4, 3), 1), ((6, 5, 7), (3, 2, 7), 1),
                                                      ((9, 4), (2, 4), 0), ((5, 13), (2, 1), -1),
                                                      ((1, 1), (1, 1), 0), ((3, 1, 70), (3, 1, 16), 2)])
def test_every_reduction_and_shape(shape, index_shape, axis, reduction, rng):
    """Random indices in [-L, L): negative ones and repeats included."""
    length = shape[axis]
    index = torch.randint(-length, length, index_shape, generator=rng)
    inputs = [fresh(shape, torch.float32, rng), index, fresh(index_shape, torch.float32, rng)]
    engine = assert_matches_reference(scatter_graph(shape, index_shape, axis, reduction), inputs)
    assert kinds(engine) == ["kernel"]


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8])
@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_dtypes(dtype, reduction, rng):
    index = torch.randint(0, 11, (3, 4), generator=rng)
    inputs = [fresh((3, 11), dtype, rng), index, fresh((3, 4), dtype, rng)]
    assert kinds(assert_matches_reference(scatter_graph((3, 11), (3, 4), 1, reduction, dtype), inputs)) == ["kernel"]


@pytest.mark.parametrize("shape, index_shape, axis", [((3, 5), (3, 0), 1), ((1, 5), (0, 2), 1)])
def test_empty_updates_copy_the_data(shape, index_shape, axis, rng):
    """No updates along the axis, or none along a dim of one element (which the kernel declares
    no index for)."""
    x = fresh(shape, torch.float32, rng)
    _, (out,) = compile_and_run(scatter_graph(shape, index_shape, axis, "none"),
                                [x, torch.zeros(index_shape, dtype=torch.int64), torch.zeros(index_shape)])
    assert torch.equal(out.cpu(), x)


def test_an_index_out_of_range_is_the_engines_error(rng):
    engine, _ = compile_and_run(scatter_graph((2, 5), (2, 1), 1, "none"),
                                [fresh((2, 5), torch.float32, rng), torch.zeros(2, 1, dtype=torch.int64),
                                 torch.zeros(2, 1)])
    engine.cuda_graph = False  # the index checks run on uncaptured calls; a replay clamps in the kernel
    with pytest.raises(InputError, match="scatter"):
        engine(*[t.to(engine.device) for t in (torch.zeros(2, 5), torch.tensor([[1], [5]]), torch.zeros(2, 1))])


def test_many_updates_a_row_run_in_torch(rng):
    count = group_kinds.MAX_SCATTER_UPDATES + 1
    index = torch.randint(0, 30, (2, count), generator=rng)
    inputs = [fresh((2, 30), torch.float32, rng), index, fresh((2, count), torch.float32, rng)]
    engine = assert_matches_reference(scatter_graph((2, 30), (2, count), 1, "add"), inputs)
    assert torch_steps(engine) == ["scatter_elements"]


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_onnx_scatter_elements_against_onnxruntime(reduction):
    model = make_model([node("ScatterElements", ["x", "i", "u"], axis=1, reduction=reduction)],
                       {"x": (np.float32, [3, 8]), "i": (np.int64, [3, 2]), "u": (np.float32, [3, 2])},
                       ["y"], opset=18)
    rng = np.random.default_rng(4)
    index = np.stack([rng.permutation(8)[:2] for _ in range(3)]) - 4  # distinct, negative too
    engine = check_engine(model, {"x": rng.standard_normal([3, 8]).astype(np.float32), "i": index,
                                  "u": rng.standard_normal([3, 2]).astype(np.float32)})
    assert torch_steps(engine) == []


def test_torch_scatter_with_dynamic_row_lengths(rng):
    """A shape-generic scatter kernel holds the profile's longest row (its BLOCK_R widened:
    codegen/dynamic_kernel.py), so rows longer than the probes' are written whole."""
    from trident.compiler.testing import DEVICE

    torch._dynamo.reset()
    scatter = torch.compile(lambda x, i, u: x.scatter_add(1, i, u) * 2, backend="trident", dynamic=True)
    for n in (5, 9, 40):
        x, updates = torch.randn(3, n, generator=rng), torch.randn(3, 2, generator=rng)
        index = torch.randint(0, n, (3, 2), generator=rng)
        args = [t.to(DEVICE) for t in (x, index, updates)]
        torch.testing.assert_close(scatter(*args), args[0].scatter_add(1, args[1], args[2]) * 2)
    torch._dynamo.reset()


# ----------------------------------------------------- ScatterND of rows (passes/scatter_rows.py) ----
def scatter_nd_graph(shape, index_shape, reduction, dtype=torch.float32):
    b = GraphBuilder("scatter_nd")
    x = b.input("x", TensorType(tuple(shape), dtype))
    index = b.input("index", TensorType(tuple(index_shape), torch.int64))
    updates = b.input("updates", TensorType(tuple(index_shape[:-1]) + tuple(shape[index_shape[-1]:]), dtype))
    return b.finish([b.add1("scatter_nd", [x, index, updates], {"reduction": reduction})])


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("shape, index_shape", [((9, 4), (3, 1)), ((6, 2, 3), (2, 2, 1)), ((12,), (4, 1)),
                                                ((1, 5), (1, 1)), ((7, 3), (16, 1)), ((4, 5, 2), (3, 2)),
                                                ((3, 4), (2, 3, 2))])
def test_scatter_nd_of_rows_in_the_scatter_kernel(shape, index_shape, reduction, rng):
    """Rows named by index ([..., k]: negative coordinates and repeats among them) written,
    added, multiplied or compared in: a ScatterElements along dim 0 of the rows, in the kernel."""
    depth = index_shape[-1]
    index = torch.stack([torch.randint(-n, n, index_shape[:-1], generator=rng) for n in shape[:depth]], -1)
    updates_shape = index_shape[:-1] + shape[depth:]
    inputs = [fresh(shape, torch.float32, rng), index, fresh(updates_shape, torch.float32, rng)]
    engine = assert_matches_reference(scatter_nd_graph(shape, index_shape, reduction), inputs)
    assert torch_steps(engine) == [] and "scatter" in [s.name.split("_")[0] for s in engine.plan.kernel_steps()]


@pytest.mark.parametrize("shape, index_shape, why", [((7, 3), (17, 1), "more updates than the kernel takes"),
                                                     ((90, 100, 2), (3, 2), "more rows than the kernel holds")])
def test_other_scatter_nds_run_in_torch(shape, index_shape, why, rng):
    index = torch.stack([torch.randint(0, n, index_shape[:-1], generator=rng) for n in shape[:index_shape[-1]]], -1)
    updates_shape = index_shape[:-1] + shape[index_shape[-1]:]
    inputs = [fresh(shape, torch.float32, rng), index, fresh(updates_shape, torch.float32, rng)]
    engine = assert_matches_reference(scatter_nd_graph(shape, index_shape, "add"), inputs)
    assert torch_steps(engine) == ["scatter_nd"], why


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int64, torch.bool])
@pytest.mark.parametrize("shape, index_shape", [((50, 3), (40, 1)), ((6, 7, 2), (30, 2)), ((33,), (20, 1)),
                                                ((17, 5), (3, 9, 1)), ((1, 4), (18, 1))])
def test_scatter_nd_of_many_rows_takes_each_rows_last_writer(shape, index_shape, dtype, rng):
    """More updates than the scatter kernel walks (a prefill written into a cache): each row takes
    its last writer's row (repeats and negative indices among them), in kernels."""
    depth = index_shape[-1]
    index = torch.stack([torch.randint(-n, n, index_shape[:-1], generator=rng) for n in shape[:depth]], -1)
    updates_shape = index_shape[:-1] + shape[depth:]
    updates = fresh(updates_shape, torch.float32, rng)
    if dtype.is_floating_point:
        updates.view(-1)[:3] = torch.tensor([float("nan"), float("inf"), -float("inf")])
    inputs = [fresh(shape, torch.float32, rng).to(dtype), index, (updates * 10).to(dtype)]
    if dtype == torch.bool:  # (a mask's chosen rows set: MAE-style token masks)
        inputs = [fresh(shape, torch.float32, rng) > 0, index, updates > 0]
    engine = assert_matches_reference(scatter_nd_graph(shape, index_shape, "none", dtype), inputs)
    assert torch_steps(engine) == []


def test_a_many_rows_scatter_nd_index_out_of_range_is_the_engines_error(rng):
    engine, _ = compile_and_run(scatter_nd_graph((30, 2), (20, 1), "none"),
                                [fresh((30, 2), torch.float32, rng), torch.arange(20)[:, None], torch.zeros(20, 2)])
    engine.cuda_graph = False  # (the index checks run on uncaptured calls)
    bad = torch.arange(20)[:, None]
    bad[7] = 30
    with pytest.raises(InputError, match="30"):
        engine(*[t.to(engine.device) for t in (torch.zeros(30, 2), bad, torch.zeros(20, 2))])


def test_a_last_writer_search_past_its_budget_runs_in_torch(rng, monkeypatch):
    import importlib
    monkeypatch.setattr(importlib.import_module("trident.compiler.passes.scatter_rows"), "LAST_WRITER_BUDGET", 30 * 19)
    # (rows named once: torch's own CUDA scatter leaves the winner of a repeated row open)
    index = torch.randperm(30, generator=rng)[:20, None]
    inputs = [fresh((30, 2), torch.float32, rng), index, fresh((20, 2), torch.float32, rng)]
    engine = assert_matches_reference(scatter_nd_graph((30, 2), (20, 1), "none"), inputs)
    assert torch_steps(engine) == ["scatter_nd"]


def test_a_scatter_nd_coordinate_out_of_its_dim_is_the_engines_error(rng):
    """(1, 7) into [3, 4] would flatten to row 11, which exists: the lowering marks it out of range."""
    engine, _ = compile_and_run(scatter_nd_graph((3, 4), (2, 2), "none"),
                                [fresh((3, 4), torch.float32, rng), torch.tensor([[0, 1], [1, 2]]), torch.zeros(2)])
    engine.cuda_graph = False  # (the index checks run on uncaptured calls)
    with pytest.raises(InputError, match="scatter"):
        engine(*[t.to(engine.device) for t in (torch.zeros(3, 4), torch.tensor([[0, 1], [1, 7]]), torch.zeros(2))])


def test_a_scatter_nd_row_out_of_range_is_the_engines_error(rng):
    engine, _ = compile_and_run(scatter_nd_graph((4, 3), (2, 1), "none"),
                                [fresh((4, 3), torch.float32, rng), torch.tensor([[0], [1]]), torch.zeros(2, 3)])
    engine.cuda_graph = False  # (the index checks run on uncaptured calls)
    with pytest.raises(InputError, match="scatter"):
        engine(*[t.to(engine.device) for t in (torch.zeros(4, 3), torch.tensor([[0], [4]]), torch.zeros(2, 3))])


@pytest.mark.parametrize("reduction", ["none", "add", "max"])
def test_onnx_scatter_nd_of_rows_against_onnxruntime(reduction):
    model = make_model([node("ScatterND", ["x", "i", "u"], reduction=reduction)],
                       {"x": (np.float32, [6, 4]), "i": (np.int64, [3, 1]), "u": (np.float32, [3, 4])},
                       ["y"], opset=18)
    rng = np.random.default_rng(7)
    feeds = {"x": rng.standard_normal([6, 4]).astype(np.float32), "i": np.array([[4], [-1], [0]]),
             "u": rng.standard_normal([3, 4]).astype(np.float32)}
    assert torch_steps(check_engine(model, feeds)) == []
