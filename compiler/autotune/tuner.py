"""tune_program() / tune_plan(): choose every kernel's launch config by timing candidates on the GPU.

Both work on Tunables, one per generated kernel (name, source, arguments, problem, config):
tune_program on a freshly generated Program (codegen's KernelSource.problem), tune_plan on a plan
read back from an engine file (each kernel's source declares its PROBLEM; see problem_of).

1. Group the kernels into problems: matmul/conv/depthwise kernels with the same
   problem and operand layouts share one tuning run whatever their epilogues (ResNet-50's 53 convs
   are ~23 problems); other kernels share one only when their code is identical.
2. Look every kernel up in the timing-cache file (if given) and the on-disk cache; a problem all of
   whose kernels hit is not timed.
3. For the rest: candidates per level (space.py), compiled in parallel worker processes
   (compile_pool.py), timed one problem at a time on the GPU (measure.py); a config that fails to
   compile or run scores infinitely slow. The winner is checked against the heuristic config's
   output before it is kept.
4. Every kernel gets the chosen config; results go to the disk cache and the timing-cache file.
"""
from __future__ import annotations

import ast
import contextlib
import dataclasses
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import torch

from trident.compiler import config
from trident.compiler.autotune import measure
from trident.compiler.autotune.cache import (LEVEL_RANK, TuningCache, canonical, key_components,
                                             layout_signature, make_key, new_entry, read_timing_cache,
                                             usable, write_timing_cache)
from trident.compiler.autotune.compile_pool import CompilePool
from trident.compiler.autotune.constraints import config_error
from trident.compiler.autotune.report import KernelRow, Peaks, Progress, TuneReport
from trident.compiler.autotune.space import REASONS, DeviceLimits, candidates, device_limits, flops
from trident.compiler.errors import CLEAR_HINT, CacheWarning, TridentError
from trident.compiler.ir.launch import LaunchConfig
from trident.kernels.identity import identity as identity_of
from trident.kernels.loader import default_kernel_dir, load_kernel

LEVELS = ("none", "fast", "full")
SHARED_BY_SHAPE = ("matmul", "conv", "depthwise")  # tuned once per shape, whatever the epilogue
KEEP_TRIALS = 16
SLOW_CUTOFF = 2.0  # a config first estimated this many times slower than the best is not sampled


def check_level(level: str) -> str:
    if level not in LEVELS:
        raise TridentError(f"tune must be one of {LEVELS}, got {level!r}")
    return level


def notice(message: str) -> None:
    if not config.QUIET:
        print(message, file=sys.stderr)




@dataclass
class Tunable:
    """One generated kernel whose launch config the tuner may change."""
    name: str
    source: str
    args: list[str]
    outputs: list[str]
    problem: dict          # the template and its sizes (codegen's KernelSource.problem)
    config: LaunchConfig


def problem_of(source: str) -> dict:
    """The PROBLEM a generated kernel's source declares ({} if none): a literal, read without
    running the source."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return {}
    for node in tree.body:
        if isinstance(node, ast.Assign) and [getattr(t, "id", None) for t in node.targets] == ["PROBLEM"]:
            try:
                value = ast.literal_eval(node.value)
            except ValueError:
                return {}
            return value if isinstance(value, dict) else {}
    return {}


@dataclass
class Unit:
    """Kernels that share one tuning run."""
    kernels: list = field(default_factory=list)
    components: list = field(default_factory=list)   # cache key components, one per kernel
    keys: list = field(default_factory=list)
    hits: list = field(default_factory=list)         # cache entry or None, one per kernel

    @property
    def problem(self) -> dict:
        return self.kernels[0].problem

    @property
    def base(self) -> LaunchConfig:
        return self.kernels[0].config

    _representative: object = None

    @property
    def representative(self) -> Tunable:
        """The kernel timed: the first one the cache missed (its own code is what is new).
        Decided once, at the first ask (after the cache lookups)."""
        if self._representative is None:
            self._representative = next((k for k, h in zip(self.kernels, self.hits) if h is None),
                                        self.kernels[0])
        return self._representative


def collect_units(kernels: list[Tunable], layouts: dict, identity: dict) -> list[Unit]:
    units: dict[str, Unit] = {}
    for kernel in kernels:
        if kernel.problem.get("template") not in REASONS:  # the templates with a search space
            continue
        arg_layouts = [layouts[a] for a in kernel.args]
        components = key_components(kernel.source, kernel.problem, arg_layouts, identity)
        if kernel.problem["template"] in SHARED_BY_SHAPE:
            signature = make_key({"problem": canonical(kernel.problem), "base": kernel.config.to_dict(),
                                  "operands": [layout_signature(lay) for lay in arg_layouts[:2]],
                                  "outputs": [layout_signature(layouts[o]) for o in kernel.outputs]})
        else:
            signature = make_key(components)
        unit = units.setdefault(signature, Unit())
        unit.kernels.append(kernel)
        unit.components.append(components)
        unit.keys.append(make_key(components))
    return list(units.values())


def program_kernels(program) -> list[Tunable]:
    """The tunables of a Program's kernel steps (compiler/codegen/program.py)."""
    return [Tunable(s.kernel.name, s.kernel.source, list(s.kernel.args), list(s.outputs), s.kernel.problem,
                    s.kernel.config) for s in program.steps if s.kind == "kernel"]


