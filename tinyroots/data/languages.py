"""Per-language filter parameters: the one table the cleaner reads after language identification.

ROOTS (the BLOOM corpus) cleaned each of its languages with its own thresholds, published in
BigScience's data_tooling repository (ac_dc/parameters_filtering.py). The table below follows
them where they exist; the `source` column says where each row comes from. A language that has
no row is cleaned with the language-agnostic DEFAULT row, and the report says so.

    code     words   min   char   word   special  stop-  flagged  source
                     words rep.   rep.   chars    words
    en       spaces  20    0.15   0.19   0.40     0.30   0.045    ROOTS
    fr       spaces  1     0.15   0.19   0.35     0.15   0.045    ROOTS (flagged: tinyroots)
    es       spaces  1     0.15   0.19   0.30     0.20   0.045    ROOTS (flagged: tinyroots)
    de       spaces  1     0.15   0.19   0.35     0.20   0.045    tinyroots (not in ROOTS)
    ar       spaces  1     0.15   0.19   0.45     -      -        ROOTS
    hi       indic   1     0.15   0.19   0.35     -      -        ROOTS
    zh       chars   1     0.15   0.19*  0.40     -      -        ROOTS (* tinyroots)
    ja       chars   1     0.15   0.19*  0.40     -      -        tinyroots (not in ROOTS)
    default  spaces  1     0.15   0.19   0.40     -      -        ROOTS' default row

* words: how words are counted. ``spaces``: runs of letters and digits (normalize.split_words).
  ``indic``: the same, with the vowel signs and viramas of Indic scripts inside words (Unicode
  calls them marks, not letters, so \\w alone would cut "भाषा" into pieces). ``chars``: every
  Han, kana character is a word, as Chinese and Japanese write without spaces (ROOTS used a
  SentencePiece model for Chinese; characters need no model and count the same way).
* char rep.: ROOTS used 0.106 on web pages; on 1-3 KB literary documents that drops ~3% of clean
  text, 0.15 under 1% (see config.py), so every row uses 0.15.
* word rep.: share of repeated word 5-grams. ROOTS did not check it for Chinese; we do, on
  10-grams of characters (* : about five Chinese words), since 5 characters repeat naturally
  ("语言模型的": 1.6% of the 5-grams of a 5 KB article, none of its 10-grams) and a page that
  repeats one sentence scores 1.0 while its character-repetition ratio stays under 0.15.
* special chars: share of characters in filters.SPECIAL_CHARACTERS (ROOTS' definition:
  punctuation, digits, whitespace, symbols, CJK and fullwidth punctuation, emoji).
* stopwords, flagged: minimum / maximum share of words in the language's list (wordlists.py);
  ``-``: not checked (ROOTS checked Arabic and Hindi stopwords at a threshold of 0).

Chinese is one lid.176 label for simplified and traditional characters: the row covers both.
"""

from dataclasses import dataclass

from .wordlists import FLAGGED_WORDS, STOPWORDS


@dataclass(frozen=True)
class LanguageParams:
    """The filter thresholds and word lists for one language (one row of the table)."""
    code: str
    name: str
    words: str                   # "spaces", "indic" or "chars"
    min_words: int
    max_words: int
    max_char_repetition: float   # 1.0: not checked
    max_word_repetition: float   # 1.0: not checked
    max_special_chars: float
    min_stopwords: float         # 0.0: not checked
    max_flagged_words: float     # 1.0: not checked
    source: str
    char_repetition_n: int = 10  # ROOTS: character 10-grams
    word_repetition_n: int = 5   # word 5-grams (character 10-grams where words are characters)
    stopwords: frozenset = frozenset()
    flagged: frozenset = frozenset()


def _row(code, name, words, min_words, char_rep, word_rep, special, stop, flagged, source):
    return LanguageParams(code, name, words, min_words, 100_000, char_rep, word_rep, special,
                          stop, flagged, source, word_repetition_n=10 if words == "chars" else 5,
                          stopwords=STOPWORDS.get(code, frozenset()),
                          flagged=FLAGGED_WORDS.get(code, frozenset()))


# code, name, words, min words, char rep., word rep., special, stopwords, flagged, source
LANGUAGES = {row.code: row for row in [
    _row("en", "English", "spaces", 20, 0.15, 0.19, 0.40, 0.30, 0.045, "ROOTS"),
    _row("fr", "French", "spaces", 1, 0.15, 0.19, 0.35, 0.15, 0.045, "ROOTS"),
    _row("es", "Spanish", "spaces", 1, 0.15, 0.19, 0.30, 0.20, 0.045, "ROOTS"),
    _row("de", "German", "spaces", 1, 0.15, 0.19, 0.35, 0.20, 0.045, "tinyroots"),
    _row("ar", "Arabic", "spaces", 1, 0.15, 0.19, 0.45, 0.0, 1.0, "ROOTS"),
    _row("hi", "Hindi", "indic", 1, 0.15, 0.19, 0.35, 0.0, 1.0, "ROOTS"),
    _row("zh", "Chinese", "chars", 1, 0.15, 0.19, 0.40, 0.0, 1.0, "ROOTS"),
    _row("ja", "Japanese", "chars", 1, 0.15, 0.19, 0.40, 0.0, 1.0, "tinyroots"),
]}
DEFAULT = _row("default", "any other language", "spaces", 1, 0.15, 0.19, 0.40, 0.0, 1.0,
               "ROOTS default")

# The thresholds a CleanConfig field can set for every language at once (see resolve).
OVERRIDABLE = ("min_words", "max_words", "char_repetition_n", "max_char_repetition",
               "word_repetition_n", "max_word_repetition", "max_special_chars", "min_stopwords",
               "max_flagged_words")


def params_for(code):
    """The table row for a language code, or DEFAULT when it has none.

    >>> params_for("fr").max_special_chars, params_for("sw").code
    (0.35, 'default')
    """
    return LANGUAGES.get(code, DEFAULT)


def resolve(code, cfg, stopwords=None, flagged=None):
    """The parameters a document in language `code` is filtered with.

    Start from the language's row; every threshold that cfg sets (not None) replaces the row's
    for all languages; stopwords / flagged (frozensets from a user's files) replace the row's
    lists when given. cfg.stopwords_lang: 'auto' uses the row's list, '' none, or a code's list
    for every document.

    >>> from tinyroots.data.config import CleanConfig
    >>> resolve("zh", CleanConfig()).min_words, resolve("zh", CleanConfig(min_words=5)).min_words
    (1, 5)
    """
    row = params_for(code)
    changes = {name: getattr(cfg, name) for name in OVERRIDABLE if getattr(cfg, name) is not None}
    if stopwords is not None:
        changes["stopwords"] = stopwords
    elif cfg.stopwords_lang != "auto":
        changes["stopwords"] = STOPWORDS.get(cfg.stopwords_lang, frozenset())
    if flagged is not None:
        changes["flagged"] = flagged
    if not changes:
        return row
    from dataclasses import replace
    return replace(row, **changes)
