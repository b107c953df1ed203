"""Helpers for checking compiled graphs against the reference executor (used by trident's tests
and by kernel developers' own tests)."""
from __future__ import annotations

from typing import Sequence

import torch

from trident.compiler.ir import Graph

# Explicit tolerances per precision: (rtol, atol) per element, on outputs of magnitude ~1.
TOLERANCES = {"fp32": (1e-4, 1e-5), "fp16": (2e-2, 2e-2)}


def compile_and_run(graph: Graph, inputs: Sequence[torch.Tensor], precision: str = "fp32"):
    from trident.compiler.build import compile_graph
    from trident.runtime.engine import Engine

    engine = Engine(compile_graph(graph, precision))
    device = engine.device
    return engine, engine(*[x.to(device) for x in inputs])


def assert_matches_reference(graph: Graph, inputs: Sequence[torch.Tensor], precision: str = "fp32",
                             tolerance: tuple[float, float] | None = None, max_kernels: int | None = None):
    """Compile `graph`, run it, and compare every output with the reference executor (fp32)."""
    from trident.compiler.reference import run_reference

    expected = run_reference(graph, list(inputs))
    engine, got = compile_and_run(graph, inputs, precision)
    rtol, atol = tolerance or TOLERANCES[precision]
    for k, (g, e) in enumerate(zip(got, expected)):
        g = g.cpu()
        assert g.shape == e.shape, f"output {k}: shape {tuple(g.shape)} != {tuple(e.shape)}"
        if e.dtype.is_floating_point:
            torch.testing.assert_close(g.float(), e.float(), rtol=rtol, atol=atol,
                                       msg=lambda m: f"output {k} at {precision}: {m}")
        else:
            assert torch.equal(g, e), f"output {k} ({e.dtype}) differs"
    if max_kernels is not None:
        assert engine.num_kernels <= max_kernels, f"{engine.num_kernels} kernels > {max_kernels}"
    return engine
