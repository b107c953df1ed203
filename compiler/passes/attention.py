"""Recognize attention spelled out in ops and rewrite it to one `attention` node (one fused kernel).

Exporters write scaled dot-product attention as

    scores = MatMul(Q, K^T)  -> Mul / Div by a scale  -> Add mask (0..n) -> Softmax(last axis)
    out    = MatMul(scores, V)

with variations this pass accepts: the scale on Q and K^T separately (sqrt(scale) each, as torch's
ONNX exporter and transformers write it) or after the mask add (the mask is then scaled too); K^T
as a transpose of K, of a head-split K, or of anything else (K is then that transpose, undone: a
view); a masked_fill-style `Where(cond, scores, -inf)` (a boolean mask); casts around the softmax
(an fp16 model's fp32 softmax). Every intermediate must feed only the next op of the pattern, or
the scores would be needed in memory anyway.

A constant mask that is exactly causal (0 on and below the diagonal, -inf or a huge negative above,
top-left or bottom-right aligned) becomes the node's `causal` attribute: the kernel then skips the
masked blocks instead of reading the mask.
"""
from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.rewrite import Rebuild, rewrite

# A masked_fill value, or the masked entries of a constant additive mask, this negative or lower
# disables a key: exp of it underflows to 0 in fp32 next to any finite score, and added to a score
# in fp32 it absorbs the score entirely (so even a row with no visible key matches).
HUGE_NEGATIVE = -1e30


@dataclass
class _Match:
    v: str
    q: str = ""              # Q = q.permute(q_perm), times the part of the scale found on Q's side
    q_perm: tuple[int, ...] = ()
    k_source: str = ""       # K = k_source.permute(k_perm): K^T's view chain, undone
    k_perm: tuple[int, ...] = ()
    scale: float = 1.0
    additive: list[tuple[str, float]] = field(default_factory=list)  # (mask, factor it is scaled by)
    keep: list[tuple[str, bool]] = field(default_factory=list)       # (bool mask, negated)


    def copy(self) -> "_Match":
        return dataclasses.replace(self, additive=list(self.additive), keep=list(self.keep))


class _Graph:
    """Producer / consumer lookups over the graph the pass reads."""

    def __init__(self, graph: Graph):
        self.graph = graph
        self.producers = graph.producers()
        self.consumers = graph.consumers()

    def single_use(self, value: str) -> Node | None:
        """The producer of `value` if only one node reads `value` and it is no graph output."""
        if value in self.graph.outputs or len(self.consumers.get(value, [])) != 1:
            return None
        return self.producers.get(value)

    def scalar(self, value: str) -> float | None:
        tensor = self.graph.constants.get(value)
        if tensor is None or tensor.numel() != 1 or not tensor.dtype.is_floating_point:
            return None
        return float(tensor.reshape(-1)[0])

    def shape(self, value: str) -> tuple:
        return tuple(self.graph.types[value].shape)


def _scale_of(node: Node, chain: str, g: _Graph) -> float | None:
    """The factor a mul / div by a scalar constant applies to `chain`, or None."""
    if node.op == "mul":
        other = node.inputs[1] if node.inputs[0] == chain else node.inputs[0]
        return g.scalar(other)
    if node.op == "div" and node.inputs[0] == chain:
        divisor = g.scalar(node.inputs[1])
        return None if not divisor else 1.0 / divisor
    return None


def _strip_scales(value: str, g: _Graph) -> tuple[str, float]:
    """Walk back through single-use scalar muls / divs: (the unscaled value, the product)."""
    factor = 1.0
    while (node := g.single_use(value)) is not None and node.op in ("mul", "div"):
        chain = node.inputs[0] if node.op == "div" or g.scalar(node.inputs[1]) is not None else node.inputs[1]
        step = _scale_of(node, chain, g)
        if step is None:
            break
        factor *= step
        value = chain
    return value, factor


def _as_permutation(source_shape: tuple, views: list[Node], swap_last: bool) -> tuple[int, ...] | None:
    """The perm P with views(source) (then its last two dims swapped) == source.permute(P), if the
    views are strides-only on a dense source and amount to a permutation; else None. (Exporters
    write K^T of [B, H, L, D] as reshape [B*H, L, D] -> transpose -> reshape [B, H, D, L].)"""
    t = torch.empty(source_shape, device="meta")
    try:
        for node in views:
            t = t.view(tuple(node.attrs["shape"])) if node.op == "reshape" else t.permute(tuple(node.attrs["perm"]))
    except RuntimeError:
        return None  # a step that would copy
    if swap_last:
        t = t.transpose(-1, -2)
    dense = torch.empty(source_shape, device="meta")
    for perm in itertools.permutations(range(len(source_shape))):
        p = dense.permute(perm)
        if p.shape == t.shape and all(a == b for a, b, n in zip(p.stride(), t.stride(), t.shape) if n != 1):
            return perm
    return None


