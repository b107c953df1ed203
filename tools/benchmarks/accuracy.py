"""`trident bench accuracy`: INT8 accuracy on real data: the digits CNN (trident.models.digits),
FP32 vs INT8 top-1 accuracy on its held-out split for each calibrator.

    trident bench accuracy              # int8 engines (Triton kernels)
    trident bench accuracy --reference  # the int8 engines' graphs on the reference executor
                                        # (fast on a CPU)
Prints a table and writes <out>/<gpu>-int8-accuracy.json. The engine mode is what the GPU runs; the
reference mode evaluates the very graph the engine's kernels are generated from (qconv / qmatmul
references compute the kernels' integer math), which the CPU tests use because Triton's
interpreter takes minutes over all 538 images.
"""
from __future__ import annotations

import argparse

import torch

from trident.compiler.quantize.calibrators import CALIBRATOR_NAMES
from trident.tools.benchmarks.results import ResultsFile, markdown_table

HELP = "INT8 top-1 accuracy of the digits CNN against FP32, per calibrator"

CALIBRATION_IMAGES = 512  # from the training split


def _predict(run, x: torch.Tensor, batch: int) -> torch.Tensor:
    outs = []
    for k in range(0, len(x), batch):
        xb = x[k:k + batch]
        n = len(xb)
        if n < batch:  # static shapes: pad the last batch
            xb = torch.cat([xb, torch.zeros((batch - n,) + tuple(xb.shape[1:]), dtype=xb.dtype)])
        outs.append(run(xb)[:n].float().cpu())
    return torch.cat(outs)


def digits_accuracy(calibrators=CALIBRATOR_NAMES, engine: bool = True, device=None) -> dict:
    """{"fp32": accuracy, "int8": {calibrator: accuracy}, "drop": {calibrator: points}}."""
    from trident.compiler import build_engine
    from trident.compiler.build import import_model
    from trident.compiler.quantize.plan import int8_graph
    from trident.compiler.reference import run_reference
    from trident.models.digits import accuracy, digits_cnn, load_digits_split

    model = digits_cnn()
    x_train, _, x_test, y_test = load_digits_split()
    calibration = [x_train[k:k + 128] for k in range(0, CALIBRATION_IMAGES, 128)]
    batch = len(x_test)
    with torch.no_grad():
        result = {"fp32": accuracy(model(x_test), y_test), "int8": {}, "drop": {}}
    example = (x_test[:batch],)
    graph = None if engine else import_model(model, example)
    for name in calibrators:
        if engine:
            e = build_engine(model, "int8", example, calibration=calibration, calibrator=name,
                             device=device)
            logits = _predict(lambda xb: e(xb.to(e.device))[0], x_test, batch)
        else:
            g = int8_graph(graph, calibration, calibrator=name)
            logits = _predict(lambda xb: run_reference(g, [xb])[0], x_test, batch)
        result["int8"][name] = accuracy(logits, y_test)
        result["drop"][name] = result["fp32"] - result["int8"][name]
    return result


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--reference", action="store_true", help="reference executor instead of engines")
    p.add_argument("--calibrators", default=",".join(CALIBRATOR_NAMES), help="comma list")
    p.add_argument("--out", default="bench-out", help="folder of the results file")


def run(args: argparse.Namespace) -> int:
    mode = "reference executor" if args.reference else "int8 engine"
    results = ResultsFile.in_dir(args.out, "int8-accuracy", mode=mode)
    result = digits_accuracy(args.calibrators.split(","), engine=not args.reference)
    results.data.update(result)
    print(f"digits CNN, held-out split (538 images), {mode}")
    print(markdown_table(["calibrator", "FP32 top-1", "INT8 top-1", "drop (points)"],
                         [[name, f"{result['fp32']:.2f}", f"{acc:.2f}", f"{result['drop'][name]:+.2f}"]
                          for name, acc in result["int8"].items()]))
    print(f"wrote {results.save()}")
    return 0
