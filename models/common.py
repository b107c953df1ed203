"""Helpers shared by the bundled models: deterministic construction, realistic BN statistics."""
from __future__ import annotations

import contextlib
from typing import Callable, Iterator

import torch
import torch.nn as nn


@contextlib.contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Build under a fixed seed without disturbing the caller's random stream."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


@torch.no_grad()
def calibrate_batchnorm(model: nn.Module, make_batch: Callable[[], tuple], steps: int = 2) -> None:
    """Give every BatchNorm the running statistics of real activations, plus a random affine.

    Freshly initialized BN layers hold mean 0 / var 1 / weight 1 / bias 0, so in eval mode they
    are the identity and a test would never notice a wrong BN (or BN-folding) implementation.
    A few forward passes in training mode with a cumulative average (momentum=None) record the
    real statistics; activations then stay near unit scale through deep networks (fp16-safe).
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [(m, m.momentum) for m in bns]
    model.train()
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    for _ in range(steps):
        model(*make_batch())
    for m, momentum in saved:
        m.momentum = momentum
        m.weight.uniform_(0.5, 1.5)
        m.bias.normal_(0.0, 0.1)
    model.eval()
