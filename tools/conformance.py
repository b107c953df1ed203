"""`trident conformance`: ONNX's node test cases compiled with build_engine and run by the engine.

The onnx wheel does not ship `onnx/backend/test/data/node`; `collect_testcases()` builds the same
cases (model + input/output data sets) in memory. A case runs when every op it uses is in
`supported_onnx_ops()`. Each data set is compiled with `build_engine` and run by the engine
(generated kernels, torch fallbacks, the memory arena) at each precision, with the bounds sanitizer
on, and every output is compared with the expected data. At a precision a case counts as

- passed:      every output matches (dtype, shape, values within tolerance);
- failed:      wrong numbers, a trident error other than UnsupportedError, a raw exception, an
               out-of-bounds access (the sanitizer), a crash of the process, or a timeout;
- unsupported: an op outside the supported list, or an UnsupportedError (a dtype trident does not
               represent, a data-dependent shape, ...), or a precision the case cannot run at.

A case passes when it passes at every precision it runs at. Cases run in worker processes: a crash
(a segfault, a heap-corruption abort) fails that case only, and the worker is restarted.
The reference executor's verdict on the same cases is reported on a separate line.
"""
from __future__ import annotations

import argparse
import functools
import json
import os
import pickle
import queue
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field

import numpy as np
import onnx
import onnx.numpy_helper
import torch
from tqdm import tqdm

from trident.compiler import config
from trident.compiler.errors import OutOfBoundsError, TridentError, UnsupportedError
from trident.compiler.frontend.onnx import (bind_inputs, constant_fed_inputs, import_onnx,
                                            supported_onnx_ops)
from trident.compiler.reference import run_reference
from trident.compiler.target_check import TARGETS, LaunchRecorder

STATUSES = ("passed", "failed", "unsupported")
PRECISIONS = ("fp32", "fp16")
# Why a case failed: wrong numbers, a trident error or raw exception, the sanitizer, the process.
FAILURES = ("wrong", "error", "out-of-bounds", "crash", "timeout")
FP16_TOLERANCE = (2e-2, 2e-2)   # (rtol, atol): compiler.testing.TOLERANCES["fp16"]
# fp32 cases whose expected data carry another implementation's rounding rather than the op's
# value, with the atol that rounding needs. The inverse DFTs' data come from numpy's complex64
# FFT, which leaves 1.9e-7 where the exact value is 0 (the case's atol is 1e-7; onnxruntime misses
# by 1.9e-5); trident's transform, in float64, gives 0 there.
EXPECTED_DATA_ROUNDING = {"test_dft_inverse": 1e-6, "test_dft_inverse_opset19": 1e-6}
FP16_MAX = 65504.0
CASE_TIMEOUT_S = 600
READY = "ready"   # what a worker sends once it has started

HELP = """\
Compiles ONNX's node conformance cases (onnx.backend.test.case.node.collect_testcases) with
build_engine and runs them through the engine (generated Triton kernels, torch fallbacks, the
memory arena) with the bounds sanitizer on, at fp32 and at fp16 where the case's data allow it,
and compares every output with the expected data: at fp32 with the case's tolerances (rtol=1e-3,
atol=1e-7, as onnx's backend runner; exact for ints and bools); at fp16, on the inputs rounded to
fp16, with the outputs of ONNX's reference implementation for those inputs, within rtol=atol=2e-2
(integer outputs, quantized from values computed at 16 bits, within one step).

Graph inputs that feed a slot trident needs at build time (Reshape's shape, Slice's starts/ends/
axes/steps, Unsqueeze/Squeeze/Reduce* axes, Split's sizes, Clip's min/max, Expand's shape,
Range's start/limit/delta, ConstantOfShape's input, Dropout's ratio/training_mode) become
initializers of the model before it is built, the way a static-shape compiler binds shape
tensors when it builds an engine (TensorRT's shape tensors). All other inputs are fed at run time.

Cases using an op outside the supported list, or raising UnsupportedError (e.g. float64 inputs),
count as unsupported; wrong numbers, any other error, an out-of-bounds access, a crash or a
timeout count as failed. fp16 runs only cases whose float data are float32 and inside fp16's
range. Cases run in -j worker processes, so a crash fails one case and the run goes on.
The reference executor's verdict on the same cases is printed on its own line. The last line is
always 'N passed, M failed, K unsupported' (the engine, over the precisions run). The exit code
is 0 (it is a report) unless --strict is given and some case failed."""


