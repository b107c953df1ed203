"""Autotuning: time kernel configs on the GPU, remember the winners on disk, ship them in a file.

    from trident.compiler import build_engine
    engine = build_engine(model, tune="fast", timing_cache="resnet50.timing")   # none | fast | full

    from trident.compiler.autotune import export_cache, import_cache
    export_cache("h200.timing")      # every tuned entry on this machine, one file
    import_cache("h200.timing")      # on another machine with the same GPU: no tuning needed

Modules: space.py (search spaces over LaunchConfigs, pruning), cache.py (keys, disk cache,
timing-cache file), measure.py (inputs, the GPU timer, output check), compile_pool.py + worker.py
(parallel compiles), tuner.py (the loop), report.py (progress bar, roofline table).
An engine loaded from a file is re-tuned for this GPU by trident.compiler.build.retune.
Without a GPU nothing is tuned: the interpreter runs the heuristic configs (a timer can be
injected to exercise the loop, as the tests do).
"""
from trident.compiler.autotune.cache import (CacheWarning, TuningCache, export_cache, import_cache,
                                             read_timing_cache, write_timing_cache)
from trident.compiler.autotune.report import KernelRow, Peaks, TuneReport
from trident.compiler.autotune.space import (DeviceLimits, candidates, device_limits, full_space, prune,
                                             prune_reason)
from trident.compiler.autotune.tuner import (LEVELS, Tunable, check_level, collect_units, plan_kernels,
                                             problem_of, program_kernels, tune_kernels, tune_plan,
                                             tune_program)
from trident.compiler.ir.launch import LaunchConfig

__all__ = ["CacheWarning", "DeviceLimits", "KernelRow", "LEVELS", "LaunchConfig", "Peaks", "TuneReport",
           "Tunable", "TuningCache", "candidates", "check_level", "collect_units", "device_limits",
           "export_cache", "full_space", "import_cache", "plan_kernels", "problem_of", "program_kernels",
           "prune", "prune_reason", "read_timing_cache", "tune_kernels", "tune_plan", "tune_program",
           "write_timing_cache"]
