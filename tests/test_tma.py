"""GEMM operands through TMA descriptors (kernels/tma.py): the tile against float64 references for
both weight layouts, fp16 / bf16 / int8, ragged shapes; the fallback to the pointer tile for an
operand that does not start 16-byte aligned; generated kernels, their configs and the tuner's
candidates. Every kernel these tests run is also compiled for sm_90 (compiles_for_hopper)."""
import math

import pytest
import torch

from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.common import tile_config
from trident.kernels.matmul import heuristic_config, matmul
from trident.kernels.tma import gemm_descriptors, gemm_operands_fit, strides_fit

pytestmark = pytest.mark.compiles_for_hopper


@pytest.fixture(autouse=True)
def triton_product(monkeypatch):
    """These tests are about the Triton tile's loads: generated GEMMs start on their own product,
    not cuBLAS's (kernels/blas.py, tested in test_blas.py), and a block's two GEMMs stay two kernels
    (not one back-to-back MLP, tested in test_mlp.py)."""
    from trident.compiler import config

    monkeypatch.setattr(config, "LIBRARY_GEMM", False)
    monkeypatch.setattr(config, "FUSE_MLP", False)

DEV = "cuda" if torch.cuda.is_available() else "cpu"
TOL = {torch.float16: 1e-2, torch.bfloat16: 2e-2}


def rand(shape, dtype, rng):
    if dtype == torch.int8:
        return torch.randint(-128, 128, shape, generator=rng, dtype=torch.int8).to(DEV)
    return torch.randn(shape, generator=rng).to(dtype).to(DEV)


def check(out, a, b_kn):
    ref = a.double() @ b_kn.double()
    if a.dtype == torch.int8:
        assert out.dtype == torch.int32 and torch.equal(out.long().cpu(), ref.long().cpu())
    else:
        tol = TOL[a.dtype]
        torch.testing.assert_close(out.double(), ref, rtol=tol, atol=tol * math.sqrt(a.shape[1]))


def test_which_strides_a_descriptor_takes():
    assert strides_fit(2, (48, 1)) and strides_fit(1, (32, 1)) and strides_fit(2, (8, 1))
    assert not strides_fit(2, (44, 1))       # 88 bytes: not a multiple of 16
    assert not strides_fit(2, (1, 48))       # last dim not contiguous
    assert not strides_fit(2, (0, 1))        # a broadcast row
    assert gemm_operands_fit(2, 64, 1, 1, 64)      # A [M, 64], B K-major [N, 64]
    assert gemm_operands_fit(2, 64, 1, 56, 1)      # B row-major [K, 56]
    assert not gemm_operands_fit(2, 64, 1, 50, 1)  # B row-major [K, 50]: 100-byte rows
    assert not gemm_operands_fit(4, 64, 1, 1, 64)  # fp32: FMA dots, not TMA
    assert not gemm_operands_fit(1, 40, 1, 1, 40)  # int8 K = 40: 40-byte rows


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.int8])
@pytest.mark.parametrize("b_k_major", [True, False])
@pytest.mark.parametrize("M,N,K", [(70, 48, 48), (1, 32, 64), (33, 16, 160)])
@pytest.mark.parametrize("persistent", [0, 1])
def test_tma_tile_matches_reference(dtype, b_k_major, M, N, K, persistent, rng):
    # Blocks that do not divide M, N or K: the descriptor's zero fill is the only masking.
    a, b_kn = rand((M, K), dtype, rng), rand((K, N), dtype, rng)
    b = b_kn.t().contiguous() if b_k_major else b_kn
    bk = 64 if dtype == torch.int8 else 32
    cfg = tile_config(32, 32, bk, GROUP_M=2, num_warps=4, num_stages=1, PERSISTENT=persistent).replace(TMA=1)
    check(matmul(a, b, b_k_major=b_k_major, config=cfg), a, b_kn)


def test_default_config_takes_tma_where_the_operands_fit(rng):
    a, b = rand((40, 64), torch.float16, rng), rand((48, 64), torch.float16, rng)
    assert heuristic_config(40, 48, 64, torch.float16, tma=True).get("TMA") == 1
    assert heuristic_config(40, 48, 64, torch.float16).get("TMA") is None
    check(matmul(a, b, b_k_major=True), a, b.t())
    with pytest.raises(ValueError, match="TMA config"):
        odd = rand((40, 44), torch.float16, rng)  # 88-byte rows
        matmul(odd, rand((48, 44), torch.float16, rng), b_k_major=True,
               config=tile_config(32, 32, 32).replace(TMA=1))


def test_an_operand_off_16_bytes_runs_the_pointer_tile(rng):
    # A view one element into its storage: strides fit, its address does not. The launch must not
    # hand TMA that address (the copy engine faults on it); it runs the pointer tile, same result.
    M, N, K = 37, 48, 64
    storage = rand((M * K + 8,), torch.float16, rng)
    a = storage[1:1 + M * K].view(M, K)
    assert a.data_ptr() % 16 != 0
    b = rand((N, K), torch.float16, rng)
    cfg = tile_config(32, 32, 32, num_stages=1).replace(TMA=1)
    a_desc, b_desc, launch = gemm_descriptors(a, b, M, N, K, K, 1, K, cfg.to_dict())
    assert (a_desc, b_desc, launch["TMA"]) == (None, None, 0)
    check(matmul(a, b, b_k_major=True, config=cfg), a, b.t())
    aligned = gemm_descriptors(storage[8:].view(M, K), b, M, N, K, K, 1, K, cfg.to_dict())
    assert aligned[0] is not None and aligned[2]["TMA"] == 1
    assert gemm_descriptors(a, b, M, N, K, K, 1, K, tile_config(32, 32, 32).to_dict())[:2] == (None, None)


