"""kernels/gemm_hopper.py, the warp-specialized Hopper GEMM, and the WS path of generated GEMM
kernels (compiler/codegen/gemm_hopper.py): what it takes, which kernels get it (CPU, with the GPU
check forced), that their Gluon kernels compile for sm_90 without a GPU, how configs reach it and
fall back from it; and on an sm_90 GPU, generated engines on it against torch: odd M, N and K,
one row, bf16, both weight layouts, GELU and residual epilogues."""
import pytest
import torch

import trident
from trident.compiler import config
from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates
from trident.compiler.codegen import gemm_hopper as ws_path
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels import gemm_hopper as hopper
from trident.kernels.loader import load_kernel
from trident.kernels import matmul as matmul_templates
from trident.kernels.matmul import WS_TILES, ws_candidates, ws_config, ws_heuristic

HOPPER = hopper.available()
DEV = "cuda" if torch.cuda.is_available() else "cpu"
F16, BF16 = torch.float16, torch.bfloat16


@pytest.fixture(autouse=True)
def two_gemm_kernels(monkeypatch):
    """One GEMM kernel per Linear (not the back-to-back MLP kernel, tests/test_mlp.py), with the
    WS path switched on (TRIDENT_WS_GEMM: off by default)."""
    monkeypatch.setattr(config, "FUSE_MLP", False)
    monkeypatch.setattr(config, "WS_GEMM", True)


class Block(torch.nn.Module):
    """A transformer MLP: Linear + GELU, then Linear + residual."""

    def __init__(self, d=72, hidden=136):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, hidden)
        self.fc2 = torch.nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc2(torch.nn.functional.gelu(self.fc1(x)))


def _gemm_steps(engine):
    return [s for s in engine.plan.kernel_steps() if "matmul_tile(" in s.source]


def _build(x, monkeypatch=None, force=False, precision="fp16", **block):
    if force:  # the codegen's GPU check, on a machine without a Hopper GPU
        monkeypatch.setattr(hopper, "available", lambda device=None: True)
    torch.manual_seed(0)
    model = Block(**block).eval()
    return model, trident.build_engine(model, precision, example_inputs=[x])


# ------------------------------------------------------------------------------------- CPU ----
def test_it_takes_16_bit_operands_that_tma_can_read():
    assert hopper.why_not(F16, F16, 768, 1, 1, 768) is None      # A row-major, B K-major (a Linear weight)
    assert hopper.why_not(BF16, BF16, 768, 1, 3072, 1) is None   # B row-major [K, N]
    assert "dtypes" in hopper.why_not(torch.float32, torch.float32, 768, 1, 1, 768)
    assert "dtypes" in hopper.why_not(F16, BF16, 768, 1, 1, 768)
    assert "A's strides" in hopper.why_not(F16, F16, 100, 1, 1, 768)    # 200-byte rows
    assert "A's strides" in hopper.why_not(F16, F16, 1, 768, 1, 768)    # A column-major
    assert "B's strides" in hopper.why_not(F16, F16, 768, 1, 1, 100)


def test_it_asks_aligned_pointers_at_launch():
    x = torch.randn(65, 64, dtype=F16)
    assert hopper.why_not_at_launch(x, x) is None
    assert "a does not start" in hopper.why_not_at_launch(x.view(-1)[1:], x)
    assert "b does not start" in hopper.why_not_at_launch(x, x.view(-1)[3:])


def test_configs_fit_registers_and_shared_memory():
    tile = LaunchConfig.of(4, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8)
    for cfg in ws_candidates(tile) + [ws_heuristic(1000, 3072, 768, tile, False)]:
        assert cfg["WS"] == 1 and hopper.why_unfit(cfg.to_dict()) is None, cfg
    assert "registers" in hopper.why_unfit(dict(BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, num_stages=3))
    assert "shared memory" in hopper.why_unfit(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_stages=8))
    assert "stages" in hopper.why_unfit(dict(BLOCK_M=128, BLOCK_N=128, BLOCK_K=64, num_stages=1))


