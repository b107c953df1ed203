"""Every IR op, defined once: its kind (for fusion), its reference semantics in torch.

Shape and dtype inference is not written a second time: it runs the reference on "meta" tensors
(shape and dtype only, no data), so the reference executor, constant folding, shape inference and
the tests can never disagree about what an op means.

Reference functions take tensors positionally and attributes as keywords. Attributes are already
normalized by the frontends (ONNX's negative axes, default values, auto_pad ... are resolved).
"""
from __future__ import annotations

import enum
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import torch
import torch.nn.functional as F

from trident.compiler.errors import ModelError, ShapeError, UnsupportedError, where
from trident.compiler.types import FLOAT_DTYPES, SUPPORTED_DTYPES, Node, TensorType


class Kind(enum.Enum):
    ELEMENTWISE = "elementwise"  # output element i depends on input elements i (after broadcast)
    REDUCTION = "reduction"      # reduces (or normalizes) along some axes
    MATMUL = "matmul"
    CONV = "conv"
    POOL = "pool"
    MOVEMENT = "movement"        # reshapes, transposes, slices: moves data, computes nothing
    ATTENTION = "attention"      # softmax(q k^T * scale + mask) v, fused


@dataclass(frozen=True)
class OpDef:
    name: str
    kind: Kind
    ref: Callable
    same_dtype: bool = False  # inputs must share one dtype (ONNX's "T" for all inputs)


OPS: dict[str, OpDef] = {}


def op(name: str, kind: Kind, same_dtype: bool = False):
    def register(fn: Callable) -> Callable:
        OPS[name] = OpDef(name, kind, fn, same_dtype)
        return fn
    return register


def get_op(name: str, node: Node | None = None) -> OpDef:
    try:
        return OPS[name]
    except KeyError:
        raise UnsupportedError(f"{where(node)}: IR op '{name}' is not defined; "
                               f"known ops: {', '.join(sorted(OPS))}") from None


# ---------------------------------------------------------------------------- elementwise ----
def _unary(name: str, fn: Callable) -> None:
    op(name, Kind.ELEMENTWISE)(lambda x: fn(x))


for _name, _fn in {
    "neg": torch.neg, "abs": torch.abs, "exp": torch.exp, "log": torch.log, "sqrt": torch.sqrt,
    "reciprocal": torch.reciprocal, "relu": torch.relu, "sigmoid": torch.sigmoid,
    "tanh": torch.tanh, "erf": torch.erf, "silu": F.silu, "hard_swish": F.hardswish,
    "not": torch.logical_not, "identity": lambda x: x,
}.items():
    _unary(_name, _fn)


@op("gelu", Kind.ELEMENTWISE)
def gelu(x, *, approximate: str = "none"):
    return F.gelu(x, approximate=approximate)


@op("leaky_relu", Kind.ELEMENTWISE)
def leaky_relu(x, *, alpha: float = 0.01):
    return F.leaky_relu(x, alpha)


@op("hard_sigmoid", Kind.ELEMENTWISE)
def hard_sigmoid(x, *, alpha: float = 0.2, beta: float = 0.5):
    return torch.clamp(x * alpha + beta, 0.0, 1.0)


@op("clip", Kind.ELEMENTWISE)
def clip(x, *, min: float | None = None, max: float | None = None):
    return torch.clamp(x, min, max)


@op("cast", Kind.ELEMENTWISE)
def cast(x, *, dtype: torch.dtype):
    if x.dtype.is_floating_point and not dtype.is_floating_point and dtype != torch.bool:
        x = torch.trunc(x)  # ONNX and C truncate toward zero when casting float -> int
    return x.to(dtype)


def _binary(name: str, fn: Callable, same_dtype: bool = True) -> None:
    op(name, Kind.ELEMENTWISE, same_dtype)(lambda a, b: fn(a, b))


def _div(a, b):
    if a.dtype.is_floating_point:
        return a / b
    return torch.div(a, b, rounding_mode="trunc")


