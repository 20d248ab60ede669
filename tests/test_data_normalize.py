"""tinyroots.data.normalize: NFC, control characters, whitespace, words."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyroots.data import normalize
from tinyroots.data.normalize import (collapse_whitespace, normalize_text, split_words,
                                      split_words_py, strip_control, unicode_nfc)


def test_nfc_composes_and_keeps_composed_text():
    assert unicode_nfc("cafe\u0301") == "caf\u00e9"
    assert unicode_nfc("caf\u00e9") == "caf\u00e9"
    assert unicode_nfc("plain ascii") == "plain ascii"


@pytest.mark.parametrize("raw, expected", [
    ("a\x00b", "ab"),                      # NUL
    ("a\x1bb\x7fc\x85d", "abcd"),          # ESC, DEL, C1
    ("zero\u200bwidth\ufeff", "zerowidth"),  # zero-width space, BOM
    ("soft\u00adhyphen", "softhyphen"),
    ("lone \ud800surrogate", "lone surrogate"),
    ("tab\tand\nnewline", "tab\tand\nnewline"),  # kept
    ("émoji 😀 and 日本", "émoji 😀 and 日本"),  # real characters kept
])
def test_strip_control(raw, expected):
    assert strip_control(raw) == expected


@pytest.mark.parametrize("raw, expected", [
    ("a  b   c", "a b c"),
    ("a\u00a0b\u3000c\u2009d", "a b c d"),       # odd spaces become a plain space
    ("line one   \nline two\t\t", "line one\nline two"),  # trailing spaces go
    ("a\r\nb\rc", "a\nb\nc"),                  # CRLF and CR
    ("a\n\n\n\n\nb", "a\n\nb"),                # at most one blank line
    ("\n\n  indented\n    more", "  indented\n    more"),  # indentation kept
    ("x\u2028y", "x\ny"),                      # Unicode line separator
])
def test_collapse_whitespace(raw, expected):
    assert collapse_whitespace(raw) == expected


def test_normalize_text_switches():
    raw = "Cafe\u0301\u200b  au   lait\r\n"
    assert normalize_text(raw) == "Caf\u00e9 au lait"
    assert normalize_text(raw, nfc=False) == "Cafe\u0301 au lait"
    assert normalize_text(raw, control=False) == "Caf\u00e9\u200b au lait"
    # lone surrogates go even with control=False: no UTF-8 file can hold them
    assert normalize_text("a\udc80b", control=False, whitespace=False) == "ab"


def test_normalize_is_idempotent():
    raw = "  Hello,\u00a0\u00a0world!\r\n\r\n\r\n\tNext\u200b para  \n"
    once = normalize_text(raw)
    assert normalize_text(once) == once


def test_split_words():
    assert split_words("Don't PANIC: 42 fish!") == ["don", "t", "panic", "42", "fish"]
    assert split_words("Ça va, Ελλάδα? snake_case") == ["ça", "va", "ελλάδα", "snake_case"]
    assert split_words("... --- !!!") == []


@pytest.mark.skipif(normalize._fast is None, reason="Cython extension not built")
@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200) | st.text(alphabet=st.sampled_from(list("aZ _-1é日😀\n')")),
                                       max_size=200))
def test_fast_split_words_matches_regex(text):
    assert normalize._fast.split_words(text) == split_words_py(text)