def test_cublas_alone_stays_on_the_library():
    tile = LaunchConfig.of(4, 3, BLOCK_M=64, BLOCK_N=64, BLOCK_K=64, GROUP_M=8, BLAS=1)
    assert ws_heuristic(1000, 3072, 768, tile, library_alone=True)["WS"] == 0
    assert ws_heuristic(1000, 3072, 768, tile, library_alone=False)["WS"] == 1
    assert ws_heuristic(1000, 3072, 768, tile, library_alone=False)["BLOCK_N"] == 128


def test_the_epilogue_tuple_holds_what_the_epilogue_reads():
    lines = ["    v0 = acc + tl.load(in2 + offs_n[None, :])", "    tl.store(out0 + offs_m[:, None], v0)"]
    assert ws_path.used_params(["in0", "in1", "in2", "out0", "in10"], lines) == ["in2", "out0"]
    src = ws_path.source(["in0", "in1", "in2", "out0"], ["in2", "out0"], True)
    assert "in2, out0 = args" in src and "epilogue(None, None, in2, out0, acc" in src
    assert "(in2, out0), ws_epilogue, True," in src
    one = ws_path.source(["in0", "in1", "out0"], ["out0"], False)
    assert "out0, = args" in one and "(out0,), ws_epilogue, False," in one


def test_an_epilogue_that_makes_new_shapes_keeps_the_triton_tile(monkeypatch):
    monkeypatch.setattr(hopper, "available", lambda device=None: True)
    strides = (768, 1, 1, 768)
    assert ws_path.applies(F16, F16, strides, ["    v0 = acc * 2.0"], batched=False, int8=False)
    assert not ws_path.applies(F16, F16, strides, ["    r = tl.arange(0, BLOCK_N)"], batched=False, int8=False)
    assert not ws_path.applies(F16, F16, strides, ["    v0 = acc"], batched=True, int8=False)
    assert not ws_path.applies(F16, F16, strides, ["    v0 = acc"], batched=False, int8=True)


def test_the_switch_picks_the_config_not_the_source(monkeypatch):
    """TRIDENT_WS_GEMM off: the kernels keep the path in their code but start on the Triton tile
    (only their default CONFIG differs), and the tuner leaves the path out."""
    x = torch.randn(2, 33, 72)
    on = _gemm_steps(_build(x, monkeypatch, force=True)[1])
    monkeypatch.setattr(config, "WS_GEMM", False)
    off = _gemm_steps(_build(x, monkeypatch, force=True)[1])
    def code(step):
        return [line for line in step.source.splitlines() if not line.startswith("CONFIG = ")]
    assert [code(s) for s in on] == [code(s) for s in off]
    assert all(s.config["WS"] == 1 for s in on) and all(s.config["WS"] == 0 for s in off)
    tile = LaunchConfig.of(4, 3, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, WS=0)
    problem = {"template": "matmul", "M": 6304, "N": 3072, "K": 768, "batch": 1, "dtype": F16, "hopper": True}
    assert not any(c.get("WS") for c in candidates(problem, tile, "fast"))


def test_fp16_gemm_kernels_get_the_path_and_start_on_it(monkeypatch):
    x = torch.randn(2, 33, 72)
    _, engine = _build(x, monkeypatch, force=True)
    steps = _gemm_steps(engine)
    assert len(steps) == 2
    for step in steps:
        assert "def ws_kernel(" in step.source and "gemm_hopper.why_not_at_launch(" in step.source
        assert step.config["WS"] == 1
        assert "'hopper': True" in step.source  # its PROBLEM: the tuner times the path


def test_without_a_hopper_gpu_or_at_fp32_no_kernel_gets_it(monkeypatch):
    x = torch.randn(2, 33, 72)
    with monkeypatch.context() as no_hopper:  # (on a Hopper GPU too)
        no_hopper.setattr(hopper, "available", lambda device=None: False)
        without_hopper = _build(x)[1]
    for engine in (without_hopper, _build(x, monkeypatch, force=True, precision="fp32")[1]):
        assert all("ws_kernel" not in s.source and "WS" not in s.config.to_dict() for s in _gemm_steps(engine))


