"""Converters of ONNX MatMul, Gemm, Einsum, Conv, ConvTranspose and pooling."""
from __future__ import annotations

import math
from typing import Sequence

from trident.compiler.errors import ModelError, ShapeError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import Converter, converter


@converter("MatMul")
def _matmul(cx):
    return [cx.emit("matmul", cx.input(0), cx.input(1))]


@converter("Gemm")
def _gemm(cx):
    a, b = cx.input(0), cx.input(1)
    for value in (a, b):
        if cx.type_of(value).rank != 2:
            raise cx.error(ShapeError, f"Gemm needs 2-D A and B, got {cx.type_of(a)} and "
                                       f"{cx.type_of(b)}")
    # Transposes of constant weights fold here, so the IR only sees a plain matmul.
    if cx.flag("transA", 0):
        a = cx.emit("transpose", a, perm=[1, 0])
    if cx.flag("transB", 0):
        b = cx.emit("transpose", b, perm=[1, 0])
    dtype = cx.type_of(a).dtype
    y = cx.emit("matmul", a, b)
    alpha, beta = cx.float_attr("alpha", 1.0), cx.float_attr("beta", 1.0)
    if alpha != 1.0:
        y = cx.emit("mul", y, cx.scalar(alpha, dtype))
    if cx.has(2) and beta != 0.0:
        c = cx.input(2)
        if beta != 1.0:
            c = cx.emit("mul", c, cx.scalar(beta, dtype))
        y = cx.emit("add", y, c)
    return [y]


def _auto_pads(cx: NodeContext, x: str, kernel: Sequence[int], strides: Sequence[int],
               dilations: Sequence[int]) -> list[int]:
    """ONNX `pads` (begin..., end...), resolving auto_pad against the input's spatial dims."""
    spatial = len(kernel)
    auto_pad = cx.str_attr("auto_pad", "NOTSET")
    if auto_pad == "NOTSET":
        pads = cx.ints_attr("pads", [0] * 2 * spatial)
        if len(pads) != 2 * spatial or any(p < 0 for p in pads):
            raise cx.error(ModelError, f"pads {pads} must be {2 * spatial} non-negative ints")
        return pads
    if auto_pad == "VALID":
        return [0] * 2 * spatial
    if auto_pad not in ("SAME_UPPER", "SAME_LOWER"):
        raise cx.error(ModelError, f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, "
                                   f"SAME_LOWER, VALID")
    sizes = cx.static_shape(x, f"auto_pad={auto_pad}")[2:]
    begin, end = [], []
    for size, k, s, d in zip(sizes, kernel, strides, dilations):
        total = max(0, (math.ceil(size / s) - 1) * s + (k - 1) * d + 1 - size)
        small, large = total // 2, total - total // 2
        # SAME_UPPER puts the odd pixel at the end, SAME_LOWER at the beginning.
        begin.append(small if auto_pad == "SAME_UPPER" else large)
        end.append(large if auto_pad == "SAME_UPPER" else small)
    return begin + end


def window(cx: NodeContext, x: str, kernel: Sequence[int] | None):
    """kernel, strides, dilations, pads of a conv/pool node, checked and defaulted."""
    rank = cx.type_of(x).rank
    spatial = rank - 2
    if spatial < 1:
        raise cx.error(ShapeError, f"input {cx.type_of(x)} needs a batch, a channel and at "
                                   f"least one spatial dim")
    kernel = cx.ints_attr("kernel_shape", kernel)
    if kernel is None:
        raise cx.error(ModelError, "attribute 'kernel_shape' is required")
    strides = cx.ints_attr("strides", [1] * spatial)
    dilations = cx.ints_attr("dilations", [1] * spatial)
    for label, values in (("kernel_shape", kernel), ("strides", strides),
                          ("dilations", dilations)):
        if len(values) != spatial or any(not isinstance(v, int) or v < 1 for v in values):
            raise cx.error(ModelError, f"{label} {values} must be {spatial} positive ints for "
                                       f"input {cx.type_of(x)}")
    return kernel, strides, dilations, _auto_pads(cx, x, kernel, strides, dilations)


