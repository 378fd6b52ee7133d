"""`npconv check [--pool max|avg] MODULE:OBJECT`: check hand-written code from the command line.

Parses the options, loads OBJECT (a layer class, a forward function, or a ready-made
`npconv.testing` adapter) from MODULE (a dotted module name or a path to a .py file), calls
`check_conv` (or `check_pool`) and prints its report. Exit status: 0 when every checked
configuration passes, 1 when some fail (a crash, a hang or a ``sys.exit`` in the checked code
included), 2 when the target cannot be loaded (its module raised, exited or hung while being
imported) or the options are invalid. No numerics here.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import inspect
import os
import signal
import sys
import threading

from npconv.commands import int_at_least
from npconv.testing.adapters import Adapter, FunctionsAdapter, LayerAdapter
from npconv.testing.cases import PADDING_KINDS, PADDING_MODES
from npconv.testing.check import check_conv, check_pool
from npconv.testing.layout import WEIGHT_LAYOUTS
from npconv.testing.report import CheckReport

EPILOG = """\
examples:
  npconv check examples/seed_answer.py:SeedConv2D
  npconv check mylayers:Conv --w W --dw dW --channels-first
  npconv check mylayers:conv_forward --backward conv_backward --no-dilation --no-groups
  npconv check --pool max mylayers:MaxPool2D
  npconv check --pool avg mylayers:avg_pool_forward --backward avg_pool_backward
  npconv check mylayers:check_target        (an npconv.testing.LayerAdapter / FunctionsAdapter)
