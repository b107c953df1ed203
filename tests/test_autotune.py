"""compiler/autotune: configs, pruning, cache keys, the disk and timing caches, the tuning loop.

On the CPU the loop runs with an injected fake timer (nothing is compiled or timed); the real
thing is in test_autotune_gpu.py.
"""
import io
import json
import math
import multiprocessing
import warnings

import pytest
import torch

from trident.compiler import build_engine, config
from trident.compiler.autotune import (CacheWarning, DeviceLimits, LaunchConfig, TuningCache, candidates,
                                       collect_units, export_cache, full_space, import_cache, plan_kernels,
                                       problem_of, program_kernels, prune, prune_reason, read_timing_cache,
                                       tune_plan, tune_program, write_timing_cache)
from trident.compiler.autotune import cache as cache_mod
from trident.compiler.autotune.report import Progress
from trident.compiler.autotune.space import gemm_smem
from trident.compiler.build import compile_graph, import_model
from trident.compiler.ir.plan import Layout
from trident.compiler.errors import TridentError
from trident.compiler.testing import run_engine
from trident.models import MODELS

GEMM = {"template": "matmul", "M": 4096, "N": 4096, "K": 4096, "batch": 1, "dtype": torch.float16}
BASE = LaunchConfig.of(8, 3, BLOCK_M=128, BLOCK_N=256, BLOCK_K=64, GROUP_M=8)


def program_of(name="mlp", batch=4):
    build, make_inputs = MODELS[name]
    return compile_graph(import_model(build().eval(), make_inputs(batch)), "fp16")


@pytest.fixture(scope="module")
def tiny_resnet_program():
    return program_of("resnet_tiny", 2)


def by_size(run, cfg):
    """Fake timer: bigger blocks are faster; 8-warp configs fail as if they could not compile."""
    if cfg.num_warps == 8:
        raise RuntimeError("out of resources: shared memory")
    size = 1
    for _, v in cfg.params:
        size *= max(v, 1)  # PERSISTENT may be 0
    return 1.0 / size


def heuristics_slowed(configs, timer=by_size):
    """`timer`, with the given (heuristic) configs ten times slower: whatever the candidate lists
    (they differ between the interpreter and a GPU), a kernel with a second config that compiles
    gets a winner that is not its heuristic."""
    slow = set(map(str, configs))
    return lambda run, cfg: timer(run, cfg) * (10.0 if str(cfg) in slow else 1.0)


def kernel_configs(program):
    return [s.kernel.config for s in program.steps if s.kind == "kernel"]


# ------------------------------------------------------------------------------ configs ----
def test_config_round_trips_launch_dicts():
    for launch in ({"BLOCK_M": 64, "BLOCK_N": 64, "BLOCK_K": 32, "GROUP_M": 8, "num_warps": 4, "num_stages": 3},
                   {"BLOCK": 1024, "num_warps": 4}, {"BLOCK_X": 16, "BLOCK_R": 1024, "num_warps": 8}):
        cfg = LaunchConfig.from_dict(launch)
        assert cfg.to_dict() == launch
        assert hash(cfg) == hash(LaunchConfig.from_dict(dict(launch)))
    assert str(BASE) == "128x256x64 g8 w8 s3"
    assert BASE.replace(num_stages=4).num_stages == 4 and BASE["BLOCK_N"] == 256
    assert BASE.BLOCK_M == 128 and BASE.get("PERSISTENT", 0) == 0
    with pytest.raises(AttributeError, match="no BLOCK_X"):
        BASE.BLOCK_X  # noqa: B018


def test_one_config_type_from_template_to_launch(monkeypatch):
    """A template's heuristic returns the LaunchConfig that codegen puts in the kernel, the tuner
    searches around, the plan stores and the kernel's CONFIG literal spells out."""
    from trident.kernels.matmul import heuristic_config

    monkeypatch.setattr(config, "FUSE_MLP", False)  # GEMM kernels of their own (not one back-to-back MLP)
    monkeypatch.setattr(config, "WS_GEMM", False)
    program = program_of("mlp", 2)
    step = next(s for s in program.steps if s.kind == "kernel" and s.kernel.problem["template"] == "matmul")
    p = step.kernel.problem
    expected = heuristic_config(p["M"], p["N"], p["K"], p["dtype"], 4, tma="matmul_tile_tma" in step.kernel.source,
                                blas="library_gemm" in step.kernel.source)
    expected = expected.replace(SPLIT_EPILOGUE=0)  # (generated GEMMs only: the tuner times the split)
    if "def ws_kernel" in step.kernel.source:  # (on a Hopper GPU: the warp-specialized path, off by default)
        expected = expected.replace(WS=0)
    assert isinstance(expected, LaunchConfig) and step.kernel.config == expected
    assert f"CONFIG = {expected.to_dict()!r}" in step.kernel.source
    assert candidates(p, step.kernel.config, "fast")[0] == expected
    plan_step = next(s for s in program.plan().kernel_steps() if s.name == step.kernel.name)
    assert plan_step.config == expected


