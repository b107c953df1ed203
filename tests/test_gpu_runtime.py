"""The runtime on a GPU (skipped without CUDA): streams, CUDA graphs per
batch size, dynamic batch, the arena under replay, engine files and the torch.compile backend."""
import pytest
import torch

from trident.compiler import build_engine
from trident.models import MODELS
from trident.runtime.engine import Engine

pytestmark = pytest.mark.gpu


def rel_err(got, ref):
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


def model_and_inputs(name, batch, **kw):
    build, make_inputs = MODELS[name]
    return build().eval().cuda(), tuple(x.cuda() for x in make_inputs(batch, **kw))


@pytest.mark.parametrize("name", ["inception_tiny", "multihead", "resnet_tiny"])
@pytest.mark.parametrize("graphs", [True, False])
def test_streams_give_identical_results(name, graphs):
    model, x = model_and_inputs(name, 4)
    multi = build_engine(model, "fp16", x)
    single = Engine(multi.plan, streams=1)
    if name != "resnet_tiny":
        assert multi.num_streams > 1
    multi.cuda_graph = single.cuda_graph = graphs
    for _ in range(3):  # fresh data each time, through the same captured graphs
        x = tuple(torch.randn_like(t) for t in x)
        a = [t.clone() for t in multi(*x)]
        b = [t.clone() for t in single(*x)]
        assert all(torch.equal(p, q) for p, q in zip(a, b))
    with torch.no_grad():
        ref = model(*x)
    ref = ref if isinstance(ref, tuple) else (ref,)
    assert max(rel_err(p, r) for p, r in zip(a, ref)) <= 1e-2


def test_one_cuda_graph_per_batch_size():
    model, x = model_and_inputs("resnet_tiny", 4)
    engine = build_engine(model, "fp16", x, batch=(1, 4, 16))
    build, make_inputs = MODELS["resnet_tiny"]
    first = {}
    for batch in (1, 4, 16, 1, 7, 16, 4, 7):  # a shape is captured the second time it is seen
        x = make_inputs(batch)[0].cuda()
        out = engine(x)[0].clone()
        with torch.no_grad():
            assert rel_err(out, model(x)) <= 1e-2
        engine.cuda_graph = False
        assert torch.equal(out, engine(x)[0])  # the replay computes what direct launches do
        engine.cuda_graph = True
        first.setdefault(batch, out)
    assert engine.captured_shapes == {(1,), (4,), (7,), (16,)}


def test_dynamic_batch_bert_fp16():
    model, x = model_and_inputs("bert_tiny", 8)
    engine = build_engine(model, "fp16", x, batch=(1, 8, 32))
    build, make_inputs = MODELS["bert_tiny"]
    for batch in (1, 3, 32):
        ids = make_inputs(batch)[0].cuda()
        with torch.no_grad():
            assert rel_err(engine(ids)[0], model(ids)) <= 1e-2


def test_resnet50_dynamic_profile_matches_static():
    model, x = model_and_inputs("resnet50", 2, size=224)
    dynamic = build_engine(model, "fp16", x, batch=(1, 8, 32))
    build, make_inputs = MODELS["resnet50"]
    for batch in (1, 8, 32):
        xb = make_inputs(batch, size=224)[0].cuda()
        with torch.no_grad():
            assert rel_err(dynamic(xb)[0], model(xb)) <= 1e-2


def test_arena_and_outputs_under_replay():
    """Outputs live outside the arena: a replay at another batch size leaves them alone."""
    model, x = model_and_inputs("multihead", 4)
    engine = build_engine(model, "fp32", x, batch=(1, 4, 8))
    a = engine(*x)
    kept = [t.clone() for t in a]
    engine(torch.randn(8, 64, device="cuda"))
    assert all(torch.equal(p, q) for p, q in zip(a, kept))
    r = engine.memory_report()
    assert 0 < r["arena_bytes"] <= r["intermediate_bytes"]


def test_engine_file_round_trip_on_gpu(tmp_path):
    from trident.compiler.build import load_engine
    from trident.runtime.format import read_engine_file

    model, x = model_and_inputs("resnet_tiny", 4)
    engine = build_engine(model, "fp16", x, batch=(1, 4, 8))
    path = tmp_path / "r.engine"
    engine.save(path)
    header, _ = read_engine_file(path)
    assert header["device"]["name"] == torch.cuda.get_device_name()
    loaded = load_engine(path)
    for batch in (2, 8):
        xb = torch.randn(batch, 3, 32, 32, device="cuda")
        assert torch.equal(engine(xb)[0], loaded(xb)[0])


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_dynamo_backend_on_gpu(precision, tol, monkeypatch):
    # The eager reference must be true fp32: cuDNN convolutions default to TF32 on this GPU.
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    torch._dynamo.reset()
    model, x = model_and_inputs("resnet_tiny", 4)
    compiled = torch.compile(model, backend="trident", options={"precision": precision})
    for batch in (4, 2, 4):
        xb = torch.randn(batch, 3, 32, 32, device="cuda")
        with torch.inference_mode():
            first = compiled(xb)
            second = compiled(torch.randn_like(xb))
            assert rel_err(first, model(xb)) <= tol  # not overwritten by the second call
            assert second.shape == first.shape
    torch._dynamo.reset()
