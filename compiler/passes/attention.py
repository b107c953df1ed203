"""Recognize attention spelled out in ops and rewrite it to one `attention` node (one fused kernel).

Exporters write scaled dot-product attention as

    scores = MatMul(Q, K^T)  -> Mul / Div by a scale  -> Add mask (0..n) -> Softmax(last axis)
    out    = MatMul(scores, V)

with variations this pass accepts: the scale on Q and K^T separately (sqrt(scale) each, as torch's
ONNX exporter and transformers write it) or after the mask add (the mask is then scaled too); K^T
as a transpose of K, of a head-split K, or of anything else (K is then that transpose, undone: a
view); a masked_fill-style `Where(cond, scores, -inf)` (a boolean mask); casts around the softmax
(an fp16 model's fp32 softmax); the `Where(IsNaN(p), 0, p)` guard both torch exporters write after
the softmax of a boolean-masked SDPA (the node's `zero_nan_rows`). Every intermediate must feed only
the next op of the pattern, or the scores would be needed in memory anyway.

A constant mask that is exactly causal (0 on and below the diagonal, -inf or a huge negative above,
top-left or bottom-right aligned) becomes the node's `causal` attribute: the kernel then skips the
masked blocks instead of reading the mask.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch

from trident.compiler.ir import Graph, Node
from trident.compiler.passes.cleanup import eliminate_dead_code
from trident.compiler.passes.lookup import GraphLookup
from trident.compiler.passes.rewrite import Rebuild, rewrite

# A masked_fill value, or the masked entries of a constant additive mask, this negative or lower
# disables a key: exp of it underflows to 0 in fp32 next to any finite score, and added to a score
# in fp32 it absorbs the score entirely (so even a row with no visible key matches).
HUGE_NEGATIVE = -1e30


@dataclass
class _Match:
    v: str
    q_of: str = ""           # the matmul's Q operand and K^T operand
    k_t: str = ""
    q: str = ""              # Q = q.permute(q_perm) (reshaped), times the part of the scale found on its side
    q_perm: tuple[int, ...] = ()
    k_source: str = ""       # K = k_source.permute(k_perm) (reshaped): K^T's view chain, undone
    k_perm: tuple[int, ...] = ()
    scale: float = 1.0
    # (mask, factor it is scaled by, added in the windowed space) and (bool mask, negated, windowed)
    additive: list[tuple[str, float, bool]] = field(default_factory=list)
    keep: list[tuple[str, bool, bool]] = field(default_factory=list)
    # Swin: the scores' batch dim split into (images, windows) around the window-mask add, as
    # reshape [I*W, H, N, N] -> [I, W, H, N, N] -> add -> reshape back; the walk is "inside" between.
    windows: tuple[int, int] | None = None
    inside: bool = False
    # The scores' batch dims as the softmax sees them, where a reshape between Q K^T and the
    # softmax regroups them (sink_reshapes leaves Q K^T on [B*H, L, S] and the softmax on
    # [B, H, L, S] for torch's ONNX export of nn.MultiheadAttention); Q and K^T are read in them.
    score_batch: tuple | None = None
    zero_nan_rows: bool = False  # behind a where(isnan(p), 0, p) guard

    def copy(self) -> "_Match":
        return dataclasses.replace(self, additive=list(self.additive), keep=list(self.keep))


def _scale_of(node: Node, chain: str, g: GraphLookup) -> float | None:
    """The factor a mul / div by a scalar constant applies to `chain`, or None."""
    if node.op == "mul":
        other = node.inputs[1] if node.inputs[0] == chain else node.inputs[0]
        return g.scalar(other)
    if node.op == "div" and node.inputs[0] == chain:
        divisor = g.scalar(node.inputs[1])
        return None if not divisor else 1.0 / divisor
    return None


def _strip_scales(value: str, g: GraphLookup) -> tuple[str, float]:
    """Walk back through single-use scalar muls / divs: (the unscaled value, the product)."""
    factor = 1.0
    while (node := g.single_use(value)) is not None and node.op in ("mul", "div"):
        chain = node.inputs[0] if node.op == "div" or g.scalar(node.inputs[1]) is not None else node.inputs[1]
        step = _scale_of(node, chain, g)
        if step is None or g.shape(chain) != g.shape(value):  # (a "scalar" of more dims broadcasts)
            break
        factor *= step
        value = chain
    return value, factor


def _as_permutation(source_shape: tuple, views: list[Node], swap_last: bool) -> tuple[int, ...] | None:
    """The perm P with views(source) (then its last two dims swapped) == source.permute(P) reshaped
    (a reshape that only adds or drops size-1 dims), if the views are strides-only on a dense source
    and move its elements as a permutation does; else None. (Exporters write K^T of [B, H, L, D] as
    reshape [B*H, L, D] -> transpose -> reshape [B, H, D, L], and slice Q out of a packed QKV with
    a leading size-1 dim.)"""
    t = torch.empty(source_shape, device="meta")
    try:
        for node in views:
            t = t.view(tuple(node.attrs["shape"])) if node.op == "reshape" else t.permute(tuple(node.attrs["perm"]))
    except RuntimeError:
        return None  # a step that would copy
    if swap_last:
        t = t.transpose(-1, -2)
    dense = torch.empty(source_shape, device="meta").stride()
    by_stride = {(size, dense[i]): i for i, size in enumerate(source_shape) if size != 1}
    order = [by_stride.get((size, stride)) for size, stride in zip(t.shape, t.stride()) if size != 1]
    if None in order or len(order) != len(by_stride):
        return None
    return tuple(order) + tuple(i for i, size in enumerate(source_shape) if size == 1)


def _view_source(value: str, g: GraphLookup, swap_last: bool) -> tuple[str, tuple[int, ...], float]:
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


def _mask_step(node: Node, chain: str, factor: float, m: _Match, g: GraphLookup) -> str | None:
    """Record the mask an add / where applies to `chain`; returns the chain's input, or None."""
    if node.op == "add":
        mask = node.inputs[1] if node.inputs[0] == chain else node.inputs[0]
        if g.shape(node.outputs[0]) != g.shape(chain):
            return None  # the mask broadcasts the scores to a bigger shape
        m.additive.append((mask, factor, m.inside))
        return chain
    if node.op == "where" and g.graph.types[node.inputs[0]].dtype == torch.bool:
        cond, a, b = node.inputs
        if a == chain and (fill := g.scalar(b)) is not None and fill == -math.inf:
            m.keep.append((cond, False, m.inside))
        elif b == chain and (fill := g.scalar(a)) is not None and fill == -math.inf:
            m.keep.append((cond, True, m.inside))
        else:
            return None
        if factor <= 0 or g.shape(node.outputs[0]) != g.shape(chain):
            return None  # -inf scaled by a negative factor would enable the key
        return chain
    return None


