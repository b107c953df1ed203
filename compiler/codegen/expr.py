"""Elementwise IR ops as Triton expressions.

Inside a generated kernel every float value lives in fp32 registers (loads upcast, stores round
once), integers and booleans keep their own types. Each entry below turns the expressions of a
node's inputs into the expression of its output.
"""
from __future__ import annotations

import math
from typing import Callable

import torch

from trident.compiler.ir import Graph, Node

TL_DTYPES = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.int32: "tl.int32",
    torch.int64: "tl.int64", torch.bool: "tl.int1",
}


def literal(value: float | int | bool) -> str:
    """`value` as Triton source: every number written into a kernel goes through here (repr of
    a float gives a bare `nan` or `inf`, which the kernel would read as an undefined name)."""
    if isinstance(value, bool):
        return "True" if value else "False"
    if isinstance(value, int):
        return str(value)
    if math.isinf(value):
        return 'float("inf")' if value > 0 else 'float("-inf")'
    if math.isnan(value):
        return 'float("nan")'
    return repr(float(value))


def _clip(x, lo, hi):
    if lo is not None:
        x = f"prims.maximum({x}, {literal(float(lo))})"
    if hi is not None:
        x = f"prims.minimum({x}, {literal(float(hi))})"
    return x


def _pow(x, exponent: float):
    # Small integral exponents multiply (exact for negative bases, like torch); others go through
    # exp2/log2, which gives NaN for negative bases exactly where torch.pow does.
    if exponent == 0:
        return f"({x} * 0.0 + 1.0)"
    if exponent == 0.5:
        return f"tl.sqrt({x})"
    if exponent == int(exponent) and abs(exponent) <= 4:
        product = " * ".join([f"({x})"] * int(abs(exponent)))
        return f"({product})" if exponent > 0 else f"(1.0 / ({product}))"
    return f"tl.exp2({literal(exponent)} * tl.log2({x}))"


def narrow(x: str, dtype: torch.dtype) -> str:
    """Register `x` converted to `dtype` for a store or a cast: round to nearest even, as torch.
    bfloat16 goes through prims.to_bfloat16 (Triton's interpreter truncates fp32 -> bf16)."""
    if dtype == torch.bfloat16:
        return f"prims.to_bfloat16({x})"
    return f"({x}).to({TL_DTYPES[dtype]})"


def _cast(x, node: Node, in_dtype: torch.dtype):
    target = node.attrs["dtype"]
    if target.is_floating_point:
        if target == torch.float32 or in_dtype == target:
            return f"({x}).to(tl.float32)"
        return f"{narrow(x, target)}.to(tl.float32)"  # round to the narrower type
    if target == torch.bool:
        return f"({x} != 0)"
    return f"({x}).to({TL_DTYPES[target]})"


UNARY: dict[str, Callable[[str, Node], str]] = {
    "neg": lambda x, n: f"(-{x})",
    "abs": lambda x, n: f"tl.abs({x})",
    "exp": lambda x, n: f"tl.exp({x})",
    "log": lambda x, n: f"tl.log({x})",
    "sqrt": lambda x, n: f"tl.sqrt({x})",
    "reciprocal": lambda x, n: f"(1.0 / {x})",
    "relu": lambda x, n: f"prims.relu({x})",
    "sigmoid": lambda x, n: f"tl.sigmoid({x})",
    "tanh": lambda x, n: f"prims.tanh({x})",
    "erf": lambda x, n: f"tl.erf({x})",
    "gelu": lambda x, n: (f"prims.gelu_tanh({x})" if n.attrs.get("approximate", "none") == "tanh"
                          else f"prims.gelu_erf({x})"),
    "silu": lambda x, n: f"prims.silu({x})",
    "hard_swish": lambda x, n: f"prims.hard_swish({x})",
    "leaky_relu": lambda x, n: f"prims.leaky_relu({x}, {literal(float(n.attrs.get('alpha', 0.01)))})",
    "hard_sigmoid": lambda x, n: (f"prims.hard_sigmoid({x}, {literal(float(n.attrs.get('alpha', 0.2)))}, "
                                  f"{literal(float(n.attrs.get('beta', 0.5)))})"),
    "clip": lambda x, n: _clip(x, n.attrs.get("min"), n.attrs.get("max")),
    "not": lambda x, n: f"({x} == 0)",
    "identity": lambda x, n: x,
}

