"""`trident bench`: models and kernels beside their anchors, in one process on one GPU.

    suite.py    models x precisions x batches: trident, torch eager, torch.compile (default and
                max-autotune); latency percentiles, throughput, build time, peak memory, error
    kernels.py  GEMM / conv / fused elementwise / row-reduction microbenchmarks vs cuBLAS / cuDNN /
                copy bandwidth, as % of the measured roofline
    report.py   results.md tables and PNG charts (matplotlib)
    readme.py   rewrites the "## Results" section of README.md from a results directory

Benchmarks measure; they never assert a speed. `--dry-run` runs every step on the CPU (Triton's
interpreter, tiny models, a fake timer) so the pipeline can be tested without a GPU.
"""
