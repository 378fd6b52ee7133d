"""Running the code under test: in a child process that may crash or hang, or in this one.

`Sandbox.run` takes a batch of `Job`s (a case and a memory placement) and returns one `Run`
(or `Crash`) per job. With isolation (the default where ``os.fork`` exists) one child process,
forked from this one so that it already holds the user's code, runs the jobs one after another
and streams back, per job, the stage it enters, the out-of-bounds views it sees and the
result. The child is kept for the next batch; when a job crashes the process (a segmentation
fault from a wrong ``as_strided``), ends it (``os._exit``) or runs past the timeout (then the
child is killed), that job becomes a `Crash` with the stage it was in and the line of the user's
code that Python's faulthandler printed, and a fresh child takes the remaining jobs.

The child also bounds its address space (``memory_limit`` bytes more than it starts with) so a
runaway allocation is a MemoryError rather than a machine swapping; whatever the code prints
goes to a file, kept for crash reports, not to the checker's output. The child never outlives
the check: an interrupted check (Ctrl-C, an exception) kills it rather than wait for a job that
may never end, and a thread in the child ends it within a fraction of a second of the checker's
own end, however that came (SIGTERM, SIGKILL), unless the code holds the interpreter in C.

Only the user's code runs in the child; npconv's own ops (the right answers) run in the parent.
"""

from __future__ import annotations

import faulthandler
import os
import pickle
import re
import select
import signal
import struct
import sys
import tempfile
import threading
import time
import traceback
import warnings
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from npconv.testing.adapters import Adapter, Run, UserError, user_frame
from npconv.testing.cases import Case
from npconv.testing.compare import Tolerance, portable
from npconv.testing.layout import Layout
from npconv.testing.memory import ViewWatch, filled_empty, place, poison_heap, watching
from npconv.testing.pool_cases import PoolCase
from npconv.testing.problems import consistency, inputs, user_inputs
from npconv.testing.results import SIGNALS, Crash

_HEADER = struct.Struct("<Q")


@dataclass(frozen=True)
class Job:
    """One run of the user's code: a case, a memory placement, optionally another layout;
    `task` "consistency" runs `problems.consistency` (the user's code many times) instead."""

    case: Case | PoolCase
    placement: str = "plain"
    layout: Layout | None = None
    task: str = "run"


def execute(adapter: Adapter, job: Job, seed: int, tol: Tolerance,
            notify: Callable[[tuple], None] = lambda message: None) -> Run:
    """Run the user's code on `job` in this process; `notify` hears ("stage", name)."""
    if job.layout is not None:
        adapter = adapter.with_layout(job.layout)
    if job.task == "consistency":
        return Run(text=consistency(adapter, job.case, seed, tol))
    given = user_inputs(inputs(job.case, seed), adapter.layout)
    offset = sum(job.case.x_shape) + len(job.placement)
    placed = place(given, job.placement, offset)
    biggest = max(a.nbytes for a in placed.values())

    fill = 0.0 if job.placement == "plain" else np.nan

    def before(stage: str) -> None:
        notify(("stage", stage))
        poison_heap(biggest, fill)

    with filled_empty(fill, adapter.namespaces()):
        run = adapter.run(job.case, placed, before)
    run.modified = tuple(k for k in placed if not np.array_equal(placed[k], given[k]))
    run.outputs = {k: portable(v) for k, v in run.outputs.items()}
    return run