def plan_kernels(plan) -> list[Tunable]:
    """The tunables of a Plan's kernel steps, each with the problem its source declares."""
    return [Tunable(s.name, s.source, list(s.args), list(s.outputs), problem_of(s.source), s.config)
            for s in plan.kernel_steps()]


def _gpu_usable(device) -> bool:
    if not config.HAS_CUDA or config.INTERPRET:
        return False
    return device is None or torch.device(device).type == "cuda"


def tune_program(program, level: str = "fast", **options) -> TuneReport | None:
    """Set each kernel step's `kernel.config` of a Program to the fastest config found; returns
    the report (None when nothing was tuned). Options: see tune_kernels."""
    kernels = program_kernels(program)
    report = tune_kernels(kernels, program.layouts, level, **options)
    for step, kernel in zip([s for s in program.steps if s.kind == "kernel"], kernels):
        step.kernel.config = kernel.config
    return report


def tune_plan(plan, level: str = "fast", **options):
    """(the plan with each kernel's fastest config, the report): re-tunes a plan, e.g. one read
    from an engine file built on another GPU. Options: see tune_kernels."""
    kernels = plan_kernels(plan)
    report = tune_kernels(kernels, plan.layouts, level, **options)
    chosen = iter(kernels)
    steps = [dataclasses.replace(s, config=next(chosen).config) if s.kind == "kernel" else s
             for s in plan.steps]
    return dataclasses.replace(plan, steps=steps), report


