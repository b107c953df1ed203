#!/usr/bin/env bash
# Runs trident's GPU checks and benchmarks on a machine with an NVIDIA GPU: installs trident from
# this checkout, then runs the stage asked for. Results land in $OUT (or ./gpu-out), named
# <gpu>-<what>.json (docs/benchmarks.md); copy the ones to keep into benchmarks/results/.
#   stages: install | tests | safety | memcheck | check | focus | attention | fp32 | fp32-dots | attention-bench | attention-ab | attention-report | ws-gemm | ws-costs | residual-norm | moe | perf | perf-bench | zoo | zoo-attention | profile-zoo | trust | dynamic | kernels | sweep | tune | runtime |
#           models | bench | bench-full | int8 | all.  T_<stage>: a time limit in seconds for the long steps.
set -uo pipefail
stage=${1:-all}
out=${OUT:-gpu-out}
mkdir -p "$out"
python3 -m pip install -q --no-build-isolation --no-deps -e . >/dev/null 2>&1 || { echo "install failed"; exit 1; }
export TRIDENT_CACHE_DIR=/tmp/trident-cache PYTHONUNBUFFERED=1 TRIDENT_QUIET=1
# (pytest's summary lines keep each failure's reason whole)
export COLUMNS=400
# Without bytecode caches every new process recompiles the source of each torch module it imports
# (2.8 of the 5.2 s of a profiled warm ResNet-50 build): keep them, in a writable prefix, as a
# deployment would.
unset PYTHONDONTWRITEBYTECODE
export PYTHONPYCACHEPREFIX=/tmp/pycache
nvidia-smi --query-gpu=name,driver_version,clocks.sm,clocks.mem --format=csv,noheader
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__)"
bench() { python3 -m trident.tools bench "$@"; }

