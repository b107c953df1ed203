"""The bundled models (trident.models), imported through both frontends and run on the reference
executor: every path must reproduce eager torch to a relative error of 1e-4 in fp32.

ONNX files come from torch.onnx.export's TorchScript exporter (dynamo=False): the dynamo-based
exporter needs the onnxscript package, which trident does not depend on.
"""
from __future__ import annotations

import functools
import inspect
import io
import warnings

import numpy as np
import pytest
import torch
from torch.utils._pytree import tree_flatten

from trident.compiler.frontend.fx import import_fx, supported_fx_target, user_input_indices
from trident.compiler.reference import run_reference
from trident.models import MODELS

# torch.export's own deprecation noise (pytree LeafSpec), not ours
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec.*:FutureWarning")

REL_TOL = 1e-4
SMALL = ["resnet_tiny", "bert_tiny", "mlp", "mlp_gelu", "inception_tiny", "multihead"]


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.double() - ref.double()).norm() / ref.double().norm()).item()


def assert_matches(outs, model, inputs) -> None:
    with torch.no_grad():
        refs = tree_flatten(model(*inputs))[0]
    assert len(outs) == len(refs)
    for out, ref in zip(outs, refs):
        assert out.shape == ref.shape and out.dtype == ref.dtype
        assert rel_err(out, ref) <= REL_TOL


@functools.lru_cache(maxsize=None)
def model(name: str):
    return MODELS[name][0]()


def inputs(name: str, batch: int = 2, **kw) -> tuple:
    return MODELS[name][1](batch, **kw)


def symbolic_trace(m: torch.nn.Module, n_inputs: int) -> torch.fx.GraphModule:
    """Trace with the optional forward() arguments that are not given fixed to their defaults."""
    params = list(inspect.signature(m.forward).parameters.values())[n_inputs:]
    return torch.fx.symbolic_trace(m, concrete_args={p.name: p.default for p in params} or None)


def dynamo_graph(m: torch.nn.Module, example: tuple):
    seen = {}

    def capture(gm, example_inputs):
        seen["gm"], seen["ex"] = gm, list(example_inputs)
        return gm.forward

    torch._dynamo.reset()
    torch.compile(m, backend=capture, fullgraph=True)(*example)
    return seen["gm"], seen["ex"]


# --------------------------------------------------------------------------- FX ----
@pytest.mark.parametrize("via", ["export", "symbolic", "dynamo"])
@pytest.mark.parametrize("name", SMALL)
def test_fx_import_matches_eager(name, via):
    m = model(name)
    example = inputs(name)
    if via == "dynamo":
        gm, ex = dynamo_graph(m, example)
        graph = import_fx(gm, ex)
        assert len(user_input_indices(gm, ex)) == len(example)
    elif via == "symbolic":
        gm = symbolic_trace(m, len(example))
        graph = import_fx(gm, example)
    else:
        gm, graph = None, import_fx(m, example)
    if gm is not None:  # the partitioner's cheap check agrees: nothing to cut out
        assert all(supported_fx_target(n) for n in gm.graph.nodes)
    graph.verify()
    fresh = inputs(name)
    assert_matches(run_reference(graph, fresh), m, fresh)


def test_bert_with_attention_mask():
    m = model("bert_tiny")
    example = inputs("bert_tiny", with_mask=True)
    graph = import_fx(m, example)
    assert graph.inputs == ["input_ids", "attention_mask"]
    fresh = inputs("bert_tiny", with_mask=True)
    assert_matches(run_reference(graph, fresh), m, fresh)
    # the mask matters: all-ones differs from a padded batch
    ones = (fresh[0], torch.ones_like(fresh[1]))
    assert not torch.allclose(run_reference(graph, ones)[0], run_reference(graph, fresh)[0])


def test_fp16_model():
    m = MODELS["resnet_tiny"][0]().half()
    graph = import_fx(m, inputs("resnet_tiny", dtype=torch.float16))
    x = inputs("resnet_tiny", dtype=torch.float16)
    (out,) = run_reference(graph, x)
    ref = m.float()(x[0].float())
    assert out.dtype == torch.float16
    assert rel_err(out, ref) <= 1e-2  # eager fp16 vs trident fp16, both against fp32


