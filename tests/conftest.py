import os
import sys
import zlib

# `python -m pytest` puts the checkout's root first on sys.path, where trident's package folders
# (kernels/, tools/, models/, ...) shadow installed top-level packages of the same names: transformers
# imports Hugging Face's `kernels`. The root moves last: installed packages come first, and
# trident (installed as a path finder, not in site-packages) is still this checkout's.
_ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _ROOT] + [_ROOT]

os.environ.setdefault("TRIDENT_QUIET", "1")
# Every kernel the CPU suite runs goes through the bounds sanitizer (compiler/sanitizer.py): an
# out-of-bounds load or store fails its test even when the numbers happen to match.
os.environ.setdefault("TRIDENT_SANITIZE", "1")

import pytest  # noqa: E402
import torch  # noqa: E402

# fp32 references are exact fp32 on a GPU as well: torch's cuDNN convolutions default to TF32
# (10-bit mantissas, errors near 1e-3), and trident's fp32 kernels are held to 1e-5 against them.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False


def pytest_addoption(parser):
    parser.addoption("--compile-all-for-hopper", action="store_true",
                     help="every module compiles the kernels it ran for sm_90, as the modules "
                          "marked compiles_for_hopper do")


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(scope="module", autouse=True)
def compiles_for_hopper(request):
    """A module marked `compiles_for_hopper` (its kernels' code changes most) also compiles every
    kernel the interpreter ran, for sm_90, once the module is done (compiler/target_check.py):
    code the interpreter runs but Triton's compiler refuses fails here, without a GPU."""
    from trident.compiler import config

    marker = request.node.get_closest_marker("compiles_for_hopper")
    wanted = marker.args[:1] != (False,) if marker else \
        request.config.getoption("--compile-all-for-hopper")
    if not wanted or not config.INTERPRET:
        yield
        return
    from trident.compiler.target_check import LaunchRecorder, compile_for_target

    recorder = LaunchRecorder()
    with recorder.active():
        yield
    failures = compile_for_target(recorder.launches)
    assert not recorder.unrecorded, recorder.unrecorded
    assert not failures, "\n\n".join(f.render() for f in failures)


@pytest.fixture
def rng():
    """A fresh seeded generator per test: random data, reproducible failures."""
    return torch.Generator().manual_seed(0x7D1E)


@pytest.fixture(autouse=True)
def seeded_global_rng(request):
    """Model weights and inputs drawn from torch's global generator depend on which tests ran
    before on the same worker; seeding it from the test's own id makes every test's data its own
    (the same in a full run, under xdist and alone), so a failure reproduces."""
    torch.manual_seed(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture
def fresh_dynamo():
    """torch.compile's caches emptied around a test (modules that compile ask for it by name)."""
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()
