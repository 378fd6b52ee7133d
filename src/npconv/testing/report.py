"""Plain-text reports of `check_conv`: a table of configurations, then what fails and why.

The text depends only on the checked code and the options (the data are seeded), so a report
can be pasted into an issue or a doc and compared across runs. Lines are wrapped at 96 columns.
"""

from __future__ import annotations

import textwrap

from npconv.testing import locate
from npconv.testing.cases import TAG_TEXT, TAGS
from npconv.testing.check import CaseResult, CheckReport, Finding
from npconv.testing.layout import Layout

WIDTH = 96


def _wrap(text: str, indent: str, hang: str = "") -> list[str]:
    return textwrap.wrap(text, WIDTH, initial_indent=indent,
                         subsequent_indent=indent + (hang or "  "),
                         break_on_hyphens=False, break_long_words=False)


def _size(values) -> str:
    return "x".join(map(str, values))


def table(results: list[CaseResult]) -> list[str]:
    """One row per configuration: geometry and verdict."""
    dil = any(max(r.case.dilation) > 1 for r in results)
    grp = any(r.case.groups > 1 for r in results)
    head = ["#", "input", "kernel", "stride", "padding"] + (["dil"] if dil else []) + \
        (["groups"] if grp else []) + ["N", "C", "F", "result"]
    rows = []
    for r in results:
        c = r.case
        row = [str(r.index), _size(c.in_size), _size(c.kernel_size), str(c.stride_arg),
               str(c.padding_arg)] + ([str(c.dilation_arg)] if dil else []) + \
            ([str(c.groups)] if grp else []) + [str(c.batch), str(c.in_channels),
                                                 str(c.out_channels)]
        rows.append([*row, "ok" if r.passed else "FAIL  " + r.summary()])
    widths = [max(len(row[i]) for row in [head, *rows]) for i in range(len(head) - 1)]
    lines = []
    for row in [head, *rows]:
        cells = [cell.rjust(widths[0]) if i == 0 else cell.ljust(widths[i])
                 for i, cell in enumerate(row[:-1])]
        lines.append(("  " + "  ".join(cells) + "  " + row[-1]).rstrip())
    return lines


def _numbers(indices) -> str:
    return ", ".join(f"#{i}" for i in indices)


def when_lines(report: CheckReport) -> list[str]:
    """The "When it fails" section: one line per finding, then what passes."""
    lines = ["When it fails"]
    passing = [r for r in report.results if r.passed]
    if any(f.tag == "except" for f in report.findings):
        lines += _wrap(f"- every configuration fails except {_numbers(r.index for r in passing)}",
                       "  ")
    for f in report.findings:
        if f.tag == "all":
            lines += _wrap("- every configuration fails", "  ")
        elif f.tag == "except" and len(report.findings) > 1:
            lines += _wrap(f"- {f.first.summary()}: {_numbers(f.members)}", "    ")
        elif f.tag not in (None, "except"):
            lines += _wrap(f"- every configuration with {TAG_TEXT[f.tag]} fails: "
                           f"{_numbers(f.members)}", "  ")
        elif f.tag is None:
            shared = [TAG_TEXT[t] for t in TAGS if all(t in r.case.tags for r in f.group)]
            every = "all with" if len(f.group) > 1 else "with"
            common = f"; {every} {', '.join(shared)}" if shared else ""
            lines += _wrap(f"- also fails: {_numbers(f.members)} ({f.first.summary()}{common})",
                           "  ")
    tags = [TAG_TEXT[t] for t in TAGS if any(t in r.case.tags for r in passing)]
    if len(passing) > 3:
        lines += _wrap(f"Passes {len(passing)} configurations" +
                       (f", including ones with {', '.join(tags)}." if tags else "."), "  ")
    elif passing:
        lines += _wrap(f"Passes {_numbers(r.index for r in passing)}" +
                       (f" (with {', '.join(tags)})." if tags else "."), "  ")
    return lines


