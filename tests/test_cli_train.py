"""The train / evaluate / predict commands: exit codes, output files, the last line, optional
extras missing, and bad input (nothing is overwritten)."""

import contextlib
import gzip
import io
import re
import struct
import subprocess
import sys

import numpy as np
import pytest

from npconv import nn
from npconv.cli import main

QUICK = ["--epochs", "2", "--width", "4", "--no-progress"]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """One short training run shared by the tests: (output dir, stdout lines)."""
    out = tmp_path_factory.mktemp("run")
    stdout = io.StringIO()
    with contextlib.redirect_stdout(stdout):
        assert main(["train", *QUICK, "--out", str(out)]) == 0
    return out, stdout.getvalue().splitlines()


def test_train_writes_model_plot_and_prints_accuracy_last(trained):
    out, lines = trained
    assert re.fullmatch(r"test accuracy: \d\.\d{4}", lines[-1])
    assert any(line.startswith("epoch   2/2  loss") for line in lines)
    assert (out / "model.npz").is_file() and (out / "history.json").is_file()
    pytest.importorskip("matplotlib")
    assert (out / "history.png").read_bytes()[:4] == b"\x89PNG"


def test_evaluate_reproduces_the_held_out_accuracy(trained, capsys):
    out, lines = trained
    assert main(["evaluate", "--model", str(out / "model.npz")]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == lines[-1]
    meta = nn.load_metadata(out / "model.npz")
    assert meta["seed"] == 0 and meta["input_shape"] == [8, 8, 1]


def test_predict_prints_or_writes_csv(trained, tmp_path, capsys):
    out, _ = trained
    from npconv.datasets import load_digits

    images = (load_digits()[0][:4] * 16).round().astype(np.uint8)[..., 0]   # (4, 8, 8) ints
    np.save(tmp_path / "x.npy", images)
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(out / "model.npz")]) == 0
    rows = capsys.readouterr().out.splitlines()
    assert rows[0] == "index,class,probability" and len(rows) == 5
    csv = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(out / "model.npz"),
                 "--output", str(csv)]) == 0
    assert csv.read_text().splitlines() == rows


def test_bad_model_file_exits_2_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"\x00" * 100)
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.float32))
    csv = tmp_path / "p.csv"
    csv.write_text("old")
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(bad),
                 "--output", str(csv)]) == 2
    assert "npconv predict: error:" in capsys.readouterr().err
    assert csv.read_text() == "old"
    assert main(["evaluate", "--model", str(bad)]) == 2
    assert "not an npconv model file" in capsys.readouterr().err


def test_bad_images_exit_2(trained, tmp_path, capsys):
    out, _ = trained
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 5), np.float32))
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(out / "model.npz")]) == 2
    assert "images must have shape" in capsys.readouterr().err


