"""docs/checking.md shows real reports: every report and excerpt is what the command prints
today, and the gradcheck example runs and fails as shown."""

import pathlib
import re
import shlex

import pytest
from student_layers import load_example

from npconv.cli import main

ROOT = pathlib.Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "checking.md").read_text()
SHOWN = re.findall(r"<!-- (report|excerpt) of: (npconv check [^>]*?) -->\n```\n(.*?)```",
                   DOC, flags=re.S)


def test_the_doc_shows_reports_for_each_new_kind_of_finding():
    commands = " ".join(command for _, command, _ in SHOWN)
    for target in ("seed_answer.py:SeedConv2D", "RemainderFromHeight", "--pool max",
                   "Segfaults", "TorchStyle", "ChannelsFirst"):
        assert target in commands


@pytest.mark.parametrize("kind, command, shown", SHOWN,
                         ids=[next(w for w in command.split() if ":" in w).split("/")[-1]
                              for _, command, _ in SHOWN])
def test_reports_in_the_doc_are_what_the_command_prints(capsys, monkeypatch, kind, command,
                                                        shown):
    monkeypatch.chdir(ROOT)
    main(shlex.split(command)[1:])
    printed = capsys.readouterr().out
    if kind == "report":
        assert printed.rstrip("\n") == shown.rstrip("\n")
    else:
        assert shown.rstrip("\n") in printed


def test_the_gradcheck_example_runs_and_fails_as_shown(capsys):
    broken = load_example("broken_convs.py")

    class MyConv2D(broken.Conv2D):                              # dx misses its last row
        def backward(self, dy):
            dx = super().backward(dy)
            dx[:, -1] = 0
            return dx

    example = re.search(r"```python\n(import numpy as np\nfrom npconv.testing import "
                        r"gradcheck.*?)```", DOC, flags=re.S).group(1)
    space = {"MyConv2D": MyConv2D}
    exec(compile(example, "checking.md", "exec"), space)
    with pytest.raises(AssertionError) as failure:
        space["test_my_layer_gradients"]()
    shown = re.search(r"it fails like this:\n\n```\n(.*?)```", DOC, flags=re.S).group(1)
    assert str(failure.value).strip() == shown.strip()
    space["MyConv2D"] = broken.Conv2D
    space["test_my_layer_gradients"]()                          # the right layer passes