def _scores_chain(value: str, factor: float, m: _Match, g: GraphLookup) -> str | None:
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
    if node.op == "reshape":
        return _window_step(node, value, factor, m, g) or _batch_step(node, value, factor, m, g)
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


def _window_step(node: Node, value: str, factor: float, m: _Match, g: GraphLookup) -> str | None:
    """Walk back through one reshape of Swin's window-mask sandwich: the merge [I, W, H, N, N] ->
    [I*W, H, N, N] (entering the windowed space), then the split it undoes (leaving it)."""
    src, dst = g.shape(node.inputs[0]), g.shape(value)
    trial = m.copy()
    if not m.inside and m.windows is None and len(src) == 5 and len(dst) == 4 and src[2:] == dst[1:]:
        trial.windows, trial.inside = src[:2], True
    elif m.inside and len(src) == 4 and len(dst) == 5 and dst[:2] == m.windows and dst[2:] == src[1:]:
        trial.inside = False
    else:
        return None
    found = _scores_chain(node.inputs[0], factor, trial, g)
    if found is not None:
        m.__dict__.update(trial.__dict__)
    return found


def _batch_step(node: Node, value: str, factor: float, m: _Match, g: GraphLookup) -> str | None:
    """Walk back through a reshape that only regroups the scores' batch dims (the last two kept).
    Nothing but scales may sit between it and Q K^T: a mask there would be in the other grouping."""
    src, dst = g.shape(node.inputs[0]), g.shape(value)
    if m.windows is not None or m.score_batch is not None or src[-2:] != dst[-2:] or \
            math.prod(src[:-2]) != math.prod(dst[:-2]):
        return None
    trial = m.copy()
    trial.score_batch = tuple(dst[:-2])
    found = _scores_chain(node.inputs[0], factor, trial, g)
    if found is None or (trial.additive, trial.keep) != (m.additive, m.keep):
        return None
    m.__dict__.update(trial.__dict__)
    return found


