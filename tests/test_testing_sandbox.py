"""Crash isolation: the code runs in a child process, so that a segfault, a hang, os._exit,
sys.exit or a MemoryError is a finding of the configuration it happened in, and everything
that ran before is still reported. Each test runs two or three configurations only."""

import os
import time

import numpy as np
import pytest
import student_layers

from npconv.testing import Case, LayerAdapter, check_conv
from npconv.testing.compare import Tolerance
from npconv.testing.sandbox import Job, Sandbox, can_isolate

pytestmark = pytest.mark.skipif(not can_isolate(), reason="needs os.fork")


def _case(stride=1, padding=0):
    return Case(1, 2, 2, (7, 7), (3, 3), (stride, stride), ((padding, padding),) * 2, (1, 1))


FINE, STRIDE_2, STRIDE_3, PAD_2 = _case(), _case(stride=2), _case(stride=3), _case(padding=2)


def _check(layer, cases, **kwargs):
    return check_conv(layer, cases=cases, shrink=False, **kwargs)


def test_a_segfault_is_a_finding_with_its_line_and_the_rest_still_runs():
    report = _check(student_layers.Segfaults, [FINE, STRIDE_2, STRIDE_3])
    fine, crashed, after = report.results
    assert fine.passed and after.passed
    crash = crashed.crash
    assert (crash.kind, crash.stage, crash.detail) == ("signal", "backward",
                                                       "SIGSEGV (segmentation fault)")
    assert crash.location.startswith("student_layers.py:") and crash.location.endswith(
        " in backward")
    words = " ".join(str(report).split())
    assert "backward crashed the process with SIGSEGV (segmentation fault) at " \
           "student_layers.py:" in words
    assert "an as_strided view made at student_layers.py:" in words     # sent before the crash
    assert "2  7x7    3x3     2       0        1  2  2  FAIL  backward crashed (SIGSEGV)" in \
        str(report)


def test_a_hang_is_stopped_by_the_timeout():
    start = time.monotonic()
    report = _check(student_layers.Hangs, [FINE, PAD_2, STRIDE_2], timeout=0.3)
    assert time.monotonic() - start < 10
    fine, hung, after = report.results
    assert fine.passed and after.passed
    assert (hung.crash.kind, hung.crash.stage, hung.crash.detail) == ("timeout", "forward",
                                                                      "0.3 s")
    assert "forward did not finish within 0.3 s (the timeout): an endless loop" in \
        " ".join(str(report).split())


def test_repeated_hangs_stop_the_check_and_say_what_did_not_run():
    cases = [PAD_2, PAD_2.with_(batch=2), PAD_2.with_(batch=3), FINE]
    report = _check(student_layers.Hangs, cases, timeout=0.2)
    assert report.stopped and report.not_run == 1 and not report
    assert len(report.results) == 3
    assert "Stopped after repeated crashes or timeouts: 1 configuration was not run." in \
        str(report)


def test_a_random_phase_stopped_by_hangs_is_not_said_to_be_stopped_by_the_budget():
    """Before the fix: "Random phase: 16 configurations (..., stopped by the 10 s budget)" after
    a second of hangs."""
    report = check_conv(student_layers.Hangs, random=300, random_seed=1, timeout=0.2,
                        shrink=False, max_stride=2, square_only=True, dilation=False)
    assert report.stopped and not report.random.exhausted
    text = " ".join(str(report).split())
    assert "budget" not in text and "Stopped after repeated crashes or timeouts" in text


def test_exits_and_memory_errors_are_findings():
    report = _check(student_layers.Exits, [FINE, STRIDE_3])
    assert str(report.results[1].error) .startswith("forward called sys.exit(0) at "
                                                    "student_layers.py:")
    assert report.results[1].summary() == "forward called sys.exit"
    ended = _check(student_layers.EndsProcess, [PAD_2, FINE]).results
    assert (ended[0].crash.kind, ended[0].crash.detail) == ("exit", "exit status 0")
    assert str(ended[0].crash) == ("backward ended the process (exit status 0), without "
                                   "raising")
    assert ended[1].passed
    hungry = _check(student_layers.Allocates, [STRIDE_2]).results[0]
    assert hungry.error.type_name == "MemoryError" and hungry.error.stage == "backward"


