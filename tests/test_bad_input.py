"""Bad models fail with trident's own errors, each naming where and what: checker failures,
unsupported ops and dtypes, missing data, wrong attributes, mismatched shapes, broken files,
sizes the kernels cannot index. Every case goes through build_engine and one run of the engine
(failures can live in codegen and the runtime, not only in the importer), with the bounds
sanitizer on (tests/conftest.py). A fuzzer mutates valid models and accepts no exception other
than a TridentError from the import, the build or the run."""
from __future__ import annotations

import copy
import random
import re

import numpy as np
import onnx
import onnx.version_converter
import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper
from onnx.external_data_helper import set_external_data

import torch

from trident.compiler import build_engine
from trident.compiler.errors import (ModelError, OutOfBoundsError, ShapeError, TridentError,
                                     UnsupportedError)
from trident.compiler.frontend.onnx import import_onnx
from trident.compiler.testing import random_tensor


def model(nodes, inputs, outputs, initializers=(), opset=17) -> onnx.ModelProto:
    graph = h.make_graph(nodes, "bad", inputs, outputs,
                         [numpy_helper.from_array(np.asarray(v), n) for n, v in initializers])
    return h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])


def build_and_run(m, precision: str = "fp32") -> list[torch.Tensor]:
    """What a user does: build an engine and run it once on random inputs of its shapes."""
    engine = build_engine(m, precision=precision)
    generator = torch.Generator().manual_seed(0)
    return engine(*[random_tensor(shape, dtype, generator) for _, shape, dtype in engine.input_specs()])


def tensor(name, shape, elem=T.FLOAT):
    return h.make_tensor_value_info(name, elem, shape)


X = tensor("x", [2, 3])
Y = tensor("y", [2, 3])


def relu_model(opset=17):
    return model([h.make_node("Relu", ["x"], ["y"], name="r")], [X], [Y], opset=opset)


# ----------------------------------------------------------------------- malformed models ----
def test_checker_failure_is_a_model_error():
    bad = model([h.make_node("Relu", ["nowhere"], ["y"])], [X], [Y])
    with pytest.raises(ModelError, match="checker.*nowhere"):
        build_and_run(bad)


def test_unsupported_op_names_op_node_opset_and_the_supported_list():
    bad = model([h.make_node("Bernoulli", ["x"], ["y"], name="coin")], [X], [Y])
    with pytest.raises(UnsupportedError) as info:
        build_and_run(bad)
    message = str(info.value)
    for part in ("'Bernoulli'", '"coin"', "opset 17", "Supported ops:", "Conv", "MatMul"):
        assert part in message


def test_unnamed_node_gets_a_generated_name_in_errors():
    bad = model([h.make_node("Relu", ["x"], ["r"]), h.make_node("Bernoulli", ["r"], ["y"])],
                [X], [Y])
    with pytest.raises(UnsupportedError, match='"Bernoulli_1"'):
        import_onnx(bad)


def test_old_opset_that_cannot_be_upgraded_is_unsupported_and_named(monkeypatch):
    def refuse(model, target):
        raise RuntimeError("adapter assertion failed")

    monkeypatch.setattr(onnx.version_converter, "convert_version", refuse)
    with pytest.raises(UnsupportedError, match="opset 11.*version_converter.*assertion"):
        import_onnx(relu_model(opset=11))


def test_missing_initializer_data_is_a_model_error():
    m = model([h.make_node("MatMul", ["x", "w"], ["y"])], [X], [tensor("y", [2, 4])],
              [("w", np.ones([3, 4], np.float32))])
    init = m.graph.initializer[0]
    set_external_data(init, "weights_that_do_not_exist.bin")
    init.data_location = T.EXTERNAL
    init.ClearField("raw_data")
    with pytest.raises(ModelError, match="'?w'?"):
        build_and_run(m)


def test_undefined_graph_output_is_a_model_error():
    bad = model([h.make_node("Relu", ["x"], ["r"])], [X], [tensor("never_made", [2, 3])])
    with pytest.raises(ModelError, match="never_made"):
        build_and_run(bad)