def tune_kernels(kernels: list[Tunable], layouts: dict, level: str = "fast", *, timing_cache=None, cache=None,
                 device=None, timer=None, peaks: Peaks | None = None, workers: int | None = None,
                 verify: bool | None = None, progress: bool | None = None,
                 limits: DeviceLimits | None = None, fast_count: int | None = None) -> TuneReport | None:
    """Set each kernel's `config` to the fastest config found; returns the report.

    level: "none" (heuristic configs; with a timing_cache, its entries are still applied), "fast"
    (a few pruned candidates per problem) or "full" (the whole pruned space).
    timing_cache: a file to read entries from and to write this build's entries to.
    cache: a TuningCache or directory (default CACHE_DIR/autotune).
    timer: `timer(run, config) -> ms`; default times on the GPU (trident.compiler.timing). Without
    a GPU and without an injected timer, nothing is tuned (the interpreter uses the heuristic configs).
    fast_count: the tiles "fast" times per problem (default: space.FAST_CANDIDATES).
    """
    check_level(level)
    if level == "none" and timing_cache is None:
        return None
    on_gpu = timer is None
    if on_gpu and not _gpu_usable(device):
        if level != "none":
            notice(f"trident: tune={level!r} needs a CUDA GPU (kernels run in Triton's interpreter "
                   f"here); using the heuristic configs.")
        return None
    start = time.perf_counter()
    # By default kernels run where Triton runs them: the GPU, or (no GPU) the interpreter on the CPU,
    # an injected timer's as well as the GPU timer's.
    device = torch.device(device if device is not None else ("cuda" if _gpu_usable(None) else "cpu"))
    if device.type == "cuda" and device.index is None:
        device = torch.device("cuda", torch.cuda.current_device())
    limits = limits or (device_limits(device) if on_gpu else DeviceLimits())
    cache = cache if isinstance(cache, TuningCache) else TuningCache(cache)
    shipped = read_timing_cache(timing_cache) if timing_cache is not None else {}
    report = TuneReport(level, peaks=peaks or Peaks())
    units = collect_units(kernels, layouts, identity_of(device))
    todo = []
    for unit in units:
        unit.hits = [_checked(_lookup(key, shipped, cache, level), unit, cache, timing_cache)
                     for key in unit.keys]
        if level == "none" or all(h is not None for h in unit.hits):
            report.rows.append(_apply_hits(unit, layouts))
        else:
            todo.append(unit)
    if todo:
        tuner = _Tuner(layouts, level, device, limits, timer or measure.gpu_timer, cache,
                       on_gpu if verify is None else verify, report, fast_count)
        show = (not config.QUIET) if progress is None else progress
        # Triton launches on the current device: make it the tuning device.
        with torch.cuda.device(device) if device.type == "cuda" else contextlib.nullcontext():
            tuner.run(todo, workers if workers is not None else (config.TUNE_WORKERS if on_gpu else 0), show)
    if timing_cache is not None:
        entries = {k: h for u in units for k, h in zip(u.keys, u.hits) if h is not None}
        write_timing_cache(timing_cache, entries)
    order = {k.name: i for i, k in enumerate(kernels)}
    report.rows.sort(key=lambda r: order.get(r.name, 0))
    report.seconds = time.perf_counter() - start
    if not config.QUIET and (progress is None or progress):
        print(report.table() if todo else report.summary(), file=sys.stderr)
    return report


def _lookup(key: str, shipped: dict, cache: TuningCache, level: str) -> dict | None:
    entry = shipped.get(key)
    if entry is not None and usable(entry, level):
        disk = cache.get(key)
        if disk is None or LEVEL_RANK[disk["level"]] < LEVEL_RANK[entry["level"]]:
            cache.put(entry)  # a shipped entry becomes a local one too
        return entry
    entry = cache.get(key)
    return entry if entry is not None and usable(entry, level) else None


def _checked(entry: dict | None, unit: Unit, cache: TuningCache, timing_cache) -> dict | None:
    """The entry, unless its config fails the template's constraints (constraints.py): then it is
    dropped with a warning naming where it came from, and the kernel is tuned again."""
    if entry is None:
        return None
    why = config_error(entry["config"], unit.problem, unit.base)
    if why is None:
        return entry
    where = cache.path(entry["key"]) if cache.path(entry["key"]).exists() else timing_cache
    warnings.warn(f"trident: dropping the tuned config of kernel {unit.kernels[0].name} read from "
                  f"{where}: {why}; it will be tuned again ({CLEAR_HINT})", CacheWarning, stacklevel=3)
    return None


def _apply_hits(unit: Unit, layouts: dict) -> KernelRow:
    for kernel, hit in zip(unit.kernels, unit.hits):
        if hit is not None:
            kernel.config = LaunchConfig.from_dict(hit["config"])
    hit = next((h for h in unit.hits if h is not None), None)
    row = _row(unit, layouts, unit.kernels[0].config,
               "cached" if all(h is not None for h in unit.hits) else "heuristic")
    if hit is not None:
        row.ms = hit["ms"] if hit["ms"] is not None else math.nan
        row.base_ms = hit.get("heuristic_ms") or math.nan
    return row


def _row(unit: Unit, layouts: dict, cfg: LaunchConfig, status: str) -> KernelRow:
    rep = unit.representative
    return KernelRow(rep.name, len(unit.kernels), unit.problem["template"], unit.problem, cfg, status,
                     flops=flops(unit.problem), bytes=measure.arg_bytes([layouts[a] for a in rep.args]))


