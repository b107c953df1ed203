"""Graph -> Graph passes, run in one ordered pipeline.

Each pass is a plain function with a name. With TRIDENT_DEBUG=1 (or debug=True) the IR is verified
after every pass, so a broken invariant points at the pass that broke it.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from trident.compiler import config
from trident.compiler.errors import TridentError
from trident.compiler.ir import Graph
from trident.compiler.passes.activations import fold_gelu
from trident.compiler.passes.algebraic import (decompose_batch_norm, fold_conv_batch_norm,
                                               fold_bias_into_anchor, fold_pad_into_conv)
from trident.compiler.passes.batched_matmul import flatten_matmul_batches
from trident.compiler.passes.attention import fuse_attention
from trident.compiler.passes.broadcasts import simplify_broadcasts
from trident.compiler.passes.cleanup import (eliminate_common_subexpressions,
                                             eliminate_dead_code, fold_constants,
                                             remove_identities)
from trident.compiler.passes.concats import fold_negated_pieces, split_wide_concats
from trident.compiler.passes.einsum import lower_einsum
from trident.compiler.passes.dft import lower_dft
from trident.compiler.passes.col2im import lower_col2im
from trident.compiler.passes.conv1d import lower_conv1d
from trident.compiler.passes.gather_nd import lower_gather_nd
from trident.compiler.passes.gathers import gathers_along_dim_0, gathers_as_slices
from trident.compiler.passes.heads import fold_head_splits
from trident.compiler.passes.horizontal import merge_sibling_matmuls
from trident.compiler.passes.long_rows import loop_long_rows
from trident.compiler.passes.patches import lower_patch_conv_transposes, lower_patch_convs
from trident.compiler.passes.permutations import invert_permutations
from trident.compiler.passes.scatter_rows import scatter_rows
from trident.compiler.passes.precision import lower_precision
from trident.compiler.passes.reshapes import sink_reshapes
from trident.compiler.passes.resample import resample_with_tap_tables
from trident.compiler.passes.resize import upsample_by_whole_factors
from trident.compiler.passes.transposes import matmul_rows_in_order, sink_transposes

Pass = Callable[[Graph], Graph]


@dataclass(frozen=True)
class PassOptions:
    precision: str = "fp32"
    # int8: calibrates and rewrites float conv/matmul layers into int8 ones (compiler/quantize);
    # runs after the float rewrites (BN and bias folding, sibling merging), before lowering.
    quantize: Callable[[Graph], Graph] | None = None


def pipeline(options: PassOptions) -> list[tuple[str, Pass]]:
    """The ordered list of (name, pass) for these options."""
    passes: list[tuple[str, Pass]] = [
        ("fold_constants", fold_constants),
        ("remove_identities", remove_identities),
        ("eliminate_dead_code", eliminate_dead_code),
        ("eliminate_common_subexpressions", eliminate_common_subexpressions),
        ("lower_einsum", lower_einsum),
        ("flatten_matmul_batches", flatten_matmul_batches),
        ("upsample_by_whole_factors", upsample_by_whole_factors),
        ("resample_with_tap_tables", resample_with_tap_tables),
        ("simplify_broadcasts", simplify_broadcasts),
        ("fold_gelu", fold_gelu),
        ("fold_negated_pieces", fold_negated_pieces),
        ("gathers_as_slices", gathers_as_slices),
        ("gathers_along_dim_0", gathers_along_dim_0),
        ("invert_permutations", invert_permutations),
        ("scatter_rows", scatter_rows),  # (after: a permutation's inverse is a sort, not a scatter)
        ("lower_dft", lower_dft),
        ("lower_col2im", lower_col2im),
        ("lower_gather_nd", lower_gather_nd),
        ("fold_pad_into_conv", fold_pad_into_conv),
        ("fold_conv_batch_norm", fold_conv_batch_norm),
        ("decompose_batch_norm", decompose_batch_norm),
        ("fold_bias_into_anchor", fold_bias_into_anchor),
        ("lower_conv1d", lower_conv1d),
        ("lower_patch_convs", lower_patch_convs),
        ("lower_patch_conv_transposes", lower_patch_conv_transposes),
        ("sink_reshapes", sink_reshapes),
        ("matmul_rows_in_order", matmul_rows_in_order),
        ("sink_transposes", sink_transposes),
        ("fold_head_splits", fold_head_splits),
        ("fuse_attention", fuse_attention),
        # again: the head splits an attention node now reads whole (the pattern's scales and the
        # reshape regrouping its scores, which split them, are gone)
        ("fold_head_splits", fold_head_splits),
        ("merge_sibling_matmuls", merge_sibling_matmuls),
        ("split_wide_concats", split_wide_concats),
    ]
    if options.precision == "int8":
        # Explicit quantization (ONNX Q/DQ): before constant folding turns DequantizeLinear(W)
        # into float weights.
        from trident.compiler.quantize.qdq import fold_qdq_into_layers
        passes.insert(0, ("fold_qdq_into_layers", fold_qdq_into_layers))
    if options.quantize is not None:
        passes.append(("quantize", options.quantize))
    if options.precision in ("fp16", "int8"):
        passes.append(("lower_precision", lambda g: lower_precision(g, "fp16")))
        # again: the fp16 output's cast to fp32 now follows the transpose sunk to the output
        passes.append(("sink_transposes", sink_transposes))
    # last: the precision is settled, and the rows' fp32 casts stay fp32
    passes += [("loop_long_rows", loop_long_rows), ("fold_constants", fold_constants),
               ("eliminate_dead_code", eliminate_dead_code)]
    return passes


def run_pipeline(graph: Graph, options: PassOptions, debug: bool | None = None,
                 on_pass: Callable[[str, Graph], None] | None = None) -> Graph:
    """Run every pass in order; `on_pass(name, graph)` sees the graph after each one."""
    debug = config.DEBUG if debug is None else debug
    for name, fn in pipeline(options):
        graph = fn(graph)
        if debug:
            try:
                graph.verify()
            except TridentError as e:
                raise TridentError(f"IR invalid after pass {name}: {e}") from None
        if on_pass is not None:
            on_pass(name, graph)
    return graph
