"""INT8 on the GPU (skipped without CUDA): the int8 GEMM against
torch._int_mm, the full ResNet-50 and BERT-base against fp32, and the digits CNN's accuracy with
real int8 engines. (tests/test_int8.py also runs on the GPU: its engines then use the GPU.)"""
import pytest
import torch
import torch.nn.functional as F

from trident.compiler import build_engine
from trident.models import MODELS

pytestmark = pytest.mark.gpu


def cosine(a, b) -> float:
    return float(F.cosine_similarity(a.flatten().double(), b.flatten().double(), 0))


@pytest.mark.parametrize("M,N,K", [(1024, 2048, 4096), (4096, 4096, 4096), (333, 1000, 768)])
def test_int8_gemm_k_major_equals_int_mm(M, N, K):
    from trident.kernels.matmul import matmul

    g = torch.Generator(device="cuda").manual_seed(0)
    a = torch.randint(-127, 128, (M, K), device="cuda", dtype=torch.int8, generator=g)
    b_nk = torch.randint(-127, 128, (N, K), device="cuda", dtype=torch.int8, generator=g)
    ours = matmul(a, b_nk, b_k_major=True)
    if M > 16 and K % 8 == 0 and N % 8 == 0:
        assert torch.equal(ours, torch._int_mm(a, b_nk.t()))
    else:
        assert torch.equal(ours.long(), (a.long().cpu() @ b_nk.long().cpu().t()).cuda())


def _calibration(make_inputs, batch, count=4, seed=0):
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return [tuple(x.cuda() for x in make_inputs(batch)) for _ in range(count)]


@pytest.mark.parametrize("name,batch", [("resnet50", 8), ("bert_base", 4)])
@pytest.mark.parametrize("calibrator", ["entropy2", "minmax"])
def test_full_models_int8_cosine(name, batch, calibrator):
    build, make_inputs = MODELS[name]
    model = build().eval().cuda()
    calibration = _calibration(make_inputs, batch)
    (fresh,) = _calibration(make_inputs, batch, count=1, seed=123)
    engine = build_engine(model, "int8", fresh, calibration=calibration, calibrator=calibrator)
    with torch.no_grad():
        expected = model(*fresh)
    cos = cosine(engine(*fresh)[0], expected)
    print(f"{name} int8 ({calibrator}) vs fp32, batch {batch}: cosine {cos:.5f}, "
          f"{engine.num_kernels} kernels")
    assert cos >= 0.99


def test_digits_accuracy_with_int8_engines():
    pytest.importorskip("sklearn")
    from trident.tools.benchmarks.accuracy import digits_accuracy

    result = digits_accuracy(engine=True)
    print(result)
    assert result["drop"]["entropy2"] <= 0.5 and result["drop"]["minmax"] <= 0.5
