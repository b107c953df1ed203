"""Converters of ONNX DFT and STFT."""
from __future__ import annotations

from trident.compiler.errors import ModelError, ShapeError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter


def _dft(cx: NodeContext, axis: int):
    x = cx.input(0)
    rank = cx.type_of(x).rank
    if not -rank <= axis <= rank - 2 or axis == -1:
        raise cx.error(ModelError, f"axis {axis} must name a signal dim of {cx.type_of(x)}")
    length = cx.const_scalar(1, "dft_length") if cx.has(1) else None
    return [cx.emit("dft", x, axis=axis % rank, length=None if length is None else int(length),
                    inverse=cx.flag("inverse", 0), onesided=cx.flag("onesided", 0))]


@converter("DFT", since=17, constant_inputs=(1,))
def _dft_axis_attr(cx):
    return _dft(cx, cx.int_attr("axis", 1))


@converter("DFT", since=20, constant_inputs=(1, 2))
def _dft_axis_input(cx):
    axis = cx.const_scalar(2, "axis")
    return _dft(cx, -2 if axis is None else int(axis))


@converter("STFT", since=17, constant_inputs=(1, 3))
def _stft(cx):
    x = cx.input(0)
    step = int(cx.const_scalar(1, "frame_step"))
    window = cx.input(2) if cx.has(2) else None
    length = cx.const_scalar(3, "frame_length")
    if length is None:
        if window is None:
            raise cx.error(ModelError, "needs a window or a frame_length")
        length = cx.static_shape(window, "STFT's window")[0]
    length = int(length)
    if cx.static_shape(x, "STFT")[1] < length or step < 1:
        raise cx.error(ShapeError, f"frames of {length} every {step} do not fit {cx.type_of(x)}")
    inputs = [x] + ([window] if window is not None else [])
    return [cx.emit("stft", *inputs, frame_step=step, frame_length=length,
                    onesided=cx.flag("onesided", 1))]
