"""ONNX's node conformance cases through build_engine and the engine (generated kernels, torch
fallbacks, the arena), with the bounds sanitizer on, in worker processes: the same run as
`trident conformance`. The whole suite runs here (about 1.5 minutes of CPU in 2 workers): 0 failed,
0 crashed, 0 out of bounds; and every kernel it launched compiles for sm_90 (about 3,600 launches,
about 2.5 more minutes)."""
import argparse
import json
import sys
import textwrap

import pytest
from onnx import TensorProto as T
from onnx import helper as h
from onnx.backend.test.case.test_case import TestCase

from trident.compiler import config
from trident.compiler.frontend.onnx import constant_fed_inputs
from trident.tools import conformance

# Through the engine, 1,425 cases pass at fp32 (as many as through the reference executor) and
# 1,152 at fp16; the margin absorbs a few cases moving to 'unsupported' with a new onnx, not a
# broken kernel.
MIN_PASSED = 1400
JOBS = 2  # worker processes (CI has two cores)


def test_the_whole_suite_through_the_engine():
    """One test (not a module fixture shared by several): pytest-xdist would run a shared fixture
    once per worker process that gets one of its tests."""
    results = conformance.run_suite(jobs=JOBS, record=config.INTERPRET)
    if config.INTERPRET:  # every kernel the interpreter ran also compiles for the H100/H200
        from trident.tools.conformance_compile import compile_check

        compiled = compile_check(results, "sm_90", JOBS)  # a case with a refused kernel fails
        assert " 0 kernel launches" not in compiled, compiled
    failed = [f"{r.name} [{r.failure}]: {r.detail}" for r in results if r.status == "failed"]
    assert not failed, "\n".join(failed)  # no wrong numbers, errors, crashes, out-of-bounds
    assert conformance.counts(results)["passed"] >= MIN_PASSED, conformance.summary_line(results)
    assert conformance.counts(results, "fp32")["passed"] >= MIN_PASSED
    assert conformance.counts(results, "fp16")["passed"] >= 0.8 * MIN_PASSED
    reference = [f"{r.name}: {r.reference['detail']}" for r in results
                 if r.reference.get("status") == "failed"]
    assert not reference, "\n".join(reference)
    assert len(results) == len(conformance.collect_cases())
    assert {r.status for r in results} <= set(conformance.STATUSES)
    ran = [r for r in results if not r.detail.startswith("ops not supported")]
    assert all(set(r.precisions) == {"fp32", "fp16"} for r in ran)


def test_command_prints_the_engine_lines_and_the_summary_line_last(capsys, tmp_path):
    parser = argparse.ArgumentParser()
    conformance.register(parser.add_subparsers())
    report = tmp_path / "report.json"
    args = parser.parse_args(["conformance", "-k", "test_relu", "-v", "-j", "0", "--json", str(report),
                              "--strict"])
    assert args.func(args) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-1] == "2 passed, 0 failed, 0 unsupported"
    assert "engine fp32: 2 passed, 0 failed, 0 unsupported" in lines
    assert "engine fp16: 2 passed, 0 failed, 0 unsupported" in lines
    assert "reference executor: 2 passed, 0 failed, 0 unsupported" in lines
    assert "0 crashed, 0 out of bounds, 0 timed out" in lines
    assert any(line.startswith("Relu ") for line in lines)  # the per-op table
    data = json.loads(report.read_text())
    assert data["summary"] == {"passed": 2} and data["per_precision"]["fp16"] == {"passed": 2}
    assert {c["name"] for c in data["cases"]} == {"test_relu", "test_relu_expanded_ver18"}


