"""Compile, for a GPU, the kernels Triton's interpreter ran: without a GPU.

The interpreter runs a kernel as Python, so code that Triton's compiler refuses still runs there
(a name bound inside a loop and read after it, a tensor of the wrong rank for a reduction).
Triton's compiler itself needs no GPU: given a target (sm_90, the H100/H200) it lowers a
@triton.jit function to PTX and a cubin on the CPU. So the CPU suite records each launch the
interpreter makes (`LaunchRecorder`: the kernel's file, its argument types, its constexprs and
launch options) and compiles every distinct one for the target in a child process with the
interpreter off (`compile_for_target`), where the kernel files import as compiler-side
JITFunctions. A kernel that fails there fails its test module (tests/conftest.py) or its ONNX
conformance case (tools/conformance_compile.py).

Integer arguments are compiled as plain i32 / i64 and pointers without alignment hints, so the
code is what a launch with unaligned, unspecialised arguments gets: the frontend and every pass
run; a specialisation the real launch may add (an int equal to 1) is not tried.
"""
from __future__ import annotations

import functools
import inspect
import json
import os
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

TARGETS = {"sm_80": "cuda:80:32", "sm_89": "cuda:89:32", "sm_90": "cuda:90:32"}  # backend:arch:warp
DEFAULT_TARGET = TARGETS["sm_90"]  # Hopper: the H100 / H200
LAUNCH_OPTIONS = ("num_warps", "num_stages", "num_ctas", "maxnreg")
_POINTER_TYPES = {torch.float32: "fp32", torch.float16: "fp16", torch.bfloat16: "bf16",
                  torch.float64: "fp64", torch.int8: "i8", torch.int16: "i16", torch.int32: "i32",
                  torch.int64: "i64", torch.uint8: "u8", torch.bool: "i1"}


@dataclass(frozen=True)
class Launch:
    """What a compile needs of one launch: the kernel's file and function, a type for each
    runtime argument, the constexpr values given, and the launch options."""
    path: str
    module: str
    function: str
    types: tuple[tuple[str, str], ...]        # (argument, Triton type such as "*fp32" or "i32")
    constexprs: tuple[tuple[str, object], ...]
    options: tuple[tuple[str, int], ...]

    @classmethod
    def from_dict(cls, d: dict) -> Launch:
        """The inverse of dataclasses.asdict after a pickle or JSON round trip (lists for tuples)."""
        return cls(d["path"], d["module"], d["function"],
                   *(tuple(map(tuple, d[k])) for k in ("types", "constexprs", "options")))


def _type_of(value) -> str:
    from triton.runtime.jit import mangle_type
    from triton.tools.tensor_descriptor import TensorDescriptor

    if isinstance(value, torch.Tensor):
        if value.dtype not in _POINTER_TYPES:
            raise TypeError(f"a {value.dtype} tensor argument has no Triton pointer type here")
        return "*" + _POINTER_TYPES[value.dtype]
    if isinstance(value, bool):
        return "i1"
    if isinstance(value, int):
        return "i32" if -2**31 <= value < 2**31 else "i64"
    if isinstance(value, float):
        return "fp32"
    if isinstance(value, TensorDescriptor):  # a TMA operand: its element type and box
        return mangle_type(value)
    raise TypeError(f"an argument of type {type(value).__name__} has no Triton type here")


@functools.cache
def _constexpr_params(fn) -> frozenset[str]:
    """The parameters annotated tl.constexpr (read from the annotation's text, as Triton does)."""
    parameters = inspect.signature(fn).parameters.items()
    return frozenset(name for name, p in parameters if "constexpr" in str(p.annotation))


def launch_of(fn, arg_names: list[str], args: tuple, kwargs: dict) -> Launch:
    """The Launch of `fn` (a Python function decorated with @triton.jit) called with `args`
    (positional, in `arg_names` order) and `kwargs` (constexprs and launch options)."""
    constexprs = {k: v for k, v in kwargs.items() if k not in LAUNCH_OPTIONS}
    options = {k: v for k, v in kwargs.items() if k in LAUNCH_OPTIONS and v is not None}
    marked = _constexpr_params(fn)
    types = []
    for name, value in zip(arg_names, args):
        if name in marked or value is None:  # (a constexpr passed by position, as a shape-generic
            constexprs[name] = value              # kernel's ALIGNED; None, a TMA operand left out, is one too)
        else:
            types.append((name, _type_of(value)))
    return Launch(fn.__code__.co_filename, fn.__module__, fn.__name__, tuple(types),
                  tuple(sorted(constexprs.items())), tuple(sorted(options.items())))