@dataclass
class Outcome:
    """A case at one precision (or through the reference executor)."""
    status: str            # one of STATUSES
    detail: str = ""
    failure: str = ""      # one of FAILURES when status == "failed"


@dataclass
class CaseResult:
    name: str
    op: str
    status: str                     # over the precisions run: failed > passed > unsupported
    detail: str = ""
    failure: str = ""
    precisions: dict[str, dict] = field(default_factory=dict)   # precision -> asdict(Outcome)
    reference: dict = field(default_factory=dict)               # asdict(Outcome)
    seconds: float = 0.0
    launches: list = field(default_factory=list)  # --compile-for: the kernel launches it made


# -------------------------------------------------------------------------- collection ----
@functools.cache
def _all_cases() -> tuple:
    from onnx.backend.test.case import node

    # Building the cases runs onnx's numpy references, some of which overflow on purpose.
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return tuple(node.collect_testcases(None))


def collect_cases(pattern: str | None = None) -> list:
    return [c for c in _all_cases() if pattern is None or pattern in c.name]


@functools.cache
def _op_names() -> dict[str, str]:
    """'reducesum' -> 'ReduceSum', for every op of the default ONNX domain."""
    import onnx.defs

    return {s.name.lower(): s.name for s in onnx.defs.get_all_schemas() if s.domain == ""}


def case_op(case) -> str:
    """The op a case is counted under in the per-op table.

    The op named by the test (the longest op name its name starts with) when the model uses
    it; otherwise the first op trident does not support (test_constant_pad is about Pad);
    otherwise the named op (an '_expanded' case is that op's function body), else the first
    node's op.
    """
    key = case.name.removeprefix("test_").replace("_", "").lower()
    named = max((name for low, name in _op_names().items() if key.startswith(low)),
                key=len, default=None)
    used = [n.op_type for n in case.model.graph.node]
    if named in used:
        return named
    supported = set(supported_onnx_ops())
    missing = [op for op in used if op not in supported]
    return (missing[0] if missing else named) or (used[0] if used else "?")


def unsupported_ops(case) -> list[str]:
    supported = set(supported_onnx_ops())
    return sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                   for n in case.model.graph.node} - supported)


# ------------------------------------------------------------------------- data helpers ----
def _to_numpy(array) -> np.ndarray:
    if isinstance(array, onnx.TensorProto):  # cases of types numpy lacks store TensorProtos
        array = onnx.numpy_helper.to_array(array)
    return np.asarray(array)


def _to_torch(array) -> torch.Tensor:
    array = _to_numpy(array)
    if array.dtype.name == "bfloat16":  # ml_dtypes' bfloat16: reinterpret the 16-bit payload
        return torch.from_numpy(array.view(np.int16).copy()).view(torch.bfloat16)
    return torch.from_numpy(np.array(array, copy=True))


def _tolerances(dtype: torch.dtype, rtol: float, atol: float) -> tuple[float, float]:
    """A case's tolerances, never tighter than one rounding of a float dtype coarser than them:
    bfloat16 keeps 8 bits, so rtol=1e-3 asks for less than its rounding step, and expected data
    computed with other intermediate roundings (onnx's Attention reference rounds every step to
    bfloat16) differs from a correctly rounded result by one step."""
    half_step = torch.finfo(dtype).eps / 2
    if half_step > rtol:
        return half_step, max(atol, half_step)
    return rtol, atol


