"""Complex values carried as pairs of real tensors (compiler/frontend/fx/complex.py) against
eager torch: rotary embeddings written with complex numbers (Meta's Llama reference with its
precomputed complex buffer, Llama 4 and DeepSeek-V2 computing polar() in the forward), each op
of the table (products, quotients, sums with complex, real and scalar operands, conj, abs,
angle, exp, log, real / imag, views, indexing, cat / stack, casts) on odd shapes, and what stays in torch:
a complex graph input or output, and an op the table lacks."""
from __future__ import annotations

import random

import pytest
import torch
import torch.nn as nn

from trident.compiler.testing import DEVICE, compile_with_reports, ops_in_torch

pytestmark = [pytest.mark.compiles_for_hopper, pytest.mark.usefixtures("fresh_dynamo")]  # (tests/conftest.py)


def check(fn, *inputs, in_torch=0, tolerance=1e-5):
    got, reports = compile_with_reports(fn, *inputs)
    want = fn(*inputs)
    torch.testing.assert_close(got, want, rtol=tolerance, atol=tolerance * max(1.0, want.abs().max().item()))
    assert len(ops_in_torch(reports)) == in_torch, ops_in_torch(reports)
    return reports


def frequencies(head_dim: int, positions: int, theta: float = 10000.0) -> torch.Tensor:
    inverse = 1.0 / theta ** (torch.arange(0, head_dim, 2).float() / head_dim)
    angles = torch.outer(torch.arange(positions).float(), inverse)
    return torch.polar(torch.ones_like(angles), angles)


def rotate(x: torch.Tensor, freqs: torch.Tensor) -> torch.Tensor:
    """Meta's apply_rotary_emb: pairs of channels as complex numbers, turned by the frequencies."""
    pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
    turned = pairs * freqs[None, :, None, :]
    return torch.view_as_real(turned).flatten(3).type_as(x)


