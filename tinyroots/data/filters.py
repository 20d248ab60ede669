"""Document quality filters, after the BigScience ROOTS / BLOOM pipeline.

Each filter is a measurement (a pure function of the text or its words) and a threshold from
CleanConfig; ``rejection_reason`` applies them in a fixed order and names the first that fails.
The default thresholds are the ones ROOTS used for English web text (see config.py for each).

    measurement                 keeps a document when          catches
    word count                  min_words <= n <= max_words    fragments, giant dumps
    script ratio                >= min_script_ratio            text in another writing system
    character repetition        <= max_char_repetition         "aaaa...", repeated menus
    word repetition             <= max_word_repetition         spam, looping generations
    special-character ratio     <= max_special_chars           tables, code dumps, symbols
    stopword ratio              >= min_stopwords               keyword lists, not prose
    flagged-word ratio          <= max_flagged_words           whatever your word list flags

A threshold at its neutral value (0 for a minimum, 1 for a ratio maximum) switches it off.
"""

import math
import re
from collections import Counter

from ._native import fast as _fast  # the repetition counters' Cython twins, or None

# --------------------------------------------------------------------------------------------
# repetition

def char_repetition_ratio_py(text, n=10):
    """Share of all character n-grams taken by the k most frequent ones, k = floor(sqrt(#distinct)).

    Ordinary prose repeats few 10-grams (0.02-0.09 on Shakespeare); "aaaa...", a menu copied on
    every line or a looping generation is dominated by a handful. sqrt(#distinct) grows with the
    document, which keeps the measure fair between short and long ones.

    subtle: ROOTS also capped k by the number of n-grams seen exactly once, so a text made only
    of repeats scored 0 and passed; we leave that cap out.

    >>> round(char_repetition_ratio_py("abcabcabc", 3), 3)   # abc x3, bca x2, cab x2; k = 1
    0.429
    >>> round(char_repetition_ratio_py("aaaaaaaaxyz", 3), 3)   # aaa x6, aax, axy, xyz; k = 2
    0.778
    """
    counts = Counter(text[i:i + n] for i in range(len(text) - n + 1))
    if not counts:
        return 0.0
    freqs = sorted(counts.values(), reverse=True)
    k = math.isqrt(len(freqs))
    return sum(freqs[:k]) / sum(freqs)


def word_repetition_ratio_py(words, n=5):
    """Share of word n-grams that occur more than once.

    >>> word_repetition_ratio_py("a b c a b c".split(), 2)   # ab x2, bc x2, ca x1
    0.8
    """
    counts = Counter(" ".join(words[i:i + n]) for i in range(len(words) - n + 1))
    total = sum(counts.values())
    if total == 0:
        return 0.0
    return sum(c for c in counts.values() if c > 1) / total


def char_repetition_ratio(text, n=10):
    """char_repetition_ratio_py, in Cython when it was built (same value)."""
    if _fast is not None:
        return _fast.char_repetition_ratio(text, n)
    return char_repetition_ratio_py(text, n)


def word_repetition_ratio(words, n=5):
    """word_repetition_ratio_py, in Cython when it was built (same value)."""
    if _fast is not None:
        return _fast.word_repetition_ratio(words, n)
    return word_repetition_ratio_py(words, n)


# --------------------------------------------------------------------------------------------
# character classes

# The 256 byte values that are not ASCII letters, for bytes.translate to delete.
_ASCII_NON_LETTERS = bytes(i for i in range(256) if not (65 <= i <= 90 or 97 <= i <= 122))


def count_letters_py(text):
    """Number of letters (str.isalpha: any script, no digits, no marks).

    >>> count_letters_py("Año 2024, ça va?")
    7
    """
    if text.isascii():
        # Fast path for most text: bytes.translate deletes the non-letters at memory speed.
        return len(text.encode("ascii").translate(None, _ASCII_NON_LETTERS))
    return sum(1 for c in text if c.isalpha())


def count_letters(text):
    """count_letters_py, in Cython when it was built (same value)."""
    if _fast is not None and not text.isascii():
        return _fast.count_letters(text)
    return count_letters_py(text)


def special_char_ratio(text):
    """Share of characters that are not letters: digits, punctuation, symbols, whitespace.

    ROOTS counts whitespace as special too, so ordinary English prose sits near 0.2.

    >>> round(special_char_ratio("ab, 12"), 3)
    0.667
    """
    if not text:
        return 0.0
    return 1.0 - count_letters(text) / len(text)