_binary("add", torch.add)
_binary("sub", torch.sub)
_binary("mul", torch.mul)
_binary("div", _div)
_binary("maximum", torch.maximum)
_binary("minimum", torch.minimum)
_binary("equal", torch.eq)
_binary("less", torch.lt)
_binary("greater", torch.gt)
_binary("pow", lambda a, b: torch.pow(a, b).to(a.dtype), same_dtype=False)


@op("where", Kind.ELEMENTWISE)
def where_(cond, a, b):
    if a.dtype != b.dtype:
        raise ShapeError(f"where: branches have dtypes {a.dtype} and {b.dtype}")
    return torch.where(cond, a, b)


def _per_axis(t, axis: int, rank: int):
    """Shape a per-channel parameter (scale, zero point) to broadcast along `axis`."""
    if t.dim() == 0:
        return t
    return t.reshape([-1 if d == axis else 1 for d in range(rank)])


@op("quantize_linear", Kind.ELEMENTWISE)
def quantize_linear(x, scale, zero_point, *, axis: int = 1, narrow: bool = False):
    """ONNX QuantizeLinear. narrow=True (trident's own symmetric int8, as TensorRT) clamps to
    [-127, 127] instead of the type's full range; frontends never set it."""
    info = torch.iinfo(zero_point.dtype)
    s = _per_axis(scale, axis, x.dim()).to(torch.float32)
    zp = _per_axis(zero_point, axis, x.dim()).to(torch.float32)
    q = torch.round(x.to(torch.float32) / s) + zp  # round half to even, as ONNX specifies
    return torch.clamp(q, info.min + int(narrow), info.max).to(zero_point.dtype)


@op("dequantize_linear", Kind.ELEMENTWISE)
def dequantize_linear(x, scale, zero_point, *, axis: int = 1, dtype: torch.dtype | None = None):
    """ONNX DequantizeLinear; `dtype` (opset 21's output_dtype) defaults to the scale's. Inside a
    fused kernel the value stays in fp32 registers whatever its dtype, as every fused value."""
    s = _per_axis(scale, axis, x.dim())
    zp = _per_axis(zero_point, axis, x.dim()).to(torch.float32)
    return ((x.to(torch.float32) - zp) * s.to(torch.float32)).to(dtype or scale.dtype)


# ------------------------------------------------------------------------- matmul / conv ----
def _dequantize_acc(acc, x_scale: float, w_scale, bias, channel_shape, dtype):
    """int8 layers' epilogue, in the order the kernels compute it (fp32): acc * (sx * sw[n]) + b.
    `acc` holds exact integer sums (float64); rounding it to fp32 is the kernel's int32 -> fp32."""
    scale = (w_scale.to(torch.float32) * torch.tensor(x_scale, dtype=torch.float32)).reshape(channel_shape)
    y = acc.to(torch.float32) * scale
    if bias is not None:
        y = y + bias.to(torch.float32).reshape(channel_shape)
    return y.to(dtype)


def _check_int8(*tensors):
    if any(t.dtype != torch.int8 for t in tensors):
        raise ShapeError(f"int8 layer: activation and weight must be int8, got "
                         f"{', '.join(str(t.dtype) for t in tensors)}")


@op("qmatmul", Kind.MATMUL)
def qmatmul(a, w, w_scale, bias=None, *, x_scale: float, dtype: torch.dtype = torch.float32):
    """int8 linear layer: a int8 [..., K] times w int8 [N, K] (stored K-major), int32 accumulation,
    dequantized per output channel: (a @ w.T) * (x_scale * w_scale[n]) + bias[n] in `dtype`."""
    _check_int8(a, w)
    acc = torch.matmul(a.to(torch.float64), w.to(torch.float64).t())  # exact for any real K
    return _dequantize_acc(acc, x_scale, w_scale, bias, (-1,), dtype)


