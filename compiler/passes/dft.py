"""ONNX DFT as matrix products with the DFT's cosine and sine matrices, which run in the GEMM kernels.

The IR's `dft` (ops/spectral.py) holds a complex signal as a trailing dim of 2 (real, imaginary),
or a real one as a trailing dim of 1. Along its axis of n points, the transform is the product
with F[j, k] = exp(-2 pi i j k / n) = C - i S:

    forward:  re' = C re + S im,  im' = C im - S re     (im = 0 for a real signal)
    inverse:  re' = (C re - S im) / n,  im' = (C im + S re) / n

each a left product of an [m, n] matrix with the signal's axis (m = n, or the first n // 2 + 1
rows where `onesided` keeps only those bins), and the two parts are concatenated back along the
trailing dim. The matrices are computed in float64 and cast once to the signal's dtype.

Lowered where the types are static, the transform's length is the axis's own and the axis has
up to MAX_POINTS points; an inverse one-sided transform (a real output from half a spectrum) and
the others stay the torch step they are.
"""
from __future__ import annotations

from trident.compiler.ir import Graph, Node
from trident.compiler.ops.spectral import MAX_POINTS, dft_matrices
from trident.compiler.passes.rewrite import Rebuild, rewrite


def lower_dft(graph: Graph) -> Graph:
    def rewrite_dft(node: Node, rb: Rebuild):
        if node.op != "dft":
            return None
        x, y = graph.types[node.inputs[0]], graph.types[node.outputs[0]]
        axis, inverse, onesided = node.attrs["axis"], node.attrs.get("inverse", False), node.attrs.get("onesided", False)
        if not (x.is_static and y.is_static) or not x.dtype.is_floating_point or (inverse and onesided):
            return None
        n = x.shape[axis]
        if node.attrs.get("length") not in (None, n) or not 0 < n <= MAX_POINTS:
            return None
        return _products(rb, node, x, n, axis, inverse, onesided)

    return rewrite(graph, rewrite_dft)


def _products(rb: Rebuild, node: Node, x, n: int, axis: int, inverse: bool, onesided: bool) -> list[str]:
    add = rb.builder.add1
    bins = n // 2 + 1 if onesided else n
    cos, sin = dft_matrices(n, 1.0 / n if inverse else 1.0, x.dtype)
    cos, sin = (rb.builder.constant(m[:bins].contiguous(), f"{node.name}_{part}") for m, part in
                ((cos, "cos"), (sin, "sin")))
    rank, signal = x.rank, rb.value(node.inputs[0])
    # the axis just before the trailing dim, where a left product takes it
    perm = [d for d in range(rank - 1) if d != axis] + [axis, rank - 1]
    moved = signal if perm == list(range(rank)) else add("transpose", [signal], {"perm": perm}, node.name + "_axis")

    def part(index: int) -> str:
        return add("slice", [moved], {"starts": [index], "ends": [index + 1], "axes": [rank - 1], "steps": [1]},
                   f"{node.name}_part{index}")

    def times(matrix: str, value: str) -> str:
        return add("matmul", [matrix, value], {}, node.name + "_product")

    re = part(0)
    if x.shape[-1] == 1:  # a real signal
        new_re, new_im = times(cos, re), times(sin, re)
        new_im = new_im if inverse else add("neg", [new_im], {}, node.name + "_neg")
    else:
        im = part(1)
        re_op, im_op = ("sub", "add") if inverse else ("add", "sub")
        new_re = add(re_op, [times(cos, re), times(sin, im)], {}, node.name + "_re")
        new_im = add(im_op, [times(cos, im), times(sin, re)], {}, node.name + "_im")
    pairs = add("concat", [new_re, new_im], {"axis": rank - 1}, node.name + "_pairs")
    back = [perm.index(d) for d in range(rank)]
    if back == list(range(rank)):
        return rb.builder.add("identity", [pairs], {}, node.name, outputs=node.outputs)
    return rb.builder.add("transpose", [pairs], {"perm": back}, node.name, outputs=node.outputs)
