"""Gathers computed per element in pointwise kernels (codegen/moves.py): GatherElements of any
data, and Gathers of constant tables by indices the model computes (RoBERTa's position ids).
Each against the torch reference (compiler/ops) or onnxruntime, with negative indices, shapes that
are not multiples of a block, size-1 and empty dims. Indices other than token-id inputs are
checked by the engine before the kernel that reads them (ir/plan.py IndexCheck); the kernel
clamps them too, so a run that skips the check (a CUDA-graph replay) still reads inside its data.
The bounds sanitizer is on (conftest)."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from trident.compiler import EngineFileError, InputError
from trident.compiler.build import load_engine
from trident.compiler.ir import GraphBuilder, TensorType
from trident.compiler.testing import assert_matches_reference, compile_and_run, run_engine
from trident.runtime import format as fmt
from trident.runtime.engine import Engine
from trident.tools.fuzz_files import repack

from onnx_util import check_engine, make_model, node, torch_steps

pytestmark = pytest.mark.compiles_for_hopper  # (tests/conftest.py)

DTYPES = [torch.float32, torch.float16, torch.bfloat16, torch.int32, torch.int64, torch.int8,
          torch.bool]
VOCAB, WIDTH = 37, 5


def fresh(shape, dtype, rng) -> torch.Tensor:
    if dtype == torch.bool:
        return torch.rand(shape, generator=rng) < 0.5
    if dtype.is_floating_point:
        return torch.randn(shape, generator=rng).to(dtype)
    return torch.randint(-100, 100, shape, generator=rng).to(dtype)


def uncaptured(engine: Engine) -> Engine:
    """The engine checks indices on every run that is not a CUDA-graph replay (a replay only
    clamps them): on the GPU, the runs that must raise are eager."""
    engine.cuda_graph = False
    return engine


def indices(shape, size, rng, dtype=torch.int64) -> torch.Tensor:
    """Every index of a dim of `size`, negative ones (counted from the end) included."""
    return torch.randint(-size, size, shape, generator=rng).to(dtype)


def element_gather(data, index, axis, dtype=torch.float32, index_dtype=torch.int64, shift=None):
    """gather_elements(x, idx): x an input of shape `data` (a constant if `data` is a tensor), idx
    an input (plus `shift`, so that the model computes it)."""
    b = GraphBuilder("gather")
    x = b.constant(data, "x") if isinstance(data, torch.Tensor) else b.input("x", TensorType(data, dtype))
    idx = b.input("idx", TensorType(index, index_dtype))
    if shift is not None:
        idx = b.add1("add", [idx, b.constant(torch.tensor(shift, dtype=index_dtype))])
    return b.finish([b.add1("gather_elements", [x, idx], {"axis": axis})])


def kinds(engine) -> list[str]:
    return [s.kind for s in engine.plan.steps if s.kind != "view"]


@pytest.mark.parametrize("data, index, axis", [
    ((5, 7), (5, 3), 1), ((5, 7), (9, 7), 0), ((4, 6, 3), (4, 2, 3), 1), ((4, 6, 3), (3, 5, 2), 2),
    ((37,), (50,), 0), ((1, 5), (1, 1), 1), ((3, 1), (3, 4), 1), ((2, 3), (0, 3), 0),
    ((0, 3), (0, 2), 1), ((5, 7), (5, 1), 1), ((4, 6, 1), (4, 3, 1), 1)])  # (trailing size-1 dims)
@pytest.mark.parametrize("index_dtype", [torch.int64, torch.int32])
def test_gather_elements_shapes(data, index, axis, index_dtype, rng):
    graph = element_gather(data, index, axis, index_dtype=index_dtype)
    inputs = [fresh(data, torch.float32, rng), indices(index, data[axis], rng, index_dtype)]
    engine = assert_matches_reference(graph, inputs)
    assert kinds(engine) == ["kernel"]


@pytest.mark.parametrize("dtype", DTYPES)
def test_gather_elements_dtypes(dtype, rng):
    graph = element_gather((6, 9), (6, 11), 1, dtype)
    engine = assert_matches_reference(graph, [fresh((6, 9), dtype, rng), indices((6, 11), 9, rng)],
                                      tolerance=(0, 0))  # moved, never rounded
    assert kinds(engine) == ["kernel"]


def test_gather_elements_of_a_constant_by_computed_indices(rng):
    graph = element_gather(torch.randn(4, 13, generator=rng), (4, 8), 1, shift=-3)
    engine = assert_matches_reference(graph, [torch.randint(-10, 16, (4, 8), generator=rng)])
    assert kinds(engine) == ["kernel", "kernel"]  # the add; the gather (a gather starts a kernel)
    (check,) = engine.plan.steps[-1].index_checks
    assert (check.data, check.axis) == ("x", 1) and "gather_elements" in check.node


@pytest.mark.parametrize("bad", [7, -8])
def test_an_index_out_of_range_is_an_input_error_naming_the_node(bad, rng):
    graph = element_gather((3, 7), (3, 4), 1)
    engine, _ = compile_and_run(graph, [fresh((3, 7), torch.float32, rng), indices((3, 4), 7, rng)])
    uncaptured(engine)
    idx = indices((3, 4), 7, rng)
    idx[2, 1] = bad
    with pytest.raises(InputError, match=rf'\(op gather_elements\): index {bad} .*size 7 \(expected -7 .. 6\)'):
        run_engine(engine, torch.randn(3, 7), idx)


def test_a_run_that_skips_the_check_reads_inside_the_data(monkeypatch, rng):
    """As a CUDA-graph replay does: the kernel clamps, the sanitizer sees no lane outside x."""
    graph = element_gather((3, 7), (3, 4), 1, shift=0)
    x, idx = fresh((3, 7), torch.float32, rng), torch.tensor([[9, -20, 0, 6]] * 3)
    engine, _ = compile_and_run(graph, [x, indices((3, 4), 7, rng)])
    monkeypatch.setattr(Engine, "_check_gathers", lambda *args: None)
    (got,) = run_engine(engine, x, idx)
    assert torch.equal(got, torch.gather(x, 1, torch.tensor([[6, 0, 0, 6]] * 3)))


def lookup_graph(table: torch.Tensor, shape, shift: int):
    """rows of a constant table by indices the model computes (ids + shift)."""
    b = GraphBuilder("lookup")
    ids = b.input("ids", TensorType(shape, torch.int64))
    rows = b.add1("add", [ids, b.constant(torch.tensor(shift))])
    out = b.add1("gather", [b.constant(table, "table"), rows], {"axis": 0}, name="lookup")
    return b.finish([b.add1("mul", [out, b.constant(torch.tensor(2.0))])])


def test_a_table_lookup_by_computed_indices_is_a_kernel(rng):
    graph = lookup_graph(torch.randn(VOCAB, WIDTH, generator=rng), (3, 7), 1)
    engine = assert_matches_reference(graph, [indices((3, 7), VOCAB - 1, rng)])
    assert kinds(engine) == ["kernel", "kernel"]  # the add; the lookup with its mul
    with pytest.raises(InputError, match=rf'node "lookup" \(op gather\): index {VOCAB} '):
        run_engine(uncaptured(engine), torch.full((3, 7), VOCAB - 1))


def test_token_ids_are_checked_once_per_run_not_per_kernel(rng):
    b = GraphBuilder("lookup")
    ids = b.input("ids", TensorType((2, 3), torch.int64))
    graph = b.finish([b.add1("gather", [b.constant(torch.randn(VOCAB, WIDTH), "table"), ids], {"axis": 0})])
    engine = assert_matches_reference(graph, [indices((2, 3), VOCAB, rng)])
    assert engine.plan.index_bounds == {"ids": VOCAB}
    assert all(not s.index_checks for s in engine.plan.kernel_steps())


def test_index_checks_round_trip_through_engine_files_and_may_not_be_dropped(tmp_path, rng):
    graph = lookup_graph(torch.randn(VOCAB, WIDTH, generator=rng), (2, 5), 2)
    engine, _ = compile_and_run(graph, [indices((2, 5), VOCAB - 2, rng)])
    path = tmp_path / "lookup.engine"
    engine.save(path)
    loaded = load_engine(path, cuda_graph=False)
    assert [s.index_checks for s in loaded.plan.kernel_steps()] == \
        [s.index_checks for s in engine.plan.kernel_steps()]
    with pytest.raises(InputError, match="out of range"):
        run_engine(loaded, torch.full((2, 5), VOCAB))
    header, payload = fmt.read_engine_file(path)
    for step in header["plan"]["steps"]:
        if step["kind"] == "kernel":
            step["index_checks"] = []
    repack(path, header, bytes(payload), tmp_path / "edited.engine")
    with pytest.raises(EngineFileError, match=r"index_checks.*gathers through"):
        load_engine(tmp_path / "edited.engine")


def test_onnx_gather_elements_matches_onnxruntime():
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(4)
    model = make_model([node("GatherElements", ["x", "idx"], axis=-2)],
                       {"x": (np.float32, [3, 5, 4]), "idx": (np.int64, [3, 7, 4])}, ["y"])
    feeds = {"x": rng.standard_normal((3, 5, 4)).astype(np.float32),
             "idx": rng.integers(-5, 5, (3, 7, 4))}
    assert not torch_steps(check_engine(model, feeds))


def test_onnx_roberta_position_ids_run_in_kernels():
    """RoBERTa's embedding ids: positions = cumsum(ids != pad) * (ids != pad) + pad, their rows,
    and the token types gathered from a buffer at those positions, all against onnxruntime."""
    pytest.importorskip("onnxruntime")
    rng = np.random.default_rng(5)
    pad, positions = 1, 8  # rows of 9 ids: at most 6 of them may be tokens
    nodes = [node("Equal", ["ids", "pad"], ["is_pad"]), node("Not", ["is_pad"], ["keep"]),
             node("Cast", ["keep"], ["keep32"], to=6), node("CumSum", ["keep32", "axis"], ["count"]),
             node("Mul", ["count", "keep32"], ["masked"]), node("Cast", ["masked"], ["masked64"], to=7),
             node("Add", ["masked64", "pad"], ["pos"]),
             node("Gather", ["position_table", "pos"], ["pos_rows"]),
             node("GatherElements", ["token_types", "pos"], ["types"], axis=1),
             node("Gather", ["type_table", "types"], ["type_rows"]),
             node("Add", ["pos_rows", "type_rows"], ["y"])]
    inits = {"pad": np.array(pad, np.int64), "axis": np.array(1, np.int64),
             "position_table": rng.standard_normal((positions, 8)).astype(np.float32),
             "token_types": rng.integers(0, 2, (2, positions)),
             "type_table": rng.standard_normal((2, 8)).astype(np.float32)}
    model = make_model(nodes, {"ids": (np.int64, [2, 9])}, ["y"], initializers=inits)
    ids = rng.integers(2, 50, (2, 9))
    ids[0, 6:], ids[1, 3:] = pad, pad  # padding at the end of each row
    engine = check_engine(model, {"ids": ids})
    assert not torch_steps(engine)
    with pytest.raises(InputError, match=r"index (8|9|10) .* size 8"):  # positions past the table
        run_engine(uncaptured(engine), torch.full((2, 9), 3))