def _view_source(value: str, g: _Graph, swap_last: bool) -> tuple[str, tuple[int, ...], float]:
    """(source, perm, factor) with `value` (its last two dims swapped if swap_last) equal to
    factor * source.permute(perm), walking back through single-use transposes, reshapes and scalar
    scales as far as they still amount to one permutation (so a scale behind views is found)."""
    steps: list[tuple[str, Node | None, float]] = [(value, None, 1.0)]  # (value, view made from it, factor)
    factor = 1.0
    while (node := g.single_use(steps[-1][0])) is not None:
        if node.op in ("transpose", "reshape"):
            steps.append((node.inputs[0], node, factor))
            continue
        unscaled, step = _strip_scales(steps[-1][0], g)
        if unscaled == steps[-1][0]:
            break
        factor *= step
        steps.append((unscaled, None, factor))
    for j in range(len(steps) - 1, -1, -1):
        source, _, scale = steps[j]
        views = [view for _, view, _ in reversed(steps[1:j + 1]) if view is not None]
        perm = _as_permutation(g.shape(source), views, swap_last)
        if perm is not None:
            return source, perm, scale
    raise AssertionError("an empty view chain is always a permutation")


def _mask_step(node: Node, chain: str, factor: float, m: _Match, g: _Graph) -> str | None:
    """Record the mask an add / where applies to `chain`; returns the chain's input, or None."""
    if node.op == "add":
        mask = node.inputs[1] if node.inputs[0] == chain else node.inputs[0]
        if g.shape(node.outputs[0]) != g.shape(chain):
            return None  # the mask broadcasts the scores to a bigger shape
        m.additive.append((mask, factor))
        return chain
    if node.op == "where":
        cond, a, b = node.inputs
        if a == chain and (fill := g.scalar(b)) is not None and fill == -math.inf:
            m.keep.append((cond, False))
        elif b == chain and (fill := g.scalar(a)) is not None and fill == -math.inf:
            m.keep.append((cond, True))
        else:
            return None
        if factor <= 0 or g.shape(node.outputs[0]) != g.shape(chain):
            return None  # -inf scaled by a negative factor would enable the key
        return chain
    return None


def _scores_chain(value: str, factor: float, m: _Match, g: _Graph) -> str | None:
    """From the softmax input back to the Q K^T matmul: the matmul's output, or None. `factor` is
    what the values seen so far (walking back) are multiplied by before the softmax. An add of two
    score-shaped values is tried both ways round (which one is the mask is not known up front)."""
    node = g.single_use(value)
    if node is None:
        return None
    if node.op == "matmul":
        m.scale *= factor
        return value
    if node.op == "cast" and node.attrs["dtype"].is_floating_point:
        return _scores_chain(node.inputs[0], factor, m, g)
    for chain in dict.fromkeys(i for i in node.inputs if g.shape(i) == g.shape(value)):
        trial = m.copy()
        step = _scale_of(node, chain, g)
        if step is not None:
            found = _scores_chain(chain, factor * step, trial, g)
        elif _mask_step(node, chain, factor, trial, g) is not None:
            found = _scores_chain(chain, factor, trial, g)
        else:
            continue
        if found is not None:
            m.__dict__.update(trial.__dict__)
            return found
    return None


def match(pv: Node, g: _Graph) -> _Match | None:
    """The attention whose last op is `pv` = matmul(probabilities, V), or None."""
    if pv.op != "matmul" or len(pv.inputs) != 2:
        return None
    probs = g.single_use(pv.inputs[0])
    if probs is not None and probs.op == "cast" and probs.attrs["dtype"].is_floating_point:
        probs = g.single_use(probs.inputs[0])
    if probs is None or probs.op != "softmax":
        return None
    rank = len(g.shape(probs.outputs[0]))
    if rank not in (3, 4) or probs.attrs.get("axis", -1) % rank != rank - 1:
        return None
    m = _Match(pv.inputs[1])
    scores = _scores_chain(probs.inputs[0], 1.0, m, g)
    if scores is None:
        return None
    qk = g.producers[scores]
    q, k_t = qk.inputs[:2]
    batch = g.shape(q)[:-2]
    if any(len(g.shape(v)) != rank for v in (q, k_t, m.v)) or g.shape(k_t)[:-2] != batch or \
            g.shape(m.v)[:-2] != batch:
        return None  # matmuls that broadcast batch dims are not one attention
    m.q, m.q_perm, q_scale = _view_source(q, g, swap_last=False)
    m.k_source, m.k_perm, k_scale = _view_source(k_t, g, swap_last=True)
    m.scale *= q_scale * k_scale
    if len({g.graph.types[v].dtype for v in (m.q, m.k_source, m.v)}) != 1:
        return None
    if not math.isfinite(m.scale) or m.scale == 0:
        return None
    return m


