"""Rewrite the "## Results" section of README.md from a `trident bench` results directory.

    python -m trident.tools.benchmarks.readme bench-out [--readme README.md]
    trident bench --update-readme bench-out

Copies the charts into benchmarks/ beside the README (referenced by relative path) and
results.json into benchmarks/results/; every other section of the README is left as it is.
"""
from __future__ import annotations

import argparse
import json
import re
import shutil
from pathlib import Path

from trident.tools.benchmarks import report


def _slug(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "gpu"


def results_section(results: dict, images: list[str], raw: str) -> str:
    env = results.get("environment", {})
    date = str(env.get("date", "?"))[:10]
    lines = [f"## Results ({env.get('gpu', '?')}, torch {env.get('torch', '?')}, "
             f"Triton {env.get('triton', '?')}, {date})", "",
             f"{_provenance(results)}: "
             f"{report.environment_line(results)}. trident and its anchors (torch eager, "
             "torch.compile) run in the same process on the same GPU; torch anchors run channels-last "
             "for CNNs; INT8 engines are compared with torch FP16; `vs X` is X's median latency over "
             f"trident's (above 1: trident is faster). Raw figures: `{raw}`; every runner's latency "
             "percentiles, build time, peak memory and error: `trident bench` writes them to "
             "`results.md`.", ""]
    lines += [f"_{n}_" for n in results.get("notes", [])]
    if results.get("models"):
        lines += ["", report.summary_table(results), ""]
        if missing := report.missing_anchors(results):
            lines += [f"_Not measured (– above): {'; '.join(missing)}._", ""]
    if results.get("kernels"):
        lines += ["Kernels (" + report.peaks_line(results) + "):", "", report.kernel_table(results), ""]
        if convs := report.conv_summary_line(results):
            lines += [convs, ""]
    for img in images:
        lines += [f"![{Path(img).stem}]({img})", ""]
    return "\n".join(lines).rstrip() + "\n"


def _provenance(results: dict) -> str:
    """'One run of `trident bench`', or, for a full run resumed across sittings, when its rows were measured."""
    command = f"`trident bench{' --quick' if results.get('mode') == 'quick' else ''}`"
    stamps = sorted(r["measured_at"] for r in results.get("models", []) if r.get("measured_at"))
    if stamps and stamps[0][:13] != stamps[-1][:13]:  # measured in more than one hour
        return (f"{command}, resumed across sittings (`--resume`; rows measured from "
                f"{stamps[0][:16].replace('T', ' ')} to {stamps[-1][:16].replace('T', ' ')} UTC)")
    return f"One run of {command}"


def replace_section(text: str, section: str, heading: str = "## Results") -> str:
    """Replace the section whose heading line starts with `heading` (up to the next level-2
    heading or the end); append it when there is none."""
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.startswith(heading)), None)
    if start is None:
        return text.rstrip("\n") + "\n\n" + section
    end = next((i for i in range(start + 1, len(lines))
                if lines[i].startswith("## ") or lines[i].startswith("# ")), len(lines))
    tail = "".join(lines[end:])
    return "".join(lines[:start]) + section + ("\n" + tail if tail else "")


def update_readme(results_dir, readme="README.md") -> Path:
    results_dir, readme = Path(results_dir), Path(readme)
    results = json.loads((results_dir / "results.json").read_text())
    env = results.get("environment", {})
    stem = f"{_slug(env.get('gpu', 'gpu'))}-bench"
    assets = readme.parent / "benchmarks"
    (assets / "results").mkdir(parents=True, exist_ok=True)
    raw = f"benchmarks/results/{stem}.json"
    shutil.copyfile(results_dir / "results.json", readme.parent / raw)
    images = []
    for png in sorted(results_dir.glob("*.png")):
        target = assets / f"{stem}-{png.name}"
        shutil.copyfile(png, target)
        images.append(f"benchmarks/{target.name}")
    readme.write_text(replace_section(readme.read_text(), results_section(results, images, raw)))
    return readme


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("results_dir")
    p.add_argument("--readme", default="README.md")
    args = p.parse_args(argv)
    print(f"updated {update_readme(args.results_dir, args.readme)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
