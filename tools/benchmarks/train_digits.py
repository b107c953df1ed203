"""`trident bench train-digits`: train DigitsCNN on scikit-learn's digits (the training split of
trident.models.digits) and write models/digits_cnn.npz (15k parameters stored as fp16: about 28 KB),
the weights `trident bench accuracy` and the INT8 accuracy tests use.

    trident bench train-digits [--out models/digits_cnn.npz]

Deterministic: fixed seed, one CPU thread, a fixed batch order; the same torch version gives the
same weights.
"""
from __future__ import annotations

import argparse

import numpy as np
import torch
import torch.nn.functional as F

from trident.compiler.progress import progress
from trident.models.digits import WEIGHTS, DigitsCNN, accuracy, load_digits_split
from trident.tools.common import output_path

HELP = "train the bundled digits CNN's weights (CPU, deterministic)"


def train(epochs: int = 60, batch: int = 32, lr: float = 3e-3, seed: int = 0) -> DigitsCNN:
    torch.manual_seed(seed)
    torch.set_num_threads(1)
    x_train, y_train, x_test, y_test = load_digits_split()
    model = DigitsCNN()
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    g = torch.Generator().manual_seed(seed)
    for epoch in progress(range(epochs), desc="training the digits CNN", unit="epoch"):
        model.train()
        order = torch.randperm(len(y_train), generator=g)
        for k in range(0, len(order), batch):
            idx = order[k:k + batch]
            x = x_train[idx]
            # light augmentation: shift by up to one pixel
            dx, dy = (int(v) for v in torch.randint(-1, 2, (2,), generator=g))
            x = torch.roll(x, shifts=(dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        print(f"{epochs} epochs: last loss {loss.item():.4f}, held-out accuracy "
              f"{accuracy(model(x_test), y_test):.2f}%")
    return model


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default=str(WEIGHTS), help="the weights file to write")


def run(args: argparse.Namespace) -> int:
    model = train()
    np.savez_compressed(output_path(args.out), **{k: v.detach().numpy().astype(np.float16)
                                                   for k, v in model.state_dict().items()})
    print(f"wrote {args.out}")
    return 0
