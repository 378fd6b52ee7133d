"""Subcommands of the `npconv` command line, one module each (see npconv.cli).

Each module provides `add_arguments(parser)` and `run(args) -> int`; they parse, call
`npconv.training` / `npconv.nn` and print, and import optional extras (tqdm, matplotlib) only
inside `run`. Exit codes: 0 success; 2 (USAGE) a usage error or an input that cannot be used: an
argument out of range (argparse names the flag), a missing, unreadable or invalid file, bad data,
an output that cannot be written; all found before any work, so nothing is written; 1 (FAILURE)
a failure while running.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

DEFAULT_MODEL = "runs/digits/model.npz"
FAILURE, USAGE = 1, 2


def fail(command: str, error: Exception, code: int = USAGE) -> int:
    """Report `error` as `npconv COMMAND: error: ...` on stderr; return `code`."""
    print(f"npconv {command}: error: {error}", file=sys.stderr)
    return code


def warn(command: str, message: str) -> None:
    print(f"npconv {command}: warning: {message}", file=sys.stderr)


def int_at_least(low: int):
    """argparse type: an int >= low (argparse's message names the flag)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an int >= {low}; got {value}")
        return value
    return parse


def number_in(low: float, high: float, *, low_open: bool = True, high_open: bool = True):
    """argparse type: a float in the interval from low to high (open or closed ends)."""
    brackets = ("(" if low_open else "[") + "{}, {}" + (")" if high_open else "]")
    interval = brackets.format(f"{low:g}", f"{high:g}")

    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}; got {text!r}") \
                from None
        inside = (low < value if low_open else low <= value) and \
            (value < high if high_open else value <= high)
        if not inside:
            raise argparse.ArgumentTypeError(f"must be a number in {interval}; got {value:g}")
        return value
    return parse


positive_int = int_at_least(1)
fraction = number_in(0.0, 1.0)


def check_writable_dir(directory: Path, flag: str, *, create: bool = False) -> None:
    """ValueError naming `flag` unless `directory` is (or, with `create`, can be made) a
    directory this process can write to; probed with a temporary file, so it holds for root and
    read-only file systems alike."""
    if directory.exists() and not directory.is_dir():
        raise ValueError(f"{flag} {directory}: is a file, not a directory")
    try:
        if create:
            directory.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as e:
        raise ValueError(f"{flag} {directory}: cannot write there ({e.strerror or e})") from None
