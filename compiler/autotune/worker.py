"""A compile worker: `python -m trident.compiler.autotune.worker`, driven by compile_pool.

Reads one JSON job per line on stdin ({"id", "path", "dtypes", "config"}), compiles the generated
kernel at `path` for that config with `kernel.warmup(...)` (dtypes stand in for tensors, so nothing
is allocated or launched), and answers one JSON line: {"id", "ok": true} or {"id", "error": "..."}.
The compiled binary lands in Triton's on-disk cache, where the tuning process's first launch finds
it. A separate process per worker (not fork/spawn multiprocessing) so the user's __main__ is never
re-imported and the GIL never serializes compiles.
"""
from __future__ import annotations

import json
import os
import sys


def compile_job(job: dict) -> dict:
    import torch

    from trident.kernels.blas import kernel_config
    from trident.kernels.gemm_hopper import tile_options
    from trident.kernels.loader import import_cached_kernel
    from trident.kernels.tma import warmup_descriptors

    try:
        module = import_cached_kernel(job["path"])
        args = [getattr(torch, d) for d in job["dtypes"]]
        config = kernel_config(job["config"])  # what launch() passes the kernel
        if config.get("WS"):  # a Gluon kernel (kernels/attention_hopper.py): compiled at its first launch
            return {"id": job["id"], "ok": True}
        tma = getattr(module, "TMA_OPERANDS", None)  # (A's, B's argument index, B K-major)
        if tma is not None:
            args += warmup_descriptors(args[tma[0]], args[tma[1]], tma[2], config)
        module.kernel.warmup(*args, grid=(1,), **tile_options(config))  # (WS=0: launch()'s switch)
        return {"id": job["id"], "ok": True}
    except Exception as exc:  # noqa: BLE001 - a config that does not compile is a result
        text = str(exc).strip().splitlines()
        return {"id": job["id"], "error": f"{type(exc).__name__}: {text[-1][:300] if text else ''}"}


def main() -> int:
    # Answers go to a private copy of stdout; anything else printed (Triton, ptxas) goes to stderr.
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    import trident.compiler.config  # noqa: F401  (before triton, as everywhere in trident)

    for line in sys.stdin:
        if not line.strip():
            continue
        answers.write(json.dumps(compile_job(json.loads(line))) + "\n")
        answers.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