# Unicode blocks of the main writing systems (letters only are counted, so punctuation inside
# a block does not matter). Astral CJK extensions are included for Han.
SCRIPTS = {
    "latin": "A-Za-z\u00aa\u00ba\u00c0-\u024f\u1e00-\u1eff\u2c60-\u2c7f\ua720-\ua7ff"
             "\uff21-\uff3a\uff41-\uff5a",
    "greek": "\u0370-\u03ff\u1f00-\u1fff",
    "cyrillic": "\u0400-\u052f\u1c80-\u1c8f\u2de0-\u2dff\ua640-\ua69f",
    "armenian": "\u0530-\u058f",
    "hebrew": "\u0590-\u05ff\ufb1d-\ufb4f",
    "arabic": "\u0600-\u06ff\u0750-\u077f\u08a0-\u08ff\ufb50-\ufdff\ufe70-\ufeff",
    "devanagari": "\u0900-\u097f\ua8e0-\ua8ff",
    "bengali": "\u0980-\u09ff",
    "tamil": "\u0b80-\u0bff",
    "thai": "\u0e00-\u0e7f",
    "georgian": "\u10a0-\u10ff",
    "hangul": "\u1100-\u11ff\u3130-\u318f\uac00-\ud7af",
    "kana": "\u3040-\u30ff\u31f0-\u31ff\uff66-\uff9f",
    "han": "\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef",
}
_SCRIPT_RES = {name: re.compile(f"[{chars}]") for name, chars in SCRIPTS.items()}


def script_ratio(text, scripts=("latin",)):
    """Share of the letters that belong to the given scripts (1.0 when there are no letters).

    This is the "simple language check": it cannot tell English from French, but it does tell
    an English corpus from a page of Cyrillic or Chinese; the stopword ratio then checks the
    language itself.

    >>> script_ratio("Hello мир")
    0.625
    >>> script_ratio("Hello мир", ("latin", "cyrillic"))
    1.0
    """
    letters = count_letters(text)
    if letters == 0:
        return 1.0
    if text.isascii():  # every ASCII letter is Latin
        return 1.0 if "latin" in scripts else 0.0
    unknown = [s for s in scripts if s not in _SCRIPT_RES]
    if unknown:
        raise ValueError(f"unknown script {unknown[0]!r}; known: {', '.join(SCRIPTS)}")
    in_script = sum(_SCRIPT_RES[s].subn("", text)[1] for s in scripts)
    return min(1.0, in_script / letters)


# --------------------------------------------------------------------------------------------
# word lists

def word_list_ratio(words, word_set):
    """Share of words that are in word_set (stopwords, or flagged words).

    >>> word_list_ratio(["the", "cat", "of", "doom"], {"the", "of"})
    0.5
    """
    if not words:
        return 0.0
    return sum(map(word_set.__contains__, words)) / len(words)  # map: no Python-level loop


# --------------------------------------------------------------------------------------------
# all filters, in order

FILTER_REASONS = ("too_few_words", "too_many_words", "script", "char_repetition",
                  "word_repetition", "special_characters", "stopwords", "flagged_words")


def rejection_reason(text, words, cfg, stopwords=frozenset(), flagged=frozenset()):
    """The first filter the document fails (a name from FILTER_REASONS), or None to keep it.

    text is the normalised document, words = split_words(text), cfg a CleanConfig.

    >>> from tinyroots.data.config import CleanConfig
    >>> rejection_reason("too short", ["too", "short"], CleanConfig())
    'too_few_words'
    """
    n = len(words)
    if n < cfg.min_words:
        return "too_few_words"
    if n > cfg.max_words:
        return "too_many_words"
    # Cheap checks first where the order does not change the answer a reader expects.
    if cfg.scripts and cfg.min_script_ratio > 0 \
            and script_ratio(text, cfg.scripts) < cfg.min_script_ratio:
        return "script"
    if cfg.max_char_repetition < 1 \
            and char_repetition_ratio(text, cfg.char_repetition_n) > cfg.max_char_repetition:
        return "char_repetition"
    if cfg.max_word_repetition < 1 \
            and word_repetition_ratio(words, cfg.word_repetition_n) > cfg.max_word_repetition:
        return "word_repetition"
    if cfg.max_special_chars < 1 and special_char_ratio(text) > cfg.max_special_chars:
        return "special_characters"
    if stopwords and cfg.min_stopwords > 0 \
            and word_list_ratio(words, stopwords) < cfg.min_stopwords:
        return "stopwords"
    if flagged and cfg.max_flagged_words < 1 \
            and word_list_ratio(words, flagged) > cfg.max_flagged_words:
        return "flagged_words"
    return None