@op("qconv", Kind.CONV)
def qconv(x, w, w_scale, bias=None, *, strides: Sequence[int], pads: Sequence[int],
          dilations: Sequence[int], groups: int = 1, x_scale: float, dtype: torch.dtype = torch.float32):
    """int8 convolution: x int8 NCHW, w int8 [OC, C/groups, KH, KW]; then qmatmul's epilogue."""
    _check_int8(x, w)
    acc = conv(x.to(torch.float64), w.to(torch.float64), strides=strides, pads=pads,
               dilations=dilations, groups=groups)
    return _dequantize_acc(acc, x_scale, w_scale, bias, (1, -1) + (1,) * (x.dim() - 2), dtype)


@op("matmul", Kind.MATMUL, same_dtype=True)
def matmul(a, b, bias=None):
    """torch.matmul semantics (batched, broadcast); `bias` is a [N] vector added to each row."""
    out = torch.matmul(a, b)
    return out if bias is None else out + bias


def _split_pads(pads: Sequence[int]) -> tuple[list[int], list[int]]:
    n = len(pads) // 2
    return list(pads[:n]), list(pads[n:])


def _pad_spatial(x, pads: Sequence[int], value: float = 0.0):
    """Apply ONNX-order pads (x1_begin, x2_begin, ..., x1_end, x2_end, ...) to the spatial dims."""
    begin, end = _split_pads(pads)
    if not any(begin) and not any(end):
        return x
    torch_pads = []
    for b, e in zip(reversed(begin), reversed(end)):  # F.pad starts from the last dim
        torch_pads += [b, e]
    return F.pad(x, torch_pads, value=value)


_CONV = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@op("conv", Kind.CONV, same_dtype=True)
def conv(x, w, b=None, *, strides: Sequence[int], pads: Sequence[int],
         dilations: Sequence[int], groups: int = 1):
    spatial = x.dim() - 2
    if spatial not in _CONV:
        raise UnsupportedError(f"conv with {spatial} spatial dims (1-3 are supported)")
    if w.shape[1] * groups != x.shape[1]:
        raise ShapeError(f"conv: input has {x.shape[1]} channels, weight expects "
                         f"{w.shape[1]} x {groups} groups")
    if b is not None and tuple(b.shape) != (w.shape[0],):  # (torch's meta conv does not check)
        raise ShapeError(f"bias (input 2) has shape {list(b.shape)}; expected "
                         f"[{w.shape[0]}], one value per output channel of the weight {list(w.shape)}")
    return _CONV[spatial](_pad_spatial(x, pads), w, b, tuple(strides), 0, tuple(dilations), groups)


# ---------------------------------------------------------------------- normalizations ----
def _check_epsilon(epsilon: float) -> None:
    if not math.isfinite(epsilon) or epsilon < 0:
        raise ModelError(f"attribute epsilon is {epsilon}; expected a finite number >= 0")


@op("batch_norm", Kind.ELEMENTWISE, same_dtype=True)
def batch_norm(x, scale, bias, mean, var, *, epsilon: float = 1e-5):
    _check_epsilon(epsilon)
    return F.batch_norm(x, mean, var, scale, bias, training=False, eps=epsilon)


@op("layer_norm", Kind.REDUCTION)
def layer_norm(x, scale, bias=None, *, axis: int = -1, epsilon: float = 1e-5):
    _check_epsilon(epsilon)
    axis = axis % x.dim()
    return F.layer_norm(x, x.shape[axis:], scale.expand(x.shape[axis:]),
                        None if bias is None else bias.expand(x.shape[axis:]), epsilon)


@op("softmax", Kind.REDUCTION)
def softmax(x, *, axis: int = -1):
    return torch.softmax(x, axis)


@op("reduce_sum", Kind.REDUCTION)
def reduce_sum(x, *, axes: Sequence[int], keepdims: bool = True):
    return torch.sum(x, dim=tuple(axes), keepdim=keepdims) if axes else x.clone()


