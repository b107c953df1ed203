"""Bodies of the reductions added beside the reduction generator's first four (compiler/codegen/
kernels.py: softmax, layer_norm, reduce_sum/mean/max): each emits its math on the loaded row tile
`x` ([BLOCK_X, BLOCK_R], lanes past the row masked by `rmask`) and returns the variable holding
its result ([BLOCK_X, BLOCK_R] for row-wise ops, [BLOCK_X, 1] for the others). Integer rows have
bodies of their own (INTEGER_BODIES)."""
from __future__ import annotations

from typing import Callable

from trident.compiler.codegen.expr import TL_DTYPES, literal
from trident.compiler.codegen.writer import KernelWriter
from trident.compiler.ir import Node
from trident.compiler.ops.common import highest, lowest

# Ops whose output has the shape of their input (they normalize rows rather than reduce them).
ROWWISE = ("softmax", "layer_norm", "log_softmax", "rms_norm")


def _pads(w: KernelWriter, node: Node) -> tuple[str, str]:
    """What masked-off lanes read for a max and for a min: -inf and inf for floats; an integer
    type's extremes (a float pad would make an integer tile floats, inexact past 2^24)."""
    dtype = w.graph.types[node.inputs[0]].dtype
    return literal(lowest(dtype)), literal(highest(dtype))


def _accumulator(w: KernelWriter, node: Node) -> str:
    """The type a sum or product adds up in: fp32 for floats, the output's type for integers
    (torch sums and multiplies every integer type into int64)."""
    if w.graph.types[node.inputs[0]].dtype.is_floating_point:
        return "tl.float32"
    return TL_DTYPES[w.graph.types[node.outputs[0]].dtype]


def _reduce_min(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    # tl.min skips NaN on the GPU: a float row holding one is NaN, as in torch.amin
    floats = w.graph.types[node.inputs[0]].dtype.is_floating_point
    pick = "prims.min_nan" if floats else "tl.min"
    w.line(f"{out} = {pick}(tl.where(rmask, {x}, {_pads(w, node)[1]}), 1)[:, None]")


def _reduce_prod(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    # The last column of the running product (tl.cumprod is Triton's public multiply-scan).
    w.line(f"{out}_scan = tl.cumprod(tl.where(rmask, {x}, 1).to({_accumulator(w, node)}), 1)")
    w.line(f"{out} = prims.last_column({out}_scan)")


def _integer_sum(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    w.line(f"{out} = tl.sum(tl.where(rmask, {x}, 0).to({_accumulator(w, node)}), 1)[:, None]")


def _integer_max(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    w.line(f"{out} = tl.max(tl.where(rmask, {x}, {_pads(w, node)[0]}), 1)[:, None]")


def _arg_extreme(largest: bool):
    """argmax / argmin along the one reduced axis: the first (or, with select_last_index, the
    last) position holding the extreme; a NaN counts as the extreme, as in torch and numpy.
    Integers compare as they are (padded with their type's extremes)."""
    def body(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
        lowest, highest = _pads(w, node)
        pad, pick = (lowest, "tl.max") if largest else (highest, "tl.min")
        last = node.attrs.get("select_last_index", False)
        w.line(f"{out}_v = tl.where(rmask, {x}, {pad})")
        w.line(f"{out}_ext = {pick}({out}_v, 1)[:, None]")
        if w.graph.types[node.inputs[0]].dtype.is_floating_point:
            w.line(f"{out}_nan = {out}_v != {out}_v")
            w.line(f"{out}_any_nan = tl.max({out}_nan.to(tl.int32), 1)[:, None] > 0")
            w.line(f"{out}_hit = tl.where({out}_any_nan, {out}_nan, {out}_v == {out}_ext) & rmask")
        else:
            w.line(f"{out}_hit = ({out}_v == {out}_ext) & rmask")
        if last:
            w.line(f"{out} = tl.max(tl.where({out}_hit, roffs[None, :], -1), 1)[:, None]")
        else:
            w.line(f"{out} = tl.min(tl.where({out}_hit, roffs[None, :], BLOCK_R), 1)[:, None]")
    return body


def _log_softmax(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    w.line(f"{out}_max = tl.max(tl.where(rmask, {x}, float('-inf')), 1)[:, None]")
    w.line(f"{out}_sum = tl.sum(tl.where(rmask, tl.exp({x} - {out}_max), 0.0), 1)[:, None]")
    w.line(f"{out} = {x} - {out}_max - tl.log({out}_sum)")


def _rms_norm(w: KernelWriter, node: Node, x: str, out: str, length: int, load_param) -> None:
    eps = float(node.attrs.get("epsilon", 1e-5))
    w.line(f"{out}_ms = tl.sum(tl.where(rmask, {x} * {x}, 0.0), 1)[:, None] * {1.0 / length!r}")
    w.line(f"{out} = {x} / tl.sqrt({out}_ms + {eps!r}) * {load_param(node.inputs[1])}")


BODIES: dict[str, Callable] = {
    "reduce_min": _reduce_min, "reduce_prod": _reduce_prod,
    "argmax": _arg_extreme(True), "argmin": _arg_extreme(False),
    "log_softmax": _log_softmax, "rms_norm": _rms_norm,
}
# Integer rows (group_kinds.INTEGER_REDUCTIONS): exact, in the accumulator's integer type.
INTEGER_BODIES: dict[str, Callable] = {
    "reduce_sum": _integer_sum, "reduce_max": _integer_max, "reduce_min": _reduce_min,
    "reduce_prod": _reduce_prod, "argmax": _arg_extreme(True), "argmin": _arg_extreme(False),
}
