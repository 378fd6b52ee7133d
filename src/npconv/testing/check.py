"""`check_conv` and `check_pool`: run a user's code over many configurations, explain failures.

The check runs in phases, all through one `Sandbox` (a child process by default):

1. **The fixed sweep**, easy to hard, each configuration three times with its inputs placed
   differently in memory (`memory`): fresh arrays, inside NaN-filled buffers, non-contiguous.
   Each output is compared with npconv's, located and diagnosed (`problems`).
2. **What the code refuses**: size arguments that it takes as one int only (from its
   annotations, or because every configuration needing a tuple raised TypeError/ValueError at
   construction or in the forward pass) and padding modes it refuses are left out and reported.
   When every configuration fails, other layouts are tried on a few of them, so that the report
   can say which layout option to pass.
3. **The random phase**: hundreds of small geometries drawn within what the code supports (a
   printed seed replays them), until a count or a time budget is reached.
4. **Why and when**: failures grouped by the features that separate them from the passing
   configurations, confirmed on extra configurations that vary one feature (`causes`); each
   group's first failure shrunk to the smallest configuration that fails the same way; when y
   is wrong, the user's backward checked against the user's own forward by central
   differences.
"""

from __future__ import annotations

import dataclasses
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from npconv.testing.adapters import Adapter, adapt
from npconv.testing.cases import (
    PADDING_KINDS,
    PADDING_MODES,
    TAGS,
    Case,
    SweepOptions,
    tuple_reason,
)
from npconv.testing.causes import Group, explain
from npconv.testing.compare import Tolerance
from npconv.testing.layout import DATA_FORMATS, WEIGHT_LAYOUTS, Layout
from npconv.testing.memory import PLACEMENTS
from npconv.testing.pool_cases import POOL_OPS, POOL_TAGS, PoolCase, PoolOptions
from npconv.testing.problems import OUTPUTS, evaluate
from npconv.testing.report import CheckReport, RandomPhase
from npconv.testing.results import CaseResult, Crash, Finding
from npconv.testing.sandbox import Job, Sandbox, can_isolate

RANDOM_PLACEMENTS = ("guarded",)
_ADDABLE = {"batch 1", "one channel", "padding 0", "output size 1", "1x1 kernel", "ties"}
_SHRINK_BUDGET = 80
_PROBE_CASES = 3
_BATCH_SECONDS = 0.5
_REFUSALS = ("TypeError", "ValueError", "IndexError", "NotImplementedError", "AssertionError")
_INT_ARGS = ("stride", "padding", "dilation", "output_padding", "kernel_size")


@dataclass(frozen=True)
class Settings:
    """How to run a check (the parts that do not depend on conv or pooling)."""

    seed: int = 0
    tol: Tolerance = field(default_factory=Tolerance)
    shrink: bool = True
    random: int = 200
    random_seed: int | None = None
    budget: float = 10.0
    timeout: float = 2.0
    isolate: bool = True


