"""`npconv check MODULE:OBJECT`: exit codes, options and error messages.

Exit status: 0 when everything checked passes, 1 when something fails (a crash, a hang or a
sys.exit in the checked code included), 2 when the target cannot be loaded or an option is
wrong. The tests marked "issue 16" fail on the commit before the checker's rework.
"""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from npconv.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROKEN = str(ROOT / "examples" / "broken_convs.py")
POOLS = str(ROOT / "examples" / "broken_pools.py")
SEED = str(ROOT / "examples" / "seed_answer.py")
QUICK = ("--random", "0", "--no-shrink")


def _check(capsys, *argv):
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def _program(*argv, timeout=120, cwd=ROOT):
    return subprocess.run([sys.executable, "-m", "npconv", "check", *argv], capture_output=True,
                          text=True, cwd=cwd, timeout=timeout)


@pytest.fixture
def module(tmp_path, monkeypatch):
    """Writes a module into a temporary directory that becomes the working directory."""
    monkeypatch.chdir(tmp_path)

    def write(name: str, source: str) -> str:
        (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
        return name

    return write


def test_a_correct_layer_exits_0(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:Conv2D", "--random", "20", "--random-seed", "1")
    assert code == 0
    assert "Random phase: 20 configurations (--random-seed 1 replays them): all pass." in out
    assert out.rstrip().endswith("Result: PASS, y, dx, dw, db match npconv on all 30 "
                                 "configurations and 20 random ones.")


def test_the_seed_answer_exits_1_with_its_findings(capsys):
    code, out, _ = _check(capsys, f"{SEED}:SeedConv2D", *QUICK)
    assert code == 1
    assert "Finding 1: every configuration with padding 0 fails" in out
    assert "Finding 2: every configuration with a non-square kernel fails" in out
    assert "(SeedConv2D's `stride` is annotated `int`)" in out
    assert out.rstrip().endswith("Result: FAIL, 12 of 21 configurations fail.")


def test_functions_with_backward_and_layout_options(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:conv_forward", "--backward", "conv_backward",
                          "--channels-first", "--no-dilation", "--no-groups", *QUICK)
    assert code == 0
    assert "channels_first x (N, C, H, W), w (F, C, kh, kw)" in out


def test_sweep_options_reach_the_check(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:NoDilation", "--max-stride", "1", "--padding",
                          "zero,symmetric", "--square-only", "--seed", "3", *QUICK)
    assert code == 0 and "seed 3" in out and "Left out:" in out
    code, out, _ = _check(capsys, f"{BROKEN}:NoDilation", "--forward-only", "--rank", "2",
                          "--no-isolate", *QUICK)
    assert code == 0 and "Compares y with npconv" in out
    assert "in this process" in " ".join(out.split())
    code, out, _ = _check(capsys, f"{BROKEN}:PaddedConv2D", "--padding-modes", "zeros",
                          "--no-per-axis", *QUICK)
    assert code == 0 and "padding_mode" not in out and "a tuple `stride`" in out


def test_transposed_and_pooling_targets(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:IgnoresOutputPadding", *QUICK)
    assert code == 1 and "output_padding=1 was ignored" in out
    code, out, _ = _check(capsys, "--pool", "max", f"{POOLS}:MaxPool2D", *QUICK)
    assert code == 0 and out.startswith("npconv check: MaxPool2D (max pooling; ")
    code, out, _ = _check(capsys, "--pool", "avg", f"{POOLS}:DividesByInputTaps", *QUICK)
    assert code == 1 and "--no-count-include-pad" in out
    code, out, _ = _check(capsys, "--pool", "avg", f"{POOLS}:DividesByInputTaps",
                          "--no-count-include-pad", *QUICK)
    assert code == 0


def test_attribute_names_and_a_layer_without_bias(capsys, module):
    module("mylayers", """
        import npconv

        class Conv:
            def __init__(self, W, stride, pad):
                self.W, self.stride, self.pad = W, stride, pad

            def forward(self, x):
                self.x = x
                return npconv.conv(x, self.W, stride=self.stride, padding=self.pad)

            def backward(self, dy):
                g = npconv.conv_backward(dy, self.x, self.W, stride=self.stride,
                                         padding=self.pad)
                self.gradW = g.dw
                return g.dx

        from npconv.testing import LayerAdapter

        target = LayerAdapter(Conv, b=False, dw="gradW")
    """)
    code, out, _ = _check(capsys, "mylayers:Conv", "--no-bias", "--w", "W", "--dw", "gradW",
                          *QUICK)
    assert code == 0, out
    code, out, _ = _check(capsys, "mylayers:target", *QUICK)
    assert code == 0 and "Compares y, dx, dw with npconv" in out
    code, _, err = _check(capsys, "mylayers:target", "--channels-first")
    assert code == 2
    assert "--channels-first applies to a class or a function; mylayers:target is already an " \
           "adapter" in err


@pytest.mark.parametrize("target, extra, message", [
    ("nocolon", [], "TARGET must look like MODULE:OBJECT; got 'nocolon'"),
    ("missing_file.py:X", [], "cannot load 'missing_file.py': ImportError: no such file"),
    ("no_such_module_xyz:X", [], "cannot load 'no_such_module_xyz': ModuleNotFoundError"),
    (f"{BROKEN}:Nope", [], "has no attribute 'Nope'"),
    (f"{BROKEN}:np", [], "OBJECT must be a layer class, a function or an npconv.testing "
                         "adapter; got module"),
    (f"{BROKEN}:conv_forward", ["--backward", "nope"], "--backward: .* has no function 'nope'"),
])
def test_usage_errors_exit_2(capsys, target, extra, message):
    code, out, err = _check(capsys, target, *extra)
    assert code == 2 and out == ""
    assert err.startswith("npconv check: error: ")
    assert re.search(message, err), err


@pytest.mark.parametrize("argv, message", [
    (["--padding", "zero,reflect"], "must be a comma-separated list of zero, symmetric, "
                                    "asymmetric"),
    (["--padding-modes", "mirror"], "must be a comma-separated list of reflect, replicate, "
                                    "circular"),
    (["--timeout", "0"], "must be a number of seconds > 0; got '0'"),
    (["--budget", "soon"], "must be a number of seconds > 0; got 'soon'"),
    (["--pool", "min"], "invalid choice: 'min'"),
    # before the fix: `rank`/`max_stride`/`random` named as keywords, "expected non-negative
    # integer" (NumPy) for --random-seed, and every configuration "crashed" for --seed -1
    (["--rank", "5"], "argument --rank: invalid choice: 5 (choose from 1, 2, 3)"),
    (["--max-stride", "0"], "argument --max-stride: must be an int >= 1; got 0"),
    (["--random", "-5"], "argument --random: must be an int >= 0; got -5"),
    (["--seed", "-1"], "argument --seed: must be an int >= 0; got -1"),
    (["--random-seed", "-3"], "argument --random-seed: must be an int >= 0; got -3"),
])
def test_bad_option_values_are_argparse_errors(capsys, argv, message):
    with pytest.raises(SystemExit) as exc:
        main(["check", f"{BROKEN}:Conv2D", *argv])
    assert exc.value.code == 2
    assert message in capsys.readouterr().err


# ---------------------------------------------------------------------------------------------
# Issue 16, item 12: a target that cannot load, exits or hangs
# ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body, message", [
    ("raise RuntimeError('no GPU here')", "cannot load 'bad': RuntimeError: no GPU here"),
    ("import sys\nsys.exit(0)", "cannot load 'bad': it called sys.exit(0) while being imported"),
    ("while True:\n    pass", "cannot load 'bad': importing it took longer than 0.5 s"),
])
def test_a_module_that_fails_to_import_exits_2(capsys, module, body, message):
    """issue 16: a module raising at import gave exit status 1 and a traceback."""
    module("bad", body + "\n\nclass Conv:\n    pass\n")
    code, out, err = _check(capsys, "bad:Conv", "--timeout", "0.05")
    assert (code, out) == (2, "")
    assert err.strip() == f"npconv check: error: {message}" + (
        " (--timeout)" if "longer" in message else "")


def test_sys_exit_inside_the_target_is_a_finding_not_exit_0(capsys, module):
    """issue 16: sys.exit(0) inside the target gave exit status 0 and an empty report."""
    module("quits", """
        import sys

        def forward(x, w, b, stride, padding):
            sys.exit(0)
    """)
    code, out, _ = _check(capsys, "quits:forward", *QUICK)
    assert code == 1
    assert "FAIL  forward called sys.exit" in out
    assert "forward called sys.exit(0) at quits.py:5 in forward" in out
    assert out.rstrip().endswith("Result: FAIL, 25 of 25 configurations fail.")


def test_a_target_that_loops_forever_is_stopped_by_the_timeout(module):
    """issue 16: a target that loops forever kept `npconv check` running forever."""
    module("loops", """
        import npconv

        def forward(x, w, b, stride, padding):
            while padding == 2:
                pass
            return npconv.conv(x, w, b, stride=stride, padding=padding)
    """)
    proc = _program("loops:forward", "--timeout", "0.2", "--random", "0", timeout=60,
                    cwd=pathlib.Path.cwd())
    assert proc.returncode == 1, proc.stderr
    assert "forward did not finish within 0.2 s (the timeout)" in proc.stdout
    assert "FAIL  forward timed out" in proc.stdout


def test_a_segfault_in_the_target_is_reported_not_exit_139(capsys):
    target = f"{ROOT / 'tests' / 'student_layers.py'}:Segfaults"
    code, out, _ = _check(capsys, target, "--max-stride", "2", "--square-only", *QUICK)
    assert code == 1
    assert "backward crashed the process with SIGSEGV (segmentation fault) at " \
           "student_layers.py:" in " ".join(out.split())


def test_the_command_runs_as_a_program():
    proc = _program(f"{SEED}:SeedConv2D", "--random", "10", "--random-seed", "2",
                    "--no-shrink")
    assert proc.returncode == 1
    assert "Random phase: 10 configurations (--random-seed 2 replays them)" in proc.stdout
    assert "Result: FAIL, 12 of 21 configurations and " in proc.stdout