def test_kernel_sources_declare_their_problem():
    program = program_of("resnet_tiny", 2)
    for step in program.steps:
        if step.kind == "kernel":
            assert problem_of(step.kernel.source) == cache_mod.canonical(step.kernel.problem)
    assert problem_of("x = 1\n") == {} and problem_of("PROBLEM = foo()\n") == {}


def test_tune_plan_retunes_a_plan_without_its_program(tmp_path):
    """A plan (as read from an engine file) carries no problems: the tuner reads each kernel's
    declared PROBLEM, and the plan comes back with the chosen configs, its code unchanged."""
    plan = program_of("mlp", 2).plan()
    assert all(k.problem for k in plan_kernels(plan))
    timer = heuristics_slowed([s.config for s in plan.kernel_steps()])
    tuned, report = tune_plan(plan, "fast", cache=TuningCache(tmp_path), timer=timer, progress=False)
    assert report.count("tuned") == len(report.rows) > 0
    assert [s.source for s in tuned.kernel_steps()] == [s.source for s in plan.kernel_steps()]
    assert [s.config for s in tuned.kernel_steps()] != [s.config for s in plan.kernel_steps()]
    chosen = {r.name: r.config for r in report.rows}
    assert all(s.config == chosen[s.name] for s in tuned.kernel_steps() if s.name in chosen)


# ------------------------------------------------------------------------------ pruning ----
def test_pruning_removes_configs_over_shared_memory():
    big = LaunchConfig.of(8, 5, BLOCK_M=128, BLOCK_N=128, BLOCK_K=128, GROUP_M=8)  # 5 * 64 KB = 320 KB
    assert gemm_smem(big, torch.float16) > DeviceLimits().smem_per_block
    assert prune_reason(big, GEMM) == "shared memory"
    small_gpu = DeviceLimits(smem_per_block=64 * 1024)
    kept = prune(full_space(GEMM, BASE), GEMM, small_gpu)
    assert kept and all(gemm_smem(c, torch.float16) <= 64 * 1024 for c in kept)
    assert all(gemm_smem(c, torch.float16) <= DeviceLimits().smem_per_block
               for c in candidates(GEMM, BASE, "full")[1:])


def test_pruning_removes_register_hungry_and_oversize_tiles():
    assert prune_reason(LaunchConfig.of(4, 3, BLOCK_M=256, BLOCK_N=256, BLOCK_K=32, GROUP_M=8), GEMM) == "registers"
    skinny = dict(GEMM, M=8)
    base = LaunchConfig.of(4, 4, BLOCK_M=16, BLOCK_N=64, BLOCK_K=64, GROUP_M=8)
    for level in ("fast", "full"):
        cands = candidates(skinny, base, level)
        assert cands[0] == base and len(cands) > 1
        assert all(c["BLOCK_M"] == 16 for c in cands), "no tile taller than 16 rows for M=8"
    tiny_k = dict(GEMM, K=16)
    assert all(c["BLOCK_K"] == 16 for c in candidates(tiny_k, base.replace(BLOCK_K=16), "full"))
    assert prune_reason(LaunchConfig.of(4, BLOCK=8192), {"template": "pointwise", "numel": 100}) is not None
    reduction = {"template": "reduction", "rows": 4, "length": 768}
    rbase = LaunchConfig.of(4, BLOCK_X=4, BLOCK_R=1024)
    assert all(c["BLOCK_X"] <= 4 and c["BLOCK_R"] == 1024 for c in candidates(reduction, rbase, "full"))


