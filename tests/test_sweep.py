"""The config sweep's plan (tools/benchmarks/sweep.py): which configs it would time. The timing
itself needs a GPU (`trident bench sweep`); here only the grid and its pruning."""
import math

import pytest

from trident.compiler.errors import InputError
from trident.kernels.common import PIPELINE_SMEM_BUDGET, next_pow2, pipeline_smem_bytes
from trident.tools.benchmarks import sweep
from trident.tools.benchmarks.shapes import SQUARE_GEMM


def test_fp32_batch1_grid_has_small_tiles_that_fit():
    cases = sweep.cases({"conv", "gemm"}, ["fp32"], bert_batch=1)
    assert {c.shape for c in cases if c.kind == "gemm"} >= {(128, 768, 3072), (128, 2304, 768)}
    late_conv = next(c for c in cases if c.kind == "conv" and c.shape[:4] == (512, 7, 512, 3))
    grid = sweep.config_grid(late_conv, batch=1)
    M, N, _, _ = late_conv.gemm_view(1)
    assert M == 49 and any((c.BLOCK_M, c.BLOCK_N) == (16, 32) for c in grid)
    for c in grid[1:]:  # after the template's own candidates: the pruned grid
        assert pipeline_smem_bytes(c, 4) <= PIPELINE_SMEM_BUDGET
        assert c.BLOCK_M <= max(16, next_pow2(M)) or c in sweep.config_candidates(late_conv, 1)


def test_big_problems_get_no_small_tiles():
    square = sweep.Case("gemm", "fp16", SQUARE_GEMM)
    grid = sweep.config_grid(square, batch=256)
    assert min(c.BLOCK_M for c in grid) >= 64
    assert math.prod(square.gemm_view(256)[:2]) == 8192 * 8192


def test_unknown_dtype_is_named():
    with pytest.raises(InputError, match="bf8"):
        sweep.cases({"gemm"}, ["fp16", "bf8"], bert_batch=32)