class Session:
    """The code under test, its sandbox, and how its results are judged."""

    def __init__(self, adapter: Adapter, kind: str, settings: Settings, sandbox: Sandbox):
        self.adapter, self.kind, self.settings, self.sandbox = adapter, kind, settings, sandbox
        self.checks = adapter.checks(OUTPUTS[kind])
        self.not_run = 0

    def run(self, cases: Sequence, *, placements: Sequence[str] = PLACEMENTS,
            phase: str = "sweep", start: int = 0, layout: Layout | None = None
            ) -> list[CaseResult]:
        """Run `cases`, the first placement of each first (a case that crashes there is not
        run again in the others), and judge each as soon as its runs are in; cases not run
        are counted in `not_run`."""
        cases = list(cases)
        runs: list[dict] = [{} for _ in cases]
        judged: dict[int, CaseResult] = {}

        def judge(i: int) -> None:
            judged[i] = evaluate(cases[i], runs[i], seed=self.settings.seed,
                                 tol=self.settings.tol, layout=layout or self.adapter.layout,
                                 checks=self.checks, index=start + i if start else 0,
                                 phase=phase)

        def first(i: int, run) -> None:
            runs[i][placements[0]] = run
            if len(placements) == 1 or isinstance(run, Crash):
                judge(i)

        self.sandbox.run([Job(c, placements[0], layout) for c in cases], first)
        again = [i for i in range(len(cases)) if runs[i] and i not in judged]
        jobs = [(i, p) for i in again for p in placements[1:]]

        def other(k: int, run) -> None:
            i, how = jobs[k]
            runs[i][how] = run
            if len(runs[i]) == len(placements):
                judge(i)

        self.sandbox.run([Job(cases[i], p, layout) for i, p in jobs], other)
        if phase in ("sweep", "random"):
            self.not_run += len(cases) - len(judged)
        return [judged[i] for i in sorted(judged)]

    def consistency(self, case) -> str:
        """`problems.consistency`, run in the sandbox."""
        run = self.sandbox.run([Job(case, task="consistency")])[0]
        return getattr(run, "text", "")


# ---------------------------------------------------------------------------------------------
# What the code refuses
# ---------------------------------------------------------------------------------------------


def _raised_early(result: CaseResult) -> bool:
    e = result.error
    return e is not None and e.stage in ("init", "forward") and e.type_name in _REFUSALS


def refusals(results: list[CaseResult], takes: Callable[[str], bool]
             ) -> dict[str, CaseResult]:
    """Values the code refuses: {"stride": first refusing result, "padding_mode=reflect": ...}.

    A value is refused when every configuration that needs it raised a TypeError, ValueError,
    IndexError, NotImplementedError or AssertionError at construction or in the forward pass,
    and some configuration without it got further. `takes(arg)` says whether the code takes
    the argument at all.
    """
    features: dict[str, Callable] = {
        arg: (lambda c, a=arg: a in c.tuple_args()) for arg in _INT_ARGS if takes(arg)}
    for mode in PADDING_MODES[1:]:
        features[f"padding_mode={mode!r}"] = lambda c, m=mode: getattr(c, "padding_mode",
                                                                        "") == m
    found = {}
    for name, test in features.items():
        having = [r for r in results if test(r.case)]
        others = [r for r in results if not test(r.case)]
        if having and all(_raised_early(r) for r in having) and \
                any(not _raised_early(r) for r in others):
            found[name] = having[0]
    return found


def _refusal_reason(name: str, result: CaseResult, adapter: Adapter) -> str:
    e = result.error
    if e is None:                                 # (refusals are results with an error)
        return ""
    where = f" at {e.location}" if e.location else ""
    value = "a tuple" if "=" not in name else "it"
    return f"{adapter.name} refuses {value}: {e.type_name}{where}"


def _apply_refusals(options, results, found: dict[str, CaseResult], adapter: Adapter,
                    reasons: dict[str, str]):
    args = {n for n in found if "=" not in n}
    modes = {n.split("'")[1] for n in found if "=" in n}
    changes = {"int_only": options.int_only | args}
    if hasattr(options, "padding_modes"):
        changes["padding_modes"] = tuple(m for m in options.padding_modes if m not in modes)
    options = dataclasses.replace(options, **changes)
    for name, first in found.items():
        key = _skip_key(options, first.case, name)
        reasons[key] = _refusal_reason(name, first, adapter)
    kept = [r for r in results if options.skip_reason(r.case) is None]
    for number, r in enumerate(kept, 1):
        r.index = number
    return options, kept


def _skip_key(options, case, name: str) -> str:
    if "=" in name:
        return f"padding_mode={name.split('=')[1]}"
    return options.skip_reason(case) or name


# ---------------------------------------------------------------------------------------------
# Layouts, the random phase, findings
# ---------------------------------------------------------------------------------------------


