"""Every environment knob trident reads, in one place (Triton's knobs.py habit).

Importing this module also decides how kernels run: with no CUDA device, Triton's interpreter
(TRITON_INTERPRET=1) runs every kernel on the CPU, so every trident subpackage imports this
module first. Triton reads that switch when a kernel is decorated, not when triton is imported,
so it works whichever was imported first: `torch.compile` imports triton before torch loads the
trident backend.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path


def _env_flag(name: str, default: bool = False) -> bool:
    value = os.environ.get(name)
    if value is None:
        return default
    return value.strip().lower() not in ("", "0", "false", "no", "off")


def _cuda_available() -> bool:
    import torch  # torch does not import triton, so asking it first is safe

    return torch.cuda.is_available()


HAS_CUDA: bool = _cuda_available()

# Suppress informational messages (the interpreter notice, progress bars).
QUIET: bool = _env_flag("TRIDENT_QUIET")


def _use_interpreter() -> None:
    """Switch Triton's interpreter on: the environment variable for triton not yet imported (and
    for child processes); for a triton already imported, its knob (read at each @triton.jit) and
    triton.language's own jit functions."""
    os.environ["TRITON_INTERPRET"] = "1"
    triton = sys.modules.get("triton")
    if triton is None:
        return
    runtime_knobs = getattr(getattr(triton, "knobs", None), "runtime", None)
    if runtime_knobs is not None:
        runtime_knobs.interpret = True
    _interpret_triton_language()


def _interpret_triton_language() -> None:
    """triton.language's library functions (tl.cdiv, tl.max, tl.sigmoid's helpers, ...) are
    @triton.jit functions made when triton was imported: compiler-side JITFunctions, which the
    interpreter cannot call. Give each module (and tl.tensor's methods) an interpreted twin, as an
    import with TRITON_INTERPRET=1 would have made."""
    try:
        from triton.runtime.interpreter import InterpretedFunction
        from triton.runtime.jit import JITFunction
        from triton.language.core import tensor
    except ImportError:  # a Triton without these: kernels will fail to launch, and say so
        return
    twins: dict[int, object] = {}

    def twin(fn):
        return twins.setdefault(id(fn), InterpretedFunction(fn.fn))

    namespaces = [m for name, m in list(sys.modules.items())
                  if m is not None and (name == "triton.language" or name.startswith("triton.language."))]
    for namespace in namespaces + [tensor]:
        for name, value in list(vars(namespace).items()):
            if isinstance(value, JITFunction):
                setattr(namespace, name, twin(value))


# With no GPU every generated kernel goes through Triton's interpreter on the CPU, unless
# TRITON_INTERPRET says otherwise (=0: compile only, e.g. for another target's assembly).
if not HAS_CUDA and "TRITON_INTERPRET" not in os.environ:
    _use_interpreter()

INTERPRET: bool = _env_flag("TRITON_INTERPRET")

_noticed = False


def notice_interpreter() -> None:
    """Say once per process, on stderr, that kernels run in the interpreter (not at import time,
    so that `trident --help` and commands that run no kernel stay quiet)."""
    global _noticed
    if _noticed or HAS_CUDA or not INTERPRET or QUIET:
        return
    _noticed = True
    print("trident: no CUDA device; Triton kernels run in the interpreter (slow, for testing).",
          file=sys.stderr)


# The precision every entry point builds at unless told otherwise (build_engine, every command
# of the CLI, the torch.compile backend): the model's own numerics. FP16 and INT8 are asked for,
# as with TensorRT's builder and trtexec.
DEFAULT_PRECISION: str = "fp32"

# Where generated kernels, the autotuning cache and calibration caches live.
CACHE_DIR: Path = Path(os.environ.get("TRIDENT_CACHE_DIR")
                       or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "trident")

# Verify the IR after every pass and keep each pass's output (slower builds, easier bisecting).
DEBUG: bool = _env_flag("TRIDENT_DEBUG")

# Bounds sanitizer (compiler/sanitizer.py): in Triton's interpreter, check that every load and
# store of every launch lands inside one of the launch's tensor arguments (slower; CI runs with it).
SANITIZE: bool = _env_flag("TRIDENT_SANITIZE")

