"""The documentation runs: README's Python blocks and every docstring example in the package."""

import doctest
import importlib
import pkgutil
import re
from pathlib import Path

import pytest

import npconv

ROOT = Path(__file__).resolve().parents[1]


def python_blocks(path: Path) -> list[str]:
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.S)


@pytest.mark.parametrize("block", python_blocks(ROOT / "README.md"))
def test_readme_examples_run(block, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)                          # files the examples write land here
    exec(compile(block, "README.md", "exec"), {})


MODULES = sorted(m.name for m in pkgutil.walk_packages(npconv.__path__, "npconv.")
                 if not m.name.endswith("__main__"))


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples_run(name):
    if name.startswith("npconv.onnx"):
        pytest.importorskip("onnx")             # an optional extra
    module = importlib.import_module(name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    assert result.failed == 0
