"""ONNX ops that pad, rearrange, index, scatter, sort and scan, through build_engine and the
engine against onnxruntime: Pad, CenterCropPad, Tile, DepthToSpace/SpaceToDepth, Trilu, OneHot,
GatherElements/ND, ScatterElements/ND, TopK, CumSum, ReverseSequence, Compress, NonZero."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, compiled_ops, make_model, node, torch_steps
from trident.compiler.errors import InputError

pytest.importorskip("onnxruntime")

I64 = np.int64


def _ints(*values):
    return np.array(values, I64)


DTYPES = [F32, np.float16, np.int32, np.int64, np.int8, np.uint8, np.bool_]


@pytest.mark.parametrize("mode", ["constant", "reflect", "edge", "wrap"])
@pytest.mark.parametrize("pads", [[0, 2, 1, 0, 3, 2], [1, 0, 0, 0, 0, 1], [0, -1, 2, 0, 2, -2]])
def test_pad_modes_and_negative_pads(mode, pads):
    model = make_model([node("Pad", ["x", "pads", "value"], mode=mode)], {"x": (F32, [3, 4, 5])},
                       ["y"], initializers={"pads": _ints(*pads), "value": np.array(1.5, F32)},
                       opset=19)
    check_engine(model)


@pytest.mark.parametrize("dtype", DTYPES)
def test_pad_dtypes_with_axes(dtype):
    """opset 18's axes input; every dtype Pad takes (a gather and a select: exact)."""
    model = make_model([node("Pad", ["x", "pads", "", "axes"])], {"x": (dtype, [2, 3, 4])}, ["y"],
                       initializers={"pads": _ints(1, 2, 0, 1), "axes": _ints(-1, 0)}, opset=18)
    check_engine(model)


def test_pad_of_a_size_one_and_an_empty_dim():
    model = make_model([node("Pad", ["x", "pads"], mode="edge")], {"x": (F32, [1, 3])}, ["y"],
                       initializers={"pads": _ints(2, 0, 1, 1)})
    check_engine(model)
    model = make_model([node("Pad", ["x", "pads"])], {"x": (F32, [0, 3])}, ["y"],
                       initializers={"pads": _ints(1, 0, 1, 0)})
    check_engine(model, {"x": np.zeros([0, 3], F32)})


