"""End-to-end model checks on the GPU (skipped without CUDA)."""
import pytest
import torch

from trident.compiler import build_engine
from trident.models import MODELS

pytestmark = pytest.mark.gpu


def rel_err(got, ref):
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


def test_resnet50_fp16_224_accuracy_and_kernel_count():
    build, _ = MODELS["resnet50"]
    model = build().eval().cuda()
    x = torch.randn(2, 3, 224, 224, device="cuda")
    with torch.no_grad():
        ref = model(x)
    engine = build_engine(model, precision="fp16", example_inputs=(x,))
    out = engine(x)[0]
    assert engine.num_kernels <= 56, engine.num_kernels  # 55: the downsample shares conv1's launch
    assert rel_err(out, ref) <= 1e-2


@pytest.mark.parametrize("precision,tol", [("fp32", 1e-4), ("fp16", 1e-2)])
def test_bert_base_matches_torch(precision, tol):
    build, make_inputs = MODELS["bert_base"]
    model = build().eval().cuda()
    inputs = tuple(x.cuda() for x in make_inputs(2))
    with torch.no_grad():
        ref = model(*inputs)
    engine = build_engine(model, precision=precision, example_inputs=inputs)
    assert rel_err(engine(*inputs)[0], ref) <= tol


def test_cuda_graph_replay_matches_eager_launches():
    build, make_inputs = MODELS["resnet_tiny"]
    model = build().eval().cuda()
    (x,) = (t.cuda() for t in make_inputs(4))
    engine = build_engine(model, precision="fp16", example_inputs=(x,))
    replayed = [engine(x)[0].clone() for _ in range(2)]
    engine.cuda_graph = False
    direct = engine(x)[0]
    torch.testing.assert_close(replayed[0], direct, rtol=0, atol=0)
    torch.testing.assert_close(replayed[1], direct, rtol=0, atol=0)
    y = torch.randn_like(x)  # new data through the same captured graph
    engine.cuda_graph = True
    torch.testing.assert_close(engine(y)[0].clone(), build_engine(model, "fp16", (y,))(y)[0])