def test_every_template_has_a_space_led_by_the_heuristic():
    problems = [
        (GEMM, BASE),
        ({"template": "conv", "M": 50176, "N": 256, "K": 2304, "C": 256, "KH": 3, "KW": 3, "groups": 1,
          "dtype": torch.float16, "tile": "conv2d_nhwc_tile"}, BASE.replace(BLOCK_N=128, num_stages=4)),
        ({"template": "pool", "M": 802816, "C": 64}, LaunchConfig.of(4, BLOCK_M=32, BLOCK_N=64)),
        ({"template": "depthwise", "M": 802816, "N": 1, "K": 9, "C": 1, "KH": 3, "KW": 3, "groups": 64,
          "dtype": torch.float16}, LaunchConfig.of(4, BLOCK_M=64, BLOCK_N=64)),
        ({"template": "pointwise", "numel": 1 << 20}, LaunchConfig.of(4, BLOCK=1024)),
        ({"template": "reduction", "rows": 4096, "length": 768}, LaunchConfig.of(4, BLOCK_X=4, BLOCK_R=1024)),
    ]
    for problem, base in problems:
        fast, full = candidates(problem, base, "fast"), candidates(problem, base, "full")
        assert fast[0] == base and full[0] == base, problem["template"]
        assert 1 < len(fast) <= 6 and len(full) >= len(fast), problem["template"]
        assert len(set(full)) == len(full)
        assert set(fast) <= set(full) | set(fast[:1]) or problem["template"] in ("matmul", "conv")
    assert candidates(GEMM, BASE, "none") == [BASE]


# ----------------------------------------------------------------------------- cache key ----
SOURCE = "# trident generated kernel: k\n#   node\nimport triton\n\ndef kernel(in0, out0):\n    pass\n"
LAYOUTS = [Layout((4, 8), (8, 1), torch.float16), Layout((4, 8), (8, 1), torch.float16)]
IDENTITY = {"versions": {"trident": "0.1.0", "triton": "3.6.0", "torch": "2.11.0"}, "templates": "t0",
            "device": {"name": "NVIDIA H200", "capability": [9, 0]}}


def key(source=SOURCE, problem=GEMM, layouts=LAYOUTS, identity=IDENTITY):
    return cache_mod.make_key(cache_mod.key_components(source, problem, layouts, identity))


def test_cache_key_covers_every_component(monkeypatch):
    base = key()
    assert key() == base
    assert key(source=SOURCE.replace("# trident generated kernel: k", "# trident generated kernel: other")) == base
    variants = [
        key(source=SOURCE.replace("pass", "return")),
        key(problem=dict(GEMM, K=2048)),
        key(problem=dict(GEMM, dtype=torch.float32)),
        key(layouts=[LAYOUTS[0], Layout((4, 8), (1, 4), torch.float16)]),
        key(layouts=[LAYOUTS[0], Layout((4, 8), (8, 1), torch.float32)]),
        key(identity=dict(IDENTITY, device={"name": "NVIDIA H100 80GB HBM3", "capability": [9, 0]})),
        key(identity=dict(IDENTITY, device={"name": "NVIDIA H200", "capability": [10, 0]})),
        key(identity=dict(IDENTITY, templates="edited template")),
    ]
    for field in ("triton", "trident", "torch"):
        variants.append(key(identity=dict(IDENTITY, versions={**IDENTITY["versions"], field: "9.9.9"})))
    assert base not in variants and len(set(variants)) == len(variants)


def test_cache_key_and_engine_file_share_one_identity():
    """The autotune key is built from the identity an engine header records (kernels/identity.py):
    the same versions, templates hash and device, under the same names."""
    from trident.kernels import identity

    here = identity.identity()
    components = cache_mod.key_components(SOURCE, GEMM, LAYOUTS, here)
    assert {k: components[k] for k in ("versions", "templates", "device")} == here
    assert set(here["versions"]) == {"trident", "triton", "torch"}
    # the templates hash covers the modules with device code, not the benchmarks or sweeps
    names = {p.name for p in identity.template_files()}
    assert {"common.py", "conv.py", "matmul.py", "pool.py", "prims.py", "attention_hopper.py"} <= names
    assert not names & {"bench.py", "sweep.py", "identity.py", "loader.py", "__init__.py"}


# ---------------------------------------------------------------------------- disk cache ----
def make_entry(i=0, level="fast", ms=1.0):
    components = cache_mod.key_components(SOURCE, dict(GEMM, M=i + 1), LAYOUTS, IDENTITY)
    return cache_mod.new_entry(components, BASE.to_dict(), ms, level)


