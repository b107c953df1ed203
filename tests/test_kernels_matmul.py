"""kernels/matmul.py against torch, in Triton's interpreter on the CPU (or on the GPU when present)."""
import math

import pytest
import torch

import trident.kernels.matmul as mm
from trident.compiler import config
from trident.kernels.common import check_tile, pipeline_smem_bytes, tile_config
from trident.kernels.matmul import candidate_configs, heuristic_config, matmul, matmul_tile

import triton
import triton.language as tl

HAS_CUDA = torch.cuda.is_available()
DEV = "cuda" if HAS_CUDA else "cpu"
requires_cuda = pytest.mark.skipif(not HAS_CUDA, reason="needs a CUDA GPU")
TOL = {torch.float32: 1e-4, torch.float16: 1e-2, torch.bfloat16: 2e-2}


def rand(shape, dtype, seed):
    g = torch.Generator().manual_seed(seed)
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=g, dtype=torch.int8).to(DEV)
    return torch.randn(shape, generator=g).to(dtype).to(DEV)


def check(out, a, b_kn, dtype):
    """out vs a @ b computed in float64 from the same (already rounded) inputs."""
    ref = a.double() @ b_kn.double()
    if dtype == torch.int8:
        assert out.dtype == torch.int32
        assert torch.equal(out.long().cpu(), ref.long().cpu())
    else:
        tol = TOL[dtype]
        k = a.shape[1]
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * math.sqrt(k))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("b_k_major", [False, True])
@pytest.mark.parametrize("M,N,K", [(17, 23, 19), (37, 53, 71), (100, 65, 96)])
def test_matmul_default_config(dtype, b_k_major, M, N, K):
    a = rand((M, K), dtype, 1)
    b_kn = rand((K, N), dtype, 2)
    b = b_kn.t().contiguous() if b_k_major else b_kn
    out = matmul(a, b, b_k_major=b_k_major)
    assert out.shape == (M, N)
    check(out, a, b_kn, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("b_k_major", [False, True])
def test_matmul_many_programs_and_k_steps(dtype, b_k_major):
    # Small blocks: 5x4 programs in GROUP_M=2 groups (a partial last group) and 3-6 K steps with a tail.
    M, N, K = 70, 50, 90
    cfg = tile_config(16, 16, 32 if dtype == torch.int8 else 16, GROUP_M=2)
    a = rand((M, K), dtype, 3)
    b_kn = rand((K, N), dtype, 4)
    b = b_kn.t().contiguous() if b_k_major else b_kn
    check(matmul(a, b, b_k_major=b_k_major, config=cfg), a, b_kn, dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_matmul_persistent_grid_loops_over_tiles(dtype, monkeypatch):
    # 3 programs for 20 tiles: each program runs the tile loop 6-7 times (tails included).
    monkeypatch.setattr("trident.kernels.common.num_sms", lambda: 3)
    M, N, K = 70, 50, 90
    cfg = tile_config(16, 16, 32 if dtype == torch.int8 else 16, GROUP_M=2, PERSISTENT=1)
    a, b_kn = rand((M, K), dtype, 11), rand((K, N), dtype, 12)
    check(matmul(a, b_kn.t().contiguous(), b_k_major=True, config=cfg), a, b_kn, dtype)


def test_matmul_strided_operands():
    # Transposed views: the kernel takes strides, nothing is made contiguous.
    at = rand((45, 33), torch.float32, 5)  # a = at.T is [33, 45], column-major
    b_kn = rand((45, 29), torch.float32, 6)
    check(matmul(at.t(), b_kn), at.t(), b_kn, torch.float32)


def test_matmul_out_dtype_and_tf32_compiles():
    a, b = rand((20, 40), torch.float16, 7), rand((40, 24), torch.float16, 8)
    out = matmul(a, b, out_dtype=torch.float32)
    assert out.dtype == torch.float32
    check(out, a, b, torch.float16)
    a32, b32 = a.float(), b.float()
    out = matmul(a32, b32, input_precision="tf32")  # TF32 rounds inputs to 10 mantissa bits
    torch.testing.assert_close(out.double(), a32.double() @ b32.double(), rtol=1e-2, atol=5e-2)


def test_matmul_int8_accumulates_in_int32():
    # Sums past 2**24 are exact only with an int32 accumulator (fp32 would drop low bits).
    g = torch.Generator().manual_seed(9)
    M, N, K = 16, 16, 2100
    a = torch.randint(100, 128, (M, K), generator=g, dtype=torch.int8).to(DEV)
    b = torch.randint(100, 128, (K, N), generator=g, dtype=torch.int8).to(DEV)
    out = matmul(a, b.t().contiguous(), b_k_major=True)
    ref = a.long().cpu() @ b.long().cpu()
    assert ref.abs().max() > 2 ** 24
    assert torch.equal(out.long().cpu(), ref)


def test_matmul_rejects_bad_inputs():
    a = rand((8, 16), torch.float32, 10)
    with pytest.raises(ValueError):
        matmul(a, rand((15, 8), torch.float32, 11))
    with pytest.raises(ValueError):
        matmul(a, rand((16, 8), torch.float16, 11))
    with pytest.raises(ValueError):
        matmul(rand((8, 64), torch.int8, 1), rand((64, 8), torch.int8, 2), config=tile_config(16, 16, 16))


@triton.jit
def _linear_relu_kernel(a_ptr, w_ptr, bias_ptr, c_ptr, M, N, K, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr,
                        BLOCK_K: tl.constexpr):
    # What generated code looks like: tile + epilogue on registers + one store. w is K-major [N, K].
    offs_m = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    offs_n = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    acc = matmul_tile(a_ptr, w_ptr, M, N, K, K, 1, 1, K, offs_m, offs_n, BLOCK_M, BLOCK_N, BLOCK_K, "ieee")
    acc += tl.load(bias_ptr + offs_n, mask=offs_n < N, other=0.0)[None, :]
    acc = tl.maximum(acc, 0.0)
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(c_ptr + offs_m[:, None] * N + offs_n[None, :], acc.to(c_ptr.dtype.element_ty), mask=mask)


def test_matmul_tile_with_epilogue():
    M, N, K = 40, 36, 50
    a, w, bias = rand((M, K), torch.float16, 12), rand((N, K), torch.float16, 13), rand((N,), torch.float32, 14)
    c = torch.empty((M, N), device=DEV, dtype=torch.float16)
    _linear_relu_kernel[(triton.cdiv(M, 32), triton.cdiv(N, 32))](a, w, bias, c, M, N, K, 32, 32, 32)
    ref = torch.relu(a.double() @ w.double().t() + bias.double())
    torch.testing.assert_close(c.double(), ref, rtol=1e-2, atol=1e-2)


@pytest.mark.parametrize("interpreter", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
def test_heuristic_configs_are_legal(monkeypatch, interpreter, dtype):
    monkeypatch.setattr(mm, "is_interpreter", lambda: interpreter)
    for M, N, K in [(1, 1000, 2048), (7, 64, 16), (64, 768, 768), (128, 3072, 768), (4096, 4096, 4096),
                    (8192, 8192, 8192), (300, 17, 5)]:
        cfg = heuristic_config(M, N, K, dtype)
        assert cfg == heuristic_config(M, N, K, dtype)  # deterministic
        for c in [cfg] + ([] if interpreter else candidate_configs(M, N, K, dtype)):
            check_tile(c, dtype)


# ----------------------------------------------------------------------------------------------- GPU


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.int8])
@pytest.mark.parametrize("b_k_major", [False, True])
def test_gpu_matmul_1024(dtype, b_k_major):
    M = N = K = 1024
    a, b_kn = rand((M, K), dtype, 20), rand((K, N), dtype, 21)
    b = b_kn.t().contiguous() if b_k_major else b_kn
    out = matmul(a, b, b_k_major=b_k_major)
    if dtype == torch.int8:
        assert torch.equal(out.long(), (a.double() @ b_kn.double()).long())
    else:
        ref = a.double() @ b_kn.double()
        torch.testing.assert_close(out.double(), ref, rtol=TOL[dtype], atol=TOL[dtype] * math.sqrt(K))


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.int8])
@pytest.mark.parametrize("M,N,K", [(1, 1000, 2048), (32, 768, 768), (256, 3072, 768), (1000, 1000, 1000)])
def test_gpu_matmul_all_candidate_configs(dtype, M, N, K):
    # Every config the autotuner/bench may try must compile, fit shared memory and be right.
    a, b_kn = rand((M, K), dtype, 22), rand((K, N), dtype, 23)
    b = b_kn.t().contiguous()
    ref = a.double() @ b_kn.double()
    for cfg in candidate_configs(M, N, K, dtype):
        out = matmul(a, b, b_k_major=True, config=cfg)
        if dtype == torch.int8:
            assert torch.equal(out.long(), ref.long()), cfg
        else:
            tol = 1e-4 if dtype == torch.float32 else 1e-2
            torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * math.sqrt(K), msg=str(cfg))


