"""trident's exception types. Every failure a user can cause surfaces as one of these,
naming where (node, op type, opset, input) and what was expected."""
from __future__ import annotations


class TridentError(Exception):
    """Base class of every error trident raises on purpose."""


class ModelError(TridentError):
    """The model itself is malformed: fails the ONNX checker, missing initializer, bad attributes."""


class UnsupportedError(TridentError):
    """A valid model uses something trident does not implement (op, dtype, dynamic shape)."""


class ShapeError(TridentError):
    """Shapes or dtypes of a node's inputs do not fit together."""


class InputError(TridentError):
    """Inputs handed to an engine at run time do not match what it was built for."""


class OutOfBoundsError(TridentError):
    """A kernel accessed memory outside the tensors passed to its launch (the bounds sanitizer,
    compiler/sanitizer.py, found it): a bug in trident, never the model's fault."""


class InternalError(TridentError):
    """A compiler stage failed in a way it should not (a bug in trident): the message names the
    stage and the graph, and the original exception is its cause."""


class EngineFileError(TridentError):
    """An engine file is truncated, corrupted, or built for another GPU or software version."""


class CacheError(TridentError):
    """A cache (kernels, autotuning) cannot be used at all: its folder is unreadable or in the way."""


class CacheWarning(UserWarning):
    """A cache file (kernel, autotune entry, timing cache) could not be used as it was; it is
    ignored and rebuilt."""


CLEAR_HINT = "`trident cache clear` removes trident's caches"


def where(node=None, op: str | None = None, opset: int | None = None) -> str:
    """'node "conv1" (op Conv, opset 17)': the location prefix every node error starts with."""
    parts = []
    name = getattr(node, "name", None) if node is not None else None
    op = op or (getattr(node, "op", None) if node is not None else None)
    if name:
        parts.append(f'node "{name}"')
    detail = ", ".join(x for x in (f"op {op}" if op else "", f"opset {opset}" if opset else "") if x)
    if detail:
        parts.append(f"({detail})")
    return " ".join(parts) or "graph"