def output_lines(result: CaseResult, indent: str = "    ") -> list[str]:
    """Every output of one result: its verdict, where it is wrong, a map, the diagnoses."""
    lines = []
    if result.error:
        lines += _wrap(str(result.error), indent)
    for name in result.modified:
        lines += _wrap(f"the code modified its input `{name}` in place", indent)
    for check in result.failing:
        lines += _wrap(check.headline(), indent, " " * (len(check.name) + 2))
        if check.status == "wrong" and check.bad is not None and check.where != "everywhere":
            spatial = _spatial_mask(check, result)
            grid = locate.ascii_map(spatial) if spatial is not None else []
            if grid:
                lines.append(f"{indent}  where it is wrong (X), {_axes_text(check.name, result.case.rank)}:")
                lines += [f"{indent}    {row}" for row in grid]
        for text in check.diagnosis:
            lines += _wrap("diagnosis: " + text, indent + "  ", "  ")
    ok = [c.name for c in result.outputs.values() if c.ok]
    if ok:
        lines.append(f"{indent}{', '.join(ok)}: ok")
    return lines


def _spatial_mask(check, result: CaseResult):
    rank = result.case.rank
    if check.name == "db" or rank > 2:
        return None
    bad = check.bad
    axes = range(rank) if check.name == "dw" else range(1, rank + 1)
    return bad.any(axis=tuple(a for a in range(bad.ndim) if a not in axes))


def _axes_text(name: str, rank: int) -> str:
    text = "rows x columns" if rank == 2 else "positions"
    return f"kernel {text}" if name == "dw" else text


def _title(finding: Finding) -> str:
    if finding.tag == "all":
        return "every configuration fails"
    if finding.tag == "except":
        return f"{finding.first.summary()} ({len(finding.members)} configurations)"
    if finding.tag is None:
        return f"{finding.first.summary()} ({_numbers(finding.members)})"
    return f"every configuration with {TAG_TEXT[finding.tag]} fails"


def finding_lines(number: int, finding: Finding, layout: Layout) -> list[str]:
    """The details of one finding: its smallest case, every output, hints."""
    small, first = finding.smallest, finding.first
    lines = _wrap(f"Finding {number}: {_title(finding)}", "")
    origin = f"shrunk from #{first.index}" if small is not first else f"#{first.index}"
    lines += _wrap(f"Smallest failing configuration ({origin}): "
                   f"{small.case.describe(layout)}", "  ")
    lines += output_lines(small)
    others = [r for r in finding.group if r.signature() != first.signature()]
    if others:
        lines += _wrap("Other failures in this group: " + "; ".join(
            f"#{r.index} {r.summary()}" for r in others), "  ")
    if finding.consistency:
        lines += _wrap("consistency: " + finding.consistency, "    ", "  ")
    if finding.hint:
        lines += _wrap(f"Typical cause when {TAG_TEXT[finding.tag]} fails (a hint, not "
                       f"tested): {finding.hint}", "  ")
    return lines


def header_lines(report: CheckReport) -> list[str]:
    """What was checked, how, and what was left out."""
    a, tol = report.adapter, report.tol
    lines = [f"npconv check: {report.name} ({a.layout.describe()})"]
    lines += _wrap(f"Compares {', '.join(a.checks)} with npconv on {len(report.results)} "
                   f"configurations (seed {report.seed}; |got - expected| <= {tol.atol:g} + "
                   f"{tol.rtol:g} * max|expected|).", "")
    skipped = report.options.skipped() if report.swept else {}
    if skipped:
        parts = [f"{n} {'configurations ' if i == 0 else ''}with {reason}" + (
                 f" ({report.reasons[reason]})" if reason in report.reasons else "")
                 for i, (reason, n) in enumerate(skipped.items())]
        lines += _wrap(f"Left out: {', '.join(parts)}.", "")
    return lines


def format_report(report: CheckReport) -> str:
    """The whole report as text."""
    lines = [*header_lines(report), "", *table(report.results), ""]
    if report.findings:
        lines += [*when_lines(report), ""]
    for i, finding in enumerate(report.findings, 1):
        lines += [*finding_lines(i, finding, report.adapter.layout), ""]
    n, fails = len(report.results), len(report.failures)
    if fails:
        lines.append(f"Result: FAIL, {fails} of {n} configurations fail.")
    else:
        lines.append(f"Result: PASS, {', '.join(report.adapter.checks)} match npconv on all "
                     f"{n} configurations.")
    return "\n".join(lines)