def test_heuristic_keeps_wide_outputs_in_shared_memory(monkeypatch):
    # A 4-byte output's epilogue stages the whole tile in shared memory: no 128x256 tile then
    # (on the H200 it asks for 272 KB of the 227 KB there are).
    import trident.kernels.matmul as mm

    monkeypatch.setattr(mm, "is_interpreter", lambda: False)
    assert mm.heuristic_config(8192, 8192, 8192, torch.float16).BLOCK_N == 256
    for out_bytes in (4, 8):
        cfg = mm.heuristic_config(8192, 8192, 8192, torch.float16, out_bytes=out_bytes)
        stages = cfg.num_stages * (cfg.BLOCK_M + cfg.BLOCK_N) * cfg.BLOCK_K * 2
        assert stages + cfg.BLOCK_M * cfg.BLOCK_N * 4 <= 227 * 1024, cfg


def test_heuristic_gives_a_residual_epilogue_registers(monkeypatch):
    # An epilogue that loads a residual gets 128x128 tiles on 8 warps (64 accumulators a thread):
    # DINOv2's 3072->768 and 768->768 + layer scale + residual at 10,960 tokens ran 1.6x faster so
    # on an H200 than on 128x256 or 4-warp 128x128 tiles. Without one nothing changes: ResNet-50's
    # 2048->512 at 7x7 (b256) keeps 128x128 on 4 warps and 5 stages (54.1 us, the fastest of four).
    import trident.kernels.matmul as mm

    monkeypatch.setattr(mm, "is_interpreter", lambda: False)
    for M, N, K in ((10960, 768, 3072), (10960, 768, 768)):
        cfg = mm.heuristic_config(M, N, K, torch.float16, reads_tiles=True)
        assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.num_warps, cfg.num_stages) == (128, 128, 8, 4), cfg
    # through TMA the 128x256 tile has the registers for the epilogue, where K is deep
    cfg = mm.heuristic_config(10960, 768, 3072, torch.float16, reads_tiles=True, tma=True)
    assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.get("TMA")) == (128, 256, 1), cfg
    assert mm.heuristic_config(10960, 768, 768, torch.float16, reads_tiles=True, tma=True).BLOCK_N == 128
    # ... but not with an fp32 output: its epilogue tile stages 128 KB beside the pipeline (the
    # H200 refused 128x256 at 3 stages there: 278,552 bytes of shared memory asked)
    cfg = mm.heuristic_config(10960, 768, 3072, torch.float16, 4, reads_tiles=True, tma=True)
    assert cfg.BLOCK_N == 128 and pipeline_smem_bytes(cfg, 2) + cfg.BLOCK_M * cfg.BLOCK_N * 4 <= 227 * 1024
    # ViT-B/16's 6,304 tokens: 300 128x128 tiles in two rounds of 264 slots; 64x128 tiles fill them.
    for K in (3072, 768):
        cfg = mm.heuristic_config(6304, 768, K, torch.float16, reads_tiles=True)
        assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.num_warps, cfg.PERSISTENT) == (64, 128, 4, 2), cfg
    cfg = mm.heuristic_config(12544, 512, 2048, torch.float16)
    assert (cfg.BLOCK_N, cfg.num_warps, cfg.num_stages) == (128, 4, 5)
    assert mm.heuristic_config(10960, 2304, 768, torch.float16).BLOCK_N == 256
    assert mm.heuristic_config(512, 768, 768, torch.float16, reads_tiles=True) == \
        mm.heuristic_config(512, 768, 768, torch.float16)  # too few tiles for two per SM
    # One to two rounds of 128x128 tiles (ConvNeXt-T's stage-3 1536 -> 384 + residual at 6,272
    # rows: 147 tiles): 64x128 on one warpgroup, 3 stages, as the tuner picked.
    cfg = mm.heuristic_config(6272, 384, 1536, torch.float16, reads_tiles=True)
    assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.num_warps, cfg.num_stages, cfg.PERSISTENT) == (64, 128, 4, 3, 0), cfg
    assert mm.heuristic_config(6272, 384, 1536, torch.float16).BLOCK_M == 128  # without a residual


