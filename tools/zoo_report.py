"""The zoo report as markdown, and README's copy of it (between the zoo markers)."""
from __future__ import annotations

import math
from pathlib import Path

from trident.compiler.errors import InputError

BEGIN = "<!-- zoo:"
END = "<!-- zoo end -->"
COLUMNS = ["model", "entry", "precision", "result", "rel. error (torch fp16)", "kernels",
           "in torch", "build s: partition / import / compile (total)", "trident ms",
           "torch eager ms", "torch.compile ms"]


def error_bound(precision: str, torch_fp16_err: float | None) -> float | None:
    """The largest relative error a row may have against torch fp32 (None: not judged): 1e-4 at
    fp32, max(2 x torch fp16's own error, 1e-3) at fp16; int8 has its own calibration error."""
    if precision == "fp32":
        return 1e-4
    if precision == "fp16":
        return max(2 * (torch_fp16_err or 0.0), 1e-3)
    return None


def int8_graph_bound(torch_fp16_err: float | None) -> float:
    """The largest relative error an int8 engine may have against its own int8 graph on the
    reference executor: the same integer math, but the reference rounds every node's output to
    fp16 and the fused kernels only what they store, so a requantization may land one int8 step
    apart (resnet_tiny: 2.6e-2; tests/test_int8.py asks cosine >= 0.999, about 4.5e-2)."""
    return max(2 * (torch_fp16_err or 0.0), 5e-2)


def accuracy_problem(r: dict) -> str | None:
    """Why a row that built and ran is wrong (its error past the bound), or None. int8 rows are
    judged against their own int8 graph (quantization's error against fp32 is not the engine's)."""
    graph_err = r.get("int8_graph_err")
    if graph_err is not None and graph_err > (bound := int8_graph_bound(r.get("torch_fp16_err"))):
        return f"relative error {graph_err:.1e} against its int8 graph, past the bound {bound:.1e}"
    bound = error_bound(r.get("precision"), r.get("torch_fp16_err"))
    err = r.get("rel_err")
    if bound is None or err is None or err <= bound:
        return None
    return f"relative error {err:.1e} past the bound {bound:.1e}"


def judged(r: dict) -> dict:
    """The row with status 'wrong' where an 'ok' row's error is past its bound."""
    problem = accuracy_problem(r) if r["status"] == "ok" else None
    return {**r, "status": "wrong", "error": problem} if problem else r


def _num(x, fmt: str) -> str:
    return "–" if x is None else format(x, fmt)


def _row(r: dict) -> list[str]:
    if r["status"] != "ok":
        result = {"skipped": "skipped", "timeout": "timed out", "wrong": "**wrong**"}.get(r["status"], "**error**")
        cells = [r["model"], r.get("entry") or "–", r.get("precision") or "–",
                 f"{result}: {r['error'][:160]}"]
        return cells + ["–"] * (len(COLUMNS) - len(cells))
    b, lat = r["build_s"], r["latency_ms"]
    build = (f"{b['partition']:.2f} / {b['import']:.2f} / {b['compile']:.2f} "
             f"({b['total']:.1f})")
    graph_err = (f"; int8 graph {r['int8_graph_err']:.1e}" if r.get("int8_graph_err") is not None else "")
    return [r["model"], r["entry"], r["precision"], "ok",
            f"{_num(r['rel_err'], '.1e')} ({_num(r['torch_fp16_err'], '.1e')}){graph_err}",
            str(r["kernels"]), str(r["in_torch"]), build, _num(lat.get("trident"), ".3f"),
            _num(lat.get("torch_eager"), ".3f"), _num(lat.get("torch_compile"), ".3f")]


def markdown_table(report: dict, every_model: list[str] | None = None) -> str:
    rows = [judged(r) for r in report["rows"]]
    count = {s: sum(r["status"] == s for r in rows) for s in ("ok", "error", "wrong", "skipped", "timeout")}
    unfinished = f", {count['timeout']} not finished within the run's time limit per model" \
        if count["timeout"] else ""
    head = (f"`trident zoo` on {report['device']}, batch {report['batch']}"
            f"{', tiny configurations' if report.get('tiny') else ''}: {count['ok']} built and ran, "
            f"{count['error']} failed, {count['wrong']} wrong, {count['skipped']} skipped{unfinished}. "
            "Relative error ‖y − y₃₂‖/‖y₃₂‖ against torch fp32, torch fp16's own in parentheses (wrong: "
            "past 1e-4 at fp32, past max(2 × torch fp16's, 1e-3) at fp16). int8 is timed against torch fp16, and "
            "judged, where an int8 graph error is shown, against the engine's own int8 graph on the reference "
            "executor (past max(2 × torch fp16's, 5e-2): wrong), not against fp32." + _jobs_note(report) + _conditions(report))
    missing = not_run_note(report, every_model or [])
    lines = [head + (f" {missing}" if missing else ""), "", "| " + " | ".join(COLUMNS) + " |",
             "|" + "---|" * len(COLUMNS)]
    lines += ["| " + " | ".join(c.replace("|", "\\|") for c in _row(r)) + " |" for r in rows]
    return "\n".join(lines)


def _conditions(report: dict) -> str:
    return f" {report['conditions']}" if report.get("conditions") else ""


