"""Bounds sanitizer for Triton's interpreter: every memory access of a launch must land inside one of
the tensors passed to that launch.

On a GPU an out-of-bounds store lands in a neighbouring tensor of the arena and the answer is
silently wrong; in the interpreter it corrupts the Python heap or passes unnoticed. While the
sanitizer is on (TRIDENT_SANITIZE=1, or `with sanitizer.active():`), each launch records the byte
ranges of its tensor arguments, and each load and store (masked or not: an unmasked access is one
whose every lane is live) checks its live lanes against them before touching memory. A lane
outside every argument raises OutOfBoundsError naming the kernel, the program, the argument
nearest the address and the offending element offset. `compute-sanitizer --tool memcheck` does the
same job on the GPU.

Checks are exact for strided views: an address between the elements of a sliced tensor (in the
gap of another tensor sharing its storage) is out of bounds even though it lies inside the span.

It hooks the interpreter's builder (create_masked_load / create_masked_store, which the unmasked,
block-pointer and descriptor accesses go through; atomics too) and GridExecutor (the launch and
its host copies of the arguments, whose data pointers are the addresses the kernel computes with).
"""
from __future__ import annotations

import contextlib
import functools
from dataclasses import dataclass, field

import numpy as np
import torch

from trident.compiler import config
from trident.compiler.errors import OutOfBoundsError


@dataclass(frozen=True)
class Region:
    """The memory of one tensor argument: which bytes belong to its elements."""
    name: str
    base: int                     # address of element 0 (data_ptr)
    shape: tuple[int, ...]
    strides: tuple[int, ...]      # in elements
    dtype: torch.dtype

    @functools.cached_property
    def itemsize(self) -> int:
        return self.dtype.itemsize

    @functools.cached_property
    def numel(self) -> int:
        return int(np.prod(self.shape)) if self.shape else 1

    @functools.cached_property
    def _dims(self) -> list[tuple[int, int]]:
        """(size, stride) of the dims that move in memory, largest stride first."""
        dims = [(s, st) for s, st in zip(self.shape, self.strides) if s > 1 and st != 0]
        return sorted(dims, key=lambda d: -d[1])

    @functools.cached_property
    def span(self) -> tuple[int, int]:
        """[lo, hi) in bytes: from element 0 to the end of the last element."""
        if self.numel == 0:
            return self.base, self.base
        last = sum((s - 1) * st for s, st in self._dims)
        return self.base, self.base + (last + 1) * self.itemsize

    @functools.cached_property
    def dense(self) -> bool:
        """Does every byte of the span belong to some element?"""
        lo, hi = self.span
        return hi - lo == int(np.prod([s for s, _ in self._dims] or [1])) * self.itemsize

    @functools.cached_property
    def nested(self) -> bool:
        """Is each stride past the end of the dims inside it (no two elements overlap)? Then an
        address decomposes into indices greedily, largest stride first."""
        extent = 1
        for size, stride in reversed(self._dims):
            if stride < extent:
                return False
            extent = stride * (size - 1) + extent
        return True

    def contains(self, addr: np.ndarray, width: int) -> np.ndarray:
        """Which of the byte addresses `addr` (accesses of `width` bytes) fall inside an element."""
        lo, hi = self.span
        inside = (addr >= lo) & (addr + width <= hi)
        if self.dense or not self.nested or not inside.any():
            return inside
        offset = (addr[inside] - np.uint64(lo)).astype(np.int64)
        element, byte = np.divmod(offset, self.itemsize)
        ok = byte + width <= self.itemsize
        for size, stride in self._dims:
            index = element // stride
            ok &= index < size
            element -= index * stride
        ok &= element == 0
        inside[inside] = ok
        return inside

    def describe(self) -> str:
        dtype = str(self.dtype).replace("torch.", "")
        return f"{self.name} ({dtype}{list(self.shape)}, strides {list(self.strides)}, {self.numel} elements)"


@dataclass
class Launch:
    kernel: str
    regions: list[Region] = field(default_factory=list)


@dataclass
class _State:
    enabled: bool = False
    installed: bool = False
    launches: list[Launch] = field(default_factory=list)   # the launch being interpreted (nested: none)
    findings: list[str] = field(default_factory=list)      # every error raised, newest last


_state = _State()


def enabled() -> bool:
    return _state.enabled


def findings() -> list[str]:
    """The messages of every out-of-bounds access found so far in this process (a caller that
    catches exceptions broadly, e.g. an autotuner scoring a config, still leaves them here)."""
    return list(_state.findings)


@contextlib.contextmanager
def active(on: bool = True):
    """Turn the sanitizer on (or off) inside a `with` block."""
    if on:
        install()
    before = _state.enabled
    _state.enabled = on
    try:
        yield
    finally:
        _state.enabled = before


def install() -> bool:
    """Hook Triton's interpreter and switch checking on; a no-op without the interpreter (on a
    GPU, compiled kernels are checked with `compute-sanitizer --tool memcheck` instead).
    Returns whether checks are active."""
    if not config.INTERPRET:
        return False
    if not _state.installed:
        _hook_interpreter()
        _state.installed = True
    _state.enabled = True
    return True


