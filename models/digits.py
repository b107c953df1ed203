"""A small CNN for scikit-learn's bundled handwritten digits (8x8 grey images, 10 classes), with
trained weights shipped in the repo (digits_cnn.npz, made by `trident bench train-digits`): real data
for INT8 accuracy checks that need no download.

The split is fixed and needs no random numbers: image i is held out when i % 10 is 3, 7 or 9
(540 of the 1797 images); the other 1257 train the model (and calibrate INT8 engines).
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

WEIGHTS = Path(__file__).with_name("digits_cnn.npz")
HELD_OUT = (3, 7, 9)


class DigitsCNN(nn.Module):
    """[batch, 1, 8, 8] pixel intensities in [0, 1] -> [batch, 10] logits."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 16, 3, padding=1)
        self.conv2 = nn.Conv2d(16, 32, 3, padding=1)
        self.conv3 = nn.Conv2d(32, 32, 3, padding=1)
        self.fc = nn.Linear(32 * 2 * 2, 10)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = self.pool(torch.relu(self.conv2(x)))
        x = self.pool(torch.relu(self.conv3(x)))
        return self.fc(torch.flatten(x, 1))


def load_digits_split() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(train images, train labels, held-out images, held-out labels); images [n, 1, 8, 8] fp32."""
    from sklearn.datasets import load_digits  # the test extra; bundled with scikit-learn

    data = load_digits()
    images = torch.tensor(data.images, dtype=torch.float32).unsqueeze(1) / 16.0
    labels = torch.tensor(data.target, dtype=torch.int64)
    held = torch.tensor([i % 10 in HELD_OUT for i in range(len(labels))])
    return images[~held], labels[~held], images[held], labels[held]


def digits_cnn(weights: Path | None = WEIGHTS) -> DigitsCNN:
    """The model in eval mode, with the shipped trained weights (stored as fp16, used as fp32)."""
    model = DigitsCNN()
    if weights is not None:
        state = np.load(weights)
        model.load_state_dict({k: torch.from_numpy(state[k].astype(np.float32)) for k in state.files})
    return model.eval()


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 accuracy in percent."""
    return 100.0 * float((logits.argmax(dim=1) == labels).float().mean())