# ----------------------------------------------------------------------------- rewriting ----
def causal_alignment(mask: torch.Tensor, lq: int, lk: int) -> str | None:
    """"top_left" / "bottom_right" if a constant mask is exactly a causal one, else None."""
    if mask.dim() < 2 or tuple(mask.shape[-2:]) != (lq, lk) or mask.numel() != lq * lk:
        return None
    mask = mask.reshape(lq, lk)
    if mask.dtype == torch.bool:
        visible = mask
    else:
        visible = mask == 0
        if not bool((visible | (mask <= HUGE_NEGATIVE)).all()):
            return None
    for alignment, offset in (("top_left", 0), ("bottom_right", lk - lq)):
        if torch.equal(visible, torch.ones(lq, lk, dtype=torch.bool).tril(offset)):
            return alignment
    return None


def _constant_causal(rb: Rebuild, value: str, factor: float, lq: int, lk: int) -> str | None:
    tensor = rb.constant(value)
    if tensor is None or factor <= 0:
        return None
    return causal_alignment(tensor if factor == 1.0 else tensor * factor, lq, lk)


def _emit_mask(m: _Match, rb: Rebuild, name: str, lq: int, lk: int) -> tuple[str | None, str | None]:
    """(mask, causal) for the attention node. A constant causal mask becomes `causal`; the other
    additive masks are summed (each scaled as it was), the boolean ones and-ed; both kinds at once:
    the boolean ones as a 0 / -inf additive mask."""
    b = rb.builder
    causal = None
    additive = []
    for mask, factor in m.additive:
        alignment = None if causal else _constant_causal(rb, mask, factor, lq, lk)
        if alignment is not None:
            causal = alignment
            continue
        value = rb.value(mask)
        if factor != 1.0:
            scale = b.constant(torch.tensor(factor, dtype=b.type_of(value).dtype), f"{name}.mask_scale")
            value = b.add1("mul", [value, scale], name=f"{name}.mask_scale")
        additive.append(value)
    keep = []
    for cond, negated in m.keep:
        alignment = None if causal or negated else _constant_causal(rb, cond, 1.0, lq, lk)
        if alignment is not None:
            causal = alignment
            continue
        value = rb.value(cond)
        keep.append(b.add1("not", [value], name=f"{name}.mask_not") if negated else value)
    if keep:
        mask = keep[0]
        for other in keep[1:]:  # where(a, b, a) is a and b
            mask = b.add1("where", [mask, other, mask], name=f"{name}.mask_and")
        if not additive:
            return mask, causal
        dtype = b.type_of(additive[0]).dtype
        zero, minus_inf = (b.constant(torch.tensor(x, dtype=dtype), f"{name}.mask_fill") for x in (0.0, -math.inf))
        additive.append(b.add1("where", [mask, zero, minus_inf], name=f"{name}.mask_bias"))
    if not additive:
        return None, causal
    total = additive[0]
    for other in additive[1:]:
        total = b.add1("add", [total, other], name=f"{name}.mask_sum")
    return total, causal


def _permuted(rb: Rebuild, value: str, perm: tuple[int, ...], name: str) -> str:
    if perm == tuple(range(len(perm))):
        return rb.value(value)
    return rb.builder.add1("transpose", [rb.value(value)], {"perm": list(perm)}, name=name)


def _emit(m: _Match, pv: Node, rb: Rebuild) -> list[str]:
    b = rb.builder
    name = pv.name or "attention"
    q = _permuted(rb, m.q, m.q_perm, f"{name}.query")
    k = _permuted(rb, m.k_source, m.k_perm, f"{name}.key")
    v = rb.value(m.v)
    lq, lk = b.type_of(q).shape[-2], b.type_of(k).shape[-2]
    mask, causal = _emit_mask(m, rb, name, lq, lk)
    attrs = {"scale": m.scale} | ({"causal": causal} if causal else {})
    out = b.add1("attention", [q, k, v] + ([mask] if mask is not None else []), attrs, name=name)
    want = rb.source.types[pv.outputs[0]].dtype
    if b.type_of(out).dtype != want:
        out = b.add1("cast", [out], {"dtype": want}, name=f"{name}.cast")
    return [out]


def fuse_attention(graph: Graph) -> Graph:
    """Every matched attention pattern becomes one `attention` node (its old ops die)."""
    g = _Graph(graph)

    def rewrite_node(node: Node, rb: Rebuild):
        m = match(node, g)
        return None if m is None else _emit(m, node, rb)

    return eliminate_dead_code(rewrite(graph, rewrite_node))