@pytest.mark.parametrize("node,inputs,message", [
    (h.make_node("Transpose", ["x"], ["y"], perm=[0, 0], name="t"), [X], "perm"),
    (h.make_node("Softmax", ["x"], ["y"], axis=5, name="t"), [X], "axis 5"),
    (h.make_node("Concat", ["x", "x"], ["y"], axis=-3, name="t"), [X], "axis -3"),
    (h.make_node("MaxPool", ["x4"], ["y"], kernel_shape=[2, 2], auto_pad="FOO", name="t"),
     [tensor("x4", [1, 1, 4, 4])], "auto_pad"),
    (h.make_node("MaxPool", ["x4"], ["y"], kernel_shape=[2, 2], strides=[0, 1], name="t"),
     [tensor("x4", [1, 1, 4, 4])], "strides"),
    (h.make_node("AveragePool", ["x4"], ["y"], kernel_shape=[2, 2], pads=[1, 1], name="t"),
     [tensor("x4", [1, 1, 4, 4])], "pads"),
    (h.make_node("Gelu", ["x"], ["y"], approximate="fast", name="t"), [X], "approximate"),
])
def test_wrong_attribute_is_a_model_error(node, inputs, message):
    opset = 20 if node.op_type == "Gelu" else 17
    y = onnx.ValueInfoProto(name="y")
    y.type.tensor_type.elem_type = T.FLOAT
    y.type.tensor_type.shape.SetInParent()  # unknown dims: shape inference may not get them
    with pytest.raises(ModelError, match=message) as info:
        build_and_run(model([node], inputs, [y], opset=opset))
    assert 'node "t"' in str(info.value)


def test_conv_kernel_shape_contradicting_the_weight():
    bad = model([h.make_node("Conv", ["x4", "w"], ["y"], kernel_shape=[3, 3], name="c")],
                [tensor("x4", [1, 1, 4, 4])], [tensor("y", [1, 1, 3, 3])],
                [("w", np.ones([1, 1, 2, 2], np.float32))])
    with pytest.raises(ModelError, match='node "c".*kernel_shape'):
        build_and_run(bad)


# --------------------------------------------------------------------------------- shapes ----
def test_matmul_with_mismatched_k_is_a_shape_error():
    bad = model([h.make_node("MatMul", ["x", "w"], ["y"], name="mm")], [X],
                [tensor("y", [2, 5])], [("w", np.ones([4, 5], np.float32))])
    with pytest.raises(ShapeError) as info:
        build_and_run(bad)
    message = str(info.value)
    for part in ('"mm"', "MatMul", "f32[2,3]", "f32[4,5]"):
        assert part in message


def test_add_of_unbroadcastable_shapes_is_a_shape_error():
    bad = model([h.make_node("Add", ["x", "b"], ["y"], name="add")], [X, tensor("b", [4])], [Y])
    with pytest.raises(ShapeError, match='"add"'):
        build_and_run(bad)


def test_reshape_to_the_wrong_size_is_a_shape_error():
    bad = model([h.make_node("Reshape", ["x", "s"], ["y"], name="rs")], [X],
                [tensor("y", [5])], [("s", np.array([5], np.int64))])
    with pytest.raises(ShapeError, match='"rs"'):
        build_and_run(bad)


def test_declared_output_rank_that_the_graph_does_not_compute():
    bad = model([h.make_node("Relu", ["x"], ["y"])], [X], [tensor("y", [6])])
    with pytest.raises(TridentError, match="rank"):
        build_and_run(bad)


# --------------------------------------------------------------------- unsupported things ----
def test_uint32_input_is_unsupported_naming_value_and_node():
    bad = model([h.make_node("Abs", ["d"], ["y"], name="r")], [tensor("d", [2], T.UINT32)],
                [tensor("y", [2], T.UINT32)])
    with pytest.raises(UnsupportedError, match="""node "r".*'d'.*UINT32"""):
        import_onnx(bad)


def test_string_constant_is_unsupported():
    node = h.make_node("Constant", [], ["s"], value_strings=["a", "b"], name="c")
    bad = model([node, h.make_node("Identity", ["s"], ["y"])], [], [tensor("y", [2], T.STRING)])
    with pytest.raises(UnsupportedError, match='node "c".*string'):
        build_and_run(bad)


