"""The `trident` command: one subcommand per module in trident.tools, each with register()."""
from __future__ import annotations

import argparse
import importlib
import sys

from trident.compiler.errors import TridentError

# Each module defines register(subparsers), which adds its subcommand and sets `func`.
SUBCOMMANDS = ["explain", "conformance", "demo", "bench", "fusion_check", "profile", "layerwise", "compile", "run"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="trident", description="An inference compiler on Triton.")
    subparsers = parser.add_subparsers(dest="command", required=True)
    for name in SUBCOMMANDS:
        importlib.import_module(f"trident.tools.{name}").register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except TridentError as e:
        print(f"trident: error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