def test_sys_exit_is_a_finding_in_this_process_too():
    report = _check(student_layers.Exits, [STRIDE_3], isolate=False)
    assert report.results[0].error.type_name == "SystemExit"


def test_the_child_process_is_reused_and_its_prints_are_kept_out(capfd):
    class Talks(student_layers.Im2col):
        def forward(self, x):
            print("forward of", os.getpid())
            return super().forward(x)

    adapter = LayerAdapter(Talks)
    with Sandbox(adapter, seed=0, tol=Tolerance(), timeout=2, isolate=True) as box:
        runs = box.run([Job(FINE), Job(STRIDE_2, "guarded"), Job(PAD_2, "strided")])
        first = box.pid
        box.run([Job(FINE)])
        assert box.pid == first != os.getpid()
    assert all(r.error is None and r.outputs["dx"].shape == (1, 7, 7, 2) for r in runs)
    out, err = capfd.readouterr()
    assert "forward of" not in out + err


def test_the_child_process_has_a_memory_limit():
    class Greedy(student_layers.Im2col):
        def forward(self, x):
            np.ones(64 << 20)                                   # 512 MiB
            return super().forward(x)

    with Sandbox(LayerAdapter(Greedy), seed=0, tol=Tolerance(), timeout=5, isolate=True,
                 memory_limit=128 << 20) as box:
        (run,) = box.run([Job(FINE)])
    assert run.error.type_name == "MemoryError"


# A script that starts a check of a layer that hangs, prints the child's pid, and then is
# interrupted by its own alarm (INTERRUPT) or waits to be killed from outside.
_HANGING_CHECK = """
import os, signal, sys, time
sys.path.insert(0, {tests!r})
import student_layers
from npconv.testing import Case, LayerAdapter
from npconv.testing.compare import Tolerance
from npconv.testing.sandbox import Job, Sandbox

case = Case(1, 2, 2, (7, 7), (3, 3), (1, 1), ((2, 2), (2, 2)), (1, 1))
box = Sandbox(LayerAdapter(student_layers.Hangs), seed=0, tol=Tolerance(), timeout=600,
              isolate=True)

def started(*args):
    raise KeyboardInterrupt

with box:
    box._spawn()
    print(box.pid, flush=True)
    if {interrupt}:
        signal.signal(signal.SIGALRM, lambda *a: started())
        signal.setitimer(signal.ITIMER_REAL, 0.5)
    try:
        box.run([Job(case)])
    finally:
        print("interrupted", flush=True)
"""


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().split(") ", 1)[1][0] != "Z"
    except FileNotFoundError:
        return False


def _run_hanging_check(interrupt: bool):
    import signal
    import subprocess
    import sys

    script = _HANGING_CHECK.format(tests=os.path.dirname(__file__), interrupt=interrupt)
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    child = int(proc.stdout.readline())
    return proc, child, lambda: os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_an_interrupted_check_kills_its_child_instead_of_waiting_for_it():
    """Before the fix: Ctrl-C (here an alarm raising KeyboardInterrupt) during a job that hangs
    left the checker waiting for its child forever, in Sandbox.close."""
    import subprocess

    proc, child, kill_all = _run_hanging_check(interrupt=True)
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        kill_all()
        pytest.fail("the interrupted check did not end")
    assert "KeyboardInterrupt" in proc.stderr.read()
    proc.stdout.close()
    proc.stderr.close()
    assert not _alive(child)


@pytest.mark.skipif(not os.path.exists("/proc/self/stat"), reason="reads /proc")
def test_the_child_ends_when_the_checker_is_killed():
    """Before the fix: a child running a job that hangs spun on after SIGKILL (or SIGTERM) of
    the checker, for ever."""
    import signal

    proc, child, _ = _run_hanging_check(interrupt=False)
    try:
        time.sleep(0.3)                                       # the child is in the endless loop
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=5)
        deadline = time.monotonic() + 5
        while _alive(child) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert not _alive(child)
    finally:
        proc.stdout.close()
        proc.stderr.close()
        if _alive(child):
            os.kill(child, signal.SIGKILL)
