"""The `npconv` command line: parses arguments, calls the library, prints. No numerics here.

Each subcommand lives in its own module, which provides `add_arguments(parser)` and
`run(args) -> int` (the exit code); it is imported only when that subcommand runs, so optional
extras (tqdm, matplotlib) are never needed to start the program.
"""

from __future__ import annotations

import argparse
import importlib
import sys

# name -> (module, one-line help)
COMMANDS = {
    "train": ("npconv.commands.train", "train a CNN (default: a small CNN on the built-in digits)"),
    "evaluate": ("npconv.commands.evaluate", "evaluate a saved model on a data set"),
    "predict": ("npconv.commands.predict", "predict classes for images with a saved model"),
    "check": ("npconv.testing.check_cli", "check a hand-written conv or pool layer against npconv"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="npconv", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name, (module, help_text) in COMMANDS.items():
        sub_parser = sub.add_parser(name, help=help_text, description=help_text)
        sub_parser.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(sub_parser)
        except ImportError:                 # a subcommand whose module is not installed
            sub_parser.set_defaults(_missing=True)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if getattr(args, "_missing", False):
        print(f"npconv {args.command}: not available in this installation", file=sys.stderr)
        return 2
    return int(importlib.import_module(args._module).run(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
