"""INT8: symmetric linear quantization, calibration, int8 layers, explicit Q/DQ import.

  calibrators.py  minmax / entropy / entropy2 / percentile thresholds from |x| statistics
  calibrate.py    runs the graph over calibration batches, collects the statistics
  cache.py        the calibration cache file (one threshold per tensor)
  rewrite.py      implicit quantization: float conv/matmul -> qconv/qmatmul + quantize_linear
  qdq.py          explicit quantization: ONNX Q/DQ pairs around conv/matmul -> qconv/qmatmul
  sensitivity.py  the accuracy budget: which layers to keep in FP16
  plan.py         build_engine's int8 options and the pipeline pass tying these together
  codegen.py      what the conv/GEMM generators do for int8 layers (dequantization epilogue)
  report.py       per-layer precision lines for `trident explain`
(Its benchmarks are `trident bench int8` and `trident bench accuracy`, in tools/benchmarks/.)

Kept import-light: codegen imports this package.
"""


def __getattr__(name):
    if name in ("QuantOptions", "QuantReport", "quantize_pass"):
        from trident.compiler.quantize import plan
        return getattr(plan, name)
    raise AttributeError(name)
