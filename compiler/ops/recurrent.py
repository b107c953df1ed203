"""ONNX's recurrent layers, RNN, GRU and LSTM, as a loop over time steps in torch.

Each layer is one op of inputs x [seq, batch, input] (the frontend transposes layout=1 models),
W and R stacked per direction as ONNX stores them, the bias, the sequence lengths and the initial
state (and, for LSTM, the initial cell and the peepholes): the frontend gives every optional one
its ONNX default. Entries shorter than the sequence stop at their length: later outputs
are 0 and the final state is the one at their last step; the reverse direction reads each entry's
own steps backwards.
"""
from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F

from trident.compiler.ops.registry import Kind, op


def _activation(name: str, alpha: float | None, beta: float | None):
    """An ONNX RNN activation by name, with its alpha / beta (None: the default)."""
    a = alpha
    b = beta
    table = {
        "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Relu": torch.relu,
        "Softsign": lambda x: x / (1 + x.abs()), "Softplus": F.softplus,
        "Affine": lambda x: (1.0 if a is None else a) * x + (0.0 if b is None else b),
        "LeakyRelu": lambda x: F.leaky_relu(x, 0.01 if a is None else a),
        "ThresholdedRelu": lambda x: torch.where(x > (1.0 if a is None else a), x, 0.0),
        "ScaledTanh": lambda x: (1.0 if a is None else a) * torch.tanh((1.0 if b is None else b) * x),
        "HardSigmoid": lambda x: torch.clamp((0.2 if a is None else a) * x
                                             + (0.5 if b is None else b), 0, 1),
        "Elu": lambda x: F.elu(x, 1.0 if a is None else a),
    }
    if name not in table:
        raise ValueError(f"activation {name!r}")
    return table[name]


def activation_functions(names: Sequence[str], alphas: Sequence[float], betas: Sequence[float]):
    """The activation functions of a layer: alpha / beta are listed only for those that take
    them, in order (ONNX's activation_alpha / activation_beta)."""
    takes_alpha = {"Affine", "LeakyRelu", "ThresholdedRelu", "ScaledTanh", "HardSigmoid", "Elu"}
    takes_beta = {"Affine", "ScaledTanh", "HardSigmoid"}
    alphas, betas = list(alphas), list(betas)
    out = []
    for name in names:
        alpha = alphas.pop(0) if name in takes_alpha and alphas else None
        beta = betas.pop(0) if name in takes_beta and betas else None
        out.append(_activation(name, alpha, beta))
    return out


def _reverse_within(x, lengths):
    """x [seq, batch, ...] with each entry's first lengths[b] steps reversed."""
    steps = x.shape[0]
    t = torch.arange(steps, device=x.device)[:, None]
    source = torch.where(t < lengths[None, :], lengths[None, :] - 1 - t, t)
    return torch.gather(x, 0, source.reshape(source.shape + (1,) * (x.dim() - 2)).expand(x.shape))


def _scan(step, x, state, lengths, reverse: bool, clip: float | None):
    """Run `step(x_t, state) -> (h_t, state)` over time; returns the outputs [seq, batch, hidden]
    and the final state (each entry's state at its last step)."""
    if reverse:
        x = _reverse_within(x, lengths)
    outputs = []
    for t in range(x.shape[0]):
        h, new_state = step(x[t], state, clip)
        live = (t < lengths)[:, None]
        state = tuple(torch.where(live, n, s) for n, s in zip(new_state, state))
        outputs.append(torch.where(live, h, torch.zeros_like(h)))
    y = torch.stack(outputs) if outputs else x.new_zeros((0,) + state[0].shape)
    return (_reverse_within(y, lengths) if reverse else y), state


def _gates(x, h, w, r, bias, count: int, clip):
    """x W^T + h R^T + Wb + Rb, split into `count` gates (clipped when clip is set)."""
    hidden = r.shape[-1]
    z = x @ w.t() + h @ r.t() + bias[:count * hidden] + bias[count * hidden:]
    if clip is not None:
        z = z.clamp(-clip, clip)
    return z.split(hidden, dim=-1)


