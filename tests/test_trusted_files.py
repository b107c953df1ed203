"""Engine files and caches as untrusted inputs: what loading trusts, and what it refuses.

The fuzzer (tools/fuzz_files.py) runs hundreds of seeded edits; the tests below pin the cases
the issue names one by one."""
from __future__ import annotations

import hashlib
import inspect
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from trident.compiler.autotune.constraints import config_error
from trident.compiler.build import load_engine
from trident.compiler.errors import CacheWarning, EngineFileError, TridentError
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.loader import kernel_path, load_kernel
from trident.runtime import format as fmt
from trident.tools.fuzz_files import fuzz, repack, tiny_model

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    from trident.compiler.build import compile_graph, engine_from, import_model

    model, inputs = tiny_model()
    engine = engine_from(compile_graph(import_model(model, inputs)), torch.device("cpu"))
    path = tmp_path_factory.mktemp("trusted") / "tiny.engine"
    engine.save(path)
    return path, inputs, [t.clone() for t in engine(*inputs)]


def edited(path: Path, tmp_path: Path, edit) -> Path:
    header, payload = fmt.read_engine_file(path)
    edit(header)
    out = tmp_path / "edited.engine"
    repack(path, header, bytes(payload), out)
    return out


def kernel_steps(header):
    return [s for s in header["plan"]["steps"] if s["kind"] == "kernel"]


def test_a_valid_file_loads_and_runs_its_regenerated_kernels(saved):
    path, inputs, expected = saved
    engine = load_engine(path)
    torch.testing.assert_close(engine(*inputs), expected, rtol=0, atol=0)


def _runtime_load(path):
    """`from trident.runtime import load_engine`, the public name: the same checks."""
    from trident.runtime import load_engine as runtime_load

    return runtime_load(path)


@pytest.mark.parametrize("load", [load_engine, _runtime_load], ids=["compiler", "runtime"])
def test_an_edited_kernel_source_is_refused_and_never_run(saved, tmp_path, load):
    path, inputs, expected = saved
    torch.testing.assert_close(load(path)(*inputs), expected, rtol=0, atol=0)
    sentinel = tmp_path / "ran"

    def inject(header):
        step = kernel_steps(header)[-1]
        step["source"] = f"open({str(sentinel)!r}, 'w')\n" + step["source"]
    with pytest.raises(EngineFileError, match=r"plan\.steps\[\d+\]\.source"):
        load(edited(path, tmp_path, inject))
    assert not sentinel.exists()


def test_a_spec_edit_that_changes_the_kernel_is_refused(saved, tmp_path):
    path, _, _ = saved

    def edit(header):
        spec = kernel_steps(header)[-1]["spec"]  # the softmax: make it a row of 3
        for entry in spec["types"].values():
            entry["shape"][-1] = 3
    with pytest.raises(EngineFileError):
        load_engine(edited(path, tmp_path, edit))


@pytest.mark.parametrize("size", [2 ** 63 - 1, 2 ** 41, -1])
def test_a_spec_size_past_any_tensor_is_refused_naming_the_field(saved, tmp_path, size):
    path, _, _ = saved

    def edit(header):
        spec = kernel_steps(header)[0]["spec"]  # the conv: its weight is a constant of the spec
        (name,) = [v for v, c in spec["constants"].items() if len(c["shape"]) == 4]
        spec["constants"][name]["shape"][1] = size
    with pytest.raises(EngineFileError, match=r"spec\.constants\..*\.shape"):
        load_engine(edited(path, tmp_path, edit))


@pytest.mark.parametrize("capability", [-(2 ** 40), "90", [9, "0"], {"major": 9}])
def test_a_device_capability_that_is_not_two_numbers_is_another_device(saved, tmp_path, capability):
    path, _, _ = saved
    with pytest.raises(EngineFileError, match="cannot run here"):
        load_engine(edited(path, tmp_path, lambda h: h["device"].__setitem__("capability", capability)))


def test_a_kernel_name_that_is_a_path_is_refused(saved, tmp_path):
    path, _, _ = saved

    def edit(header):
        kernel_steps(header)[0]["name"] = "../../escape"
    with pytest.raises(EngineFileError, match="name"):
        load_engine(edited(path, tmp_path, edit))
    with pytest.raises(TridentError, match="identifier"):
        load_kernel("../../escape", "x = 1\n", tmp_path / "kernels")
    assert not list(tmp_path.rglob("escape*"))


@pytest.mark.parametrize("field,value", [("BLOCK_R", 4), ("BLOCK_X", 0), ("BLOCK_X", "8"),
                                         ("BLOCK_X", 3), ("BLOCK_X", 2 ** 40)])