@dataclass
class LaunchRecorder:
    """Records every distinct launch Triton's interpreter makes while it is active."""
    launches: set[Launch] = field(default_factory=set)
    unrecorded: list[str] = field(default_factory=list)  # launches with an argument of no type

    @contextmanager
    def active(self):
        from triton.runtime.interpreter import InterpretedFunction

        original = InterpretedFunction.run
        recorder = self

        def run(self, *args, grid, warmup, **kwargs):
            try:
                recorder.launches.add(launch_of(self.fn, self.arg_names, args, kwargs))
            except TypeError as e:
                recorder.unrecorded.append(f"{self.fn.__name__}: {e}")
            return original(self, *args, grid=grid, warmup=warmup, **kwargs)

        InterpretedFunction.run = run
        try:
            yield self
        finally:
            InterpretedFunction.run = original


@dataclass
class Failure:
    path: str
    function: str
    error: str

    def render(self) -> str:
        return f"{Path(self.path).name}::{self.function} does not compile:\n{self.error}"


def compile_for_target(launches, target: str = DEFAULT_TARGET, timeout: float = 1200) -> list[Failure]:
    """Compile each launch for `target` in a child process with Triton's interpreter off; the
    launches that fail, each with Triton's message."""
    launches = sorted(launches, key=lambda x: (x.path, x.function, x.types, repr(x.constexprs)))
    if not launches:
        return []
    request = json.dumps({"target": target, "launches": [asdict(x) for x in launches]})
    # (no line tables: they change no code and cost 4-12% of each compile)
    env = dict(os.environ, TRITON_INTERPRET="0", TRITON_DISABLE_LINE_INFO="1")
    done = subprocess.run([sys.executable, "-m", "trident.compiler.target_check"], input=request,
                          capture_output=True, text=True, env=env, timeout=timeout)
    if done.returncode != 0:
        tail = "\n".join(done.stderr.strip().splitlines()[-20:])
        raise RuntimeError(f"the {target} compile process failed (exit {done.returncode}):\n{tail}")
    return [Failure(**f) for f in json.loads(done.stdout.strip().splitlines()[-1])]


def sass_of(kernel) -> str:
    """cuobjdump's SASS listing of a kernel `triton.compile` made for an NVIDIA target.
    (triton.tools.disasm.get_sass, in Triton 3.6, stops at the first line of a long kernel it does
    not parse, and so drops a warp-specialized kernel's later partitions.)"""
    import tempfile

    from triton import knobs

    with tempfile.NamedTemporaryFile(suffix=".cubin") as cubin:
        cubin.write(kernel.asm["cubin"])
        cubin.flush()
        return subprocess.check_output([knobs.nvidia.cuobjdump.path, "-sass", cubin.name], text=True)


def _kernel_function(launch: dict):
    """The JITFunction a launch ran: a template (trident.kernels) by its module; any other (a
    generated kernel in the kernel cache, a test's own kernel) from its file, its folder on the
    path for the file's own imports."""
    import importlib

    from trident.kernels.loader import import_kernel_file

    module = launch["module"]
    if module.startswith("trident."):
        return getattr(importlib.import_module(module), launch["function"])
    folder = str(Path(launch["path"]).parent)
    if folder not in sys.path:
        sys.path.append(folder)
    return getattr(import_kernel_file(launch["path"]), launch["function"])


def _compile_one(launch: dict, target) -> str | None:
    """Triton's message if the launch does not compile for `target`, else None."""
    import triton
    from triton.compiler import ASTSource

    try:
        fn = _kernel_function(launch)
    except Exception as e:  # noqa: BLE001  (reported with the launch, the others still compile)
        return f"cannot import the kernel: {type(e).__name__}: {e}"
    given, constexprs = dict(launch["types"]), dict(launch["constexprs"])
    signature = {}
    for param in fn.params:
        if param.is_constexpr:
            constexprs.setdefault(param.name, param.default)
            signature[param.name] = "constexpr"
        elif param.name in given:
            signature[param.name] = given[param.name]
    try:
        source = ASTSource
        if fn.is_gluon():  # a Gluon kernel (kernels/*_hopper.py's)
            from triton.experimental.gluon._runtime import GluonASTSource as source
        triton.compile(source(fn, signature, constexprs), target=target, options=dict(launch["options"]))
    except Exception as e:  # noqa: BLE001  (any compiler error is the finding)
        return f"{type(e).__name__}: {e}"
    return None


def _main() -> None:
    from triton.backends.compiler import GPUTarget

    request = json.loads(sys.stdin.read())
    backend, arch, warp = request["target"].split(":")
    target = GPUTarget(backend, int(arch), int(warp))
    failures = []
    for launch in request["launches"]:
        error = _compile_one(launch, target)
        if error is not None:
            failures.append({"path": launch["path"], "function": launch["function"], "error": error})
    print(json.dumps(failures))


if __name__ == "__main__":
    _main()