def _layouts(kind: str, current: Layout) -> list[Layout]:
    weights = WEIGHT_LAYOUTS if kind == "conv" else (None,)
    found = [Layout(d, w) for d in DATA_FORMATS for w in weights]
    return [lay for lay in found if lay != current]


def layout_hint(session: Session, results: list[CaseResult]) -> str:
    """When every configuration fails: the layout under which a few of them pass, as advice."""
    if not results or any(r.passed for r in results):
        return ""
    cases = [r.case for r in sorted(results, key=lambda r: r.case.complexity)[:_PROBE_CASES]]
    for layout in _layouts(session.kind, session.adapter.layout):
        tried = session.run(cases, placements=("plain",), phase="extra", layout=layout)
        if len(tried) == len(cases) and all(r.passed for r in tried):
            flags = layout_flags(layout, session.kind)
            return (f"every configuration of the sweep fails, but with {flags} the "
                    f"{len(cases)} configurations tried pass: the code expects "
                    f"{layout.describe(session.kind == 'conv').split(' ', 1)[1]}; check it "
                    f"with that option")
    return ""


def layout_flags(layout: Layout, kind: str) -> str:
    """The command-line options (and keywords) for `layout`."""
    parts = ["--channels-first"] if layout.data_format == "channels_first" else []
    default = Layout(layout.data_format).weight_layout
    if kind == "conv" and layout.weight_layout != default:
        parts.append(f"--weight-layout {layout.weight_layout}")
    keywords = f"data_format={layout.data_format!r}" + (
        f", weight_layout={layout.weight_layout!r}" if len(parts) > 1 or
        (kind == "conv" and layout.weight_layout != default) else "")
    return f"{' '.join(parts) or 'the default layout'} ({keywords})"


def random_phase(session: Session, options, settings: Settings, fixed: Sequence
                 ) -> tuple[list[CaseResult], RandomPhase]:
    """Run up to `settings.random` random cases within `settings.budget` seconds."""
    import numpy as np

    seed = settings.random_seed if settings.random_seed is not None else \
        secrets.randbelow(10 ** 6)
    rng = np.random.default_rng(seed)
    seen, results, drawn = set(fixed), [], 0
    start, batch = time.monotonic(), 10
    while drawn < settings.random and time.monotonic() - start < settings.budget and \
            not session.sandbox.exhausted:
        cases = []
        for _ in range(min(batch, settings.random - drawn)):
            case = _fresh(options, rng, seen)
            if case is not None:
                cases.append(case)
        drawn += len(cases) or 1
        began = time.monotonic()
        results += session.run(cases, placements=RANDOM_PLACEMENTS, phase="random")
        per_case = (time.monotonic() - began) / max(1, len(cases))
        batch = int(min(100, max(1, _BATCH_SECONDS / max(per_case, 1e-6))))
    cut = drawn < settings.random and not session.sandbox.exhausted    # by the budget alone
    return results, RandomPhase(seed, len(results), cut, settings.budget)


def _fresh(options, rng, seen: set):
    for _ in range(20):
        case = options.random_case(rng)
        if case not in seen:
            seen.add(case)
            return case
    return None


def shrink(session: Session, options, result: CaseResult,
           keep: Callable[[object], bool] = lambda case: True,
           budget: int = _SHRINK_BUDGET) -> CaseResult:
    """The smallest case found that fails like `result` (same signature) and satisfies `keep`.

    Greedy: run every candidate one step smaller, take the first that still fails the same
    way, repeat until none does or `budget` runs are spent. A candidate may lose features but
    gain only simplifying ones (batch 1, one channel, padding 0, ...), so that the smallest
    case stays as plain as the original. Failures that involve memory are shrunk with every
    placement, others with the plain one only.
    """
    placements = PLACEMENTS if result.memory else ("plain",)
    current, target = result, result.signature(fine=True)
    tags = set(result.case.tags)
    while budget > 0:
        cands = list(dict.fromkeys(
            c for c in current.case.smaller()
            if c != current.case and c.valid() and options.skip_reason(c) is None
            and c.complexity < current.case.complexity and keep(c)
            and set(c.tags) - tags <= _ADDABLE))[:budget]
        if not cands:
            break
        budget -= len(cands)
        better = next((r for r in session.run(cands, placements=placements, phase="extra")
                       if r.signature(fine=True) == target), None)
        if better is None:
            break
        current = better
    return current