@pytest.mark.parametrize("name, kw", [("resnet50", {"size": 64}), ("bert_base", {"seq": 16})])
def test_full_size_model_through_reference(name, kw):
    m = model(name)
    graph = import_fx(m, inputs(name, batch=1, **kw))
    fresh = inputs(name, batch=1, **kw)
    assert_matches(run_reference(graph, fresh), m, fresh)


# ------------------------------------------------------------------------- ONNX ----
def onnx_bytes(m: torch.nn.Module, example: tuple, names: list[str]) -> bytes:
    f = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript exporter is deprecated, still works
        torch.onnx.export(m, example, f, dynamo=False, opset_version=17, input_names=names)
    return f.getvalue()


def onnx_case(name: str, **kw):
    m = model(name)
    example = inputs(name, **kw)
    params = list(inspect.signature(m.forward).parameters)
    names = params[:len(example)] if len(params) >= len(example) else \
        [f"input{i}" for i in range(len(example))]
    return m, example, names, onnx_bytes(m, example, names)


@pytest.mark.parametrize("name", SMALL)
def test_onnx_export_runs_in_onnxruntime(name):
    """The exported files are sound: onnxruntime reproduces eager torch on them."""
    ort = pytest.importorskip("onnxruntime")
    m, example, names, blob = onnx_case(name)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1  # idle ORT threads spin and slow the rest of the session
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    session = ort.InferenceSession(blob, options, providers=["CPUExecutionProvider"])
    fresh = inputs(name)
    outs = session.run(None, {n: x.numpy() for n, x in zip(names, fresh)})
    del session
    assert_matches([torch.from_numpy(np.asarray(o)) for o in outs], m, fresh)


@pytest.mark.parametrize("name", SMALL)
def test_onnx_import_matches_eager(name):
    onnx_frontend = pytest.importorskip("trident.compiler.frontend.onnx")
    m, example, names, blob = onnx_case(name)
    graph = onnx_frontend.import_onnx(blob)
    graph.verify()
    assert graph.inputs == names
    fresh = inputs(name)
    assert_matches(run_reference(graph, fresh), m, fresh)


@pytest.mark.parametrize("name, kw", [
    ("resnet50", {"size": 64}),
    pytest.param("bert_base", {"seq": 16}, marks=pytest.mark.slow),  # ~15 s: export + import
])
def test_onnx_import_full_size_model(name, kw):
    onnx_frontend = pytest.importorskip("trident.compiler.frontend.onnx")
    m, example, names, blob = onnx_case(name, batch=1, **kw)
    graph = onnx_frontend.import_onnx(blob)
    fresh = inputs(name, batch=1, **kw)
    assert_matches(run_reference(graph, fresh), m, fresh)


def test_onnx_import_bert_with_mask():
    onnx_frontend = pytest.importorskip("trident.compiler.frontend.onnx")
    m, example, names, blob = onnx_case("bert_tiny", with_mask=True)
    graph = onnx_frontend.import_onnx(blob)
    fresh = inputs("bert_tiny", with_mask=True)
    assert_matches(run_reference(graph, fresh), m, fresh)


# --------------------------------------------------------------------- registry ----
@pytest.mark.parametrize("name", SMALL)
def test_registry_entries(name):
    ctor, make_inputs = MODELS[name]
    state = torch.random.get_rng_state()
    a, b = ctor(), ctor()
    assert torch.equal(torch.random.get_rng_state(), state)  # construction leaves the RNG alone
    assert not a.training
    for (ka, va), (kb, vb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert ka == kb and torch.equal(va, vb)  # deterministic weights
    x1, x2 = make_inputs(3), make_inputs(3)
    assert isinstance(x1, tuple) and x1[0].shape[0] == 3
    assert not torch.equal(x1[0], x2[0])  # fresh random data each call
    if x1[0].is_floating_point():
        assert make_inputs(1, dtype=torch.float16)[0].dtype == torch.float16


def test_resnet50_is_the_torchvision_architecture():
    m = model("resnet50")
    assert sum(p.numel() for p in m.parameters()) == 25_557_032  # torchvision's count
    assert m.layer2[0].conv2.stride == (2, 2) and m.layer2[0].conv1.stride == (1, 1)  # v1.5
    assert m(inputs("resnet50", batch=1, size=64)[0]).shape == (1, 1000)


def test_bert_base_size():
    m = model("bert_base")
    assert sum(p.numel() for p in m.parameters()) == 108_891_648  # BERT-base without pooler
    assert m(inputs("bert_base", batch=1, seq=8)[0]).shape == (1, 8, 768)
