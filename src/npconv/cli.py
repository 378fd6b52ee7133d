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
    "predict": ("npconv.commands.predict", "predict classes for images with a saved model, or "
                "with an architecture and a PyTorch / safetensors weights file"),
    "check": ("npconv.testing.check_cli", "check a hand-written conv or pool layer against npconv"),
}

DESCRIPTION = """\
Convolutional networks in pure NumPy: train one, evaluate it, predict with it, or check a
hand-written convolution layer against npconv's exact one."""

EPILOG = """\
examples:
  npconv train                              train the small CNN on the built-in 8x8 digits
  npconv train --data ~/fashion-mnist       ... on MNIST-format files you have
  npconv evaluate                           the held-out accuracy of runs/digits/model.npz
  npconv predict images.npy --output p.csv  a class and its probability for each image
  npconv predict --arch resnet18 --weights resnet18.pth images.npy
                                            ... with a PyTorch ResNet-18's weights
  npconv check mylayers.py:MyConv2D         find the bugs in your own conv layer

`npconv COMMAND --help` describes a command's options. Exit status: 0 success, 2 a usage error
or an input that cannot be used (nothing is written), 1 a failure while running, 130
interrupted (Ctrl-C)."""


def build_parser() -> tuple[argparse.ArgumentParser, dict]:
    """The top-level parser and {command: its subparser}."""
    from npconv import __version__

    parser = argparse.ArgumentParser(prog="npconv", description=DESCRIPTION, epilog=EPILOG,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--version", action="version", version=f"npconv {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    subparsers = {}
    for name, (module, help_text) in COMMANDS.items():
        subparsers[name] = sub_parser = sub.add_parser(name, help=help_text,
                                                       description=help_text)
        sub_parser.set_defaults(_module=module)
        try:
            importlib.import_module(module).add_arguments(sub_parser)
        except ImportError:                 # a subcommand whose module is not installed
            sub_parser.set_defaults(_missing=True)
    return parser, subparsers


def main(argv: list[str] | None = None) -> int:
    parser, subparsers = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:                               # a mistyped option: the subcommand's own usage
        subparsers[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    if getattr(args, "_missing", False):
        print(f"npconv {args.command}: not available in this installation", file=sys.stderr)
        return 2
    try:
        return int(importlib.import_module(args._module).run(args) or 0)
    except KeyboardInterrupt:               # Ctrl-C: a line, not a traceback
        print(f"npconv {args.command}: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