def _keeper(group: Group) -> Callable[[Any], bool]:
    if group.mode in ("tags", "needs"):
        return lambda case: all(t in case.tags for t in group.tags)
    if group.mode == "unless":
        return lambda case: group.tags[0] not in case.tags
    return lambda case: True


def finding(session: Session, options, group: Group, settings: Settings) -> Finding:
    """A group of failures as a finding: its first failure, shrunk; consistency of y."""
    shows = [r for r in group.members if r.memory and r.failing]     # memory bugs seen in y..
    pool = shows or group.members
    first = next((r for r in pool if r.phase == "sweep"), pool[0])
    if first.phase == "random":
        again = session.run([first.case], phase="random")
        first = again[0] if again and not again[0].passed else first
    hang = first.crash is not None and first.crash.kind == "timeout"
    small = shrink(session, options, first, _keeper(group)) \
        if settings.shrink and not hang else first
    y = small.outputs.get("y")
    note = session.consistency(small.case) if y is not None and y.status == "wrong" else ""
    return Finding(group.mode, group.tags, group.members, small, first, group.verified, note)


def run_check(adapter: Adapter, kind: str, options, reasons: dict[str, str],
              settings: Settings, cases: Sequence | None = None) -> CheckReport:
    """The phases of a check (see the module docstring)."""
    with Sandbox(adapter, seed=settings.seed, tol=settings.tol, timeout=settings.timeout,
                 isolate=settings.isolate) as box:
        session = Session(adapter, kind, settings, box)
        todo = options.cases() if cases is None else list(cases)
        results = session.run(todo, start=1)
        if cases is None:
            takes = lambda arg: adapter.supports(arg, kind) is not False  # noqa: E731
            options, results = _apply_refusals(options, results, refusals(results, takes),
                                               adapter, reasons)
        hint = layout_hint(session, results)
        extra: list[CaseResult] = []
        phase = None
        if cases is None and settings.random > 0:
            extra, phase = random_phase(session, options, settings, [r.case for r in results])
        tags = TAGS if kind == "conv" else POOL_TAGS
        placements = PLACEMENTS if any(r.memory for r in results + extra) else ("plain",)
        groups = explain(results + extra, tags, options.vary,
                         lambda cs: session.run(cs, placements=placements, phase="extra"))
        findings = [finding(session, options, g, settings) for g in groups]
        crashes = box.exhausted
    return CheckReport(adapter.name, adapter, kind, options, settings.tol, settings.seed,
                       results, findings, reasons, swept=cases is None, random=phase,
                       random_results=extra, isolated=settings.isolate,
                       timeout=settings.timeout, not_run=session.not_run, stopped=crashes,
                       layout_hint=hint)


# ---------------------------------------------------------------------------------------------
# The public entry points
# ---------------------------------------------------------------------------------------------


def run_case(adapter: Adapter, case: Case | PoolCase, *, seed: int = 0,
             tol: Tolerance | None = None, placements: Sequence[str] = ("plain",),
             isolate: bool = False, timeout: float = 2.0) -> CaseResult:
    """Run the code on one configuration (in this process by default) and judge it.

    Examples
    --------
    >>> import npconv
    >>> from npconv.testing import FunctionsAdapter, all_cases
    >>> def forward(x, w, b, stride, padding):
    ...     return npconv.conv(x, w, b, stride=stride, padding=padding)
    >>> run_case(FunctionsAdapter(forward), all_cases()[0]).summary()
    'ok'
    """
    for name in placements:
        if name not in PLACEMENTS:
            raise ValueError(f"`placements` must hold names from {PLACEMENTS}; got {name!r}")
    settings = Settings(seed, tol or Tolerance(), timeout=timeout, isolate=isolate)
    with Sandbox(adapter, seed=seed, tol=settings.tol, timeout=timeout, isolate=isolate) as box:
        session = Session(adapter, case.kind, settings, box)
        results = session.run([case], placements=tuple(placements))
    if not results:
        raise RuntimeError("the configuration did not run")          # pragma: no cover
    return results[0]