def test_cast_to_uint16_is_unsupported():
    bad = model([h.make_node("Cast", ["x"], ["y"], to=T.UINT16, name="cast")], [X],
                [tensor("y", [2, 3], T.UINT16)])
    with pytest.raises(UnsupportedError, match='"cast".*UINT16'):
        import_onnx(bad)


def test_data_dependent_shape_is_unsupported_and_says_how_to_bind_it():
    bad = model([h.make_node("Reshape", ["x", "s"], ["y"], name="rs")],
                [X, tensor("s", [2], T.INT64)], [tensor("y", [3, 2])])
    with pytest.raises(UnsupportedError, match="input 'shape' of node rs must be a constant"):
        build_and_run(bad)
    graph = import_onnx(bad, constant_inputs={"s": np.array([3, 2], np.int64)})
    assert graph.types["y"].shape == (3, 2)


# ------------------------------------------- bad models that used to reach codegen or the run ----
W = np.random.default_rng(0).standard_normal((4, 3, 3, 3)).astype(np.float32)
X4 = tensor("x4", [1, 3, 8, 8])


def conv_model(bias: np.ndarray) -> onnx.ModelProto:
    return model([h.make_node("Conv", ["x4", "w", "b"], ["y"], name="conv1")], [X4],
                 [tensor("y", [1, 4, 6, 6])], [("w", W), ("b", bias)])


def test_a_good_model_builds_and_runs():
    (y,) = build_and_run(conv_model(np.ones(4, np.float32)))
    assert tuple(y.shape) == (1, 4, 6, 6)


@pytest.mark.parametrize("bias,got", [(np.ones(5, np.float32), r"\[5\]"),
                                      (np.ones(3, np.float32), r"\[3\]"),
                                      (np.ones((4, 1), np.float32), r"\[4, 1\]")],
                         ids=["too-long", "too-short", "2-d"])
def test_conv_bias_that_does_not_match_the_output_channels(bias, got):
    """It used to build and read the bias out of bounds (onnxruntime refuses it)."""
    with pytest.raises(ShapeError) as info:
        build_and_run(conv_model(bias))
    message = str(info.value)
    for part in ('node "conv1"', "op Conv", "bias (input 2)", "expected [4]"):
        assert part in message
    assert re.search(got, message)


def test_symbolic_dim_without_a_batch_profile_says_how_to_give_one():
    """It used to raise TypeError from empty_strided in codegen."""
    m = model([h.make_node("Relu", ["x"], ["y"], name="r")], [tensor("x", ["N", 3])],
              [tensor("y", ["N", 3])])
    with pytest.raises(UnsupportedError, match=r"'x': f32\[N,3\].*batch=\(min, opt, max\)"):
        build_and_run(m)
    (y,) = build_and_run_at_batch(m, 2)
    assert tuple(y.shape) == (2, 3)


def build_and_run_at_batch(m, batch):
    engine = build_engine(m, precision="fp32", batch=batch)
    return engine(torch.randn(batch, 3))


@pytest.mark.parametrize("epsilon", [float("nan"), float("inf"), -1.0])
def test_layer_norm_epsilon_that_is_not_a_finite_nonnegative_number(epsilon):
    """A NaN epsilon used to be written into the kernel source as a bare `nan` (NameError)."""
    m = model([h.make_node("LayerNormalization", ["x", "g"], ["y"], name="ln", epsilon=epsilon)],
              [X], [Y], [("g", np.ones(3, np.float32))])
    with pytest.raises(ModelError) as info:
        build_and_run(m)
    for part in ('node "ln"', "op LayerNormalization", f"epsilon is {epsilon}", "finite"):
        assert part in str(info.value)


def test_node_name_that_is_not_utf8():
    """It used to raise TypeError inside the IR."""
    m = model([h.make_node("Relu", ["x"], ["y"], name="relu_node")], [X], [Y])
    data = m.SerializeToString()
    assert data.count(b"relu_node") == 1
    with pytest.raises(ModelError, match=r"node 0 \(op Relu\): name .* is not valid UTF-8"):
        build_and_run(data.replace(b"relu_node", b"relu\xff\xfeode"))


