"""Text normalisation: the first thing every document goes through.

Three small steps, each a pure function, applied in this order by ``normalize_text``:

1. ``unicode_nfc``: one spelling per character. ``"e\\u0301"`` (e + combining acute accent) and
   ``"\\u00e9"`` (the precomposed é) look the same but hash differently; NFC makes them equal, so
   deduplication and the word filters see one word.
2. ``strip_control``: control characters (NUL, the C1 range, zero-width spaces, a stray BOM) carry
   no text; a model would waste vocabulary learning them.
3. ``collapse_whitespace``: ``\\r\\n`` becomes ``\\n``, odd Unicode spaces become a plain space,
   runs of spaces inside a line become one space, trailing spaces go, and more than one blank line
   becomes exactly one. Leading indentation is kept: in code and verse it carries meaning.
"""

import re
import unicodedata

from ._native import fast as _fast  # split_words' Cython twin, or None

# --------------------------------------------------------------------------------------------
# control characters

# C0 controls except \t (09) and \n (0a); \r is handled by collapse_whitespace; DEL and the C1
# range (7f-9f); zero-width space/joiners (200b-200d), word joiner (2060), BOM (feff), the
# soft hyphen (ad), which is invisible unless a line breaks on it, and lone surrogates
# (d800-dfff), which JSON's "\\ud800" escapes can smuggle in and no UTF-8 file can hold.
_CONTROL_RE = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f\u00ad\u200b-\u200d\u2060\ufeff"
                         "\ud800-\udfff]")

_SURROGATE_RE = re.compile("[\ud800-\udfff]")


def unicode_nfc(text):
    """Compose characters to Unicode NFC.

    >>> unicode_nfc("cafe\\u0301") == "caf\\u00e9"
    True
    """
    # subtle: is_normalized is a fast scan; most text is already NFC and needs no new string.
    if unicodedata.is_normalized("NFC", text):
        return text
    return unicodedata.normalize("NFC", text)


def strip_control(text):
    """Remove control and invisible format characters; keep tabs and newlines.

    >>> strip_control("a\\x00b\\u200bc\\td\\n")
    'abc\\td\\n'
    """
    return _CONTROL_RE.sub("", text)


# --------------------------------------------------------------------------------------------
# whitespace

# Every horizontal space that is not a plain space: tab, no-break space, the en/em/thin spaces
# (2000-200a), narrow no-break (202f), medium math space (205f), ideographic space (3000).
_ODD_SPACES = "\t\u00a0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009" \
              "\u200a\u202f\u205f\u3000"
_LINE_BREAKS_RE = re.compile("\r\n?|[\u2028\u2029\x85]")
_INNER_SPACES_RE = re.compile(r"(?<=\S)[ " + _ODD_SPACES + r"]{2,}|(?<=\S)[" + _ODD_SPACES
                              + r"](?=\S)")
_TRAILING_RE = re.compile(r"[ " + _ODD_SPACES + r"]+$", re.MULTILINE)
_BLANK_LINES_RE = re.compile(r"\n{3,}")


def collapse_whitespace(text):
    """Normalise line breaks and collapse whitespace runs; keep leading indentation.

    >>> collapse_whitespace("  a  b\\u00a0c \\r\\n\\r\\n\\r\\n\\n    d\\t\\te  ")
    '  a b c\\n\\n    d e'
    """
    # Each regex below costs ~10 ns a character even when it finds nothing, while `in` runs at
    # memchr speed, so pure-ASCII text (most of it) only pays for the steps it needs.
    plain = text.isascii()
    if not plain or "\r" in text:
        text = _LINE_BREAKS_RE.sub("\n", text)
    if not plain or "  " in text or "\t" in text:
        text = _INNER_SPACES_RE.sub(" ", text)
    if not plain or " \n" in text or "\t\n" in text:
        text = _TRAILING_RE.sub("", text)
    if "\n\n\n" in text:
        text = _BLANK_LINES_RE.sub("\n\n", text)
    # subtle: strip newlines at both ends but not the first line's indentation.
    return text.strip("\n").rstrip()


def normalize_text(text, nfc=True, control=True, whitespace=True):
    """All three normalisation steps, in order.

    >>> normalize_text("Cafe\\u0301\\u200b  au   lait\\r\\n") == "Caf\\u00e9 au lait"
    True
    """
    if nfc:
        text = unicode_nfc(text)
    if control:
        text = strip_control(text)
    elif not text.isascii():
        # subtle: lone surrogates go even when control characters stay: no UTF-8 file can
        # hold them, so the first write would fail.
        text = _SURROGATE_RE.sub("", text)
    if whitespace:
        text = collapse_whitespace(text)
    return text


# --------------------------------------------------------------------------------------------
# words

# A word is a run of letters, digits or underscores (Python's Unicode \w), lowercased. Every
# word-based filter and the MinHash shingles share this one definition.
WORD_RE = re.compile(r"\w+")


def split_words_py(text):
    """The lowercased words of a text.

    >>> split_words_py("Don't PANIC: 42 fish!")
    ['don', 't', 'panic', '42', 'fish']
    """
    return WORD_RE.findall(text.lower())


def split_words(text):
    """split_words_py, in Cython when it was built (the same list, about twice as fast)."""
    if _fast is not None:
        return _fast.split_words(text)
    return split_words_py(text)


# Languages written without spaces (Chinese, Japanese): each Han or kana character is a word,
# and runs of other letters or digits (Latin words, numbers inside the text) are words as usual.
CJK = "\u3040-\u30ff\u31f0-\u31ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff\U00020000-\U0002ebef"
_CHAR_WORD_RE = re.compile(f"[{CJK}]|[^\\W{CJK}]+")
_CJK_RE = re.compile(f"[{CJK}]")
# Indic scripts: vowel signs and viramas are Unicode marks, not letters, so \\w alone would cut
# "भाषा" into "भ", "ष"; keep every code point of the Indic blocks inside a word except the
# danda and double danda (U+0964-0965), which end sentences.
_INDIC_WORD_RE = re.compile("[\\w\u0900-\u0963\u0966-\u0dff]+")


def split_words_chars(text):
    """Words of text written without spaces: each CJK character, and runs of other \\w.

    >>> split_words_chars("GPT-2 的词表有 50257 个词元")
    ['gpt', '2', '的', '词', '表', '有', '50257', '个', '词', '元']
    """
    return _CHAR_WORD_RE.findall(text.lower())


def split_words_indic(text):
    """Words of text in an Indic script: \\w runs with the script's marks kept inside.

    >>> split_words_indic("भाषा मॉडल।")
    ['भाषा', 'मॉडल']
    """
    return _INDIC_WORD_RE.findall(text.lower())


WORD_SPLITTERS = {"spaces": split_words, "chars": split_words_chars,
                  "indic": split_words_indic}


def spaced_cjk(text):
    """text with a space around every CJK character, so that word shingles (MinHash) see
    characters in Chinese and Japanese instead of whole clauses; other text is returned as is.

    >>> spaced_cjk("我爱 NLP")
    ' 我  爱  NLP'
    """
    if text.isascii() or _CJK_RE.search(text) is None:
        return text
    return _CJK_RE.sub(lambda m: f" {m.group(0)} ", text)
