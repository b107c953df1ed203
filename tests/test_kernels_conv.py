"""kernels/conv.py against torch, in Triton's interpreter on the CPU (or on the GPU when present)."""
import math

import pytest
import torch
import torch.nn.functional as F

import trident.kernels.conv as cv
from trident.kernels.common import tile_config
from trident.kernels.conv import (candidate_configs, conv2d_nhwc, conv2d_nhwc_tile, heuristic_config,
                                  pack_conv_weight, pack_depthwise_weight, use_small_c_tile)

import triton
import triton.language as tl

pytestmark = pytest.mark.compiles_for_hopper  # every kernel run here also compiles for sm_90 (tests/conftest.py)

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-4, torch.float16: 1e-2}


def rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8).to(DEV)
    return torch.randn(shape, generator=g).to(dtype).to(DEV)


def reference(x, w, bias, stride, pads, dilation, groups):
    """float64 torch conv; asymmetric (top, left, bottom, right) pads applied with F.pad."""
    pt, pl, pb, pr = pads
    xp = F.pad(x.double().cpu(), (pl, pr, pt, pb))
    b = None if bias is None else bias.double().cpu()
    return F.conv2d(xp, w.double().cpu(), b, stride, 0, dilation, groups)


def check(y, ref, dtype, k):
    assert y.shape == ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last)
    if dtype == torch.int8:
        assert y.dtype == torch.int32
        assert torch.equal(y.long().cpu(), ref.long())
    else:
        tol = TOL[dtype]
        torch.testing.assert_close(y.double().cpu(), ref, rtol=tol, atol=tol * math.sqrt(k))


# (N, C, H, W, OC, KH, KW, stride, pads (t, l, b, r), dilation, groups)
CASES = {
    "3x3": (2, 20, 9, 11, 24, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 1),
    "rect_strided_dilated_asym": (2, 20, 10, 9, 17, 3, 2, (2, 1), (1, 0, 2, 1), (2, 1), 1),
    "1x1_downsample": (2, 36, 8, 7, 40, 1, 1, (2, 2), (0, 0, 0, 0), (1, 1), 1),
    "1x1_s1": (2, 24, 5, 6, 20, 1, 1, (1, 1), (0, 0, 0, 0), (1, 1), 1),
    "stem_7x7_c3": (1, 3, 12, 12, 16, 7, 7, (2, 2), (3, 3, 3, 3), (1, 1), 1),
    "groups_small_c": (2, 16, 8, 9, 32, 3, 3, (1, 1), (1, 1, 1, 1), (1, 1), 4),
    "groups_c20": (1, 40, 7, 8, 24, 3, 3, (2, 1), (0, 1, 1, 0), (1, 1), 2),
    "depthwise_3x3_s2": (2, 12, 9, 10, 12, 3, 3, (2, 2), (1, 1, 0, 1), (1, 1), 12),
    "depthwise_5x5_dilated": (1, 20, 11, 9, 20, 5, 5, (1, 1), (4, 2, 3, 4), (2, 1), 20),
}