def _compare(got: torch.Tensor, want, rtol: float, atol: float, integer_atol: int = 0) -> str | None:
    """None when `got` matches the expected array, else what differs. integer_atol: how far an
    integer output may be from the expected one (a quantized value rounded from a float computed at
    16 bits can land one step away)."""
    if not isinstance(want, (np.ndarray, np.generic, onnx.TensorProto)):
        return f"expected a {type(want).__name__}, which trident does not produce"
    expected = _to_torch(want)
    got = got.detach().cpu()
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.is_floating_point:
        if got.dtype in (torch.float16, torch.bfloat16):
            # The expected data of 16-bit cases comes from numpy's 16-bit arithmetic (products
            # accumulated in the 16-bit type); rtol 1e-3 is finer than bfloat16 resolves: agree
            # within two units in the last place, as any other summation order does.
            eps = torch.finfo(got.dtype).eps
            rtol, atol = max(rtol, 2 * eps), max(atol, eps)
        a, b = got.double().numpy(), expected.double().numpy()
        rtol, atol = _tolerances(got.dtype, rtol, atol)
        close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            bad = ~close
            return (f"{int(bad.sum())} of {close.size} values differ; max |diff| "
                    f"{float(np.nanmax(np.abs(a - b)[bad])):.3g}")
        return None
    if got.dtype == torch.bool or integer_atol == 0:
        differ = got != expected
    else:
        differ = (got.long() - expected.long()).abs() > integer_atol
    if differ.any():
        return f"{int(differ.sum())} of {got.numel()} values differ"
    return None


def _split_inputs(case, inputs) -> tuple[dict[str, np.ndarray], list[str], list]:
    """(constants to bind at build time, names fed at run time, their arrays)."""
    model = case.model
    initialized = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initialized]
    bound = constant_fed_inputs(model)
    constants = {n: _to_numpy(a) for n, a in zip(names, inputs) if n in bound}
    fed = [(n, a) for n, a in zip(names, inputs) if n not in bound]
    return constants, [n for n, _ in fed], [a for _, a in fed]


# ------------------------------------------------------------------------------ running ----
def fp16_applies(case) -> str | None:
    """None when the case can run at fp16, else why not: its float data must be float32 (an
    fp16 engine keeps float32 I/O and computes in fp16) and inside fp16's finite range."""
    arrays = [_to_numpy(a) for inputs, outputs in case.data_sets for a in list(inputs) + list(outputs)
              if isinstance(a, (np.ndarray, np.generic, onnx.TensorProto))]
    floats = [a for a in arrays if a.dtype.kind == "f"]
    if not floats:
        return "no float data"
    if any(a.dtype != np.float32 for a in floats):
        return "float data other than float32"
    if any(np.abs(a[np.isfinite(a)]).max(initial=0) > FP16_MAX for a in floats):
        return "values outside fp16's range"
    return None


def _classify(error: BaseException) -> Outcome:
    if isinstance(error, OutOfBoundsError):
        return Outcome("failed", f"{type(error).__name__}: {error}", "out-of-bounds")
    if isinstance(error, UnsupportedError):
        return Outcome("unsupported", str(error))
    if isinstance(error, TridentError):
        return Outcome("failed", f"{type(error).__name__}: {error}", "error")
    return Outcome("failed", f"raw {type(error).__name__}: {error}", "error")


def _fp16_inputs(model, names: list[str], fed: list) -> tuple[list, list]:
    """The run-time inputs rounded to fp16 (what an fp16 engine computes with), and the outputs
    ONNX's reference implementation gives for them: the case's expected outputs belong to the
    unrounded inputs, which fp16 cannot hold (softmax of [10000, 10001, ...] loses the 1s)."""
    from onnx.reference import ReferenceEvaluator

    rounded = [a.astype(np.float16).astype(np.float32) if a.dtype == np.float32 else a
               for a in map(_to_numpy, fed)]
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        return rounded, ReferenceEvaluator(model).run(None, dict(zip(names, rounded)))


