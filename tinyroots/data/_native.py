"""The compiled helpers (_hashing.pyx), or None when the pure-Python code must run.

None when the extension was not built (no compiler at install time, a source checkout), when
``TINYROOTS_BACKEND=numpy`` asks for the reference code everywhere, or when the built module is
older than this source and lacks a function (rebuild with
``python setup.py build_ext --inplace``). Every function it offers has a Python twin, named with
a ``_py`` suffix, that gives the same result; the tests compare them.
"""

import os
import warnings

NAMES = ("minhash_signature", "band_keys", "char_repetition_ratio", "word_repetition_ratio",
         "count_letters", "split_words", "line_keys", "HashIndex")


def _load():
    if os.environ.get("TINYROOTS_BACKEND", "auto").strip().lower() == "numpy":
        return None
    try:
        from . import _hashing
    except ImportError:
        return None
    missing = [n for n in NAMES if not hasattr(_hashing, n)]
    if missing:
        warnings.warn(f"tinyroots.data._hashing is out of date (no {missing[0]}); using the "
                      "pure-Python code. Rebuild: python setup.py build_ext --inplace",
                      stacklevel=2)
        return None
    return _hashing


fast = _load()