def _features(adapter: Adapter, kind: str, requested: dict[str, bool | None]
              ) -> tuple[dict[str, bool], dict[str, str]]:
    """Resolve optional features: None checks a feature when the code takes its argument."""
    resolved, reasons = {}, {}
    for feature, value in requested.items():
        if value is not None and not isinstance(value, bool):
            raise TypeError(f"`{feature}` must be True, False or None; got {value!r}")
        if value is None:
            value = adapter.supports(feature, kind) is not False
            if not value:
                reasons[feature] = f"{adapter.name} takes no `{feature}` argument"
        resolved[feature] = value
    return resolved, reasons


def _settings(seed, rtol, atol, shrink_, random, random_seed, budget, timeout, isolate
              ) -> Settings:
    for value, name in ((seed, "seed"), (random, "random")):
        if not isinstance(value, int) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an int; got {value!r}")
    if random_seed is not None and (not isinstance(random_seed, int) or
                                    isinstance(random_seed, bool)):
        raise TypeError(f"`random_seed` must be an int or None; got {random_seed!r}")
    for value, name in ((seed, "seed"), (random, "random"), (random_seed or 0, "random_seed")):
        if value < 0:                         # NumPy's generators take no negative seed
            raise ValueError(f"`{name}` must be >= 0; got {value}")
    for value, name in ((budget, "budget"), (timeout, "timeout")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"`{name}` must be a number of seconds > 0; got {value!r}")
    if isolate is None:
        isolate = can_isolate()
    elif not isinstance(isolate, bool):
        raise TypeError(f"`isolate` must be True, False or None; got {isolate!r}")
    elif isolate and not can_isolate():
        raise ValueError("`isolate=True` needs os.fork, which this platform lacks; pass "
                         "isolate=None or False")
    return Settings(seed, Tolerance(rtol, atol), bool(shrink_), random, random_seed,
                    float(budget), float(timeout), isolate)


def _check_cases(cases, kind: type) -> list:
    if not isinstance(cases, (list, tuple)) or not all(isinstance(c, kind) for c in cases):
        raise TypeError(f"`cases` must be a list of npconv.testing.{kind.__name__}; "
                        f"got {cases!r}")
    if not cases:
        raise ValueError("`cases` must not be empty; got []")
    return list(cases)


def _int_only(adapter: Adapter, kind: str, per_axis: bool | None,
              reasons: dict[str, str]) -> tuple[bool, frozenset[str]]:
    """(per_axis for the options, arguments annotated int) from `per_axis` and the code."""
    if per_axis is not None and not isinstance(per_axis, bool):
        raise TypeError(f"`per_axis` must be True, False or None; got {per_axis!r}")
    if per_axis is not None:
        return per_axis, frozenset()
    annotated = adapter.int_only(kind)
    for arg, param in annotated.items():
        reasons[tuple_reason(arg)] = f"{adapter.name}'s `{param}` is annotated `int`"
    return True, frozenset(annotated)


