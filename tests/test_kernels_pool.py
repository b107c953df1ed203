"""kernels/pool.py against ONNX pooling semantics and torch, in Triton's interpreter (or on the GPU)."""
import math

import pytest
import torch
import torch.nn.functional as F

from trident.kernels.pool import PoolConfig, avg_pool2d_nhwc, max_pool2d_nhwc

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")


def rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8).to(DEV)
    return torch.randn(shape, generator=g).to(dtype).to(DEV)


def out_size(size, k, s, lo, hi, d, ceil_mode):
    span = size + lo + hi - d * (k - 1) - 1
    out = (math.ceil(span / s) if ceil_mode else span // s) + 1
    if ceil_mode and (out - 1) * s >= size + lo:  # last window must start inside image or top/left pad
        out -= 1
    return out


def onnx_pool(x, mode, kernel, stride, pads, dilation=(1, 1), ceil_mode=False, count_include_pad=False):
    """Direct float64 ONNX MaxPool/AveragePool: windows clipped to the padded box, pads (t, l, b, r)."""
    x = x.double().cpu()
    N, C, H, W = x.shape
    (kh, kw), (sh, sw), (dh, dw), (pt, pl, pb, pr) = kernel, stride, dilation, pads
    OH, OW = out_size(H, kh, sh, pt, pb, dh, ceil_mode), out_size(W, kw, sw, pl, pr, dw, ceil_mode)
    xp = F.pad(x, (pl, pr, pt, pb))
    inside = F.pad(torch.ones(H, W, dtype=torch.bool), (pl, pr, pt, pb))  # True on real pixels
    out = torch.empty(N, C, OH, OW, dtype=torch.float64)
    for oh in range(OH):
        for ow in range(OW):
            rows = [r for r in (oh * sh + i * dh for i in range(kh)) if r < H + pt + pb]  # drop overhang
            cols = [c for c in (ow * sw + j * dw for j in range(kw)) if c < W + pl + pr]
            win, m = xp[:, :, rows][:, :, :, cols], inside[rows][:, cols]
            if mode == "max":
                out[:, :, oh, ow] = win.masked_fill(~m, -math.inf).amax(dim=(2, 3))
            else:
                count = len(rows) * len(cols) if count_include_pad else int(m.sum())
                out[:, :, oh, ow] = (win * m).sum(dim=(2, 3)) / max(count, 1)
    return out


def check(y, ref, dtype):
    assert y.shape == ref.shape and y.dtype == dtype
    assert y.is_contiguous(memory_format=torch.channels_last)
    tol = {torch.float32: 1e-5, torch.float16: 1e-3, torch.int8: 0}[dtype]
    torch.testing.assert_close(y.double().cpu(), ref, rtol=tol, atol=tol)


# (kernel, stride, pads (t, l, b, r), dilation, ceil_mode)
CASES = [
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), False),  # ResNet stem max pool
    ((3, 3), (2, 2), (1, 1, 1, 1), (1, 1), True),
    ((2, 2), (2, 2), (0, 0, 0, 0), (1, 1), True),  # odd sizes: ceil_mode overhang
    ((3, 2), (1, 2), (0, 1, 2, 1), (1, 1), True),  # asymmetric pads + overhang
    ((3, 3), (2, 1), (2, 0, 1, 2), (1, 1), False),
    ((3, 3), (1, 1), (1, 1, 1, 1), (2, 2), False),  # dilation (max only)
    ((3, 2), (2, 2), (1, 0, 2, 1), (2, 1), True),
]


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("case", CASES)
def test_max_pool(case, dtype):
    kernel, stride, pads, dil, ceil_mode = case
    x = rand((2, 10, 11, 9), dtype, 0)
    y = max_pool2d_nhwc(x, kernel, stride, pads, dil, ceil_mode=ceil_mode)
    check(y, onnx_pool(x, "max", kernel, stride, pads, dil, ceil_mode), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("count_include_pad", [False, True])
@pytest.mark.parametrize("case", [c for c in CASES if c[3] == (1, 1)])
def test_avg_pool(case, count_include_pad, dtype):
    kernel, stride, pads, _, ceil_mode = case
    x = rand((2, 10, 11, 9), dtype, 1)
    y = avg_pool2d_nhwc(x, kernel, stride, pads, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    check(y, onnx_pool(x, "avg", kernel, stride, pads, (1, 1), ceil_mode, count_include_pad), dtype)


@pytest.mark.parametrize("ceil_mode", [False, True])
@pytest.mark.parametrize("count_include_pad", [False, True])
def test_symmetric_pools_match_torch(ceil_mode, count_include_pad):
    # Symmetric pads: torch's own pooling is the same semantics, an independent check of the reference.
    x = rand((2, 12, 10, 11), torch.float32, 2)
    y = avg_pool2d_nhwc(x, 3, 2, (1, 1), ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    ref = F.avg_pool2d(x, 3, 2, 1, ceil_mode=ceil_mode, count_include_pad=count_include_pad)
    torch.testing.assert_close(y, ref, rtol=1e-5, atol=1e-5)
    y = max_pool2d_nhwc(x, 3, 2, 1, 2, ceil_mode=ceil_mode)
    torch.testing.assert_close(y, F.max_pool2d(x, 3, 2, 1, 2, ceil_mode=ceil_mode), rtol=0, atol=0)


def test_global_average_pool_and_small_blocks():
    x = rand((3, 20, 7, 7), torch.float32, 3)
    y = avg_pool2d_nhwc(x, (7, 7), 1, 0)
    torch.testing.assert_close(y, x.mean(dim=(2, 3), keepdim=True), rtol=1e-5, atol=1e-5)
    # Many programs with pixel and channel tails.
    y = max_pool2d_nhwc(x, 3, 2, 1, config=PoolConfig(4, 8))
    check(y, onnx_pool(x, "max", (3, 3), (2, 2), (1, 1, 1, 1)), torch.float32)


def test_avg_pool_rejects_int8():
    with pytest.raises(ValueError):
        avg_pool2d_nhwc(rand((1, 4, 5, 5), torch.int8, 4), 2)


@pytest.mark.gpu
@requires_cuda
def test_gpu_resnet_pools():
    x = rand((8, 64, 112, 112), torch.float16, 10)
    torch.testing.assert_close(max_pool2d_nhwc(x, 3, 2, 1), F.max_pool2d(x, 3, 2, 1), rtol=0, atol=0)
    x = rand((8, 2048, 7, 7), torch.float16, 11)
    torch.testing.assert_close(avg_pool2d_nhwc(x, 7, 1, 0), F.avg_pool2d(x, 7), rtol=1e-3, atol=1e-3)
