"""The autotuner for real on a GPU (skipped without CUDA)."""
import math

import pytest
import torch

from trident.compiler import build_engine, config
from trident.compiler.autotune import problem_of, read_timing_cache
from trident.compiler.autotune.compile_pool import CompilePool
from trident.compiler.autotune.measure import gpu_timer
from trident.compiler.build import BuildTrace, retune
from trident.kernels.loader import load_kernel
from trident.models import MODELS

pytestmark = pytest.mark.gpu


def rel_err(got, ref):
    return ((got.float() - ref.float()).norm() / ref.float().norm()).item()


class Linears(torch.nn.Module):
    """Two GEMMs with different shapes and epilogues (bias + GELU, bias + residual)."""

    def __init__(self):
        super().__init__()
        self.up = torch.nn.Linear(512, 1024)
        self.down = torch.nn.Linear(1024, 512)

    def forward(self, x):
        return x + self.down(torch.nn.functional.gelu(self.up(x)))


def configs(engine):
    return [s.config for s in engine.plan.kernel_steps()]


def test_tuned_small_matmul_model_matches_torch_and_is_cached(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    model = Linears().eval().cuda()
    x = torch.randn(512, 512, device="cuda")
    with torch.no_grad():
        ref = model(x)
    trace = BuildTrace()
    timing = tmp_path / "model.timing"
    engine = build_engine(model, "fp16", example_inputs=(x,), tune="fast", trace=trace, timing_cache=timing)
    report = trace.tuning
    assert report is not None and report.count("tuned") >= 2, report.table()
    assert report.compiled > report.count("tuned")  # several configs timed per problem
    for row in report.rows:
        assert row.status == "tuned" and math.isfinite(row.ms) and row.ms > 0, report.table()
        # Every candidate compiled and ran, through TMA descriptors and through pointers alike
        # (compile workers stand in for the descriptors a launch adds).
        assert all(ms is not None and not err for _, ms, err in row.trials), row.trials
        if row.problem.get("template") == "matmul":
            assert {" tma" in cfg for cfg, _, _ in row.trials} == {True, False}, row.trials
    assert rel_err(engine(x)[0], ref) <= 1e-2
    assert read_timing_cache(timing)

    # Warm rebuild: every kernel from the disk cache, nothing timed, same configs and results.
    again = BuildTrace()
    engine2 = build_engine(model, "fp16", example_inputs=(x,), tune="fast", trace=again)
    assert again.tuning.count("cached") == len(again.tuning.rows) and again.tuning.compiled == 0
    assert configs(engine2) == configs(engine)
    assert rel_err(engine2(x)[0], ref) <= 1e-2

    # Another machine: an empty cache and the shipped timing-cache file.
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path / "elsewhere")
    third = BuildTrace()
    engine3 = build_engine(model, "fp16", example_inputs=(x,), tune="fast", trace=third, timing_cache=timing)
    assert third.tuning.count("cached") == len(third.tuning.rows)
    assert configs(engine3) == configs(engine)


def test_tuned_resnet_tiny_matches_torch(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    build, make_inputs = MODELS["resnet_tiny"]
    model = build().eval().cuda()
    (x,) = (t.cuda() for t in make_inputs(8))
    with torch.no_grad():
        ref = model(x)
    trace = BuildTrace()
    engine = build_engine(model, "fp16", example_inputs=(x,), tune="fast", trace=trace)
    assert trace.tuning.count("failed") == 0, trace.tuning.table()
    assert rel_err(engine(x)[0], ref) <= 1e-2


def test_compile_pool_compiles_a_generated_kernel(tmp_path, monkeypatch):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    model = Linears().eval().cuda()
    engine = build_engine(model, "fp16", example_inputs=(torch.randn(64, 512, device="cuda"),))
    step = next(s for s in engine.plan.kernel_steps() if problem_of(s.source).get("template") == "matmul")
    module = load_kernel(step.name, step.source, tmp_path / "kernels")
    dtypes = [str(engine.plan.layouts[a].dtype).replace("torch.", "") for a in step.args]
    pool = CompilePool(2)
    try:
        ok = pool.submit(module.__file__, dtypes, step.config.to_dict()).result(timeout=300)
        bad = pool.submit(module.__file__, dtypes, step.config.replace(BLOCK_K=7).to_dict()).result(timeout=300)
    finally:
        pool.close()
    assert ok.get("ok"), ok
    assert "error" in bad


def test_gpu_timer_orders_work_by_size():
    small = torch.empty(1 << 22, device="cuda", dtype=torch.float16)
    large = torch.empty(1 << 28, device="cuda", dtype=torch.float16)
    t_small, t_large = gpu_timer(lambda: small.clone()), gpu_timer(lambda: large.clone())
    assert 0 < t_small < t_large


def test_retune_an_engine_file(tmp_path, monkeypatch):
    """An engine file re-tuned on this GPU (as for a file built on another one): same kernels,
    configs chosen by timing here, outputs still right."""
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    model = Linears().eval().cuda()
    x = torch.randn(512, 512, device="cuda")
    engine = build_engine(model, "fp16", example_inputs=(x,))
    path = tmp_path / "linears.engine"
    engine.save(path)
    tuned = retune(path, "fast")
    assert [s.source for s in tuned.plan.kernel_steps()] == [s.source for s in engine.plan.kernel_steps()]
    assert list((tmp_path / "autotune").glob("??/*.json"))  # the timings were cached here
    with torch.no_grad():
        assert rel_err(tuned(x)[0], model(x)) < 2e-2
