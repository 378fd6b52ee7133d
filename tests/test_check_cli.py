"""`npconv check MODULE:OBJECT`: exit codes, options and error messages."""

import pathlib
import re
import subprocess
import sys
import textwrap

import pytest

from npconv.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
BROKEN = str(ROOT / "examples" / "broken_convs.py")
SEED = str(ROOT / "examples" / "seed_answer.py")


def _check(capsys, *argv):
    code = main(["check", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_correct_layer_exits_0(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:Conv2D")
    assert code == 0
    assert out.rstrip().endswith("Result: PASS, y, dx, dw, db match npconv on all 30 "
                                 "configurations.")


def test_the_seed_answer_exits_1_with_its_findings(capsys):
    code, out, _ = _check(capsys, f"{SEED}:SeedConv2D", "--no-per-axis")
    assert code == 1
    assert "Finding 1: every configuration with padding 0 fails" in out
    assert "Finding 2: every configuration with a non-square kernel fails" in out
    assert out.rstrip().endswith("Result: FAIL, 12 of 21 configurations fail.")


def test_functions_with_backward_and_layout_options(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:conv_forward", "--backward", "conv_backward",
                          "--channels-first", "--no-dilation", "--no-groups")
    assert code == 0
    assert "channels_first x (N, C, H, W), w (F, C, kh, kw)" in out


def test_sweep_options_reach_the_check(capsys):
    code, out, _ = _check(capsys, f"{BROKEN}:NoDilation", "--max-stride", "1", "--padding",
                          "zero,symmetric", "--square-only", "--seed", "3", "--no-shrink")
    assert code == 0 and "seed 3" in out and "Left out:" in out
    code, out, _ = _check(capsys, f"{BROKEN}:NoDilation", "--forward-only", "--rank", "2")
    assert code == 0 and "Compares y with npconv" in out


def test_attribute_names_and_a_layer_without_bias(capsys, tmp_path, monkeypatch):
    (tmp_path / "mylayers.py").write_text(textwrap.dedent("""
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

        from npconv.testing import Layer

        target = Layer(Conv, b=False, dw="gradW")
    """))
    monkeypatch.chdir(tmp_path)
    code, out, _ = _check(capsys, "mylayers:Conv", "--no-bias", "--w", "W", "--dw", "gradW")
    assert code == 0, out
    code, out, _ = _check(capsys, "mylayers:target")
    assert code == 0 and "Compares y, dx, dw with npconv" in out
    code, _, err = _check(capsys, "mylayers:target", "--channels-first")
    assert code == 2
    assert "--channels-first applies to a class or a function; mylayers:target is already an " \
           "adapter" in err


@pytest.mark.parametrize("target, extra, message", [
    ("nocolon", [], "TARGET must look like MODULE:OBJECT; got 'nocolon'"),
    ("missing_file.py:X", [], "cannot import 'missing_file.py': ImportError: no such file"),
    ("no_such_module_xyz:X", [], "cannot import 'no_such_module_xyz': ModuleNotFoundError"),
    (f"{BROKEN}:Nope", [], "has no attribute 'Nope'"),
    (f"{BROKEN}:np", [], "OBJECT must be a layer class, a function or an npconv.testing "
                         "adapter; got module"),
    (f"{BROKEN}:conv_forward", ["--backward", "nope"], "--backward: .* has no function 'nope'"),
    (f"{BROKEN}:Conv2D", ["--rank", "5"], "`rank` must be between 1 and 3; got 5"),
])
def test_usage_errors_exit_2(capsys, target, extra, message):
    code, out, err = _check(capsys, target, *extra)
    assert code == 2 and out == ""
    assert err.startswith("npconv check: error: ")
    assert re.search(message, err), err


def test_a_bad_padding_kind_is_an_argparse_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["check", f"{BROKEN}:Conv2D", "--padding", "zero,reflect"])
    assert exc.value.code == 2
    assert "must be a comma-separated list of zero, symmetric, asymmetric" in \
        capsys.readouterr().err


def test_the_command_runs_as_a_program():
    proc = subprocess.run([sys.executable, "-m", "npconv", "check", f"{SEED}:SeedConv2D",
                           "--no-per-axis"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 1
    assert "Result: FAIL, 12 of 21 configurations fail." in proc.stdout
