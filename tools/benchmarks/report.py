"""results.json -> markdown tables (results.md) and PNG charts (throughput.png, roofline.png)."""
from __future__ import annotations

import math
import textwrap

from trident.tools.common import pyplot

ANCHORS = ("torch eager", "torch.compile", "torch.compile max-autotune")


def _num(v, fmt="{:.3f}") -> str:
    return fmt.format(v) if isinstance(v, (int, float)) and math.isfinite(v) else "–"


def _cell(row) -> str:
    if row is None:
        return "–"
    if row["status"] != "ok":
        return f"{row['status']}: {row.get('error', '')[:90]}".replace("|", "\\|")
    return f"{row['median_ms']:.3f} ms ({row['throughput_per_s']:,.0f}/s)"


PRECISION_ORDER = {"fp32": 0, "fp16": 1, "int8": 2}


def groups(results: dict) -> list[tuple[tuple, dict]]:
    """(model, batch, precision) -> {runner: row}: models in the order first measured, each one's
    groups by batch, then fp32 / fp16 / int8 (a resumed run measures them in any order)."""
    out: dict = {}
    for row in results.get("models", []):
        out.setdefault((row["model"], row["batch"], row["precision"]), {})[row["runner"]] = row
    first = {}
    for model, _, _ in out:
        first.setdefault(model, len(first))
    return sorted(out.items(), key=lambda kv: (first[kv[0][0]], kv[0][1], PRECISION_ORDER.get(kv[0][2], 9)))


def missing_anchors(results: dict) -> list[str]:
    """'anchor (precisions)' for each anchor some measured group has no row of (a '–' in the table)."""
    anchors = anchors_present(results)
    missing: dict = {}
    for (_, _, precision), runners in groups(results):
        for a in anchors:
            if a not in runners:
                missing.setdefault(a, set()).add(precision)
    return [f"{a} ({', '.join(sorted(p, key=lambda x: PRECISION_ORDER.get(x, 9)))})" for a, p in missing.items()]


def anchors_present(results: dict) -> list[str]:
    seen = {r["runner"] for r in results.get("models", [])}
    return [a for a in ANCHORS if a in seen]


def summary_table(results: dict) -> str:
    anchors = anchors_present(results)
    head = ["model", "batch", "precision", "trident"] + anchors + [f"vs {a}" for a in anchors]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (_, batch, precision), runners in groups(results):
        t = runners.get("trident")
        label = (t or next(iter(runners.values())))["label"]
        anchor_prec = next((r.get("anchor_precision") for r in runners.values()
                            if r.get("anchor_precision")), precision)
        prec = precision if anchor_prec == precision else f"{precision} (anchors {anchor_prec})"
        speed = _speedups(t, runners)
        cells = [label, str(batch), prec, _cell(t)] + [_cell(runners.get(a)) for a in anchors]
        cells += [f"{speed[a]:.2f}×" if a in speed else "–" for a in anchors]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _speedups(trident: dict | None, runners: dict) -> dict:
    """Anchor -> its median over trident's, from the rows (a resumed group may have measured
    trident in one run and an anchor in the next)."""
    if not trident or trident.get("status") != "ok":
        return {}
    return {name: r["median_ms"] / trident["median_ms"] for name, r in runners.items()
            if name != "trident" and r.get("status") == "ok"}


def detail_table(results: dict) -> str:
    lines = ["| model | batch | prec | runner | median ms | p90 ms | p99 ms | items/s | build s | "
             "peak MiB (build+run) | peak MiB (run) | rel err vs fp32 | kernels | status |",
             "|" + "---|" * 14]
    for r in results.get("models", []):
        lines.append(
            f"| {r['label']} | {r['batch']} | {r['precision']} | {r['runner']} | "
            f"{_num(r.get('median_ms'))} | {_num(r.get('p90_ms'))} | {_num(r.get('p99_ms'))} | "
            f"{_num(r.get('throughput_per_s'), '{:,.0f}')} | {_num(r.get('build_s'), '{:.1f}')} | "
            f"{_num(r.get('peak_mem_mb'), '{:,.0f}')} | {_num(r.get('run_peak_mem_mb'), '{:,.0f}')} | "
            f"{_num(r.get('rel_err'), '{:.2e}')} | {r.get('kernels', '')} | "
            + (r["status"] if r["status"] == "ok" else f"{r['status']}: {r.get('error', '')[:120]}")
            .replace("|", "\\|") + (f" (reused from {r['reused_from']})" if r.get("reused_from") else "")
            + " |")
    return "\n".join(lines)