def test_entries_round_trip_and_stale_entries_are_refused(tmp_path):
    cache = TuningCache(tmp_path)
    entry = make_entry()
    cache.put(entry)
    assert cache.get(entry["key"])["config"] == BASE.to_dict()
    # An entry copied under another key (or with edited components) is never used.
    other = make_entry(1)
    cache.path(other["key"]).parent.mkdir(parents=True, exist_ok=True)
    cache.path(other["key"]).write_text(json.dumps(entry))
    with pytest.warns(CacheWarning):
        assert cache.get(other["key"]) is None


def test_corrupted_entry_is_ignored_with_a_warning_and_rebuilt(tmp_path):
    program = program_of()
    cache = TuningCache(tmp_path)
    tune_program(program, "fast", cache=cache, timer=by_size, progress=False)
    first = kernel_configs(program)
    paths = sorted(tmp_path.glob("??/*.json"))
    assert paths
    paths[0].write_text('{"key": "truncated')
    paths[-1].write_bytes(b"\x00\xff garbage")
    calls = []

    def counting(run, cfg):
        calls.append(cfg)
        return by_size(run, cfg)

    again = program_of()
    with pytest.warns(CacheWarning):
        tune_program(again, "fast", cache=cache, timer=counting, progress=False)
    assert calls, "the unreadable entries were re-tuned"
    assert kernel_configs(again) == first
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for p in paths:
            assert cache.get(p.stem) is not None


def _hammer(directory, timing_file, worker, rounds):
    cache = TuningCache(directory)
    for r in range(rounds):
        for i in range(8):
            cache.put(make_entry(i, ms=float(worker * 100 + r)))
        entry = make_entry(100 + worker * rounds + r)
        write_timing_cache(timing_file, {entry["key"]: entry})