def check_conv(forward: object, backward: Callable | None = None, *, rank: int = 2,
               max_stride: int = 3, padding: tuple[str, ...] = PADDING_KINDS,
               square_only: bool = False, per_axis: bool | None = None,
               dilation: bool | None = None, groups: bool | None = None,
               transposed: bool | None = None, padding_modes: tuple[str, ...] | None = None,
               data_format: str | None = None, weight_layout: str | None = None,
               seed: int = 0, rtol: float = 1e-5, atol: float = 1e-6,
               cases: list[Case] | None = None, shrink: bool = True, random: int = 200,
               random_seed: int | None = None, budget: float = 10.0, timeout: float = 2.0,
               isolate: bool | None = None) -> CheckReport:
    """Check a hand-written convolution against npconv over fixed and random configurations.

    Parameters
    ----------
    forward : class, function or Adapter
        A layer class with forward(x) / backward(dy) (wrapped in `LayerAdapter`), a forward
        function (wrapped in `FunctionsAdapter` with `backward`), or an adapter built by hand.
    backward : function, optional
        The backward function that goes with a forward function.
    rank, max_stride, padding, square_only : see `SweepOptions`
        Leave out what the code does not claim to support.
    per_axis : bool or None
        False leaves out per-axis strides, paddings and dilations (code that takes one int),
        True checks them; None (default) leaves out those that the code's signature annotates
        as ``int`` or that it refuses (every such configuration raised a TypeError or
        ValueError before its backward), and reports them.
    dilation, groups : bool or None
        None checks them when the code takes a `dilation` / `groups` argument.
    transposed : bool or None
        Check a transposed convolution (PyTorch's ConvTranspose); None: when the code takes
        an `output_padding` argument.
    padding_modes : tuple of str or None
        Padding modes besides zeros to check ("reflect", "replicate", "circular"); None: all
        three when the code takes a `padding_mode` argument (those it refuses are left out).
    data_format, weight_layout : str, optional
        The code's layout when `forward` is not an adapter (see `Layout`).
    seed : int
        Seed of the random x, w, b and dy of the fixed sweep: its report is the same on
        every run.
    rtol, atol : float
        |got - expected| <= atol + rtol * max|expected| for each output.
    cases : list of Case, optional
        Check these configurations instead of the sweep (no random phase).
    shrink : bool
        Shrink each finding's first failure to the smallest configuration that fails alike.
    random : int
        Random configurations to run after the fixed sweep (0: none).
    random_seed : int, optional
        Seed of the random phase (default: a fresh one, printed in the report).
    budget : float
        Seconds the random phase may take; it stops early past them.
    timeout : float
        Seconds one run of the code may take before it counts as hung.
    isolate : bool or None
        Run the code in a child process, so that a crash or a hang is a finding (default:
        where ``os.fork`` exists); False runs it in this process.

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
    >>> report = check_conv(forward, backward, random=20, random_seed=1)
    >>> bool(report), len(report.results), len(report.random_results)
    (True, 25, 20)
    """
    adapter = adapt(forward, backward, data_format=data_format, weight_layout=weight_layout)
    adapter.validate("conv")
    settings = _settings(seed, rtol, atol, shrink, random, random_seed, budget, timeout, isolate)
    features, reasons = _features(adapter, "conv", {"dilation": dilation, "groups": groups})
    if transposed is None:
        transposed = adapter.supports("output_padding") is True
    if padding_modes is None:
        padding_modes = PADDING_MODES[1:] if adapter.supports("padding_mode") and \
            not transposed else ()
    per_axis, int_only = _int_only(adapter, "conv", per_axis, reasons)
    options = SweepOptions(rank, max_stride, padding, square_only, per_axis, **features,
                           int_only=int_only, transposed=bool(transposed),
                           padding_modes=padding_modes)
    if cases is not None:
        cases = _check_cases(cases, Case)
    return run_check(adapter, "conv", options, reasons, settings, cases)


