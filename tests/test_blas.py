"""The library GEMM tactic (kernels/blas.py): generated 16-bit and fp32 GEMM kernels that take
cuBLAS's product and fuse only their epilogue, against torch and against the same engine on
Triton's own tile; which kernels may take it; its three launch forms (product, product + bias,
product + epilogue pass); fp32 products kept exact while torch lets cuBLAS use TF32; ragged,
size-1 and empty shapes, inf and NaN; the tuner's candidates and the config checks. Every kernel
these tests run is also compiled for sm_90 (compiles_for_hopper)."""
import copy
from types import SimpleNamespace

import pytest
import torch

import trident
from trident.compiler import config
from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.space import candidates
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.blas import EPILOGUE_TILE, cublas_rounds_fp32, kernel_config, library_gemm, library_gemm_fits


@pytest.fixture(autouse=True)
def two_gemm_kernels(monkeypatch):
    """These tests are about one GEMM kernel's cuBLAS path: their Linear -> activation -> Linear blocks
    stay two GEMMs (fp16 engines would otherwise run them back to back as one kernel, tests/test_mlp.py)."""
    monkeypatch.setattr(config, "FUSE_MLP", False)


pytestmark = pytest.mark.compiles_for_hopper

DEV = "cuda" if torch.cuda.is_available() else "cpu"


class Chain(torch.nn.Module):
    """Four Linear layers, one of each epilogue: bias alone (cuBLAS adds it), bias + GELU (a
    Triton pass over the product), none (the product is the output), bias + residual into the
    fp32 graph output (no 16-bit output to hold the product: Triton's own tile)."""

    def __init__(self, d=40, hidden=72):
        super().__init__()
        self.fc1 = torch.nn.Linear(d, hidden)
        self.fc2 = torch.nn.Linear(hidden, hidden)
        self.fc3 = torch.nn.Linear(hidden, hidden, bias=False)
        self.fc4 = torch.nn.Linear(hidden, d)

    def forward(self, x):
        return x + self.fc4(self.fc3(torch.nn.functional.gelu(self.fc2(self.fc1(x)))))


def _gemm_steps(engine):
    return [s for s in engine.plan.kernel_steps() if "matmul_tile(" in s.source]


def _build(x, library: bool, monkeypatch, precision="fp16"):
    torch.manual_seed(0)
    monkeypatch.setattr(config, "LIBRARY_GEMM", library)
    model = Chain().eval()
    return model, trident.build_engine(model, precision, example_inputs=[x])