class LlamaReferenceAttention(nn.Module):
    """Meta's Llama reference: the frequencies a complex buffer computed once."""

    def __init__(self, dim=24, heads=3, positions=16):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.out = nn.Linear(dim, dim)
        self.register_buffer("freqs_cis", frequencies(dim // heads, positions), persistent=False)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        freqs = self.freqs_cis[:s]
        q, k = rotate(q, freqs), rotate(k, freqs)
        attn = torch.nn.functional.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                                                 v.transpose(1, 2), is_causal=True)
        return self.out(attn.transpose(1, 2).reshape(b, s, d))


class PolarInForward(nn.Module):
    """Llama 4 / DeepSeek-V2: polar(1, positions x inverse frequencies) in the forward."""

    def __init__(self, head_dim=8):
        super().__init__()
        self.register_buffer("inverse", 1.0 / 500000.0 ** (torch.arange(0, head_dim, 2).float() / head_dim))

    def forward(self, x, positions):
        angles = positions[:, :, None].float() * self.inverse
        freqs = torch.polar(torch.ones_like(angles), angles) * 1.0
        pairs = torch.view_as_complex(x.float().reshape(*x.shape[:-1], -1, 2))
        return torch.view_as_real(pairs * freqs[:, :, None, :]).flatten(3)


def test_llama_reference_rotary_attention(rng):
    torch.manual_seed(0)
    model = LlamaReferenceAttention().eval().to(DEVICE)
    x = torch.randn(2, 13, 24, generator=rng).to(DEVICE)
    with torch.no_grad():
        check(model, x)


def test_frequencies_computed_in_the_forward(rng):
    x = torch.randn(2, 7, 3, 8, generator=rng).to(DEVICE)
    positions = torch.randint(0, 100, (2, 7), generator=rng).to(DEVICE)
    check(PolarInForward().to(DEVICE), x, positions, tolerance=1e-4)  # (angles up to 100 radians)


def _z(t):
    return torch.view_as_complex(t)


@pytest.mark.parametrize("name, fn", [
    ("product", lambda a, b: torch.view_as_real(_z(a) * _z(b))),
    ("quotient", lambda a, b: torch.view_as_real(_z(a) / (_z(b) + 3))),
    ("by a real tensor", lambda a, b: torch.view_as_real(_z(a) * b[..., 0] - b[..., 1] / _z(b).abs())),
    ("sums", lambda a, b: torch.view_as_real(_z(a) + _z(b) - 2 * _z(a) + torch.add(_z(a), _z(b), alpha=0.5))),
    ("conj and abs", lambda a, b: (_z(a).conj() * _z(b)).abs() + _z(a).angle()),
    ("parts", lambda a, b: (_z(a) * _z(b)).real - torch.imag(_z(a) - _z(b)) * (-_z(b)).real),
    ("complex from parts", lambda a, b: torch.view_as_real(torch.complex(a[..., 0], b[..., 1]) * _z(a))),
    ("views", lambda a, b: torch.view_as_real(_z(a).transpose(0, 1).unsqueeze(0).expand(2, -1, -1, -1)
                                              .reshape(2, 5, -1)[:, 1:4, ::2])),
    ("join", lambda a, b: torch.view_as_real(torch.cat([_z(a), _z(b)], 1) * torch.stack([_z(a), _z(b)]).sum(0)
                                             .repeat(1, 2, 1))),
    ("casts", lambda a, b: torch.view_as_real(_z(a).to(torch.complex64) * _z(b).contiguous().clone())),
    ("exp and log", lambda a, b: torch.view_as_real(torch.exp(1j * b[..., 0]) * torch.log(_z(a)) + _z(b).exp())),
], ids=lambda v: v if isinstance(v, str) else "")
def test_complex_ops(name, fn, rng):
    a, b = (torch.randn(3, 5, 7, 2, generator=rng).to(DEVICE) for _ in range(2))
    check(fn, a, b, tolerance=1e-4 if name == "quotient" else 1e-5)


class ComplexWeights(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.register_buffer("w", torch.randn(7, dtype=torch.complex64, generator=rng))

    def forward(self, a):
        return torch.view_as_real(_z(a) * self.w + self.w * (1 - 2j))


def test_complex_constants_beside_a_run_time_tensor(rng):
    check(ComplexWeights(rng).to(DEVICE), torch.randn(3, 7, 2, generator=rng).to(DEVICE))


def test_complex_graph_inputs_and_outputs_stay_in_torch(rng):
    a = torch.randn(4, 6, 2, generator=rng).to(DEVICE)
    check(lambda t: _z(t * 2) * 3, a, in_torch=2)  # the output is complex: both ops that make it
    z = torch.randn(4, 6, dtype=torch.complex64, generator=rng).to(DEVICE)
    check(lambda t: torch.view_as_real(t * 2) + 1, z, in_torch=2)  # (the add runs in a kernel)


def test_an_op_the_table_lacks_keeps_its_complex_region_in_torch(rng):
    """sqrt of a complex value has no converter: the region around it (view_as_complex, sqrt,
    view_as_real) runs in torch, the real ops before and after in kernels."""
    a = torch.randn(4, 6, 2, generator=rng).to(DEVICE)
    reports = check(lambda t: torch.view_as_real(torch.sqrt(_z(t * 0.5))) + 1, a, in_torch=3)
    assert any("complex" in item for item in ops_in_torch(reports))


def test_a_reinterpreting_view_of_a_complex_value_stays_in_torch(rng):
    """`z.view(torch.float32)` reads the pairs as interleaved floats (not a view of each part):
    refused, and the region around it runs in torch."""
    a = torch.randn(3, 4, 2, generator=rng).to(DEVICE)
    check(lambda t: (_z(t) * 2).view(torch.float32) + 1, a, in_torch=3)


def _expression(rng, depth: int):
    """A random expression over two complex values, a real tensor and a real constant."""
    if depth == 0:
        return rng.choice(["z1", "z2", "r", "half"])
    op = rng.choice(["mul", "add", "sub", "div", "conj", "neg", "transpose", "sum", "parts"])
    if op in ("conj", "neg", "transpose", "sum"):
        return (op, _expression(rng, depth - 1))
    return (op, _expression(rng, depth - 1), _expression(rng, depth - 1))


def _evaluate(e, env):
    if isinstance(e, str):
        return env[e]
    a = _evaluate(e[1], env)
    unary = {"conj": lambda: torch.conj(a) if a.is_complex() else a, "neg": lambda: -a,
             "transpose": lambda: a.transpose(-1, -2), "sum": lambda: a.sum(-1, keepdim=True)}
    if e[0] in unary:
        return unary[e[0]]()
    b = _evaluate(e[2], env)
    binary = {"mul": lambda: a * b, "add": lambda: a + b, "sub": lambda: a - b,
              "div": lambda: a / (b + (3 + 1j if b.is_complex() else 3)),
              "parts": lambda: (a.real if a.is_complex() else a) * (b.imag if b.is_complex() else b)}
    return binary[e[0]]()


class RandomExpression(nn.Module):
    def __init__(self, expression):
        super().__init__()
        self.expression = expression

    def forward(self, a, b, r):
        env = {"z1": _z(a), "z2": _z(b), "r": r, "half": torch.full_like(r, 0.5)}
        out = _evaluate(self.expression, env)
        return torch.view_as_real(out.resolve_conj()) if out.is_complex() else out * 1.0


@pytest.mark.parametrize("seed", range(24))
def test_random_complex_expressions(seed):
    """Products, quotients, sums, conjugates, transposes, sums over a dim and parts of complex
    and real operands, nested up to four deep: against eager, every op in a kernel."""
    rng = random.Random(seed)
    module = RandomExpression(_expression(rng, rng.randint(1, 4)))
    gen = torch.Generator().manual_seed(seed)
    a, b, r = (torch.randn(*shape, generator=gen).to(DEVICE) for shape in [(3, 3, 2), (3, 3, 2), (3, 3)])
    check(module, a, b, r, tolerance=1e-4)
