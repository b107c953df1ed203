"""`trident fusion-check PATTERN`: compile a fusion pattern, check its fused kernel(s) against the
reference executor at each precision on fresh random inputs, and (on a GPU) time them against one
kernel per op. Exits 1 when a check fails."""
from __future__ import annotations

import argparse
from pathlib import Path

from trident.compiler.errors import InputError
from trident.tools.common import import_object

HELP = """\
PATTERN is a small ONNX file, or module:function naming a Python function over torch tensors.
The function's input shapes come from (first found):
  --shapes 8x100,100          one shape per positional input: dims joined by 'x', inputs by ','
                              ('scalar' for a 0-d input); all inputs are float32
  @pattern((8, 100), (100,))  from trident.compiler.testing, on the function
  SHAPES = {"fn": [(8, 100), (100,)]}   in the function's module
A shape may also be an example tensor (in @pattern or SHAPES): its dtype is used.
Example: trident fusion-check trident.models.patterns:bias_gelu
The same check in a test: trident.compiler.testing.check_fusion(fn).assert_ok()
"""


def register(subparsers) -> None:
    p = subparsers.add_parser("fusion-check", help="check a fusion pattern against the reference "
                              "and time it against the unfused kernels",
                              description=__doc__, epilog=HELP)
    p.add_argument("pattern", help="an ONNX file, or module:function over torch tensors "
                                   "(found from the working directory too)")
    p.add_argument("--shapes", help="input shapes, e.g. 8x100,100 (see below)")
    p.add_argument("--precisions", default="fp32,fp16", help="comma-separated")
    p.add_argument("--seed", type=int, help="random-input seed (default: fresh; printed)")
    p.add_argument("--batch", type=int, default=1, help="size of a symbolic batch dim (ONNX)")
    p.add_argument("--max-kernels", type=int, help="fail if the pattern takes more kernels")
    p.add_argument("--no-timing", action="store_true", help="skip timing on a GPU")
    p.set_defaults(func=run)


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    shapes = []
    for item in text.split(","):
        item = item.strip()
        try:
            shapes.append(() if item == "scalar" else tuple(int(d) for d in item.split("x")))
        except ValueError:
            raise InputError(f"--shapes: cannot read {item!r}; write dims joined by 'x', e.g. "
                             f"8x100,100") from None
    return shapes


def load_pattern(spec: str, batch: int = 1):
    """An ONNX file -> its IR graph; module:function -> the function."""
    if Path(spec).exists() or ":" not in spec:
        from trident.compiler.frontend.onnx import import_onnx

        return import_onnx(spec, batch_size=batch)
    return import_object(spec, "pattern")


def run(args: argparse.Namespace) -> int:
    from trident.compiler import config
    from trident.compiler.testing import check_fusion

    pattern = load_pattern(args.pattern, args.batch)
    shapes = parse_shapes(args.shapes) if args.shapes else None
    precisions = [p.strip() for p in args.precisions.split(",") if p.strip()]
    report = check_fusion(pattern, shapes, precisions, seed=args.seed,
                          max_kernels=args.max_kernels,
                          timing=config.HAS_CUDA and not args.no_timing)
    print(report)
    if not config.HAS_CUDA:
        print("(no GPU: kernels ran in Triton's interpreter; fused vs unfused timing skipped)")
    return 0 if report.passed else 1