class Sandbox:
    """Runs jobs for one adapter, isolated in a child process or in this process.

    Parameters
    ----------
    adapter : Adapter
        The code under test.
    seed : int
        Seed of the data.
    tol : Tolerance
        For consistency jobs.
    timeout : float
        Seconds one job may run in the child before it is killed.
    isolate : bool
        Run in a child process (needs ``os.fork``) or in this process (no timeout, and a crash
        ends the checker too).
    memory_limit : int
        Bytes the child may allocate beyond what it holds when it starts.
    max_timeouts, max_crashes : int
        After this many timeouts (each costs `timeout` seconds), or crashes, no more jobs run.
    """

    def __init__(self, adapter: Adapter, *, seed: int, tol: Tolerance, timeout: float,
                 isolate: bool, memory_limit: int = 4 << 30, max_timeouts: int = 3,
                 max_crashes: int = 40) -> None:
        self.adapter, self.seed, self.tol, self.timeout = adapter, seed, tol, float(timeout)
        self.isolate, self.memory_limit = isolate, memory_limit
        self.pid: int | None = None
        self.crashes, self.timeouts = 0, 0
        self.max_crashes, self.max_timeouts = max_crashes, max_timeouts

    def __enter__(self) -> Sandbox:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        self.close(kill=exc_type is not None)

    def run(self, jobs: list[Job], on_done: Callable[[int, Run | Crash], None] | None = None
            ) -> list[Run | Crash | None]:
        """One Run (or Crash) per job, in order; None for the jobs not run because
        too many crashes or timeouts have happened (`exhausted`). `on_done(i, result)` hears each
        result as soon as it is there (while the child runs the next job)."""
        out: list[Run | Crash | None] = [None] * len(jobs)
        report = on_done or (lambda i, result: None)
        if not self.isolate:
            for i, job in enumerate(jobs):
                run = self._here(job)
                out[i] = run
                report(i, run)
            return out
        todo = list(range(len(jobs)))
        while todo and not self.exhausted:
            if self.pid is None:
                self._spawn()
            crashed = self._collect(jobs, todo, out, report)
            if crashed is None:
                break
            todo = todo[todo.index(crashed) + 1:]
        return out

    @property
    def exhausted(self) -> bool:
        """Too many crashes or timeouts: no more jobs run."""
        return self.crashes >= self.max_crashes or self.timeouts >= self.max_timeouts

    def close(self, *, kill: bool = False) -> None:
        """End the child process, if there is one: between jobs it ends once its request pipe
        closes; `kill` it when it may be running one (an interrupted check), which could hang."""
        if self.pid is None:
            return
        if kill:
            os.kill(self.pid, signal.SIGKILL)
        os.close(self.request)
        os.close(self.results)
        os.waitpid(self.pid, 0)
        self.output.close()
        self.pid = None

    # -----------------------------------------------------------------------------------------
    # In this process

    def _here(self, job: Job) -> Run:
        notes: list[str] = []
        with watching(notes.append, self.adapter.namespaces()):
            run = execute(self.adapter, job, self.seed, self.tol)
        run.notes = tuple(dict.fromkeys(notes))
        return run

    # -----------------------------------------------------------------------------------------
    # The child process

    def _spawn(self) -> None:
        request_r, request_w = os.pipe()
        results_r, results_w = os.pipe()
        self.output = tempfile.TemporaryFile()          # noqa: SIM115 (closed with the child)
        sys.stdout.flush()
        sys.stderr.flush()
        parent = os.getpid()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)   # fork with threads (3.12+)
            pid = os.fork()
        if pid == 0:                                              # the child never returns
            try:
                os.close(request_w)
                os.close(results_r)
                self._serve(request_r, results_w, parent)
            finally:
                os._exit(70)
        os.close(request_r)
        os.close(results_w)
        self.pid, self.request, self.results, self.buffer = pid, request_w, results_r, b""

    def _serve(self, request: int, results: int, parent: int) -> None:
        os.dup2(self.output.fileno(), 1)
        os.dup2(self.output.fileno(), 2)
        sys.stdout = sys.stderr = open(self.output.fileno(), "w", buffering=1,  # noqa: SIM115
                                       closefd=False)            # (print() may be redirected)
        faulthandler.enable(file=self.output, all_threads=False)
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        _end_with(parent)
        _limit_memory(self.memory_limit)
        notes: list[str] = []

        def send(message: tuple) -> None:
            _write(results, message)

        def note(text: str) -> None:
            notes.append(text)
            send(("note", text))

        ViewWatch(note).install(self.adapter.namespaces())
        while (batch := _read_blocking(request)) is not None:
            for key, job in batch:
                notes.clear()
                send(("start", key))
                run = execute(self.adapter, job, self.seed, self.tol, send)
                run.notes = tuple(dict.fromkeys(notes))
                try:
                    send(("done", key, run))
                except (pickle.PicklingError, TypeError, AttributeError) as exc:
                    send(("done", key, Run(error=UserError(
                        "backward", "PicklingError", f"outputs cannot be sent back: {exc}",
                        ""))))
        os._exit(0)

    def _collect(self, jobs: list[Job], todo: list[int], out: list,
                 report: Callable[[int, Run | Crash], None]) -> int | None:
        """Read the child's results for `todo` into `out`; the index of a crashed job, or None."""
        try:
            _write(self.request, [(i, jobs[i]) for i in todo])
        except OSError:                                           # the child is gone already
            crashed = self._crash(todo[0], "", [], None, out)
            report(crashed, out[crashed])
            return crashed
        notes: list[str] = []
        current, stage, started = todo[0], "", time.monotonic()
        finished = 0
        while finished < len(todo):
            left = self.timeout - (time.monotonic() - started)
            message = self._read(left)
            if message is None or message == "timeout":
                crashed = self._crash(current, stage, notes, message, out)
                report(crashed, out[crashed])
                return crashed
            if message[0] == "start":
                current, stage, notes, started = message[1], "", [], time.monotonic()
            elif message[0] == "stage":
                stage = message[1]
            elif message[0] == "note":
                notes.append(message[1])
            else:
                out[message[1]] = message[2]
                report(message[1], message[2])
                finished += 1
        return None

    def _crash(self, key: int, stage: str, notes: list[str], why, out: list) -> int:
        pid = int(self.pid or 0)
        if why == "timeout":
            os.kill(pid, signal.SIGKILL)
        _, status = os.waitpid(pid, 0)
        os.close(self.request)
        os.close(self.results)
        self.pid = None
        self.crashes += why != "timeout"
        self.timeouts += why == "timeout"
        printed = self._printed()
        if why == "timeout":
            crash = Crash("timeout", stage, f"{self.timeout:g} s", notes=tuple(notes))
        elif os.WIFSIGNALED(status):
            sig = os.WTERMSIG(status)
            crash = Crash("signal", stage, SIGNALS.get(sig, f"signal {sig}"),
                          _crash_location(printed), tuple(notes), _last_words(printed))
        else:
            crash = Crash("exit", stage, f"exit status {os.WEXITSTATUS(status)}",
                          notes=tuple(notes))
        out[key] = crash
        return key

    def _printed(self) -> str:
        self.output.seek(0)
        text = self.output.read().decode("utf-8", "replace")
        self.output.close()
        return text

    def _read(self, timeout: float):
        """The next message from the child, None at its end, or "timeout"."""
        deadline = time.monotonic() + max(timeout, 0.0)
        while True:
            if len(self.buffer) >= _HEADER.size:
                (size,) = _HEADER.unpack_from(self.buffer)
                if len(self.buffer) >= _HEADER.size + size:
                    body = self.buffer[_HEADER.size:_HEADER.size + size]
                    self.buffer = self.buffer[_HEADER.size + size:]
                    return pickle.loads(body)
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.results], [], [], left)[0]:
                return "timeout"
            chunk = os.read(self.results, 1 << 20)
            if not chunk:
                return None
            self.buffer += chunk


