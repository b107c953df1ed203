"""How fp32 operands multiply (TRIDENT_FP32_DOTS, compiler/config.py; kernels/common.py's
FP32_DOTS_BY_TEMPLATE): the setting's values and its refusal of others; generated GEMM, convolution and
attention kernels multiply as it says, or by default as their template does (convolutions and attention
3xTF32 on the tensor cores, GEMMs IEEE); the tensor-core tiles the heuristics give compute what torch
does at odd sizes, and compile for sm_90 (compiles_for_hopper); on a GPU, 3xTF32 dots against float64
beside IEEE ones, with inf and NaN."""
import re

import pytest
import torch
import torch.nn.functional as F

import trident
from trident.compiler import config
from trident.kernels import attention, conv, matmul
from trident.kernels.common import next_pow2

pytestmark = pytest.mark.compiles_for_hopper

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture
def tensor_core_dots(monkeypatch):
    monkeypatch.setattr(config, "FP32_DOTS", "tf32x3")


@pytest.fixture
def gpu_heuristics(monkeypatch):
    """The heuristics' GPU configs in the interpreter too (they give it few big blocks otherwise)."""
    for module in (attention, conv, matmul):
        monkeypatch.setattr(module, "is_interpreter", lambda: False)


@pytest.mark.parametrize("env, allow_tf32, expected", [
    (None, False, None), ("", False, None), ("tf32x3", False, "tf32x3"), (" TF32x3 ", False, "tf32x3"),
    ("ieee", False, "ieee"), ("tf32", False, "tf32"), ("tf32x3", True, "tf32"), (None, True, "tf32")])
def test_the_setting_reads_the_environment(monkeypatch, env, allow_tf32, expected):
    if env is None:
        monkeypatch.delenv("TRIDENT_FP32_DOTS", raising=False)
    else:
        monkeypatch.setenv("TRIDENT_FP32_DOTS", env)
    monkeypatch.setattr(config, "ALLOW_TF32", allow_tf32)
    assert config._fp32_dots() == expected


def test_an_unknown_setting_is_refused_by_name(monkeypatch):
    monkeypatch.setenv("TRIDENT_FP32_DOTS", "bf16x3")
    monkeypatch.setattr(config, "ALLOW_TF32", False)
    with pytest.raises(ValueError, match=r"TRIDENT_FP32_DOTS='bf16x3': expected one of ieee, tf32x3, tf32"):
        config._fp32_dots()