def test_a_config_outside_the_template_constraints_is_refused(saved, tmp_path, field, value):
    path, _, _ = saved

    def edit(header):
        kernel_steps(header)[-1]["config"]["params"][field] = value
    with pytest.raises(EngineFileError, match=r"config|params"):
        load_engine(edited(path, tmp_path, edit))


def test_layout_and_weight_edits_name_the_field(saved, tmp_path):
    path, _, _ = saved
    cases = [
        (lambda h: h["plan"]["layouts"][h["plan"]["outputs"][0]]["shape"].__setitem__(-1, 3), "layouts"),
        (lambda h: h["weights"][0].__setitem__("dtype", "int32"), "weight"),
        (lambda h: h["weights"][0].__setitem__("nbytes", 4), "weight"),
        (lambda h: h["engine"].__setitem__("arena_bytes", 8), "arena_bytes"),
        (lambda h: h["plan"]["layouts"][h["plan"]["inputs"][0]]["shape"].__setitem__(0, 3), "layouts"),
    ]
    for edit, field in cases:
        with pytest.raises(EngineFileError, match=field):
            load_engine(edited(path, tmp_path, edit))


def test_config_error_is_the_tuners_check():
    base = LaunchConfig.of(4, BLOCK_X=4, BLOCK_R=8)
    problem = {"template": "reduction", "rows": 6, "length": 6}
    assert config_error(base, problem, base) is None
    assert config_error(base.replace(BLOCK_X=16), problem, base) is None
    assert "whole row" in config_error(base.replace(BLOCK_R=4), problem, base)
    assert config_error({"BLOCK_X": "4", "BLOCK_R": 8, "num_warps": 4}, problem, base)
    assert config_error(LaunchConfig.of(3, BLOCK_X=4, BLOCK_R=8), problem, base)
    gemm = LaunchConfig.of(4, 3, BLOCK_M=32, BLOCK_N=32, BLOCK_K=32, GROUP_M=8, PERSISTENT=0)
    assert "below" in config_error(gemm.replace(BLOCK_K=8), {"template": "matmul", "dtype": torch.float16}, gemm)


def test_an_edited_kernel_cache_file_is_rewritten_with_a_warning(tmp_path):
    source = "VALUE = 6 / 3\n"
    path = kernel_path("k_div", source, tmp_path)
    load_kernel("k_div", source, tmp_path)
    assert path.name == f"k_div_{hashlib.sha256(source.encode()).hexdigest()[:24]}.py"
    path.write_text(source.replace("/", "*"))
    sys.modules.pop(f"trident_kernels.{path.stem}")
    with pytest.warns(CacheWarning, match=r"does not match.*trident cache clear"):
        module = load_kernel("k_div", source, tmp_path)
    assert module.VALUE == 2.0 and path.read_text() == source


KERNEL_SOURCE = """import triton
import triton.language as tl


@triton.jit
def kernel(x_ptr):
    tl.store(x_ptr, tl.load(x_ptr) + 1)


VALUE = 1
"""


def test_a_kernel_file_changed_after_its_check_is_not_what_runs(tmp_path, monkeypatch):
    """Another process rewrites the file between the cache's check and the import: Python runs the
    checked text, and Triton reads that text back too."""
    from trident.kernels import loader

    sentinel = tmp_path / "FOREIGN_CODE_RAN"

    def checked_then_swapped(path, source):
        loader._write(path, source)
        path.write_text(f"open({str(sentinel)!r}, 'w')\nVALUE = 2\n" + source.replace(" + 1", " - 1"))
        return True

    monkeypatch.setattr(loader, "_holds", checked_then_swapped)
    module = load_kernel("k_swapped", KERNEL_SOURCE, tmp_path)
    assert module.VALUE == 1 and not sentinel.exists()
    text = inspect.getsource(module.kernel.fn)  # what Triton compiles (or interprets)
    assert "+ 1" in text and "- 1" not in text
    x = torch.zeros(1)
    module.kernel[(1,)](x)
    assert x.item() == 1.0


def test_a_kernel_file_imported_by_path_must_match_its_name(tmp_path):
    """The compile workers import files by path: the text is checked against the name's digest."""
    from trident.compiler.errors import CacheError
    from trident.kernels.loader import import_cached_kernel

    sentinel = tmp_path / "FOREIGN_CODE_RAN"
    path = kernel_path("k_named", KERNEL_SOURCE, tmp_path)
    path.write_text(f"open({str(sentinel)!r}, 'w')\n" + KERNEL_SOURCE)
    with pytest.raises(CacheError, match=r"k_named_.*hash to .* name says"):
        import_cached_kernel(path)
    assert not sentinel.exists()
    path.write_text(KERNEL_SOURCE)
    assert import_cached_kernel(path).VALUE == 1


