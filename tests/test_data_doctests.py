"""The worked examples in tinyroots.data's docstrings are tests too."""

import doctest
import importlib

import pytest

MODULES = ["collect", "normalize", "filters", "pii", "hashing", "dedup", "cleaning", "config",
           "shards", "loader", "pipeline", "parallel", "wordlists", "langid", "languages"]


@pytest.mark.parametrize("name", MODULES)
def test_doctests(name):
    module = importlib.import_module(f"tinyroots.data.{name}")
    result = doctest.testmod(module)
    assert result.failed == 0