def _engine_data_set(case, inputs, outputs, precision: str) -> Outcome | None:
    from trident.compiler.build import build_engine

    constants, names, fed = _split_inputs(case, inputs)
    model = bind_inputs(case.model, constants)
    if precision == "fp16":
        try:
            fed, outputs = _fp16_inputs(model, names, fed)
        except Exception as e:  # onnx's reference itself cannot run it
            return Outcome("unsupported", f"ONNX's reference on fp16-rounded inputs: {type(e).__name__}: {e}")
    try:
        engine = build_engine(model, precision=precision)
        got = engine(*[_to_torch(a).to(engine.device) for a in fed])
    except Exception as e:  # a raw exception escaping trident is a bug: classified as failed
        return _classify(e)
    if len(got) != len(outputs):
        return Outcome("failed", f"{len(got)} outputs, expected {len(outputs)}", "wrong")
    rtol, atol = (case.rtol, case.atol) if precision == "fp32" else FP16_TOLERANCE
    if precision == "fp32":
        atol = max(atol, EXPECTED_DATA_ROUNDING.get(case.name, 0.0))
    for k, (g, w) in enumerate(zip(got, outputs)):
        problem = _compare(g, w, rtol, atol, integer_atol=0 if precision == "fp32" else 1)
        if problem:
            return Outcome("failed", f"output {k} ('{engine.outputs[k]}'): {problem}", "wrong")
    return None


def _reference_data_set(case, inputs, outputs) -> Outcome | None:
    constants, _, fed = _split_inputs(case, inputs)
    try:
        graph = import_onnx(case.model, constant_inputs={n: _to_torch(a) for n, a in constants.items()})
        got = run_reference(graph, [_to_torch(a) for a in fed])
    except Exception as e:
        return _classify(e)
    if len(got) != len(outputs):
        return Outcome("failed", f"{len(got)} outputs, expected {len(outputs)}", "wrong")
    for k, (g, w) in enumerate(zip(got, outputs)):
        problem = _compare(g, w, case.rtol, max(case.atol, EXPECTED_DATA_ROUNDING.get(case.name, 0.0)))
        if problem:
            return Outcome("failed", f"output {k} ('{graph.outputs[k]}'): {problem}", "wrong")
    return None


def _run_data_sets(case, check) -> Outcome:
    for inputs, outputs in case.data_sets:
        outcome = check(inputs, outputs)
        if outcome is not None:
            return outcome
    return Outcome("passed")


def _engine_outcome(case, precision: str) -> Outcome:
    from trident.compiler import sanitizer

    if precision == "fp16":
        why = fp16_applies(case)
        if why is not None:
            return Outcome("unsupported", f"fp16: {why}")
    seen = len(sanitizer.findings())
    outcome = _run_data_sets(case, lambda i, o: _engine_data_set(case, i, o, precision))
    found = sanitizer.findings()[seen:]
    if found and outcome.failure != "out-of-bounds":  # an access something caught and swallowed
        return Outcome("failed", f"OutOfBoundsError: {found[0]}", "out-of-bounds")
    return outcome


def run_case(case, precisions=PRECISIONS, reference: bool = True, record: bool = False) -> CaseResult:
    """One case through the engine at each precision (and the reference executor), in-process;
    record: keep the kernel launches the engines made (conformance_compile.py)."""
    if not record:
        return _run_case(case, precisions, reference)
    with LaunchRecorder().active() as recorder:
        result = _run_case(case, precisions, reference)
    result.launches = [asdict(launch) for launch in recorder.launches]
    return result


def _run_case(case, precisions, reference: bool) -> CaseResult:
    start = time.perf_counter()
    op = case_op(case)
    unknown = unsupported_ops(case)
    if unknown:
        outcome = Outcome("unsupported", f"ops not supported: {', '.join(unknown)}")
        return CaseResult(case.name, op, outcome.status, outcome.detail,
                          precisions={p: asdict(outcome) for p in precisions},
                          reference=asdict(outcome) if reference else {})
    outcomes = {p: _engine_outcome(case, p) for p in precisions}
    result = _combine(case.name, op, outcomes)
    if reference:
        result.reference = asdict(_run_data_sets(case, lambda i, o: _reference_data_set(case, i, o)))
    result.seconds = round(time.perf_counter() - start, 3)
    return result


