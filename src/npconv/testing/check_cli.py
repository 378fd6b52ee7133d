"""`npconv check MODULE:OBJECT`: check a hand-written convolution from the command line.

Parses the options, loads OBJECT (a layer class, a forward function, or a ready-made
`npconv.testing` adapter) from MODULE (a dotted module name or a path to a .py file), calls
`check_conv` and prints its report. Exit status: 0 when every checked configuration passes, 1
when some fail, 2 when the target cannot be loaded or the options are invalid. No numerics here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import sys

from npconv.testing.adapters import Adapter, Functions, Layer
from npconv.testing.cases import PADDING_KINDS
from npconv.testing.check import check_conv
from npconv.testing.layout import WEIGHT_LAYOUTS

EPILOG = """\
examples:
  npconv check examples/seed_answer.py:SeedConv2D --no-per-axis
  npconv check mylayers:Conv --w W --dw dW --channels-first
  npconv check mylayers:conv_forward --backward conv_backward --no-dilation --no-groups
  npconv check mylayers:check_target        (an npconv.testing.Layer / Functions object)
"""


def _padding_kinds(text: str) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in PADDING_KINDS]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(PADDING_KINDS)}; got {text!r}")
    return kinds


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `npconv check`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("target", metavar="MODULE:OBJECT",
                        help="a layer class, a forward function or an adapter; MODULE is a "
                             "dotted name or a path to a .py file")
    _call_arguments(parser.add_argument_group("how to call the code"))
    _sweep_arguments(parser.add_argument_group(
        "what to check (leave out what the code does not support)"))


def _call_arguments(call) -> None:
    call.add_argument("--backward", metavar="NAME",
                      help="the backward function (in MODULE) of a forward function, or the "
                           "backward method of a class (default: backward)")
    call.add_argument("--forward-only", action="store_true", help="check y only")
    call.add_argument("--channels-first", action="store_true",
                      help="x is (N, C, *S) and w (F, C/G, *K) unless --weight-layout says")
    call.add_argument("--weight-layout", choices=WEIGHT_LAYOUTS,
                      help="w layout; HW stands for every kernel axis")
    for name, what in (("w", "weights"), ("b", "bias"), ("dw", "weight gradient"),
                       ("db", "bias gradient")):
        call.add_argument(f"--{name}", metavar="ATTR", dest=f"attr_{name}",
                          help=f"attribute holding the {what} (a class; default: found)")
    call.add_argument("--no-bias", action="store_true", help="the layer has no bias")


def _sweep_arguments(sweep) -> None:
    sweep.add_argument("--rank", type=int, default=2, help="spatial dimensions (default 2)")
    sweep.add_argument("--max-stride", type=int, default=3, help="largest stride (default 3)")
    sweep.add_argument("--padding", type=_padding_kinds, default=PADDING_KINDS,
                       metavar="KINDS", help="padding kinds to check (default "
                                             f"{','.join(PADDING_KINDS)})")
    sweep.add_argument("--square-only", action="store_true",
                       help="skip non-square kernels and inputs")
    sweep.add_argument("--no-per-axis", action="store_true",
                       help="skip per-axis stride/padding and asymmetric padding (the code "
                            "takes one int for all axes)")
    sweep.add_argument("--dilation", action=argparse.BooleanOptionalAction, default=None,
                       help="check dilation (default: when the code takes a dilation argument)")
    sweep.add_argument("--groups", action=argparse.BooleanOptionalAction, default=None,
                       help="check groups (default: when the code takes a groups argument)")
    sweep.add_argument("--seed", type=int, default=0, help="seed of the random data")
    sweep.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    sweep.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance")
    sweep.add_argument("--no-shrink", action="store_true",
                       help="do not shrink failures to the smallest failing configuration")


def load(target: str):
    """(module, object) for "MODULE:OBJECT"; MODULE may be a path to a .py file.

    Raises ValueError with a message for the user when the target cannot be loaded.
    """
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise ValueError(f"TARGET must look like MODULE:OBJECT; got {target!r}")
    try:
        module = _import(module_name)
    except (ImportError, OSError, SyntaxError) as exc:
        raise ValueError(f"cannot import {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise ValueError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return module, obj


def _import(name: str):
    if name.endswith(".py") or os.sep in name or "/" in name:
        path = os.path.abspath(name)
        if not os.path.isfile(path):
            raise ImportError(f"no such file: {name}")
        directory, stem = os.path.split(path)
        if directory not in sys.path:
            sys.path.insert(0, directory)             # so the file's own imports work
        spec = importlib.util.spec_from_file_location(stem[:-3] if stem.endswith(".py")
                                                      else stem, path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        spec.loader.exec_module(module)
        return module
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())
    return importlib.import_module(name)


_CALL_OPTIONS = ("backward", "forward_only", "channels_first", "weight_layout", "attr_w",
                 "attr_b", "attr_dw", "attr_db", "no_bias")


def build_adapter(module, obj, args) -> Adapter:
    """The adapter for the loaded object and the "how to call" options."""
    layout = {"data_format": "channels_first" if args.channels_first else "channels_last",
              "weight_layout": args.weight_layout}
    if isinstance(obj, Adapter):
        given = [name for name in _CALL_OPTIONS if getattr(args, name)]
        if given:
            raise ValueError(f"--{given[0].removeprefix('attr_').replace('_', '-')} applies to "
                             f"a class or a function; {args.target} is already an adapter")
        return obj
    if inspect.isclass(obj):
        backward = None if args.forward_only else (args.backward or "backward")
        return Layer(obj, w=args.attr_w, b=False if args.no_bias else args.attr_b,
                     dw=args.attr_dw, db=args.attr_db, backward=backward, **layout)
    if callable(obj):
        backward = None
        if args.backward and not args.forward_only:
            if not callable(getattr(module, args.backward, None)):
                raise ValueError(f"--backward: {module.__name__!r} has no function "
                                 f"{args.backward!r}")
            backward = getattr(module, args.backward)
        return Functions(obj, backward, **layout)
    raise ValueError(f"OBJECT must be a layer class, a function or an npconv.testing adapter; "
                     f"got {type(obj).__name__}")


def run(args: argparse.Namespace) -> int:
    """Load, check, print; 0 when everything checked passes, 1 when not, 2 on a usage error."""
    try:
        module, obj = load(args.target)
        adapter = build_adapter(module, obj, args)
        report = check_conv(adapter, rank=args.rank, max_stride=args.max_stride,
                            padding=args.padding, square_only=args.square_only,
                            per_axis=not args.no_per_axis, dilation=args.dilation,
                            groups=args.groups, seed=args.seed, rtol=args.rtol,
                            atol=args.atol, shrink=not args.no_shrink)
    except (ValueError, TypeError) as exc:
        print(f"npconv check: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.passed else 1
