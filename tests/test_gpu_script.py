"""scripts/gpu.sh, the one script the GPU runs: it parses, and its header lists exactly the stages
its case statement runs (a stage it does not have is refused there, by name)."""
import re
import shutil
import subprocess
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "gpu.sh"


def header_stages(text: str) -> set[str]:
    lines = text.splitlines()
    start = next(k for k, line in enumerate(lines) if line.startswith("#   stages:"))
    listed = " ".join(line.lstrip("# ") for line in lines[start:start + 2])
    listed = listed.split("stages:", 1)[1].split(".", 1)[0]
    return {s.strip() for s in listed.split("|") if s.strip()}


def case_stages(text: str) -> set[str]:
    body = text[text.index('case "$stage" in'):]
    labels = re.findall(r"^  ([a-z0-9|-]+)\)", body, flags=re.M)  # (one branch may take several: a|b)
    return {name for label in labels for name in label.split("|")}


def test_the_header_lists_every_stage_the_script_runs():
    text = SCRIPT.read_text()
    assert header_stages(text) == case_stages(text)


@pytest.mark.skipif(shutil.which("bash") is None, reason="needs bash")
def test_it_parses():
    subprocess.run(["bash", "-n", str(SCRIPT)], check=True)
