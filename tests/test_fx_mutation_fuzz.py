"""Random programs of in-place writes through basic-indexing views (compiler/fx_mutation.py)
through torch.compile(backend="trident"), against eager torch: views of views, writes into the
whole tensor and into views (add_, mul_, copy_, fill_, +=, slice assignment), reads in between.
Every result must match eager; a write trident cannot make explicit runs the graph in torch (also
right), and most programs must run in trident's kernels."""
from __future__ import annotations

import random

import pytest
import torch

from trident.compiler.testing import compile_with_reports

pytestmark = pytest.mark.usefixtures("fresh_dynamo")  # (tests/conftest.py)

INDICES = [(0,), (slice(1, None),), (slice(None), slice(0, 3)), (slice(None), 2), (Ellipsis, slice(2, 5)),
           (slice(1, 3), slice(1, None, 2)), (2, slice(None, 4))]
WRITES = ["add_", "mul_", "copy_", "fill_", "iadd", "setitem"]
SEEDS = range(40)


def _takes(shape: torch.Tensor, index) -> bool:
    try:
        view = shape[index]
    except IndexError:
        return False
    return view.dim() > 0 and view.numel() > 0


def program(seed: int) -> list[tuple]:
    """Steps over named tensors: ("view", of, index, name), ("write", into, op, index), ("read", of)."""
    rng = random.Random(seed)
    steps, shapes = [], {"y": torch.empty(4, 6)}
    for k in range(rng.randint(3, 7)):
        kind = rng.choice(["view", "write", "write", "read"])
        name = rng.choice(sorted(shapes))
        indices = [i for i in INDICES if _takes(shapes[name], i)]
        if kind == "view" and indices:
            index = rng.choice(indices)
            shapes[f"v{k}"] = shapes[name][index]
            steps.append(("view", name, index, f"v{k}"))
        elif kind == "write":
            steps.append(("write", name, rng.choice(WRITES), rng.choice(indices or [Ellipsis])))
        else:
            steps.append(("read", name))
    return steps


class Program(torch.nn.Module):
    def __init__(self, steps):
        super().__init__()
        self.steps = steps

    def forward(self, x):
        return self.run({"y": x * 1.5}, x)

    def run(self, tensors: dict, x):
        total = torch.zeros((), device=x.device)
        for step in self.steps:
            if step[0] == "view":
                tensors[step[3]] = tensors[step[1]][step[2]]
            elif step[0] == "read":
                total = total + tensors[step[1]].sum() * 0.1
            else:
                self.write(tensors[step[1]], step[2], step[3], x)
        return tensors["y"] * 1 + total

    @staticmethod
    def write(t, op, index, x):
        if op == "add_":
            t.add_(x.mean() + 1)
        elif op == "mul_":
            t.mul_(-0.5)
        elif op == "copy_":
            t.copy_(t * 2 + 1)
        elif op == "fill_":
            t.fill_(3.0)
        elif op == "iadd":
            t += 0.25
        else:
            t[index] = 7.0


def run_compiled(seed: int):
    steps = program(seed)
    x = torch.randn(4, 6, generator=torch.Generator().manual_seed(seed))
    got, reports = compile_with_reports(Program(steps), x.clone())
    return steps, x, got, all(not r.in_torch for r in reports)


@pytest.mark.parametrize("seed", SEEDS)
def test_random_writes_through_views(seed):
    steps, x, got, _ = run_compiled(seed)
    torch.testing.assert_close(got, Program(steps)(x.clone()), rtol=1e-5, atol=1e-5, msg=lambda m: f"{steps}: {m}")


def test_most_programs_run_in_kernels():
    in_kernels = 0
    for seed in SEEDS:
        torch._dynamo.reset()
        in_kernels += run_compiled(seed)[3]
    assert in_kernels >= 0.8 * len(SEEDS), f"{in_kernels} of {len(SEEDS)} in trident's kernels"


class InputProgram(Program):
    """The same steps with the graph input itself as y: its writes are the caller's state."""

    def forward(self, y, x):
        return self.run({"y": y}, x)


@pytest.mark.parametrize("seed", SEEDS[::4])
def test_random_writes_into_a_graph_input(seed):
    """Writes into the input (and views of it) are copied back after each run
    (fx_mutation.return_written_inputs): two calls, the outputs and the input as eager leaves
    them, all in kernels."""
    from trident.compiler.dynamo import recording_backend

    steps, gen = program(seed), torch.Generator().manual_seed(seed)
    model = InputProgram(steps)
    backend, reports = recording_backend({"precision": "fp32"})
    compiled = torch.compile(model, backend=backend)
    y = torch.randn(4, 6, generator=gen)
    mine, eager = y.clone(), y.clone()
    for _ in range(2):
        x = torch.randn(4, 6, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(compiled(mine, x), model(eager, x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(mine, eager, rtol=1e-5, atol=1e-5, msg=lambda m: f"{steps}: {m}")
    assert all(not r.in_torch for r in reports), [i for r in reports for i in r.in_torch]