def test_a_folder_in_place_of_a_kernel_file_is_replaced(tmp_path):
    source = "VALUE = 1\n"
    path = kernel_path("k_dir", source, tmp_path)
    path.mkdir(parents=True)
    with pytest.warns(CacheWarning, match="not a regular file"):
        assert load_kernel("k_dir", source, tmp_path).VALUE == 1


def test_a_timing_cache_config_that_breaks_the_constraints_is_dropped(tmp_path):
    from trident.compiler.autotune import tune_program
    from trident.compiler.autotune.cache import new_entry, write_timing_cache
    from trident.compiler.autotune.tuner import collect_units, program_kernels
    from trident.compiler.build import compile_graph, engine_from, import_model
    from trident.kernels.identity import identity

    model, inputs = tiny_model()
    program = compile_graph(import_model(model, inputs))
    expected = engine_from(program, torch.device("cpu"))(*inputs)
    entries = {}
    for unit in collect_units(program_kernels(program), program.layouts, identity(torch.device("cpu"))):
        for kernel, components, key in zip(unit.kernels, unit.components, unit.keys):
            launch = kernel.config.to_dict()
            if "BLOCK_R" in launch:
                launch["BLOCK_R"] //= 2   # a row no longer fits one tile: a wrong softmax
            entries[key] = new_entry(components, launch, 1.0, "full")
    timing = tmp_path / "timing.json"
    write_timing_cache(timing, entries, merge=False)
    program = compile_graph(import_model(model, inputs))
    with pytest.warns(CacheWarning, match=r"BLOCK_R.*trident cache clear"):
        tune_program(program, "none", timing_cache=timing, cache=tmp_path / "autotune",
                     timer=lambda run, cfg: 1.0, progress=False)
    torch.testing.assert_close(engine_from(program, torch.device("cpu"))(*inputs), expected)


def test_cache_command_reports_and_clears(tmp_path):
    env = {"TRIDENT_CACHE_DIR": str(tmp_path / "cache"), "PYTHONPATH": str(ROOT)}
    (tmp_path / "cache" / "kernels").mkdir(parents=True)
    (tmp_path / "cache" / "kernels" / "k_0123.py").write_text("x = 1\n" * 100)
    run = lambda *a: subprocess.run([sys.executable, "-m", "trident.tools", "cache", *a],  # noqa: E731
                                    capture_output=True, text=True, env=env, cwd=tmp_path)
    info = run()
    assert info.returncode == 0 and str(tmp_path / "cache") in info.stdout and "kernels" in info.stdout
    cleared = run("clear")
    assert cleared.returncode == 0 and "cleared" in cleared.stdout
    assert list((tmp_path / "cache").iterdir()) == []


def test_fuzzer_finds_no_raw_exception_wrong_answer_escape_or_foreign_code():
    """The CI run: 300 header edits and 100 cache edits, seeded, in 2 worker processes."""
    report = fuzz(300, 100, seed=0, workers=2)
    kinds = [r["kind"] for r in report["results"]]
    assert len(kinds) == 400, report["table"]
    assert kinds.count("error") > 150 and kinds.count("ok") > 50, report["table"]  # both outcomes exercised
    assert not [r for r in report["results"] if r["kind"] in ("raw", "wrong", "crash")], report["table"]
    assert report["escaped"] == [] and not report["foreign"], report["table"]


def test_a_worker_with_a_long_list_of_cases_does_not_wait_forever(tmp_path, monkeypatch):
    """A worker's cases and its results each more than a pipe holds (`trident fuzz-files --workers 1`
    with 700 cases hung: the cases went down a pipe the worker stopped reading while its results
    filled the other). A stand-in worker echoes 2,000 cases of 1 KB; it must finish in seconds."""
    import threading

    from trident.tools import fuzz_files

    echo = ("import json, sys\nfor line in sys.stdin:\n"
            "    print(json.dumps({'id': json.loads(line)['id'], 'kind': 'ok', 'detail': 'x' * 1000}), flush=True)")
    monkeypatch.setattr(fuzz_files, "WORKER_COMMAND", ("-c", echo))
    cases = [{"id": f"c{i}", "family": "header", "pad": "y" * 1000} for i in range(2000)]
    results = []
    worker = threading.Thread(target=lambda: results.extend(fuzz_files._Worker(tmp_path, cases).finish()),
                              daemon=True)
    worker.start()
    worker.join(60)
    assert not worker.is_alive(), "the worker and its parent wait on each other"
    assert [r["id"] for r in results] == [c["id"] for c in cases]