def _combine(name: str, op: str, outcomes: dict[str, Outcome]) -> CaseResult:
    """The case's status: failed at any precision, else passed at any, else unsupported."""
    ranked = sorted(outcomes.items(), key=lambda kv: ("failed", "passed", "unsupported").index(kv[1].status))
    precision, first = ranked[0]
    detail = f"{precision}: {first.detail}" if first.detail else ""
    return CaseResult(name, op, first.status, detail, first.failure,
                      {p: asdict(o) for p, o in outcomes.items()})


# ------------------------------------------------------------------ isolated workers ----
def _worker(precisions: tuple[str, ...], reference: bool, record: bool = False) -> int:
    """`python -m trident.tools.conformance --worker`: run the cases pickled to stdin, pickling
    one result per case to stdout. Anything else written to stdout goes to stderr instead."""
    results = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    pickle.dump(READY, results)  # imports done: the parent's per-case timeout starts now
    results.flush()
    while True:
        try:
            case = pickle.load(sys.stdin.buffer)
        except EOFError:
            return 0
        pickle.dump(asdict(run_case(case, precisions, reference, record)), results)
        results.flush()


def worker_command(precisions=PRECISIONS, reference: bool = True, record: bool = False) -> list[str]:
    return [sys.executable, "-m", "trident.tools.conformance", "--worker",
            "--precision", ",".join(precisions)] + ([] if reference else ["--no-reference"]) + \
        (["--record-launches"] if record else [])


class _Slot:
    """One worker process, restarted after a crash or a timeout."""

    def __init__(self, command: list[str]):
        self.args = command
        self.proc = None
        self.log = None

    def _start(self) -> None:
        env = dict(os.environ, TRIDENT_SANITIZE="1", TRIDENT_QUIET="1", PYTHONUNBUFFERED="1")
        self.log = tempfile.TemporaryFile()
        self.proc = subprocess.Popen(self.args, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     stderr=self.log, env=env)
        try:
            ready = pickle.load(self.proc.stdout)
        except (EOFError, pickle.UnpicklingError):
            ready = None
        if ready != READY:
            self.log.seek(0)
            raise RuntimeError(f"a conformance worker did not start ({' '.join(self.args)}):\n"
                               f"{self.log.read().decode(errors='replace')[-2000:]}")

    def run(self, case, timeout: float) -> CaseResult:
        if self.proc is None:
            self._start()
        start = time.perf_counter()
        timed_out = threading.Event()
        timer = threading.Timer(timeout, lambda: (timed_out.set(), self.proc.kill()))
        timer.start()
        try:
            pickle.dump(case, self.proc.stdin)
            self.proc.stdin.flush()
            return CaseResult(**pickle.load(self.proc.stdout))
        except (EOFError, BrokenPipeError, pickle.UnpicklingError):
            return self._died(case, timeout if timed_out.is_set() else None, time.perf_counter() - start)
        finally:
            timer.cancel()

    def _died(self, case, timeout: float | None, seconds: float) -> CaseResult:
        code = self.proc.wait()
        self.log.seek(0)
        tail = [s for s in self.log.read().decode(errors="replace").splitlines() if s.strip()][-1:]
        self.log.close()
        self.proc = None
        if timeout is not None:
            failure, detail = "timeout", f"no result after {timeout:.0f} s (worker killed)"
        else:
            name = signal.Signals(-code).name if code < 0 and -code in signal.valid_signals() else f"exit {code}"
            failure, detail = "crash", f"worker died ({name})" + (f": {tail[0][:200]}" if tail else "")
        return CaseResult(case.name, case_op(case), "failed", detail, failure,
                          reference={}, seconds=round(seconds, 3))

    def close(self) -> None:
        if self.proc is not None:
            self.proc.stdin.close()
            self.proc.wait()
            self.log.close()