@op("reduce_mean", Kind.REDUCTION)
def reduce_mean(x, *, axes: Sequence[int], keepdims: bool = True):
    return torch.mean(x, dim=tuple(axes), keepdim=keepdims) if axes else x.clone()


def _lowest(dtype: torch.dtype):
    """The identity of max: what max over nothing (or over padding) is."""
    if dtype == torch.bool:
        return False
    return -math.inf if dtype.is_floating_point else torch.iinfo(dtype).min


@op("reduce_max", Kind.REDUCTION)
def reduce_max(x, *, axes: Sequence[int], keepdims: bool = True):
    if not axes:
        return x.clone()
    if any(x.shape[a] == 0 for a in axes):  # torch refuses; ONNX gives max's identity
        shape = [1 if a in axes else d for a, d in enumerate(x.shape)
                 if keepdims or a not in axes]
        return torch.full(shape, _lowest(x.dtype), dtype=x.dtype, device=x.device)
    return torch.amax(x, dim=tuple(axes), keepdim=keepdims)


# ---------------------------------------------------------------------------- pooling ----
def _pool_nd(x, spatial: int):
    """torch's pooling functions exist for 1-3 dims; lift 1-D problems to 2-D."""
    if spatial not in (1, 2, 3):
        raise UnsupportedError(f"pooling over {spatial} spatial dims (1-3 are supported)")
    return x.unsqueeze(-2) if spatial == 1 else x


@op("max_pool", Kind.POOL)
def max_pool(x, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             dilations: Sequence[int], ceil_mode: bool = False):
    spatial = len(kernel)
    lift = spatial == 1
    xp = _pool_nd(_pad_spatial(x, pads, value=_lowest(x.dtype)), spatial)
    fn = {2: F.max_pool2d, 3: F.max_pool3d}[max(spatial, 2)]
    k, s, d = ([1] if lift else []) + list(kernel), ([1] if lift else []) + list(strides), \
        ([1] if lift else []) + list(dilations)
    y = fn(xp, k, s, 0, d, ceil_mode=ceil_mode)
    y = y.squeeze(-2) if lift else y
    return _drop_windows_on_end_pad(y, x, strides, pads) if ceil_mode else y


@op("avg_pool", Kind.POOL)
def avg_pool(x, *, kernel: Sequence[int], strides: Sequence[int], pads: Sequence[int],
             ceil_mode: bool = False, count_include_pad: bool = False):
    # Sum-pool the zero-padded input and divide by a sum-pool of the taps that count: the image
    # alone, or image plus explicit padding. Windows that overhang because of ceil_mode count
    # neither, which is ONNX's rule.
    spatial = len(kernel)
    lift = spatial == 1
    fn = {2: F.avg_pool2d, 3: F.avg_pool3d}[max(spatial, 2)]
    k, s = ([1] if lift else []) + list(kernel), ([1] if lift else []) + list(strides)
    ones = torch.ones_like(x[:1, :1])
    counted = _pad_spatial(ones, pads, value=1.0 if count_include_pad else 0.0)
    xp, counted = _pool_nd(_pad_spatial(x, pads), spatial), _pool_nd(counted, spatial)
    total = fn(xp, k, s, 0, ceil_mode=ceil_mode, divisor_override=1)
    count = fn(counted, k, s, 0, ceil_mode=ceil_mode, divisor_override=1)
    y = total / count
    y = y.squeeze(-2) if lift else y
    return _drop_windows_on_end_pad(y, x, strides, pads) if ceil_mode else y


def _drop_windows_on_end_pad(y, x, strides: Sequence[int], pads: Sequence[int]):
    """With ceil_mode, ONNX (like torch's own padding) drops a last window that would start in
    the end padding; the input here is padded before pooling, so torch keeps it: crop it."""
    begin, _ = _split_pads(pads)
    for i, (size, s, b) in enumerate(zip(x.shape[2:], strides, begin)):
        out = y.shape[2 + i]
        if out > 0 and (out - 1) * s >= size + b:
            y = y.narrow(2 + i, 0, out - 1)
    return y