def test_a_launch_with_an_unaligned_operand_runs_the_triton_tile(monkeypatch):
    """Under WS=1 launch() checks the data pointers; an operand that does not start 16-byte
    aligned (here a view one element in) runs the Triton tile at TILE_CONFIG instead."""
    x = torch.randn(2, 33, 72)
    model, engine = _build(x, monkeypatch, force=True)
    step = _gemm_steps(engine)[0]
    module = load_kernel(step.name, step.source)
    assert module.CONFIG["WS"] == 1 and "WS" not in module.TILE_CONFIG
    M, K = 66, 72
    a = torch.randn(M * K + 1, dtype=F16, device=DEV)[1:].view(M, K)
    w, bias = model.fc1.weight.to(DEV, F16), model.fc1.bias.to(DEV, F16)
    out = torch.empty(M, 136, dtype=F16, device=DEV)
    module.launch(*_launch_args(step, a, out, engine))
    ref = torch.nn.functional.gelu(a.float() @ w.float().t() + bias.float())
    torch.testing.assert_close(out.float(), ref, rtol=2e-2, atol=2e-2)


def _launch_args(step, a, out, engine):
    """fc1's kernel arguments in launch() order: the activation, the packed weight, the bias, the
    output (the engine's constants for the weight and bias, in their packed layouts)."""
    consts = engine.plan.constants
    args = []
    for value in step.args:
        if value in consts:
            args.append(consts[value].to(DEV))
        else:
            args.append(a if not args else out)
    return args


def test_the_tuner_times_the_path_only_where_it_runs():
    tile = LaunchConfig.of(4, 3, BLOCK_M=64, BLOCK_N=128, BLOCK_K=64, GROUP_M=8, TMA=1, SPLIT_EPILOGUE=0)
    base = ws_heuristic(6304, 3072, 768, tile, library_alone=False)
    problem = {"template": "matmul", "M": 6304, "N": 3072, "K": 768, "batch": 1, "dtype": F16, "hopper": True}
    cands = candidates(problem, base, "fast")
    assert cands[0] == base
    ws = [c for c in cands if c.get("WS")]
    assert len(ws) == len(ws_candidates(tile)) and all(config_error(c, problem, base) is None for c in cands)
    assert all(hopper.why_unfit(c.to_dict()) is None for c in ws)
    assert len(cands) - len(ws) >= 4  # Triton's tiles are still timed
    plain = {k: v for k, v in problem.items() if k != "hopper"}
    assert not any(c.get("WS") for c in candidates(plain, tile, "fast"))
    assert config_error(base, plain, tile) is not None  # WS: a switch this kernel does not have


@pytest.mark.parametrize("k_major", [True, False], ids=["k-major weight", "row-major weight"])
def test_generated_gluon_kernels_compile_for_hopper(monkeypatch, tmp_path, k_major):
    """The ws_kernel of generated GEMM kernels (GELU and residual epilogues), compiled for sm_90
    on the CPU: Gluon refuses what its layouts cannot express."""
    from triton.experimental.gluon.nvidia.hopper import TensorDescriptor  # noqa: F401
    from triton.runtime.jit import mangle_type

    from trident.compiler.target_check import Launch, compile_for_target

    x = torch.randn(2, 33, 72)
    _, engine = _build(x, monkeypatch, force=True)
    launches = []
    for step in _gemm_steps(engine):
        path = tmp_path / f"{step.name}.py"
        flag = "ws_epilogue, True," if "ws_epilogue, True," in step.source else "ws_epilogue, False,"
        # (trident packs Linear weights as [K, N]; the K-major case is the same kernel reading [N, K])
        path.write_text(step.source.replace(flag, f"ws_epilogue, {k_major},"))
        module = load_kernel(step.name, step.source)
        cfg = module.CONFIG
        problem = module.PROBLEM
        M, N, K = problem["M"], problem["N"], problem["K"]
        a = torch.empty(M, K, dtype=F16)
        b = torch.empty((N, K) if k_major else (K, N), dtype=F16)
        a_desc, b_desc = hopper.descriptors(a, b, M, N, K, K, *((1, K) if k_major else (N, 1)), cfg)
        types = []
        for param in module.ws_kernel.params:
            if param.is_constexpr:
                continue
            kind = {"a_desc": mangle_type(a_desc), "b_desc": mangle_type(b_desc)}.get(param.name)
            types.append((param.name, kind or ("i32" if param.name in "MNK" else "*fp16")))
        options = hopper.launch_options(cfg)
        warps = options.pop("num_warps")
        launches.append(Launch(str(path), step.name, "ws_kernel", tuple(types), tuple(sorted(options.items())),
                               (("num_warps", warps),)))
    failures = compile_for_target(launches)
    assert not failures, "\n\n".join(f.render() for f in failures)


