"""The examples in the regularizers' docstrings run and print what they show (a plug-in author
copies them): every module of the package, through the standard library's doctest."""

from __future__ import annotations

import doctest
import importlib
import pkgutil

import pytest

import regularizers

MODULES = sorted(info.name for info in pkgutil.iter_modules(regularizers.__path__, "regularizers."))


@pytest.mark.parametrize("name", ["regularizers", *MODULES])
def test_docstring_examples_hold(name):
    result = doctest.testmod(importlib.import_module(name), optionflags=doctest.ELLIPSIS, verbose=False)
    assert result.failed == 0, f"{name}: {result.failed} of {result.attempted} docstring examples fail (run doctest)"