def _layer(kind: str, x, w, r, b, lengths, h0, c0, p, *, direction: str, acts, clip,
           linear_before_reset: bool, input_forget: bool):
    seq = x.shape[0]
    lengths = lengths.to(torch.int64).clamp(0, seq)
    directions = 2 if direction == "bidirectional" else 1
    per_direction = len(acts) // directions
    ys, finals = [], []
    for d in range(directions):
        step = _STEPS[kind](w[d], r[d], b[d], acts[d * per_direction:(d + 1) * per_direction],
                            linear_before_reset=linear_before_reset, input_forget=input_forget,
                            peephole=None if p is None else p[d])
        state = (h0[d],) if c0 is None else (h0[d], c0[d])
        reverse = direction == "reverse" or d == 1
        y, state = _scan(step, x, state, lengths, reverse, clip)
        ys.append(y)
        finals.append(state)
    y = torch.stack(ys, 1)  # [seq, directions, batch, hidden]
    return (y,) + tuple(torch.stack([f[k] for f in finals]) for k in range(len(finals[0])))


def _rnn_step(w, r, bias, f, **_):
    def step(x, state, clip):
        (z,) = _gates(x, state[0], w, r, bias, 1, clip)
        h = f[0](z)
        return h, (h,)
    return step


def _gru_step(w, r, bias, f, *, linear_before_reset: bool, **_):
    hidden = r.shape[-1]
    wz, wr, wh = w.split(hidden)
    rz, rr, rh = r.split(hidden)
    wb, rb = bias[:3 * hidden].split(hidden), bias[3 * hidden:].split(hidden)

    def step(x, state, clip):
        h_prev = state[0]
        cut = (lambda v: v.clamp(-clip, clip)) if clip is not None else (lambda v: v)
        z = f[0](cut(x @ wz.t() + h_prev @ rz.t() + wb[0] + rb[0]))
        rgate = f[0](cut(x @ wr.t() + h_prev @ rr.t() + wb[1] + rb[1]))
        if linear_before_reset:
            candidate = x @ wh.t() + rgate * (h_prev @ rh.t() + rb[2]) + wb[2]
        else:
            candidate = x @ wh.t() + (rgate * h_prev) @ rh.t() + rb[2] + wb[2]
        h = (1 - z) * f[1](cut(candidate)) + z * h_prev
        return h, (h,)
    return step


def _lstm_step(w, r, bias, f, *, input_forget: bool, peephole, **_):
    hidden = r.shape[-1]
    pi, po, pf = (peephole.split(hidden) if peephole is not None else (0, 0, 0))

    def step(x, state, clip):
        h_prev, c_prev = state
        i, o, fg, c = _gates(x, h_prev, w, r, bias, 4, clip)
        i = f[0](i + pi * c_prev)
        fg = 1 - i if input_forget else f[0](fg + pf * c_prev)
        c_new = fg * c_prev + i * f[1](c)
        o = f[0](o + po * c_new)
        h = o * f[2](c_new)
        return h, (h, c_new)
    return step


_STEPS = {"rnn": _rnn_step, "gru": _gru_step, "lstm": _lstm_step}


def _recurrent(kind: str):
    def ref(x, w, r, b, lengths, h0, c0=None, p=None, *, direction: str = "forward",
            activations: Sequence[str], alphas: Sequence[float] = (),
            betas: Sequence[float] = (), clip: float | None = None,
            linear_before_reset: bool = False, input_forget: bool = False):
        acts = activation_functions(activations, alphas, betas)
        outs = _layer(kind, x, w, r, b, lengths, h0, c0, p, direction=direction, acts=acts,
                      clip=clip, linear_before_reset=linear_before_reset,
                      input_forget=input_forget)
        return tuple(o.to(x.dtype) for o in outs)
    return ref


for _kind in _STEPS:
    op(_kind, Kind.OPAQUE)(_recurrent(_kind))
