"""Loss functions some exported graphs keep: NegativeLogLikelihoodLoss (SoftmaxCrossEntropyLoss is
log_softmax followed by it). They gather by class index, so they run through torch."""
from __future__ import annotations

import torch

from trident.compiler.ops.common import checked_indices
from trident.compiler.ops.registry import Kind, op


@op("nll_loss", Kind.OPAQUE)
def nll_loss(x, target, weight=None, *, reduction: str = "mean", ignore_index: int | None = None):
    """ONNX NegativeLogLikelihoodLoss: x [N, C, d...] log-probabilities, target [N, d...] class
    indices; loss = -x[n, target, d] * weight[target], 0 where target == ignore_index.
    'mean' divides by the summed weights of the counted targets."""
    ignored = torch.zeros_like(target, dtype=torch.bool) if ignore_index is None \
        else target == ignore_index
    classes = checked_indices(torch.where(ignored, 0, target), x.shape[1], "NegativeLogLikelihoodLoss")
    picked = -torch.gather(x, 1, classes.unsqueeze(1)).squeeze(1)
    w = torch.ones_like(picked) if weight is None else weight.to(x.dtype)[classes]
    w = torch.where(ignored, torch.zeros_like(w), w)
    loss = picked * w
    if reduction == "none":
        return loss
    if reduction == "sum":
        return loss.sum()
    return loss.sum() / w.sum()