def test_two_processes_writing_at_once_leave_the_cache_valid(tmp_path):
    ctx = multiprocessing.get_context("fork")
    timing_file = tmp_path / "shared.timing"
    procs = [ctx.Process(target=_hammer, args=(tmp_path / "cache", timing_file, w, 15)) for w in range(2)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # not one unreadable or malformed entry
        entries = list(TuningCache(tmp_path / "cache").entries())
        shipped = read_timing_cache(timing_file)
    assert len(entries) == 8
    assert len(shipped) == 30, "every process's entries survive the concurrent merges"
    assert not list((tmp_path / "cache").glob("??/*.tmp"))


# ------------------------------------------------------------------- timing cache files ----
def test_export_import_round_trip_skips_tuning(tmp_path):
    program = program_of()
    tune_program(program, "fast", cache=TuningCache(tmp_path / "a"), timer=by_size, progress=False)
    shipped = tmp_path / "model.timing"
    n = export_cache(shipped, tmp_path / "a")
    assert n == len(list(TuningCache(tmp_path / "a").entries())) > 0
    assert import_cache(shipped, tmp_path / "b") == n
    a = {e["key"]: e for e in TuningCache(tmp_path / "a").entries()}
    b = {e["key"]: e for e in TuningCache(tmp_path / "b").entries()}
    assert a == b

    def never(run, cfg):
        raise AssertionError("everything should come from the cache")

    again = program_of()
    report = tune_program(again, "fast", cache=TuningCache(tmp_path / "b"), timer=never, progress=False)
    assert report.count("cached") == len(report.rows)
    assert kernel_configs(again) == kernel_configs(program)


def test_timing_cache_file_is_read_then_updated(tmp_path):
    shipped = tmp_path / "t.timing"
    program = program_of()
    tune_program(program, "fast", cache=TuningCache(tmp_path / "a"), timer=by_size, timing_cache=shipped,
                 progress=False)
    entries = read_timing_cache(shipped)
    assert entries and all(e["level"] == "fast" for e in entries.values())
    # Another machine (empty local cache) with the same GPU: the file alone serves the build.
    again = program_of()
    report = tune_program(again, "fast", cache=TuningCache(tmp_path / "c"), timing_cache=shipped,
                          timer=lambda run, cfg: pytest.fail("tuned despite the timing cache"), progress=False)
    assert report.count("cached") == len(report.rows)
    assert kernel_configs(again) == kernel_configs(program)
    # tune="none" with a timing cache applies its entries, still without timing anything.
    third = program_of()
    tune_program(third, "none", cache=TuningCache(tmp_path / "d"), timing_cache=shipped,
                 timer=lambda run, cfg: pytest.fail("none never times"), progress=False)
    assert kernel_configs(third) == kernel_configs(program)
    # A "full" build does not accept "fast" results; its own replace them in the file.
    calls = []
    tune_program(program_of(), "full", cache=TuningCache(tmp_path / "c"), timing_cache=shipped,
                 timer=lambda run, cfg: calls.append(cfg) or 1.0, progress=False)
    assert calls
    assert {e["level"] for e in read_timing_cache(shipped).values()} == {"full"}


def test_unreadable_timing_cache_file_warns_and_is_rewritten(tmp_path):
    shipped = tmp_path / "t.timing"
    shipped.write_text("not json")
    with pytest.warns(CacheWarning):
        tune_program(program_of(), "fast", cache=TuningCache(tmp_path / "a"), timer=by_size,
                     timing_cache=shipped, progress=False)
    assert read_timing_cache(shipped)


# ---------------------------------------------------------------------------- tuning loop ----
def test_fake_timer_picks_the_fastest_and_records_failures(tmp_path):
    program = program_of()
    heuristic = kernel_configs(program)
    report = tune_program(program, "fast", cache=TuningCache(tmp_path), timer=heuristics_slowed(heuristic),
                          progress=False)
    assert report.rows and report.count("tuned") == len(report.rows)
    for row in report.rows:
        ok = [(c, ms) for c, ms, err in row.trials if err is None]
        failed = [(c, err) for c, ms, err in row.trials if err is not None]
        assert all(ms is None for c, ms, err in row.trials if err is not None)
        assert row.ms == min(ms for _, ms in ok)
        assert str(row.config) == min(ok, key=lambda t: t[1])[0]
        assert row.config.num_warps != 8
        assert all("out of resources" in err for _, err in failed)
        assert row.ms <= row.base_ms or math.isnan(row.base_ms) or math.isinf(row.base_ms)
    tuned = kernel_configs(program)
    assert tuned != heuristic
    chosen = {r.name: r.config for r in report.rows}
    steps = {s.kernel.name: s.kernel.config for s in program.steps if s.kind == "kernel"}
    for name, cfg in chosen.items():
        assert steps[name] == cfg


def test_a_kernel_whose_configs_all_fail_keeps_its_heuristic(tmp_path):
    program = program_of()
    heuristic = kernel_configs(program)

    def broken(run, cfg):
        raise RuntimeError("compilation failed")

    report = tune_program(program, "fast", cache=TuningCache(tmp_path), timer=broken, progress=False)
    assert report.count("failed") == len(report.rows)
    assert kernel_configs(program) == heuristic
    assert not list(tmp_path.glob("??/*.json")), "failures are not cached"


def test_identical_problems_are_tuned_once(tmp_path):
    program = program_of("bert_tiny", 2)  # its two layers repeat every GEMM problem
    units = collect_units(program_kernels(program), program.layouts, IDENTITY)
    kernels = sum(s.kind == "kernel" and bool(s.kernel.problem) for s in program.steps)
    assert sum(len(u.kernels) for u in units) == kernels
    assert len(units) < kernels
    for unit in units:  # a unit shares one problem, whatever its kernels' epilogues
        assert all(k.problem == unit.problem for k in unit.kernels)
    timed = []
    tune_program(program, "fast", cache=TuningCache(tmp_path),
                 timer=lambda run, cfg: timed.append(cfg) or 1.0, progress=False)
    assert len(timed) == sum(len(candidates(u.problem, u.base, "fast")) for u in units)


def test_the_timed_run_launches_the_kernel(tmp_path):
    """The run callable a timer gets really launches the generated kernel (interpreter here)."""
    program = program_of("mlp", 2)
    ran = []

    def run_once(run, cfg):
        if not ran:
            run()
            ran.append(cfg)
        return 1.0

    tune_program(program, "fast", cache=TuningCache(tmp_path), timer=run_once, progress=False)
    assert ran


# ------------------------------------------------------------------------- build_engine ----
@pytest.mark.skipif(torch.cuda.is_available(), reason="what a machine without a GPU does")
def test_tune_none_is_the_heuristic_and_the_cpu_ignores_tuning(monkeypatch, capsys, tmp_path):
    monkeypatch.setattr(config, "CACHE_DIR", tmp_path)
    build, make_inputs = MODELS["mlp"]
    model, inputs = build().eval(), make_inputs(2)
    heuristic = kernel_configs(program_of("mlp", 2))
    engine = build_engine(model, "fp16", example_inputs=inputs, tune="none")
    assert [s.config for s in engine.plan.kernel_steps()] == heuristic
    monkeypatch.setattr(config, "QUIET", False)
    engine = build_engine(model, "fp16", example_inputs=inputs, tune="fast", timing_cache=tmp_path / "t.timing")
    err = capsys.readouterr().err
    assert "needs a CUDA GPU" in err and len([l for l in err.splitlines() if "tune=" in l]) == 1
    assert [s.config for s in engine.plan.kernel_steps()] == heuristic
    torch.testing.assert_close(engine(*inputs)[0], model(*inputs), rtol=2e-2, atol=2e-2)
    assert not (tmp_path / "autotune").exists()
    with pytest.raises(TridentError, match="tune must be one of"):
        build_engine(model, "fp16", example_inputs=inputs, tune="max")


def test_progress_bar_and_table(tmp_path):
    out = io.StringIO()
    bar = Progress(4, stream=out)
    for i in range(5):
        bar.update(min(i, 4), "best 0.1 ms")
    bar.close()
    assert "4/4 kernels" in out.getvalue()
    report = tune_program(program_of(), "fast", cache=TuningCache(tmp_path), timer=by_size, progress=False)
    table = report.table()
    assert "GB/s" in table and "%roof" in table and "tuned" in table
    data = json.loads(json.dumps(report.to_json()))
    assert data["kernels"][0]["config"] and data["level"] == "fast"


def test_compile_pool_answers_every_job_and_reports_errors(tmp_path):
    """Worker processes speak the JSON protocol; a job that cannot compile is an error, not a crash."""
    from trident.compiler.autotune.compile_pool import CompilePool

    pool = CompilePool(1)
    try:
        futures = [pool.submit(str(tmp_path / f"missing_{i}.py"), ["float16"], {"BLOCK": 128, "num_warps": 4})
                   for i in range(3)]
        results = [f.result(timeout=120) for f in futures]
    finally:
        pool.close()
    assert all(r.get("error", "").startswith("CacheError") and "does not exist" in r["error"]
               for r in results), results
    assert pool.broken is None


def test_interpreter_runs_verify_the_winner_against_the_heuristic(tmp_path, monkeypatch):
    """The GPU path's shape on the CPU: real launches timed by wall clock, outputs checked."""
    import time

    from trident.compiler.autotune import measure
    from trident.compiler.build import engine_from

    build, make_inputs = MODELS["mlp"]
    model, inputs = build().eval(), make_inputs(2)

    def wall(run, cfg):
        start = time.perf_counter()
        run()
        return (time.perf_counter() - start) * 1e3

    program = program_of("mlp", 2)
    report = tune_program(program, "fast", cache=TuningCache(tmp_path / "a"), timer=wall, verify=True,
                          progress=False)
    assert report.count("tuned") == len(report.rows)
    torch.testing.assert_close(run_engine(engine_from(program), *inputs)[0], model(*inputs), rtol=2e-2, atol=2e-2)

    # A winner whose outputs differ from the heuristic config's is refused.
    monkeypatch.setattr(measure, "outputs_close", lambda got, want: False)
    program = program_of("mlp", 2)
    heuristic = kernel_configs(program)
    report = tune_program(program, "fast", cache=TuningCache(tmp_path / "b"), timer=heuristics_slowed(heuristic),
                          verify=True, progress=False)
    assert kernel_configs(program) == heuristic
    assert any(err and "outputs differ" in err for row in report.rows for _, _, err in row.trials)


def test_compile_pool_that_cannot_start_workers_skips_instead_of_failing_configs(monkeypatch):
    import subprocess
    import sys

    from trident.compiler.autotune.compile_pool import CompilePool

    def dead_worker(self):
        return subprocess.Popen([sys.executable, "-c", "import sys; sys.exit(3)"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, bufsize=0)

    monkeypatch.setattr(CompilePool, "_start", dead_worker)
    pool = CompilePool(1)
    try:
        results = [pool.submit("k.py", ["float16"], {"BLOCK": 128}).result(timeout=60) for _ in range(5)]
    finally:
        pool.close()
    assert all("skipped" in r for r in results), results  # compiled at first launch instead
    assert pool.broken
