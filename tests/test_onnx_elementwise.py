"""ONNX elementwise ops through build_engine and the generated kernels (Triton's interpreter on the
CPU), against onnxruntime: rounding, trigonometry, NaN / inf tests, activations, remainders,
comparisons, logical and bitwise ops, variadic ops. Each runs as a fused pointwise kernel."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, make_model, node, torch_steps

pytest.importorskip("onnxruntime")

SHAPE = [3, 37]  # not a multiple of any block
SPECIALS = np.array([np.nan, np.inf, -np.inf, 0.0, -0.0, 0.5, -0.5, 1.5, 2.5, -2.5], F32)


def _floats(rng, low=-3.0, high=3.0, specials=True):
    x = rng.uniform(low, high, SHAPE).astype(F32)
    if specials:
        x.reshape(-1)[:SPECIALS.size] = SPECIALS
    return x


def _kernel_only(engine):
    assert not torch_steps(engine), f"ran through torch: {torch_steps(engine)}"


# op -> (input range, whether NaN / inf / ties are in its domain for onnxruntime's kernels)
UNARY = {"Floor": (3, True), "Ceil": (3, True), "Round": (3, True), "Sign": (3, True),
         "Sin": (3, False), "Cos": (3, False), "Tan": (1.2, False), "Sinh": (3, False),
         "Cosh": (3, False), "Asinh": (30, False), "Atanh": (0.99, False), "IsNaN": (3, True),
         "Softplus": (25, False), "Softsign": (3, True), "Mish": (8, False),
         "Elu": (3, False), "Celu": (3, False), "Selu": (3, False)}


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("op", sorted(UNARY))
def test_unary_kernel(op, precision):
    reach, specials = UNARY[op]
    x = _floats(np.random.default_rng(1), -reach, reach, specials and precision == "fp32")
    x.reshape(-1)[-3:] = [1e-6, -1e-4, 3e-3]  # near 0, where cancellation would show
    model = make_model([node(op, ["x"])], {"x": (F32, SHAPE)}, ["y"], opset=18)
    engine = check_engine(model, {"x": x}, precision)
    _kernel_only(engine)


def test_acosh_and_small_arguments():
    rng = np.random.default_rng(2)
    x = rng.uniform(1.0, 50.0, SHAPE).astype(F32)
    x.reshape(-1)[:2] = [1.0, 1.0001]
    _kernel_only(check_engine(make_model([node("Acosh", ["x"])], {"x": (F32, SHAPE)}, ["y"]),
                              {"x": x}))


@pytest.mark.parametrize("op", ["Asin", "Acos", "Atan"])
def test_inverse_trig(op):
    # kernels/prims.py: the domain's ends (+-pi/2, 0 and pi) and signed zeros; atan far out too
    x = np.random.default_rng(3).uniform(-1, 1, SHAPE).astype(F32)
    x.reshape(-1)[:4] = [1.0, -1.0, 0.0, -0.0]
    if op == "Atan":
        x *= 40.0
    _kernel_only(check_engine(make_model([node(op, ["x"])], {"x": (F32, SHAPE)}, ["y"]), {"x": x}))


@pytest.mark.parametrize("attrs", [{}, {"detect_positive": 0}, {"detect_negative": 0}])
def test_is_inf(attrs):
    x = _floats(np.random.default_rng(4))
    model = make_model([node("IsInf", ["x"], **attrs)], {"x": (F32, SHAPE)}, ["y"], opset=20)
    _kernel_only(check_engine(model, {"x": x}))


@pytest.mark.parametrize("op, attrs", [("ThresholdedRelu", {"alpha": 0.7}), ("Shrink", {}),
                                       ("Shrink", {"lambd": 1.2, "bias": 0.3}),
                                       ("Elu", {"alpha": 0.4}), ("Celu", {"alpha": 2.5}),
                                       ("Selu", {"alpha": 1.5, "gamma": 0.8})])
def test_activation_attributes(op, attrs):
    x = _floats(np.random.default_rng(5), specials=False)
    _kernel_only(check_engine(make_model([node(op, ["x"], **attrs)], {"x": (F32, SHAPE)}, ["y"]),
                              {"x": x}))


@pytest.mark.parametrize("slope_shape", [[1], [37], [3, 1]])
def test_prelu_broadcasts_the_slope(slope_shape):
    model = make_model([node("PRelu", ["x", "s"])], {"x": (F32, SHAPE), "s": (F32, slope_shape)},
                       ["y"])
    _kernel_only(check_engine(model))


INT_TYPES = [np.int8, np.int16, np.int32, np.int64, np.uint8]


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("fmod", [0, 1])
def test_integer_mod_signs(dtype, fmod):
    rng = np.random.default_rng(6)
    low = 0 if dtype == np.uint8 else -50
    a = rng.integers(low, 50, SHAPE).astype(dtype)
    b = rng.integers(1, 9, SHAPE).astype(dtype)
    if dtype != np.uint8:
        b = b * rng.choice(np.array([-1, 1], dtype), SHAPE)
    model = make_model([node("Mod", ["a", "b"], fmod=fmod)],
                       {"a": (dtype, SHAPE), "b": (dtype, SHAPE)}, ["y"])
    expected = np.fmod(a, b) if fmod else np.mod(a, b)
    _kernel_only(check_engine(model, {"a": a, "b": b}, expected=[expected]))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("fmod", [0, 1])
def test_float_mod_against_numpy(fmod, precision):
    """fmod=0 on floats is Python's % (allowed since opset 28; onnxruntime refuses it)."""
    rng = np.random.default_rng(7)
    a = rng.uniform(-9, 9, SHAPE).astype(F32)
    b = rng.uniform(0.5, 3, SHAPE).astype(F32) * rng.choice(np.array([-1, 1], F32), SHAPE)
    if precision == "fp16":  # compare on the values the fp16 engine sees
        a, b = a.astype(np.float16).astype(F32), b.astype(np.float16).astype(F32)
    model = make_model([node("Mod", ["a", "b"], fmod=fmod)],
                       {"a": (F32, SHAPE), "b": (F32, SHAPE)}, ["y"])
    expected = np.fmod(a, b) if fmod else np.mod(a, b)
    _kernel_only(check_engine(model, {"a": a, "b": b}, precision, expected=[expected],
                              tol=(1e-3, 2e-2) if precision == "fp16" else None))