class _LazyArgs:
    """Random argument sets for one kernel, allocated on first use and shared by its configs."""

    def __init__(self, layouts, outputs: list[bool], device, copies: int):
        self.layouts, self.outputs, self.device, self.copies = layouts, outputs, device, copies
        self._sets = None

    @property
    def sets(self):
        if self._sets is None:
            self._sets = measure.make_arg_sets(self.layouts, self.outputs, self.device, self.copies)
        return self._sets

    def output_values(self, index: int = 0) -> list[torch.Tensor]:
        return [t for t, out in zip(self.sets[index], self.outputs) if out]


class _Tuner:
    def __init__(self, layouts, level, device, limits, timer, cache, verify, report, fast_count=None):
        self.layouts, self.level, self.device, self.limits = layouts, level, device, limits
        self.timer, self.cache, self.verify, self.report = timer, cache, verify, report
        self.fast_count = fast_count

    def run(self, units: list[Unit], workers: int, show: bool) -> None:
        kernel_dir = default_kernel_dir()
        plans = []
        for unit in units:
            rep = unit.representative
            module = load_kernel(rep.name, rep.source, kernel_dir)
            plans.append((unit, module, candidates(unit.problem, unit.base, self.level, self.limits,
                                                   self.fast_count)))
        pool = None
        if workers > 0:
            pool = CompilePool(min(workers, sum(len(c) for _, _, c in plans)))
        futures = {}
        if pool is not None:
            for unit, module, cands in plans:
                for cfg in cands:
                    futures[(id(unit), cfg)] = pool.submit(module.__file__, self._dtypes(unit.representative),
                                                           cfg.to_dict())
        bar = Progress(len(plans), enabled=show)
        bar.update(0, f"compiling with {pool.workers} workers" if pool else "")
        try:
            for i, (unit, module, cands) in enumerate(plans):
                row = self._tune(unit, module, cands, futures, bar, i)
                self.report.rows.append(row)
                bar.update(i + 1, f"{row.name}: {measure_text(row)}")
            if pool is not None:
                self._precompile_members(pool, [unit for unit, _, _ in plans], kernel_dir, bar)
        finally:
            bar.close()
            if pool is not None:
                pool.cancel_pending()
                pool.close()
                if pool.broken:
                    self.report.notes.append(f"note: {pool.broken}; configs compiled at first launch")

    def _dtypes(self, kernel: Tunable) -> list[str]:
        return [canonical(self.layouts[a].dtype) for a in kernel.args]

    def _precompile_members(self, pool, units: list[Unit], kernel_dir, bar: Progress) -> None:
        """Compile the kernels that shared a problem with the timed one (other epilogues) with the
        chosen config, in parallel now rather than one by one at the engine's first run."""
        jobs = [pool.submit(load_kernel(k.name, k.source, kernel_dir).__file__, self._dtypes(k), k.config.to_dict())
                for unit in units for k in unit.kernels if k is not unit.representative]
        for n, job in enumerate(jobs):
            job.result()
            bar.update(len(units), f"compiling the other {len(jobs)} kernels: {n + 1} done")

    def _tune(self, unit: Unit, module, cands: list[LaunchConfig], futures: dict, bar: Progress,
              index: int) -> KernelRow:
        rep = unit.representative
        layouts = [self.layouts[a] for a in rep.args]
        outputs = [a in rep.outputs for a in rep.args]
        copies = measure.copies_for(measure.arg_bytes(layouts), self.limits.l2_bytes) \
            if self.device.type == "cuda" else 1
        args = _LazyArgs(layouts, outputs, self.device, copies)
        trials: dict[LaunchConfig, tuple[float, str | None]] = {}
        for n, cfg in enumerate(cands):
            compiled = futures[(id(unit), cfg)].result() if (id(unit), cfg) in futures else {}
            if "error" in compiled:
                trials[cfg] = (math.inf, compiled["error"])
                continue
            trials[cfg] = self._time(module, args, cfg, min([ms for ms, _ in trials.values()] or [math.inf]))
            best = min(ms for ms, _ in trials.values())
            bar.update(index, f"{rep.name}: {n + 1}/{len(cands)} configs, best {best:.4f} ms")
        self.report.compiled += len(trials)
        base = unit.base
        chosen = self._choose(module, args, base, trials)
        ms, _ = trials.get(chosen, (math.inf, None))
        row = _row(unit, self.layouts, chosen, "tuned" if math.isfinite(ms) else "failed")
        row.ms, row.base_ms = ms, trials.get(base, (math.inf, None))[0]
        row.trials = [[str(c), t if math.isfinite(t) else None, e]
                      for c, (t, e) in sorted(trials.items(), key=lambda kv: kv[1][0])]
        if math.isfinite(ms):
            self._store(unit, chosen, ms, row)
        else:
            self.report.notes.append(f"note: every config of {rep.name} failed; it keeps its heuristic "
                                     f"config ({row.trials[0][2] if row.trials else ''})")
        return row

    def _time(self, module, args: _LazyArgs, cfg: LaunchConfig, best: float) -> tuple[float, str | None]:
        run = _Run(module, args, cfg.to_dict())
        try:
            if self.timer is measure.gpu_timer:  # stop sampling configs far slower than the best
                ms = float(measure.gpu_timer(run, cfg, cutoff_ms=SLOW_CUTOFF * best))
            else:
                ms = float(self.timer(run, cfg))
        except Exception as exc:  # noqa: BLE001 - a config that cannot run is a data point
            text = str(exc).strip().splitlines()
            return math.inf, f"{type(exc).__name__}: {text[-1][:200] if text else ''}"
        return (ms, None) if math.isfinite(ms) and ms > 0 else (math.inf, "no finite time")

    def _choose(self, module, args: _LazyArgs, base: LaunchConfig, trials: dict) -> LaunchConfig:
        """The fastest config whose outputs match the heuristic config's (when verifying)."""
        ranked = sorted((c for c, (t, _) in trials.items() if math.isfinite(t)), key=lambda c: trials[c][0])
        if not ranked:
            return base
        if not self.verify or ranked[0] == base or not math.isfinite(trials.get(base, (math.inf,))[0]):
            return ranked[0]
        reference = self._outputs(module, args, base)
        for cfg in ranked:
            if cfg == base or measure.outputs_close(self._outputs(module, args, cfg), reference):
                return cfg
            trials[cfg] = (math.inf, "outputs differ from the heuristic config's")
        return base

    def _outputs(self, module, args: _LazyArgs, cfg: LaunchConfig) -> list[torch.Tensor]:
        module.launch(*args.sets[0], config=cfg.to_dict())
        return [t.clone() for t in args.output_values(0)]

    def _store(self, unit: Unit, chosen: LaunchConfig, ms: float, row: KernelRow) -> None:
        base_ms = row.base_ms if math.isfinite(row.base_ms) else None
        for i, (kernel, components) in enumerate(zip(unit.kernels, unit.components)):
            kernel.config = chosen
            entry = new_entry(components, chosen.to_dict(), ms, self.level, heuristic_ms=base_ms,
                              problem=canonical(unit.problem), trials=row.trials[:KEEP_TRIALS])
            try:
                self.cache.put(entry)
            except OSError as exc:
                self.report.notes.append(f"note: could not write the autotune cache ({exc})")
            unit.hits[i] = entry


class _Run:
    """What a timer calls: one launch of the kernel with `config`, rotating argument sets."""

    def __init__(self, module, args: _LazyArgs, launch_config: dict):
        self.module, self.args, self.config = module, args, launch_config
        self._i = 0

    def __call__(self) -> None:
        sets = self.args.sets
        self.module.launch(*sets[self._i % len(sets)], config=self.config)
        self._i += 1


def measure_text(row: KernelRow) -> str:
    if not math.isfinite(row.ms):
        return "failed"
    speedup = row.base_ms / row.ms if math.isfinite(row.base_ms) else math.nan
    return f"{row.ms:.4f} ms" + (f" ({speedup:.2f}x heuristic)" if math.isfinite(speedup) else "")
