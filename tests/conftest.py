"""Fixtures shared by several test modules."""

import pytest

import tinyroots as tr


@pytest.fixture(autouse=True)
def _seeded():
    """Each test starts from the same global random state, so a failure reproduces (the package
    itself seeds from the OS unless told otherwise: tests/test_random.py checks that)."""
    tr.manual_seed(1337)


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models gain nothing from threads, and lose much on a busy machine. A module opts in
    with ``pytestmark = pytest.mark.usefixtures("one_thread")``."""
    n = tr.get_num_threads()
    tr.set_num_threads(1)
    yield
    tr.set_num_threads(n)