def _write(fd: int, message) -> None:
    body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    data = memoryview(_HEADER.pack(len(body)) + body)
    while data:
        data = data[os.write(fd, data):]


def _read_blocking(fd: int):
    """One message from `fd`, or None at its end."""
    head = _read_exactly(fd, _HEADER.size)
    if head is None:
        return None
    body = _read_exactly(fd, _HEADER.unpack(head)[0])
    return None if body is None else pickle.loads(body)


def _read_exactly(fd: int, size: int) -> bytes | None:
    data = b""
    while len(data) < size:
        chunk = os.read(fd, size - len(data))
        if not chunk:
            return None
        data += chunk
    return data


def _end_with(parent: int) -> None:
    """End this child process as soon as `parent` has ended: a daemon thread polls for it, since
    a job running when the parent dies (killed, or interrupted past its own cleanup) would
    otherwise run on, maybe forever, with nobody to read its results."""
    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(0.2)
        os._exit(1)

    threading.Thread(target=watch, name="npconv-check-watch", daemon=True).start()


def _limit_memory(extra: int) -> None:
    """Let this process allocate at most `extra` more bytes of address space (Linux)."""
    try:
        import resource

        with open("/proc/self/statm") as f:
            size = int(f.read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
        _, hard = resource.getrlimit(resource.RLIMIT_AS)
        limit = size + extra if hard == resource.RLIM_INFINITY else min(size + extra, hard)
        resource.setrlimit(resource.RLIMIT_AS, (limit, hard))
    except (ImportError, OSError, ValueError):
        pass                                                      # not Linux: no bound


_FRAME = re.compile(r'^\s*File "(?P<file>[^"]+)", line (?P<line>\d+) in (?P<name>\S+)', re.M)


def _crash_location(printed: str) -> str:
    """The user's frame in the traceback faulthandler printed at the crash ("" if none)."""
    tail = printed[printed.rfind("Fatal Python error"):] if "Fatal Python error" in printed \
        else ""
    frames = [traceback.FrameSummary(m["file"], int(m["line"]), m["name"])
              for m in _FRAME.finditer(tail)]
    return user_frame(frames[::-1])                               # printed innermost first


def _last_words(printed: str) -> str:
    """The last line printed before faulthandler's report (e.g. glibc's abort message)."""
    head = printed[:printed.find("Fatal Python error")] if "Fatal Python error" in printed \
        else printed
    lines = [line.strip() for line in head.splitlines() if line.strip()]
    return lines[-1][:200] if lines and not lines[-1].startswith(("Traceback", "File")) else ""


def can_isolate() -> bool:
    """Whether this platform can run the code in a child process (``os.fork``)."""
    return hasattr(os, "fork") and sys.platform != "win32"