run_tests() {
  # The CPU suite's kernel and model tests, now compiled for and run on the GPU. (The frontend's
  # and the torch.compile backend's own tests build their models on the CPU: CI runs them.)
  local files=$(ls tests/test_codegen.py tests/test_kernels_*.py tests/test_random_graphs.py \
    tests/test_fx_frontend.py tests/test_models.py tests/test_int8.py tests/test_prims.py \
    tests/test_memory_safety.py tests/test_nan_semantics.py tests/test_attention_kernel.py tests/test_attention_hopper.py \
    tests/test_per_element_moves.py tests/test_long_reductions.py tests/test_reshape_copies.py \
    tests/test_cumsum.py tests/test_gathers.py tests/test_gathers_as_slices.py \
    tests/test_fx_decompose.py tests/test_blas.py tests/test_autotune.py tests/test_broadcasts.py \
    tests/test_attention_graphs.py tests/test_transformers_tiny.py tests/test_activations.py tests/test_mha.py \
    tests/test_transposes.py tests/test_patch_convs.py tests/test_transformers_breadth.py \
    tests/test_vision_transformers_tiny.py tests/test_onnx_layout.py tests/test_onnx_spatial.py \
    tests/test_fx_indexing.py tests/test_kernels_matmul.py tests/test_fx_math.py \
    tests/test_resize_upsampling.py tests/test_matmul_batches.py tests/test_gemm_hopper.py \
    tests/test_sort.py tests/test_integer_math.py tests/test_moe.py tests/test_scatter.py tests/test_grid_sample.py \
    tests/test_linear_scan.py tests/test_fft.py tests/test_complex.py tests/test_dynamo_dynamic.py tests/test_fp32_dots.py \
    2>/dev/null)
  # SIGINT at the time limit: pytest still prints the failures it has seen and their summary.
  timeout -k 15 -s INT "${T_TESTS:-400}" python3 -m pytest -p no:cacheprovider -n 14 -v --tb=short $files \
    > "$out/tests.txt" 2>&1
  # transformers' generate through torch.compile, static and dynamic caches (the file's other
  # tests build CPU engines)
  timeout -k 15 -s INT "${T_GENERATE:-200}" python3 -m pytest -p no:cacheprovider -n 4 -v --tb=short tests/test_generate.py \
    -k transformers_generate >> "$out/tests.txt" 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" "$out/tests.txt" | tail -25
  timeout -k 15 -s INT "${T_TESTS:-400}" python3 -m pytest -p no:cacheprovider -n 14 -v --tb=short -m gpu tests \
    > "$out/gpu-tests.txt" 2>&1
  grep -E "^(FAILED|ERROR)|passed|failed" "$out/gpu-tests.txt" | tail -25
}
# memcheck sees an access outside every allocation; PYTORCH_NO_CUDA_MEMORY_CACHING gives each torch
# tensor its own, so a stray access past a weight or an output is outside one (docs/memory-safety.md);
# TRIDENT_CUDA_GRAPHS=0: the sanitizer breaks stream capture, so engines launch eagerly under it.
memcheck() {
  TRIDENT_CUDA_GRAPHS=0 PYTORCH_NO_CUDA_MEMORY_CACHING=1 timeout "${T_MEMCHECK:-300}" compute-sanitizer --tool memcheck \
    --leak-check no --target-processes all --error-exitcode 1 "$@"
}
# The memcheck runs go side by side (each is one process on one core, bound by the sanitizer).
run_safety() {
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_memory_safety.py tests/test_nan_semantics.py \
    tests/test_prims.py tests/test_per_element_moves.py > "$out/memcheck-kernels.txt" 2>&1 &
  # the looped reductions, dense copies, scans, index-checked gathers, library GEMMs' epilogue passes
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_long_reductions.py tests/test_reshape_copies.py \
    tests/test_cumsum.py tests/test_gathers.py tests/test_blas.py tests/test_broadcasts.py tests/test_activations.py tests/test_transposes.py tests/test_kernels_depthwise.py tests/test_patch_convs.py \
    tests/test_fx_math.py tests/test_resize_upsampling.py tests/test_matmul_batches.py tests/test_gemm_hopper.py > "$out/memcheck-new.txt" 2>&1 &
  # the sort and scatter kernels, integer reductions and division, the grouped GEMM and the MoE dispatch
  # (the whole models through torch.compile run in run_tests: under the sanitizer they take minutes)
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_sort.py tests/test_integer_math.py \
    tests/test_linear_scan.py tests/test_fft.py tests/test_complex.py tests/test_fx_indexing.py \
    -k "not mamba and not fnet" > "$out/memcheck-sort.txt" 2>&1 &
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_scatter.py tests/test_grid_sample.py \
    -k "not models_through_torch_compile and not through_torch_export and not deformable_detr" \
    > "$out/memcheck-moe.txt" 2>&1 &
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_attention_kernel.py -k "odd_lengths or \
    causal_alignments or many_query or padding or per_key or window or relative or grouped or strided or rank3 or empty \
    or never_read or fully_masked or zero_nan or paired" > "$out/memcheck-attention.txt" 2>&1 &
  # the warp-specialized Hopper kernel (TMA loads, every odd length and alignment of its tests)
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_attention_hopper.py > "$out/memcheck-attention-hopper.txt" 2>&1 &
  memcheck python3 scripts/memcheck_models.py --no-graph > "$out/memcheck-models.txt" 2>&1 &
  # the breadth models that reach the newer paths: einsum as batched matmuls (XLNet, Funnel), strided
  # slices of an unfold (ConvBERT), GEMM rows over size-1 dims (LeViT), 1-D pools (SEW), GQA (Mistral)
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_transformers_breadth.py tests/test_kernels_matmul.py \
    -k "xlnet or funnel or convbert or levit or sew or mistral or not breadth" > "$out/memcheck-breadth.txt" 2>&1 &
  # profiled engines (generic kernels, ALIGNED variants) and KV-cache generation
  memcheck python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_dynamic_gpu.py > "$out/memcheck-dynamic.txt" 2>&1 &
  wait
  for f in kernels new sort moe attention attention-hopper models dynamic breadth; do echo "== memcheck $f"; tail -n 6 "$out/memcheck-$f.txt"; done
}
run_attention() {
  timeout "${T_ATTENTION:-300}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_attention_kernel.py \
    tests/test_attention_hopper.py tests/test_attention_graphs.py 2>&1 | tee "$out/attention-tests.txt" | tail -8
  run_attention_bench
}
run_attention_bench() {
  timeout "${T_ATTENTION:-300}" python3 -m trident.tools bench attention ${ATTENTION_ARGS:---no-tune} --out "$out" \
    2>&1 | tee "$out/attention.txt"
}
# Conv1d through the conv templates, nn.MultiheadAttention through the attention kernel: their GPU
# tests, their kernel tests under memcheck, then ConvNeXt-T / ViT-B/16 / the Whisper encoder beside
# torch eager and torch.compile (trident bench perf, about 5 minutes).
run_perf() {
  timeout "${T_PERF:-300}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_conv1d.py tests/test_mha.py \
    2>&1 | tee "$out/perf-tests.txt" | tail -8
  run_perf_memcheck
  run_perf_bench
  # the fused-epilogue GEMMs of those models, every fast-level tile beside cuBLAS
  timeout "${T_EPILOGUES:-300}" python3 -m trident.tools bench epilogues --out "$out" 2>&1 | tail -45 | tee "$out/epilogues.txt"
}
# ConvNeXt-T, ViT-B/16, the Whisper encoder and BERT-base (sequence 512) beside torch, rounds in turn.
run_perf_bench() {
  timeout "${T_PERF_BENCH:-540}" python3 -m trident.tools bench perf --out "$out" ${PERF_ARGS:-} 2>&1 | tee "$out/perf.txt"
}
run_perf_memcheck() {
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_conv1d.py -k "module_runs and (plain or strided \
    or grouped or depthwise or length_1) or whisper_stem_has" > "$out/memcheck-conv1d.txt" 2>&1 &
  memcheck python3 -m pytest -q -p no:cacheprovider tests/test_mha.py -k "one_attention_kernel or masked \
    or causal or native or deep" > "$out/memcheck-mha.txt" 2>&1 &
  wait
  for f in conv1d mha; do echo "== memcheck $f"; tail -n 6 "$out/memcheck-$f.txt"; done
}
# The model zoo in parts that fit one command: ZOO_MODELS picks the models (names or globs, e.g.
# 'transformers/*' or 'torchvision/resnet50,torchvision/vit_b_16'), ZOO_ARGS adds options
# (--precisions fp16, --entry compile, --batch 32), ZOO_JOBS models build side by side (their
# timings take turns). Rows accumulate in $out/zoo/zoo.json across runs (--merge); zoo.md is the
# whole table so far. T_ZOO bounds the run, T_ZOO_MODEL each model (Swin, DenseNet and
# EfficientNet need about 400 s beside 5 other workers: the anchors and the ONNX export dominate).
run_zoo() {
  mkdir -p "$out/zoo"
  timeout "${T_ZOO:-460}" python3 -m trident.tools zoo --quick --merge --models "${ZOO_MODELS:-transformers/*}" \
    --timeout "${T_ZOO_MODEL:-420}" --jobs "${ZOO_JOBS:-6}" --json "$out/zoo/zoo.json" --markdown "$out/zoo/zoo.md" ${ZOO_ARGS:-} \
    2>&1 | tee -a "$out/zoo.txt" | tail -40
}
# Startup of a saved ResNet-50 fp16 engine (loading checks every kernel, docs/engine-files.md):
# median of fresh `trident run` processes and of load_engine alone. BASE_CHECKOUT: a checkout of
# the previous trident to time as well, on an engine file it builds itself.
run_trust() {
  python3 -m trident.tools compile resnet50 --precision fp16 -o /tmp/r50-fp16.engine 2>&1 | tail -2
  local compare=""
  if [ -n "${BASE_CHECKOUT:-}" ]; then
    (cd "$BASE_CHECKOUT" && PYTHONPATH="$BASE_CHECKOUT" python3 -m trident.tools compile resnet50 \
      --precision fp16 -o /tmp/r50-fp16-base.engine 2>&1 | tail -2)
    compare="--checkout $BASE_CHECKOUT --other-engine /tmp/r50-fp16-base.engine"
  fi
  timeout "${T_TRUST:-400}" python3 scripts/load_time.py /tmp/r50-fp16.engine --runs 5 $compare 2>&1 \
    | tee "$out/load-time.txt"
}
case "$stage" in
  trust) run_trust ;;
  tests) run_tests ;;
  perf) run_perf ;;
  perf-bench) run_perf_bench ;;
  safety) run_safety ;;
  memcheck) run_safety & run_perf_memcheck; wait ;;   # every memcheck run, side by side
  # Every correctness check at once (the GPU tests beside the memcheck runs, which use one core
  # each): no timings are taken, so sharing the GPU changes no figure.
  check) { run_safety & run_perf_memcheck; wait; } > "$out/safety.txt" 2>&1 &
         run_tests; wait; cat "$out/safety.txt" ;;
  attention) run_attention ;;
  # fp32 models through torch.compile beside eager and torch.compile (the library GEMMs, 3xTF32
  # convolutions and attention: docs/performance.md, "FP32"; FP32_MODELS: the zoo's models), then
  # with every dot IEEE (TRIDENT_FP32_DOTS=ieee, no torch.compile anchor) to set beside them
  fp32) models="${FP32_MODELS:-transformers/bert,torchvision/vit_b_16,torchvision/resnet50}"
        timeout "${T_FP32:-300}" python3 -m trident.tools zoo --precisions fp32 --entry compile --quick --models "$models" \
          --json "$out/zoo-fp32.json" --markdown "$out/zoo-fp32.md" 2>&1 | tail -8
        TRIDENT_FP32_DOTS=ieee TRIDENT_CACHE_DIR=/tmp/trident-cache-ieee timeout "${T_FP32:-300}" python3 -m trident.tools zoo \
          --precisions fp32 --entry compile --quick --no-inductor --models "$models" \
          --json "$out/zoo-fp32-ieee.json" --markdown "$out/zoo-fp32-ieee.md" 2>&1 | tail -8 ;;
  # IEEE against 3xTF32 dots in the attention, conv and GEMM templates beside SDPA, cuDNN and cuBLAS,
  # errors against float64 (scripts/fp32_dots.py)
  fp32-dots) timeout "${T_FP32:-240}" python3 scripts/fp32_dots.py --out "$out" 2>&1 | tee "$out/fp32-dots.txt" ;;
  attention-bench) run_attention_bench ;;   # ATTENTION_ARGS: bench attention's arguments (--no-tune unless given)
  # scripts/attention_ab.py: kernel revisions and configs timed side by side with SDPA (AB_ARGS: its
  # arguments, e.g. "--rev WORKTREE --configs 3st,3st-pp --causal no")
  attention-ab) timeout "${T_AB:-300}" python3 scripts/attention_ab.py ${AB_ARGS:---rev WORKTREE} --out "$out" 2>&1 \
                  | tee "$out/attention-ab.txt" ;;
  # The attention benchmark, its rows against the SM's units (sustained clocks) and ViT-B/16 beside
  # torch.compile: the figures docs/attention.md quotes, in one call (about 6 minutes).
  attention-report) run_attention_bench
                    timeout "${T_BOUND:-150}" python3 scripts/attention_bound.py --out "$out" 2>&1 | tee "$out/attention-bound.txt"
                    PERF_ARGS="${PERF_ARGS:---models ViT-B/16 --rounds 3 --rep 10}" run_perf_bench ;;
  # A few test files on the GPU beside their memcheck: FOCUS (test files, on the GPU), FOCUS_K
  # (a pytest -k expression for both runs), FOCUS_MEMCHECK (the files under the sanitizer, FOCUS
  # unless given).
  focus) pick=(); [ -n "${FOCUS_K:-}" ] && pick=(-k "$FOCUS_K")
         memcheck python3 -m pytest -q -p no:cacheprovider ${FOCUS_MEMCHECK:-$FOCUS} "${pick[@]}" \
           > "$out/memcheck-focus.txt" 2>&1 &
         timeout "${T_TESTS:-300}" python3 -m pytest -p no:cacheprovider -n 6 -q --tb=short $FOCUS "${pick[@]}" 2>&1 \
           | tee "$out/focus.txt" | grep -E "^(FAILED|ERROR)|passed|failed" | tail -20
         wait; tail -n 4 "$out/memcheck-focus.txt" ;;
  # The warp-specialized GEMM path (kernels/gemm_hopper.py, TRIDENT_WS_GEMM=1): its GPU tests beside
  # their memcheck, then the tuner's candidates of the models' epilogue GEMMs (WS tiles among them),
  # then ViT-B/16 with the path on and off (WS_SHAPES: bench epilogues' --only; WS_MODELS: bench
  # perf's models; WS_PERF: the settings of TRIDENT_WS_GEMM to time, "1 0" unless given).
  ws-gemm) export TRIDENT_WS_GEMM=1
           memcheck python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_gemm_hopper.py \
             > "$out/memcheck-ws-gemm.txt" 2>&1 &
           timeout "${T_TESTS:-200}" python3 -m pytest -q -p no:cacheprovider -m gpu \
             tests/test_gemm_hopper.py 2>&1 | tail -8
           wait; tail -n 3 "$out/memcheck-ws-gemm.txt"
           timeout "${T_BENCH:-200}" python3 -m trident.tools bench epilogues --only "${WS_SHAPES:-ViT-B/16}" --out "$out" \
             > "$out/ws-epilogues.txt" 2>&1
           tac "$out/ws-epilogues.txt" | sed '/^| shape |/q' | tac | cut -c1-160   # the last (whole) table
           for ws in ${WS_PERF:-1 0}; do
             echo "== TRIDENT_WS_GEMM=$ws"
             TRIDENT_WS_GEMM=$ws timeout "${T_BENCH:-200}" python3 -m trident.tools bench perf --models ${WS_MODELS:-ViT-B/16} \
               --rounds 3 --rep 10 --out "$out/ws$ws" 2>&1 | tail -12
           done ;;
  # what each part of the WS GEMM's epilogue costs on ViT-B/16's fc1 (K loops alone, store, bias, GELU)
  ws-costs) timeout "${T_BENCH:-200}" python3 scripts/ws_gemm_costs.py --out "$out" ;;
  # TRIDENT_RESIDUAL_INTO_NORM (compiler/fusion.py's residual_for_norm): the transformer rows of
  # bench perf with the option on and off (RN_MODELS: bench perf's models).
  residual-norm) for rn in 1 0; do
                   echo "== TRIDENT_RESIDUAL_INTO_NORM=$rn"
                   TRIDENT_RESIDUAL_INTO_NORM=$rn timeout "${T_BENCH:-250}" python3 -m trident.tools bench perf \
                     --models ${RN_MODELS:-ViT-B/16 "BERT-base seq 512"} --rounds 3 --rep 10 --out "$out/rn$rn" 2>&1 | tail -8
                 done ;;
  # Mixture-of-experts: the sort, integer and MoE tests on the GPU (their kernels under memcheck
  # run in `safety`), then a Mixtral-style decoder beside torch eager and torch.compile.
  moe) timeout "${T_TESTS:-200}" python3 -m pytest -q -p no:cacheprovider tests/test_moe.py tests/test_sort.py \
         tests/test_integer_math.py 2>&1 | tail -8
       timeout "${T_BENCH:-300}" python3 -m trident.tools bench perf --models "Mixtral-style MoE seq 256" \
         --rounds 3 --rep 10 --out "$out/moe" 2>&1 | tail -12 ;;
  # Profiles on several dims, KV-cache generation, dynamo dynamic shapes: GPU tests, then the
  # benchmark (BERT-base sequence profile vs static vs torch.compile; GPT-2 generate tokens/s).
  dynamic) timeout "${T_DYNAMIC:-120}" python3 -m pytest -q -p no:cacheprovider -m gpu tests/test_dynamic_gpu.py \
             2>&1 | tee "$out/dynamic-tests.txt" | tail -8
           timeout "${T_DYNAMIC_BENCH:-420}" python3 -m trident.tools bench dynamic --out "$out" \
             2>&1 | tee "$out/dynamic.txt" ;;
  zoo) run_zoo ;;
  # The zoo's builds are host work and the attention benchmark's GPU work: side by side, their
  # timings take turns on one lock (compiler/timing.py's gpu_turn), so neither measures the other.
  # Per-kernel profile of zoo models behind torch.compile (PROFILE_MODELS: zoo names), fp16, batch
  # PROFILE_BATCH (8); PROFILE_ARGS replaces --torch-compile (empty: the import path's engine).
  profile-zoo) for m in ${PROFILE_MODELS:-timm/vit_base_patch14_dinov2.lvd142m}; do
                 timeout "${T_PROFILE:-300}" python3 -m trident.tools profile "zoo:$m" --precision fp16 \
                   --batch "${PROFILE_BATCH:-8}" ${PROFILE_ARGS---torch-compile} \
                   --json "$out/profile-$(basename "$m").json" 2>&1 | tee "$out/profile-$(basename "$m").txt" | head -40
               done ;;
  zoo-attention) export TRIDENT_TIMING_LOCK="$out/timing.lock"
                 run_zoo > "$out/zoo-stage.txt" 2>&1 &
                 run_attention_bench; wait; cat "$out/zoo-stage.txt" ;;
  kernels) bench kernels --out "$out" 2>&1 | tee "$out/kernels.txt" ;;
  sweep) bench sweep --budget-s 480 --out "$out" 2>&1 | tee "$out/sweep.txt" ;;
  tune) bench tune --out "$out" 2>&1 | tee "$out/tune.txt" ;;
  runtime) bench runtime --out "$out" 2>&1 | tee "$out/runtime.txt" ;;
  models|bench) bench --quick --out "$out/bench" 2>&1 | tee "$out/bench.txt" ;;
  # Everything (max-autotune, FP32, convs) takes far longer than one run may: repeat until nothing
  # is "not run". Each run resumes from the last results (benchmarks/results/<gpu>-bench.json to
  # begin with), keeping every row measured so far. torch.compile max-autotune benchmarks each
  # conv's candidates for up to a minute, so one ResNet-50 build can outlast a run: inductor's
  # autotune timings (one JSON file) are kept in .gpu-state/ and the next run's build skips what
  # was timed. BENCH_TIMEOUT leaves time to save them.
  # BENCH_ARGS: more `trident bench` options (e.g. --precisions fp32 --compile-modes default).
  bench-full) mkdir -p "$out/bench-full" .gpu-state
              [ -f "$out/bench-full/results.json" ] || cp benchmarks/results/nvidia-h200-bench.json \
                "$out/bench-full/results.json" 2>/dev/null
              timings=$(python3 -c "from torch._inductor.codecache import CacheBase as C; print(C.get_local_cache_path())")
              mkdir -p "$(dirname "$timings")"
              [ -f .gpu-state/inductor-autotune.json ] && cp .gpu-state/inductor-autotune.json "$timings"
              timeout ${BENCH_TIMEOUT:-540} python3 -m trident.tools bench --resume --budget-s ${BUDGET_S:-360} \
                --out "$out/bench-full" ${BENCH_ARGS:-} 2>&1 | tee -a "$out/bench-full.txt"
              [ -f "$timings" ] && cp "$timings" "$out/inductor-autotune.json" ;;
  int8) python3 -m pytest -q -p no:cacheprovider -s tests/test_int8_gpu.py 2>&1 | tail -30 | tee "$out/int8-tests.txt"
        bench accuracy --out "$out" 2>&1 | tee "$out/int8-digits.txt"
        bench int8 --out "$out" 2>&1 | tee "$out/int8-bench.txt" ;;
  all) run_tests
       bench kernels --out "$out" 2>&1 | tee "$out/kernels.txt"
       bench --quick --out "$out/bench" 2>&1 | tee "$out/bench.txt" ;;
  install) ;;  # the install above, and nothing else (a command of one's own follows)
  *) echo "gpu.sh: no stage '$stage' (the stages are listed at the top of this file)"; exit 2 ;;
esac
# PACK=<file>: everything written to $out in one archive (a result folder may hold more files than
# can be copied back one by one).
[ -n "${PACK:-}" ] && tar czf "$PACK" -C "$out" .
