"""The examples in the docstrings of the layer-op modules run as written."""

import doctest
import importlib

import pytest

MODULES = ["npconv.nn._blocks", "npconv.nn.activation", "npconv.nn.merge",
           "npconv.nn.normalization", "npconv.nn.resample"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS)
    assert result.failed == 0 and result.attempted > 0