@converter("Conv")
def _conv(cx):
    x, w = cx.input(0), cx.input(1)
    w_shape = cx.type_of(w).shape
    if cx.type_of(w).rank != cx.type_of(x).rank:
        raise cx.error(ShapeError, f"weight {cx.type_of(w)} and input {cx.type_of(x)} differ "
                                   f"in rank")
    kernel_default = list(w_shape[2:]) if all(isinstance(d, int) for d in w_shape[2:]) else None
    kernel, strides, dilations, pads = window(cx, x, kernel_default)
    if kernel_default is not None and list(kernel) != kernel_default:
        raise cx.error(ModelError, f"kernel_shape {kernel} does not match the weight "
                                   f"{cx.type_of(w)}")
    groups = cx.int_attr("group", 1)
    if groups < 1:
        raise cx.error(ModelError, f"group {groups} must be positive")
    inputs = [x, w] + ([cx.input(2)] if cx.has(2) else [])
    return [cx.emit("conv", *inputs, strides=strides, pads=pads, dilations=dilations,
                    groups=groups)]


@converter("MaxPool")
def _max_pool(cx):
    x = cx.input(0)
    kernel, strides, dilations, pads = window(cx, x, None)
    attrs = dict(kernel=kernel, strides=strides, pads=pads, dilations=dilations,
                 ceil_mode=cx.flag("ceil_mode", 0))
    if len(cx.proto.output) < 2 or not cx.proto.output[1]:
        return [cx.emit("max_pool", x, **attrs)]
    column_major = cx.flag("storage_order", 0)
    return cx.emit_multi("max_pool_with_indices", [x], dict(attrs, column_major=column_major), 2)


@converter("MaxUnpool", constant_inputs=(2,))
def _max_unpool(cx):
    """Values scattered to MaxPool's indices in zeros of the unpooled shape, (in - 1) * stride +
    kernel - pads per spatial dim, extended with zeros to output_shape when that is given."""
    x, indices = cx.input(0), cx.input(1)
    kernel, strides, _, pads = window(cx, x, None)
    shape = cx.static_shape(x, "MaxUnpool")
    spatial = len(kernel)
    unpooled = list(shape[:2]) + [(size - 1) * s + k - pads[d] - pads[spatial + d]
                                  for d, (size, s, k) in enumerate(zip(shape[2:], strides, kernel))]
    output_shape = cx.const_ints(2, "output_shape") if cx.has(2) else unpooled
    if len(output_shape) != len(unpooled) or any(o < u for o, u in zip(output_shape, unpooled)):
        raise cx.error(ShapeError, f"output_shape {output_shape} is smaller than the unpooled "
                                   f"shape {unpooled}")
    return [cx.emit("max_unpool", x, indices, unpooled_shape=unpooled, output_shape=output_shape)]


@converter("AveragePool")
def _average_pool(cx):
    x = cx.input(0)
    kernel, strides, dilations, pads = window(cx, x, None)
    dilated = {"dilations": dilations} if any(d != 1 for d in dilations) else {}
    return [cx.emit("avg_pool", x, kernel=kernel, strides=strides, pads=pads,
                    ceil_mode=cx.flag("ceil_mode", 0),
                    count_include_pad=cx.flag("count_include_pad", 0), **dilated)]


def _global_pool(ir_op: str) -> Converter:
    def convert(cx):
        x = cx.input(0)
        rank = cx.type_of(x).rank
        if rank < 3:
            raise cx.error(ShapeError, f"input {cx.type_of(x)} has no spatial dims")
        return [cx.emit(ir_op, x, axes=list(range(2, rank)), keepdims=True)]
    return convert


converter("GlobalAveragePool")(_global_pool("reduce_mean"))
converter("GlobalMaxPool")(_global_pool("reduce_max"))


@converter("Einsum")
def _einsum(cx):
    equation = cx.str_attr("equation", "")
    if not equation:
        raise cx.error(ModelError, "attribute 'equation' is required")
    inputs = [cx.input(i) for i in range(cx.num_inputs)]
    return [cx.emit("einsum", *inputs, equation=equation.replace(" ", ""))]


@converter("Det")
def _det(cx):
    return [cx.emit("det", cx.input(0))]


