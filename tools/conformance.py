"""`trident conformance`: ONNX's node test cases through the frontend and the reference executor.

The onnx wheel does not ship `onnx/backend/test/data/node`; `collect_testcases()` builds the same
cases (model + input/output data sets) in memory. A case runs when every op it uses is in
`supported_onnx_ops()`; it then counts as

- passed:      the reference executor reproduces every output (dtype, shape, values within the
               case's rtol/atol, which are onnx's backend-runner defaults rtol=1e-3, atol=1e-7);
- failed:      wrong numbers, or a trident error other than UnsupportedError (or a raw
               exception: a bug) on a model made of supported ops;
- unsupported: a case using an op outside the supported list, or an UnsupportedError (a dtype
               trident does not represent, a data-dependent shape, ...).
"""
from __future__ import annotations

import argparse
import functools
import json
import time
import warnings
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass

import numpy as np
import onnx
import onnx.numpy_helper
import torch

from trident.compiler.errors import TridentError, UnsupportedError
from trident.compiler.frontend.onnx import (MAX_OPSET, constant_input_slots, import_onnx,
                                            supported_onnx_ops)
from trident.compiler.reference import run_reference

STATUSES = ("passed", "failed", "unsupported")

HELP = """\
Runs ONNX's node conformance cases (onnx.backend.test.case.node.collect_testcases) through the
ONNX frontend and the reference executor, and compares every output with the expected data
(the case's tolerances: rtol=1e-3, atol=1e-7, as onnx's backend runner; exact for ints/bools).

Graph inputs that feed a slot trident needs at build time (Reshape's shape, Slice's starts/ends/
axes/steps, Unsqueeze/Squeeze/Reduce* axes, Split's sizes, Clip's min/max, Expand's shape,
Range's start/limit/delta, ConstantOfShape's input, Dropout's ratio/training_mode) are bound as
constants through import_onnx(constant_inputs=...), the way a static-shape compiler binds shape
tensors when it builds an engine (TensorRT's shape tensors). All other inputs are fed at run time.

Cases using an op outside the supported list, or raising UnsupportedError (e.g. float64 inputs),
count as unsupported; wrong numbers or any other error count as failed. The last line is always
'N passed, M failed, K unsupported'. The exit code is 0 (it is a report) unless --strict is given
and some case failed."""


@dataclass
class CaseResult:
    name: str
    op: str
    status: str   # one of STATUSES
    detail: str = ""


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


# ------------------------------------------------------------------------------ running ----
def _opset(model) -> int:
    versions = [o.version for o in model.opset_import if o.domain in ("", "ai.onnx")]
    return max(versions) if versions else MAX_OPSET


def _constant_fed_inputs(model) -> set[str]:
    """Graph inputs that feed a slot the frontend needs as a constant (shape, axes, ...)."""
    opset, names = _opset(model), set()
    for node in model.graph.node:
        for slot in constant_input_slots(node.op_type, opset):
            if slot < len(node.input) and node.input[slot]:
                names.add(node.input[slot])
    return names


def _to_torch(array) -> torch.Tensor:
    if isinstance(array, onnx.TensorProto):  # cases of types numpy lacks store TensorProtos
        array = onnx.numpy_helper.to_array(array)
    array = np.asarray(array)
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


def _compare(got: torch.Tensor, want, rtol: float, atol: float) -> str | None:
    """None when `got` matches the expected array, else what differs."""
    if not isinstance(want, (np.ndarray, np.generic, onnx.TensorProto)):
        return f"expected a {type(want).__name__}, which trident does not produce"
    expected = _to_torch(want)
    if got.dtype != expected.dtype:
        return f"dtype {got.dtype}, expected {expected.dtype}"
    if tuple(got.shape) != tuple(expected.shape):
        return f"shape {tuple(got.shape)}, expected {tuple(expected.shape)}"
    if got.dtype.is_floating_point:
        a, b = got.double().numpy(), expected.double().numpy()
        rtol, atol = _tolerances(got.dtype, rtol, atol)
        close = np.isclose(a, b, rtol=rtol, atol=atol, equal_nan=True)
        if not close.all():
            bad = ~close
            return (f"{int(bad.sum())} of {close.size} values differ; max |diff| "
                    f"{float(np.nanmax(np.abs(a - b)[bad])):.3g}")
        return None
    if not torch.equal(got, expected):
        return f"{int((got != expected).sum())} of {got.numel()} values differ"
    return None