def _nan_guarded(guard: Node, g: GraphLookup) -> Node | None:
    """The softmax behind `guard` = where(isnan(p), 0, p), when nothing else reads p or isnan(p)."""
    if guard.op != "where" or len(guard.inputs) != 3:
        return None
    cond, zero, p = guard.inputs
    is_nan, probs = g.single_use(cond), g.producers.get(p)
    if is_nan is None or is_nan.op != "is_nan" or is_nan.inputs[0] != p or g.scalar(zero) != 0.0:
        return None
    if probs is None or p in g.graph.outputs or {id(n) for n in g.consumers.get(p, [])} != {id(guard), id(is_nan)}:
        return None
    return probs


def _probabilities(pv: Node, g: GraphLookup) -> tuple[Node | None, bool]:
    """(the softmax whose probabilities `pv` reads, through casts and the NaN guard, whether it is
    guarded), or (None, False)."""
    probs, guarded = g.single_use(pv.inputs[0]), False
    while probs is not None and probs.op in ("cast", "where"):
        if probs.op == "cast" and probs.attrs["dtype"].is_floating_point:
            probs = g.single_use(probs.inputs[0])
        elif probs.op == "where" and not guarded:
            probs, guarded = _nan_guarded(probs, g), True
        else:
            return None, False
    return (probs, guarded) if probs is not None and probs.op == "softmax" else (None, False)


def match(pv: Node, g: GraphLookup) -> _Match | None:
    """The attention whose last op is `pv` = matmul(probabilities, V), or None."""
    if pv.op != "matmul" or len(pv.inputs) != 2:
        return None
    probs, guarded = _probabilities(pv, g)
    if probs is None:
        return None
    rank = len(g.shape(probs.outputs[0]))
    if rank not in (3, 4, 5) or probs.attrs.get("axis", -1) % rank != rank - 1:
        return None
    m = _Match(pv.inputs[1], zero_nan_rows=guarded)
    scores = _scores_chain(probs.inputs[0], 1.0, m, g)
    if scores is None or m.inside:
        return None
    qk = g.producers[scores]
    if len(qk.inputs) != 2:
        return None  # a bias folded into Q K^T (a mask of one row): not worth a special case
    q, k_t = qk.inputs
    batch = g.shape(q)[:-2]
    if g.shape(k_t)[:-2] != batch or g.shape(qk.outputs[0])[:-2] != batch:
        return None  # matmuls that broadcast batch dims are not one attention
    if m.score_batch is not None:
        batch = m.score_batch
    if len(g.shape(m.v)) != rank or len(batch) != rank - 2 or g.shape(m.v)[:-2] != batch:
        return None
    m.q_of, m.k_t = q, k_t
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
        if torch.equal(visible, torch.ones(lq, lk, dtype=torch.bool, device=mask.device).tril(offset)):
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
    for mask, factor, inside in m.additive:
        alignment = None if causal else _constant_causal(rb, mask, factor, lq, lk)
        if alignment is not None:
            causal = alignment
            continue
        value = rb.value(mask) if inside else _windowed(rb, rb.value(mask), m.windows, f"{name}.mask")
        if factor != 1.0:
            scale = b.constant(torch.tensor(factor, dtype=b.type_of(value).dtype), f"{name}.mask_scale")
            value = b.add1("mul", [value, scale], name=f"{name}.mask_scale")
        additive.append(value)
    keep = []
    for cond, negated, inside in m.keep:
        alignment = None if causal or negated else _constant_causal(rb, cond, 1.0, lq, lk)
        if alignment is not None:
            causal = alignment
            continue
        value = rb.value(cond) if inside else _windowed(rb, rb.value(cond), m.windows, f"{name}.mask")
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


