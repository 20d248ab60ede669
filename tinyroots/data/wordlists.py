"""Word lists for the document filters, and how to load your own.

``STOPWORDS["en"]`` is the usual list of English function words (the ones every English text is
full of: "the", "of", "and"). Prose has 30-60% of them; a keyword list, a table of numbers or a
spam page has far fewer, which is what the stopword filter looks for. Other languages: pass a
file with ``stopwords_file`` (one word per line).

There is no built-in flagged-word list on purpose: what to flag depends on the corpus and its
use. Pass one with ``flagged_words_file``.
"""

STOPWORDS = {
    "en": frozenset("""
a about above after again against all am an and any are aren as at be because been before being
below between both but by can cannot could couldn did didn do does doesn doing don down during
each few for from further had hadn has hasn have haven having he her here hers herself him
himself his how i if in into is isn it its itself just let ll me more most mustn my myself no
nor not now of off on once only or other ought our ours ourselves out over own re same shan she
should shouldn so some such t than that the their theirs them themselves then there these they
this those through to too under until up ve very was wasn we were weren what when where which
while who whom why will with won would wouldn you your yours yourself yourselves
""".split()),
}


def load_word_list(path):
    """Read a word list: one word per line, lowercased; blank lines and # comments skipped.

    >>> import tempfile, os
    >>> p = os.path.join(tempfile.mkdtemp(), "w.txt")
    >>> _ = open(p, "w").write("# mine\\nFoo\\n\\nbar\\n")
    >>> sorted(load_word_list(p))
    ['bar', 'foo']
    """
    try:
        with open(path, encoding="utf-8") as f:
            return frozenset(w.strip().lower() for w in f
                             if w.strip() and not w.lstrip().startswith("#"))
    except OSError as exc:
        raise FileNotFoundError(f"cannot read word list {path!r}: {exc.strerror}") from None
    except UnicodeDecodeError:
        raise ValueError(f"word list {path!r} is not UTF-8 text") from None
