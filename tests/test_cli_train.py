"""The train / evaluate / predict commands: exit codes, output files, the last line, optional
extras missing, and bad input (nothing is overwritten)."""

import contextlib
import io
import re
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


def test_bad_model_file_exits_1_and_writes_nothing(tmp_path, capsys):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"\x00" * 100)
    np.save(tmp_path / "x.npy", np.zeros((2, 8, 8), np.float32))
    csv = tmp_path / "p.csv"
    csv.write_text("old")
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(bad),
                 "--output", str(csv)]) == 1
    assert "npconv predict: error:" in capsys.readouterr().err
    assert csv.read_text() == "old"
    assert main(["evaluate", "--model", str(bad)]) == 1
    assert "not an npconv model file" in capsys.readouterr().err


def test_bad_images_exit_1(trained, tmp_path, capsys):
    out, _ = trained
    np.save(tmp_path / "x.npy", np.zeros((2, 5, 5), np.float32))
    assert main(["predict", str(tmp_path / "x.npy"), "--model", str(out / "model.npz")]) == 1
    assert "images must have shape" in capsys.readouterr().err


def test_train_refuses_to_overwrite_a_foreign_model_file(tmp_path, capsys):
    (tmp_path / "model.npz").write_text("someone else's file")
    assert main(["train", *QUICK, "--out", str(tmp_path)]) == 1
    assert "refusing to overwrite" in capsys.readouterr().err
    assert (tmp_path / "model.npz").read_text() == "someone else's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model.npz"]


def test_train_bad_data_and_arguments(tmp_path, capsys):
    assert main(["train", *QUICK, "--data", str(tmp_path / "nope"), "--out", str(tmp_path)]) == 1
    assert "not found" in capsys.readouterr().err
    assert main(["train", *QUICK, "--epochs", "0", "--out", str(tmp_path)]) == 1
    assert "`epochs` must be an int >= 1" in capsys.readouterr().err
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
    assert run.returncode == 1 and "npconv evaluate: error:" in run.stderr
    run = subprocess.run([sys.executable, "-m", "npconv", "train", "--bogus"],
                         capture_output=True, text=True)
    assert run.returncode == 2
