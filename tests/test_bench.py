"""`trident bench --dry-run`: the whole benchmark pipeline on the CPU (tiny models and shapes,
Triton's interpreter, a fake timer), and the README updater on a copy of README.md."""
import json
import shutil
from pathlib import Path

import pytest
import torch

from trident.tools.cli import main

pytest.importorskip("matplotlib")

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench_out(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "out"
    assert main(["bench", "--dry-run", "--out", str(out)]) == 0
    return out


def test_dry_run_writes_results_tables_and_charts(bench_out):
    results = json.loads((bench_out / "results.json").read_text())
    assert results["mode"] == "dry"
    for key in ("gpu", "capability", "torch", "triton", "trident", "date"):
        assert key in results["environment"]
    rows = results["models"]
    by = {(r["model"], r["precision"], r["runner"]): r for r in rows}
    t = by[("mlp_tiny", "fp16", "trident")]
    assert t["status"] == "ok" and t["kernels"] > 0 and t["rel_err"] < 1e-2
    for key in ("median_ms", "p90_ms", "p99_ms", "throughput_per_s", "build_s", "peak_mem_mb"):
        assert key in t
    assert set(t["speedup"]) == {"torch eager", "torch.compile"}
    # INT8 compares with the FP16 anchors measured just before
    assert by[("mlp_tiny", "int8", "torch eager")]["anchor_precision"] == "fp16"
    assert by[("mlp_tiny", "int8", "torch eager")]["reused_from"] == "fp16 group"
    assert by[("mlp_tiny", "int8", "trident")]["status"] == "ok"
    # one failing row never stops the run
    assert by[("unsupported_tiny", "fp16", "trident")]["status"] == "unsupported"
    assert by[("missing_tiny", "fp16", "trident")]["status"] == "skipped"
    assert by[("bert_tiny", "fp16", "trident")]["status"] == "ok"
    kernels = {k["kind"]: k for k in results["kernels"]}
    assert set(kernels) == {"gemm", "conv", "depthwise", "elementwise", "reduction"}
    assert all(k["status"] == "ok" for k in results["kernels"])
    assert kernels["elementwise"]["roof_pct"] is not None and results["peaks"]["gbps"] > 0
    md = (bench_out / "results.md").read_text()
    assert "| MLP (tiny) | 2 | int8 (anchors fp16) |" in md and "unsupported: UnsupportedError" in md
    for png in ("throughput.png", "roofline.png"):
        assert (bench_out / png).read_bytes()[:4] == b"\x89PNG"


def test_resume_and_budget(bench_out, tmp_path):
    before = json.loads((bench_out / "results.json").read_text())
    assert main(["bench", "--dry-run", "--out", str(bench_out), "--resume"]) == 0
    after = json.loads((bench_out / "results.json").read_text())
    assert after["models"] == before["models"] and after["kernels"] == before["kernels"]
    out = tmp_path / "budget"
    assert main(["bench", "--dry-run", "--out", str(out), "--no-kernels", "--budget-s", "1e-9",
                 "--models", "mlp_tiny"]) == 0
    results = json.loads((out / "results.json").read_text())
    assert results["models"] == [] and len(results["not_run"]) == 3


def test_resume_keeps_the_rows_of_an_unfinished_group(bench_out, tmp_path):
    # A run that ended inside a group (say, during a long max-autotune build) left some of its
    # rows: a resumed run keeps them and measures only the missing runner.
    out = tmp_path / "partial"
    out.mkdir()
    results = json.loads((bench_out / "results.json").read_text())
    key = lambda r: (r["model"], r["batch"], r["precision"], r["runner"])  # noqa: E731
    kept = [dict(r, measured_at="2000-01-01T00:00:00+00:00") for r in results["models"]
            if key(r) != ("mlp_tiny", 2, "fp32", "torch.compile")]
    assert len(kept) == len(results["models"]) - 1
    failed = ("mlp_tiny", 2, "fp16", "trident")  # a row that failed is measured again (after a fix)
    rows = [dict(r, status="error", error="OutOfResources") if key(r) == failed else r for r in kept]
    kept = [r for r in kept if key(r) != failed]
    (out / "results.json").write_text(json.dumps(dict(results, models=rows)))
    assert main(["bench", "--dry-run", "--out", str(out), "--resume", "--no-kernels", "--models", "mlp_tiny"]) == 0
    after = {key(r): r for r in json.loads((out / "results.json").read_text())["models"]}
    for r in kept:
        if r["model"] == "mlp_tiny":
            assert after[key(r)]["measured_at"] == r["measured_at"]  # kept, not measured again
    for again in (after[("mlp_tiny", 2, "fp32", "torch.compile")], after[failed]):
        assert again["status"] == "ok" and again["measured_at"] > "2000-01-01T00:00:00+00:00"
    assert set(after[("mlp_tiny", 2, "fp32", "trident")]["speedup"]) == {"torch eager", "torch.compile"}


def test_compile_modes_pick_the_anchors(tmp_path, capsys):
    out = tmp_path / "modes"
    assert main(["bench", "--dry-run", "--out", str(out), "--no-kernels", "--models", "mlp_tiny",
                 "--precisions", "fp32", "--compile-modes", "default,max-autotune"]) == 0
    rows = json.loads((out / "results.json").read_text())["models"]
    assert {r["runner"] for r in rows} == {"trident", "torch eager", "torch.compile", "torch.compile max-autotune"}
    with pytest.raises(SystemExit):
        main(["bench", "--dry-run", "--out", str(out), "--compile-modes", "max-autotun"])
    assert "unknown torch.compile mode(s) ['max-autotun']" in capsys.readouterr().err


def test_update_readme_rewrites_only_results(bench_out, tmp_path):
    readme = tmp_path / "README.md"
    shutil.copyfile(REPO / "README.md", readme)
    original = readme.read_text()
    assert main(["bench", "--update-readme", str(bench_out), "--readme", str(readme)]) == 0
    text = readme.read_text()
    head, _, rest = original.partition("## Results")
    assert text.startswith(head)  # everything before the section is untouched
    after = rest.split("\n## ", 1)[1] if "\n## " in rest else ""
    assert text.endswith(after)   # and everything after it
    section = text[len(head):]
    assert section.startswith("## Results\n") and "on CPU (Triton interpreter)" in section
    assert "| MLP (tiny) | 2 | fp16 |" in section
    assert "](benchmarks/cpu-triton-interpreter-bench-throughput.png)" in section
    raw = tmp_path / "benchmarks/results/cpu-triton-interpreter-bench.json"
    assert json.loads(raw.read_text()) == json.loads((bench_out / "results.json").read_text())
    details = (tmp_path / "docs/results.md").read_text()
    for png in ("throughput", "roofline"):
        rel = f"benchmarks/cpu-triton-interpreter-bench-{png}.png"
        assert f"](../{rel})" in details and (tmp_path / rel).read_bytes()[:4] == b"\x89PNG"
    assert "### Kernels" in details and "#### All runners" in details
    # idempotent, also from the committed JSON itself: the section is replaced, not added
    assert main(["bench", "--update-readme", str(raw), "--readme", str(readme)]) == 0
    assert readme.read_text() == text


def test_generated_text_says_nothing_of_when_it_was_measured(bench_out):
    from trident.tools.benchmarks import readme, report

    results = json.loads((bench_out / "results.json").read_text())
    day = results["environment"]["date"][:10]
    for text in (readme.results_section(results, None, "raw.json"), report.markdown(results)):
        assert day not in text


def test_conv_summary_line_is_the_geometric_mean_and_the_use_weighted_ratio():
    from trident.tools.benchmarks.report import conv_summary_line

    conv = lambda ms, ref, count: {"kind": "conv", "status": "ok", "ms": ms, "ref_ms": ref,  # noqa: E731
                                   "vs_ref": ref / ms, "count_in_resnet50": count}
    results = {"kernels": [conv(2.0, 1.0, 1), conv(1.0, 2.0, 3), {"kind": "gemm", "status": "ok", "vs_ref": 9.0},
                           {"kind": "conv", "status": "error", "error": "x"}]}
    line = conv_summary_line(results)
    # sqrt(0.5 * 2) = 1; weighted: ours 2 + 3 = 5 ms, cuDNN 1 + 6 = 7 ms
    assert "geometric mean 1.00× over 2 shapes" in line and "5.00 ms against 7.00 ms (1.40×)" in line
    assert conv_summary_line({"kernels": [conv(1.0, 1.0, 1)]}) == ""


def test_summary_of_a_resumed_run_orders_groups_and_names_missing_anchors():
    # Rows as several runs leave them: fp16 measured before fp32, a trident row without the
    # "speedup" its run never got to write, and one anchor that was never measured.
    from trident.tools.benchmarks import readme, report

    def row(precision, runner, ms):
        return dict(model="m", label="M", unit="items", batch=1, precision=precision, runner=runner,
                    status="ok", median_ms=ms, throughput_per_s=1e3 / ms)

    rows = [row("fp16", "trident", 1.0), row("fp16", "torch eager", 3.0),
            row("fp16", "torch.compile max-autotune", 1.5),
            row("fp32", "trident", 2.0), row("fp32", "torch eager", 5.0)]
    results = {"mode": "full", "models": rows}
    table = report.summary_table(results).splitlines()
    assert table[2].startswith("| M | 1 | fp32 | 2.000 ms") and table[2].endswith("| 2.50× | – |")
    assert table[3].startswith("| M | 1 | fp16 |") and table[3].endswith("| 3.00× | 1.50× |")
    assert report.missing_anchors(results) == ["torch.compile max-autotune (fp32)"]
    section = readme.results_section(results, None, "raw.json")
    assert section.startswith("## Results\n") and "`trident bench` on " in section and "mode full" in section
    assert "_Not measured (– above): torch.compile max-autotune (fp32)._" in section


# ------------------------------------------------------------- the other benchmarks ----
BENCHMARKS = ["kernels", "attention", "sweep", "int8", "accuracy", "runtime", "tune", "train-digits"]


def test_every_benchmark_is_a_subcommand_with_help(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["bench", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert all(f"    {name} " in out for name in BENCHMARKS)
    for name in BENCHMARKS:
        with pytest.raises(SystemExit):
            main(["bench", name, "--help"])
        assert "--out" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal without a GPU")
@pytest.mark.parametrize("name", ["kernels", "sweep", "int8", "runtime", "tune"])
def test_gpu_benchmarks_refuse_the_interpreter_in_one_line(name, tmp_path, capsys):
    assert main(["bench", name, "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"trident bench: error: trident bench {name} needs a CUDA GPU (the interpreter's "
                   f"timings mean nothing)")
    assert not list(tmp_path.iterdir())  # nothing written


def test_a_benchmark_writes_gpu_what_json(tmp_path, monkeypatch, capsys):
    from trident.tools.benchmarks import accuracy
    from trident.tools.benchmarks.results import result_name

    fake = {"fp32": 98.7, "int8": {"minmax": 98.5}, "drop": {"minmax": 0.2}}
    monkeypatch.setattr(accuracy, "digits_accuracy", lambda calibrators, engine: fake)
    assert main(["bench", "accuracy", "--reference", "--calibrators", "minmax", "--out", str(tmp_path)]) == 0
    assert "| minmax | 98.70 | 98.50 | +0.20 |" in capsys.readouterr().out
    (path,) = tmp_path.iterdir()
    assert path.name == result_name("int8-accuracy")
    if not torch.cuda.is_available():
        assert path.name == "cpu-triton-interpreter-int8-accuracy.json"
    data = json.loads(path.read_text())
    assert data["int8"] == {"minmax": 98.5} and data["mode"] == "reference executor"
    assert {"gpu", "torch", "triton", "trident"} <= set(data["environment"])


def test_perf_benchmark_table_and_settle():
    from trident.tools.benchmarks import perf

    rows = [{"model": "m", "batch": 2, "runner": "torch.compile", "status": "ok", "median_ms": 2.0},
            {"model": "m", "batch": 2, "runner": "trident (ONNX)", "status": "ok", "median_ms": 1.0, "rel_err": 1e-3},
            {"model": "m", "batch": 2, "runner": "torch eager", "status": "error: X"}]
    perf._add_ratios(rows)
    assert rows[1]["vs_torch_compile"] == 2.0 and "vs_torch_compile" not in rows[2]
    text = perf.table(rows)
    assert "| m | 2 | trident (ONNX) | 1.000 | - | - | 2.00 | 1.0e-03 | ok |" in text
    bn = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)).eval()
    perf.settle(bn, (torch.randn(2, 3, 8, 8) * 5 + 3,))
    assert not bn.training and bn[1].running_mean.abs().sum() > 0


def test_perf_benchmark_gives_zero_initialised_layers_values():
    # torchvision's ViT-B/16 zero-initialises its head: every output, and so every relative error,
    # would be 0 and measure nothing. The benchmark gives such layers values, as the zoo does.
    from trident.tools.benchmarks import perf

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    torch.nn.init.zeros_(model[2].weight)
    torch.nn.init.zeros_(model[2].bias)
    spec = perf.Model("zero head", lambda: model, lambda b: (torch.randn(b, 8),), 2, ("onnx",))
    rows = perf.bench_model(spec, torch.device("cpu"), True, perf._dry_timer)
    assert model[2].weight.abs().sum() > 0
    (onnx_row,) = [r for r in rows if r["runner"] == "trident (ONNX)"]
    assert onnx_row["status"] == "ok" and 0 < onnx_row["rel_err"] < 1e-2  # an fp16 engine


def test_perf_benchmark_times_runners_in_turn():
    # Rounds interleave the runners (a drift during the run moves all of them alike); each row's
    # median is the median of its rounds, its spread their range over it.
    from trident.tools.benchmarks import perf

    ticks = iter(range(1, 100))
    timer = lambda fn: {"median_ms": float(next(ticks))}  # noqa: E731 - the call's order number
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    spec = perf.Model("mlp", lambda: model, lambda b: (torch.randn(b, 8),), 2, ("onnx",))
    rows = perf.bench_model(spec, torch.device("cpu"), True, timer, rounds=3,
                            queued=lambda fn: 0.5)
    by_runner = {r["runner"]: r for r in rows}
    assert [r["status"] for r in rows] == ["ok"] * 3
    assert by_runner["trident (ONNX)"]["round_ms"] == [1.0, 4.0, 7.0]
    assert by_runner["torch eager"]["round_ms"] == [2.0, 5.0, 8.0]
    assert by_runner["torch.compile"]["median_ms"] == 6.0
    assert by_runner["torch.compile"]["spread"] == 6.0 / 6.0
    assert by_runner["trident (ONNX)"]["queued_ms"] == 0.5
    assert by_runner["trident (ONNX)"]["vs_torch_compile"] == 6.0 / 4.0
    assert model[0].weight.dtype == torch.float32  # each runner converts a copy, not the model


def test_perf_benchmark_adds_tuned_runners(monkeypatch):
    # --tune LEVEL builds each trident path a second time with that tuning level, beside the
    # heuristic build (the rows a deployment that tunes would see).
    from trident.compiler import build
    from trident.tools.benchmarks import perf

    levels = []
    real = build.build_engine

    def spy(*args, **kwargs):
        levels.append(kwargs.get("tune"))
        return real(*args, **kwargs)

    monkeypatch.setattr(build, "build_engine", spy)
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU())
    spec = perf.Model("mlp", lambda: model, lambda b: (torch.randn(b, 8),), 2, ("onnx",))
    rows = perf.bench_model(spec, torch.device("cpu"), True, perf._dry_timer, tune="fast")
    assert [r["runner"] for r in rows] == ["trident (ONNX)", "trident (ONNX, tune fast)", "torch eager",
                                           "torch.compile"]
    assert all(r["status"] == "ok" for r in rows) and levels == ["none", "fast"]