def test_heuristic_keeps_256_wide_tiles_off_a_padded_n(monkeypatch):
    # ConvNeXt-T's 96->384 at 100,352 pixels: a 256-wide tile would compute 128 padded columns of
    # every second tile; 128x128 on 8 warps (the GELU epilogue's registers) covers N exactly.
    import trident.kernels.matmul as mm

    monkeypatch.setattr(mm, "is_interpreter", lambda: False)
    cfg = mm.heuristic_config(100352, 384, 96, torch.float16)
    assert (cfg.BLOCK_M, cfg.BLOCK_N, cfg.num_warps) == (128, 128, 8), cfg
    # two K steps, two stages: 96 KB of shared memory, two programs per SM (69.1 against 79.3 us)
    assert cfg.num_stages == 2 and pipeline_smem_bytes(cfg, 2) + 128 * 128 * 2 <= 227 * 1024 // 2, cfg
    assert mm.heuristic_config(100352, 384, 384, torch.float16).num_stages == 3
    assert mm.heuristic_config(100352, 512, 96, torch.float16).BLOCK_N == 256  # no padding
    assert mm.heuristic_config(6304, 2304, 768, torch.float16).BLOCK_N == 256  # 9 x 256 exactly


def test_codegen_tells_a_residual_epilogue_from_per_column_vectors():
    from trident.compiler.build import compile_graph, import_model
    from trident.compiler.codegen.kernels import _epilogue_reads_tiles

    class Block(torch.nn.Module):
        def __init__(self, residual):
            super().__init__()
            self.linear, self.scale, self.residual = torch.nn.Linear(32, 48), torch.nn.Parameter(torch.rand(48)), residual

        def forward(self, x, r):
            y = self.linear(x) * self.scale
            return y + r if self.residual else y + 1.0

    for residual in (True, False):
        program = compile_graph(import_model(Block(residual), [torch.randn(8, 32), torch.randn(8, 48)]), "fp16")
        (step,) = [s for s in program.steps if s.kind == "kernel" and s.group.anchor is not None
                   and s.group.anchor.op == "matmul"]
        shape = tuple(program.graph.types[step.group.anchor.outputs[0]].shape)
        assert _epilogue_reads_tiles(step.group, program.graph, shape) is residual