def run_case(name, dtype, bias=True, config=None, seed=0):
    N, C, H, W, OC, KH, KW, stride, pads, dil, groups = CASES[name]
    x = rand((N, C, H, W), dtype, seed)
    w = rand((OC, C // groups, KH, KW), dtype, seed + 1)
    b = None
    if bias:
        b = rand((OC,), torch.int8, seed + 2).to(torch.int32) if dtype == torch.int8 else rand((OC,), dtype, seed + 2)
    y = conv2d_nhwc(x, w, b, stride, pads, dil, groups, config=config)
    check(y, reference(x, w, b, stride, pads, dil, groups), dtype, KH * KW * C // groups)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("name", list(CASES))
def test_conv_default_config(name, dtype):
    run_case(name, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.int8])
def test_conv_no_bias(dtype):
    run_case("3x3", dtype, bias=False)
    run_case("depthwise_3x3_s2", dtype, bias=False)


@pytest.mark.parametrize("dtype,block_k", [(torch.float32, 16), (torch.float32, 32), (torch.float32, 64),
                                           (torch.float16, 16), (torch.float16, 64),
                                           (torch.int8, 32), (torch.int8, 64)])  # int8 dots need K >= 32
def test_conv_both_tiles_many_programs(dtype, block_k):
    # C_PER_GROUP = 20: BLOCK_K 16 and 32 walk channels (with a channel tail), 64 walks K flat.
    # 16x16 M/N blocks give many programs, partial GROUP_M groups and an OC tail.
    cfg = tile_config(16, 16, block_k, GROUP_M=2)
    assert use_small_c_tile(20, block_k) == (block_k == 64)
    run_case("rect_strided_dilated_asym", dtype, config=cfg, seed=3)
    run_case("groups_c20", dtype, config=cfg, seed=4)


@pytest.mark.parametrize("dtype,block_k", [(torch.float16, 16), (torch.int8, 64)])
def test_conv_persistent_grid_loops_over_tiles(dtype, block_k, monkeypatch):
    # 2 programs per group loop over all the tiles, for both tiles (channel walk and flat K).
    monkeypatch.setattr("trident.kernels.common.num_sms", lambda: 2)
    cfg = tile_config(16, 16, block_k, GROUP_M=2, PERSISTENT=1)
    run_case("rect_strided_dilated_asym", dtype, config=cfg, seed=5)
    run_case("groups_c20", dtype, config=cfg, seed=6)


@pytest.mark.parametrize("name", ["3x3", "1x1_s1", "depthwise_3x3_s2"])
def test_conv_int8_output_saturates(name):
    # Every path (implicit GEMM, pointwise GEMM, depthwise) stores clamp(acc, -128, 127).
    N, C, H, W, OC, KH, KW, stride, pads, dil, groups = CASES[name]
    x, w = rand((N, C, H, W), torch.int8, 7), rand((OC, C // groups, KH, KW), torch.int8, 8)
    y = conv2d_nhwc(x, w, None, stride, pads, dil, groups, out_dtype=torch.int8)
    ref = reference(x, w, None, stride, pads, dil, groups).clamp(-128, 127)
    assert y.dtype == torch.int8 and (ref.abs() == 128).any()
    assert torch.equal(y.long().cpu(), ref.long())
    with pytest.raises(ValueError, match="int8 output needs int8 inputs"):
        conv2d_nhwc(x.float(), w.float(), None, stride, pads, dil, groups, out_dtype=torch.int8)


def test_conv_prepacked_and_any_input_layout():
    N, C, H, W, OC, KH, KW, stride, pads, dil, groups = CASES["3x3"]
    x = rand((N, C, H, W), torch.float32, 5)  # NCHW-contiguous input: converted internally
    w = rand((OC, C, KH, KW), torch.float32, 6)
    ref = reference(x, w, None, stride, pads, dil, groups)
    y = conv2d_nhwc(x.to(memory_format=torch.channels_last), pack_conv_weight(w), None, stride, pads, dil,
                    prepacked=True)
    check(y, ref, torch.float32, KH * KW * C)
    check(conv2d_nhwc(x, w, None, stride, pads, dil), ref, torch.float32, KH * KW * C)
    # Depthwise, prepacked as [KH, KW, C].
    x = rand((1, 12, 8, 8), torch.float32, 7)
    w = rand((12, 1, 3, 3), torch.float32, 8)
    y = conv2d_nhwc(x, pack_depthwise_weight(w), None, 1, 1, 1, groups=12, prepacked=True)
    check(y, reference(x, w, None, 1, (1, 1, 1, 1), 1, 12), torch.float32, 9)
    with pytest.raises(ValueError):
        conv2d_nhwc(x, pack_conv_weight(w, 12), None, 1, 1, 1, groups=12, prepacked=True)


def test_pack_layouts():
    w = rand((8, 3, 2, 5), torch.float32, 9)
    p = pack_conv_weight(w)
    assert p.shape == (8, 2, 5, 3) and p.is_contiguous() and p[4, 1, 3, 2] == w[4, 2, 1, 3]
    d = pack_depthwise_weight(rand((6, 1, 3, 2), torch.float32, 10))
    assert d.shape == (3, 2, 6) and d.is_contiguous()


# --------------------------------------------------------------- few channels: pad_nhwc + row tile
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("shape", [(2, 3, 13, 11, 20, 7, 7, (2, 2), (3, 3, 3, 3)),    # the RGB stem
                                   (1, 1, 9, 10, 16, 5, 3, (2, 1), (2, 1, 0, 2)),     # C=1, asymmetric pads
                                   (2, 6, 7, 8, 8, 3, 3, (1, 1), (1, 1, 1, 1))])      # C=6 -> 8 channels
@pytest.mark.parametrize("config", [None, tile_config(16, 16, 32, GROUP_M=2)])       # heuristic; many programs
def test_row_tile_convs(dtype, shape, config):
    N, C, H, W, OC, KH, KW, stride, pads = shape
    assert cv.uses_row_tile(C, KW, 1, 1) and not cv.uses_row_tile(C, KW, 2, 1) and not cv.uses_row_tile(C, KW, 1, 2)
    x, w = rand((N, C, H, W), dtype, 30), rand((OC, C, KH, KW), dtype, 31)
    b = rand((OC,), torch.int8, 32).to(torch.int32) if dtype == torch.int8 else rand((OC,), dtype, 32)
    y = conv2d_nhwc(x, w, b, stride, pads, config=config)
    check(y, reference(x, w, b, stride, pads, 1, 1), dtype, KH * KW * C)
    y = conv2d_nhwc(x, pack_conv_weight(w), b, stride, pads, config=config, prepacked=True)
    check(y, reference(x, w, b, stride, pads, 1, 1), dtype, KH * KW * C)


def test_row_tile_keeps_an_inf_inside_its_windows():
    # The row's K block runs past the window into the next pixel; those lanes must not read it
    # (0 * inf would put a NaN into outputs whose windows do not contain the inf).
    x, w = rand((1, 3, 12, 12), torch.float32, 33), rand((4, 3, 3, 3), torch.float32, 34)
    x[0, 1, 5, 6] = float("inf")
    y = conv2d_nhwc(x, w.abs(), None, 1, 1).cpu()
    ref = reference(x, w.abs(), None, 1, (1, 1, 1, 1), 1, 1)
    assert torch.equal(torch.isfinite(y), torch.isfinite(ref)) and torch.isfinite(y).sum() > 0


def test_pack_conv_weight_rows_layout():
    w = rand((5, 3, 2, 7), torch.float32, 35)
    r = cv.pack_conv_weight_rows(w, 4, 32)
    assert r.shape == (5, 2, 32) and r.is_contiguous()
    assert r[3, 1, 6 * 4 + 2] == w[3, 2, 1, 6] and r[3, 1, 6 * 4 + 3] == 0 and not r[:, :, 28:].any()
    with pytest.raises(ValueError, match="does not fit"):
        cv.pack_conv_weight_rows(w, 8, 32)


@pytest.mark.parametrize("dtype,out_dtype", [(torch.float32, torch.float32), (torch.float32, torch.float16),
                                             (torch.float16, torch.float16), (torch.int8, torch.int8)])
@pytest.mark.parametrize("channels_last", [False, True])
def test_pad_nhwc_matches_torch(dtype, out_dtype, channels_last):
    from trident.kernels.pool import pad_nhwc

    x = rand((2, 3, 9, 7), dtype, 36)
    x = x.contiguous(memory_format=torch.channels_last) if channels_last else x
    y = pad_nhwc(x, (1, 2, 3, 0), 4, out_dtype=out_dtype)
    ref = F.pad(x.cpu().double(), (2, 0, 1, 3, 0, 1)).to(out_dtype)
    assert y.shape == (2, 4, 13, 9) and y.dtype == out_dtype and y.is_contiguous(memory_format=torch.channels_last)
    assert torch.equal(y.cpu(), ref)
    with pytest.raises(ValueError, match="must not crop"):
        pad_nhwc(x, 1, 2)


@triton.jit
def _conv_relu_kernel(x_ptr, w_ptr, y_ptr, N, H, W, C, OH, OW, OC, KH: tl.constexpr, KW: tl.constexpr,
                      BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr):
    # What generated code looks like: 3x3/s1/p1 conv tile, ReLU epilogue, one masked store.
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = conv2d_nhwc_tile(x_ptr, w_ptr, N, H, W, C, OH, OW, OC, 1, 1, 1, 1, 1, 1, 0, C, OC, offs_m, offs_n,
                           KH, KW, BLOCK_M, BLOCK_N, BLOCK_K, "ieee")
    acc = tl.maximum(acc, 0.0)
    mask = (offs_m[:, None] < N * OH * OW) & (offs_n[None, :] < OC)
    tl.store(y_ptr + offs_m[:, None] * OC + offs_n[None, :], acc, mask=mask)


def test_conv_tile_with_epilogue():
    x = rand((2, 24, 7, 9), torch.float32, 11)
    w = rand((20, 24, 3, 3), torch.float32, 12)
    xc = x.contiguous(memory_format=torch.channels_last)
    y = torch.empty((2, 20, 7, 9), device=DEV, memory_format=torch.channels_last)
    grid = (triton.cdiv(2 * 7 * 9, 64), 1)
    _conv_relu_kernel[grid](xc, pack_conv_weight(w), y, 2, 7, 9, 24, 7, 9, 20, 3, 3, 64, 32, 32)
    ref = torch.relu(reference(x, w, None, 1, (1, 1, 1, 1), 1, 1))
    check(y, ref, torch.float32, 9 * 24)


@pytest.mark.parametrize("interpreter", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_heuristic_configs_are_legal(monkeypatch, interpreter, dtype):
    monkeypatch.setattr(cv, "is_interpreter", lambda: interpreter)
    min_k = 32 if dtype == torch.int8 else 16
    for M, ocpg, cpg, kh in [(256 * 112 * 112, 64, 3, 7), (256 * 56 * 56, 64, 64, 3), (256 * 7 * 7, 2048, 512, 1),
                             (49, 512, 512, 3), (8 * 56 * 56, 4, 4, 3), (100, 17, 20, 3)]:
        cfg = heuristic_config(M, ocpg, cpg, kh, kh, dtype)
        assert cfg == heuristic_config(M, ocpg, cpg, kh, kh, dtype)
        for c in [cfg] + ([] if interpreter else candidate_configs(M, ocpg, cpg, kh, kh, dtype)):
            assert min(c.BLOCK_M, c.BLOCK_N) >= 16 and c.BLOCK_K >= min_k, c
            # a persistent pipeline deeper than its K loop would need twice the shared memory
            k_steps = kh * kh * math.ceil(cpg / c.BLOCK_K)
            assert not c.PERSISTENT or use_small_c_tile(cpg, c.BLOCK_K) or c.num_stages <= k_steps, c


def test_depthwise_channel_block_divides_the_channels(monkeypatch):
    # ConvNeXt-T's first stage (C = 96): a 64-channel block would leave half of every second block
    # idle; 32 channels over 128 pixels took 99.5 us against 129.4 on an H200 (7x7, b32)
    monkeypatch.setattr(cv, "is_interpreter", lambda: False)
    for c in (96, 160, 192, 384, 768):
        for k in (3, 5, 7):
            cfg = heuristic_config(32 * 56 * 56, c, 1, k, k, torch.float16, depthwise=True)
            assert c % cfg.BLOCK_N == 0, (c, k, cfg)
    assert heuristic_config(32 * 56 * 56, 192, 1, 7, 7, torch.float16, depthwise=True).BLOCK_N == 64


def test_depthwise_7x7_takes_short_pixel_blocks(monkeypatch):
    # What the tuner picked in ConvNeXt-T's engine (b32, H200): 32 pixels x 64 channels where 64
    # divide C, 64 x 32 at C = 96; smaller windows keep 64 pixels (128 where C = 96).
    monkeypatch.setattr(cv, "is_interpreter", lambda: False)
    pick = lambda c, k: heuristic_config(32 * 56 * 56, c, 1, k, k, torch.float16, depthwise=True)  # noqa: E731
    assert [(pick(c, 7).BLOCK_M, pick(c, 7).BLOCK_N) for c in (96, 192, 384, 768)] == \
        [(64, 32), (32, 64), (32, 64), (32, 64)]
    assert (pick(96, 3).BLOCK_M, pick(96, 3).BLOCK_N) == (128, 32) and pick(192, 5).BLOCK_M == 64


# ----------------------------------------------------------------------------------------------- GPU

# ResNet-50 shapes: (C, H, OC, K, stride, pad)
RESNET_SHAPES = [(3, 224, 64, 7, 2, 3), (64, 56, 64, 3, 1, 1), (256, 56, 64, 1, 1, 0), (128, 56, 128, 3, 2, 1),
                 (256, 56, 512, 1, 2, 0), (512, 7, 512, 3, 1, 1), (512, 7, 2048, 1, 1, 0)]


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("shape", RESNET_SHAPES)
def test_gpu_conv_resnet50_batch8(dtype, shape):
    C, H, OC, K, s, p = shape
    x = rand((8, C, H, H), dtype, 20)
    w = rand((OC, C, K, K), dtype, 21)
    if dtype == torch.int8:  # keep int32 sums exact in the float64 reference
        y = conv2d_nhwc(x, w, None, s, p)
        ref = F.conv2d(x.double(), w.double(), None, s, p)
        assert torch.equal(y.long(), ref.long())
    else:
        y = conv2d_nhwc(x, w, None, s, p)
        ref = F.conv2d(x.double(), w.double(), None, s, p)
        tol = GPU_TOL[dtype]
        torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * math.sqrt(K * K * C))


GPU_TOL = {torch.float32: 1e-4, torch.float16: 1e-2}  # true fp32 ("ieee" dots) and fp16 inputs


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", RESNET_SHAPES[:4] + RESNET_SHAPES[5:6])
def test_gpu_conv_all_candidate_configs(dtype, shape):
    C, H, OC, K, s, p = shape
    x = rand((4, C, H, H), dtype, 22)
    w = rand((OC, C, K, K), dtype, 23)
    ref = F.conv2d(x.double(), w.double(), None, s, p)
    M = 4 * ref.shape[2] * ref.shape[3]
    tol = GPU_TOL[dtype]
    for cfg in candidate_configs(M, OC, C, K, K, dtype):
        y = conv2d_nhwc(x, w, None, s, p, config=cfg)
        torch.testing.assert_close(y.double(), ref, rtol=tol, atol=tol * math.sqrt(K * K * C), msg=str(cfg))


@pytest.mark.gpu
@requires_cuda
def test_gpu_conv_grouped_and_depthwise():
    x = rand((8, 256, 28, 28), torch.float16, 24)
    for groups, cpg in [(32, 8), (256, 1)]:  # ResNeXt-50 32x8d-like, and depthwise
        w = rand((256, cpg, 3, 3), torch.float16, 25)
        y = conv2d_nhwc(x, w, None, 1, 1, groups=groups)
        ref = F.conv2d(x.double(), w.double(), None, 1, 1, groups=groups)
        torch.testing.assert_close(y.double(), ref, rtol=1e-2, atol=1e-1)
