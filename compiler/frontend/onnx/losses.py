"""Converters of ONNX NegativeLogLikelihoodLoss and SoftmaxCrossEntropyLoss."""
from __future__ import annotations

from trident.compiler.errors import ModelError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter


def _nll(cx: NodeContext, log_prob: str, target: str) -> str:
    reduction = cx.str_attr("reduction", "mean")
    if reduction not in ("none", "sum", "mean"):
        raise cx.error(ModelError, f"reduction must be none, sum or mean, got {reduction!r}")
    weight = [cx.input(2)] if cx.has(2) else []
    return cx.emit("nll_loss", log_prob, target, *weight, reduction=reduction,
                   ignore_index=cx.int_attr("ignore_index"))


@converter("NegativeLogLikelihoodLoss")
def _negative_log_likelihood_loss(cx):
    return [_nll(cx, cx.input(0), cx.input(1))]


@converter("SoftmaxCrossEntropyLoss")
def _softmax_cross_entropy_loss(cx):
    log_prob = cx.emit("log_softmax", cx.input(0), axis=1)
    return [_nll(cx, log_prob, cx.input(1)), log_prob]
