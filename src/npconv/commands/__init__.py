"""Subcommands of the `npconv` command line, one module each (see npconv.cli).

Each module provides `add_arguments(parser)` and `run(args) -> int`; they parse, call
`npconv.training` / `npconv.nn` and print, and import optional extras (tqdm, matplotlib) only
inside `run`. Exit codes: 0 success, 1 a failure reported on stderr (bad file, bad data),
2 a usage error (argparse).
"""

from __future__ import annotations

import sys

DEFAULT_MODEL = "runs/digits/model.npz"


def fail(command: str, error: Exception) -> int:
    """Report `error` as `npconv COMMAND: error: ...` on stderr; return exit code 1."""
    print(f"npconv {command}: error: {error}", file=sys.stderr)
    return 1
