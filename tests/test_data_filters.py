"""tinyroots.data.filters: each measurement and its threshold, plus the Cython twins."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyroots.data import filters as F
from tinyroots.data.config import CleanConfig
from tinyroots.data.languages import resolve
from tinyroots.data.normalize import split_words
from tinyroots.data.synthetic import chunk_documents, noise_document, shakespeare
from tinyroots.data.wordlists import STOPWORDS, load_word_list

PROSE = chunk_documents(shakespeare())[3]


# -- measurements --------------------------------------------------------------------------

def test_char_repetition_ratio():
    assert F.char_repetition_ratio_py("", 10) == 0.0
    assert F.char_repetition_ratio_py("abc", 10) == 0.0  # shorter than n
    assert F.char_repetition_ratio_py("a" * 100, 10) == 1.0  # one n-gram, all of it
    assert round(F.char_repetition_ratio_py("abcabcabc", 3), 3) == 0.429
    assert F.char_repetition_ratio_py(PROSE, 10) < 0.15  # real prose repeats little
    assert F.char_repetition_ratio_py("buy now! " * 50, 10) > 0.3


def test_word_repetition_ratio():
    assert F.word_repetition_ratio_py([], 5) == 0.0
    assert F.word_repetition_ratio_py("a b c a b c".split(), 2) == 0.8
    assert F.word_repetition_ratio_py("one two three four five six".split(), 2) == 0.0
    assert F.word_repetition_ratio_py(split_words(PROSE), 5) < 0.19
    assert F.word_repetition_ratio_py(("buy cheap tickets now " * 30).split(), 5) > 0.9


def test_special_char_ratio_and_letters():
    assert F.count_letters_py("Año 2024, ça va?") == 7
    assert F.count_letters_py("abc") == 3
    assert F.special_char_ratio("") == 0.0
    assert F.special_char_ratio("abcd") == 0.0
    assert F.special_char_ratio("1234") == 1.0
    assert 0.15 < F.special_char_ratio(PROSE) < 0.3  # whitespace counts: prose sits near 0.2
    assert F.special_char_ratio(noise_document("numbers", np.random.default_rng(0))) > 0.4


def test_script_ratio():
    assert F.script_ratio("Hello world") == 1.0
    assert F.script_ratio("Привет мир") == 0.0
    assert F.script_ratio("Привет мир", ("cyrillic",)) == 1.0
    assert F.script_ratio("Hello мир") == pytest.approx(5 / 8)
    assert F.script_ratio("Naïve café, Ångström") == 1.0  # accented Latin is Latin
    assert F.script_ratio("1234 !!") == 1.0  # no letters: nothing to judge
    assert F.script_ratio("日本語のテキスト", ("han", "kana")) == 1.0
    with pytest.raises(ValueError, match="unknown script 'klingon'"):
        F.script_ratio("é", ("klingon",))


def test_word_list_ratio():
    assert F.word_list_ratio([], {"the"}) == 0.0
    assert F.word_list_ratio(["the", "cat", "of", "doom"], {"the", "of"}) == 0.5
    assert F.word_list_ratio(split_words(PROSE), STOPWORDS["en"]) > 0.3
    keywords = split_words(noise_document("keywords", np.random.default_rng(0)))
    assert F.word_list_ratio(keywords, STOPWORDS["en"]) < 0.3


def test_load_word_list(tmp_path):
    p = tmp_path / "flag.txt"
    p.write_text("# comment\nBadWord\n\n  other \n", encoding="utf-8")
    assert load_word_list(str(p)) == {"badword", "other"}
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        load_word_list(str(tmp_path / "missing.txt"))


# -- thresholds: each filter fires on its own kind of noise, and not on prose --------------

CFG = CleanConfig(scripts=("latin",))  # English thresholds: the "en" row of languages.py


def reason(text, cfg=CFG, flagged=None):
    params = resolve("en", cfg, flagged=flagged)
    return F.rejection_reason(text, split_words(text), params, cfg.scripts, cfg.min_script_ratio)


def test_prose_passes_every_filter():
    for doc in chunk_documents(shakespeare())[:40]:
        assert reason(doc) is None, doc[:200]


@pytest.mark.parametrize("kind, expected", [
    ("short", "too_few_words"), ("cyrillic", "script"), ("spam", "word_repetition"),
    ("garbage", "special_characters"), ("numbers", "special_characters"),
    ("keywords", "stopwords"),
])
def test_each_filter_catches_its_noise(kind, expected):
    assert reason(noise_document(kind, np.random.default_rng(1))) == expected


def test_too_many_words_and_char_repetition():
    assert reason(PROSE, CFG.replace(max_words=50)) == "too_many_words"
    padded = PROSE + "\n" + "=" * 3000  # a long rule line: one 10-gram repeated 2990 times
    assert reason(padded, CFG.replace(max_special_chars=1.0)) == "char_repetition"


def test_flagged_words_built_in_and_replaced():
    text = PROSE + " zounds" * 30
    assert reason(text) is None  # not in the built-in English list
    assert reason(PROSE + " casino" * 30) == "flagged_words"  # in it (ROOTS: 4.5% of words)
    assert reason(text, flagged=frozenset({"zounds"})) == "flagged_words"  # a user's list
    assert reason(PROSE, flagged=frozenset({"zounds"})) is None


def test_neutral_thresholds_switch_filters_off():
    spam = noise_document("spam", np.random.default_rng(0))
    off = CFG.replace(max_word_repetition=1.0, max_char_repetition=1.0, min_stopwords=0.0)
    assert reason(spam) == "word_repetition"
    assert reason(spam, off) is None
    russian = noise_document("cyrillic", np.random.default_rng(0))
    assert reason(russian) == "script"
    assert reason(russian, CFG.replace(scripts=[])) not in (None, "script")


# -- the Cython twins return exactly what the Python versions return -------------------------

needs_fast = pytest.mark.skipif(F._fast is None, reason="Cython extension not built")
TEXTS = chunk_documents(shakespeare())[:30] + [
    "", "a", "aaaa aaaa aaaa", "x" * 30, "héllo wörld ñ 日本語 テスト 😀 emoji_x " * 5,
    "\ud800 lone surrogate \udfff", "tab\tsep\nnew line" * 7]


@needs_fast
def test_fast_repetition_matches_python_on_corpus():
    for text in TEXTS:
        for n in (1, 3, 10):
            assert F._fast.char_repetition_ratio(text, n) == pytest.approx(
                F.char_repetition_ratio_py(text, n), abs=1e-12)
        words = split_words(text)
        for n in (1, 2, 5):
            assert F._fast.word_repetition_ratio(words, n) == pytest.approx(
                F.word_repetition_ratio_py(words, n), abs=1e-12)
        assert F._fast.count_letters(text) == sum(c.isalpha() for c in text)


@needs_fast
@settings(max_examples=200, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab c\néé日😀_1")), max_size=300),
       st.integers(1, 12))
def test_fast_repetition_matches_python_random(text, n):
    assert F._fast.char_repetition_ratio(text, n) == pytest.approx(
        F.char_repetition_ratio_py(text, n), abs=1e-12)
    words = split_words(text)
    assert F._fast.word_repetition_ratio(words, n) == pytest.approx(
        F.word_repetition_ratio_py(words, n), abs=1e-12)


def test_short_clean_chinese_is_not_called_repetitive():
    """floor(sqrt(N)) / N alone is over 0.15 for fewer than 44 n-grams: a short clean Chinese
    paragraph must not be dropped for it; a long repetitive one still is."""
    short = "今天下午我们在图书馆讨论了语言模型的训练方法。"  # 23 characters, no repeat
    assert F.char_repetition_ratio(short, 10) > 0.15
    words = list(short[:-1])
    assert F.rejection_reason(short, words, resolve("zh", CleanConfig())) is None
    long = "买一送一！" * 40
    assert F.rejection_reason(long, list(long), resolve("zh", CleanConfig())) == \
        "char_repetition"
