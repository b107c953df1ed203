"""The `trident` command: one subcommand per module in trident.tools, each with register()."""
from __future__ import annotations

import argparse
import importlib
import sys

from trident.compiler import config
from trident.compiler.errors import TridentError

# Each module defines register(subparsers), which adds its subcommand and sets `func`.
SUBCOMMANDS = ["compile", "run", "demo", "explain", "fusion_check", "profile", "layerwise",
               "conformance", "bench", "zoo", "cache", "fuzz_files"]


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Descriptions as written; every option that has a default says it."""

    def _get_help_string(self, action: argparse.Action) -> str:
        text = action.help or ""
        if ("%(default)" in text or not action.option_strings
                or action.default in (None, False, argparse.SUPPRESS)):
            return text
        return text + " (default: %(default)s)"


class ArgumentParser(argparse.ArgumentParser):
    """Every parser of the command (subcommands too): defaults in --help, and a bad argument is
    one line on stderr and exit code 2."""

    def __init__(self, *args, **kwargs):
        kwargs["formatter_class"] = HelpFormatter
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(prog="trident", description="An inference compiler on Triton.")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in SUBCOMMANDS:
        importlib.import_module(f"trident.tools.{name}").register(subparsers)
    return parser


def one_line(error: BaseException) -> str:
    return " ".join(str(error).split())


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    config.notice_interpreter()
    try:
        return int(args.func(args) or 0)
    except (TridentError, OSError) as e:  # bad input, or a file that cannot be read or written
        print(f"trident {args.command}: error: {one_line(e)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"trident {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