# FP32 matmuls/convs may use TF32 tensor cores (opt-in: changes numerics).
ALLOW_TF32: bool = _env_flag("TRIDENT_ALLOW_TF32")

# How generated and template kernels multiply fp32 operands (tl.dot's input_precision):
#   "ieee"   on the FMA units, each product exact before its fp32 sum;
#   "tf32x3" on the tensor cores as three TF32 products (each operand split into a TF32 part and
#            its TF32 remainder; the remainders' product dropped): within a few fp32 ulps of
#            "ieee", the arithmetic torch's own fp32 attention (its memory-efficient SDPA kernel)
#            uses;
#   "tf32"   one TF32 product (10-bit mantissas), what TRIDENT_ALLOW_TF32=1 asks for.
# Unset (None): each template's own (kernels/common.py, FP32_DOTS_BY_TEMPLATE).
FP32_DOTS_CHOICES = ("ieee", "tf32x3", "tf32")


def _fp32_dots() -> str | None:
    if ALLOW_TF32:
        return "tf32"
    value = os.environ.get("TRIDENT_FP32_DOTS")
    if value is None or not value.strip():
        return None
    value = value.strip().lower()
    if value not in FP32_DOTS_CHOICES:
        raise ValueError(f"TRIDENT_FP32_DOTS={value!r}: expected one of {', '.join(FP32_DOTS_CHOICES)}")
    return value


FP32_DOTS: str | None = _fp32_dots()

# 16-bit and fp32 GEMM kernels that cuBLAS computes whole (no epilogue, or a bias it adds), and those whose
# epilogue pass costs less than cuBLAS saves, start on cuBLAS (kernels/blas.py); TRIDENT_LIBRARY_GEMM=0 starts
# them on their own Triton tile (the tuner times both).
LIBRARY_GEMM: bool = _env_flag("TRIDENT_LIBRARY_GEMM", default=True)

# TRIDENT_WS_GEMM=1: 16-bit GEMM kernels on a Hopper GPU start on kernels/gemm_hopper.py's warp-specialized
# product with their epilogue (their WS path), and the tuner times it. Off by default: the path is correct
# on the GPU (its tests and memcheck), but on the GEMMs timed no WS tile leads the library or the Triton
# tile (on ViT-B/16's and DINOv2's GELU GEMMs it is level with it: docs/performance.md, "Warp-specialized GEMM").
WS_GEMM: bool = _env_flag("TRIDENT_WS_GEMM", default=False)

# An up projection whose result only a down projection reads runs with it as one kernel
# (kernels/mlp.py: the hidden activation stays in registers); TRIDENT_FUSE_MLP=0 keeps two GEMMs.
FUSE_MLP: bool = _env_flag("TRIDENT_FUSE_MLP", default=True)
# TRIDENT_RESIDUAL_INTO_NORM=1: a residual add between a 16-bit GEMM with no other epilogue and the
# LayerNorm / RMSNorm reading the sum runs in the norm's loads, not the GEMM's epilogue, so cuBLAS
# computes the GEMM alone (compiler/fusion.py's residual_for_norm). Off: the norm's extra traffic
# costs what cuBLAS saves (ViT-B/16 end to end: docs/performance.md, "`trident bench perf`").
RESIDUAL_INTO_NORM: bool = _env_flag("TRIDENT_RESIDUAL_INTO_NORM", default=False)

# Autotuning: how many processes compile candidate configs in parallel (0: compile in the tuning
# process, at each config's first launch).
TUNE_WORKERS: int = int(os.environ.get("TRIDENT_TUNE_WORKERS") or min(16, os.cpu_count() or 1))

# Engines on a GPU capture their launch sequence in a CUDA graph unless built with cuda_graph=False.
# TRIDENT_CUDA_GRAPHS=0 turns capture off everywhere: compute-sanitizer's own calls break stream
# capture, so runs under it launch eagerly (the replay launches the same kernels).
CUDA_GRAPHS: bool = _env_flag("TRIDENT_CUDA_GRAPHS", default=True)

# A profiled engine keeps the CUDA graphs of this many input shapes (the least recently used
# goes first): one graph per shape holds its own copies of the inputs and outputs.
CUDA_GRAPH_SHAPES: int = int(os.environ.get("TRIDENT_CUDA_GRAPH_SHAPES") or 16)
