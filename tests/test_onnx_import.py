"""How models get into trident: opsets below 13 upgraded by onnx.version_converter, shape inputs
bound at build time (build_engine(constant_inputs=)), the float64 policy (torch only, listed by
explain), dtypes trident does not represent, If with a condition known at import, fallbacks."""
from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from onnx_util import F32, check_engine, compiled_ops, make_model, node, run_ort, torch_steps
from trident.compiler import build_engine
from trident.compiler.errors import InputError, UnsupportedError
from trident.compiler.frontend.onnx import (constant_fed_inputs, import_onnx,
                                            supported_onnx_ops)
from trident.compiler.testing import run_engine
from trident.tools.explain import explain

pytest.importorskip("onnxruntime")

I64 = np.int64


def test_opset_11_model_is_upgraded_by_the_version_converter():
    """Opset 11's Clip takes min / max inputs, its Softmax coerces to 2-D: both upgraded."""
    model = make_model([node("Clip", ["x", "lo", "hi"], ["c"]), node("Softmax", ["c"], axis=1)],
                       {"x": (F32, [2, 3, 4])}, ["y"],
                       initializers={"lo": np.array(-0.5, F32), "hi": np.array(0.7, F32)},
                       opset=11)
    check_engine(model)


def test_build_engine_binds_shape_inputs_by_name():
    model = make_model([node("Reshape", ["x", "shape"], ["r"]), node("Relu", ["r"])],
                       {"x": (F32, [2, 6]), "shape": (I64, [2])}, ["y"])
    assert constant_fed_inputs(model) == {"shape"}
    engine = build_engine(model, precision="fp32", constant_inputs={"shape": [3, 4]})
    assert engine.inputs == ["x"]
    x = torch.randn(2, 6)
    torch.testing.assert_close(run_engine(engine, x)[0], torch.relu(x).reshape(3, 4))


def test_constant_inputs_are_checked_against_the_graph_input():
    model = make_model([node("Reshape", ["x", "shape"])], {"x": (F32, [2, 6]), "shape": (I64, [2])},
                       ["y"])
    with pytest.raises(InputError, match="'nope'.*not a graph input.*shape"):
        build_engine(model, precision="fp32", constant_inputs={"nope": [3, 4]})
    with pytest.raises(InputError, match=r"constant_inputs\['shape'\] has shape \(3,\)"):
        build_engine(model, precision="fp32", constant_inputs={"shape": [1, 3, 4]})


def test_shape_inputs_computed_through_ops_are_found():
    """TopK's K from Gather(shape input): the shape input itself must be bound."""
    model = make_model([node("Gather", ["dims", "one"], ["k"]), node("TopK", ["x", "k"], ["v", "i"])],
                       {"x": (F32, [3, 8]), "dims": (I64, [2])}, ["v", "i"],
                       initializers={"one": np.array([1], I64)})
    assert constant_fed_inputs(model) == {"dims"}
    feeds = {"x": np.random.default_rng(1).standard_normal([3, 8]).astype(F32)}
    expected = run_ort(model, dict(feeds, dims=np.array([7, 5], I64)))
    check_engine(model, feeds, expected=expected, constant_inputs={"dims": [7, 5]})


def test_float64_runs_through_torch_in_full_precision_and_explain_lists_it():
    model = make_model([node("Exp", ["x"], ["e"]), node("ReduceSum", ["e", "axes"], ["s"]),
                        node("Log", ["s"])], {"x": (np.float64, [3, 5])}, ["y"],
                       initializers={"axes": np.array([1], I64)})
    x = np.random.default_rng(2).standard_normal([3, 5]) * 30
    for precision in ("fp32", "fp16"):  # fp16 lowering leaves float64 alone
        engine = check_engine(model, {"x": x}, precision, tol=(1e-12, 0))
        assert torch_steps(engine) == ["exp", "reduce_sum", "log"]
    text = explain(model, precision="fp32", source=False)
    assert "torch" in text and "float64 has no kernels" in text


def test_int16_and_uint8_run_in_kernels():
    for dtype in (np.int16, np.uint8):
        model = make_model([node("Add", ["a", "b"], ["s"]), node("Mul", ["s", "b"])],
                           {"a": (dtype, [4, 7]), "b": (dtype, [7])}, ["y"])
        assert not torch_steps(check_engine(model))