class Block(torch.nn.Module):
    """LayerNorm -> Linear -> GELU -> Linear + residual: GEMMs whose A is an fp16 intermediate."""

    def __init__(self, d=64, hidden=96):
        super().__init__()
        self.norm, self.fc1, self.fc2 = torch.nn.LayerNorm(d), torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(self.norm(x))))


def _program(precision, x):
    from trident.compiler.build import compile_graph, import_model

    return compile_graph(import_model(Block().eval(), [x]), precision)


def test_generated_gemms_read_through_tma_and_match_torch(rng):
    import trident

    torch.manual_seed(0)
    model = Block().eval()
    x = torch.randn(3, 37, 64, generator=rng)
    engine = trident.build_engine(model, "fp16", example_inputs=[x])
    gemms = [s for s in engine.plan.kernel_steps() if "matmul_tile_tma" in s.source]
    assert len(gemms) == 2 and all(s.config.get("TMA") == 1 for s in gemms)
    ref = model(x)
    out = engine(x.to(DEV))
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_fp32_gemms_keep_the_pointer_tile(rng):
    program = _program("fp32", torch.randn(2, 5, 64, generator=rng))
    gemms = [s for s in program.steps if s.kind == "kernel" and s.kernel.problem["template"] == "matmul"]
    assert gemms and not any("matmul_tile_tma" in s.kernel.source or s.kernel.config.get("TMA") for s in gemms)


def test_tuner_times_tma_tiles_and_the_pointer_tile(rng):
    program = _program("fp16", torch.randn(2, 5, 64, generator=rng))
    step = next(s for s in program.steps if s.kind == "kernel" and s.kernel.problem["template"] == "matmul")
    base, problem = step.kernel.config, step.kernel.problem
    assert base.get("TMA") == 1 and base.get("BLAS") == 0
    found = candidates(problem, base, "fast")
    # the base, cuBLAS's product once (kernels/blas.py), the base tile without TMA, other TMA tiles
    assert found[:3] == [base, base.replace(BLAS=1), base.replace(TMA=0)]
    assert all(c.get("TMA") == 1 and c.get("BLAS") == 0 for c in found[3:]) and len(found) > 3
    assert config_error(base.replace(TMA=0), problem, base) is None
    assert "TMA=2" in config_error(base.replace(TMA=2), problem, base)
    pointer_base = base.replace(TMA=0)  # a kernel that can but does not start with TMA: may turn it on
    assert config_error(base, problem, pointer_base) is None
    assert candidates(problem, pointer_base, "fast")[2] == base
    without = LaunchConfig.of(base.num_warps, base.num_stages,
                              **{k: v for k, v in base.params if k != "TMA"})
    assert "TMA=1" in config_error(base, problem, without)  # a kernel generated without TMA operands


def test_compile_workers_stand_in_for_the_descriptors_a_launch_adds(rng):
    # The tuner compiles candidates ahead of their launch with dtypes for tensors; the descriptor
    # stand-ins must specialize the kernel as the launch's descriptors do, or the compiled binary
    # is not the one the launch runs.
    from triton.runtime.jit import mangle_type

    from trident.kernels.tma import warmup_descriptors

    cfg = tile_config(32, 64, 32).replace(TMA=1).to_dict()
    a = rand((40, 64), torch.float16, rng)
    for b_k_major, b in ((True, rand((48, 64), torch.float16, rng)), (False, rand((64, 48), torch.float16, rng))):
        sk, sn = (1, 64) if b_k_major else (48, 1)
        launched = gemm_descriptors(a, b, 40, 48, 64, 64, sk, sn, cfg)[:2]
        stand_ins = warmup_descriptors(torch.float16, torch.float16, b_k_major, cfg)
        assert [mangle_type(d) for d in stand_ins] == [mangle_type(d) for d in launched]
    assert warmup_descriptors(torch.float16, torch.float16, True, {**cfg, "TMA": 0}) == (None, None)


def test_a_kernel_names_the_operands_its_launch_describes(rng):
    import ast
    import re

    program = _program("fp16", torch.randn(2, 5, 64, generator=rng))
    sources = [s.kernel.source for s in program.steps if s.kind == "kernel" and "TMA_OPERANDS" in s.kernel.source]
    assert len(sources) == 2  # both GEMMs of the block
    for source in sources:
        params = re.search(r"def launch\((.*?), config=", source).group(1).split(", ")
        a_arg, b_arg = re.search(r"gemm_descriptors\((\w+), (\w+),", source).groups()
        a_index, b_index, b_k_major = ast.literal_eval(re.search(r"TMA_OPERANDS = (\(.*\))", source).group(1))
        assert (params[a_index], params[b_index]) == (a_arg, b_arg)
        assert f"BLOCK_K, {b_k_major}," in source  # the tile reads B the way the stand-in describes it
