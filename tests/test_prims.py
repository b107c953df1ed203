"""kernels/prims.py on its own: the bounds mask at extent 0, NaN-propagating max/min/relu and row
max, fp32 -> bf16 rounding, GELU. Each check runs in the interpreter on a CPU-only machine, compiled on a GPU."""
import pytest
import torch

from trident.kernels import prims

import triton  # noqa: E402  (after trident: the interpreter is switched on without a GPU)
import triton.language as tl  # noqa: E402

# The interpreter on a CPU-only machine, the compiled kernels where there is a GPU.
DEVICES = ["cuda" if torch.cuda.is_available() else "cpu"]
NAN, INF = float("nan"), float("inf")


@triton.jit
def in_bounds_kernel(out, n_runtime, N: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    tl.store(out + offs, prims.in_bounds(offs, N, BLOCK).to(tl.int32))            # constant extent
    tl.store(out + BLOCK + offs, prims.in_bounds(offs, n_runtime, BLOCK).to(tl.int32))  # run-time


@triton.jit
def binary_kernel(a, b, out, BLOCK: tl.constexpr):
    offs = tl.arange(0, BLOCK)
    x, y = tl.load(a + offs), tl.load(b + offs)
    tl.store(out + offs, prims.maximum(x, y))
    tl.store(out + BLOCK + offs, prims.minimum(x, y))
    tl.store(out + 2 * BLOCK + offs, prims.relu(x))


@triton.jit
def row_max_kernel(x, out, ROWS: tl.constexpr, COLS: tl.constexpr):
    r = tl.arange(0, ROWS)[:, None]
    c = tl.arange(0, COLS)[None, :]
    tl.store(out + tl.arange(0, ROWS), prims.max_nan(tl.load(x + r * COLS + c), 1))


@triton.jit
def bf16_kernel(x, y, N: tl.constexpr):
    offs = tl.arange(0, N)
    tl.store(y + offs, prims.to_bfloat16(tl.load(x + offs)))


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("n", [0, 5, 8, 16])
def test_in_bounds_of_an_empty_extent_is_all_false(n, device):
    out = torch.full((16,), 7, dtype=torch.int32, device=device)
    in_bounds_kernel[(1,)](out, n, n, BLOCK=8)
    expected = (torch.arange(8) < n).int()
    assert torch.equal(out.cpu(), torch.cat([expected, expected]))


@pytest.mark.parametrize("device", DEVICES)
def test_max_min_relu_keep_nan(device):
    a = torch.tensor([NAN, 1.0, NAN, -2.0, INF, -INF, 0.5, -0.0], device=device)
    b = torch.tensor([1.0, NAN, NAN, 3.0, -INF, 2.0, 0.25, 0.0], device=device)
    out = torch.empty(24, device=device)
    binary_kernel[(1,)](a, b, out, BLOCK=8)
    want = torch.cat([torch.maximum(a, b), torch.minimum(a, b), torch.relu(a)])
    torch.testing.assert_close(out, want, equal_nan=True)


@pytest.mark.parametrize("device", DEVICES)
def test_row_max_is_nan_where_the_row_holds_a_nan(device):
    x = torch.randn(4, 16, device=device)
    x[1, 3], x[2, 0], x[3, 15] = NAN, INF, NAN
    x[3, 7] = INF
    out = torch.empty(4, device=device)
    row_max_kernel[(1,)](x, out, ROWS=4, COLS=16)
    torch.testing.assert_close(out, x.amax(1), equal_nan=True)
    assert out[1].isnan() and out[2] == INF and out[3].isnan()


@pytest.mark.parametrize("device", DEVICES)
def test_bfloat16_rounds_to_nearest_even_like_torch(device):
    g = torch.Generator().manual_seed(0)
    bits = torch.randint(-2**31, 2**31 - 1, (4096 - 16,), generator=g, dtype=torch.int64).to(torch.int32)
    specials = torch.tensor([NAN, INF, -INF, 3.4e38, -3.4e38, 0.0, -0.0, 1e-40, -1e-40, 1.00390625,
                             1.01171875, 1.0078125, 1.0 + 2**-8, 1.0 + 3 * 2**-8, 2**-133, 65504.0])
    x = torch.cat([bits.view(torch.float32), specials]).to(device)
    y = torch.empty(4096, dtype=torch.bfloat16, device=device)
    bf16_kernel[(1,)](x, y, N=4096)
    want = x.to(torch.bfloat16)
    nan = want.isnan()
    assert torch.equal(y.isnan(), nan)
    assert torch.equal(y[~nan].view(torch.int16), want[~nan].view(torch.int16))


@triton.jit
def gelu_kernel(x, y, n, FORM: tl.constexpr, BLOCK: tl.constexpr):
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    v = tl.load(x + offs, mask=offs < n)
    if FORM == "tanh":
        out = prims.gelu_tanh(v)
    elif FORM == "half":
        out = prims.gelu_erf_half(v)
    else:
        out = prims.gelu_erf(v)
    tl.store(y + offs, out, mask=offs < n)


def _gelu(x: torch.Tensor, form: str = "erf") -> torch.Tensor:
    """prims' GELU of x: form "erf" (the full fit), "half" (the 16-bit fit) or "tanh"."""
    y = torch.empty_like(x)
    gelu_kernel[(triton.cdiv(x.numel(), 4096),)](x, y, x.numel(), FORM=form, BLOCK=4096)
    return y.cpu()


def _exact_gelu(x: torch.Tensor) -> torch.Tensor:
    # x * Phi(x) in float64 through erfc, which (unlike 1 + erf) keeps its digits where Phi is tiny
    return x.double() * 0.5 * torch.special.erfc(-x.double() / 2 ** 0.5)


GELU_SWEEP = torch.cat([torch.linspace(-13, 13, 104_001),
                        torch.randn(4099, generator=torch.Generator().manual_seed(0)) * 3])


@pytest.mark.parametrize("device", DEVICES)
def test_gelu_matches_the_exact_function_in_its_tails_too(device):
    exact = _exact_gelu(GELU_SWEEP)
    got = _gelu(GELU_SWEEP.to(device)).double()
    assert (got - exact).abs().max() < 5e-7
    normal = exact.abs() > torch.finfo(torch.float32).tiny
    assert ((got - exact).abs() / exact.abs())[normal].max() < 3e-5
    assert (got[exact == 0] == 0).all()


@pytest.mark.parametrize("device", DEVICES)
def test_the_16_bit_gelu_is_within_one_fp16_ulp(device):
    exact = _exact_gelu(GELU_SWEEP)
    got = _gelu(GELU_SWEEP.to(device), "half")
    normal = exact.abs() > torch.finfo(torch.float32).tiny
    assert ((got.double() - exact).abs() / exact.abs())[normal].max() < 4e-5
    # rounded to fp16, as the engines that use it store it: never more than one ulp from the
    # correctly rounded value (and on the same side of zero)
    ulps = (got.half().view(torch.int16).int() - exact.half().view(torch.int16).int()).abs()
    assert ulps.max() <= 1
    assert (ulps > 0).float().mean() < 0.01


@pytest.mark.parametrize("half", [False, True])
@pytest.mark.parametrize("device", DEVICES)
def test_gelu_of_special_values(device, half):
    x = torch.tensor([NAN, INF, -INF, 3.4e38, -3.4e38, 0.0, -0.0, 1e-30, -1e-30])
    got = _gelu(x.to(device), "half" if half else "erf")
    assert got[0].isnan() and got[1] == INF and got[2].isnan()
    assert got[3] == x[3] and got[4] == 0 and got[5] == 0 and got[6] == 0
    torch.testing.assert_close(got[7:], x[7:] / 2, rtol=4e-5 if half else 1e-6, atol=0)


def _exact_gelu_tanh(x: torch.Tensor) -> torch.Tensor:
    # 0.5 x (1 + tanh(v)) = x * sigmoid(2 v), in float64
    x = x.double()
    return x * torch.sigmoid(2 * (2 / torch.pi) ** 0.5 * (x + 0.044715 * x ** 3))


@pytest.mark.parametrize("device", DEVICES)
def test_the_tanh_gelu_matches_its_formula_in_the_negative_tail_too(device):
    exact = _exact_gelu_tanh(GELU_SWEEP)
    got = _gelu(GELU_SWEEP.to(device), "tanh").double()
    assert (got - exact).abs().max() < 1e-6
    # relative error, or zero where the result is under |x| * 5.4e-20 (its 1 / d underflows: x below
    # -7.66). torch's fp32 form flushes from x = -6 on, and is 30% off at -5.
    close = (got - exact).abs() <= 2e-5 * exact.abs()
    flushed = (got == 0) & (exact.abs() < GELU_SWEEP.double().abs() * 6e-20)
    assert (close | flushed).all()
    assert close[GELU_SWEEP > -7.6].all()


@pytest.mark.parametrize("device", DEVICES)
def test_the_tanh_gelu_of_special_values(device):
    x = torch.tensor([NAN, INF, -INF, 3.4e38, -3.4e38, 0.0, -0.0, 1e-30, -1e-30])
    got = _gelu(x.to(device), "tanh")
    want = torch.nn.functional.gelu(x, approximate="tanh")
    assert got[0].isnan() and got[1] == INF and got[2].isnan() and want[2].isnan()
    assert got[3] == x[3] and got[4] == 0 and got[5] == 0 and got[6] == 0
    assert torch.equal(got[4:7].signbit(), torch.tensor([True, False, True]))
    torch.testing.assert_close(got[7:], x[7:] / 2, rtol=1e-6, atol=0)
