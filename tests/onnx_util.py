"""Helpers of the ONNX tests: build small models with onnx.helper, feed them fresh random data,
run them through trident's engine (or reference executor) and through onnxruntime, compare."""
from __future__ import annotations

import numpy as np
import onnx
import torch
from onnx import TensorProto as T
from onnx import helper as h
from onnx import numpy_helper

F32 = np.float32
NP_TO_ONNX = {np.dtype(np.float32): T.FLOAT, np.dtype(np.float16): T.FLOAT16,
              np.dtype(np.float64): T.DOUBLE, np.dtype(np.int64): T.INT64,
              np.dtype(np.int32): T.INT32, np.dtype(np.int16): T.INT16,
              np.dtype(np.int8): T.INT8, np.dtype(np.uint8): T.UINT8, np.dtype(np.bool_): T.BOOL}
# Per precision (rtol, atol) for engine outputs of magnitude ~1 against onnxruntime (fp32).
TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (1e-2, 1e-2)}


def node(op, inputs, outputs=("y",), **attrs):
    return h.make_node(op, list(inputs), list(outputs), **attrs)


def _value_info(name: str, dtype, shape) -> onnx.ValueInfoProto:
    return h.make_tensor_value_info(name, NP_TO_ONNX[np.dtype(dtype)], shape)


def make_model(nodes, inputs: dict, outputs: list[str] | dict, initializers: dict | None = None,
               opset: int = 17) -> onnx.ModelProto:
    """inputs: name -> (np dtype, shape); outputs: names (typed by ONNX shape inference) or
    name -> (np dtype, shape) where shape inference cannot type them (function ops)."""
    graph_inputs = {n: _value_info(n, d, s) for n, (d, s) in inputs.items()}
    typed = outputs if isinstance(outputs, dict) else {}
    graph = h.make_graph(
        nodes, "test", list(graph_inputs.values()),
        [graph_inputs.get(n) or (_value_info(n, *typed[n]) if n in typed
                                 else onnx.ValueInfoProto(name=n)) for n in outputs],
        [numpy_helper.from_array(np.asarray(v), n) for n, v in (initializers or {}).items()])
    return onnx.shape_inference.infer_shapes(model_of(graph, opset))


def model_of(graph: onnx.GraphProto, opset: int) -> onnx.ModelProto:
    """The model of one graph, at an IR version every onnxruntime the tests meet can read (a newer
    onnx writes its own, which an older onnxruntime refuses)."""
    model = h.make_model(graph, opset_imports=[h.make_opsetid("", opset)])
    model.ir_version = 8
    return model


def random_inputs(model: onnx.ModelProto, rng: np.random.Generator, sizes: dict | None = None):
    """Fresh random data, never zeros: floats away from 0 (Log, Sqrt and Div stay finite)."""
    feeds = {}
    inits = {t.name for t in model.graph.initializer}
    for v in model.graph.input:
        if v.name in inits:
            continue
        tt = v.type.tensor_type
        shape = [d.dim_value if d.HasField("dim_value") else (sizes or {}).get(d.dim_param, 3)
                 for d in tt.shape.dim]
        dtype = onnx.helper.tensor_dtype_to_np_dtype(tt.elem_type)
        if dtype == np.bool_:
            feeds[v.name] = rng.random(shape) > 0.5
        elif np.issubdtype(dtype, np.integer):
            feeds[v.name] = rng.integers(-5 if dtype != np.uint8 else 0, 6, shape).astype(dtype)
        else:
            feeds[v.name] = (rng.standard_normal(shape) + 0.1).astype(dtype)
    return feeds


def run_ort(model: onnx.ModelProto, feeds: dict) -> list[np.ndarray]:
    import onnxruntime as ort

    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, feeds)


def assert_close(got, want, rtol: float, atol: float, what: str = "output") -> None:
    """Same shape and dtype; floats within tolerance (NaN where NaN), the rest exactly equal."""
    got = got.detach().cpu().numpy() if isinstance(got, torch.Tensor) else np.asarray(got)
    want = np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype}, expected {want.dtype}"
    if np.issubdtype(want.dtype, np.floating):
        np.testing.assert_allclose(got.astype(np.float64), want.astype(np.float64), rtol=rtol,
                                   atol=atol, equal_nan=True, err_msg=what)
    else:
        np.testing.assert_array_equal(got, want, err_msg=what)


def check_engine(model: onnx.ModelProto, feeds: dict | None = None, precision: str = "fp32",
                 expected: list | None = None, tol: tuple[float, float] | None = None,
                 seed: int = 0, device: str | None = None, **build_options):
    """Build `model` with trident, run the engine (on the GPU where there is one, else on the CPU
    in Triton's interpreter), and compare every output with `expected` (default: onnxruntime on
    the same feeds). Returns the engine."""
    from trident.compiler import build_engine

    feeds = feeds if feeds is not None else random_inputs(model, np.random.default_rng(seed))
    engine = build_engine(model, precision=precision, device=device, **build_options)
    got = engine(*[torch.from_numpy(np.array(feeds[n])).to(engine.device) for n in engine.inputs])
    expected = run_ort(model, feeds) if expected is None else expected
    assert len(got) == len(expected)
    rtol, atol = tol or TOLERANCES[precision]
    for k, (g, e) in enumerate(zip(got, expected)):
        assert_close(g, e, rtol, atol, f"output {k} at {precision}")
    return engine


def torch_steps(engine) -> list[str]:
    """The ops of the steps an engine runs through torch (its fallbacks)."""
    return [s.node.op for s in engine.plan.steps if s.kind == "torch"]


def _trace(model: onnx.ModelProto, precision: str):
    from trident.compiler import build_engine
    from trident.compiler.build import BuildTrace

    trace = BuildTrace()
    build_engine(model, precision=precision, trace=trace)
    return trace


def compiled_ops(model: onnx.ModelProto, precision: str = "fp32") -> list[str]:
    """The ops of the IR graph that codegen saw (after the passes), in order."""
    return [n.op for n in _trace(model, precision).program.graph.nodes]


def group_kinds(model: onnx.ModelProto, precision: str = "fp32") -> list[str]:
    """The kinds of the fusion groups the build made ('reduction', 'pointwise', 'torch', ...)."""
    return [g.kind for g in _trace(model, precision).groups]