def run_case(case) -> CaseResult:
    op = case_op(case)
    supported = set(supported_onnx_ops())
    unknown = sorted({n.op_type if n.domain in ("", "ai.onnx") else f"{n.domain}.{n.op_type}"
                      for n in case.model.graph.node} - supported)
    if unknown:
        return CaseResult(case.name, op, "unsupported", f"ops not supported: {', '.join(unknown)}")
    for inputs, outputs in case.data_sets:
        problem = _run_data_set(case, inputs, outputs)
        if problem is not None:
            return CaseResult(case.name, op, *problem)
    return CaseResult(case.name, op, "passed")


def _run_data_set(case, inputs, outputs) -> tuple[str, str] | None:
    model = case.model
    initialized = {t.name for t in model.graph.initializer}
    names = [v.name for v in model.graph.input if v.name not in initialized]
    bound = _constant_fed_inputs(model)
    try:
        constants = {n: _to_torch(a) for n, a in zip(names, inputs) if n in bound}
        graph = import_onnx(model, constant_inputs=constants)
        feeds = [_to_torch(a) for n, a in zip(names, inputs) if n not in bound]
        got = run_reference(graph, feeds)
    except UnsupportedError as e:
        return "unsupported", str(e)
    except TridentError as e:
        return "failed", f"{type(e).__name__}: {e}"
    except Exception as e:  # a raw exception escaping trident is a bug
        return "failed", f"raw {type(e).__name__}: {e}"
    if len(got) != len(outputs):
        return "failed", f"{len(got)} outputs, expected {len(outputs)}"
    for k, (g, w) in enumerate(zip(got, outputs)):
        problem = _compare(g, w, case.rtol, case.atol)
        if problem:
            return "failed", f"output {k} ('{graph.outputs[k]}'): {problem}"
    return None


def run_suite(pattern: str | None = None) -> list[CaseResult]:
    return [run_case(case) for case in collect_cases(pattern)]


# ----------------------------------------------------------------------------- reports ----
def counts(results: list[CaseResult]) -> Counter:
    return Counter(r.status for r in results)


def summary_line(results: list[CaseResult]) -> str:
    c = counts(results)
    return f"{c['passed']} passed, {c['failed']} failed, {c['unsupported']} unsupported"


def per_op(results: list[CaseResult]) -> dict[str, Counter]:
    table: dict[str, Counter] = defaultdict(Counter)
    for r in results:
        table[r.op][r.status] += 1
    return table


def _print_report(results: list[CaseResult], verbosity: int) -> None:
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
    for r in results:
        if r.status == "failed":
            print(f"FAILED {r.name}: {r.detail.splitlines()[0][:300]}")


def main(args: argparse.Namespace) -> int:
    start = time.perf_counter()
    results = run_suite(args.k)
    _print_report(results, args.verbose)
    if args.json:
        report = {"summary": dict(counts(results)),
                  "per_op": {op: dict(c) for op, c in sorted(per_op(results).items())},
                  "cases": [asdict(r) for r in results],
                  "seconds": round(time.perf_counter() - start, 2)}
        with open(args.json, "w") as f:
            json.dump(report, f, indent=1)
    print(summary_line(results))
    return 1 if args.strict and counts(results)["failed"] else 0


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "conformance", help="run ONNX's node conformance cases through the frontend",
        description=HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-k", metavar="SUBSTRING", default=None,
                        help="only cases whose name contains SUBSTRING")
    parser.add_argument("-v", "--verbose", action="count", default=0,
                        help="per-op passed/failed/unsupported counts; -vv also says why each "
                             "case made of supported ops is unsupported")
    parser.add_argument("--json", metavar="FILE", help="also write the full report as JSON")
    parser.add_argument("--strict", action="store_true", help="exit 1 when any case failed")
    parser.set_defaults(func=main)