# ----------------------------------------------------------- profiled (shape-generic) ----
@pytest.fixture(scope="module")
def profiled(tmp_path_factory):
    from trident.compiler.build import build_engine
    from trident.tools.fuzz_files import PROFILE

    model, inputs = tiny_model()
    engine = build_engine(model, "fp32", example_inputs=inputs, batch=PROFILE, device=torch.device("cpu"))
    path = tmp_path_factory.mktemp("trusted") / "profiled.engine"
    engine.save(path)
    return path, model


def generic_steps(header):
    return [s for s in kernel_steps(header) if s["sizes"]]


def test_a_profiled_file_regenerates_its_shape_generic_kernels_and_runs_every_batch(profiled):
    path, model = profiled
    header, _ = fmt.read_engine_file(path)
    steps = generic_steps(header)
    assert steps and all(len(s["spec"]["probes"]) == 3 for s in steps)  # batch: 2, 3, and 4 to check
    engine = load_engine(path)
    for batch in (1, 3, 5):
        x = torch.randn(batch, 3, 5, 5)
        with torch.no_grad():
            torch.testing.assert_close(engine(x)[0], model(x), rtol=1e-4, atol=1e-5)


def test_an_edited_shape_generic_source_is_refused_and_never_run(profiled, tmp_path):
    path, _ = profiled
    sentinel = tmp_path / "ran"

    def inject(header):
        step = generic_steps(header)[0]
        step["source"] = step["source"].replace("size_batch", f"size_batch + len(open({str(sentinel)!r}, 'w').name)", 1)
    with pytest.raises(EngineFileError, match=r"plan\.steps\[\d+\]\.source"):
        load_engine(edited(path, tmp_path, inject))
    assert not sentinel.exists()


@pytest.mark.parametrize("edit,field", [
    (lambda s: s["spec"]["probes"][1]["types"].__setitem__("x", {"shape": [7, 3, 5, 5], "dtype": "float32"}),
     r"probes|layouts|source"),
    (lambda s: s["spec"]["checks"][0].__setitem__(0, 9), r"spec\.checks"),
    (lambda s: s["spec"]["axes"].__setitem__(0, [2, 4]), r"spec\.axes\[0\]"),
    (lambda s: s["spec"]["ranges"]["batch"].__setitem__(2, 6), r"spec\.ranges\.batch"),
    (lambda s: s["spec"].__setitem__("probes", s["spec"]["probes"][:2]), r"spec\.probes"),
    (lambda s: s.__setitem__("sizes", []), r"\.sizes"),
])
def test_shape_generic_spec_edits_are_refused_naming_the_field(profiled, tmp_path, edit, field):
    path, _ = profiled
    with pytest.raises(EngineFileError, match=field):
        load_engine(edited(path, tmp_path, lambda h: edit(generic_steps(h)[0])))


@pytest.mark.parametrize("edit,field", [
    (lambda d: d["symbols"]["batch"].__setitem__("max", "5"), r"plan\.dynamic\.symbols\.batch\.max"),
    (lambda d: d["symbols"]["batch"].__setitem__("max", 6), r"spec\.ranges\.batch"),
    (lambda d: d["symbols"].__setitem__("x\nimport os", {"min": 1, "opt": 1, "max": 1}), r"plan\.dynamic\.symbols"),
    (lambda d: d["build_sizes"].__setitem__("batch", 3), r"plan\.dynamic"),
    (lambda d: d["variables"].__setitem__("batch", "size_b"), r"plan\.dynamic\.variables"),
    (lambda d: d["input_dims"].__setitem__("x", ["seq", 3, 5, 5]), r"plan\.dynamic\.input_dims\.x"),
    (lambda d: d["layouts"]["relu"]["tuple"][0]["tuple"].__setitem__(0, {"poly": [[1, [["batch", 9]]]]}),
     r"plan\.dynamic\.layouts\.relu"),
    (lambda d: d["layouts"]["relu"]["tuple"].__setitem__(2, "float32"), r"plan\.dynamic\.layouts\.relu"),  # offset
])
def test_profile_field_edits_name_the_field(profiled, tmp_path, edit, field):
    path, _ = profiled
    with pytest.raises(EngineFileError, match=field):
        load_engine(edited(path, tmp_path, lambda h: edit(h["plan"]["dynamic"])))