def run_isolated(cases, command: list[str], jobs: int = 2, timeout: float = CASE_TIMEOUT_S,
                 progress: bool = False) -> list[CaseResult]:
    """Run the cases in `jobs` worker processes started with `command` (worker_command()): a
    crash or a timeout fails one case, and its worker is restarted."""
    todo: queue.Queue = queue.Queue()
    for case in cases:
        todo.put(case)
    results: dict[str, CaseResult] = {}
    errors: list[BaseException] = []  # a worker that cannot start stops the run
    bar = tqdm(total=len(cases), disable=None if progress else True, unit="case", file=sys.stderr)

    def drain() -> None:
        slot = _Slot(command)
        try:
            while True:
                try:
                    case = todo.get_nowait()
                except queue.Empty:
                    return
                results[case.name] = slot.run(case, timeout)
                bar.update()
        except BaseException as e:
            errors.append(e)
        finally:
            slot.close()

    threads = [threading.Thread(target=drain) for _ in range(max(1, jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    bar.close()
    if errors:
        raise errors[0]
    return [results[c.name] for c in cases]


def run_suite(pattern: str | None = None, precisions=PRECISIONS, jobs: int = 2,
              reference: bool = True, timeout: float = CASE_TIMEOUT_S,
              progress: bool = False, record: bool = False) -> list[CaseResult]:
    """Every case (or those whose name contains `pattern`); jobs=0 runs them in this process
    (no crash isolation), else in that many worker processes. record: each result keeps the
    kernel launches its engines made."""
    cases = collect_cases(pattern)
    if jobs == 0:
        from trident.compiler import sanitizer

        with sanitizer.active():
            return [run_case(c, precisions, reference, record) for c in cases]
    runnable = [c for c in cases if not unsupported_ops(c)]
    command = worker_command(precisions, reference, record)
    isolated = {r.name: r for r in run_isolated(runnable, command, jobs, timeout, progress)}
    return [isolated.get(c.name) or run_case(c, precisions, reference) for c in cases]


# ----------------------------------------------------------------------------- reports ----
def counts(results: list[CaseResult], precision: str | None = None) -> Counter:
    """Statuses of the cases (over all precisions), or at one precision."""
    if precision is None:
        return Counter(r.status for r in results)
    return Counter(r.precisions.get(precision, {}).get("status", r.status) for r in results)


def failures(results: list[CaseResult]) -> Counter:
    return Counter(r.failure for r in results if r.status == "failed")


def summary_line(results: list[CaseResult], precision: str | None = None) -> str:
    c = counts(results, precision)
    return f"{c['passed']} passed, {c['failed']} failed, {c['unsupported']} unsupported"


def reference_line(results: list[CaseResult]) -> str | None:
    statuses = Counter(r.reference.get("status") for r in results if r.reference)
    if not statuses:
        return None
    return (f"reference executor: {statuses['passed']} passed, {statuses['failed']} failed, "
            f"{statuses['unsupported']} unsupported")


def per_op(results: list[CaseResult]) -> dict[str, Counter]:
    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        table[r.op][r.status] += 1
    return table


def _print_report(results: list[CaseResult], precisions, verbosity: int) -> None:
    supported = set(supported_onnx_ops())
    if verbosity >= 2:  # why cases made of supported ops still count as unsupported
        for r in results:
            if r.status == "unsupported" and not r.detail.startswith("ops not supported"):
                print(f"unsupported {r.name}: {r.detail.splitlines()[0][:200]}")
    if verbosity >= 1:
        table = per_op(results)
        width = max([len(op) for op in table if op in supported] + [2])
        print(f"{'op':<{width}}  passed  failed  unsupported")
        for op in sorted(op for op in table if op in supported):
            c = table[op]
            print(f"{op:<{width}}  {c['passed']:>6}  {c['failed']:>6}  {c['unsupported']:>11}")
        others = {op: c for op, c in table.items() if op not in supported}
        if others:
            print(f"(+ {sum(sum(c.values()) for c in others.values())} cases of "
                  f"{len(others)} ops trident does not support)")
    by_op: dict[str, list[CaseResult]] = defaultdict(list)
    for r in results:
        if r.status == "failed":
            by_op[r.op].append(r)
    for op in sorted(by_op):
        print(f"FAILED {op} ({len(by_op[op])}):")
        for r in by_op[op]:
            print(f"  {r.name} [{r.failure}] {r.detail.splitlines()[0][:300] if r.detail else ''}")
    reference = reference_line(results)
    if reference:
        print(reference)
    for p in precisions:
        print(f"engine {p}: {summary_line(results, p)}")
    f = failures(results)
    print(f"{f['crash']} crashed, {f['out-of-bounds']} out of bounds, {f['timeout']} timed out")


def report(results: list[CaseResult], precisions, seconds: float) -> dict:
    """The JSON report."""
    return {"summary": dict(counts(results)),
            "per_precision": {p: dict(counts(results, p)) for p in precisions},
            "failures": dict(failures(results)),
            "reference": dict(Counter(r.reference.get("status") for r in results if r.reference)),
            "per_op": {op: dict(c) for op, c in sorted(per_op(results).items())},
            "cases": [{k: v for k, v in asdict(r).items() if k != "launches"} for r in results],
            "seconds": round(seconds, 2)}


def _precisions(text: str) -> tuple[str, ...]:
    chosen = tuple(p.strip() for p in text.split(",") if p.strip())
    bad = [p for p in chosen if p not in PRECISIONS]
    if bad or not chosen:
        raise argparse.ArgumentTypeError(f"--precision {text!r}: choose from {', '.join(PRECISIONS)}")
    return chosen


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    results = run_suite(args.k, args.precision, args.jobs, not args.no_reference, args.timeout,
                        progress=not config.QUIET, record=bool(args.compile_for))
    if args.compile_for:
        from trident.tools.conformance_compile import compile_check

        print(compile_check(results, args.compile_for, max(1, args.jobs)))
    _print_report(results, args.precision, args.verbose)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(report(results, args.precision, time.perf_counter() - start), f, indent=1)
    print(summary_line(results))
    return 1 if args.strict and counts(results)["failed"] else 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "conformance", help="run ONNX's node conformance cases through the engine",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", metavar="SUBSTRING", default=None,
                        help="only cases whose name contains SUBSTRING")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="per-op passed/failed/unsupported counts; -vv also says why each "
                             "case made of supported ops is unsupported")
    parser.add_argument("--precision", type=_precisions, default=PRECISIONS, metavar="LIST",
                        help="comma-separated precisions to build engines at (default fp32,fp16)")
    parser.add_argument("-j", "--jobs", type=int, default=max(1, os.cpu_count() or 1), metavar="N",
                        help="worker processes (default: one per CPU); 0 runs the cases in this "
                             "process, without crash isolation")
    parser.add_argument("--timeout", type=float, default=CASE_TIMEOUT_S, metavar="S",
                        help=f"seconds one case may take before its worker is killed "
                             f"(default {CASE_TIMEOUT_S})")
    parser.add_argument("--no-reference", action="store_true",
                        help="skip the reference executor's line")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any case failed")
    parser.add_argument("--compile-for", metavar="ARCH", choices=sorted(TARGETS),
                        help="also compile every kernel the cases ran for this GPU (Triton's "
                             "compiler on the CPU): a case whose kernel it refuses fails")
    parser.set_defaults(func=main)


if __name__ == "__main__":  # the worker processes of run_isolated
    _parser = argparse.ArgumentParser()
    _parser.add_argument("--worker", action="store_true", required=True)
    _parser.add_argument("--precision", type=_precisions, default=PRECISIONS)
    _parser.add_argument("--no-reference", action="store_true")
    _parser.add_argument("--record-launches", action="store_true")
    _args = _parser.parse_args()
    sys.exit(_worker(_args.precision, not _args.no_reference, _args.record_launches))
