"""Random indexing of a [4, 5, 6] tensor through torch.compile(backend="trident"), against eager
torch (compiler/frontend/fx/indexing.py, decompose.py): per dim a full slice, an int, a slice, or
an index tensor (a run-time input or a constant; broadcast shapes, negative entries), read
(`y[idx]`) or written (`y[idx] = v`, `y[idx] += 1`). ints and slices index first (torch's rule,
not numpy's); index tensors on separated axes put their dims first. Every result must match
eager, and every program must run in trident's kernels."""
from __future__ import annotations

import random

import pytest
import torch

from trident.compiler.testing import compile_with_reports

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # (tests/conftest.py)

DIMS = (4, 5, 6)
INDEX_SHAPES = [(3,), (2, 1), (1, 3), (2, 3)]


def program(seed: int):
    """(items, run-time index tensors, constant index tensors, mode)."""
    rng = random.Random(seed)
    items, runtime, constant = [], [], []
    for d, n in enumerate(DIMS):
        kind = rng.choice(["full", "int", "slice", "runtime", "constant"])
        if kind == "int":
            items.append(rng.randrange(-n, n))
        elif kind == "slice":
            start = rng.randrange(0, n - 1)
            items.append(slice(start, rng.randrange(start + 1, n + 1)))
        elif kind == "full":
            items.append(slice(None))
        else:
            index = torch.randint(-n, n, rng.choice(INDEX_SHAPES), generator=torch.Generator().manual_seed(seed * 7 + d))
            (runtime if kind == "runtime" else constant).append(index)
            items.append((kind, len(runtime if kind == "runtime" else constant) - 1))
    return items, runtime, constant, rng.choice(["read", "read", "write", "add"])


class Indexing(torch.nn.Module):
    def __init__(self, items, constant, mode):
        super().__init__()
        self.items, self.constant, self.mode = items, constant, mode

    def forward(self, x, *runtime):
        index = tuple((runtime if k[0] == "runtime" else self.constant)[k[1]] if isinstance(k, tuple) else k
                      for k in self.items)
        y = x * 2
        if self.mode == "read":
            return y[index] + 1
        if self.mode == "write":
            y[index] = -3.0
        else:
            y[index] += 1.0
        return y * 1


@pytest.mark.parametrize("seed", range(40))
def test_random_indexing(seed):
    items, runtime, constant, mode = program(seed)
    x = torch.randn(*DIMS, generator=torch.Generator().manual_seed(seed))
    module = Indexing(items, constant, mode)
    want = module(x.clone(), *runtime)  # (the index shapes broadcast together, any two of them)
    got, reports = compile_with_reports(module, x.clone(), *runtime)
    torch.testing.assert_close(got, want, rtol=0, atol=1e-6, msg=lambda m: f"{items} {mode}: {m}")
    assert [i for r in reports for i in r.in_torch] == []
