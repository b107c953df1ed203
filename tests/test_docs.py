"""The README stays user documentation that is true: short, its two commands the ones CI runs, its
commands and links real, its Results section what the generator writes from the committed JSON."""
import argparse
import json
import re
import shlex
from pathlib import Path

from trident.tools.benchmarks import readme
from trident.tools.cli import build_parser

REPO = Path(__file__).resolve().parents[1]
TEXT = (REPO / "README.md").read_text()
DEMO = 'pip install torch==2.13.0 && pip install -e . && trident demo'
TESTS = 'pip install torch==2.13.0 && pip install -e ".[test]" && python -m pytest -q -n 2 -m "not gpu"'


def test_readme_is_short_and_has_its_two_commands():
    assert len(TEXT.splitlines()) <= 250
    assert DEMO in TEXT and TESTS in TEXT


def test_ci_runs_the_readme_test_command():
    """.ci/run's commands are the README's (run as `python3 -m ...`, pip quiet)."""
    ci = [shlex.split(line) for line in (REPO / ".ci" / "run").read_text().splitlines()
          if line.startswith("python3 -m")]
    ci = [[word for word in line[2:] if word != "-q" or line[2] == "pytest"] for line in ci]
    readme_steps = [shlex.split(part.replace("python -m ", "")) for part in TESTS.split("&&")]
    assert ci == readme_steps


def test_every_command_the_readme_names_exists():
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    named = set(re.findall(r"`trident ([a-z][a-z-]*)", TEXT)) | set(re.findall(r"^trident ([a-z][a-z-]*)", TEXT, re.M))
    assert named and named <= set(commands), named - set(commands)
    bench = next(a for a in commands["bench"]._actions if isinstance(a, argparse._SubParsersAction)).choices
    for name in ("kernels", "sweep", "int8", "accuracy", "runtime", "tune"):
        assert name in bench


def test_links_to_files_exist():
    for target in re.findall(r"\]\(([^)#]+)", TEXT):
        if not target.startswith("http"):
            assert (REPO / target).exists(), target
    for doc in (REPO / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#]+)", doc.read_text()):
            if not target.startswith("http"):
                assert (doc.parent / target).exists(), (doc.name, target)


def test_results_section_is_generated_from_the_committed_results():
    raw = "benchmarks/results/nvidia-h200-bench.json"
    results = json.loads((REPO / raw).read_text())
    section = readme.results_section(results, "benchmarks/nvidia-h200-bench-throughput.png", raw)
    assert readme.replace_section(TEXT, section) == TEXT
    details = readme.details_page(results, ["../benchmarks/nvidia-h200-bench-throughput.png",
                                            "../benchmarks/nvidia-h200-bench-roofline.png"], raw)
    assert (REPO / "docs" / "results.md").read_text() == details


def test_docs_cite_result_files_that_exist():
    for doc in [REPO / "README.md", *(REPO / "docs").glob("*.md")]:
        for name in re.findall(r"`((?:nvidia-h200|benchmarks/results/)[\w./-]+\.(?:json|txt))`", doc.read_text()):
            path = REPO / name if name.startswith("benchmarks/") else REPO / "benchmarks" / "results" / name
            assert path.is_file(), (doc.name, name)