# --------------------------------------------------------------------------- checking ----
def _element_width(ptrs) -> int:
    dtype = ptrs.dtype
    while hasattr(dtype, "element_ty"):
        dtype = dtype.element_ty
    return max(1, dtype.primitive_bitwidth // 8)


def check_access(kind: str, ptrs, mask) -> None:
    """Raise OutOfBoundsError if a live lane of this access is outside the launch's tensors."""
    if not _state.enabled or not _state.launches:
        return
    launch = _state.launches[-1]
    addr = np.asarray(ptrs.data).astype(np.uint64, copy=False)
    live = np.ones(addr.shape, bool) if mask is None else np.broadcast_to(np.asarray(mask.data), addr.shape)
    live_addr = addr[live]
    if live_addr.size == 0:
        return
    width = _element_width(ptrs)
    ok = np.zeros(live_addr.shape, bool)
    for region in sorted(launch.regions, key=lambda r: not r.dense):  # cheap checks first
        ok |= region.contains(live_addr, width)
        if ok.all():
            return
    bad = np.flatnonzero(~ok)
    lane = tuple(int(i) for i in np.argwhere(live)[bad[0]])
    message = _describe(kind, launch, int(live_addr[bad[0]]), width, lane, len(bad), live_addr.size)
    _state.findings.append(message)
    raise OutOfBoundsError(message)


def _describe(kind, launch: Launch, addr: int, width: int, lane, bad: int, live: int) -> str:
    program = _program_id()
    where = f"{kind} of {width} bytes in kernel {launch.kernel}" + (f", program {program}" if program else "")
    head = f"{where}, lane {list(lane)}: {bad} of {live} live lanes outside every tensor argument"
    if not launch.regions:
        return f"{head} (the launch has no tensor arguments)"
    region = min(launch.regions, key=lambda r: _distance(r, addr))
    element, byte = divmod(addr - region.base, region.itemsize)
    at = f"element offset {element}" + (f" (+{byte} bytes)" if byte else "")
    lo, hi = region.span
    if addr >= hi:
        relation = f"{(addr - hi) // region.itemsize} elements past its end"
    elif addr < lo:
        relation = f"{(lo - addr + region.itemsize - 1) // region.itemsize} elements before its start"
    else:
        relation = "between its elements (a strided view)"
    return f"{head}; nearest is {region.describe()}, at {at}, {relation}"


def _distance(region: Region, addr: int) -> int:
    lo, hi = region.span
    return 0 if lo <= addr < hi else min(abs(addr - lo), abs(addr - hi))


def _program_id():
    from triton.runtime.interpreter import interpreter_builder

    return getattr(interpreter_builder, "grid_idx", None)


# ---------------------------------------------------------------------------- hooking ----
def _tensor_regions(name: str, arg) -> list[Region]:
    if isinstance(arg, (tuple, list)):
        return [r for k, a in enumerate(arg) for r in _tensor_regions(f"{name}[{k}]", a)]
    base = getattr(arg, "base", None)  # a tensor descriptor, or a TensorWrapper's tensor
    if not isinstance(arg, torch.Tensor) and isinstance(base, torch.Tensor):
        arg = base
    if not isinstance(arg, torch.Tensor):
        return []
    return [Region(name, arg.data_ptr(), tuple(arg.shape), tuple(arg.stride()), arg.dtype)]


def _kernel_name(fn) -> str:
    module = getattr(fn, "__module__", "") or ""
    return f"{module}.{fn.__name__}" if module else fn.__name__


def _unwrap(error: BaseException) -> OutOfBoundsError | None:
    """The OutOfBoundsError behind the interpreter's InterpreterError wrapping, if any."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, OutOfBoundsError):
            return error
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return None


def _hook_interpreter() -> None:
    from triton.runtime import interpreter as ti

    builder, executor = ti.InterpreterBuilder, ti.GridExecutor
    missing = [f"{cls.__name__}.{name}" for cls, name in (
        (builder, "create_masked_load"), (builder, "create_masked_store"),
        (executor, "__call__"), (executor, "_init_args_hst")) if not hasattr(cls, name)]
    if missing:
        raise RuntimeError(f"trident's sanitizer does not know this Triton interpreter "
                           f"(no {', '.join(missing)}); turn TRIDENT_SANITIZE off")
    load, store = builder.create_masked_load, builder.create_masked_store

    def masked_load(self, ptrs, mask, *args, **kwargs):
        check_access("load", ptrs, mask)
        return load(self, ptrs, mask, *args, **kwargs)

    def masked_store(self, ptrs, value, mask, *args, **kwargs):
        check_access("store", ptrs, mask)
        return store(self, ptrs, value, mask, *args, **kwargs)

    builder.create_masked_load, builder.create_masked_store = masked_load, masked_store
    if hasattr(builder, "create_atomic_rmw"):
        rmw = builder.create_atomic_rmw

        def atomic_rmw(self, op, ptr, val, mask, *args, **kwargs):
            check_access("atomic", ptr, mask)
            return rmw(self, op, ptr, val, mask, *args, **kwargs)
        builder.create_atomic_rmw = atomic_rmw
    if hasattr(builder, "create_atomic_cas"):
        cas = builder.create_atomic_cas

        def atomic_cas(self, ptr, *args, **kwargs):
            check_access("atomic", ptr, None)
            return cas(self, ptr, *args, **kwargs)
        builder.create_atomic_cas = atomic_cas

    init_args, call = executor._init_args_hst, executor.__call__

    def init_args_hst(self, args_dev, kwargs):
        args_hst, kwargs_hst = init_args(self, args_dev, kwargs)
        if _state.launches:  # the pointers the kernel computes with are these host copies'
            regions = _state.launches[-1].regions
            for name, arg in zip(self.arg_names, args_hst):
                regions += _tensor_regions(name, arg)
            for name, arg in kwargs_hst.items():
                regions += _tensor_regions(name, arg)
        return args_hst, kwargs_hst

    def launch(self, *args, **kwargs):
        _state.launches.append(Launch(_kernel_name(self.fn)))
        try:
            return call(self, *args, **kwargs)
        except Exception as e:
            found = _unwrap(e)
            if found is None or found is e:
                raise
            raise found.with_traceback(None) from None
        finally:
            _state.launches.pop()

    executor._init_args_hst, executor.__call__ = init_args_hst, launch
