"""Elementwise IR ops as Triton expressions.

Inside a generated kernel every float value lives in fp32 registers (loads upcast, stores round
once), integers and booleans keep their own types. Each entry below turns the expressions of a
node's inputs into the expression of its output.
"""
from __future__ import annotations

import math
import re
from typing import Callable

import torch

from trident.compiler.ir import Graph, Node

TL_DTYPES = {
    torch.float32: "tl.float32", torch.float16: "tl.float16", torch.bfloat16: "tl.bfloat16",
    torch.int8: "tl.int8", torch.uint8: "tl.uint8", torch.int32: "tl.int32",
    torch.int64: "tl.int64", torch.bool: "tl.int1", torch.int16: "tl.int16",
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


def _float_attr(node: Node, name: str, default: float) -> str:
    return literal(float(node.attrs.get(name, default)))


# Triton has no expm1 / log1p / rint (libdevice is absent from the interpreter), so the few
# functions below are written with exp / log and the classic exactness tricks.
def round_half_even(x):
    # 1.5 * 2^23 added to |x| < 2^22 lands where fp32's spacing is exactly 1: the add itself rounds
    # half to even, and subtracting it back is exact. Larger magnitudes (and inf, NaN) are integers
    # already, or stay what they are.
    return f"tl.where(tl.abs({x}) < 4194304.0, ({x} + 12582912.0) - 12582912.0, {x})"


def _expm1(x):
    # Kahan: with u = fl(exp(x)), (u - 1) * x / log(u) cancels the rounding error of u.
    # Where u is huge (or overflowed to inf), u - 1 is u: the correction would be inf / inf.
    u = f"tl.exp({x})"
    return (f"tl.where({u} == 1.0, {x}, tl.where({u} - 1.0 == -1.0, -1.0, "
            f"tl.where({u} > 1.0e30, {u}, ({u} - 1.0) * {x} / tl.log({u}))))")


def _log1p(t):
    # Goldberg: with u = fl(1 + t), log(u) * t / (u - 1) is accurate to a few ulps.
    u = f"(1.0 + {t})"
    return f"tl.where({u} == 1.0, {t}, tl.log({u}) * {t} / ({u} - 1.0))"


def _tanh(x):
    # -expm1(-2|x|) / (expm1(-2|x|) + 2), signed: accurate near 0 (1 - 2 / (e^2x + 1) loses the
    # low bits there) and exactly 1 for large |x| (expm1 -> -1), with no overflow.
    t = _expm1(f"(-2.0 * tl.abs({x}))")
    return f"tl.where({x} < 0, 1.0, -1.0) * {t} / ({t} + 2.0)"


def _softplus(x):
    return f"(tl.maximum({x}, 0.0) + {_log1p(f'tl.exp(-tl.abs({x}))')})"


def _mish(x):
    # tanh(softplus(x)) = n / (n + 2) with n = e^x (e^x + 2): no cancellation where softplus is
    # tiny; past x = 20 it is 1 in fp32 (and n would overflow).
    n = f"(tl.exp({x}) * (tl.exp({x}) + 2.0))"
    return f"tl.where({x} > 20.0, {x}, {x} * {n} / ({n} + 2.0))"


def _celu(x, alpha: str):
    # (NaN-propagating max and min: tl's own drop a NaN operand, and celu(NaN) is NaN)
    return (f"(prims.maximum({x}, 0.0) + "
            f"prims.minimum({alpha} * {_expm1(f'({x} / {alpha})')}, 0.0))")


def _shrink(x, lambd: str, bias: str):
    return (f"tl.where({x} < -{lambd}, {x} + {bias}, "
            f"tl.where({x} > {lambd}, {x} - {bias}, 0.0))")


def _sinh(x):
    # (e^x - e^-x) / 2 cancels near 0: there the Taylor series is exact to fp32.
    series = f"{x} * (1.0 + {x} * {x} * (0.16666666666666666 + {x} * {x} * 0.008333333333333333))"
    return f"tl.where(tl.abs({x}) < 0.1, {series}, (tl.exp({x}) - tl.exp(-{x})) * 0.5)"


def _log_large(x, formula: str):
    """`formula` (a log of x + sqrt(x^2 +- 1)) where x^2 is finite; log(2|x|) beyond, where the
    square would overflow."""
    return f"tl.where(tl.abs({x}) > 1e18, tl.log(tl.abs({x})) + 0.6931471805599453, {formula})"


def _asinh(x):
    series = f"{x} * (1.0 - {x} * {x} * 0.16666666666666666)"
    ax = f"tl.abs({x})"
    general = f"tl.where({x} < 0, -1.0, 1.0) * {_log_large(x, f'tl.log({ax} + tl.sqrt({x} * {x} + 1.0))')}"
    return f"tl.where({ax} < 0.01, {series}, {general})"


def _atanh(x):
    series = f"{x} * (1.0 + {x} * {x} * (0.3333333333333333 + {x} * {x} * 0.2))"
    return f"tl.where(tl.abs({x}) < 0.01, {series}, 0.5 * tl.log((1.0 + {x}) / (1.0 - {x})))"


def _gelu(x, node: Node, result: torch.dtype):
    """torch's GELU: the tanh form where asked; else x * Phi(x) through prims' erfc fit, the shorter
    one where the result is rounded to 16 bits (prims.gelu_erf_half: within one fp16 ulp)."""
    if node.attrs.get("approximate", "none") == "tanh":
        return f"prims.gelu_tanh({x})"
    return f"prims.gelu_erf_half({x})" if result in (torch.float16, torch.bfloat16) else f"prims.gelu_erf({x})"


def _is_inf(x, node: Node):
    tests = ([f"({x} == float('inf'))"] if node.attrs.get("positive", True) else []) + \
            ([f"({x} == float('-inf'))"] if node.attrs.get("negative", True) else [])
    return "(" + " | ".join(tests) + ")" if tests else f"({x} != {x}) & ({x} == {x})"


def _integer_div(a, b, dtype: torch.dtype) -> str:
    """The IR's div of integers: truncated (torch's rounding_mode="trunc", ONNX's Div), with a
    defined result for the divisors whose division has none (prims.trunc_div). The operands are
    cast to the integer type first: a register of an integer value may hold it as a float (a clip's
    float bounds promote it), and Triton's // takes integers only."""
    a, b = (x if _INT_LITERAL.fullmatch(x) else f"({x}).to({TL_DTYPES[dtype]})" for x in (a, b))
    return f"prims.unsigned_div({a}, {b})" if dtype == torch.uint8 else f"prims.trunc_div({a}, {b})"


_INT_LITERAL = re.compile(r"-?\d+")


def _floor_mod(a, b):
    # Python's %: the remainder takes the divisor's sign (Triton's % truncates, as C's fmod).
    r = f"({a} % {b})"
    return f"tl.where(({r} != 0) & (({r} < 0) != ({b} < 0)), {r} + {b}, {r})"


UNARY: dict[str, Callable[[str, Node], str]] = {
    "neg": lambda x, n: f"prims.neg({x})",
    "abs": lambda x, n: f"tl.abs({x})",
    "exp": lambda x, n: f"tl.exp({x})",
    "log": lambda x, n: f"tl.log({x})",
    "sqrt": lambda x, n: f"tl.sqrt({x})",
    "reciprocal": lambda x, n: f"(1.0 / {x})",
    "relu": lambda x, n: f"prims.relu({x})",
    "sigmoid": lambda x, n: f"tl.sigmoid({x})",
    "tanh": lambda x, n: _tanh(x),
    "erf": lambda x, n: f"tl.erf({x})",
    "gelu": lambda x, n: _gelu(x, n, torch.float32),
    "silu": lambda x, n: f"prims.silu({x})",
    "hard_swish": lambda x, n: f"prims.hard_swish({x})",
    "leaky_relu": lambda x, n: f"prims.leaky_relu({x}, {literal(float(n.attrs.get('alpha', 0.01)))})",
    "hard_sigmoid": lambda x, n: (f"prims.hard_sigmoid({x}, {literal(float(n.attrs.get('alpha', 0.2)))}, "
                                  f"{literal(float(n.attrs.get('beta', 0.5)))})"),
    "clip": lambda x, n: _clip(x, n.attrs.get("min"), n.attrs.get("max")),
    "not": lambda x, n: f"({x} == 0)",
    "identity": lambda x, n: x,
    # rounding, trigonometry, tests, activations: see the builders below
    "floor": lambda x, n: f"tl.floor({x})",
    "ceil": lambda x, n: f"tl.ceil({x})",
    "round": lambda x, n: round_half_even(x),
    "sign": lambda x, n: f"tl.where({x} > 0, 1, tl.where({x} < 0, -1, 0 * {x}))",  # NaN stays
    "sin": lambda x, n: f"tl.sin({x})",
    "asin": lambda x, n: f"prims.asin({x})",
    "acos": lambda x, n: f"prims.acos({x})",
    "atan": lambda x, n: f"prims.atan({x})",
    "erfc": lambda x, n: f"prims.erfc({x})",
    "cos": lambda x, n: f"tl.cos({x})",
    "tan": lambda x, n: f"(tl.sin({x}) / tl.cos({x}))",
    "sinh": lambda x, n: _sinh(x),
    "cosh": lambda x, n: f"((tl.exp({x}) + tl.exp(-{x})) * 0.5)",
    "asinh": lambda x, n: _asinh(x),
    "acosh": lambda x, n: _log_large(x, f"tl.log({x} + tl.sqrt({x} * {x} - 1.0))"),
    "atanh": lambda x, n: _atanh(x),
    "is_nan": lambda x, n: f"({x} != {x})",
    "sign_bit": lambda x, n: f"prims.sign_bit({x})",
    "exp2": lambda x, n: f"tl.exp2({x})",
    "log2": lambda x, n: f"tl.log2({x})",
    "is_inf": lambda x, n: _is_inf(x, n),
    "bitwise_not": lambda x, n: f"(~{x})",
    "elu": lambda x, n: f"tl.where({x} > 0, {x}, {_float_attr(n, 'alpha', 1.0)} * {_expm1(x)})",
    "celu": lambda x, n: _celu(x, _float_attr(n, "alpha", 1.0)),
    "selu": lambda x, n: (f"({_float_attr(n, 'gamma', 1.0507009873554805)} * tl.where({x} > 0, {x}, "
                          f"{_float_attr(n, 'alpha', 1.6732632423543772)} * {_expm1(x)}))"),
    "softplus": lambda x, n: _softplus(x),
    "softsign": lambda x, n: f"({x} / (1.0 + tl.abs({x})))",
    "mish": lambda x, n: _mish(x),
    "thresholded_relu": lambda x, n: f"tl.where({x} > {_float_attr(n, 'alpha', 1.0)}, {x}, 0.0)",
    "shrink": lambda x, n: _shrink(x, _float_attr(n, "lambd", 0.5), _float_attr(n, "bias", 0.0)),
    "swish": lambda x, n: f"({x} * tl.sigmoid({_float_attr(n, 'alpha', 1.0)} * {x}))",
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
    # integer, logical and comparison ops (C semantics: % truncates, as ONNX fmod=1 does)
    "less_equal": lambda a, b: f"({a} <= {b})",
    "greater_equal": lambda a, b: f"({a} >= {b})",
    "fmod": lambda a, b: f"({a} % {b})",
    "mod": lambda a, b: _floor_mod(a, b),
    "logical_and": lambda a, b: f"({a} & {b})",
    "logical_or": lambda a, b: f"({a} | {b})",
    "logical_xor": lambda a, b: f"({a} ^ {b})",
    "bitwise_and": lambda a, b: f"({a} & {b})",
    "bitwise_or": lambda a, b: f"({a} | {b})",
    "bitwise_xor": lambda a, b: f"({a} ^ {b})",
    "shift_left": lambda a, b: f"({a} << {b})",
    "shift_right": lambda a, b: f"({a} >> {b})",  # logical: ONNX shifts unsigned types only
    "prelu": lambda a, b: f"tl.where({a} < 0, {b} * {a}, {a})",
    "atan2": lambda a, b: f"prims.atan2({a}, {b})",
    "hypot": lambda a, b: f"prims.hypot({a}, {b})",
    "copysign": lambda a, b: f"prims.copysign({a}, {b})",
}

FLOAT_ONLY = set(UNARY) - {"neg", "abs", "relu", "not", "identity", "clip", "sign",
                           "bitwise_not"} | {"atan2", "hypot", "copysign"}
# Ops whose operands must be integers (or booleans): the expression means something else on floats.
INTEGER_ONLY = {"bitwise_not", "bitwise_and", "bitwise_or", "bitwise_xor", "shift_left",
                "shift_right", "logical_and", "logical_or", "logical_xor"}


def scalar_constant(graph: Graph, value: str):
    """The Python number of a one-element constant, else None (it is then loaded as a tensor)."""
    tensor = graph.constants.get(value)
    if tensor is None or tensor.numel() != 1:
        return None
    return tensor.reshape(()).item()


def supports(node: Node, graph: Graph) -> str | None:
    """None if this elementwise node has a kernel expression, else why not."""
    dtypes = [graph.types[v].dtype for v in list(node.inputs) + list(node.outputs)]
    if any(d not in TL_DTYPES for d in dtypes):
        return "dtype without a kernel"
    if node.op in FLOAT_ONLY and not all(graph.types[v].dtype.is_floating_point
                                         for v in node.inputs):
        return f"{node.op} on integers"
    if node.op == "div" and torch.bool in dtypes:
        return "div of booleans"
    if node.op in INTEGER_ONLY and any(graph.types[v].dtype.is_floating_point for v in node.inputs):
        return f"{node.op} on floats"
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
    if node.op == "gelu":
        return _gelu(args[0], node, graph.types[node.outputs[0]].dtype)
    if node.op in UNARY:
        return UNARY[node.op](args[0], node)
    if node.op == "div" and not graph.types[node.outputs[0]].dtype.is_floating_point:
        return _integer_div(args[0], args[1], graph.types[node.outputs[0]].dtype)
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