BINARY: dict[str, Callable[[str, str], str]] = {
    "add": lambda a, b: f"({a} + {b})",
    "sub": lambda a, b: f"({a} - {b})",
    "mul": lambda a, b: f"({a} * {b})",
    "div": lambda a, b: f"({a} / {b})",
    "maximum": lambda a, b: f"prims.maximum({a}, {b})",
    "minimum": lambda a, b: f"prims.minimum({a}, {b})",
    "equal": lambda a, b: f"({a} == {b})",
    "less": lambda a, b: f"({a} < {b})",
    "greater": lambda a, b: f"({a} > {b})",
}

FLOAT_ONLY = set(UNARY) - {"neg", "abs", "relu", "not", "identity", "clip"} | {"div"}


def scalar_constant(graph: Graph, value: str):
    """The Python number of a one-element constant, else None (it is then loaded as a tensor)."""
    tensor = graph.constants.get(value)
    if tensor is None or tensor.numel() != 1:
        return None
    return tensor.reshape(()).item()


def supports(node: Node, graph: Graph) -> str | None:
    """None if this elementwise node has a kernel expression, else why not."""
    dtypes = [graph.types[v].dtype for v in list(node.inputs) + list(node.outputs)]
    if any(d not in TL_DTYPES or d == torch.uint8 for d in dtypes):
        return "dtype without a kernel"
    if node.op in FLOAT_ONLY and not all(d.is_floating_point for d in dtypes):
        return f"{node.op} on integers"
    if node.op == "pow":
        exponent = scalar_constant(graph, node.inputs[1])
        if exponent is None or not graph.types[node.inputs[0]].dtype.is_floating_point:
            return "pow with a tensor exponent"
        return None
    if node.op == "cast" or node.op == "where" or node.op in UNARY or node.op in BINARY:
        return None
    if node.op in ("quantize_linear", "dequantize_linear"):
        if any(scalar_constant(graph, v) is None for v in node.inputs[1:]):
            return "per-channel or non-constant quantization parameters"
        return None
    return f"no kernel expression for {node.op}"


def _quantize(node: Node, args: list[str], graph: Graph, exact: bool, nonneg: bool) -> str:
    """int8 (or uint8) QuantizeLinear with scalar scale/zero point: round half to even, clamp.

    exact: x / scale as IEEE divides (prims.quantize); else x * (1 / scale) (prims.requantize).
    nonneg: the input is known >= 0 (a relu's input is passed instead): the clamp's lower bound
    becomes the zero point, which gives the same integers as quantizing the relu's output."""
    info = torch.iinfo(graph.types[node.outputs[0]].dtype)
    lo = info.min + int(node.attrs.get("narrow", False))
    zp = int(float(args[2])) if len(args) > 2 else 0
    lo = max(lo, zp) if nonneg else lo
    scale = torch.tensor(scalar_constant(graph, node.inputs[1]), dtype=torch.float32)
    inv_scale = float(1 / scale)  # fl(1 / scale): fp32 division on the host, correctly rounded
    bounds = f"{zp}, {literal(float(lo))}, {literal(float(info.max))}"
    call = (f"prims.quantize({args[0]}, {args[1]}, {literal(inv_scale)}, {bounds})" if exact
            else f"prims.requantize({args[0]}, {literal(inv_scale)}, {bounds})")
    return f"{call}.to({TL_DTYPES[graph.types[node.outputs[0]].dtype]})"


def emit(node: Node, args: list[str], graph: Graph, exact_quantize: bool = True,
         nonneg: bool = False) -> str:
    """The Triton expression for `node`'s output given its inputs' expressions (see _quantize for
    the two keywords)."""
    if node.op in UNARY:
        return UNARY[node.op](args[0], node)
    if node.op in BINARY:
        return BINARY[node.op](args[0], args[1])
    if node.op == "pow":
        return _pow(args[0], float(scalar_constant(graph, node.inputs[1])))
    if node.op == "cast":
        return _cast(args[0], node, graph.types[node.inputs[0]].dtype)
    if node.op == "where":
        return f"tl.where({args[0]}, {args[1]}, {args[2]})"
    if node.op == "quantize_linear":
        return _quantize(node, args, graph, exact_quantize, nonneg)
    if node.op == "dequantize_linear":
        zp = f" - {args[2]}" if len(args) > 2 else ""
        x = graph.types[node.inputs[0]].dtype
        # int8 / uint8 values: the exact full-rate conversion (an I2F runs at a quarter rate)
        as_float = f"prims.small_int_to_float({args[0]})" if x in (torch.int8, torch.uint8) \
            and args[0].isidentifier() else f"({args[0]}).to(tl.float32)"
        return f"(({as_float}{zp}) * {args[1]})"
    raise AssertionError(f"no expression for {node.op}")
