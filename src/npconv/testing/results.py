"""What a check found: one `CaseResult` per configuration, `Finding`s across configurations.

A configuration fails when the code raised (`UserError`), crashed, hung or ended the process
(`Crash`), changed an input in place, gave a result that depends on memory outside its arrays
or on their layout (`MemoryIssue`), or gave an output that differs from npconv's
(`OutputCheck`). Two failures are "the same" when their `CaseResult.signature` is: that is
what grouping and shrinking compare.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from npconv.testing.adapters import UserError
from npconv.testing.cases import Case
from npconv.testing.compare import OutputCheck
from npconv.testing.pool_cases import PoolCase

SIGNALS = {4: "SIGILL (illegal instruction)", 6: "SIGABRT (abort)", 7: "SIGBUS (bus error)",
           8: "SIGFPE (arithmetic error)", 9: "SIGKILL (killed, e.g. out of memory)",
           11: "SIGSEGV (segmentation fault)"}


@dataclass(frozen=True)
class Crash:
    """The process running the code died or hung: how, in which stage, where."""

    kind: str                    # "signal", "timeout" or "exit"
    stage: str                   # "init", "forward", "backward" ("" before the first call)
    detail: str                  # "SIGSEGV (segmentation fault)", "2 s", "status 0"
    location: str = ""           # "layer.py:12 in forward", from the crash's traceback
    notes: tuple[str, ...] = ()  # out-of-bounds views made before the crash
    output: str = ""             # the last line the process printed (e.g. glibc's message)

    def __str__(self) -> str:
        stage = self.stage or "the code"
        where = f" at {self.location}" if self.location else ""
        if self.kind == "timeout":
            return (f"{stage} did not finish within {self.detail} (the timeout){where}: an "
                    f"endless loop, or code far too slow for these tiny shapes")
        if self.kind == "exit":
            return f"{stage} ended the process ({self.detail}){where}, without raising"
        text = f"{stage} crashed the process with {self.detail}{where}"
        return text + (f"; it printed: {self.output}" if self.output else "")

    def short(self) -> str:
        if self.kind == "timeout":
            return f"{self.stage or 'code'} timed out"
        if self.kind == "exit":
            return f"{self.stage or 'code'} ended the process"
        return f"{self.stage or 'code'} crashed ({self.detail.split(' ')[0]})"


@dataclass(frozen=True)
class MemoryIssue:
    """A result that changes with where the inputs lie in memory, or a view out of bounds."""

    kind: str                    # "outside", "layout" or "view"
    output: str                  # "y", "dx", ... ("" for a view)
    text: str

    def short(self) -> str:
        return {"outside": f"{self.output} reads outside memory",
                "layout": f"{self.output} needs contiguous input",
                "view": "view out of bounds"}[self.kind]


@dataclass
class CaseResult:
    """The outcome of one configuration."""

    index: int                                   # 1-based position in the fixed sweep; 0 if not
    case: Case | PoolCase
    outputs: dict[str, OutputCheck] = field(default_factory=dict)
    error: UserError | None = None
    modified: tuple[str, ...] = ()               # inputs the user's code changed in place
    crash: Crash | None = None
    memory: tuple[MemoryIssue, ...] = ()
    phase: str = "sweep"                         # "sweep", "random" or "extra"

    @property
    def passed(self) -> bool:
        return (self.error is None and self.crash is None and not self.modified and
                not self.memory and all(o.ok for o in self.outputs.values()))

    @property
    def failing(self) -> list[OutputCheck]:
        return [o for o in self.outputs.values() if not o.ok]

    def signature(self, fine: bool = False) -> tuple:
        """What "fails the same way" means when grouping, or (`fine`) when shrinking.

        A failure that depends on memory is grouped by what the memory checks found, however
        its outputs came out; shrinking keeps the outputs' verdicts too.
        """
        error = (self.error.stage, self.error.type_name) if self.error else None
        crash = (self.crash.kind, self.crash.stage) if self.crash else None
        memory = tuple(sorted({m.kind for m in self.memory}))
        outputs = tuple((o.name, o.status, () if memory else o.causes) for o in self.failing)
        if memory and not fine:
            outputs = ()
        return (error, crash, memory, outputs, self.modified)


    def summary(self) -> str:
        """A few words for the table: "ok", "dx shape (2, 0, 0, 3)", "backward raised ..."."""
        if self.passed:
            return "ok"
        parts = [self.crash.short()] if self.crash else []
        if self.error:
            parts.append(f"{self.error.stage} raised {self.error.type_name}"
                         if self.error.type_name != "SystemExit" else
                         f"{self.error.stage} called sys.exit")
        parts += list(dict.fromkeys(m.short() for m in self.memory))
        parts += [o.short() for o in self.failing if not self.memory or o.status != "ok"]
        parts += [f"modifies {name}" for name in self.modified]
        return "; ".join(parts)


@dataclass
class Finding:
    """One way the code fails: when (a feature set, or a list of cases), and the smallest case.

    `mode` says how the failures were explained: "all" (every configuration fails), "tags"
    (exactly the configurations with all of `tags`), "unless" (every configuration without
    `tags[0]`), or "combination" (no feature or pair of features separates them).
    """

    mode: str
    tags: tuple[str, ...]
    members: list[CaseResult]                    # the failures explained here
    smallest: CaseResult                         # shrunk from `first`
    first: CaseResult
    verified: int = 0                            # extra configurations that confirmed it
    consistency: str = ""
