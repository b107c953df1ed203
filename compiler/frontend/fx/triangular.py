"""torch.linalg.solve_triangular as matrix products.

Gated-delta-net layers (Qwen3-Next, Qwen3.5, OLMo-hybrid) solve a unit lower-triangular system per
chunk of 64 tokens: `solve_triangular(T, V, upper=False, unitriangular=True)`. With T = I - M (M
strictly triangular, so M^n = 0), T^-1 = I + M + M^2 + ... + M^(n-1) = (I + M)(I + M^2)(I + M^4)...,
so X = T^-1 V takes ceil(log2 n) products P @ X (X <- X + P X) and as many squarings of P: batched
GEMMs, where forward substitution would be n dependent steps. A diagonal that is not the unit one
is divided out first: T = D (I + D^-1 N), X = (I + D^-1 N)^-1 (D^-1 V). Entries of T off its
triangle are not read (they are selected away, so a NaN there stays out, as torch ignores them).

Sizes past MAX_ORDER stay in torch (the squarings cost n^3 each).
"""
from __future__ import annotations

import math

import torch

from trident.compiler.errors import ShapeError, UnsupportedError
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.helpers import _transpose
from trident.compiler.frontend.fx.registry import converts

aten = torch.ops.aten

MAX_ORDER = 256


def _swap_last(cx: Ctx, x):
    rank = cx.rank(x)
    return _transpose(cx, x, list(range(rank - 2)) + [rank - 1, rank - 2])


@converts(torch.linalg.solve_triangular, aten.linalg_solve_triangular.default)
def _solve_triangular(cx: Ctx, a, b, *, upper: bool, left: bool = True, unitriangular: bool = False):
    if not left:  # X A = B  <=>  A^T X^T = B^T
        return _swap_last(cx, _solve_triangular(cx, _swap_last(cx, a), _swap_last(cx, b), upper=not upper,
                                                unitriangular=unitriangular))
    n = cx.shape(a)[-1]
    if cx.rank(a) < 2 or cx.shape(a)[-2] != n or cx.shape(b)[-2] != n:
        raise ShapeError(f'fx node "{cx.node_name}": solve_triangular of {list(cx.shape(a))} and '
                         f"{list(cx.shape(b))} (a square matrix and one of as many rows)")
    if n > MAX_ORDER:
        raise UnsupportedError(f'fx node "{cx.node_name}": solve_triangular of order {n} (trident takes '
                               f"up to {MAX_ORDER}, as matrix products)")
    dtype = cx.dtype(a)
    zero = torch.zeros((), dtype=dtype)
    off = torch.ones(n, n, dtype=torch.bool).triu(1) if upper else torch.ones(n, n, dtype=torch.bool).tril(-1)
    strict = cx.emit("where", [off, a, zero])  # the triangle below (above) the diagonal
    if not unitriangular:
        diagonal = cx.emit("reduce_sum", [cx.emit("where", [torch.eye(n, dtype=torch.bool), a, zero])],
                           axes=[cx.rank(a) - 1], keepdims=True)  # [..., n, 1]
        strict = cx.emit("div", [strict, diagonal])
        b = cx.emit("div", [b, diagonal])
    power = cx.emit("neg", [strict])  # M, with T = I - M
    x = b
    for step in range(max(1, math.ceil(math.log2(n)))):
        x = cx.emit("add", [x, cx.emit("matmul", [power, x])])
        if 2 ** (step + 1) < n:
            power = cx.emit("matmul", [power, power])
    return x
