"""The kernel expressions and reduction bodies of the ONNX ops, compiled for the GPU (not the
interpreter), against onnxruntime at fp32 and fp16; and the torch-only ops inside a CUDA graph."""
from __future__ import annotations

import numpy as np
import pytest

from onnx_util import F32, check_engine, make_model, node, torch_steps
from test_onnx_elementwise import SHAPE, UNARY, _floats

pytestmark = pytest.mark.gpu
pytest.importorskip("onnxruntime")


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("op", sorted(UNARY) + ["Tanh", "Acosh"])
def test_unary_kernels_on_the_gpu(op, precision):
    reach, specials = UNARY.get(op, (3, True))
    low = 1.0 if op == "Acosh" else -reach
    x = _floats(np.random.default_rng(1), low, reach, specials and precision == "fp32"
                and op != "Acosh")
    model = make_model([node(op, ["x"])], {"x": (F32, SHAPE)}, ["y"], opset=18)
    engine = check_engine(model, {"x": x}, precision, device="cuda")
    assert not torch_steps(engine)


@pytest.mark.parametrize("op, dtype", [("Mod", np.int32), ("Mod", F32), ("BitwiseXor", np.int16),
                                       ("BitShift", np.uint8), ("And", np.bool_),
                                       ("LessOrEqual", np.int64), ("PRelu", F32)])
def test_binary_kernels_on_the_gpu(op, dtype):
    attrs = {"direction": "LEFT"} if op == "BitShift" else {}
    rng = np.random.default_rng(2)
    if dtype == np.bool_:
        a, b = rng.random(SHAPE) > 0.5, rng.random(SHAPE) > 0.5
    elif np.issubdtype(dtype, np.integer):
        a = rng.integers(0 if dtype == np.uint8 else -40, 40, SHAPE).astype(dtype)
        b = rng.integers(1, 7, SHAPE).astype(dtype)
    else:
        a, b = rng.uniform(-5, 5, SHAPE).astype(F32), rng.uniform(0.5, 2, SHAPE).astype(F32)
    if op == "Mod":
        attrs["fmod"] = int(dtype == F32)
    model = make_model([node(op, ["a", "b"], **attrs)], {"a": (dtype, SHAPE), "b": (dtype, SHAPE)},
                       ["y"], opset=18)
    assert not torch_steps(check_engine(model, {"a": a, "b": b}, device="cuda"))


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("op", ["ReduceMin", "ReduceProd", "ReduceLogSumExp", "ArgMax", "ArgMin",
                                "LogSoftmax", "Hardmax"])
def test_reduction_kernels_on_the_gpu(op, precision):
    attrs = {"axis": 1} if op in ("ArgMax", "ArgMin", "LogSoftmax", "Hardmax") else {"keepdims": 1}
    inputs, inits = ["x"], {}
    if op.startswith("Reduce"):
        inputs.append("axes")
        inits["axes"] = np.array([1], np.int64)
    model = make_model([node(op, inputs, **attrs)], {"x": (F32, [6, 300, 5])}, ["y"],
                       initializers=inits, opset=18)
    x = np.random.default_rng(3).uniform(0.9, 1.1, [6, 300, 5]).astype(F32)
    if precision == "fp16":  # the engine's values: ties that fp16 makes pick the first index
        x = x.astype(np.float16).astype(F32)
    engine = check_engine(model, {"x": x}, precision, device="cuda",
                          tol=(3e-2, 3e-2) if precision == "fp16" else None)
    assert not torch_steps(engine)


def test_rms_norm_kernel_on_the_gpu():
    model = make_model([node("RMSNormalization", ["x", "s"], axis=-1)],
                       {"x": (F32, [4, 9, 768]), "s": (F32, [768])}, {"y": (F32, [4, 9, 768])},
                       opset=23)
    x = np.random.default_rng(4).standard_normal([4, 9, 768]).astype(F32)
    s = np.random.default_rng(5).standard_normal([768]).astype(F32)
    expected = x / np.sqrt((x.astype(np.float64) ** 2).mean(-1, keepdims=True) + 1e-5) * s
    check_engine(model, {"x": x, "s": s}, expected=[expected.astype(F32)], device="cuda")


@pytest.mark.parametrize("op", ["MaxPool", "Resize", "GatherElements", "CumSum"])
def test_torch_ops_inside_a_cuda_graph(op):
    """The engine captures a CUDA graph: torch-only ops must build nothing on the host."""
    x = (F32, [2, 3, 8, 8])
    spec = {
        "MaxPool": ([node("MaxPool", ["x"], ["y", "i"], kernel_shape=[2, 2])], {"x": x}, ["y", "i"], {}),
        "Resize": ([node("Resize", ["x", "", "s"], mode="linear")], {"x": x}, ["y"],
                   {"s": np.array([1, 1, 1.5, 2], F32)}),
        "GatherElements": ([node("GatherElements", ["x", "i"], axis=3)], {"x": x}, ["y"],
                           {"i": np.random.default_rng(6).integers(-8, 8, [2, 3, 8, 4])}),
        "CumSum": ([node("CumSum", ["x", "a"])], {"x": x}, ["y"], {"a": np.array(2, np.int64)}),
    }[op]
    engine = check_engine(make_model(spec[0], spec[1], spec[2], initializers=spec[3]),
                          device="cuda")
    feeds = np.random.default_rng(7).standard_normal([2, 3, 8, 8]).astype(F32)
    import torch

    first = [t.clone() for t in engine(torch.from_numpy(feeds).cuda())]  # the replay
    second = engine(torch.from_numpy(feeds).cuda())
    for a, b in zip(first, second):
        assert torch.equal(a, b)