def test_train_refuses_to_overwrite_a_foreign_model_file(tmp_path, capsys):
    (tmp_path / "model.npz").write_text("someone else's file")
    assert main(["train", *QUICK, "--out", str(tmp_path)]) == 2
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.npz").read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_train_bad_data_and_arguments(tmp_path, capsys):
    assert main(["train", *QUICK, "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 2
    assert "not found" in capsys.readouterr().err
    with pytest.raises(SystemExit) as info:
        main(["train", "--epochs", "two"])
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:
        main(["train", "--optimizer", "rmsprop"])
    assert info.value.code == 2


def _hide(monkeypatch, package):
    """Make `import package` (and its submodules) fail, as if it were not installed."""
    for name in [m for m in sys.modules if m == package or m.startswith(package + ".")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, package, None)


def test_train_without_tqdm_and_matplotlib_says_what_it_skipped(tmp_path, capsys,
                                                                   monkeypatch):
    _hide(monkeypatch, "tqdm")
    _hide(monkeypatch, "matplotlib")
    assert main(["train", "--epochs", "1", "--width", "4", "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert "tqdm is not installed: skipping the progress bar" in lines[0] + "".join(lines)
    assert any(line.startswith("matplotlib is not installed: skipping the plot")
               for line in lines)
    assert re.fullmatch(r"test accuracy: \d\.\d{4}", lines[-1])
    assert (tmp_path / "model.npz").is_file() and not (tmp_path / "history.png").exists()


def test_progress_bar_with_tqdm(tmp_path, capsys):
    pytest.importorskip("tqdm")
    assert main(["train", "--epochs", "1", "--width", "4", "--out", str(tmp_path)]) == 0
    captured = capsys.readouterr()
    assert "epoch 1/1" in captured.err and "batch" in captured.err
    assert "tqdm is not installed" not in captured.out


def test_python_dash_m_exit_codes(tmp_path):
    bad = tmp_path / "m.npz"
    bad.write_text("x")
    run = subprocess.run([sys.executable, "-m", "npconv", "evaluate", "--model", str(bad)],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "npconv evaluate: error:" in run.stderr
    run = subprocess.run([sys.executable, "-m", "npconv", "train", "--bogus"],
                         capture_output=True, text=True)
    assert run.returncode == 2


# ---------------------------------------------------------------------------------------------
# Mistakes: each a clear message naming the flag or the file, exit 2, nothing written, no
# traceback. Before the fixes these printed tracebacks, wrong names or nothing at all.
# ---------------------------------------------------------------------------------------------


def usage_error(argv, capsys) -> str:
    """stderr of an argparse usage error (exit 2)."""
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    return capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", "--epochs", "0"], "argument --epochs: must be an int >= 1; got 0"),
    (["train", "--batch-size", "0"], "argument --batch-size: must be an int >= 1; got 0"),
    (["train", "--val-fraction", "0"], r"argument --val-fraction: must be a number in (0, 1); "
                                       r"got 0"),
    (["train", "--test-fraction", "1.5"], "argument --test-fraction: must be a number in"),
    (["train", "--lr", "-1"], "argument --lr: must be a number in (0, inf); got -1"),
    (["train", "--seed", "-1"], "argument --seed: must be an int >= 0; got -1"),
    (["predict", "x.npy", "--batch-size", "0"], "argument --batch-size: must be an int >= 1"),
    (["evaluate", "--batch-size", "-3"], "argument --batch-size: must be an int >= 1; got -3"),
])
def test_bad_flags_are_rejected_before_anything_runs(argv, message, capsys):
    assert message in usage_error(argv, capsys)


def test_a_mistyped_flag_prints_the_subcommand_usage(capsys):
    err = usage_error(["train", "--bogus"], capsys)
    assert err.startswith("usage: npconv train") and "unrecognized arguments: --bogus" in err


def test_version_and_user_facing_help(capsys):
    from npconv import __version__

    with pytest.raises(SystemExit) as info:
        main(["--version"])
    assert info.value.code == 0 and capsys.readouterr().out.strip() == f"npconv {__version__}"
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "Convolutional networks in pure NumPy" in out and "npconv predict" in out
    assert "No numerics here" not in out



def test_ctrl_c_is_one_line_and_exit_130(capsys, monkeypatch):
    """Before the fix: a KeyboardInterrupt traceback (from `npconv check`'s child wait, say)."""
    from npconv.testing import check_cli

    def interrupted(args):
        raise KeyboardInterrupt

    monkeypatch.setattr(check_cli, "run", interrupted)
    assert main(["check", "x.py:Layer"]) == 130
    assert capsys.readouterr().err == "npconv check: interrupted\n"

def test_train_checks_its_output_before_training(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out in (tmp_path / "file", tmp_path / "file" / "sub"):
        assert main(["train", *QUICK, "--out", str(out)]) == 2
        captured = capsys.readouterr()
        assert f"--out {out}: " in captured.err and "epoch" not in captured.out
    assert (tmp_path / "file").read_text() == "x"


def test_an_absurd_label_does_not_size_the_classifier(tmp_path, capsys):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 10, 30)
    y[3] = 10**12
    np.savez(tmp_path / "d.npz", x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_train=y, x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8),
             y_test=rng.integers(0, 10, 5))
    assert main(["train", *QUICK, "--data", str(tmp_path / "d.npz"),
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "d.npz: labels must be in [0, 100000)" in err and "e.g. 1000000000000" in err


def _npz_bytes(x) -> bytes:
    f = io.BytesIO()
    np.savez(f, x=x)
    return f.getvalue()


IMAGES = np.full((3, 8, 8), 5, np.uint8)

BAD_IMAGE_FILES = [
    ("nan.npy", lambda p: np.save(p, np.where(np.eye(8) > 0, np.nan, 0.1)[None]),
     "images must be finite: 1 of 1 hold NaN or infinite pixels"),
    ("inf.npy", lambda p: np.save(p, np.full((2, 8, 8), np.inf)), "images must be finite"),
    ("crc.npz", lambda p: p.write_bytes(_npz_bytes(IMAGES).replace(b"\x05" * 8, b"\x06" * 8)),
     "Bad CRC-32"),
    ("cut.npz", lambda p: p.write_bytes(_npz_bytes(IMAGES)[:150]), "not an .npz archive"),
    ("empty.npy", lambda p: p.write_bytes(b""), "not an .npy array"),
    ("huge.npy", lambda p: p.write_bytes(_npy_header((2**40, 8, 8))), "declares shape"),
    ("none.npy", lambda p: np.save(p, np.zeros((0, 8, 8))), "no images to predict"),
    ("text.npy", lambda p: p.write_text("1,2,3\n"), "not an .npy array"),
    ("dir.npy", lambda p: p.mkdir(), "dir.npy is a directory"),
    ("bomb-idx3-ubyte.gz", lambda p: p.write_bytes(gzip.compress(
        struct.pack(">HBB3I", 0, 8, 3, 2**30, 8, 8))), "cannot hold that many"),
]


def _npy_header(shape) -> bytes:
    f = io.BytesIO()
    np.lib.format.write_array_header_1_0(f, {"descr": "<f4", "fortran_order": False,
                                             "shape": shape})
    return f.getvalue()


@pytest.mark.parametrize("name, make, message", BAD_IMAGE_FILES,
                         ids=[b[0] for b in BAD_IMAGE_FILES])
def test_predict_bad_image_files_exit_2_naming_the_file(trained, tmp_path, capsys, name, make,
                                                          message):
    out, _ = trained
    make(tmp_path / name)
    csv = tmp_path / "p.csv"
    assert main(["predict", str(tmp_path / name), "--model", str(out / "model.npz"),
                 "--output", str(csv)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"npconv predict: error: {tmp_path / name}") and message in err
    assert not csv.exists()


def test_predict_output_errors_name_the_users_path(trained, tmp_path, capsys):
    out, _ = trained
    np.save(tmp_path / "x.npy", IMAGES)
    for output, message in ((tmp_path / "no" / "p.csv", "cannot write there"),
                            (tmp_path, "is a directory")):
        assert main(["predict", str(tmp_path / "x.npy"), "--model", str(out / "model.npz"),
                     "--output", str(output)]) == 2
        err = capsys.readouterr().err
        assert f"--output {output}" in err and message in err and ".tmp" not in err


def test_evaluate_on_images_of_another_shape_says_so(trained, tmp_path, capsys):
    out, _ = trained
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "mnist.npz", x_train=rng.integers(0, 256, (30, 28, 28), dtype=np.uint8),
             y_train=rng.integers(0, 10, 30), y_test=rng.integers(0, 10, 5),
             x_test=rng.integers(0, 256, (5, 28, 28), dtype=np.uint8))
    assert main(["evaluate", "--model", str(out / "model.npz"), "--data",
                 str(tmp_path / "mnist.npz")]) == 2
    err = capsys.readouterr().err
    assert "mnist.npz: images must have shape (N, 8, 8, 1) or (N, 8, 8)" in err


def test_predict_warns_about_images_far_outside_the_training_range(trained, tmp_path, capsys):
    out, _ = trained
    np.save(tmp_path / "raw.npy", np.full((2, 8, 8), 255.0, np.float32))   # unscaled floats
    assert main(["predict", str(tmp_path / "raw.npy"), "--model", str(out / "model.npz")]) == 0
    captured = capsys.readouterr()
    assert "npconv predict: warning: " in captured.err and "far outside" in captured.err
    assert len(captured.out.splitlines()) == 3
    np.save(tmp_path / "ok.npy", np.full((2, 8, 8), 0.5, np.float32))
    assert main(["predict", str(tmp_path / "ok.npy"), "--model", str(out / "model.npz")]) == 0
    assert capsys.readouterr().err == ""
