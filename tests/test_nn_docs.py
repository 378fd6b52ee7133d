"""The examples in the docstrings of the pooling, nn and training modules run as written."""

import doctest
import importlib

import pytest

MODULES = ["npconv.pooling", "npconv.nn", "npconv.nn.functional", "npconv.nn.init",
           "npconv.nn.layers", "npconv.nn.losses", "npconv.nn.optim", "npconv.nn.serialization",
           "npconv.training", "npconv.training.builders", "npconv.training.data",
           "npconv.training.loop", "npconv.training.report"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