_PIPELINE_CHECK = r"""
import re
import torch, triton
import triton.language as tl
from triton.backends.compiler import GPUTarget
from triton.experimental import gluon
from triton.experimental.gluon import language as gl
from triton.experimental.gluon._runtime import GluonASTSource
from trident.compiler.target_check import sass_of
from trident.kernels import gemm_hopper, prims
from trident.kernels.gluon_hopper import shared_layout
from trident.kernels.matmul import WS_TILES


@triton.jit
def store(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, bias, M, N = args
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], acc.to(tl.float16), mask=mask)


@triton.jit
def bias_gelu(args, acc, offs_m, offs_n, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr):
    out, bias, M, N = args
    b = tl.load(bias + offs_n, mask=offs_n < N).to(tl.float32)
    y = prims.gelu_erf(acc + b[None, :])
    mask = (offs_m[:, None] < M) & (offs_n[None, :] < N)
    tl.store(out + offs_m[:, None] * N + offs_n[None, :], y.to(tl.float16), mask=mask)


@gluon.jit
def gemm(out, bias, a_desc, b_desc, M, N, K, EPILOGUE: gl.constexpr, BLOCK_M: gl.constexpr, BLOCK_N: gl.constexpr,
         BLOCK_K: gl.constexpr, STAGES: gl.constexpr, COALESCED: gl.constexpr):
    gemm_hopper.gemm_hopper(a_desc, b_desc, M, N, K, (out, bias, M, N), EPILOGUE, True, BLOCK_M, BLOCK_N, BLOCK_K,
                            STAGES, 8, COALESCED)


for (bm, bn, stages, bk, coalesced), epilogue in [(t, e) for t in WS_TILES for e in (store, bias_gelu)]:
    const = dict(EPILOGUE=epilogue, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, STAGES=stages, COALESCED=coalesced)
    def desc(rows):
        return f"tensordesc<fp16[{rows},{bk}],{shared_layout((rows, bk), torch.float16)!r}>"
    sig = dict(out="*fp16", bias="*fp16", a_desc=desc(bm), b_desc=desc(bn), M="i32", N="i32", K="i32",
               **{name: "constexpr" for name in const})
    src = GluonASTSource(gemm, sig, {(gemm.arg_names.index(name),): value for name, value in const.items()})
    sass = sass_of(triton.compile(src, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4}))
    print(bm, bn, bk, stages, int(coalesced), sass.count("HGMMA"), len(re.findall(r"DEPBAR\.LE gsb0, 0x1", sass)),
          len(re.findall(r"DEPBAR\.LE gsb0, 0x0", sass)))
"""