def _windowed(rb: Rebuild, value: str, windows: tuple[int, int] | None, name: str) -> str:
    """A [I*W, H, L, X] operand (or a mask that broadcasts to the scores) as [I, W, H, L, X]."""
    if windows is None:
        return value
    shape = list(rb.builder.type_of(value).shape)
    shape = [1] * (4 - len(shape)) + shape
    split = list(windows) if shape[0] != 1 else [1, 1]
    return rb.builder.add1("reshape", [value], {"shape": split + shape[1:]}, name=f"{name}.windows")


def _merge_windows(rb: Rebuild, out: str, shape: tuple, pv: Node, name: str) -> str:
    """[I, W, H, N, D] -> [I*W, H, N, D]. When the model transposes that to [I*W, N, H, D] next (to
    merge the heads), go through [I, W, N, H, D] instead: the kernel then stores that order (the
    layout rule that stores a value in the order of its transposing reader sees one hop) and every
    step after it is a view, where the plain reshape would leave a copy before the heads' merge."""
    readers = rb.consumers.get(pv.outputs[0], [])
    b = rb.builder
    if len(readers) == 1 and readers[0].op == "transpose" and list(readers[0].attrs["perm"]) == [0, 2, 1, 3]:
        i, w, h, n, d = b.type_of(out).shape
        out = b.add1("transpose", [out], {"perm": [0, 1, 3, 2, 4]}, name=f"{name}.windows")
        out = b.add1("reshape", [out], {"shape": [i * w, n, h, d]}, name=f"{name}.windows")
        return b.add1("transpose", [out], {"perm": [0, 2, 1, 3]}, name=f"{name}.windows")
    return b.add1("reshape", [out], {"shape": list(shape)}, name=f"{name}.windows")


def _permuted(rb: Rebuild, value: str, perm: tuple[int, ...], shape: tuple, name: str) -> str:
    """value.permute(perm) as `shape` (a reshape that adds or drops size-1 dims): views."""
    out = rb.value(value)
    if perm != tuple(range(len(perm))):
        out = rb.builder.add1("transpose", [out], {"perm": list(perm)}, name=name)
    if tuple(rb.builder.type_of(out).shape) != tuple(shape):
        out = rb.builder.add1("reshape", [out], {"shape": list(shape)}, name=name)
    return out


def _emit(m: _Match, pv: Node, rb: Rebuild) -> list[str]:
    b = rb.builder
    name = pv.name or "attention"
    q_shape, k_shape = list(rb.source.types[m.q_of].shape), list(rb.source.types[m.k_t].shape)
    k_shape[-2:] = k_shape[-1], k_shape[-2]
    if m.score_batch is not None:
        q_shape[:-2] = k_shape[:-2] = m.score_batch
    q = _windowed(rb, _permuted(rb, m.q, m.q_perm, q_shape, f"{name}.query"), m.windows, f"{name}.query")
    k = _windowed(rb, _permuted(rb, m.k_source, m.k_perm, k_shape, f"{name}.key"), m.windows, f"{name}.key")
    v = _windowed(rb, rb.value(m.v), m.windows, f"{name}.value")
    lq, lk = b.type_of(q).shape[-2], b.type_of(k).shape[-2]
    mask, causal = _emit_mask(m, rb, name, lq, lk)
    attrs = {"scale": m.scale} | ({"causal": causal} if causal else {}) | (
        {"zero_nan_rows": True} if m.zero_nan_rows else {})
    out = b.add1("attention", [q, k, v] + ([mask] if mask is not None else []), attrs, name=name)
    want = rb.source.types[pv.outputs[0]]
    if m.windows is not None:
        out = _merge_windows(rb, out, want.shape, pv, name)
    if b.type_of(out).dtype != want.dtype:
        out = b.add1("cast", [out], {"dtype": want.dtype}, name=f"{name}.cast")
    return [out]


def fuse_attention(graph: Graph) -> Graph:
    """Every matched attention pattern becomes one `attention` node (its old ops die)."""
    g = GraphLookup(graph)

    def rewrite_node(node: Node, rb: Rebuild):
        m = match(node, g)
        return None if m is None else _emit(m, node, rb)

    return eliminate_dead_code(rewrite(graph, rewrite_node))