@pytest.mark.parametrize("shape", [[2**31, 1], [2**20, 2**20], [2**40, 1], [3, 2**31 + 5]])
def test_sizes_past_32_bit_indexing_are_refused_before_allocating(shape):
    """They used to fail in the allocator (or overflow the kernels' int32 offsets)."""
    m = model([h.make_node("Relu", ["x"], ["y"], name="r")], [tensor("x", shape)],
              [tensor("y", shape)])
    with pytest.raises(UnsupportedError) as info:
        build_and_run(m)
    for part in ("'x'", "graph input", "32-bit", "2,147,483,647"):
        assert part in str(info.value)


def test_intermediate_past_32_bit_indexing_names_its_node():
    m = model([h.make_node("Expand", ["x", "s"], ["y"], name="big")], [tensor("x", [1, 3])],
              [tensor("y", [2**16, 2**16, 3])], [("s", np.array([2**16, 2**16, 3], np.int64))])
    with pytest.raises(UnsupportedError, match=r'node "big".*32-bit'):
        build_and_run(m)


def test_model_of_another_domain_only_is_unsupported_naming_the_domain():
    graph = h.make_graph([h.make_node("Normalizer", ["x"], ["y"], name="n", domain="ai.onnx.ml")],
                         "ml", [X], [Y])
    m = h.make_model(graph, opset_imports=[h.make_opsetid("ai.onnx.ml", 3)])
    with pytest.raises(UnsupportedError, match=r"imports only ai.onnx.ml \(version 3\).*ai.onnx"):
        build_and_run(m)


def test_negative_dim_is_a_model_error_naming_input_and_axis():
    """It used to say 'too many symbolic dims ([])'."""
    m = model([h.make_node("Relu", ["x"], ["y"], name="r")], [tensor("x", [-1, 3])],
              [tensor("y", [-1, 3])])
    with pytest.raises(ModelError, match=r"graph input 'x' has dim -1 at axis 0; expected a size >= 0"):
        build_and_run(m)


# ----------------------------------------------------------------------- broken files ----
@pytest.mark.parametrize("data", [b"\x00garbage\xff" * 20, b"not an onnx model", b""])
def test_garbage_bytes_are_a_model_error(data):
    with pytest.raises(ModelError):
        build_and_run(data)


def test_truncated_file_is_a_model_error(tmp_path):
    m = model([h.make_node("MatMul", ["x", "w"], ["y"])], [X], [tensor("y", [2, 4])],
              [("w", np.random.default_rng(0).standard_normal([3, 4]).astype(np.float32))])
    data = m.SerializeToString()
    path = tmp_path / "truncated.onnx"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelError, match="truncated.onnx"):
        build_and_run(path)


def test_missing_file_and_wrong_argument_type():
    with pytest.raises(ModelError, match="no such file"):
        build_and_run("/nonexistent/model.onnx")
    with pytest.raises(TridentError, match="cannot import a int"):
        build_and_run(12345)
    with pytest.raises(ModelError, match="expects a path"):
        import_onnx(12345)


