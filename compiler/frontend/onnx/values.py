"""Converters of ONNX ops whose value is known at import: Shape, Size, Constant, Range, ..."""
from __future__ import annotations

import math

import onnx
import torch

from trident.compiler.errors import ModelError, UnsupportedError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import (DTYPES, converter, dtype_name,
                                                     supported_dtype_names)


@converter("Shape")
def _shape(cx):
    t = cx.type(0)
    start, end = cx.int_attr("start", 0), cx.int_attr("end", t.rank)
    start, end = [min(max(v + t.rank if v < 0 else v, 0), t.rank) for v in (start, end)]
    dims = t.shape[start:end]
    if not all(isinstance(d, int) for d in dims):
        raise cx.error(UnsupportedError, f"Shape of {t} has symbolic dims (data-dependent "
                                         f"shapes are not supported; pass batch_size=)")
    return [cx.constant(torch.tensor(dims, dtype=torch.int64), "shape")]


@converter("Size")
def _size(cx):
    t = cx.type(0)
    if not t.is_static:
        raise cx.error(UnsupportedError, f"Size of {t} has symbolic dims (data-dependent "
                                         f"shapes are not supported; pass batch_size=)")
    return [cx.constant(torch.tensor(t.numel(), dtype=torch.int64), "size")]


@converter("Constant")
def _constant(cx):
    if len(cx.attrs) != 1:
        raise cx.error(ModelError, f"needs exactly one value attribute, got {sorted(cx.attrs)}")
    (key, value), = cx.attrs.items()
    if key == "value":
        tensor = cx.imp.tensor_from_proto(value, cx.proto.output[0], cx)
    elif key == "sparse_value":
        tensor = _dense_from_sparse(cx, value)
    elif key in ("value_float", "value_floats"):
        tensor = torch.tensor(value, dtype=torch.float32)
    elif key in ("value_int", "value_ints"):
        tensor = torch.tensor(value, dtype=torch.int64)
    elif key in ("value_string", "value_strings"):
        raise cx.error(UnsupportedError, f"string constant '{cx.proto.output[0]}': trident "
                                         f"supports {supported_dtype_names()}")
    else:
        raise cx.error(ModelError, f"unknown attribute '{key}'")
    return [cx.constant(tensor, "value")]


def _dense_from_sparse(cx: NodeContext, sparse: onnx.SparseTensorProto) -> torch.Tensor:
    values = cx.imp.tensor_from_proto(sparse.values, cx.proto.output[0], cx).reshape(-1)
    indices = torch.from_numpy(onnx.numpy_helper.to_array(sparse.indices).copy())
    dims = list(sparse.dims)
    dense = torch.zeros(math.prod(dims), dtype=values.dtype)
    if indices.dim() == 2:  # [NNZ, rank] coordinates -> linear offsets
        strides = torch.tensor([math.prod(dims[k + 1:]) for k in range(len(dims))])
        indices = (indices * strides).sum(dim=1)
    dense[indices.reshape(-1).long()] = values
    return dense.reshape(dims)


@converter("ConstantOfShape", constant_inputs=(0,))
def _constant_of_shape(cx):
    shape = cx.const_ints(0, "input")
    if any(s < 0 for s in shape):
        raise cx.error(ModelError, f"shape {shape} has a negative size")
    value = cx.attr("value")
    fill = (torch.zeros(1, dtype=torch.float32) if value is None
            else cx.imp.tensor_from_proto(value, cx.proto.output[0], cx))
    if fill.numel() != 1:
        raise cx.error(ModelError, f"value must hold one element, got {tuple(fill.shape)}")
    return [cx.constant(fill.reshape(-1)[0].expand(shape).clone(), "filled")]


@converter("Range", constant_inputs=(0, 1, 2))
def _range(cx):
    dtype = cx.type(0).dtype
    start, limit, delta = (cx.const_scalar(i, w) for i, w in
                           enumerate(("start", "limit", "delta")))
    if delta == 0:
        raise cx.error(ModelError, "delta is 0")
    count = max(math.ceil((limit - start) / delta), 0)
    # ONNX defines element k as start + k * delta (no accumulation error for floats).
    values = torch.arange(count, dtype=torch.float64 if dtype.is_floating_point else torch.int64)
    return [cx.constant((start + values * delta).to(dtype), "range")]


@converter("EyeLike")
def _eye_like(cx):
    shape = cx.static_shape(cx.input(0), "EyeLike")
    if len(shape) != 2:
        raise cx.error(ModelError, f"input must be 2-D, got {cx.type(0)}")
    to = cx.int_attr("dtype")
    dtype = cx.type(0).dtype if to is None else _dtype(cx, to)
    k = cx.int_attr("k", 0)
    rows, cols = torch.arange(shape[0])[:, None], torch.arange(shape[1])[None, :]
    return [cx.constant((cols - rows == k).to(dtype), "eye")]


def _dtype(cx: NodeContext, elem_type: int) -> torch.dtype:
    dtype = DTYPES.get(elem_type)
    if dtype is None:
        raise cx.error(UnsupportedError, f"dtype {dtype_name(elem_type)}: trident supports "
                                         f"{supported_dtype_names()}")
    return dtype


def _window(cx: NodeContext, cosines: list[float]) -> list[str]:
    """sum_k c_k cos(2 pi k n / N), n < size; N = size (periodic) or size - 1 (symmetric)."""
    size = int(cx.const_scalar(0, "size"))
    if size < 0:
        raise cx.error(ModelError, f"size {size} is negative")
    period = size if cx.flag("periodic", 1) else size - 1
    n = torch.arange(size, dtype=torch.float64)
    phase = 2 * math.pi * n / period if period > 0 else torch.zeros_like(n)
    values = sum(c * torch.cos(k * phase) for k, c in enumerate(cosines))
    return [cx.constant(values.to(_dtype(cx, cx.int_attr("output_datatype", 1))), "window")]


converter("HannWindow", since=17, constant_inputs=(0,))(lambda cx: _window(cx, [0.5, -0.5]))
converter("HammingWindow", since=17, constant_inputs=(0,))(
    lambda cx: _window(cx, [25 / 46, -(1 - 25 / 46)]))
converter("BlackmanWindow", since=17, constant_inputs=(0,))(
    lambda cx: _window(cx, [0.42, -0.5, 0.08]))


@converter("If", constant_inputs=(0,))
def _if(cx):
    """An If whose condition is known at import (computed from constants and static shapes, as
    in ONNX's function bodies) is the branch it takes; one decided at run time is data-dependent
    control flow, which trident does not compile."""
    condition = cx.const(0, "cond")
    if condition.numel() != 1:
        raise cx.error(ModelError, f"cond must hold one value, got {tuple(condition.shape)}")
    branch = cx.attr("then_branch" if bool(condition.reshape(-1)[0]) else "else_branch")
    if not isinstance(branch, onnx.GraphProto):
        raise cx.error(ModelError, "needs then_branch and else_branch graphs")
    outputs = cx.imp.inline(branch, cx.name)
    if len(outputs) != len(cx.proto.output):
        raise cx.error(ModelError, f"the branch has {len(outputs)} outputs, the node "
                                   f"{len(cx.proto.output)}")
    return outputs
