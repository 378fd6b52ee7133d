"""`check_conv`: run a user's convolution over the sweep and explain where it is wrong.

For every `Case` of the sweep (easy to hard) the checker draws seeded x, w, b and dy, calls the
user's code through an adapter, and compares y, dx, dw and db with npconv's fast ops (which the
test suite verifies against `npconv.reference` and PyTorch). A wrong output is located
(`locate`) and explained (`diagnosis`). Across cases, failures are grouped by the feature they
all share ("every configuration with padding 0 fails"); each group's first failure is shrunk to
the smallest configuration that still fails the same way, and, when its forward pass is wrong,
its backward is checked against the user's own forward by central differences.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

import npconv
from npconv.spec import effective_kernel
from npconv.testing import diagnosis, locate
from npconv.testing.adapters import Adapter, UserError, adapt
from npconv.testing.cases import PADDING_KINDS, TAGS, Case, SweepOptions
from npconv.testing.compare import OutputCheck, Tolerance, compare
from npconv.testing.gradcheck import gradcheck

_SHRINK_BUDGET = 40
_CONSISTENCY_MAX_ELEMENTS = 400


@dataclass
class CaseResult:
    """The outcome of one configuration: per-output checks, or the exception user code raised."""

    index: int                                   # 1-based position in the sweep; 0 if shrunk
    case: Case
    outputs: dict[str, OutputCheck] = field(default_factory=dict)
    error: UserError | None = None
    modified: tuple[str, ...] = ()               # inputs the user's code changed in place

    @property
    def passed(self) -> bool:
        return self.error is None and not self.modified and all(
            o.ok for o in self.outputs.values())

    @property
    def failing(self) -> list[OutputCheck]:
        return [o for o in self.outputs.values() if not o.ok]

    def signature(self) -> tuple:
        """What "fails the same way" means when shrinking and grouping."""
        error = (self.error.stage, self.error.type_name) if self.error else None
        return (error, tuple((o.name, o.status, o.causes) for o in self.failing), self.modified)

    def summary(self) -> str:
        """A few words for the table: "ok", "dx shape (2, 0, 0, 3)", "backward raised ..."."""
        if self.passed:
            return "ok"
        parts = [f"{self.error.stage} raised {self.error.type_name}"] if self.error else []
        parts += [o.short() for o in self.failing]
        parts += [f"modifies {name}" for name in self.modified]
        return "; ".join(parts)


def _data(case: Case, seed: int):
    """Seeded canonical x (N, *S, C), w (*K, C/G, F), b (F,), dy (N, *P, F)."""
    key = (seed, case.batch, case.in_channels, case.out_channels, case.groups, *case.in_size,
           *case.kernel_size, *case.stride, *(p for pair in case.pads for p in pair),
           *case.dilation)
    rng = np.random.default_rng(key)
    x = rng.standard_normal(case.x_shape)                                    # (N, *S, C)
    w = rng.standard_normal(case.w_shape)                                    # (*K, C/G, F)
    b = rng.standard_normal(case.out_channels)                               # (F,)
    dy = rng.standard_normal((case.batch, *case.out_size, case.out_channels))  # (N, *P, F)
    return x, w, b, dy


def _expected(case: Case, x, w, b, dy, bias: bool) -> dict[str, np.ndarray]:
    kw = {"stride": case.stride, "padding": case.pads, "dilation": case.dilation,
          "groups": case.groups}
    y = npconv.conv(x, w, b if bias else None, **kw)                   # (N, *P, F)
    dx, dw, db = npconv.conv_backward(dy, x, w, bias=bias, **kw)       # like x, w, (F,)
    return {"y": y, "dx": dx, "dw": dw, "db": db}


def run_case(adapter: Adapter, case: Case, *, seed: int = 0, tol: Tolerance | None = None,
             index: int = 0) -> CaseResult:
    """Run the user's code on one configuration and check every output it produces.

    Examples
    --------
    >>> import npconv
    >>> from npconv.testing.adapters import Functions
    >>> from npconv.testing.cases import all_cases
    >>> def forward(x, w, b, stride, padding):
    ...     return npconv.conv(x, w, b, stride=stride, padding=padding)
    >>> run_case(Functions(forward), all_cases()[0]).summary()
    'ok'
    """
    tol = tol or Tolerance()
    x, w, b, dy = _data(case, seed)
    lay = adapter.layout
    given = {"x": lay.to_user("x", x), "w": lay.to_user("w", w), "b": b.copy(),
             "dy": lay.to_user("x", dy)}                    # copies in the user's layout
    saved = {k: v.copy() for k, v in given.items()}
    run = adapter.run(case, given["x"], given["w"], given["b"], given["dy"])
    expected = _expected(case, x, w, b, dy, run.bias)
    ctx = diagnosis.Context(case, lay, tol, x, w, b if run.bias else None, dy, expected)
    result = CaseResult(index, case, error=run.error)
    for name in adapter.checks:
        if (name == "db" and not run.bias) or (run.error and name not in run.outputs):
            continue
        result.outputs[name] = _check_output(ctx, name, run.outputs.get(name))
    result.modified = tuple(k for k in given if not np.array_equal(given[k], saved[k]))
    return result


def _check_output(ctx: diagnosis.Context, name: str, raw) -> OutputCheck:
    check, got = compare(name, raw, ctx.expected[name], ctx.layout, ctx.tol)
    if check.ok or check.status == "missing":
        return check
    if check.bad is not None and check.status == "wrong":
        check.where = locate.describe(check.bad, name, ctx.case)
    found = diagnosis.diagnose(ctx, name, raw, got)
    check.causes = tuple(key for key, _ in found)
    check.diagnosis = tuple(text for _, text in found)
    return check


# ---------------------------------------------------------------------------------------------
# Shrinking and grouping
# ---------------------------------------------------------------------------------------------

_INCIDENTAL = {"batch 1", "one channel"}


def _smaller(case: Case):
    """Candidate cases one step smaller than `case`, most promising first."""
    g, rank = case.groups, case.rank
    yield case.with_(batch=1)
    yield case.with_(in_channels=g, out_channels=g)
    yield case.with_(in_channels=g)
    yield case.with_(out_channels=g)
    yield case.with_(in_size=tuple(s - 1 for s in case.in_size))
    for a in range(rank):
        yield case.with_(in_size=tuple(s - (i == a) for i, s in enumerate(case.in_size)))


def _valid(case: Case) -> bool:
    """A possible case whose input still holds a whole (dilated) kernel without padding."""
    try:
        _ = case.spec
    except ValueError:
        return False
    return all(s >= effective_kernel(k, d)
               for s, k, d in zip(case.in_size, case.kernel_size, case.dilation))


def shrink(adapter: Adapter, result: CaseResult, *, seed: int = 0,
           tol: Tolerance | None = None, budget: int = _SHRINK_BUDGET) -> CaseResult:
    """The smallest case found that fails the same way as `result` and has the same tags.

    Greedy: take the first smaller candidate that still fails with the same signature, repeat
    until none does or `budget` runs are spent.
    """
    tol = tol or Tolerance()
    current = result
    tags = set(result.case.tags) - _INCIDENTAL
    improved = True
    while improved and budget > 0:
        improved = False
        for cand in _smaller(current.case):
            if cand == current.case or not _valid(cand) or cand.size >= current.case.size \
                    or set(cand.tags) - _INCIDENTAL != tags:
                continue
            budget -= 1
            attempt = run_case(adapter, cand, seed=seed, tol=tol)
            if attempt.signature() == result.signature():
                current, improved = attempt, True
                break
            if budget <= 0:
                break
    return current


def group_failures(results: list[CaseResult]) -> list[tuple[str | None, list[CaseResult]]]:
    """Failing results grouped by what they have in common.

    Returns [(tag, members)]: ("all", every result) when everything fails; ("except", ...)
    per failure signature when only a few configurations pass; otherwise a tag from `TAGS`
    for each feature on which every configuration fails (greedy cover, largest group first),
    then None for the failures no tag explains, grouped by signature.
    """
    failing = [r for r in results if not r.passed]
    passing = len(results) - len(failing)
    if not failing or not passing:
        return [("all", failing)] if failing else []
    if passing <= max(2, len(results) // 5):
        return [("except", members) for members in _by_signature(failing)]
    exact = [t for t in TAGS if any(t in r.case.tags for r in results)
             and all(not r.passed for r in results if t in r.case.tags)]
    groups, left = [], failing
    while left and exact:
        best = max(exact, key=lambda t: (sum(t in r.case.tags for r in left), -TAGS.index(t)))
        members = [r for r in left if best in r.case.tags]
        if not members:
            break
        groups.append((best, members))
        exact.remove(best)
        left = [r for r in left if best not in r.case.tags]
    return groups + [(None, members) for members in _by_signature(left)]


def _by_signature(results: list[CaseResult]) -> list[list[CaseResult]]:
    groups: dict[tuple, list[CaseResult]] = {}
    for r in results:
        groups.setdefault(r.signature(), []).append(r)
    return list(groups.values())


def consistency(adapter: Adapter, case: Case, *, seed: int = 0,
                tol: Tolerance | None = None) -> str:
    """Whether the user's dx and dw are the gradients of the user's own forward pass.

    Only asked when y is wrong: it tells a wrong forward with a matching backward from two
    independent bugs. Returns "" when it cannot be answered cheaply.
    """
    tol = tol or Tolerance()
    x, w, b, dy = _data(case, seed)
    if not adapter.has_backward or x.size + w.size > _CONSISTENCY_MAX_ELEMENTS:
        return ""
    lay = adapter.layout
    xu, wu, dyu = lay.to_user("x", x), lay.to_user("w", w), lay.to_user("x", dy)

    def outputs(dy_, xu_, wu_):
        run = adapter.run(case, xu_.copy(), wu_.copy(), b.copy(), np.array(dy_))
        if run.error:
            raise RuntimeError(str(run.error))
        return run.outputs

    try:
        result = gradcheck(lambda xu_, wu_: outputs(dyu, xu_, wu_)["y"], xu, wu, dy=dyu,
                           grad=lambda d, xu_, wu_: [outputs(d, xu_, wu_).get(k)
                                                     for k in ("dx", "dw")],
                           names=("dx", "dw"), rtol=tol.rtol * 10, atol=tol.atol * 10)
    except (RuntimeError, ValueError, TypeError):
        return ""
    if result:
        return ("dx and dw are the exact gradients of this forward pass (central differences "
                "agree): the backward is consistent with it, the forward pass is what is wrong")
    failed = "; ".join(str(c) for c in result.checks if not c.passed)
    return f"the backward is not the gradient of this forward pass either ({failed})"


# ---------------------------------------------------------------------------------------------
# The report and the public entry point
# ---------------------------------------------------------------------------------------------


@dataclass
class Finding:
    """One way the code fails: when (a feature, or a list of cases), and the smallest case."""

    tag: str | None                    # a `TAGS` entry, "all", or None
    members: list[int]                 # sweep indices of the cases in this group
    smallest: CaseResult               # shrunk from the group's first failure
    first: CaseResult
    consistency: str = ""
    group: list[CaseResult] = field(default_factory=list)    # the failures assigned here

    @property
    def hint(self) -> str:
        """Typical cause of failing exactly on this feature (a hint, not a tested diagnosis)."""
        return diagnosis.TAG_HINTS.get(self.tag, "") if self.tag else ""


@dataclass
class CheckReport:
    """Everything `check_conv` found; truthy when every configuration passed, prints as text."""

    name: str
    adapter: Adapter
    options: SweepOptions
    tol: Tolerance
    seed: int
    results: list[CaseResult]
    findings: list[Finding]
    reasons: dict[str, str] = field(default_factory=dict)     # why a feature was left out
    swept: bool = True                  # False when the caller gave the cases

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    @property
    def failures(self) -> list[CaseResult]:
        return [r for r in self.results if not r.passed]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        from npconv.testing.report import format_report
        return format_report(self)


def _features(adapter: Adapter, requested: dict[str, bool | None]) -> tuple[dict, dict]:
    """Resolve dilation/groups: None checks a feature when the code takes its argument."""
    resolved, reasons = {}, {}
    for feature, value in requested.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"`{feature}` must be True, False or None; got {value!r}")
        if value is None:
            value = adapter.supports(feature) is not False
            if not value:
                reasons[feature] = f"{adapter.name} takes no `{feature}` argument"
        resolved[feature] = value
    return resolved, reasons


def _check_cases(cases) -> list[Case]:
    if not isinstance(cases, (list, tuple)) or not all(isinstance(c, Case) for c in cases):
        raise TypeError(f"`cases` must be a list of npconv.testing.Case; got {cases!r}")
    if not cases:
        raise ValueError("`cases` must not be empty; got []")
    return list(cases)


def _findings(adapter: Adapter, results: list[CaseResult], seed: int,
              tol: Tolerance, shrink_cases: bool) -> list[Finding]:
    findings = []
    for tag, members in group_failures(results):
        first = members[0]
        small = shrink(adapter, first, seed=seed, tol=tol) if shrink_cases else first
        indices = [r.index for r in (members if tag in (None, "all", "except") else
                                     [r for r in results if tag in r.case.tags])]
        y = small.outputs.get("y")
        note = consistency(adapter, small.case, seed=seed, tol=tol) \
            if y is not None and y.status == "wrong" else ""
        findings.append(Finding(tag, indices, small, first, note, members))
    return findings


def check_conv(forward, backward=None, *, rank: int = 2, max_stride: int = 3,
               padding: tuple[str, ...] = PADDING_KINDS, square_only: bool = False,
               per_axis: bool = True, dilation: bool | None = None,
               groups: bool | None = None, data_format: str | None = None,
               weight_layout: str | None = None, seed: int = 0, rtol: float = 1e-5,
               atol: float = 1e-6, cases: list[Case] | None = None,
               shrink: bool = True) -> CheckReport:
    """Check a hand-written convolution against npconv over a sweep of configurations.

    Parameters
    ----------
    forward : class, function or Adapter
        A layer class with forward(x) / backward(dy) (wrapped in `Layer`), a forward function
        (wrapped in `Functions` with `backward`), or an adapter built by hand.
    backward : function, optional
        The backward function that goes with a forward function.
    rank, max_stride, padding, square_only, per_axis : see `SweepOptions`
        Leave out what the code does not claim to support.
    dilation, groups : bool or None
        None checks them when the code takes a `dilation` / `groups` argument.
    data_format, weight_layout : str, optional
        The code's layout when `forward` is not an adapter (see `Layout`).
    seed : int
        Seed of the random x, w, b and dy: the report is the same on every run.
    rtol, atol : float
        |got - expected| <= atol + rtol * max|expected| for each output.
    cases : list of Case, optional
        Check these configurations instead of the sweep.
    shrink : bool
        Shrink each group's first failure to the smallest configuration that fails alike.

    Returns
    -------
    CheckReport
        Truthy when every checked configuration passes; ``print(report)`` shows which fail,
        the smallest failing one, which output is wrong, where, and the likely cause.

    Examples
    --------
    >>> import npconv
    >>> def forward(x, w, b, stride, padding):
    ...     return npconv.conv(x, w, b, stride=stride, padding=padding)
    >>> def backward(dy, x, w, b, stride, padding):
    ...     return npconv.conv_backward(dy, x, w, stride=stride, padding=padding)
    >>> report = check_conv(forward, backward)
    >>> bool(report), len(report.results)
    (True, 25)
    """
    adapter = adapt(forward, backward, data_format=data_format, weight_layout=weight_layout)
    features, reasons = _features(adapter, {"dilation": dilation, "groups": groups})
    options = SweepOptions(rank, max_stride, padding, square_only, per_axis, **features)
    tol = Tolerance(rtol, atol)
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"`seed` must be an int; got {seed!r}")
    todo = options.cases() if cases is None else _check_cases(cases)
    results = [run_case(adapter, c, seed=seed, tol=tol, index=i)
               for i, c in enumerate(todo, 1)]
    findings = _findings(adapter, results, seed, tol, shrink)
    return CheckReport(adapter.name, adapter, options, tol, seed, results, findings, reasons,
                       swept=cases is None)
