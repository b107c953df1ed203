"""Converters of ONNX activation functions beyond relu/sigmoid/tanh/gelu."""
from __future__ import annotations

from trident.compiler.errors import ShapeError
from trident.compiler.frontend.onnx.elementwise import elementwise_table
from trident.compiler.frontend.onnx.registry import converter

elementwise_table(unary={"Softplus": "softplus", "Softsign": "softsign", "Mish": "mish"})

# ONNX op -> (IR op, {attribute: default}); the attributes pass through as floats.
_WITH_ATTRS = {
    "Elu": ("elu", {"alpha": 1.0}),
    "Celu": ("celu", {"alpha": 1.0}),
    "Selu": ("selu", {"alpha": 1.67326319217681884765625, "gamma": 1.05070102214813232421875}),
    "ThresholdedRelu": ("thresholded_relu", {"alpha": 1.0}),
    "Shrink": ("shrink", {"bias": 0.0, "lambd": 0.5}),
    "Swish": ("swish", {"alpha": 1.0}),
}


def _with_attrs(ir_op: str, defaults: dict):
    def convert(cx):
        attrs = {name: cx.float_attr(name, default) for name, default in defaults.items()}
        return [cx.emit(ir_op, cx.input(0), **attrs)]
    return convert


for _onnx_op, (_ir_op, _defaults) in _WITH_ATTRS.items():
    converter(_onnx_op)(_with_attrs(_ir_op, _defaults))


@converter("PRelu")
def _prelu(cx):
    x, slope = cx.input(0), cx.input(1)
    xt, st = cx.type_of(x), cx.type_of(slope)
    if st.rank > xt.rank:
        raise cx.error(ShapeError, f"slope {st} has more dims than the input {xt}")
    return [cx.emit("prelu", x, slope)]