def check_pool(forward: object, backward: Callable | None = None, *, op: str = "max",
               rank: int = 2, max_stride: int = 3, padding: bool | None = None,
               ceil_mode: bool | None = None, dilation: bool | None = None,
               count_include_pad: bool | None = None, per_axis: bool | None = None,
               data_format: str | None = None, seed: int = 0, rtol: float = 1e-5,
               atol: float = 1e-6, cases: list[PoolCase] | None = None, shrink: bool = True,
               random: int = 200, random_seed: int | None = None, budget: float = 10.0,
               timeout: float = 2.0, isolate: bool | None = None) -> CheckReport:
    """Check a hand-written max or average pooling against npconv (PyTorch's semantics).

    The sweep covers what hand-written pooling usually gets wrong: overlapping windows
    (stride < kernel size), gaps, padding, the partial last window of ceil_mode, dilation
    (max), tied maxima (the gradient goes to the first, as in PyTorch), the divisor with and
    without the padding (average); then a random phase, as `check_conv`.

    Parameters
    ----------
    forward : class, function or Adapter
        A pooling layer class (``MaxPool2D(kernel_size, stride, padding)``,
        ``Pooling(pool_h, pool_w, stride, pad)``...) with forward(x) / backward(dy), a forward
        function (``forward(x, kernel_size, stride, padding)`` or CS231n's ``forward(x,
        pool_param) -> (y, cache)``) with `backward`, or an adapter.
    backward : function, optional
        The backward function that goes with a forward function.
    op : "max" or "avg"
    rank, max_stride : int
        Spatial dimensions; largest stride.
    padding, ceil_mode, dilation : bool or None
        None checks them when the code takes the argument (dilation: max pooling only).
    count_include_pad : bool or None
        The average's divisor: True counts the padding (PyTorch's default), False does not
        (Keras' "same" pooling); None checks both when the code takes `count_include_pad`,
        else True.
    per_axis : bool or None
        As in `check_conv`.
    data_format : str, optional
        "channels_last" (default) or "channels_first".
    seed, rtol, atol, cases, shrink, random, random_seed, budget, timeout, isolate
        As in `check_conv` (`cases`: a list of `PoolCase`).

    Returns
    -------
    CheckReport

    Examples
    --------
    >>> import npconv
    >>> def forward(x, kernel_size, stride, padding):
    ...     return npconv.max_pool(x, kernel_size, stride=stride, padding=padding)
    >>> def backward(dy, x, kernel_size, stride, padding):
    ...     return npconv.max_pool_backward(dy, x, kernel_size, stride=stride, padding=padding)
    >>> report = check_pool(forward, backward, random=20, random_seed=1)
    >>> bool(report), report.checks
    (True, ('y', 'dx'))
    """
    if op not in POOL_OPS:
        raise ValueError(f"`op` must be one of {POOL_OPS}; got {op!r}")
    adapter = adapt(forward, backward, data_format=data_format)
    adapter.validate("pool")
    settings = _settings(seed, rtol, atol, shrink, random, random_seed, budget, timeout, isolate)
    wanted = {"padding": padding, "ceil_mode": ceil_mode,
              "dilation": dilation if op == "max" else False}
    features, reasons = _features(adapter, "pool", wanted)
    stride = adapter.supports("stride", "pool") is not False
    if not stride:
        reasons["stride != kernel size"] = f"{adapter.name} takes no `stride` argument"
    if count_include_pad is None:
        takes = op == "avg" and adapter.supports("count_include_pad", "pool") is True
        cip = (True, False) if takes else (True,)
    elif isinstance(count_include_pad, bool):
        cip = (count_include_pad,)
    else:
        raise TypeError(f"`count_include_pad` must be True, False or None; got "
                        f"{count_include_pad!r}")
    per_axis, int_only = _int_only(adapter, "pool", per_axis, reasons)
    if not per_axis:
        int_only = frozenset({"stride", "padding", "dilation", "kernel_size"})
    options = PoolOptions(op, rank, max_stride, stride, features["padding"],
                          features["ceil_mode"], features["dilation"], cip, int_only)
    if cases is not None:
        cases = _check_cases(cases, PoolCase)
    return run_check(adapter, "pool", options, reasons, settings, cases)


