"""Autotuning: time kernel configs on the GPU, remember the winners on disk, ship them in a file.

    from trident.compiler import build_engine
    engine = build_engine(model, tune="fast", timing_cache="resnet50.timing")   # none | fast | full

    from trident.compiler.autotune import export_cache, import_cache
    export_cache("h200.timing")      # every tuned entry on this machine, one file
    import_cache("h200.timing")      # on another machine with the same GPU: no tuning needed

Modules: space.py (Config, search spaces, pruning), cache.py (keys, disk cache, timing-cache
file), measure.py (inputs, CUDA-event timer, output check), compile_pool.py + worker.py (parallel
compiles), tuner.py (the loop), report.py (progress bar, roofline table).
Without a GPU nothing is tuned: the interpreter runs the heuristic configs (a timer can be
injected to exercise the loop, as the tests do).
"""
from trident.compiler.autotune.cache import (CacheWarning, TuningCache, export_cache, import_cache,
                                             read_timing_cache, write_timing_cache)
from trident.compiler.autotune.report import KernelRow, Peaks, TuneReport
from trident.compiler.autotune.space import (Config, DeviceLimits, candidates, device_limits, full_space,
                                             prune, prune_reason)
from trident.compiler.autotune.tuner import LEVELS, check_level, collect_units, tune_program

__all__ = ["CacheWarning", "Config", "DeviceLimits", "KernelRow", "LEVELS", "Peaks", "TuneReport",
           "TuningCache", "candidates", "check_level", "collect_units", "device_limits", "export_cache",
           "full_space", "import_cache", "prune", "prune_reason", "read_timing_cache", "tune_program",
           "write_timing_cache"]