@pytest.mark.skipif(not hopper.HAVE_GLUON, reason="needs Triton's Gluon")
def test_the_k_loops_keep_a_wgmma_group_in_flight(tmp_path):
    """Compiled for sm_90 on this machine, with a plain store and a bias + GELU epilogue, at every WS
    tile the tuner times: each consumer group's K loop waits for all but the newest wgmma group
    (one `DEPBAR.LE gsb0, 0x1`), and only after the loop for all of them. ptxas serializes every
    wgmma of the kernel (a wait for zero after each HGMMA) when it sees a non-wgmma instruction read
    the accumulators inside a pipeline stage: it did so while the K loop carried its last slot out
    to the release after it (with Triton 3.9's ptxas on the store epilogue's tiles in wgmma's
    layout; with 3.6's, the GPU image's, on both epilogues)."""
    import os
    import subprocess
    import sys

    script = tmp_path / "pipeline_check.py"
    script.write_text(_PIPELINE_CHECK)
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=900,
                          env=dict(os.environ, TRITON_INTERPRET="0"))
    assert done.returncode == 0, done.stderr[-2000:]
    rows = [list(map(int, line.split())) for line in done.stdout.splitlines()]
    assert len(rows) == 2 * len(WS_TILES), done.stdout
    for *tile, hgmma, waits_for_one, waits_for_zero in rows:
        assert hgmma > 0 and waits_for_one == 2 and waits_for_zero == 2, (tile, hgmma, waits_for_one, waits_for_zero)


# ------------------------------------------------------------------------------------- GPU ----
@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("rows, d, hidden", [
    (2 * 197, 768, 3072),      # ViT-B/16's MLP at batch 2
    (1, 72, 136),              # one row
    (333, 40, 72),             # K of 40 and 72: partial K blocks
    (1000, 200, 520),
    (4097, 96, 384),           # ConvNeXt's first stage widths
], ids=str)
def test_gpu_engines_on_the_path_match_torch(rows, d, hidden):
    torch.manual_seed(rows)
    model = Block(d, hidden).eval()
    x = torch.randn(1, rows, d)
    engine = trident.build_engine(model, "fp16", example_inputs=[x])
    steps = _gemm_steps(engine)
    assert steps and all(s.config.get("WS") == 1 for s in steps), [str(s.config) for s in steps]
    out = engine(x.cuda())  # (an fp16 engine of an fp32 model takes fp32 inputs)
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    ref = model.double()(x.double()).float()
    assert ((out - ref).norm() / ref.norm()).item() < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
@pytest.mark.parametrize("tile", WS_TILES, ids=lambda t: "{}x{}/{} k{}{}".format(*t[:4], " coalesced" * t[4]))
@pytest.mark.parametrize("rows, d, hidden", [
    (2 * 197, 768, 3072), (333, 40, 72), (1000, 200, 520),
    (4097, 96, 384),  # N = 96: a multiple of a quarter of a 128-wide tile, not of the tile
], ids=str)
def test_gpu_every_tile_the_tuner_times_matches_torch(monkeypatch, tile, rows, d, hidden):
    """Each warp-specialized tile (whole-tile and column-quarter epilogues, 32- and 64-deep K
    blocks), as the heuristic's pick, on odd M, N and K."""
    monkeypatch.setattr(matmul_templates, "ws_heuristic", lambda M, N, K, cfg, library_alone: ws_config(cfg, *tile))
    torch.manual_seed(rows)
    model = Block(d, hidden).eval()
    x = torch.randn(1, rows, d)
    engine = trident.build_engine(model, "fp16", example_inputs=[x])
    steps = _gemm_steps(engine)
    assert steps and all(s.config.get("WS") == 1 and s.config["BLOCK_N"] == tile[1] for s in steps)
    out = engine(x.cuda())
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    ref = model.double()(x.double()).float()
    assert ((out - ref).norm() / ref.norm()).item() < 5e-3


@pytest.mark.gpu
@pytest.mark.skipif(not HOPPER, reason="needs an sm_90 GPU and Gluon")
def test_gpu_nan_and_inf_reach_the_rows_that_read_them():
    torch.manual_seed(0)
    model = Block(64, 128).eval()
    x = torch.randn(1, 300, 64)
    x[0, 7, 3], x[0, 250, 0] = float("nan"), float("inf")
    engine = trident.build_engine(model, "fp16", example_inputs=[x])
    out = engine(x.cuda())  # (an fp16 engine of an fp32 model takes fp32 inputs)
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    assert not torch.isfinite(out[0, 7]).any() and not torch.isfinite(out[0, 250]).any()
    rest = torch.ones(300, dtype=torch.bool)
    rest[[7, 250]] = False
    assert torch.isfinite(out[0, rest]).all()