@pytest.mark.skipif(not config.INTERPRET, reason="records the interpreter's launches")
def test_compile_for_sm90_compiles_the_kernels_the_cases_ran(monkeypatch):
    from trident.compiler.target_check import Failure
    from trident.tools import conformance_compile

    results = conformance.run_suite("test_relu", jobs=JOBS, record=True)
    assert all(r.launches for r in results)  # each case's engines launched kernels
    assert conformance_compile.compile_check(results, "sm_90", JOBS).endswith(
        "refused: 0 kernels, failing 0 cases")
    # A refused kernel fails every case that ran it, with the compiler's first line.
    refused = results[0].launches[0]
    monkeypatch.setattr(conformance_compile, "compile_for_target", lambda launches, target: [
        Failure(refused["path"], refused["function"], "CompilationError: at 3:4:\nmore")
        for x in launches if x.path == refused["path"]])
    line = conformance_compile.compile_check(results, "sm_90", JOBS)
    users = [r for r in results if any(d["path"] == refused["path"] for d in r.launches)]
    assert line.endswith(f"refused: 1 kernels, failing {len(users)} cases")
    assert all(r.status == "failed" and r.failure == "compile" and
               r.detail.endswith("sm_90: CompilationError: at 3:4:") for r in users)


def test_constant_slots_become_initializers():
    # Reshape's shape is a graph input in ONNX's case; the runner binds it before the build
    (case,) = conformance.collect_cases("test_reshape_negative_dim")
    assert constant_fed_inputs(case.model) == {"shape"}
    result = conformance.run_case(case)
    assert result.status == "passed" and result.precisions["fp32"]["status"] == "passed"


def test_fp16_runs_only_float32_cases_inside_fp16_range():
    by_name = {c.name: c for c in conformance.collect_cases("test_")}
    assert conformance.fp16_applies(by_name["test_relu"]) is None
    assert "float" in conformance.fp16_applies(by_name["test_cast_DOUBLE_to_FLOAT"])
    assert conformance.fp16_applies(by_name["test_range_int32_type_negative_delta"]) == "no float data"


# ------------------------------------------------------------------- crash isolation ----
FAKE_WORKER = textwrap.dedent("""
    import os, pickle, sys, time
    import onnx.backend.test.case.test_case  # noqa: F401  (what unpickling a case needs)
    out = os.fdopen(os.dup(1), "wb")
    pickle.dump("ready", out)
    out.flush()
    while True:
        try:
            case = pickle.load(sys.stdin.buffer)
        except EOFError:
            break
        if case.name == "test_abort":
            os.abort()
        if case.name == "test_hang":
            time.sleep(600)
        pickle.dump({"name": case.name, "op": "Relu", "status": "passed"}, out)
        out.flush()
""")


def fake_case(name: str) -> TestCase:
    model = h.make_model(h.make_graph([h.make_node("Relu", ["x"], ["y"])], "g",
                                      [h.make_tensor_value_info("x", T.FLOAT, [1])],
                                      [h.make_tensor_value_info("y", T.FLOAT, [1])]))
    return TestCase(name, name, None, None, model, [], "node", 1e-3, 1e-7)


def test_a_crashing_or_hanging_case_fails_alone_and_the_run_goes_on():
    cases = [fake_case(n) for n in ("test_a", "test_abort", "test_b", "test_hang", "test_c")]
    results = conformance.run_isolated(cases, [sys.executable, "-c", FAKE_WORKER], jobs=1, timeout=2)
    status = {r.name: (r.status, r.failure) for r in results}
    assert status == {"test_a": ("passed", ""), "test_abort": ("failed", "crash"),
                      "test_b": ("passed", ""), "test_hang": ("failed", "timeout"),
                      "test_c": ("passed", "")}
    abort = next(r for r in results if r.name == "test_abort")
    assert "SIGABRT" in abort.detail and abort.op == "Relu"


def test_a_worker_that_cannot_start_stops_the_run_with_its_output():
    command = [sys.executable, "-c", "import sys; print('no trident here', file=sys.stderr); sys.exit(3)"]
    with pytest.raises(RuntimeError, match="did not start(.|\n)*no trident here"):
        conformance.run_isolated([fake_case("test_a")], command, jobs=1, timeout=5)