class ConvLinearAttention(torch.nn.Module):
    """A conv, a Linear whose epilogue keeps the product on trident's own tile (a GELU at a K the
    library does not take), and an SDPA: every kind of fp32 dot an engine generates."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)
        self.fc = torch.nn.Linear(16, 24)

    def forward(self, x):
        t = self.conv(x).flatten(2).transpose(1, 2)  # [N, 25, 16]
        h = F.gelu(self.fc(t)).view(t.shape[0], 25, 2, 12).transpose(1, 2)
        return F.scaled_dot_product_attention(h, h, h)


@pytest.mark.parametrize("dots", [None, "ieee", "tf32x3", "tf32"])
def test_generated_kernels_multiply_as_the_setting_says(monkeypatch, dots):
    monkeypatch.setattr(config, "FP32_DOTS", dots)
    monkeypatch.setattr(config, "LIBRARY_GEMM", False)
    torch.manual_seed(0)
    model, x = ConvLinearAttention().eval(), torch.randn(2, 3, 5, 5)
    engine = trident.build_engine(model, "fp32", example_inputs=[x])
    sources = {s.name: s.source for s in engine.plan.kernel_steps()}
    calls = {"conv": "conv2d_nhwc", "gemm": "matmul_tile(", "attention": "INPUT_PRECISION"}
    expected = dots and {kind: dots for kind in calls} or {"conv": "tf32x3", "gemm": "ieee", "attention": "tf32x3"}
    for kind, call in calls.items():
        said = {p for src in sources.values() if call in src for p in re.findall(r"'(ieee|tf32x3|tf32)'", src)}
        assert said == {expected[kind]}, (kind, said)
    (y,) = engine(x.to(DEV))
    tolerance = 5e-3 if dots == "tf32" and DEV == "cuda" else 1e-5  # (TF32's 10-bit mantissas)
    torch.testing.assert_close(y.cpu(), model(x), rtol=tolerance, atol=tolerance)


def _relative_error(y, ref) -> float:
    return ((y.double().cpu() - ref.cpu()).norm() / ref.cpu().norm()).item()


@pytest.mark.parametrize("shape", [(2, 3, 70, 64), (1, 2, 100, 128), (1, 1, 1, 64)])
def test_attention_on_tensor_core_tiles(tensor_core_dots, gpu_heuristics, shape):
    """The heuristic's tensor-core tile (128x64 on two warpgroups; 32-key steps at head dim 128, where
    64 need more shared memory than there is), at lengths that are not multiples of it and at one
    query and key."""
    B, H, L, D = shape
    cfg = attention.heuristic_config(L, L, D, torch.float32)
    rows = min(128, next_pow2(max(16, L)))
    assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.num_warps) == (rows, 32 if D == 128 and rows == 128 else 64,
                                                          8 if rows == 128 else 4), cfg
    q, k, v = (torch.randn(B, H, L, D, device=DEV) for _ in range(3))
    out = attention.attention(q, k, v, config=cfg)
    ref = F.scaled_dot_product_attention(q.cpu().double(), k.cpu().double(), v.cpu().double())
    assert _relative_error(out, ref) < 5e-6


@pytest.mark.parametrize("n, c, hw, oc", [(1, 24, 9, 40), (3, 16, 7, 130)])
def test_conv_on_tensor_core_tiles(gpu_heuristics, n, c, hw, oc):
    """By default: a convolution's tensor-core tile (128x64 of 32-deep K steps on one warpgroup, 64
    rows on these small problems)."""
    x = torch.randn(n, c, hw, hw, device=DEV)
    w = torch.randn(oc, c, 3, 3, device=DEV) / (9 * c) ** 0.5
    cfg = conv.heuristic_config(n * hw * hw, oc, c, 3, 3, torch.float32)
    assert (cfg.BLOCK_N, cfg.BLOCK_K, cfg.num_warps, cfg.num_stages) == (64, min(32, next_pow2(c)), 4, 3), cfg
    y = conv.conv2d_nhwc(x, w, padding=1, config=cfg)
    assert _relative_error(y, F.conv2d(x.cpu().double(), w.cpu().double(), padding=1)) < 5e-6


@pytest.mark.parametrize("m, n, k", [(300, 140, 72), (1, 33, 40)])
def test_gemm_on_tensor_core_tiles(tensor_core_dots, gpu_heuristics, m, n, k):
    a, b = torch.randn(m, k, device=DEV), torch.randn(k, n, device=DEV)
    cfg = matmul.heuristic_config(m, n, k, torch.float32, out_bytes=4)
    assert (cfg.BLOCK_K, cfg.num_stages) == (32, 3), cfg
    c = matmul.matmul(a, b, config=cfg)
    assert _relative_error(c, a.cpu().double() @ b.cpu().double()) < 5e-6


@pytest.mark.gpu
@pytest.mark.parametrize("dots", ["ieee", "tf32x3"])
def test_fp32_dots_against_float64_on_the_gpu(dots):
    """3xTF32 within a few fp32 ulps of IEEE on a deep K (a dropped remainder product would show),
    and TF32 itself is further off: the comparison can fail."""
    torch.manual_seed(1)
    a, b = torch.randn(257, 4100, device="cuda"), torch.randn(4100, 190, device="cuda")
    ref = a.double() @ b.double()
    err = _relative_error(matmul.matmul(a, b, input_precision=dots), ref)
    tf32 = _relative_error(matmul.matmul(a, b, input_precision="tf32"), ref)
    assert err < 2e-6 and tf32 > 20 * err, (err, tf32)
    q, k, v = (torch.randn(2, 3, 300, 64, device="cuda") * 3 for _ in range(3))
    ref = F.scaled_dot_product_attention(q.double(), k.double(), v.double())
    assert _relative_error(attention.attention(q, k, v, precision=dots), ref) < 2e-6


@pytest.mark.gpu
def test_tensor_core_dots_keep_inf_and_nan():
    """3xTF32 splits inf into inf and inf - inf: Triton drops the remainders' NaN, so a row with an
    inf gives inf and a row with a NaN gives NaN, as IEEE dots do."""
    a = torch.rand(70, 64, device="cuda") + 0.5
    b = torch.rand(64, 48, device="cuda") + 0.5
    a[3, 5], a[7, 1] = float("inf"), float("nan")
    for dots in ("ieee", "tf32x3"):
        c = matmul.matmul(a, b, input_precision=dots)
        assert torch.isposinf(c[3]).all() and c[7].isnan().all(), dots
        rest = [i for i in range(70) if i not in (3, 7)]
        assert c[rest].isfinite().all(), dots
        x = torch.rand(1, 16, 6, 6, device="cuda") + 0.5
        x[0, 3, 2, 2] = float("inf")
        y = conv.conv2d_nhwc(x, torch.rand(16, 16, 3, 3, device="cuda") + 0.5, padding=1, input_precision=dots)
        assert torch.isposinf(y[0, :, 1:4, 1:4]).all() and not y.isnan().any(), dots
