"""scripts/attention_ab.py: it loads the Hopper attention kernel of a git revision and of the
working tree as modules of their own, and without a GPU it refuses to time anything, by name."""
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from trident.compiler import config
from trident.compiler.errors import InputError

SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "attention_ab.py"


def load_script():
    spec = importlib.util.spec_from_file_location("attention_ab", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def in_git_checkout() -> bool:
    if shutil.which("git") is None:
        return False
    done = subprocess.run(["git", "-C", str(SCRIPT.parent), "rev-parse", "HEAD"], capture_output=True)
    return done.returncode == 0


@pytest.mark.skipif(not in_git_checkout(), reason="needs git and a checkout")
def test_each_revision_is_a_module_of_its_own(tmp_path):
    ab = load_script()
    head_label, _, head = ab.load_revision("HEAD", tmp_path)
    work_label, subject, work = ab.load_revision("WORKTREE", tmp_path)
    assert (work_label, subject) == ("worktree", "uncommitted")
    assert len(head_label) >= 7 and head_label != work_label
    assert head is not work and head.__name__ != work.__name__
    assert callable(head.launch) and callable(work.launch)


@pytest.mark.skipif(config.HAS_CUDA, reason="the refusal is for machines without a GPU")
def test_without_a_gpu_it_refuses_by_name():
    with pytest.raises(InputError, match="attention A/B needs a CUDA GPU"):
        load_script().main(["--rev", "HEAD"])