@pytest.mark.parametrize("elem, name", [(onnx.TensorProto.UINT32, "UINT32"),
                                        (onnx.TensorProto.FLOAT8E4M3FN, "FLOAT8E4M3FN"),
                                        (onnx.TensorProto.STRING, "STRING")])
def test_dtypes_without_a_representation_are_unsupported_by_name(elem, name):
    x = onnx.helper.make_tensor_value_info("x", elem, [3])
    graph = onnx.helper.make_graph([node("Identity", ["x"])], "g", [x],
                                   [onnx.helper.make_tensor_value_info("y", elem, [3])])
    model = onnx.helper.make_model(graph, opset_imports=[onnx.helper.make_opsetid("", 21)])
    with pytest.raises(UnsupportedError, match=f"'x'.*{name}"):
        import_onnx(model)


@pytest.mark.parametrize("take_then", [True, False])
def test_if_with_a_condition_known_at_import_is_its_branch(take_then):
    def branch(op, name):
        out = onnx.helper.make_tensor_value_info(f"{name}_out", onnx.TensorProto.FLOAT, [2, 3])
        return onnx.helper.make_graph([node(op, ["x"], [f"{name}_out"])], name, [], [out])

    model = make_model([node("Shape", ["x"], ["s"]), node("ReduceSum", ["s"], ["n"], keepdims=0),
                        node("Greater", ["n", "limit"], ["c"]),
                        onnx.helper.make_node("If", ["c"], ["y"], then_branch=branch("Relu", "a"),
                                              else_branch=branch("Neg", "b"))],
                       {"x": (F32, [2, 3])}, ["y"],
                       initializers={"limit": np.array(4 if take_then else 9, I64)})
    check_engine(model)
    assert compiled_ops(model) == ["relu" if take_then else "neg"]


def test_if_decided_at_run_time_is_unsupported():
    then = onnx.helper.make_graph([node("Relu", ["x"], ["t"])], "t", [],
                                  [onnx.helper.make_tensor_value_info("t", 1, [2])])
    other = onnx.helper.make_graph([node("Neg", ["x"], ["e"])], "e", [],
                                   [onnx.helper.make_tensor_value_info("e", 1, [2])])
    model = make_model([node("ReduceSum", ["x"], ["s"], keepdims=0),
                        node("Greater", ["s", "zero"], ["c"]),
                        onnx.helper.make_node("If", ["c"], ["y"], then_branch=then,
                                              else_branch=other)],
                       {"x": (F32, [2])}, ["y"], initializers={"zero": np.array(0, F32)})
    with pytest.raises(UnsupportedError, match="'cond'.*must be a constant"):
        import_onnx(model)


def test_data_dependent_output_shapes_are_unsupported():
    model = make_model([node("NonZero", ["x"])], {"x": (F32, [4])}, ["y"])
    with pytest.raises(UnsupportedError, match="NonZero.*data-dependent"):
        import_onnx(model)


def test_fallbacks_are_named_by_explain():
    model = make_model([node("TopK", ["x", "k"], ["v", "i"]), node("Relu", ["v"], ["y"])],
                       {"x": (I64, [3, 9])}, ["y", "i"], initializers={"k": np.array([4], I64)})
    text = explain(model, precision="fp32", source=False)
    assert "topk of int64 keys with k < the row (the sort kernel sorts their whole rows)" in text


def test_the_ops_the_issue_names_are_all_converted():
    named = {"Mod", "And", "Or", "Xor", "Not", "BitShift", "LogSoftmax", "Resize", "Pad",
             "GatherElements", "ScatterElements", "ScatterND", "RMSNormalization",
             "LessOrEqual", "GreaterOrEqual", "Trilu", "ArgMax", "ArgMin", "GridSample", "CumSum",
             "Einsum", "InstanceNormalization", "GroupNormalization", "ConvTranspose", "Tile",
             "OneHot", "TopK", "DepthToSpace", "SpaceToDepth", "Sign", "Floor", "Ceil", "Round",
             "Mean", "Min", "Max", "Sum", "ReduceL1", "ReduceL2", "ReduceLogSumExp",
             "ReduceSumSquare", "ReduceMin", "ReduceProd"}
    assert named <= set(supported_onnx_ops())
