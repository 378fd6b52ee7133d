"""Check a hand-written convolution against npconv: `check_conv`, `gradcheck` and adapters.

    >>> import npconv
    >>> from npconv.testing import check_conv
    >>> def forward(x, w, b, stride, padding):                 # the code under test
    ...     return npconv.conv(x, w, b, stride=stride, padding=padding)
    >>> report = check_conv(forward, max_stride=2)
    >>> bool(report)                                           # print(report) for the details
    True

`check_conv` sweeps configurations from easy to hard, compares y, dx, dw and db with npconv's
ops, and reports which configurations fail, the smallest failing one, which output is wrong,
where, and the likely cause, tested against known failure patterns. `gradcheck` compares any
function's analytic gradients with central differences. `Layer` and `Functions` adapt the
common call styles; the command line is ``npconv check MODULE:OBJECT``.
"""

from npconv.testing.adapters import Adapter, Functions, Layer, UserError, adapt
from npconv.testing.cases import Case, SweepOptions, all_cases
from npconv.testing.check import CaseResult, CheckReport, Finding, check_conv, run_case
from npconv.testing.compare import OutputCheck, Tolerance
from npconv.testing.gradcheck import ArrayCheck, GradcheckResult, gradcheck, numerical_grad
from npconv.testing.layout import Layout

__all__ = [
    "Adapter",
    "ArrayCheck",
    "Case",
    "CaseResult",
    "CheckReport",
    "Finding",
    "Functions",
    "GradcheckResult",
    "Layer",
    "Layout",
    "OutputCheck",
    "SweepOptions",
    "Tolerance",
    "UserError",
    "adapt",
    "all_cases",
    "check_conv",
    "gradcheck",
    "numerical_grad",
    "run_case",
]
