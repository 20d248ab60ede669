"""CleanConfig: every knob of the cleaning pipeline in one dataclass.

Defaults follow the BigScience ROOTS filtering of English text (the BLOOM corpus), which is a
good, documented starting point; each field's help says what it does and where its default
comes from. Three ways to set it, later ones winning:

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


def _opt(default, help, check=None):
    return field(default=default, metadata={"help": help, "check": check})


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
    # -- document filters (ROOTS English values unless said otherwise) ------------------------
    min_words: int = _opt(20, "drop documents with fewer words (ROOTS: 20)", _in_range(0))
    max_words: int = _opt(100_000, "drop documents with more words (ROOTS: 100000)",
                          _in_range(1))
    scripts: tuple = _opt(("latin",), "writing systems the corpus should be in (empty: any)",
                          _scripts)
    min_script_ratio: float = _opt(0.8, "drop documents with a smaller share of letters in "
                                   "`scripts` (ROOTS used fastText language id >= 0.8)",
                                   _in_range(0, 1))
    char_repetition_n: int = _opt(10, "character n-gram size for the repetition ratio "
                                  "(ROOTS: 10)", _in_range(1))
    max_char_repetition: float = _opt(0.15, "drop above this character-repetition ratio. ROOTS "
                                      "used 0.106 on web pages; on 1-3 KB literary documents "
                                      "that drops ~3% of clean text, 0.15 under 1%",
                                      _in_range(0, 1))
    word_repetition_n: int = _opt(5, "word n-gram size for the repetition ratio (ROOTS: 5)",
                                  _in_range(1))
    max_word_repetition: float = _opt(0.19, "drop above this word-repetition ratio (ROOTS: 0.19)",
                                      _in_range(0, 1))
    max_special_chars: float = _opt(0.4, "drop above this share of non-letter characters, "
                                    "whitespace included (ROOTS: 0.4)", _in_range(0, 1))
    stopwords_lang: str = _opt("en", "built-in stopword list: 'en', or '' for none (for other "
                               "languages give stopwords_file)", _one_of("", "en"))
    stopwords_file: str = _opt("", "a stopword list (one word a line) replacing the built-in")
    min_stopwords: float = _opt(0.3, "drop below this share of stopwords (ROOTS: 0.3)",
                                _in_range(0, 1))
    flagged_words_file: str = _opt("", "words to flag (one a line); no list, no filter")
    max_flagged_words: float = _opt(0.01, "drop above this share of flagged words (ROOTS: 0.01)",
                                    _in_range(0, 1))
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
            problem = check(value) if check else None
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
    kind = type(f.default)
    if isinstance(value, str) and kind is not str:
        value = parse_value(f, value)
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
    """Parse a command-line string for field f: '0.5', '100', 'yes', 'latin,greek'."""
    kind = type(f.default)
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
