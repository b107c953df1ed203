import os

os.environ.setdefault("TRIDENT_QUIET", "1")
# Every kernel the CPU suite runs goes through the bounds sanitizer (compiler/sanitizer.py): an
# out-of-bounds load or store fails its test even when the numbers happen to match.
os.environ.setdefault("TRIDENT_SANITIZE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def rng():
    """A fresh seeded generator per test: random data, reproducible failures."""
    return torch.Generator().manual_seed(0x7D1E)
