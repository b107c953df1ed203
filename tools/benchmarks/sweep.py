"""`trident bench sweep`: a config sweep of the conv and GEMM templates on the GPU, beside cuDNN /
cuBLAS.

    trident bench sweep [--only conv,gemm] [--dtypes fp16,int8,fp32] [--batch 256]
                        [--bert-batch 32] [--workers 14] [--budget-s 400] [--out bench-out]

For every ResNet-50 conv shape (at --batch) and every GEMM shape (a square one, and BERT-base's at
--bert-batch x 128 tokens), a grid of tile configs (block sizes x BLOCK_K x stages, persistent variants
of the big tiles, and small tiles where big ones leave SMs idle) pruned by shared memory and by the
problem. fp32 runs in true fp32 (no TF32), beside cuDNN / cuBLAS in true fp32. Worker processes
compile each config by running it once (Triton's disk cache then holds the binary); the main process
times them with `do_bench` as they become ready.
Prints the best config per shape and writes every trial to <out>/<gpu>-sweep-<dtypes>-b<batch>.json:
the data the heuristics and candidate lists in kernels/conv.py and kernels/matmul.py are read from
(docs/performance.md). Never asserts a timing.
"""
from __future__ import annotations

import argparse
import math
import multiprocessing
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass

import torch

from trident.compiler import config
from trident.compiler.errors import InputError
from trident.compiler.progress import progress
from trident.kernels.common import PIPELINE_SMEM_BUDGET, pipeline_smem_bytes
from trident.kernels.matmul import NUM_SMS_H200
from trident.tools.benchmarks.results import ResultsFile, require_gpu
from trident.tools.benchmarks.shapes import BERT_GEMMS, RESNET50_CONVS, SQUARE_GEMM
from trident.compiler.timing import launch_ms

HELP = "a config sweep of the conv and GEMM templates beside cuDNN / cuBLAS (GPU)"
# (BLOCK_M, BLOCK_N, num_warps), x BLOCK_K (in 16-bit elements) x stages below.
TILES = [(128, 256, 8), (256, 128, 8), (128, 128, 8), (128, 128, 4), (64, 256, 4), (256, 64, 4),
         (128, 64, 4), (64, 128, 4), (64, 64, 4)]
K_STAGES = {32: (3, 4, 5), 64: (3, 4), 128: (2, 3)}
# Small batches leave too few big tiles for 132 SMs: these trade reuse for programs (and for fp32,
# whose dot runs on FMA units, reuse matters less than keeping every SM busy).
SMALL_TILES = [(64, 64, 4), (64, 32, 4), (32, 64, 4), (32, 32, 4), (16, 64, 4), (16, 32, 4), (32, 128, 4),
               (16, 128, 4), (64, 64, 2), (32, 32, 2)]
PERSISTENT = [(128, 256, 8, 64, 3, 1), (256, 128, 8, 64, 3, 1), (128, 128, 8, 64, 3, 1), (128, 128, 8, 64, 3, 2),
              (128, 128, 4, 64, 4, 2)]


@dataclass(frozen=True)
class Case:
    kind: str      # "conv" | "gemm"
    dtype: str     # "fp16" | "int8" | "fp32"
    shape: tuple   # conv: RESNET50_CONVS row; gemm: (M, N, K)

    @property
    def name(self) -> str:
        if self.kind == "gemm":
            return f"{self.dtype} GEMM {'x'.join(map(str, self.shape))}"
        C, H, OC, k, s, p, _ = self.shape
        return f"{self.dtype} conv C{C} {H}x{H} -> OC{OC} k{k} s{s}"

    def gemm_view(self, batch: int) -> tuple[int, int, int, int]:
        """(M, N, K, the K a channel block walks) of the problem."""
        if self.kind == "gemm":
            M, N, K = self.shape
            return M, N, K, K
        C, H, OC, k, s, p, _ = self.shape
        oh = (H + 2 * p - k) // s + 1
        return batch * oh * oh, OC, C * k * k, C


TORCH_DTYPES = {"int8": torch.int8, "fp16": torch.float16, "fp32": torch.float32}


def _elem(dtype: str) -> int:
    return TORCH_DTYPES[dtype].itemsize


