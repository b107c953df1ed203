"""Build and run ResNet-50 and BERT-base engines at fp16 and int8, once eagerly and once through
the CUDA graph, for `compute-sanitizer --tool memcheck` to watch every kernel they launch:

    PYTORCH_NO_CUDA_MEMORY_CACHING=1 compute-sanitizer --tool memcheck --target-processes all \\
        --error-exitcode 1 python3 scripts/memcheck_models.py

(PYTORCH_NO_CUDA_MEMORY_CACHING gives every torch tensor its own allocation, so an access past a
weight or an output buffer is outside any allocation, where memcheck sees it. A stray access
inside the engine's arena lands in another intermediate of the same allocation: memcheck cannot
see that one; the interpreter's sanitizer, TRIDENT_SANITIZE=1, checks per tensor argument.)
Prints one line per engine with its error against torch; memcheck's own summary comes last.
"""
from __future__ import annotations

import argparse
import sys

import torch

from trident.compiler import build_engine
from trident.models import MODELS


def relative_error(got: torch.Tensor, ref: torch.Tensor) -> float:
    return ((got.float() - ref.float()).norm() / ref.float().norm().clamp_min(1e-30)).item()


def check(name: str, precision: str, batch: int, graph: bool) -> float:
    build, make_inputs = MODELS[name]
    model = build().eval().cuda()
    inputs = tuple(x.cuda() for x in make_inputs(batch))
    options = {}
    if precision == "int8":
        options["calibration"] = [tuple(x.cuda() for x in make_inputs(batch)) for _ in range(2)]
    engine = build_engine(model, precision=precision, example_inputs=inputs, **options)
    with torch.no_grad():
        ref = model(*inputs)
    ref = ref[0] if isinstance(ref, (tuple, list)) else ref
    engine.cuda_graph = False
    eager = engine(*inputs)[0].clone()
    if graph:
        engine.cuda_graph = True
        replayed = engine(*inputs)[0].clone()
        torch.cuda.synchronize()
        assert torch.equal(eager, replayed), f"{name} {precision}: CUDA-graph replay differs from eager"
    return relative_error(eager, ref)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet50,bert_base")
    parser.add_argument("--precisions", default="fp16,int8")
    parser.add_argument("--batch", type=int, default=2)
    parser.add_argument("--no-graph", action="store_true",
                        help="eager runs only (the replay launches the same kernels; stream capture "
                             "under compute-sanitizer can fail on the sanitizer's own calls)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        print("needs a CUDA GPU", file=sys.stderr)
        return 2
    for name in args.models.split(","):
        for precision in args.precisions.split(","):
            error = check(name, precision, args.batch, not args.no_graph)
            agree = "" if args.no_graph else " (eager and CUDA-graph runs agree)"
            print(f"{name} {precision} batch {args.batch}: relative error {error:.2e}{agree}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