@pytest.mark.parametrize("shape", [[5, 6], [3, 2]])
def test_center_crop_pad(shape):
    model = make_model([node("CenterCropPad", ["x", "s"], axes=[0, 2])], {"x": (F32, [4, 3, 5])},
                       ["y"], initializers={"s": _ints(*shape)}, opset=18)
    x = np.random.default_rng(1).standard_normal([4, 3, 5]).astype(F32)
    expected = np.zeros([shape[0], 3, shape[1]], F32)
    # ONNX: the crop starts (have - want) // 2 in, the pad puts (want - have) // 2 zeros in front
    src = [slice(max(0, (h - w) // 2), max(0, (h - w) // 2) + min(h, w)) for h, w in zip([4, 5], shape)]
    dst = [slice(max(0, (w - h) // 2), max(0, (w - h) // 2) + min(h, w)) for h, w in zip([4, 5], shape)]
    expected[dst[0], :, dst[1]] = x[src[0], :, src[1]]
    check_engine(model, {"x": x}, expected=[expected])


@pytest.mark.parametrize("dtype", [F32, np.int64, np.bool_])
@pytest.mark.parametrize("repeats", [[2, 1, 3], [1, 1, 1], [1, 0, 2]])
def test_tile(repeats, dtype):
    model = make_model([node("Tile", ["x", "r"])], {"x": (dtype, [2, 3, 1])}, ["y"],
                       initializers={"r": _ints(*repeats)})
    engine = check_engine(model)
    assert set(torch_steps(engine)) <= {"reshape"}  # (a reshape that is no view: torch copies)


@pytest.mark.parametrize("mode", ["DCR", "CRD"])
def test_depth_to_space_and_back(mode):
    model = make_model([node("DepthToSpace", ["x"], ["d"], blocksize=2, mode=mode),
                        node("Relu", ["d"], ["y"])], {"x": (F32, [2, 8, 3, 5])}, ["y"])
    assert set(torch_steps(check_engine(model))) <= {"reshape"}
    model = make_model([node("SpaceToDepth", ["x"], blocksize=3)], {"x": (F32, [1, 2, 6, 9])},
                       ["y"])
    assert set(torch_steps(check_engine(model))) <= {"reshape"}


@pytest.mark.parametrize("upper, k", [(1, 0), (0, 0), (1, 2), (0, -1), (1, -7)])
def test_trilu_is_a_fused_select(upper, k):
    model = make_model([node("Trilu", ["x", "k"], ["t"], upper=upper), node("Neg", ["t"], ["y"])],
                       {"x": (F32, [2, 4, 6])}, ["y"], initializers={"k": np.array(k, I64)})
    engine = check_engine(model)
    assert engine.num_kernels == 1


@pytest.mark.parametrize("axis", [-1, 0, 1])
@pytest.mark.parametrize("index_type", [np.int64, np.int32, F32])
def test_one_hot(axis, index_type):
    model = make_model([node("OneHot", ["i", "depth", "values"], axis=axis)],
                       {"i": (index_type, [3, 4]), "values": (F32, [2])}, ["y"],
                       initializers={"depth": np.array(5, I64)})
    i = np.random.default_rng(2).integers(-6, 7, [3, 4]).astype(index_type)  # some out of range
    values = np.array([-1.5, 2.0], F32)
    wrapped = np.where(i < 0, i + 5, i).astype(I64)
    hot = np.where(np.arange(5) == wrapped[..., None], values[1], values[0]).astype(F32)
    check_engine(model, {"i": i, "values": values}, expected=[np.moveaxis(hot, -1, axis)])


@pytest.mark.parametrize("axis", [0, 1, -1])
def test_gather_elements_with_negative_indices(axis):
    model = make_model([node("GatherElements", ["x", "i"], axis=axis)],
                       {"x": (F32, [3, 4]), "i": (I64, [2, 4])}, ["y"])
    i = np.random.default_rng(3).integers(-3, 3, [2, 4]).astype(I64)
    check_engine(model, {"x": np.random.default_rng(4).standard_normal([3, 4]).astype(F32), "i": i})


def test_gather_elements_out_of_range_index_is_an_input_error():
    model = make_model([node("GatherElements", ["x", "i"], axis=0)],
                       {"x": (F32, [3, 4]), "i": (I64, [1, 4])}, ["y"])
    with pytest.raises(InputError, match="GatherElements.*index 7"):
        check_engine(model, {"x": np.ones([3, 4], F32), "i": np.array([[0, 7, 1, 2]], I64)},
                     expected=[np.zeros([1, 4], F32)])


@pytest.mark.parametrize("batch_dims, x_shape, i_shape", [(0, [3, 4, 5], [2, 2]),
                                                          (0, [3, 4], [2, 1, 2]),
                                                          (1, [2, 3, 4], [2, 1]),
                                                          (1, [2, 3, 4, 5], [2, 3, 2]),
                                                          (2, [2, 3, 4], [2, 3, 1]),
                                                          # every dim: elements (its index math made fusion
                                                          # form a group cycle: fusion.py's depends_on)
                                                          (0, [2, 3, 4], [5, 3]),
                                                          (0, [5, 3, 2], [2, 3, 1]),  # one coordinate: a Gather
                                                          (0, [4, 3], [1])])
def test_gather_nd(batch_dims, x_shape, i_shape):
    """A Gather of rows in the table-lookup kernel (passes/gather_nd.py), negative coordinates
    among them, against onnxruntime."""
    model = make_model([node("GatherND", ["x", "i"], batch_dims=batch_dims)],
                       {"x": (F32, x_shape), "i": (I64, i_shape)}, ["y"])
    rng = np.random.default_rng(5)
    limit = x_shape[batch_dims:batch_dims + i_shape[-1]]
    i = np.stack([rng.integers(-d, d, i_shape[:-1]) for d in limit], -1).astype(I64)
    engine = check_engine(model, {"x": rng.standard_normal(x_shape).astype(F32), "i": i})
    assert torch_steps(engine) == []


def test_a_gather_nd_coordinate_out_of_its_dim_is_an_input_error():
    """(1, 7) into [3, 4] flattens to row 11, which exists: the lowering marks it out of range."""
    model = make_model([node("GatherND", ["x", "i"])], {"x": (F32, [3, 4]), "i": (I64, [2, 2])}, ["y"])
    with pytest.raises(InputError, match="index 12"):
        check_engine(model, {"x": np.ones([3, 4], F32), "i": np.array([[0, 1], [1, 7]], I64)},
                     expected=[np.zeros([2], F32)])


def test_gather_nd_of_one_constant_coordinate_is_a_slice():
    # Falcon's fused_qkv[..., [-2], :] as the dynamo exporter writes it: a GatherND of constant
    # indices [[-2]]; it runs as a slice (no gather, nothing in torch)
    x = np.random.default_rng(6).standard_normal([4, 2, 3]).astype(F32)
    model = make_model([node("GatherND", ["x", "i"])], {"x": (F32, [4, 2, 3])}, ["y"],
                       {"i": np.array([[-2]], I64)})
    engine = check_engine(model, {"x": x}, expected=[x[[-2]]])
    assert torch_steps(engine) == [] and not {"gather", "gather_nd"} & set(compiled_ops(model))


def _positions(places: list[int], d: int | None) -> np.ndarray:
    """Each place's position along dim d (0 everywhere for None)."""
    if d is None:
        return np.zeros(places, I64)
    return np.broadcast_to(np.arange(places[d]).reshape([-1 if e == d else 1 for e in range(len(places))]), places)


@pytest.mark.parametrize("x_shape, places, dims, from_end, views", [
    ([2, 5], [2, 1, 1, 5], [0, 3], False, True),   # transformers' padding mask [b, s] -> [b, 1, 1, s]
    ([5, 2, 3], [2, 4, 5], [2, 0], False, True),   # onto dims in another order, broadcast over a dim of 4
    ([5, 2, 3], [2, 4, 5], [2, 0], True, True),    # the same positions counted from the end
    ([1, 5], [3, 5], [None, 1], False, True),      # 0 in a dim of 1, broadcast over 3 places
    ([2, 6], [2, 1, 5], [0, 2], False, False),     # positions of only part of a dim: the lookup
])
def test_gather_nd_of_each_places_own_position_is_a_view(x_shape, places, dims, from_end, views):
    """GatherND(x, stacked aranges) as transformers' masks are exported: x rearranged, no kernel."""
    i = np.stack([_positions(places, d) for d in dims], -1)
    if from_end:
        i = i - np.array(x_shape[:len(dims)], I64)
    model = make_model([node("GatherND", ["x", "i"])], {"x": (F32, x_shape)}, ["y"], {"i": i})
    engine = check_engine(model, {"x": np.random.default_rng(9).standard_normal(x_shape).astype(F32)})
    assert torch_steps(engine) == []
    assert bool({"gather", "gather_nd"} & set(compiled_ops(model))) != views


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_elements(reduction):
    model = make_model([node("ScatterElements", ["x", "i", "u"], axis=1, reduction=reduction)],
                       {"x": (F32, [3, 5]), "i": (I64, [3, 2]), "u": (F32, [3, 2])}, ["y"],
                       opset=18)
    i = np.array([[0, -1], [2, 3], [4, 1]], I64)  # distinct per row: 'none' is then defined
    check_engine(model, {"x": np.random.default_rng(6).standard_normal([3, 5]).astype(F32),
                         "i": i, "u": np.random.default_rng(7).standard_normal([3, 2]).astype(F32)})


@pytest.mark.parametrize("reduction", ["none", "add", "mul", "max", "min"])
def test_scatter_nd(reduction):
    model = make_model([node("ScatterND", ["x", "i", "u"], reduction=reduction)],
                       {"x": (F32, [4, 3, 2]), "i": (I64, [2, 2]), "u": (F32, [2, 2])}, ["y"],
                       opset=18)
    rng = np.random.default_rng(8)
    check_engine(model, {"x": rng.standard_normal([4, 3, 2]).astype(F32),
                         "i": np.array([[0, 1], [3, 2]], I64),
                         "u": rng.standard_normal([2, 2]).astype(F32)})


@pytest.mark.parametrize("dtype", [F32, np.int64])
@pytest.mark.parametrize("largest", [1, 0])
@pytest.mark.parametrize("axis, k", [(-1, 3), (0, 1), (1, 0)])
def test_top_k_breaks_ties_by_index(axis, k, largest, dtype):
    model = make_model([node("TopK", ["x", "k"], ["v", "i"], axis=axis, largest=largest)],
                       {"x": (dtype, [4, 6])}, ["v", "i"], initializers={"k": _ints(k)})
    x = np.random.default_rng(9).integers(-2, 3, [4, 6]).astype(dtype)  # many ties
    engine = check_engine(model, {"x": x})
    assert torch_steps(engine) == ([] if dtype == F32 else ["topk"])  # (int64 keys: torch sorts)


@pytest.mark.parametrize("exclusive, reverse", [(0, 0), (1, 0), (0, 1), (1, 1)])
@pytest.mark.parametrize("dtype", [F32, np.int32])
def test_cum_sum(exclusive, reverse, dtype):
    model = make_model([node("CumSum", ["x", "axis"], exclusive=exclusive, reverse=reverse)],
                       {"x": (dtype, [3, 5])}, ["y"], initializers={"axis": np.array(1, I64)})
    check_engine(model)


def test_reverse_sequence():
    model = make_model([node("ReverseSequence", ["x", "n"], time_axis=0, batch_axis=1)],
                       {"x": (F32, [5, 3, 2]), "n": (I64, [3])}, ["y"])
    check_engine(model, {"x": np.random.default_rng(10).standard_normal([5, 3, 2]).astype(F32),
                         "n": np.array([5, 1, 3], I64)})


def test_compress_and_non_zero_of_constants():
    condition = np.array([True, False, True, True])
    model = make_model([node("Compress", ["x", "c"], ["a"], axis=1),
                        node("NonZero", ["c"], ["nz"]), node("Cast", ["nz"], ["f"], to=1),
                        node("ReduceSum", ["f"], ["s"], keepdims=0),
                        node("Add", ["a", "s"], ["y"])],
                       {"x": (F32, [2, 4])}, ["y"], initializers={"c": condition})
    check_engine(model)


@pytest.mark.parametrize("index", [np.array(1, I64), np.array(-1, I64), np.array([0, 2, 4], I64),
                                   np.array([3], I64)])
def test_gather_of_evenly_spaced_constant_indices_is_a_view(index):
    """x[:, 1] and qkv[0] in exported transformers: a strided slice, no gather."""
    model = make_model([node("Gather", ["x", "i"], ["g"], axis=1), node("Relu", ["g"])],
                       {"x": (F32, [2, 5, 3])}, ["y"], initializers={"i": index})
    engine = check_engine(model)
    assert not torch_steps(engine) and engine.num_kernels == 1


@pytest.mark.parametrize("axis, i_shape", [(1, [3]), (2, [2, 2]), (-1, []), (1, [4, 1])])
def test_gather_along_another_axis_with_runtime_indices(axis, i_shape):
    """A Gather of rows of x with the axis moved first (passes/gathers.py), its index dims then
    where the axis was; negative indices among them; against onnxruntime."""
    x_shape = [2, 5, 3]
    model = make_model([node("Gather", ["x", "i"], ["g"], axis=axis), node("Relu", ["g"])],
                       {"x": (F32, x_shape), "i": (I64, i_shape)}, ["y"])
    rng = np.random.default_rng(12)
    n = x_shape[axis]
    feeds = {"x": rng.standard_normal(x_shape).astype(F32), "i": rng.integers(-n, n, i_shape).astype(I64)}
    assert torch_steps(check_engine(model, feeds)) == []


def test_zero_pad_before_a_conv_folds_into_its_pads():
    """TF-style 'same' padding exports as Pad -> Conv: one conv kernel, no pad."""
    model = make_model([node("Pad", ["x", "pads"], ["p"]),
                        node("Conv", ["p", "w"], strides=[2, 2], pads=[1, 0, 0, 1])],
                       {"x": (F32, [1, 3, 9, 8])}, ["y"],
                       initializers={"pads": _ints(0, 0, 0, 1, 0, 0, 1, 2),
                                     "w": np.random.default_rng(11).standard_normal([4, 3, 3, 3])
                                     .astype(F32)})
    check_engine(model)
    assert compiled_ops(model) == ["conv"]
