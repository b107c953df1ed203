"""A generated GEMM's epilogue on the tile's two column halves (SPLIT_EPILOGUE,
compiler/codegen/kernels.py) computes what the whole-tile epilogue computes: GELU, residual,
batched and int8 epilogues, column counts that leave the second half partly (or wholly) past the
output's edge, or that one half fits and the tile does not, NaN and inf in the operands. (Within
rounding, not bit for bit: compiled for a GPU, the two forms may contract a multiply and an add
into one FMA differently.) The tuner times the other split of the heuristic's tile. Every kernel
these tests run is also compiled for sm_90 (compiles_for_hopper)."""
import pytest
import torch

from trident.compiler import config
from trident.compiler.autotune.space import candidates
from trident.compiler.build import compile_graph, engine_from, import_model
from trident.compiler.quantize import QuantOptions
from trident.kernels.matmul import epilogue_spills
from trident.kernels.common import tile_config

pytestmark = pytest.mark.compiles_for_hopper

DEV = "cuda" if torch.cuda.is_available() else "cpu"


@pytest.fixture(autouse=True)
def triton_product(monkeypatch):
    """The epilogue under test runs after Triton's own product (not cuBLAS's), and a block's two
    GEMMs stay two kernels."""
    monkeypatch.setattr(config, "LIBRARY_GEMM", False)
    monkeypatch.setattr(config, "FUSE_MLP", False)


class GeluResidual(torch.nn.Module):
    def __init__(self, d: int, hidden: int):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


class BatchedScores(torch.nn.Module):
    def forward(self, q, k, bias):
        return torch.relu(q @ k.transpose(-1, -2) + bias)


def _gemm_steps(program):
    return [s for s in program.steps if s.kind == "kernel" and s.kernel.problem.get("template") == "matmul"]


def _outputs(model, inputs, precision, split: int, block_n: int | None = None, **build):
    program = compile_graph(import_model(model, inputs), precision, **build)
    steps = _gemm_steps(program)
    assert steps and all("SPLIT_EPILOGUE" in dict(s.kernel.config.params) for s in steps)
    for s in steps:
        s.kernel.config = s.kernel.config.replace(SPLIT_EPILOGUE=split, **({"BLOCK_N": block_n} if block_n else {}))
    out = engine_from(program, device=DEV)(*[x.to(DEV) for x in inputs])
    return (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()


TOLERANCE = {"fp32": 1e-5, "fp16": 2e-3, "int8": 5e-2}  # of the output's largest magnitude


def _same_either_way(model, inputs, precision, **build):
    whole, halves = (_outputs(model, inputs, precision, split, **build) for split in (0, 1))
    scale = whole.nan_to_num(posinf=0, neginf=0).abs().max().item()
    torch.testing.assert_close(halves, whole, rtol=0, atol=TOLERANCE[precision] * scale, equal_nan=True)
    return halves


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
@pytest.mark.parametrize("hidden", [72, 130, 1])  # a ragged second half; one past a block; one column
def test_gelu_and_residual_epilogues_split_as_they_run_whole(precision, hidden, rng):
    torch.manual_seed(0)
    model = GeluResidual(40, hidden).eval()
    x = torch.randn(3, 37, 40, generator=rng)  # 111 rows: no block divides them
    out = _same_either_way(model, [x], precision)
    ref = model(x)
    tol = 1e-5 if precision == "fp32" else 1e-2
    assert ((out - ref).abs().max() / ref.abs().max()).item() < tol


def test_batched_gemm_epilogue_reads_its_batch_index_in_each_half(rng):
    q, k = torch.randn(2, 3, 17, 16, generator=rng), torch.randn(2, 3, 21, 16, generator=rng)
    bias = torch.randn(3, 1, 21, generator=rng)  # broadcast over the batch and the rows
    out = _same_either_way(BatchedScores(), [q, k, bias], "fp32")
    torch.testing.assert_close(out, BatchedScores()(q, k, bias), rtol=1e-5, atol=1e-5)


def test_nan_and_inf_reach_the_same_columns(rng):
    torch.manual_seed(0)
    model = GeluResidual(40, 72).eval()
    x = torch.randn(2, 9, 40, generator=rng)
    x[0, 1, 3], x[1, 4, 0], x[1, 5, 7] = float("nan"), float("inf"), float("-inf")
    out = _same_either_way(model, [x], "fp32")
    assert out[0, 1].isnan().all() and not out[0, 0].isnan().any()


def test_int8_requantizing_epilogue(rng):
    torch.manual_seed(0)
    model = GeluResidual(32, 80).eval()
    batches = [torch.randn(4, 32, generator=rng) for _ in range(3)]
    x = torch.randn(5, 32, generator=rng)
    quantization = QuantOptions.from_kwargs([(b,) for b in batches])
    out = _same_either_way(model, [x], "int8", quantization=quantization)
    ref = model(x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 0.1


def test_a_half_that_fits_the_columns_keeps_the_tiles_mask(rng):
    """32 columns on 64-wide tiles: each half is 32 wide and 32 % 32 == 0, but the second half is
    wholly past the edge. The mask may be dropped only where whole tiles fit (the bounds
    sanitizer fails an access past the output)."""
    torch.manual_seed(0)
    model = GeluResidual(32, 32).eval()
    x = torch.randn(5, 32, generator=rng)
    for precision in ("fp32", "fp16"):
        out = _outputs(model, [x], precision, 1, block_n=64)
        ref = model(x)
        assert ((out - ref).abs().max() / ref.abs().max()).item() < (1e-5 if precision == "fp32" else 1e-2)


def test_the_tuner_times_the_other_split():
    """The heuristic leaves the epilogue whole; the tuner's fast list holds the base tile split,
    and every other tile split where its whole-tile epilogue would spill (128 or more fp32
    accumulators a thread: ptxas, sm_90)."""
    assert epilogue_spills(tile_config(128, 256, 64, 8, 8, 3))
    assert epilogue_spills(tile_config(128, 128, 64, 8, 4, 3))
    assert not epilogue_spills(tile_config(128, 128, 64, 8, 8, 2))
    assert not epilogue_spills(tile_config(64, 128, 64, 8, 4, 3))
    problem = {"template": "matmul", "M": 6304, "N": 3072, "K": 768, "batch": 1, "dtype": torch.float16}
    base = tile_config(128, 256, 64, 8, 8, 3, PERSISTENT=1).replace(TMA=1, SPLIT_EPILOGUE=0)
    found = candidates(problem, base, "fast")
    assert found[:3] == [base, base.replace(TMA=0), base.replace(SPLIT_EPILOGUE=1)]
    assert all(c.SPLIT_EPILOGUE == int(epilogue_spills(c)) for c in found[3:])
