"""Document quality filters, after the BigScience ROOTS / BLOOM pipeline.

Each filter is a measurement (a pure function of the text or its words) and a threshold from
the document's language (a row of languages.py, which CleanConfig can override);
``rejection_reason`` applies them in a fixed order and names the first that fails.

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


# ROOTS' special characters: ASCII punctuation, digits and whitespace, and the non-ASCII
# punctuation and symbols that fill tables, menus and spam in every language: Latin-1 symbols
# (« » ° · ¿ ¡ × ÷), general punctuation (— “ ” … •), currency, arrows, maths, box drawing and
# shapes, dingbats, CJK and fullwidth punctuation (、。《》「」【】，：！？), Arabic (، ؛ ؟ ٪)
# and Devanagari (। ॥) punctuation, digits of any script, U+FFFD and emoji. Letters of every
# script, and the marks that belong to them (Hindi's vowel signs), are not special.
SPECIAL_CHARACTERS = (
    "\\s\\d!-/:-@\\[-`{-~\u0080-\u00bf\u00d7\u00f7\u2000-\u206f\u20a0-\u20cf\u2100-\u214f"
    "\u2190-\u23ff\u2460-\u27bf\u2900-\u2bff\u3000-\u3003\u3008-\u3020\u30fb\ufe30-\ufe6f"
    "\uff01-\uff20\uff3b-\uff40\uff5b-\uff65\ufffd\u060c\u061b\u061f\u066a-\u066d\u06d4"
    "\u0964\u0965\U0001f000-\U0001faff")
_SPECIAL_RE = re.compile(f"[{SPECIAL_CHARACTERS}]")
# In ASCII the special characters are exactly the non-letters (bytes.translate deletes those).


def special_char_ratio(text):
    """Share of characters that are special (SPECIAL_CHARACTERS): punctuation, digits,
    whitespace and symbols, CJK punctuation included.

    ROOTS counts whitespace as special too, so ordinary English prose sits near 0.2.

    >>> round(special_char_ratio("ab, 12"), 3), round(special_char_ratio("你好，世界！"), 3)
    (0.667, 0.333)
    """
    if not text:
        return 0.0
    if text.isascii():
        return 1.0 - count_letters(text) / len(text)
    return len(_SPECIAL_RE.findall(text)) / len(text)


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

# subtle: a text whose n-grams are all different still scores floor(sqrt(N)) / N, which is over
# 0.15 below N = 44: a clean 40-character Chinese paragraph would fail. Below this length the
# character-repetition ratio measures the length, not repetition, so it is not checked.
MIN_REPETITION_CHARS = 100

FILTER_REASONS = ("too_few_words", "too_many_words", "script", "char_repetition",
                  "word_repetition", "special_characters", "stopwords", "flagged_words")


def rejection_reason(text, words, params, scripts=(), min_script_ratio=0.0):
    """The first filter the document fails (a name from FILTER_REASONS), or None to keep it.

    text is the normalised document, words its words (split the way params.words says), params
    a languages.LanguageParams (the thresholds and word lists of the document's language), and
    scripts / min_script_ratio the optional writing-system check from CleanConfig.

    >>> from tinyroots.data.languages import params_for
    >>> rejection_reason("too short", ["too", "short"], params_for("en"))
    'too_few_words'
    """
    p, n = params, len(words)
    if n < p.min_words:
        return "too_few_words"
    if n > p.max_words:
        return "too_many_words"
    # Cheap checks first where the order does not change the answer a reader expects.
    if scripts and min_script_ratio > 0 and script_ratio(text, scripts) < min_script_ratio:
        return "script"
    if p.max_char_repetition < 1 and len(text) >= MIN_REPETITION_CHARS \
            and char_repetition_ratio(text, p.char_repetition_n) > p.max_char_repetition:
        return "char_repetition"
    if p.max_word_repetition < 1 \
            and word_repetition_ratio(words, p.word_repetition_n) > p.max_word_repetition:
        return "word_repetition"
    if p.max_special_chars < 1 and special_char_ratio(text) > p.max_special_chars:
        return "special_characters"
    if p.stopwords and p.min_stopwords > 0 \
            and word_list_ratio(words, p.stopwords) < p.min_stopwords:
        return "stopwords"
    if p.flagged and p.max_flagged_words < 1 \
            and word_list_ratio(words, p.flagged) > p.max_flagged_words:
        return "flagged_words"
    return None