@pytest.mark.parametrize("M,N,K", [(1, 1000, 2048), (49, 512, 2048), (128, 768, 3072), (128, 2304, 768),
                                   (3136, 64, 256), (784, 512, 256)])
def test_fp32_heuristic_keeps_the_sms_busy(monkeypatch, M, N, K):
    # True fp32 runs on the FMA units: a small problem gets the largest tile that still gives
    # FP32_MIN_PROGRAMS programs (the 64-row tiles it had left 4-16 of 132 SMs working at batch 1).
    from trident.kernels.common import FP32_MIN_PROGRAMS, FP32_TILE_LADDER, cdiv

    monkeypatch.setattr(mm, "is_interpreter", lambda: False)
    monkeypatch.setattr(config, "FP32_DOTS", "ieee")  # (the FMA units' tiles, whatever the environment says)
    cfg = heuristic_config(M, N, K, torch.float32)
    programs = cdiv(M, cfg.BLOCK_M) * cdiv(N, cfg.BLOCK_N)
    assert programs >= FP32_MIN_PROGRAMS or (cfg.BLOCK_M, cfg.BLOCK_N) == FP32_TILE_LADDER[-1], cfg
    # ... and no larger tile of the ladder would have (a tile clamped to a small M keeps its count).
    bigger = [t for t in FP32_TILE_LADDER if t[0] * t[1] > cfg.BLOCK_M * cfg.BLOCK_N]
    assert all(cdiv(M, bm) * cdiv(N, bn) < FP32_MIN_PROGRAMS for bm, bn in bigger), cfg
    assert heuristic_config(8192, 8192, 8192, torch.float32) == tile_config(128, 128, 16, 8, 4, 4)


def test_epilogue_benchmark_dry_run(tmp_path):
    # `trident bench epilogues` on the CPU: tiny shapes, the heuristic's tile named, JSON written.
    import json

    from trident.tools.cli import main

    assert main(["bench", "epilogues", "--dry-run", "--out", str(tmp_path)]) == 0
    (written,) = tmp_path.glob("*-epilogues.json")
    rows = json.loads(written.read_text())["rows"]
    assert [r["epilogue"] for r in rows] == ["scale_residual", "gelu", "gelu_tanh"]
    assert all(r["runner"].endswith("(heuristic)") for r in rows)
