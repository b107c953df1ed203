"""`trident bench` and its subcommands: measurements, sweeps and experiments, kept out of the
library packages (compiler/, kernels/, runtime/, models/).

    suite.py        models x precisions x batches: trident, torch eager, torch.compile (default and
                    max-autotune); latency percentiles, throughput, build time, peak memory, error
    kernels.py      `trident bench`'s kernel section: GEMM / conv / fused elementwise / row-reduction
                    microbenchmarks vs cuBLAS / cuDNN / copy bandwidth, as % of the measured roofline
    report.py       results.md tables and PNG charts (matplotlib)
    readme.py       README.md's Results section and docs/results.md from a results JSON
    templates.py    `trident bench kernels`: the GEMM and conv templates, every candidate config
    sweep.py        `trident bench sweep`: a config grid per shape, compiled in parallel
    int8.py         `trident bench int8`: the int8 GEMM, ResNet-50 / BERT INT8 engines vs FP16
    accuracy.py     `trident bench accuracy`: INT8 top-1 accuracy of the digits CNN per calibrator
    runtime.py      `trident bench runtime`: CUDA graphs, streams, the arena, dynamic batch
    tuning.py       `trident bench tune`: autotuning build times, tuned vs heuristic configs
    train_digits.py `trident bench train-digits`: the digits CNN's bundled weights
    results.py      the report writer they share: <gpu>-<what>.json, written as results arrive
    shapes.py       the problem shapes they share (ResNet-50's convs, BERT's GEMMs)

Every timer comes from trident.compiler.timing. Benchmarks measure; they never assert a speed.
`trident bench --dry-run` runs the suite on the CPU (Triton's interpreter, tiny models, a fake
timer) so the pipeline is tested without a GPU.
"""