def _run(engine, *inputs):
    out = engine(*[x.to(DEV) for x in inputs])
    return (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()


def test_gemms_take_the_library_product_and_match_torch(monkeypatch, rng):
    x = torch.randn(3, 37, 40, generator=rng)  # 111 rows: no block divides them
    model, engine = _build(x, True, monkeypatch)
    steps = _gemm_steps(engine)
    assert len(steps) == 4
    forms = [("return library_gemm(" in s.source and "bias=" in s.source,
              "return library_gemm(" in s.source and "bias=" not in s.source,
              "    library_gemm(" in s.source) for s in steps]
    # fc1: cuBLAS adds the bias; fc2: product + GELU pass; fc3: the product alone; fc4: Triton's tile
    assert forms == [(True, False, False), (False, False, True), (False, True, False), (False, False, False)]
    # where a Triton pass would follow the library's product, the kernel starts on its own tile
    assert [s.config.get("BLAS") for s in steps] == [1, 0, 1, None]
    ref = model(x)
    out = _run(engine, x)
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2
    _, triton_engine = _build(x, False, monkeypatch)
    assert [s.config.get("BLAS") for s in _gemm_steps(triton_engine)] == [0, 0, 0, None]
    assert ((out - _run(triton_engine, x)).abs().max() / ref.abs().max()).item() < 1e-2


def test_a_tuner_that_finds_the_library_faster_runs_the_epilogue_pass(monkeypatch, rng, tmp_path):
    from trident.compiler.autotune import TuningCache, tune_program
    from trident.compiler.build import compile_graph, engine_from, import_model

    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    torch.manual_seed(0)
    model = Chain().eval()
    x = torch.randn(2, 9, 40, generator=rng)
    program = compile_graph(import_model(model, [x]), "fp16")

    def library_first(run, cfg):
        return 0.5 if cfg.get("BLAS") else 1.0

    # verify: each winner's outputs are checked against its heuristic config's (interpreter here)
    tune_program(program, "fast", cache=TuningCache(tmp_path), timer=library_first, verify=True, progress=False,
                 device=DEV)
    gemms = [s.kernel for s in program.steps if s.kind == "kernel" and s.kernel.problem["template"] == "matmul"]
    assert [k.config.get("BLAS") for k in gemms] == [1, 1, 1, None]
    assert "    library_gemm(" in gemms[1].source  # fc2: the product, then the GELU pass
    ref = model(x)
    out = engine_from(program, device=DEV)(x.to(DEV))
    out = (out[0] if isinstance(out, (list, tuple)) else out).float().cpu()
    assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2


@pytest.mark.parametrize("tokens", [1, 0])
def test_one_row_and_no_rows(tokens, monkeypatch, rng):
    x = torch.randn(1, tokens, 40, generator=rng)
    model, engine = _build(torch.randn(1, 5, 40, generator=rng), True, monkeypatch)
    single = trident.build_engine(model, "fp16", example_inputs=[x])
    out = _run(single, x)
    assert out.shape == (1, tokens, 40)
    if tokens:
        ref = model(x)
        assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_inf_and_nan_reach_the_output_as_on_triton_tiles(monkeypatch, rng):
    x = torch.randn(2, 9, 40, generator=rng)
    x[0, 3, 5] = float("inf")
    x[1, 2, 0] = float("nan")
    _, library = _build(x, True, monkeypatch)
    _, own = _build(x, False, monkeypatch)
    got, want = _run(library, x), _run(own, x)
    assert torch.equal(got.isnan(), want.isnan()) and torch.equal(got.isinf(), want.isinf())
    assert got.isnan().any()
    finite = got.isfinite() & want.isfinite()
    assert torch.allclose(got[finite], want[finite], rtol=1e-2, atol=1e-2)


def test_which_kernels_may_take_it(monkeypatch, rng):
    assert library_gemm_fits(torch.float16, torch.float16, torch.float16, 1, True)
    assert library_gemm_fits(torch.bfloat16, torch.bfloat16, torch.bfloat16, 1, True)
    assert library_gemm_fits(torch.float32, torch.float32, torch.float32, 1, True)
    assert not library_gemm_fits(torch.float16, torch.float16, torch.float32, 1, True)  # output can't hold it
    assert not library_gemm_fits(torch.float16, torch.float16, torch.float16, 2, True)  # two outputs
    assert not library_gemm_fits(torch.float16, torch.float16, torch.float16, 1, False)  # strided output
    assert not library_gemm_fits(torch.int8, torch.int8, torch.int8, 1, True)


def _library_calls(monkeypatch) -> list[str]:
    """Spy on the cuBLAS calls library_gemm makes (torch.mm, torch.addmm)."""
    calls = []
    for name in ("mm", "addmm"):
        real = getattr(torch, name)
        monkeypatch.setattr(torch, name, lambda *a, _real=real, _name=name, **k: calls.append(_name) or _real(*a, **k))
    return calls


def test_fp32_gemms_take_the_library_product_and_stay_exact(monkeypatch, rng):
    x = torch.randn(3, 37, 40, generator=rng)
    torch.manual_seed(0)
    model = Chain(hidden=136).eval()  # K = 136 for fc2 and fc4: past LIBRARY_PASS_K_FP32, their passes pay
    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    engine = trident.build_engine(model, "fp32", example_inputs=[x])
    steps = _gemm_steps(engine)
    # fc1: cuBLAS adds the bias; fc2: product + GELU pass; fc3: the product; fc4: product + residual pass
    assert [s.config.get("BLAS") for s in steps] == [1, 1, 1, 1]
    calls = _library_calls(monkeypatch)
    out = _run(engine, x)
    # one addmm and three mm a run (on a GPU the engine runs its steps more than once: warm-up, capture)
    assert set(calls) == {"addmm", "mm"} and calls.count("mm") == 3 * calls.count("addmm")
    ref = model(x)
    assert (torch.linalg.norm(out - ref) / torch.linalg.norm(ref)).item() < 1e-6
    # a shallow K (40, 72): the product and the bias stay cuBLAS's whole job, the passes start on Triton's tile
    _, shallow = _build(x, True, monkeypatch, "fp32")
    assert [s.config.get("BLAS") for s in _gemm_steps(shallow)] == [1, 0, 1, 0]


def test_fp32_gemms_compute_on_their_own_tile_while_torch_lets_cublas_round_to_tf32(monkeypatch, rng):
    """torch's TF32 switch for cuBLAS would round an fp32 engine's operands to 10 mantissa bits:
    while it is on, a generated fp32 kernel computes its product on its own exact tile (its launch
    reads the setting; torch's own global is not touched here)."""
    x = torch.randn(2, 9, 40, generator=rng)
    torch.manual_seed(0)
    model = Chain(hidden=136).eval()
    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    engine = trident.build_engine(model, "fp32", example_inputs=[x])
    assert all(s.config.get("BLAS") == 1 for s in _gemm_steps(engine))
    monkeypatch.setattr(torch.backends.cuda, "matmul", SimpleNamespace(fp32_precision="tf32"))
    calls = _library_calls(monkeypatch)
    out = _run(engine, x)
    assert calls == []
    monkeypatch.setattr(config, "LIBRARY_GEMM", False)
    own = trident.build_engine(model, "fp32", example_inputs=[x])
    assert torch.equal(out, _run(own, x))  # the same tiles, bit for bit
    # (a fresh engine: on a GPU the first has its launches captured in a CUDA graph, setting and all)
    monkeypatch.setattr(torch.backends.cuda, "matmul", SimpleNamespace(fp32_precision="ieee"))
    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    _run(trident.build_engine(model, "fp32", example_inputs=[x]), x)
    assert calls and len(calls) % 4 == 0


@pytest.mark.parametrize("setting, rounds", [("tf32", True), ("ieee", False), ("none", False)])
def test_cublas_rounds_fp32_reads_torchs_setting_in_force(setting, rounds, monkeypatch):
    monkeypatch.setattr(torch.backends.cuda, "matmul", SimpleNamespace(fp32_precision=setting))
    assert cublas_rounds_fp32() is rounds
    monkeypatch.setattr(torch.backends.cuda, "matmul", SimpleNamespace(allow_tf32=rounds))  # torch before 2.9
    assert cublas_rounds_fp32() is rounds


def test_library_gemm_reads_operands_through_their_strides(rng):
    a = torch.randn(7, 12, generator=rng).half()
    w = torch.randn(9, 12, generator=rng).half()  # K-major [N, K], as constant weights are stored
    bias = torch.randn(9, generator=rng).half()
    out = torch.empty(7, 9, dtype=torch.float16)
    library_gemm(a, w, out, 7, 9, 12, 12, 1, 1, 12)
    torch.testing.assert_close(out.float(), a.float() @ w.float().t(), rtol=1e-2, atol=1e-2)
    library_gemm(a, w, out, 7, 9, 12, 12, 1, 1, 12, bias=bias)
    torch.testing.assert_close(out.float(), a.float() @ w.float().t() + bias.float(), rtol=1e-2, atol=1e-2)
    with pytest.raises(RuntimeError):  # an output smaller than [M, N] is refused, never overrun
        library_gemm(a, w, torch.empty(7, 8, dtype=torch.float16), 7, 9, 12, 12, 1, 1, 12)


def test_tuner_times_the_library_once_and_triton_tiles_without_it(monkeypatch, rng):
    from trident.compiler.build import compile_graph, import_model

    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    program = compile_graph(import_model(Chain().eval(), [torch.randn(2, 5, 40, generator=rng)]), "fp16")
    gemms = [s.kernel for s in program.steps if s.kind == "kernel" and s.kernel.problem["template"] == "matmul"]
    base, problem = gemms[0].config, gemms[0].problem  # fc1: cuBLAS adds the bias
    assert base.get("BLAS") == 1 and base.get("TMA") == 1
    found = candidates(problem, base, "fast")
    assert found[:3] == [base, base.replace(BLAS=0), base.replace(BLAS=0, TMA=0)]
    assert all(c.get("BLAS") == 0 for c in found[1:]) and len(found) > 3
    from trident.compiler.autotune.space import FAST_CANDIDATES
    assert len(found) == FAST_CANDIDATES["matmul"] + 1  # the library is a trial beside the Triton tiles
    assert candidates(problem, base, "fast", fast_count=2) == found[:3]  # `trident bench epilogues --candidates`
    pass_base = gemms[1].config  # fc2 starts on its own tile: the library is its second candidate
    assert pass_base.get("BLAS") == 0 and candidates(gemms[1].problem, pass_base, "fast")[1] == pass_base.replace(BLAS=1)
    assert config_error(base.replace(BLAS=0), problem, base) is None
    assert "BLAS=2" in config_error(base.replace(BLAS=2), problem, base)
    without = LaunchConfig.of(base.num_warps, base.num_stages, **{k: v for k, v in base.params if k != "BLAS"})
    assert config_error(without, problem, base) is None  # configs from before the switch still load
    assert "BLAS=1" in config_error(base, problem, without)  # a kernel generated without the path
    assert "blas" in str(base)


def test_the_epilogue_pass_launches_on_its_own_tile_without_descriptors():
    cfg = {"BLOCK_M": 128, "BLOCK_N": 256, "BLOCK_K": 64, "GROUP_M": 8, "PERSISTENT": 1, "TMA": 1, "BLAS": 1,
           "num_warps": 8, "num_stages": 3}
    assert kernel_config(cfg) == {**cfg, **EPILOGUE_TILE, "PERSISTENT": 0, "TMA": 0}
    without_tma = {k: v for k, v in cfg.items() if k != "TMA"}  # a kernel whose operands take no descriptors
    assert kernel_config(without_tma) == {**without_tma, **EPILOGUE_TILE, "PERSISTENT": 0}
    assert kernel_config({"TMA": 1, "BLAS": 0}) == {"TMA": 1, "BLAS": 0}
    assert kernel_config({"TMA": 1}) == {"TMA": 1}


def test_explain_names_the_gemms_cublas_computes(monkeypatch, rng):
    from trident.tools.explain import explain

    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    text = explain(Chain().eval(), [torch.randn(2, 5, 40, generator=rng)], "fp16", source=False)
    steps = [line for line in text.splitlines() if line.startswith("kernel  matmul")]
    assert [line.endswith("(cuBLAS)") for line in steps] == [True, False, True, False]
    assert not any(line.endswith("(product: cuBLAS; epilogue: Triton)") for line in steps)  # fc2: Triton's tile


def test_a_shape_generic_engine_passes_its_run_time_rows_to_cublas(monkeypatch, rng):
    x = torch.randn(2, 7, 40, generator=rng)
    monkeypatch.setattr(config, "LIBRARY_GEMM", True)
    torch.manual_seed(0)
    model = Chain().eval()
    engine = trident.build_engine(model, "fp16", example_inputs=[x], batch=(1, 2, 4))
    calls = [line for s in engine.plan.kernel_steps() for line in s.source.splitlines() if "library_gemm(" in line]
    assert len(calls) == 3 and all("size_batch * 7" in line for line in calls)
    for batch in (1, 3, 4):
        xb = torch.randn(batch, 7, 40, generator=rng)
        ref = model(xb)
        assert ((_run(engine, xb) - ref).abs().max() / ref.abs().max()).item() < 1e-2


def test_a_deep_k_loop_takes_the_library_product_and_the_epilogue_pass(monkeypatch, rng):
    """From K = LIBRARY_PASS_K on, a GEMM whose epilogue needs a pass (here a GELU) starts on
    cuBLAS's product (ViT-B/16's 3072 -> 768 + residual: 50.2 us against 61.8 on its tile); below,
    on its own tile. Both match torch."""
    from trident.kernels.matmul import LIBRARY_PASS_K

    monkeypatch.setattr(config, "LIBRARY_GEMM", True)

    class Block(torch.nn.Module):
        def __init__(self, k):
            super().__init__()
            self.fc, self.norm_in, self.norm_out = torch.nn.Linear(k, 24), torch.nn.LayerNorm(k), torch.nn.LayerNorm(24)

        def forward(self, x):
            return self.norm_out(torch.nn.functional.gelu(self.fc(self.norm_in(x))))

    for k, library in ((LIBRARY_PASS_K, 1), (LIBRARY_PASS_K // 2, 0)):
        torch.manual_seed(0)
        model = Block(k).eval()
        x = torch.randn(7, k, generator=rng)
        engine = trident.build_engine(model, "fp16", example_inputs=[x])
        (step,) = _gemm_steps(engine)
        assert step.config.get("BLAS") == library and "    library_gemm(" in step.source
        out = _run(engine, x)
        ref = model(x)
        assert ((out - ref).abs().max() / ref.abs().max()).item() < 1e-2


class PostNorm(torch.nn.Module):
    """BERT's output block: LayerNorm(x + Linear(h)), and a pre-norm block's residual stream read on."""

    def __init__(self, d=40, hidden=72):
        super().__init__()
        self.up, self.down = torch.nn.Linear(d, hidden), torch.nn.Linear(hidden, d)
        self.norm = torch.nn.LayerNorm(d)

    def forward(self, x):
        total = x + self.down(torch.relu(self.up(x)))
        return self.norm(total), total * 2


@pytest.mark.parametrize("entry", ["import", "torch.compile"])
def test_a_residual_into_the_norm_leaves_the_gemm_to_the_library(monkeypatch, rng, entry):
    """TRIDENT_RESIDUAL_INTO_NORM: the residual add joins the LayerNorm's loads (whose kernel also
    stores the sum, read on), and the GEMM before it is cuBLAS's addmm; results as torch's, and
    as the engine's with the add in the GEMM's epilogue."""
    from trident.compiler.dynamo import recording_backend

    torch.manual_seed(0)
    model = PostNorm().eval()
    x = torch.randn(3, 37, 40, generator=rng)
    ref = model(x)

    def build(on: bool):
        monkeypatch.setattr(config, "RESIDUAL_INTO_NORM", on)
        if entry == "import":
            return trident.build_engine(model, "fp16", example_inputs=[x])
        backend, reports = recording_backend({"precision": "fp16"})
        torch._dynamo.reset()
        with torch.no_grad():  # (on the device the engines run on: a GPU machine runs CPU tensors in torch)
            torch.compile(copy.deepcopy(model).to(DEV), backend=backend)(x.to(DEV))
        (engine,) = reports[0].engines()
        return engine

    engine = build(True)
    down = [s for s in _gemm_steps(engine) if "relu" not in s.name]
    assert len(down) == 1 and "return library_gemm(" in down[0].source and "bias=" in down[0].source
    (norm,) = [s for s in engine.plan.kernel_steps() if "layer_norm" in s.name]
    assert "add" in norm.name  # the residual add, computed in the norm's loads
    before = build(False)
    assert any("add" in s.name for s in _gemm_steps(before))  # (the default: in the GEMM's epilogue)
    monkeypatch.setattr(config, "LIBRARY_GEMM", False)  # no library: nothing to leave the GEMM to
    assert any("add" in s.name for s in _gemm_steps(build(True)))
    outs = [engine(*[x.to(DEV)]), before(*[x.to(DEV)])]
    for out in outs:
        for got, want in zip(out, ref):
            assert ((got.float().cpu() - want).abs().max() / want.abs().max()).item() < 1e-2
    torch._dynamo.reset()
