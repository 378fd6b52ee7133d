"""`CheckReport`: what a check found, and its plain-text form.

A report is a table of the fixed configurations, a line on the random phase, what fails and
when, then one section per finding: its smallest failing configuration, every output (where it
is wrong, a map, the tested diagnoses), what the memory placements showed, hints. The text
depends only on the checked code, the options and the seeds, so a report can be pasted into an
issue or a doc and compared across runs. Lines are wrapped at 96 columns.
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass, field

from npconv.testing.adapters import Adapter
from npconv.testing.cases import COLUMN_DEFAULTS, TABLE_COLUMNS, TAG_TEXT, SweepOptions
from npconv.testing.compare import Tolerance
from npconv.testing.diagnosis import TAG_HINTS
from npconv.testing.locate import ascii_map
from npconv.testing.pool_cases import (
    POOL_COLUMN_DEFAULTS,
    POOL_COLUMNS,
    POOL_TAG_TEXT,
    PoolOptions,
)
from npconv.testing.pool_diagnosis import POOL_TAG_HINTS
from npconv.testing.problems import OUTPUTS
from npconv.testing.results import CaseResult, Finding

WIDTH = 96


@dataclass(frozen=True)
class RandomPhase:
    """How the random phase went: its seed, how many ran, whether the budget cut it short."""

    seed: int
    count: int
    exhausted: bool
    budget: float


@dataclass
class CheckReport:
    """Everything a check found; truthy when every configuration passed, prints as text."""

    name: str
    adapter: Adapter
    kind: str                               # "conv" or "pool"
    options: SweepOptions | PoolOptions
    tol: Tolerance
    seed: int
    results: list[CaseResult]               # the fixed sweep (or the given cases)
    findings: list[Finding]
    reasons: dict[str, str] = field(default_factory=dict)     # why something was left out
    swept: bool = True                      # False when the caller gave the cases
    random: RandomPhase | None = None
    random_results: list[CaseResult] = field(default_factory=list)
    isolated: bool = True
    timeout: float = 2.0
    not_run: int = 0
    stopped: bool = False                   # too many crashes: the rest was not run
    layout_hint: str = ""                   # the layout option that makes the sweep pass

    @property
    def checks(self) -> tuple[str, ...]:
        """The outputs compared ("y", "dx", ...)."""
        return self.adapter.checks(OUTPUTS[self.kind])

    @property
    def passed(self) -> bool:
        return not self.stopped and all(r.passed for r in self.results + self.random_results)

    @property
    def failures(self) -> list[CaseResult]:
        """The failing configurations of the fixed sweep."""
        return [r for r in self.results if not r.passed]

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        return format_report(self)


def _wrap(text: str, indent: str, hang: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent,
                         subsequent_indent=indent + (hang or "  "),
                         break_on_hyphens=False, break_long_words=False)


def _tag_text(report: CheckReport) -> dict[str, str]:
    return TAG_TEXT if report.kind == "conv" else POOL_TAG_TEXT


def table(results: list[CaseResult], kind: str = "conv") -> list[str]:
    """One row per configuration: geometry and verdict (columns that are all default left
    out)."""
    columns, defaults = (TABLE_COLUMNS, COLUMN_DEFAULTS) if kind == "conv" else \
        (POOL_COLUMNS, POOL_COLUMN_DEFAULTS)
    cells = [r.case.columns() for r in results]
    shown = [c for c in columns if c not in defaults or any(row[c] != defaults[c]
                                                            for row in cells)]
    rows = [[str(r.index), *(row[c] for c in shown), "ok" if r.passed else
             "FAIL  " + r.summary()] for r, row in zip(results, cells)]
    head = ["#", *shown, "result"]
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head) - 1)]
    lines = []
    for row in [head, *rows]:
        out = [cell.rjust(widths[0]) if i == 0 else cell.ljust(widths[i])
               for i, cell in enumerate(row[:-1])]
        lines.append(("  " + "  ".join(out) + "  " + row[-1]).rstrip())
    return lines


def _numbers(results: list[CaseResult]) -> str:
    """"#1, #4 and 3 random configurations"."""
    fixed = [f"#{r.index}" for r in results if r.index]
    other = len(results) - len(fixed)
    parts = [", ".join(fixed)] if fixed else []
    if other:
        parts.append(f"{other} random configuration{'s' if other > 1 else ''}")
    return " and ".join(parts)


def _tags_phrase(finding: Finding, texts: dict[str, str]) -> str:
    return " and ".join(texts[t] for t in finding.tags)


def _confirmed(finding: Finding) -> str:
    n = finding.verified
    return (f"; {n} more configuration{'s' if n > 1 else ''} that differ{'' if n > 1 else 's'} "
            f"only in {'it' if len(finding.tags) == 1 else 'them'} confirm"
            f"{'' if n > 1 else 's'} it") if n else ""


def when_line(finding: Finding, texts: dict[str, str]) -> str:
    """The "When it fails" line of one finding."""
    members = _numbers(finding.members)
    if finding.mode == "all":
        return "- every configuration fails"
    if finding.mode == "unless":
        return (f"- every configuration without {_tags_phrase(finding, texts)} fails "
                f"({members}){_confirmed(finding)}")
    if finding.mode == "tags":
        both = "both " if len(finding.tags) > 1 else ""
        alone = "; neither alone does" if len(finding.tags) > 1 else ""
        return (f"- every configuration with {both}{_tags_phrase(finding, texts)} fails "
                f"({members}){alone}{_confirmed(finding)}")
    if finding.mode == "needs":
        return (f"- every failure of this kind ({finding.first.summary()}: {members}) has "
                f"{_tags_phrase(finding, texts)}, and removing it alone makes it pass"
                f"{_confirmed(finding)}; not every configuration with it fails (other features "
                f"or the data matter too)")
    return (f"- {members} ({finding.first.summary()}): no feature or pair of features "
            f"separates these from the passing configurations; the cause is a combination, "
            f"see the smallest case below")


def when_lines(report: CheckReport) -> list[str]:
    """The "When it fails" section: one line per finding, then what passes."""
    texts = _tag_text(report)
    lines = ["When it fails"]
    for f in report.findings:
        lines += _wrap(when_line(f, texts), "  ", "    ")
    passing = [r for r in report.results if r.passed]
    more = sum(r.passed for r in report.random_results)
    extra = f" (and {more} random ones)" if more else ""
    tags = [texts[t] for t in _order(report) if any(t in r.case.tags for r in passing)]
    if len(passing) > 3:
        lines += _wrap(f"Passes {len(passing)} configurations{extra}" +
                       (f", including ones with {', '.join(tags)}." if tags else "."), "  ")
    elif passing:
        lines += _wrap(f"Passes {_numbers(passing)}{extra}" +
                       (f" (with {', '.join(tags)})." if tags else "."), "  ")
    elif more:
        lines += _wrap(f"Passes {more} random configurations.", "  ")
    return lines


def _order(report: CheckReport) -> list[str]:
    return list(_tag_text(report))


def output_lines(result: CaseResult, indent: str = "    ") -> list[str]:
    """Every verdict of one result: crash, error, memory, each output with its diagnoses."""
    lines = []
    if result.crash:
        lines += _wrap(str(result.crash), indent)
    if result.error:
        lines += _wrap(str(result.error), indent)
    for name in result.modified:
        lines += _wrap(f"the code modified its input `{name}` in place", indent)
    for issue in result.memory:
        lines += _wrap(issue.text if issue.kind != "view" else
                       f"{issue.text}: memory the array does not own, which can hold anything "
                       f"or crash the process", indent)
    for check in result.failing:
        lines += _wrap(check.headline(), indent, " " * (len(check.name) + 2))
        if check.status == "wrong" and check.bad is not None and check.where != "everywhere":
            grid = _map(check, result)
            if grid:
                lines.append(f"{indent}  where it is wrong (X), "
                             f"{_axes_text(check.name, result.case.rank)}:")
                lines += [f"{indent}    {row}" for row in grid]
        for text in check.diagnosis:
            lines += _wrap("diagnosis: " + text, indent + "  ", "  ")
    ok = [c.name for c in result.outputs.values() if c.ok]
    if ok:
        lines.append(f"{indent}{', '.join(ok)}: ok")
    return lines


def _map(check, result: CaseResult) -> list[str]:
    rank = result.case.rank
    if check.name == "db" or rank > 2:
        return []
    bad = check.bad
    axes = range(rank) if check.name == "dw" else range(1, rank + 1)
    return ascii_map(bad.any(axis=tuple(a for a in range(bad.ndim) if a not in axes)))


def _axes_text(name: str, rank: int) -> str:
    text = "rows x columns" if rank == 2 else "positions"
    return f"kernel {text}" if name == "dw" else text


def _title(finding: Finding, texts: dict[str, str]) -> str:
    if finding.mode == "all":
        return "every configuration fails"
    if finding.mode == "unless":
        return f"every configuration without {_tags_phrase(finding, texts)} fails"
    if finding.mode == "tags":
        return f"every configuration with {_tags_phrase(finding, texts)} fails"
    if finding.mode == "needs":
        return f"{finding.first.summary()}, only with {_tags_phrase(finding, texts)}"
    return f"{finding.first.summary()} ({_numbers(finding.members)})"


def finding_lines(number: int, finding: Finding, report: CheckReport) -> list[str]:
    """The details of one finding: its smallest case, every verdict, hints."""
    texts, layout = _tag_text(report), report.adapter.layout
    small, first = finding.smallest, finding.first
    lines = _wrap(f"Finding {number}: {_title(finding, texts)}", "")
    origin = f"#{first.index}" if first.index else "a random configuration"
    origin = f"shrunk from {origin}" if small is not first else origin
    lines += _wrap(f"Smallest failing configuration ({origin}): "
                   f"{small.case.describe(layout)}", "  ")
    lines += output_lines(small)
    others = [r for r in finding.members if r.index and r.signature() != first.signature()]
    if others:
        more = f"; and {len(others) - 4} more" if len(others) > 4 else ""
        lines += _wrap("Other failures in this group: " + "; ".join(
            f"#{r.index} {r.summary()}" for r in others[:4]) + more, "  ")
    if finding.consistency:
        lines += _wrap("consistency: " + finding.consistency, "    ", "  ")
    hints = TAG_HINTS if report.kind == "conv" else POOL_TAG_HINTS
    for tag in finding.tags if finding.mode in ("tags", "needs") else ():
        if tag in hints:
            lines += _wrap(f"Typical cause of failures with {texts[tag]} (a hint, not "
                           f"tested): {hints[tag]}", "  ")
    return lines


def _what(report: CheckReport) -> str:
    if isinstance(report.options, PoolOptions):
        return f"{report.options.op} pooling"
    return "transposed convolution" if report.options.transposed else "convolution"


def header_lines(report: CheckReport) -> list[str]:
    """What was checked, how, and what was left out."""
    a, tol = report.adapter, report.tol
    transposed = isinstance(report.options, SweepOptions) and report.options.transposed
    layout = a.layout.describe(report.kind == "conv", transposed)
    lines = [f"npconv check: {report.name} ({_what(report)}; {layout})"]
    where = (f"in a child process (timeout {report.timeout:g} s per run)" if report.isolated
             else "in this process")
    text = (f"Compares {', '.join(report.checks)} with npconv on {len(report.results)} "
            f"configurations (seed {report.seed}; |got - expected| <= {tol.atol:g} + "
            f"{tol.rtol:g} * max|expected|), each run three times with its inputs placed "
            f"differently in memory, {where}")
    if report.random is not None:
        text += f"; then on random configurations (random seed {report.random.seed})"
    lines += _wrap(text + ".", "")
    skipped = report.options.skipped() if report.swept else {}
    skipped.update({k: 0 for k in report.reasons if k not in skipped})
    parts = [_left_out(reason, n, report.reasons.get(reason), first=not i)
             for i, (reason, n) in enumerate(skipped.items())]
    if parts:
        lines += _wrap(f"Left out: {', '.join(parts)}.", "")
    return lines


def _left_out(reason: str, count: int, why: str | None, first: bool) -> str:
    noun = "configuration" if count == 1 else "configurations"
    what = f"{noun} with {reason}" if first else f"with {reason}"
    head = f"{count} {what}" if count else f"those with {reason}"
    return head + (f" ({why})" if why else "")


def random_line(report: CheckReport) -> list[str]:
    """One line on the random phase."""
    r = report.random
    if r is None:
        return []
    fails = sum(not x.passed for x in report.random_results)
    cut = f", stopped by the {r.budget:g} s budget" if r.exhausted else ""
    verdict = f"{fails} fail" if fails else "all pass"
    return _wrap(f"Random phase: {r.count} configurations (--random-seed {r.seed} replays "
                 f"them{cut}): {verdict}.", "")


def format_report(report: CheckReport) -> str:
    """The whole report as text."""
    lines = [*header_lines(report), "", *table(report.results, report.kind), ""]
    if report.random is not None:
        lines += [*random_line(report), ""]
    if report.layout_hint:
        lines += [*_wrap("Layout: " + report.layout_hint, ""), ""]
    if report.findings:
        lines += [*when_lines(report), ""]
    for i, finding in enumerate(report.findings, 1):
        lines += [*finding_lines(i, finding, report), ""]
    if report.stopped:
        n = report.not_run
        lines += _wrap(f"Stopped after repeated crashes or timeouts: {n} configuration"
                       f"{' was' if n == 1 else 's were'} not run.", "")
    lines.append(_result_line(report))
    return "\n".join(lines)


def _result_line(report: CheckReport) -> str:
    n, fails = len(report.results), len(report.failures)
    m = len(report.random_results)
    random_fails = sum(not r.passed for r in report.random_results)
    more = f" and {random_fails} of {m} random ones" if m else ""
    if not report.passed:
        return f"Result: FAIL, {fails} of {n} configurations{more} fail."
    also = f" and {m} random ones" if m else ""
    return (f"Result: PASS, {', '.join(report.checks)} match npconv on all {n} "
            f"configurations{also}.")