def kernel_table(results: dict) -> str:
    lines = ["| kernel | trident ms | TFLOP/s (TOPS) | GB/s | anchor | anchor ms | vs anchor | % of roofline |",
             "|---|---|---|---|---|---|---|---|"]
    for k in results.get("kernels", []):
        if k.get("status") != "ok":
            lines.append(f"| {k['name']} | error: {k.get('error', '')[:120]} | | | | | | |".replace("\n", " "))
            continue
        lines.append(f"| {k['name']} | {_num(k['ms'])} | {_num(k.get('tflops'), '{:.1f}')} | "
                     f"{_num(k.get('gbps'), '{:,.0f}')} | {k.get('ref_name') or ''} | "
                     f"{_num(k.get('ref_ms'))} | {_num(k.get('vs_ref'), '{:.2f}×')} | "
                     f"{_num(k.get('roof_pct'), '{:.1f}%')} |")
    return "\n".join(lines)


def conv_summary_line(results: dict) -> str:
    """ResNet-50's convs against cuDNN: geometric mean over shapes, and summed as the network uses them."""
    convs = [k for k in results.get("kernels", []) if k.get("kind") == "conv" and k.get("status") == "ok"
             and k.get("vs_ref") and k.get("count_in_resnet50")]
    if len(convs) < 2:
        return ""
    geo = math.exp(sum(math.log(k["vs_ref"]) for k in convs) / len(convs))
    ours = sum(k["ms"] * k["count_in_resnet50"] for k in convs)
    ref = sum(k["ref_ms"] * k["count_in_resnet50"] for k in convs)
    return (f"ResNet-50 convs (heuristic configs) against cuDNN: geometric mean {geo:.2f}× over {len(convs)} "
            f"shapes; weighted by use in the network, {ours:.2f} ms against {ref:.2f} ms ({ref / ours:.2f}×).")


def environment_line(results: dict) -> str:
    e = results.get("environment", {})
    cap = e.get("capability")
    cap = ".".join(str(c) for c in cap) if isinstance(cap, (list, tuple)) else cap
    return (f"{e.get('gpu', '?')} (compute capability {cap}), torch {e.get('torch', '?')}, "
            f"Triton {e.get('triton', '?')}, trident {e.get('trident', '?')}, mode {results.get('mode', '?')}")


def peaks_line(results: dict) -> str:
    p = results.get("peaks")
    if not p:
        return "roofline peaks: not measured"
    return (f"roofline peaks: {p['tflops']:.0f} TFLOP/s fp16, {p['int8_tops']:.0f} TOPS int8, "
            f"{p['gbps']:,.0f} GB/s ({p['source']})")


def markdown(results: dict, level: int = 1) -> str:
    """results.md: every table; headings start at `level`."""
    h = "#" * level
    parts = [f"{h} trident bench\n\n{environment_line(results)}\n"]
    parts += [f"_{n}_\n" for n in results.get("notes", [])]
    if results.get("models"):
        parts.append(f"{h}# Models\n\nMedian latency (throughput); `vs X` = X's median / trident's "
                     "(above 1: trident is faster). Anchors run in the same process on the same GPU; "
                     "INT8 rows are compared with torch FP16.\n\n" + summary_table(results) + "\n")
        parts.append(f"{h}## All runners\n\nRelative error is against torch FP32 eager; peak memory is "
                     "torch.cuda.max_memory_allocated above what was allocated before the runner "
                     "(inputs, the reference output).\n\n" + detail_table(results) + "\n")
    if results.get("not_run"):
        parts.append("_not run (time budget; `--resume` measures them): " + ", ".join(
            f"{m} b{b} {p}" for m, b, p in results["not_run"]) + "_\n")
    if results.get("kernels"):
        parts.append(f"{h}# Kernels\n\n" + peaks_line(results) + "\n\n" + kernel_table(results) + "\n")
        if convs := conv_summary_line(results):
            parts.append(convs + "\n")
    return "\n".join(parts)