@pytest.mark.parametrize("op", ["And", "Or", "Xor"])
def test_logical(op):
    model = make_model([node(op, ["a", "b"])], {"a": (np.bool_, SHAPE), "b": (np.bool_, [37])},
                       ["y"])
    _kernel_only(check_engine(model))


@pytest.mark.parametrize("dtype", INT_TYPES)
@pytest.mark.parametrize("op", ["BitwiseAnd", "BitwiseOr", "BitwiseXor", "BitwiseNot"])
def test_bitwise(op, dtype):
    rng = np.random.default_rng(8)
    info = np.iinfo(dtype)
    feeds = {n: rng.integers(info.min, info.max, SHAPE, dtype=dtype, endpoint=True)
             for n in ("a", "b")}
    inputs = ["a"] if op == "BitwiseNot" else ["a", "b"]
    model = make_model([node(op, inputs)], {n: (dtype, SHAPE) for n in inputs}, ["y"], opset=18)
    _kernel_only(check_engine(model, {n: feeds[n] for n in inputs}))


@pytest.mark.parametrize("direction", ["LEFT", "RIGHT"])
def test_bit_shift_uint8(direction):
    rng = np.random.default_rng(9)
    x = rng.integers(0, 256, SHAPE).astype(np.uint8)
    s = rng.integers(0, 8, SHAPE).astype(np.uint8)
    model = make_model([node("BitShift", ["x", "s"], direction=direction)],
                       {"x": (np.uint8, SHAPE), "s": (np.uint8, SHAPE)}, ["y"])
    _kernel_only(check_engine(model, {"x": x, "s": s}))


@pytest.mark.parametrize("dtype", [F32, np.int32, np.int64, np.int16])
@pytest.mark.parametrize("op", ["LessOrEqual", "GreaterOrEqual"])
def test_ordered_comparisons(op, dtype):
    rng = np.random.default_rng(10)
    a = rng.integers(-3, 4, SHAPE).astype(dtype)
    b = rng.integers(-3, 4, [37]).astype(dtype)  # many ties
    model = make_model([node(op, ["a", "b"])], {"a": (dtype, SHAPE), "b": (dtype, [37])}, ["y"])
    _kernel_only(check_engine(model, {"a": a, "b": b}))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("op", ["Mean", "Max", "Min", "Sum"])
def test_variadic(op, precision):
    shapes = {"a": SHAPE, "b": [37], "c": [3, 1]}
    model = make_model([node(op, list(shapes))], {n: (F32, s) for n, s in shapes.items()}, ["y"])
    _kernel_only(check_engine(model, precision=precision))


def test_new_elementwise_ops_fuse_into_one_kernel():
    """floor(x) * sign(x) + softplus(x) >= 0: every op of the chain in one pointwise kernel."""
    model = make_model([node("Floor", ["x"], ["f"]), node("Sign", ["x"], ["s"]),
                        node("Mul", ["f", "s"], ["m"]), node("Softplus", ["x"], ["p"]),
                        node("Add", ["m", "p"], ["a"]), node("GreaterOrEqual", ["a", "z"])],
                       {"x": (F32, SHAPE)}, ["y"], initializers={"z": np.zeros([], F32)})
    engine = check_engine(model)
    assert engine.num_kernels == 1