# ---------------------------------------------------------------------------- movement ----
@op("reshape", Kind.MOVEMENT)
def reshape(x, *, shape: Sequence[int]):
    return x.reshape(tuple(shape))


@op("transpose", Kind.MOVEMENT)
def transpose(x, *, perm: Sequence[int]):
    return x.permute(tuple(perm))


@op("expand", Kind.MOVEMENT)
def expand(x, *, shape: Sequence[int]):
    target = torch.broadcast_shapes(tuple(x.shape), tuple(shape))  # ONNX Expand broadcasts both ways
    return x.expand(target)


@op("concat", Kind.MOVEMENT, same_dtype=True)
def concat(*xs, axis: int):
    return torch.cat(xs, dim=axis)


@op("split", Kind.MOVEMENT)
def split(x, *, axis: int, sizes: Sequence[int]):
    return tuple(torch.split(x, list(sizes), dim=axis))


@op("slice", Kind.MOVEMENT)
def slice_(x, *, starts: Sequence[int], ends: Sequence[int], axes: Sequence[int],
           steps: Sequence[int]):
    # Attributes are clamped by the frontend: 0 <= start, end within [-1, dim] and step != 0.
    for start, end, axis, step in zip(starts, ends, axes, steps):
        index = torch.arange(start, end, step, device=x.device)
        x = x.index_select(axis, index)
    return x


@op("gather", Kind.MOVEMENT)
def gather(x, indices, *, axis: int = 0):
    size = x.shape[axis]
    flat = torch.where(indices < 0, indices + size, indices).reshape(-1).to(torch.int64)
    out = x.index_select(axis, flat)
    return out.reshape(tuple(x.shape[:axis]) + tuple(indices.shape) + tuple(x.shape[axis + 1:]))


# -------------------------------------------------------------------- type inference ----
_SYMBOL_BASE = 1_000_003  # symbolic dims stand in as distinctive sizes on meta tensors
_SYMBOL_STEP = 1_009


def _check_dtypes(opdef: OpDef, node: Node, types: Sequence[TensorType]) -> None:
    for i, t in enumerate(types):
        if t.dtype not in SUPPORTED_DTYPES:
            raise UnsupportedError(f"{where(node)}: input {i} has dtype {t.dtype}, not one of "
                                   f"{sorted(str(d) for d in SUPPORTED_DTYPES)}")
    if opdef.same_dtype and len({t.dtype for t in types}) > 1:
        raise ShapeError(f"{where(node)}: inputs must share one dtype, got "
                         f"{', '.join(str(t) for t in types)}")


_INFERRED: dict = {}  # (op, input types, attrs) -> output types; passes re-infer the same nodes


def _attrs_key(attrs: dict):
    return tuple(sorted((k, repr(v)) for k, v in attrs.items()))


def infer_types(node: Node, types: Sequence[TensorType]) -> list[TensorType]:
    """Output types of `node` given its input types, by running its reference on meta tensors.

    Meta tensors still go through torch's decompositions (about a millisecond a node), and every
    pass re-infers every node it replays, so results are memoized.
    """
    key = (node.op, tuple(types), _attrs_key(node.attrs))
    cached = _INFERRED.get(key)
    if cached is None:
        cached = _INFERRED[key] = _infer_types(node, types)
    return list(cached)


