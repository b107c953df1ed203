"""Converters of ONNX RNN, GRU and LSTM: one IR op each (a loop over time in torch), with every
optional input given its ONNX default and layout=1 (batch first) transposed around it."""
from __future__ import annotations

import torch

from trident.compiler.errors import ModelError
from trident.compiler.frontend.onnx.context import NodeContext
from trident.compiler.frontend.onnx.registry import converter

# op -> (IR op, gates, default activations of one direction)
_LAYERS = {"RNN": ("rnn", 1, ["Tanh"]), "GRU": ("gru", 3, ["Sigmoid", "Tanh"]),
           "LSTM": ("lstm", 4, ["Sigmoid", "Tanh", "Tanh"])}
_DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}


def _input_or(cx: NodeContext, i: int, default: torch.Tensor, batch_first: bool = False) -> str:
    """Optional input `i`, or a constant holding its ONNX default. An initial state given in
    the batch-first layout ([batch, directions, hidden]) is transposed to [directions, batch,
    hidden]."""
    if not cx.has(i):
        return cx.constant(default, f"default{i}")
    value = cx.input(i)
    return cx.emit("transpose", value, perm=[1, 0, 2]) if batch_first else value


@converter("RNN", "GRU", "LSTM")
def _recurrent(cx):
    ir_op, gates, default_acts = _LAYERS[cx.op_type]
    direction = cx.str_attr("direction", "forward")
    if direction not in _DIRECTIONS:
        raise cx.error(ModelError, f"direction must be forward, reverse or bidirectional, got "
                                   f"{direction!r}")
    directions = _DIRECTIONS[direction]
    batch_first = cx.int_attr("layout", 0) == 1
    x = cx.input(0)
    if batch_first:
        x = cx.emit("transpose", x, perm=[1, 0, 2])
    seq, batch, _ = cx.static_shape(x, cx.op_type)
    hidden = cx.static_shape(cx.input(2), "R")[-1]
    if cx.int_attr("hidden_size", hidden) != hidden:
        raise cx.error(ModelError, f"hidden_size {cx.int_attr('hidden_size')} but R is "
                                   f"{cx.type(2)}")
    dtype = cx.type_of(x).dtype
    state = torch.zeros(directions, batch, hidden, dtype=dtype)
    inputs = [x, cx.input(1), cx.input(2),
              _input_or(cx, 3, torch.zeros(directions, 2 * gates * hidden, dtype=dtype)),
              _input_or(cx, 4, torch.full((batch,), seq, dtype=torch.int32)),
              _input_or(cx, 5, state, batch_first)]
    if ir_op == "lstm":
        inputs += [_input_or(cx, 6, state, batch_first),
                   _input_or(cx, 7, torch.zeros(directions, 3 * hidden, dtype=dtype))]
    acts = cx.attr("activations") or default_acts * directions
    if len(acts) != len(default_acts) * directions:
        raise cx.error(ModelError, f"activations {acts} must name {len(default_acts)} functions "
                                   f"per direction")
    attrs = {"direction": direction, "activations": list(acts),
             "alphas": list(cx.attr("activation_alpha") or []),
             "betas": list(cx.attr("activation_beta") or []),
             "clip": cx.attr("clip"), "linear_before_reset": cx.flag("linear_before_reset", 0),
             "input_forget": cx.flag("input_forget", 0)}
    outs = cx.emit_multi(ir_op, inputs, attrs, 3 if ir_op == "lstm" else 2)
    if batch_first:  # Y [batch, seq, directions, hidden], states [batch, directions, hidden]
        outs = [cx.emit("transpose", outs[0], perm=[2, 0, 1, 3])] + \
               [cx.emit("transpose", o, perm=[1, 0, 2]) for o in outs[1:]]
    return outs