"""


class LoadError(Exception):
    """The target cannot be loaded; the message says why."""


class _ImportTimeout(BaseException):
    """Raised by the alarm inside a module that takes too long to import (a BaseException, so
    that the module's own `except Exception` does not swallow it)."""


def _kinds(text: str, allowed: tuple[str, ...]) -> tuple[str, ...]:
    kinds = tuple(k.strip() for k in text.split(",") if k.strip())
    bad = [k for k in kinds if k not in allowed]
    if bad or not kinds:
        raise argparse.ArgumentTypeError(
            f"must be a comma-separated list of {', '.join(allowed)}; got {text!r}")
    return kinds


def _padding_kinds(text: str) -> tuple[str, ...]:
    return _kinds(text, PADDING_KINDS)


def _padding_modes(text: str) -> tuple[str, ...]:
    return () if text == "zeros" else _kinds(text, PADDING_MODES[1:])


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number of seconds > 0; got {text!r}")
    return value


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The options of `npconv check`."""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.epilog = EPILOG
    parser.add_argument("target", metavar="MODULE:OBJECT",
                        help="a layer class, a forward function or an adapter; MODULE is a "
                             "dotted name or a path to a .py file")
    parser.add_argument("--pool", choices=("max", "avg"),
                        help="check a max or average pooling instead of a convolution")
    _call_arguments(parser.add_argument_group("how to call the code"))
    _sweep_arguments(parser.add_argument_group(
        "what to check (leave out what the code does not support)"))
    _run_arguments(parser.add_argument_group("how to run the check"))


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
    sweep.add_argument("--rank", type=int, choices=(1, 2, 3), default=2,
                       help="spatial dimensions (default 2)")
    sweep.add_argument("--max-stride", type=int_at_least(1), default=3,
                       help="largest stride (default 3)")
    sweep.add_argument("--padding", type=_padding_kinds, default=PADDING_KINDS,
                       metavar="KINDS", help="padding kinds to check (default "
                                             f"{','.join(PADDING_KINDS)}; pooling: zero leaves "
                                             "padding out)")
    sweep.add_argument("--square-only", action="store_true",
                       help="skip non-square kernels and inputs")
    sweep.add_argument("--per-axis", action=argparse.BooleanOptionalAction, default=None,
                       help="check per-axis strides and paddings (default: unless the code "
                            "annotates them `int` or refuses tuples)")
    for name, what in (("dilation", "dilation"), ("groups", "groups"),
                       ("ceil-mode", "ceil_mode (pooling)")):
        sweep.add_argument(f"--{name}", action=argparse.BooleanOptionalAction, default=None,
                           help=f"check {what} (default: when the code takes the argument)")
    sweep.add_argument("--transposed", action=argparse.BooleanOptionalAction, default=None,
                       help="check a transposed convolution (default: when the code takes "
                            "output_padding)")
    sweep.add_argument("--padding-modes", type=_padding_modes, default=None, metavar="MODES",
                       help="padding modes besides zeros: reflect,replicate,circular (default: "
                            "all when the code takes padding_mode; 'zeros' for none)")
    sweep.add_argument("--count-include-pad", action=argparse.BooleanOptionalAction,
                       default=None, help="average pooling's divisor counts the padding "
                                          "(default: both when the code takes the argument, "
                                          "else yes, as PyTorch)")


def _run_arguments(run) -> None:
    run.add_argument("--seed", type=int_at_least(0), default=0,
                     help="seed of the fixed sweep's data")
    run.add_argument("--random", type=int_at_least(0), default=200, metavar="N",
                     help="random configurations after the fixed sweep (default 200; 0: none)")
    run.add_argument("--random-seed", type=int_at_least(0), default=None, metavar="S",
                     help="seed of the random phase (default: a new one, printed)")
    run.add_argument("--budget", type=_seconds, default=10.0, metavar="SECONDS",
                     help="time the random phase may take (default 10)")
    run.add_argument("--timeout", type=_seconds, default=2.0, metavar="SECONDS",
                     help="time one run of the code may take (default 2; importing its module "
                          "may take 10 times as long)")
    run.add_argument("--no-isolate", action="store_true",
                     help="run the code in this process (no crash isolation, no timeout)")
    run.add_argument("--rtol", type=float, default=1e-5, help="relative tolerance")
    run.add_argument("--atol", type=float, default=1e-6, help="absolute tolerance")
    run.add_argument("--no-shrink", action="store_true",
                     help="do not shrink failures to the smallest failing configuration")


def load(target: str, timeout: float = 10.0):
    """(module, object) for "MODULE:OBJECT"; MODULE may be a path to a .py file.

    Raises `LoadError` with a message for the user when the target cannot be loaded: no such
    module, file or attribute, or a module that raises, calls sys.exit or runs longer than
    `timeout` seconds while being imported.
    """
    module_name, sep, attr = target.rpartition(":")
    if not sep or not module_name or not attr:
        raise LoadError(f"TARGET must look like MODULE:OBJECT; got {target!r}")
    try:
        module = _with_alarm(timeout, _import, module_name)
    except _ImportTimeout:
        raise LoadError(f"cannot load {module_name!r}: importing it took longer than "
                        f"{timeout:g} s (--timeout)") from None
    except SystemExit as exc:
        raise LoadError(f"cannot load {module_name!r}: it called sys.exit({exc.code!r}) while "
                        f"being imported") from None
    except Exception as exc:            # the module's own code may raise anything
        raise LoadError(f"cannot load {module_name!r}: {type(exc).__name__}: {exc}") from None
    obj = module
    for part in attr.split("."):
        if not hasattr(obj, part):
            raise LoadError(f"{module_name!r} has no attribute {attr!r}")
        obj = getattr(obj, part)
    return module, obj


def _with_alarm(seconds: float, fn, *args):
    """fn(*args), interrupted by `_ImportTimeout` after `seconds` (where SIGALRM exists)."""
    if not hasattr(signal, "setitimer") or threading.current_thread() is not \
            threading.main_thread():
        return fn(*args)

    def alarm(signum, frame):
        raise _ImportTimeout

    old = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, seconds)
    try:
        return fn(*args)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


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
        if spec is None or spec.loader is None:
            raise ImportError(f"cannot import {name} as a Python module")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module
        try:
            spec.loader.exec_module(module)
        except BaseException:
            del sys.modules[spec.name]
            raise
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
        return LayerAdapter(obj, w=args.attr_w, b=False if args.no_bias else args.attr_b,
                            dw=args.attr_dw, db=args.attr_db, backward=backward, **layout)
    if callable(obj):
        backward = None
        if args.backward and not args.forward_only:
            if not callable(getattr(module, args.backward, None)):
                raise ValueError(f"--backward: {module.__name__!r} has no function "
                                 f"{args.backward!r}")
            backward = getattr(module, args.backward)
        return FunctionsAdapter(obj, backward, **layout)
    raise ValueError(f"OBJECT must be a layer class, a function or an npconv.testing adapter; "
                     f"got {type(obj).__name__}")


def _common(args) -> dict:
    return {"rank": args.rank, "max_stride": args.max_stride, "per_axis": args.per_axis,
            "dilation": args.dilation, "seed": args.seed, "rtol": args.rtol,
            "atol": args.atol, "shrink": not args.no_shrink, "random": args.random,
            "random_seed": args.random_seed, "budget": args.budget, "timeout": args.timeout,
            "isolate": False if args.no_isolate else None}


def check(adapter: Adapter, args) -> CheckReport:
    """Run `check_conv` or `check_pool` with the parsed options."""
    if args.pool:
        return check_pool(adapter, op=args.pool, padding=None if "symmetric" in args.padding
                          else False, ceil_mode=args.ceil_mode,
                          count_include_pad=args.count_include_pad, **_common(args))
    return check_conv(adapter, padding=args.padding, square_only=args.square_only,
                      groups=args.groups, transposed=args.transposed,
                      padding_modes=args.padding_modes, **_common(args))


def run(args: argparse.Namespace) -> int:
    """Load, check, print; 0 when everything checked passes, 1 when not, 2 when the target
    cannot be loaded or an option is invalid."""
    try:
        module, obj = load(args.target, 10 * args.timeout)
        report = check(build_adapter(module, obj, args), args)
    except (LoadError, ValueError, TypeError) as exc:
        print(f"npconv check: error: {exc}", file=sys.stderr)
        return 2
    print(report)
    return 0 if report.passed else 1
