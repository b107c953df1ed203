#!/usr/bin/env bash
# The one script for the lent GPU machine (see /work/.library/device): installs trident, then runs
# the stage asked for. Stages: tests | kernels | sweep | tune | models | bench | bench-full | int8 | all. Results land in $OUT (or ./gpu-out).
set -uo pipefail
stage=${1:-all}
out=${OUT:-gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || { echo "install failed"; exit 1; }
export TRIDENT_CACHE_DIR=/tmp/trident-cache PYTHONUNBUFFERED=1 TRIDENT_QUIET=1
# The lent image sets PYTHONDONTWRITEBYTECODE=1, so every new process recompiles the source of each
# torch module it imports (2.8 of the 5.2 s of a profiled warm ResNet-50 build). A deployment keeps
# bytecode caches; so do these runs (in a writable prefix: site-packages is read-only there).
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pycache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"

run_tests() {
  # The CPU suite's kernel and model tests, now compiled for and run on the GPU.
  local files=$(ls tests/test_codegen.py tests/test_kernels_*.py tests/test_random_graphs.py \
    tests/test_fx_frontend.py tests/test_models.py tests/test_int8.py 2>/dev/null)
  python3 -m pytest -q -p no:cacheprovider -n 8 $files 2>&1 | tail -25 | tee "$out/tests.txt"
  python3 -m pytest -q -p no:cacheprovider -m gpu tests 2>&1 | tail -25 | tee "$out/gpu-tests.txt"
}
case "$stage" in
  tests) run_tests ;;
  kernels) python3 -m trident.kernels.bench --json "$out/kernels.json" 2>&1 | tee "$out/kernels.txt" ;;
  sweep) python3 -m trident.kernels.sweep --budget-s 480 --json "$out/sweep.json" 2>&1 | tee "$out/sweep.txt" ;;
  tune) python3 -m trident.tools.tune_bench --json "$out/tune.json" 2>&1 | tee "$out/tune.txt" ;;
  models|bench) python3 -m trident.tools.bench --quick --out "$out/bench" 2>&1 | tee "$out/bench.txt" ;;
  # everything (max-autotune, FP32, convs): far longer than one call; repeat until nothing is "not run"
  # Full mode takes hours: each call resumes from the results committed after the last one
  # (benchmarks/results/h200-bench-full.json), keeping every row measured so far. torch.compile
  # max-autotune benchmarks each conv's candidates for up to a minute, so one ResNet-50 build
  # outlasts a call: inductor's autotune timings (one JSON file) are kept in .gpu-state/ (carry it)
  # and the next call's build skips what was timed. BENCH_TIMEOUT leaves time to save them.
  # BENCH_ARGS: more `trident bench` options (e.g. --precisions fp32 --compile-modes default).
  bench-full) mkdir -p "$out/bench-full" .gpu-state
              [ -f "$out/bench-full/results.json" ] || cp benchmarks/results/h200-bench-full.json \
                "$out/bench-full/results.json" 2>/dev/null
              timings=$(python3 -c "from torch._inductor.codecache import CacheBase as C; print(C.get_local_cache_path())")
              mkdir -p "$(dirname "$timings")"
              [ -f .gpu-state/inductor-autotune.json ] && cp .gpu-state/inductor-autotune.json "$timings"
              timeout ${BENCH_TIMEOUT:-540} python3 -m trident.tools.bench --resume --budget-s ${BUDGET_S:-360} \
                --out "$out/bench-full" ${BENCH_ARGS:-} 2>&1 | tee -a "$out/bench-full.txt"
              [ -f "$timings" ] && cp "$timings" "$out/inductor-autotune.json" ;;
  int8) python3 -m pytest -q -p no:cacheprovider -s tests/test_int8_gpu.py 2>&1 | tail -30 | tee "$out/int8-tests.txt"
        python3 -m trident.compiler.quantize.accuracy --json "$out/int8-digits.json" 2>&1 | tee "$out/int8-digits.txt"
        python3 -m trident.compiler.quantize.bench --json "$out/int8-bench.json" 2>&1 | tee "$out/int8-bench.txt" ;;
  all) run_tests
       python3 -m trident.kernels.bench --json "$out/kernels.json" 2>&1 | tee "$out/kernels.txt"
       python3 -m trident.tools.bench --quick --out "$out/bench" 2>&1 | tee "$out/bench.txt" ;;
esac
