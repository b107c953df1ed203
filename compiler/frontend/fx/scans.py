"""Converter of torch's associative_scan higher-order op, for the combine functions the scan
generator has a kernel for.

`torch._higher_order_ops.associative_scan(combine_fn, xs, dim, combine_mode="pointwise")` (CUDA
only) reaches a torch.compile backend as `torch.ops.higher_order.associative_scan(combine_gm, xs,
additional_inputs)`: the leaves xs moved so the scan runs along dim 0, and combine_gm the traced
combine function, taking the left leaves, then the right ones. transformers' Mamba, FalconMamba,
Jamba and Zamba scan their selective state space so: two leaves (a, b) and the combine
((a_l, b_l), (a_r, b_r)) -> (a_l * a_r, a_r * b_l + b_r), whose second output is the linear
recurrence h[t] = a[t] * h[t-1] + b[t] (the IR's linear_scan) and whose first is the running
product of a.

The combine function is recognized by what it computes, not how it is written: run on random
float64 numbers (it is pointwise: dynamo checks that), it must agree with one of the forms below
on every draw (two different polynomials of these degrees agree on random reals with probability
0). One leaf: a sum (cumsum) or a product (cumprod); two: the linear recurrence. Anything else
stays in torch.
"""
from __future__ import annotations

from typing import Callable

import torch

from trident.compiler.errors import UnsupportedError
from trident.compiler.frontend.fx.context import Ctx
from trident.compiler.frontend.fx.registry import converts

# What a combine function may compute, by number of leaves: (IR scan ops, formula of the left
# and right leaves). The ops are the scans of each leaf's output, in order.
_FORMS: dict[int, list[tuple[tuple[str, ...], Callable]]] = {
    1: [(("cumsum",), lambda left, right: [left[0] + right[0]]),
        (("cumprod",), lambda left, right: [left[0] * right[0]])],
    2: [(("cumprod", "linear_scan"), lambda left, right: [left[0] * right[0],
                                                          right[0] * left[1] + right[1]])],
}
_DRAWS = 3


def _combine_form(combine: Callable, leaves: int) -> tuple[str, ...] | None:
    """The scan ops `combine` computes the leaves' scans as (_FORMS), or None."""
    gen = torch.Generator().manual_seed(0)
    draws = [[torch.randn(8, generator=gen, dtype=torch.float64) for _ in range(2 * leaves)]
             for _ in range(_DRAWS)]
    for ops, formula in _FORMS.get(leaves, []):
        if all(_agrees(combine, formula, draw[:leaves], draw[leaves:]) for draw in draws):
            return ops
    return None


def _agrees(combine: Callable, formula: Callable, left: list, right: list) -> bool:
    try:
        got = combine(*left, *right)
    except Exception:  # noqa: BLE001  (a combine function that takes no plain tensors)
        return False
    got = list(got) if isinstance(got, (list, tuple)) else [got]
    want = formula(left, right)
    # (rtol: a combine that computes in float32 still agrees; a different one is off by O(1))
    return len(got) == len(want) and all(
        isinstance(g, torch.Tensor) and g.shape == w.shape and torch.allclose(g.double(), w, rtol=1e-5, atol=1e-6)
        for g, w in zip(got, want))


@converts(torch.ops.higher_order.associative_scan)
def _associative_scan(cx: Ctx, combine_fn, xs, additional_inputs=()):
    xs = list(xs)
    ops = None if additional_inputs else _combine_form(combine_fn, len(xs))
    if ops is None:
        raise UnsupportedError(f'fx node "{cx.node_name}": associative_scan of {len(xs)} leaves whose combine '
                               "function is not a sum, a product or a linear recurrence "
                               "((a_l, b_l), (a_r, b_r)) -> (a_l * a_r, a_r * b_l + b_r)")
    if any(cx.shape(x) != cx.shape(xs[0]) for x in xs):
        raise UnsupportedError(f'fx node "{cx.node_name}": associative_scan of leaves of shapes '
                               f"{[cx.shape(x) for x in xs]}")
    if ops == ("cumprod", "linear_scan"):
        return [cx.emit("cumprod", [xs[0]], axis=0), cx.emit("linear_scan", xs, axis=0)]
    return [cx.emit(ops[0], xs, axis=0)]