def _jobs_note(report: dict) -> str:
    jobs = report.get("jobs", 1)
    return (f" Up to {jobs} models were built side by side, and timed one at a time." if jobs > 1
            else "")


def not_run_note(report: dict, every_model: list[str]) -> str:
    """The zoo's models this report has no row for (a run of some of them)."""
    ran = {r["model"] for r in report["rows"]}
    missing = [m for m in every_model if m not in ran]
    return f"Not run for this report: {', '.join(missing)}." if missing else ""


def readme_summary(report: dict, full_table: str, every_model: list[str] | None = None) -> str:
    """What the README shows of a zoo report (the whole table is too long for it): per entry point
    and precision, how many models built and ran, and trident's speed beside torch.compile's
    (geometric mean, slowest), with a link to the whole table."""
    rows = [judged(r) for r in report["rows"]]
    models = sorted({r["model"] for r in rows})
    lines = [f"`trident zoo` on {report['device']}, batch {report['batch']}: {len(models)} models "
             f"(torchvision, timm, transformers) with random weights; the whole table, with errors, "
             f"kernels, ops left in torch and build times, is in [{full_table}]({full_table}).", "",
             "| entry | precision | built, ran and right | failed or wrong | trident vs torch.compile: geomean (slowest) |",
             "|---|---|---|---|---|"]
    for entry in sorted({r.get("entry") for r in rows if r.get("entry")}):
        for precision in ("fp32", "fp16", "int8"):
            group = [r for r in rows if r.get("entry") == entry and r.get("precision") == precision]
            if not group:
                continue
            ok = [r for r in group if r["status"] == "ok"]
            ratios = [(r["latency_ms"]["torch_compile"] / r["latency_ms"]["trident"], r["model"])
                      for r in ok if r["latency_ms"].get("torch_compile") and r["latency_ms"].get("trident")]
            speed = "–"
            if ratios:
                geomean = math.exp(sum(math.log(x) for x, _ in ratios) / len(ratios))
                slowest = min(ratios)
                speed = f"{geomean:.2f}× ({slowest[0]:.2f}×, {slowest[1]})"
            failed = sum(r["status"] in ("error", "wrong") for r in group)
            lines.append(f"| {entry} | {precision} | {_right(precision, ok, len(group))} | {failed} | {speed} |")
    unfinished = sorted(r["model"] for r in rows if r["status"] == "timeout")
    notes = [f"Not finished within the run's time limit per model: {', '.join(unfinished)}."
             if unfinished else "", not_run_note(report, every_model or [])]
    notes = " ".join(n for n in notes if n)
    return "\n".join(lines + (["", notes] if notes else []))


def _right(precision: str, ok: list[dict], rows: int) -> str:
    """'k of n' rows right. int8 has no bound against fp32: only rows checked against their own
    int8 graph count as right; the others are said to have run, unjudged, with the range of the
    errors against fp32, so the cell claims no more than was checked."""
    if error_bound(precision, 0.0) is not None:
        return f"{len(ok)} of {rows}"
    checked = [r for r in ok if r.get("int8_graph_err") is not None]
    cell = f"{len(checked)} of {rows}"
    if len(checked) < len(ok):
        cell += f"; {len(ok) - len(checked)} more ran, not judged"
    errors = [r["rel_err"] for r in ok if r.get("rel_err") is not None]
    if errors:
        cell += f" (error against fp32 {min(errors):.2g} to {max(errors):.2g})"
    return cell


def update_readme(readme: Path, table: str) -> None:
    """Put `table` after the README's `<!-- zoo: ... -->` line, replacing what an earlier run
    put there (up to `<!-- zoo end -->`)."""
    lines = readme.read_text().splitlines()
    start = next((i for i, line in enumerate(lines) if line.startswith(BEGIN)), None)
    if start is None:
        raise InputError(f"{readme}: no '{BEGIN} ... -->' marker line")
    end = next((i for i in range(start + 1, len(lines)) if lines[i].strip() == END), None)
    tail = lines[end + 1:] if end is not None else lines[start + 1:]
    readme.write_text("\n".join(lines[:start + 1] + ["", table, "", END] + tail) + "\n")


def _key(r: dict) -> tuple:
    return r["model"], r.get("entry") or None, r.get("precision") or None


def merge(old: dict | None, new: dict) -> dict:
    """`new`'s rows, plus those of `old` that `new` did not measure again: a row per (model, entry,
    precision), so a run of int8 alone keeps a model's fp32 and fp16 rows. A row for a whole model
    (a timeout, a model torch itself cannot run) replaces all of its rows, and is replaced by any
    row of it."""
    if not old:
        return new
    keys = {_key(r) for r in new["rows"]}
    whole = {r["model"] for r in new["rows"] if _key(r)[1] is None}
    ran = {r["model"] for r in new["rows"]}
    kept = [r for r in old.get("rows", []) if r["model"] not in whole and _key(r) not in keys
            and not (_key(r)[1] is None and r["model"] in ran)]
    jobs = max(old.get("jobs", 1), new.get("jobs", 1))  # a report in parts: the most side by side
    return {**new, "jobs": jobs, "rows": kept + new["rows"]}
