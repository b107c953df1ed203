import os

os.environ.setdefault("TRIDENT_QUIET", "1")

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