def _infer_types(node: Node, types: Sequence[TensorType]) -> list[TensorType]:
    opdef = get_op(node.op, node)
    _check_dtypes(opdef, node, types)
    symbols: dict[str, int] = {}
    for t in types:
        for d in t.shape:
            if isinstance(d, str) and d not in symbols:
                symbols[d] = _SYMBOL_BASE + _SYMBOL_STEP * len(symbols)
    try:
        metas = [torch.empty([symbols.get(d, d) for d in t.shape], dtype=t.dtype, device="meta")
                 for t in types]
    except RuntimeError:  # stand-in sizes multiply past int64 with many symbolic dims
        raise UnsupportedError(f"{where(node)}: too many symbolic dims ({sorted(symbols)}) in "
                               f"one tensor") from None
    try:
        outs = opdef.ref(*metas, **node.attrs)
    except (RuntimeError, ValueError, TypeError, IndexError) as e:
        shapes = ", ".join(str(t) for t in types)
        raise ShapeError(f"{where(node)}: inputs ({shapes}) with attributes {node.attrs} "
                         f"do not fit: {e}") from None
    outs = outs if isinstance(outs, tuple) else (outs,)
    by_value = {v: k for k, v in symbols.items()}
    result = []
    for out in outs:
        shape = []
        for d in out.shape:
            if d in by_value:
                shape.append(by_value[d])
            elif symbols and d >= _SYMBOL_BASE:
                raise UnsupportedError(f"{where(node)}: output dimension depends on symbolic "
                                       f"dims {sorted(symbols)} in a way trident cannot track")
            else:
                shape.append(int(d))
        result.append(TensorType(tuple(shape), out.dtype))
    return result


def evaluate(node: Node, values: Sequence[torch.Tensor], out_types: Sequence[TensorType] | None
             = None) -> list[torch.Tensor]:
    """Run one node's reference on real tensors.

    Half-precision float math runs in fp32 and rounds once at the end, as trident's kernels do,
    so the oracle is at least as accurate as what it checks.
    """
    opdef = get_op(node.op, node)
    upcast = [v.float() if v.dtype in (torch.float16, torch.bfloat16) else v for v in values]
    if any(u is not v for u, v in zip(upcast, values)) and opdef.kind != Kind.MOVEMENT:
        values = upcast
    outs = opdef.ref(*values, **node.attrs)
    outs = list(outs) if isinstance(outs, tuple) else [outs]
    if out_types is not None:
        outs = [o.to(t.dtype) if o.dtype != t.dtype else o for o, t in zip(outs, out_types)]
    return outs


def is_float(t: TensorType) -> bool:
    return t.dtype in FLOAT_DTYPES


# ---------------------------------------------------------------------------- attention ----
CAUSAL_ALIGNMENTS = ("top_left", "bottom_right")


@op("attention", Kind.ATTENTION)
def attention(q, k, v, mask=None, *, scale: float, causal: str | None = None):
    """softmax(q k^T * scale + mask) v with torch SDPA's semantics (q [..., Lq, D], k [..., Lk, D],
    v [..., Lk, DV]). mask: bool (True = attend) or additive, broadcast to the scores. K and V may
    have fewer heads (dim -3) than q, each shared by a group of query heads (GQA). causal: None,
    "top_left" (torch's is_causal: query i sees keys j <= i) or "bottom_right" (j <= i + Lk - Lq,
    a decoder over a KV cache). A query that sees no key gives zeros, as torch does."""
    if not (q.dtype == k.dtype == v.dtype) or not q.dtype.is_floating_point:
        raise ValueError(f"q, k, v must share one float dtype, got {q.dtype}, {k.dtype}, {v.dtype}")
    if causal is not None and causal not in CAUSAL_ALIGNMENTS:
        raise ValueError(f"causal must be None or one of {CAUSAL_ALIGNMENTS}, got {causal!r}")
    if mask is not None and mask.dtype != torch.bool:
        mask = mask.to(q.dtype)
    if causal is not None:
        lq, lk = q.shape[-2], k.shape[-2]
        offset = 0 if causal == "top_left" else lk - lq
        visible = torch.ones(lq, lk, dtype=torch.bool, device=q.device).tril(offset)
        if mask is None:
            mask = visible
        elif mask.dtype == torch.bool:
            mask = mask & visible
        else:
            mask = mask.masked_fill(~visible, -math.inf)
    gqa = q.dim() >= 3 and q.shape[-3] != k.shape[-3]
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