def config_candidates(case: Case, batch: int):
    """The template's own candidate list for the case (what `trident bench kernels` and `fast`
    tuning try)."""
    from trident.kernels.conv import row_tile_candidates, uses_row_tile
    from trident.kernels.conv import candidate_configs as conv_candidates
    from trident.kernels.matmul import candidate_configs as gemm_candidates

    M, N, K, _ = case.gemm_view(batch)
    torch_dtype = TORCH_DTYPES[case.dtype]
    if case.kind == "gemm":
        return gemm_candidates(M, N, K, torch_dtype)
    C, H, OC, k, *_ = case.shape
    if k == 1 and case.shape[4] == 1:  # a 1x1 stride-1 conv runs as a GEMM
        return gemm_candidates(M, OC, C, torch_dtype)
    if uses_row_tile(C, k, 1, 1):  # conv2d_nhwc runs the stem as pad_nhwc + the row tile
        return row_tile_candidates(torch_dtype)
    return conv_candidates(M, OC, C, k, k, torch_dtype)


def config_grid(case: Case, batch: int):
    """The configs tried for one case: the template's own candidates, the tile grid, persistent variants."""
    from trident.kernels.common import next_pow2, tile_config
    from trident.kernels.conv import use_small_c_tile

    M, N, K, walk = case.gemm_view(batch)
    e = _elem(case.dtype)
    own = config_candidates(case, batch)
    grid = [tile_config(bm, bn, bk16 * 2 // e, 8, w, s) for bm, bn, w in TILES for bk16, stages in K_STAGES.items()
            for s in stages]
    grid += [tile_config(bm, bn, bk16 * 2 // e, 8, w, s, PERSISTENT=p) for bm, bn, w, bk16, s, p in PERSISTENT]
    if math.ceil(M / 128) * math.ceil(N / 128) < 2 * NUM_SMS_H200:  # under two waves of 128x128 tiles
        grid += [tile_config(bm, bn, bk16 * 2 // e, 8, w, s) for bm, bn, w in SMALL_TILES
                 for bk16 in (32, 64) for s in (3, 4)]

    def k_iters(c) -> int:
        if case.kind == "conv" and not use_small_c_tile(walk, c.BLOCK_K):  # tap by tap, C in blocks
            return K // walk * math.ceil(walk / c.BLOCK_K)
        return math.ceil(K / c.BLOCK_K)

    def fits(c) -> bool:
        return (c.BLOCK_M <= max(16, next_pow2(M)) and c.BLOCK_N <= max(16, next_pow2(N))
                and c.BLOCK_K <= max(32 // e, next_pow2(K))
                and pipeline_smem_bytes(c, e) <= PIPELINE_SMEM_BUDGET
                and c.num_stages <= max(2, k_iters(c) + 1))

    return list(dict.fromkeys(own + [c for c in grid if fits(c)]))


# ------------------------------------------------------------------ problems on the GPU ----
def make_problem(case: Case, batch: int):
    """(run(config), reference(), flops) with inputs allocated once."""
    import torch.nn.functional as F

    from trident.kernels.conv import conv2d_nhwc, pack_conv_weight
    from trident.kernels.matmul import matmul

    g = torch.Generator(device="cuda").manual_seed(0)
    int8 = case.dtype == "int8"

    def rand(shape, scale=1.0):
        if int8:
            return torch.randint(-100, 100, shape, device="cuda", dtype=torch.int8, generator=g)
        return torch.randn(shape, device="cuda", dtype=TORCH_DTYPES[case.dtype], generator=g) * scale

    if case.kind == "gemm":
        M, N, K = case.shape
        a, b_nk = rand((M, K)), rand((N, K), 1 / math.sqrt(K))  # weights K-major, as an engine stores them
        if int8:  # cuBLAS's fast int8 path wants B column-major: the K-major weight's transpose view
            ref = lambda: torch._int_mm(a, b_nk.t())  # noqa: E731
        else:
            ref = lambda: torch.matmul(a, b_nk.t())  # noqa: E731
        run = lambda cfg: matmul(a, b_nk, b_k_major=True, config=cfg,  # noqa: E731
                                 out_dtype=torch.int8 if int8 else None)
        return run, ref, 2.0 * M * N * K
    C, H, OC, k, s, p, _ = case.shape
    x = rand((batch, C, H, H)).contiguous(memory_format=torch.channels_last)
    w = rand((OC, C, k, k), 1 / math.sqrt(C * k * k))
    w_packed = pack_conv_weight(w)
    if int8:
        # cuDNN has no int8 NHWC conv through torch: the anchor is its fp16 conv of the same shape.
        xh, wh = x.half(), w.half().contiguous(memory_format=torch.channels_last)
        ref = lambda: F.conv2d(xh, wh, None, s, p)  # noqa: E731
    else:
        w_cl = w.contiguous(memory_format=torch.channels_last)
        ref = lambda: F.conv2d(x, w_cl, None, s, p)  # noqa: E731
    run = lambda cfg: conv2d_nhwc(x, w_packed, None, s, p, config=cfg, prepacked=True,  # noqa: E731
                                  out_dtype=torch.int8 if int8 else None)
    M = case.gemm_view(batch)[0]
    return run, ref, 2.0 * M * OC * C * k * k


# --------------------------------------------------------------------- compile workers ----
_WORKER: dict = {}


def _worker_init(batch: int) -> None:
    _WORKER["batch"] = batch


def _compile(case: Case, cfg) -> str | None:
    """Run one config once in a worker (compiling it into Triton's disk cache): None or the error."""
    try:
        if _WORKER.get("case") != case:
            _WORKER.pop("run", None)
            torch.cuda.empty_cache()
            _WORKER["run"], _, _ = make_problem(case, _WORKER["batch"])
            _WORKER["case"] = case
        _WORKER["run"](cfg)
        torch.cuda.synchronize()
        return None
    except Exception as exc:  # noqa: BLE001 - a config that fails is a data point
        text = str(exc).strip().splitlines()
        return f"{type(exc).__name__}: {text[-1][:200] if text else ''}"


def compile_pool(workers: int, batch: int) -> ProcessPoolExecutor:
    """Worker processes that compile (case, config) pairs into Triton's disk cache."""
    return ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("spawn"), initializer=_worker_init,
                               initargs=(batch,))


def precompile(jobs, workers: int, batch: int) -> None:
    """Compile every (case, config) of `jobs` in parallel; the caller's first launches then load them."""
    with compile_pool(workers, batch) as pool:
        futures = [pool.submit(_compile, case, cfg) for case, cfg in jobs]
        for future in progress(futures, desc=f"compiling configs ({workers} processes)", unit="config"):
            future.result()


def default_workers() -> int:
    return max(1, (multiprocessing.cpu_count() or 2) - 2)


def sweep_case(case: Case, configs, futures, batch: int, rep_ms: int) -> dict:
    run, ref, flops = make_problem(case, batch)
    # Medians (launch_ms): the compile workers run each config once, and a launch of theirs may
    # overlap a sample.
    ref_ms = launch_ms(ref, rep_ms)
    trials = []
    for cfg, fut in zip(configs, futures):
        try:
            error = fut.result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker (the pool then stops compiling)
            error = f"compile worker: {type(exc).__name__}"
        ms = math.inf
        if error is None:
            try:
                ms = launch_ms(lambda c=cfg: run(c), rep_ms)
            except Exception as exc:  # noqa: BLE001
                error = f"{type(exc).__name__}: {str(exc)[:200]}"
        trials.append({"config": cfg.to_dict(), "ms": ms, "error": error})
    ok = [t for t in trials if math.isfinite(t["ms"])]
    best = min(ok, key=lambda t: t["ms"]) if ok else None
    return {"name": case.name, "kind": case.kind, "dtype": case.dtype, "shape": list(case.shape), "flops": flops,
            "ref_ms": ref_ms, "heuristic_ms": trials[0]["ms"], "best": best,
            "speedup": ref_ms / best["ms"] if best else 0.0, "trials": trials}


def cases(only: set, dtypes: list[str], bert_batch: int) -> list[Case]:
    unknown = set(dtypes) - set(TORCH_DTYPES)
    if unknown:
        raise InputError(f"--dtypes: unknown {sorted(unknown)}; expected some of {sorted(TORCH_DTYPES)}")
    gemms = [SQUARE_GEMM] + [(bert_batch * 128, n, k) for n, k in BERT_GEMMS]
    out = []
    for dtype in dtypes:
        if "gemm" in only:
            out += [Case("gemm", dtype, shape) for shape in gemms]
        if "conv" in only:
            out += [Case("conv", dtype, shape) for shape in RESNET50_CONVS]
    return out


def cfg_text(c: dict) -> str:
    text = f"{c['BLOCK_M']}x{c['BLOCK_N']}x{c['BLOCK_K']} w{c['num_warps']} s{c['num_stages']}"
    return text + (f" p{c['PERSISTENT']}" if c.get("PERSISTENT") else "")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--only", default="gemm,conv", help="comma list of: gemm, conv")
    p.add_argument("--dtypes", default="fp16,int8", help="comma list of: fp16, int8, fp32")
    p.add_argument("--batch", type=int, default=256, help="ResNet-50's batch for the conv shapes")
    p.add_argument("--bert-batch", type=int, default=32, help="BERT-base's batch (x 128 tokens) for the GEMMs")
    p.add_argument("--workers", type=int, default=default_workers(), help="compile processes")
    p.add_argument("--rep", type=int, default=25, help="do_bench rep time in ms per config")
    p.add_argument("--budget-s", type=float, default=math.inf, help="stop starting new shapes after this long")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    plan = cases(set(args.only.split(",")), args.dtypes.split(","), args.bert_batch)
    require_gpu("trident bench sweep")
    torch.backends.cudnn.benchmark = True
    # fp32 means fp32-accurate on both sides: trident's tiles use "ieee" or "tf32x3" dots unless TRIDENT_ALLOW_TF32.
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = config.ALLOW_TF32
    start = time.time()
    plans = [(case, config_grid(case, args.batch)) for case in plan]
    print(f"{len(plan)} shapes, {sum(len(c) for _, c in plans)} configs, {args.workers} compile workers",
          flush=True)
    what = f"sweep-{'-'.join(args.dtypes.split(','))}-b{args.batch}"
    results = ResultsFile.in_dir(args.out, what, batch=args.batch, bert_batch=args.bert_batch, cases=[])
    with compile_pool(args.workers, args.batch) as pool:
        submitted = [(case, configs, [pool.submit(_compile, case, c) for c in configs]) for case, configs in plans]
        print(f"{'shape':<44}{'ref ms':>8}{'heur ms':>9}{'best ms':>9}{'x ref':>7}  best config", flush=True)
        for case, configs, futures in submitted:
            if time.time() - start > args.budget_s:
                print(f"budget of {args.budget_s:.0f} s spent: stopping before {case.name}", flush=True)
                for f in futures:
                    f.cancel()
                continue
            r = sweep_case(case, configs, futures, args.batch, args.rep)
            torch.cuda.empty_cache()  # the case's inputs are garbage now
            results.data["cases"].append(r)
            results.save()  # after every shape: a cut-short run keeps what it measured
            best = cfg_text(r["best"]["config"]) if r["best"] else "(none ran)"
            best_ms = r["best"]["ms"] if r["best"] else math.inf
            print(f"{r['name']:<44}{r['ref_ms']:>8.4f}{r['heuristic_ms']:>9.4f}{best_ms:>9.4f}"
                  f"{r['speedup']:>6.2f}x  {best}", flush=True)
        pool.shutdown(cancel_futures=True)
    for kind, dtype in sorted({(r["kind"], r["dtype"]) for r in results.data["cases"]}):
        rows = [r for r in results.data["cases"] if (r["kind"], r["dtype"]) == (kind, dtype) and r["speedup"] > 0]
        if not rows:
            continue
        geo = math.exp(sum(math.log(r["speedup"]) for r in rows) / len(rows))
        print(f"{dtype} {kind}: geometric mean of best / reference over {len(rows)} shapes: {geo:.3f}x")
    print(f"sweep took {time.time() - start:.0f} s; wrote {results.save()}")
    return 0