def _transpose_pads(cx: NodeContext, sizes, kernel, strides, dilations, output_padding):
    """ConvTranspose's pads (begin..., end...) for the full output `stride * (in - 1) +
    (k - 1) * dilation + 1 + output_padding`: from output_shape or auto_pad when given (the odd
    pixel at the start, except for SAME_UPPER), else the pads attribute. A negative end pad
    extends the output with zeros."""
    spatial = len(kernel)
    auto_pad = cx.str_attr("auto_pad", "NOTSET")
    output_shape = cx.ints_attr("output_shape")
    if output_shape is None and auto_pad in ("SAME_UPPER", "SAME_LOWER"):
        output_shape = [size * s for size, s in zip(sizes, strides)]
    if output_shape is None:
        if auto_pad not in ("NOTSET", "VALID"):
            raise cx.error(ModelError, f"auto_pad {auto_pad!r} is not one of NOTSET, SAME_UPPER, "
                                       f"SAME_LOWER, VALID")
        pads = [0] * 2 * spatial if auto_pad == "VALID" else cx.ints_attr("pads", [0] * 2 * spatial)
        if len(pads) != 2 * spatial:
            raise cx.error(ModelError, f"pads {pads} must be {2 * spatial} ints")
        return pads
    output_shape = output_shape[-spatial:]
    begin, end = [], []
    for size, k, s, d, extra, out in zip(sizes, kernel, strides, dilations, output_padding,
                                         output_shape):
        total = s * (size - 1) + extra + (k - 1) * d + 1 - out
        first = total // 2 if auto_pad == "SAME_UPPER" else total - total // 2
        begin.append(first)
        end.append(total - first)
    return begin + end


@converter("ConvTranspose")
def _conv_transpose(cx):
    x, w = cx.input(0), cx.input(1)
    xt, wt = cx.type_of(x), cx.type_of(w)
    spatial = xt.rank - 2
    if wt.rank != xt.rank or spatial < 1:
        raise cx.error(ShapeError, f"weight {wt} and input {xt} must both be N-D with N >= 3")
    kernel = list(cx.static_shape(w, "ConvTranspose's weight")[2:])
    if cx.ints_attr("kernel_shape", kernel) != kernel:
        raise cx.error(ModelError, f"kernel_shape {cx.ints_attr('kernel_shape')} does not match "
                                   f"the weight {wt}")
    strides = cx.ints_attr("strides", [1] * spatial)
    dilations = cx.ints_attr("dilations", [1] * spatial)
    output_padding = cx.ints_attr("output_padding", [0] * spatial)[:spatial]
    groups = cx.int_attr("group", 1)
    if groups < 1 or xt.shape[1] != wt.shape[0]:
        raise cx.error(ShapeError, f"input {xt} and weight {wt} (group {groups}) do not fit")
    sizes = cx.static_shape(x, "ConvTranspose")[2:]
    pads = _transpose_pads(cx, sizes, kernel, strides, dilations, output_padding)
    inputs = [x, w] + ([cx.input(2)] if cx.has(2) else [])
    return [cx.emit("conv_transpose", *inputs, strides=strides, pads=pads, dilations=dilations,
                    output_padding=output_padding, groups=groups)]


@converter("LpPool")
def _lp_pool(cx):
    """(sum over the window of |x|^p)^(1/p): a sum pool (an average pool counting the padding,
    times the window size) between two elementwise powers."""
    x = cx.input(0)
    kernel, strides, dilations, pads = window(cx, x, None)
    dilated = {"dilations": dilations} if any(d != 1 for d in dilations) else {}
    p = cx.int_attr("p", 2)
    dtype = cx.type_of(x).dtype
    powered = cx.emit("pow", cx.emit("abs", x), cx.scalar(float(p), dtype))
    mean = cx.emit("avg_pool", powered, kernel=kernel, strides=strides, pads=pads,
                   ceil_mode=cx.flag("ceil_mode", 0), count_include_pad=True, **dilated)
    total = cx.emit("mul", mean, cx.scalar(float(math.prod(kernel)), dtype))
    return [cx.emit("pow", total, cx.scalar(1.0 / p, dtype))]


@converter("GlobalLpPool")
def _global_lp_pool(cx):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    p = cx.int_attr("p", 2)
    dtype = cx.type_of(x).dtype
    powered = cx.emit("pow", cx.emit("abs", x), cx.scalar(float(p), dtype))
    total = cx.emit("reduce_sum", powered, axes=list(range(2, rank)), keepdims=True)
    return [cx.emit("pow", total, cx.scalar(1.0 / p, dtype))]