# ------------------------------------------------------------------------------- fuzzing ----
def seed_models() -> list[onnx.ModelProto]:
    """Small valid models that exercise many converters; the fuzzer's starting points."""
    rng = np.random.default_rng(0)
    f32 = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    i64 = lambda *v: np.array(v, np.int64)  # noqa: E731
    cnn = model(
        [h.make_node("Conv", ["x", "w", "b"], ["c"], pads=[1, 1, 1, 1], strides=[1, 1]),
         h.make_node("Relu", ["c"], ["r"]),
         h.make_node("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
         h.make_node("Flatten", ["p"], ["f"], axis=1),
         h.make_node("Gemm", ["f", "fw", "fb"], ["g"], transB=1, alpha=0.5),
         h.make_node("Softmax", ["g"], ["y"], axis=-1)],
        [tensor("x", ["N", 3, 8, 8])], [tensor("y", ["N", 10])],
        [("w", f32(4, 3, 3, 3)), ("b", f32(4)), ("fw", f32(10, 64)), ("fb", f32(10))])
    mlp = model(
        [h.make_node("Shape", ["x"], ["s"]), h.make_node("Gather", ["s", "zero"], ["n"], axis=0),
         h.make_node("Unsqueeze", ["n", "ax0"], ["n1"]),
         h.make_node("Concat", ["n1", "m1"], ["shape"], axis=0),
         h.make_node("Reshape", ["x", "shape"], ["flat"]),
         h.make_node("MatMul", ["flat", "w"], ["m"]),
         h.make_node("LayerNormalization", ["m", "g", "bb"], ["ln"], axis=-1),
         h.make_node("Slice", ["ln", "st", "en", "ax1"], ["sl"]),
         h.make_node("Transpose", ["sl"], ["tr"], perm=[1, 0]),
         h.make_node("ReduceMean", ["tr", "ax1"], ["rm"], keepdims=1),
         h.make_node("Clip", ["rm", "lo", "hi"], ["y"])],
        [tensor("x", [2, 3, 4])], [tensor("y", [3, 1])],
        [("zero", np.array(0, np.int64)), ("ax0", i64(0)), ("m1", i64(-1)), ("w", f32(12, 6)),
         ("g", f32(6)), ("bb", f32(6)), ("st", i64(1)), ("en", i64(4)), ("ax1", i64(1)),
         ("lo", np.array(-1, np.float32)), ("hi", np.array(1, np.float32))], opset=18)
    quant = model(
        [h.make_node("QuantizeLinear", ["x", "sc", "zp"], ["q"], axis=1),
         h.make_node("DequantizeLinear", ["q", "sc", "zp"], ["dq"], axis=1),
         h.make_node("Split", ["dq", "sp"], ["a", "b"], axis=1),
         h.make_node("Mul", ["a", "b"], ["mu"]),
         h.make_node("Where", ["cond", "mu", "a"], ["wh"]),
         h.make_node("Expand", ["wh", "es"], ["y"])],
        [tensor("x", [2, 4, 3]), tensor("cond", [2, 2, 3], T.BOOL)], [tensor("y", [2, 2, 2, 3])],
        [("sc", np.array([0.1, 0.2, 0.1, 0.3], np.float32)), ("zp", np.zeros(4, np.int8)),
         ("sp", i64(2, 2)), ("es", i64(2, 1, 1, 1))], opset=13)
    for m in (cnn, mlp, quant):
        onnx.checker.check_model(m)  # the seeds themselves are valid
        import_onnx(m)
    return [cnn, mlp, quant]


ELEM_TYPES = [v for v in T.DataType.values() if v != T.UNDEFINED]


def random_attribute_value(rnd: random.Random, attr: onnx.AttributeProto):
    small = [-3, -2, -1, 0, 1, 2, 3, 7, 100, 2**40]
    if attr.type == onnx.AttributeProto.INT:
        attr.i = rnd.choice(small)
    elif attr.type == onnx.AttributeProto.FLOAT:
        attr.f = rnd.choice([-1.0, 0.0, 1e-9, 0.5, 2.0, float("inf"), float("nan")])
    elif attr.type == onnx.AttributeProto.INTS:
        del attr.ints[:]
        attr.ints.extend(rnd.choice(small) for _ in range(rnd.randint(0, 5)))
    elif attr.type == onnx.AttributeProto.STRING:
        attr.s = rnd.choice([b"", b"SAME_UPPER", b"VALID", b"tanh", b"bogus"])


def mutate(m: onnx.ModelProto, rnd: random.Random) -> onnx.ModelProto | bytes:
    """One random corruption of `m` (or of its serialized bytes)."""
    m = copy.deepcopy(m)
    g = m.graph
    kind = rnd.choice(["drop_input", "del_attr", "alter_attr", "dims", "dtype", "init_dims",
                       "init_dtype", "truncate", "flip", "rename_input", "opset", "swap_nodes"])
    node = rnd.choice(g.node)
    if kind == "drop_input" and node.input:
        del node.input[rnd.randrange(len(node.input))]
    elif kind == "del_attr" and node.attribute:
        del node.attribute[rnd.randrange(len(node.attribute))]
    elif kind == "alter_attr" and node.attribute:
        random_attribute_value(rnd, rnd.choice(node.attribute))
    elif kind == "dims":
        dims = rnd.choice(g.input).type.tensor_type.shape.dim
        if dims:
            d = rnd.choice(dims)
            if rnd.random() < 0.8:
                d.dim_value = rnd.choice([0, 1, 2, 5, 64])
            else:
                d.dim_param = "sym"
    elif kind == "dtype":
        rnd.choice(g.input).type.tensor_type.elem_type = rnd.choice(ELEM_TYPES)
    elif kind == "init_dims" and g.initializer:
        init = rnd.choice(g.initializer)
        if init.dims:
            init.dims[rnd.randrange(len(init.dims))] = rnd.choice([0, 1, 2, 3, 100])
    elif kind == "init_dtype" and g.initializer:
        rnd.choice(g.initializer).data_type = rnd.choice(ELEM_TYPES)
    elif kind == "rename_input" and node.input:
        node.input[rnd.randrange(len(node.input))] = rnd.choice(["", "ghost", g.input[0].name])
    elif kind == "opset":
        m.opset_import[0].version = rnd.choice([1, 9, 12, 13, 18, 99])
    elif kind == "swap_nodes" and len(g.node) > 1:
        i, j = rnd.sample(range(len(g.node)), 2)
        a, b = copy.deepcopy(g.node[i]), copy.deepcopy(g.node[j])
        g.node[i].CopyFrom(b)
        g.node[j].CopyFrom(a)
    elif kind in ("truncate", "flip"):
        data = bytearray(m.SerializeToString())
        if kind == "truncate":
            return bytes(data[: rnd.randrange(len(data))])
        for _ in range(rnd.randint(1, 8)):
            data[rnd.randrange(len(data))] = rnd.randrange(256)
        return bytes(data)
    return m


@pytest.mark.parametrize("seed", range(6))
def test_fuzzed_models_raise_only_trident_errors(seed):
    rnd = random.Random(seed)
    seeds = seed_models()
    outcomes = {"imported": 0, "rejected": 0, "ran": 0, "refused at build or run": 0}
    for _ in range(120):
        mutated = rnd.choice(seeds)
        for _ in range(rnd.randint(1, 3)):  # stack a few corruptions
            if isinstance(mutated, bytes):
                break
            mutated = mutate(mutated, rnd)
        try:
            graph = import_onnx(mutated)
        except TridentError:
            outcomes["rejected"] += 1
            continue
        # anything trident accepts must be a well-formed IR graph, and build and run, or be
        # refused with a TridentError, never a raw exception or an out-of-bounds access
        graph.verify()
        outcomes["imported"] += 1
        batch = 2 if any(not graph.types[i].is_static for i in graph.inputs) else None
        try:
            engine = build_engine(mutated, precision="fp32", batch=batch)
            engine(*[random_tensor(s, d, torch.Generator().manual_seed(0)) for _, s, d in engine.input_specs()])
            outcomes["ran"] += 1
        except OutOfBoundsError:
            raise
        except TridentError:
            outcomes["refused at build or run"] += 1
    assert outcomes["rejected"] > 0 and outcomes["ran"] > 0, outcomes


def test_a_failing_compiler_stage_is_an_internal_error_naming_it(monkeypatch):
    """A bug of ours in a stage (here: code generation raising a ValueError) surfaces as a
    TridentError that names the stage and the graph, with the original as its cause; the
    torch.compile backend then runs that partition in torch and says why."""
    from trident.compiler import build as build_module
    from trident.compiler.errors import InternalError

    def broken(graph, groups):
        raise ValueError("not enough values to unpack")
    monkeypatch.setattr(build_module, "generate", broken)
    m = model([h.make_node("Relu", ["x"], ["y"])], [h.make_tensor_value_info("x", T.FLOAT, [2, 3])],
              [h.make_tensor_value_info("y", T.FLOAT, [2, 3])])
    with pytest.raises(InternalError, match="code generation failed on graph .*ValueError: not enough") as info:
        build_engine(m)
    assert isinstance(info.value.__cause__, ValueError)

    torch._dynamo.reset()
    fn = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.ReLU())
    x = torch.randn(2, 3)
    with pytest.warns(UserWarning, match="code generation failed"):
        got = torch.compile(fn, backend="trident")(x)
    torch.testing.assert_close(got, fn(x))
    torch._dynamo.reset()
