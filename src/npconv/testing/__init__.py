"""Check a hand-written convolution or pooling against npconv: `check_conv`, `check_pool`.

    >>> import npconv
    >>> from npconv.testing import check_conv
    >>> def forward(x, w, b, stride, padding):                 # the code under test
    ...     return npconv.conv(x, w, b, stride=stride, padding=padding)
    >>> report = check_conv(forward, max_stride=2, random=10, random_seed=0)
    >>> bool(report)                                           # print(report) for the details
    True

`check_conv` sweeps configurations from easy to hard, each with its inputs placed three ways in
memory, then random ones; it compares y, dx, dw and db with npconv's ops and reports which
configurations fail, when (the features that separate failing from passing ones), the smallest
failing one, which output is wrong, where, and the likely cause, tested against known failure
patterns. The code runs in a child process, so a crash or a hang is a finding too.
`check_pool` does the same for max and average pooling. `gradcheck` compares any function's
analytic gradients with central differences. `LayerAdapter` and `FunctionsAdapter` adapt the
common call styles; the command line is ``npconv check [--pool max|avg] MODULE:OBJECT``.
"""

from __future__ import annotations

import warnings

from npconv.testing.adapters import Adapter, FunctionsAdapter, LayerAdapter, UserError, adapt
from npconv.testing.cases import Case, SweepOptions, all_cases
from npconv.testing.check import check_conv, check_pool, run_case
from npconv.testing.compare import OutputCheck, Tolerance
from npconv.testing.gradcheck import ArrayCheck, GradcheckResult, gradcheck, numerical_grad
from npconv.testing.layout import Layout
from npconv.testing.pool_cases import PoolCase, PoolOptions, all_pool_cases
from npconv.testing.report import CheckReport
from npconv.testing.results import CaseResult, Crash, Finding, MemoryIssue

__all__ = [
    "Adapter",
    "ArrayCheck",
    "Case",
    "CaseResult",
    "CheckReport",
    "Crash",
    "Finding",
    "FunctionsAdapter",
    "GradcheckResult",
    "LayerAdapter",
    "Layout",
    "MemoryIssue",
    "OutputCheck",
    "PoolCase",
    "PoolOptions",
    "SweepOptions",
    "Tolerance",
    "UserError",
    "adapt",
    "all_cases",
    "all_pool_cases",
    "check_conv",
    "check_pool",
    "gradcheck",
    "numerical_grad",
    "run_case",
]

_RENAMED = {"Layer": LayerAdapter, "Functions": FunctionsAdapter}


def __getattr__(name: str):
    """The old names `Layer` and `Functions` still work, with a DeprecationWarning."""
    if name in _RENAMED:
        new = _RENAMED[name]
        warnings.warn(f"npconv.testing.{name} is now npconv.testing.{new.__name__} (so as not "
                      f"to be confused with npconv.nn.Layer); the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return new
    raise AttributeError(f"module 'npconv.testing' has no attribute {name!r}")
