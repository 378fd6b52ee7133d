"""When does the code fail? Features that separate failing from passing configurations.

`explain` groups the failing configurations by what causes them, and names a feature (a tag
such as "padding 0") only when it separates failing from passing configurations: every
configuration with it fails, and configurations made to differ from checked ones in that
feature alone (`vary`) confirm it both ways: a failing one without the feature no longer fails
that way, a passing one given the feature fails. A pair of features is tried when no single one
does ("fails when both stride > 1 and a non-square input"), and a feature whose absence is the
only thing passing configurations share ("fails unless the kernel is 1x1").

A weaker statement comes next, for failures that also depend on the data (a max-pool bug
that shows only where the overwritten gradient was not zero): a feature that every failure of
one kind has and whose removal alone makes them pass, though some configurations with it pass
("needs overlapping windows"). Failures that none of these explain are grouped by how they
fail, as a combination of features, and the report shows their smallest case instead of
naming a cause.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from npconv.testing.results import CaseResult

Vary = Callable[[object, str, bool], object]
Runner = Callable[[list], list[CaseResult]]

_SAMPLES = 3          # failing and passing configurations varied per candidate cause
_CANDIDATES = 4       # candidate causes tried (verified) per kind of explanation
_SUPPORT = 3          # configurations with a feature needed before it is called sufficient
_NEEDS_SHARE = 0.3    # a "needs" feature: at least this share of the configurations with it fail


@dataclass
class Group:
    """Failures explained together: how (`mode`), by which tags, and how well confirmed."""

    mode: str                      # "all", "tags", "unless", "needs" or "combination"
    tags: tuple[str, ...]
    members: list[CaseResult]
    verified: int = 0              # extra configurations that confirmed the cause
    tried: list[CaseResult] = field(default_factory=list)    # those extra configurations


def _has(result: CaseResult, tags: Sequence[str]) -> bool:
    case_tags = result.case.tags
    return all(t in case_tags for t in tags)


def _smallest_first(results: list[CaseResult]) -> list[CaseResult]:
    return sorted(results, key=lambda r: r.case.complexity)


class _Verifier:
    """Runs the extra configurations that confirm or refute a candidate cause."""

    def __init__(self, vary: Vary, run: Runner) -> None:
        self.vary, self.run = vary, run

    def _varied(self, case, tags: Sequence[str], present: bool):
        for tag in tags:
            if (tag in case.tags) != present:
                case = self.vary(case, tag, present)
                if case is None:
                    return None
        return case

    def confirm(self, tags: tuple[str, ...], members: list[CaseResult],
                passing: list[CaseResult], negate: bool = False) -> list[CaseResult] | None:
        """The extra results, when every one behaves as `tags` being the cause predicts; None
        when one contradicts it or none could be made.

        A failing member varied to lose one of `tags` must stop failing that way; a passing
        result varied to gain all of them must fail. With `negate` (the cause is the absence
        of `tags`) the members gain the tag and the passing results lose it.
        """
        plans = []                                  # (case, "changes" or "fails", origin)
        for m in _smallest_first(members)[:_SAMPLES]:
            for tag in tags:
                case = self._varied(m.case, (tag,), negate)
                if case is not None:
                    plans.append((case, "changes", m))
        for p in _smallest_first(passing)[:_SAMPLES]:
            case = self._varied(p.case, tags, not negate)
            if case is not None:
                plans.append((case, "fails", p))
        if not plans:
            return None
        extra = self.run([case for case, _, _ in plans])
        if len(extra) != len(plans):
            return None                             # some did not run (crashes)
        for result, (_, expect, origin) in zip(extra, plans):
            changed = result.passed or result.signature() != origin.signature()
            if (expect == "changes" and not changed) or (expect == "fails" and result.passed):
                return None
        return extra


def explain(results: list[CaseResult], tags: Sequence[str], vary: Vary,
            run: Runner) -> list[Group]:
    """Groups of the failing results, each with the cause that separates it (if any)."""
    failing = [r for r in results if not r.passed]
    passing = [r for r in results if r.passed]
    if not failing:
        return []
    if not passing:
        return [Group("all", (), failing)]
    verifier = _Verifier(vary, run)
    groups, left = _single_tags(results, failing, passing, tags, verifier)
    if not left:
        return groups
    unless = _unless(failing, passing, tags, verifier)
    if unless is not None:
        return [unless]
    pairs, left = _tag_pairs(results, left, passing, tags, verifier)
    needs, left = _necessary_tags(results, left, tags, verifier)
    rest = [Group("combination", (), members) for members in _by_signature(left)]
    return groups + pairs + needs + rest


def _unless(failing, passing, tags, verifier: _Verifier) -> Group | None:
    """A tag that every passing result has and no failing one: "fails unless <tag>"."""
    for tag in tags:
        if all(tag in r.case.tags for r in passing) and \
                not any(tag in r.case.tags for r in failing):
            extra = verifier.confirm((tag,), failing, passing, negate=True)
            if extra is not None:
                return Group("unless", (tag,), failing, len(extra), extra)
    return None


def _sufficient(results, tagset: tuple[str, ...]) -> bool:
    """Every result with all of `tagset` fails, and there are `_SUPPORT` of them at least."""
    having = [r for r in results if _has(r, tagset)]
    return len(having) >= _SUPPORT and not any(r.passed for r in having)


def _single_tags(results, failing, passing, tags, verifier: _Verifier):
    groups, left = [], failing
    candidates = [t for t in tags if _sufficient(results, (t,))]
    tried = 0
    while left and candidates and tried < _CANDIDATES:
        best = max(candidates, key=lambda t: (sum(t in r.case.tags for r in left),
                                              -list(tags).index(t)))
        candidates.remove(best)
        members = [r for r in left if best in r.case.tags]
        if not members:
            continue
        tried += 1
        extra = verifier.confirm((best,), members, passing)
        if extra is None:
            continue
        groups.append(Group("tags", (best,), members, len(extra), extra))
        left = [r for r in left if best not in r.case.tags]
    return groups, left


def _tag_pairs(results, left, passing, tags, verifier: _Verifier):
    groups = []
    pairs = [p for p in itertools.combinations(tags, 2)
             if _sufficient(results, p) and not _sufficient(results, p[:1])
             and not _sufficient(results, p[1:])]
    tried = 0
    while left and pairs and tried < _CANDIDATES:
        best = max(pairs, key=lambda p: sum(_has(r, p) for r in left))
        pairs.remove(best)
        members = [r for r in left if _has(r, best)]
        if not members:
            continue
        tried += 1
        extra = verifier.confirm(best, members, passing)
        if extra is None:
            continue
        groups.append(Group("tags", best, members, len(extra), extra))
        left = [r for r in left if not _has(r, best)]
    return groups, left


def _necessary_tags(results, left, tags, verifier: _Verifier):
    """Failures of one kind whose members have a tag that removing alone makes pass, though
    some configurations with it pass too (the failure depends on the data as well): "needs".

    Tried per kind of failure, the tag that most members have first (then the one fewest
    passing configurations have), if at least `_NEEDS_SHARE` of the configurations with it fail
    (a rare failure stops under almost any change, so its removal alone tells little); the
    members it covers form a group, the rest go on.
    """
    groups, rest = [], []
    passing = [r for r in results if r.passed]
    for todo in _by_signature(left):
        while todo:
            ranked = sorted((t for t in tags if any(t in r.case.tags for r in todo)),
                            key=lambda t: (-sum(t in r.case.tags for r in todo),
                                           sum(t in r.case.tags for r in passing)))
            for tag in ranked[:_CANDIDATES]:
                having = [r for r in todo if tag in r.case.tags]
                with_tag = [r for r in results if tag in r.case.tags]
                if sum(not r.passed for r in with_tag) < _NEEDS_SHARE * len(with_tag):
                    continue                      # mostly passes with it: not telling
                extra = verifier.confirm((tag,), having, [])
                if extra is not None:
                    groups.append(Group("needs", (tag,), having, len(extra), extra))
                    todo = [r for r in todo if tag not in r.case.tags]
                    break
            else:
                rest += todo
                todo = []
    merged: dict[tuple[str, ...], Group] = {}
    for g in groups:                              # one group per tag, whatever the kind
        if g.tags in merged:
            merged[g.tags].members += g.members
            merged[g.tags].verified += g.verified
        else:
            merged[g.tags] = g
    return list(merged.values()), rest


def _by_signature(results: list[CaseResult]) -> list[list[CaseResult]]:
    groups: dict[tuple, list[CaseResult]] = {}
    for r in results:
        groups.setdefault(r.signature(), []).append(r)
    return list(groups.values())
