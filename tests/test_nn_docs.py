"""The documentation of nn and training runs as written: the docstring examples, the Python
blocks of docs/training.md (README's run in test_docs.py), the guide's model summary, its
command-line synopsis and (slow) its demo output."""

import contextlib
import doctest
import importlib
import io
import re
from pathlib import Path

import numpy as np
import pytest

from npconv import training
from npconv.cli import build_parser, main

ROOT = Path(__file__).resolve().parents[1]
GUIDE = ROOT / "docs" / "training.md"

MODULES = ["npconv.pooling", "npconv.nn", "npconv.nn.functional", "npconv.nn.init",
           "npconv.nn.layers", "npconv.nn.losses", "npconv.nn.optim", "npconv.nn.serialization",
           "npconv.training", "npconv.training.builders", "npconv.training.data",
           "npconv.training.loop", "npconv.training.report", "npconv.datasets",
           "npconv._npyfile"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0


def blocks(path: Path, kind: str = "python") -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", path.read_text(), flags=re.S)


def test_training_guide_examples_run(tmp_path, monkeypatch):
    """The guide's Python blocks, in order and in one namespace (they build on each other)."""
    monkeypatch.chdir(tmp_path)
    namespace: dict = {}
    code = blocks(GUIDE)
    assert len(code) >= 2
    for block in code:
        exec(compile(block, str(GUIDE), "exec"), namespace)
    assert (tmp_path / "model.npz").is_file() and namespace["accuracy"] > 0.8


def test_training_guide_shows_the_demo_models_summary():
    table = next(b for b in blocks(GUIDE, "") if b.startswith("layer "))
    model = training.digits_cnn(rng=np.random.default_rng(0), width=32)
    assert table.rstrip("\n") == training.summary(model, (8, 8, 1))


def test_training_guide_synopsis_lists_every_flag():
    """The guide's `npconv train/evaluate/predict` synopsis names exactly the real options."""
    synopsis = next(b for b in blocks(GUIDE, "") if b.startswith("npconv train"))
    _, subparsers = build_parser()
    for command in ("train", "evaluate", "predict"):
        parts = synopsis.split(f"npconv {command}")[1:]            # predict has two forms
        documented = {f for part in parts for f in
                      re.findall(r"--[a-z-]+", part.split("npconv ")[0])}
        real = {o for a in subparsers[command]._actions for o in a.option_strings
                if o.startswith("--") and o != "--help"}
        assert documented == real, command


def _numbers(lines) -> dict:
    text = "\n".join(lines)
    last = re.search(r"epoch  30/30  loss (\S+)  acc (\S+)  val_loss (\S+)  val_acc (\S+)", text)
    test = re.search(r"test loss: (\S+)\ntest accuracy: (\S+)", text)
    keys = ("loss", "acc", "val_loss", "val_acc", "test_loss", "test_acc")
    return dict(zip(keys, map(float, (*last.groups(), *test.groups()))))


@pytest.mark.slow
def test_training_guide_demo_output_matches_a_run(tmp_path):
    """`npconv train` with its defaults prints the numbers the guide shows (to 0.01: the last
    digits depend on the machine's BLAS and core count, see the guide). About 10 s."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        assert main(["train", "--no-progress", "--out", str(tmp_path)]) == 0
    shown = next(b for b in blocks(GUIDE, "") if b.startswith("epoch  30/30"))
    want, got = _numbers(shown.splitlines()), _numbers(out.getvalue().splitlines())
    for key, value in want.items():
        assert abs(got[key] - value) <= 0.01, (key, got[key], value)