# ----------------------------------------------------------------------------- charts ----
def plot_throughput(results: dict, path) -> bool:
    """One panel per precision: each runner's throughput over torch eager's, per model and batch."""
    gs = [(key, runners) for key, runners in groups(results)
          if any(r["status"] == "ok" for r in runners.values())]
    if not gs:
        return False
    plt = pyplot()
    runners = ["trident"] + anchors_present(results)
    precisions = sorted({p for (_, _, p), _ in gs}, key=lambda p: PRECISION_ORDER.get(p, 9))
    panels = {p: [(key, rs) for key, rs in gs if key[2] == p] for p in precisions}
    widest = max(len(v) for v in panels.values())
    fig, axes = plt.subplots(len(precisions), 1, figsize=(max(8, 1.0 * widest + 3), 3.4 * len(precisions)),
                             dpi=110, squeeze=False)
    width = 0.8 / len(runners)
    for ax, precision in zip(axes[:, 0], precisions):
        _throughput_panel(ax, panels[precision], runners, width)
        anchors = next((r.get("anchor_precision") for _, rs in panels[precision] for r in rs.values()
                        if r.get("anchor_precision") not in (None, precision)), None)
        ax.set_title(precision + (f" (anchors {anchors})" if anchors else ""), fontsize=9)
    from matplotlib.patches import Patch

    # Handles made here: a runner with no bar in the first panel (fp32 max-autotune, say) keeps its color.
    axes[0, 0].legend(handles=[Patch(color=f"C{i}", label=n) for i, n in enumerate(runners)], fontsize=8)
    fig.suptitle("throughput over torch eager's (above 1: faster than eager)\n" + environment_line(results),
                 fontsize=8)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def _throughput_panel(ax, gs, runners, width) -> None:
    for i, name in enumerate(runners):
        xs, rel = [], []
        for g, (_, rs) in enumerate(gs):
            r, eager = rs.get(name), rs.get("torch eager")
            if r and r["status"] == "ok" and eager and eager["status"] == "ok":
                xs.append(g + (i - (len(runners) - 1) / 2) * width)
                rel.append(eager["median_ms"] / r["median_ms"])
        bars = ax.bar(xs, rel, width, label=name, color=f"C{i}")  # one color per runner in every panel
        for bar, v in zip(bars, rel):
            ax.annotate(f"{v:.1f}", (bar.get_x() + bar.get_width() / 2, v), ha="center", va="bottom", fontsize=6)
    ax.axhline(1.0, color="black", lw=0.8)
    ax.set_ylabel("× torch eager")
    ax.set_xticks(range(len(gs)))
    ax.set_xticklabels([textwrap.fill(rs[next(iter(rs))]["label"], 16) + f"\nb{b}" for (_, b, _), rs in gs],
                       fontsize=7)
    ax.grid(True, axis="y", alpha=0.3)


def plot_roofline(results: dict, path) -> bool:
    ks = [k for k in results.get("kernels", []) if k.get("status") == "ok" and k.get("tflops")]
    peaks = results.get("peaks")
    if not ks:
        return False
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(9, 6), dpi=110)
    xs = [k["intensity"] for k in ks]
    lo, hi = min(xs + [1.0]) / 3, max(xs + [1000.0]) * 3
    grid = [lo * (hi / lo) ** (i / 200) for i in range(201)]
    if peaks:
        for compute, name, style in ((peaks["tflops"], "fp16", "-"), (peaks["int8_tops"], "int8", "--")):
            ax.plot(grid, [min(compute, x * peaks["gbps"] / 1e3) for x in grid], style, color="black",
                    lw=1.2, label=f"roof {name}: {compute:.0f} T/s, {peaks['gbps']:,.0f} GB/s")
    for kind, marker in (("gemm", "o"), ("conv", "s"), ("depthwise", "v"), ("elementwise", "^"), ("reduction", "D")):
        mine = [k for k in ks if k["kind"] == kind]
        if not mine:
            continue
        ax.scatter([k["intensity"] for k in mine], [k["tflops"] for k in mine], marker=marker, s=40,
                   edgecolors="black", linewidths=0.5, label=f"trident {kind}", zorder=3)
        refs = [k for k in mine if k.get("ref_tflops")]
        ax.scatter([k["intensity"] for k in refs], [k["ref_tflops"] for k in refs], marker=marker,
                   s=40, facecolors="none", edgecolors="gray", label=f"anchor {kind}", zorder=2)
    for k in ks:
        ax.annotate(k["name"].split(",")[0][:30], (k["intensity"], k["tflops"]), fontsize=6,
                    xytext=(3, 3), textcoords="offset points")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / byte)")
    ax.set_ylabel("achieved TFLOP/s (TOPS for int8)")
    ax.set_title("kernel microbenchmarks vs the measured roofline\n" + environment_line(results), fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return True


def write_report(results: dict, out_dir) -> list[str]:
    """results.md and the charts into out_dir; returns the PNG names written."""
    from pathlib import Path

    out = Path(out_dir)
    (out / "results.md").write_text(markdown(results))
    pngs = []
    for name, plot in (("throughput.png", plot_throughput), ("roofline.png", plot_roofline)):
        try:
            if plot(results, out / name):
                pngs.append(name)
        except Exception as exc:  # noqa: BLE001 - a chart must not lose the tables
            import sys

            print(f"[bench] {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    return pngs
