"""From a folder of text to training shards: clean -> train tokenizer -> tokenize -> shards.

    data = prepare("my_corpus/", "cache/", vocab_size=4096)
    data.train, data.val        # shard paths, for DataLoader
    data.tokenizer              # the Tokenizer the shards were made with

The result is cached: a key computed from the inputs' contents and every setting names a
directory under cache_dir, and a second call with the same inputs and settings returns what the
first one made without redoing any work. A run that died half-way left no manifest.json, so it
is redone from scratch.

Token stream: each document is the eot token (``<|endoftext|>``) followed by the document's
tokens, so documents are joined with eot between them and a window that starts anywhere still
sees where a document begins. Text inside a document that happens to read "<|endoftext|>" is
encoded as plain text, never as the special token.

The validation split is by tokens: val_fraction of the corpus's tokens go to val, however few
the documents. Whole documents go to val while they fit under the fraction (ValSplit, by
characters, the same decision when the tokenizer is trained and when the shards are written, so
the tokenizer never sees a val document); whatever is still missing at the end is cut from the
tail of the train tokens, splitting a document when needed. Eight documents and
val_fraction=0.1 give 10% of the tokens to val, not one document in eight.

A vocabulary smaller than asked (BPE stops when no pair occurs twice more) is reported with its
reason in PreparedData.vocab_note and the log.
"""

import hashlib
import json
import os
import shutil
import sys
import time
from dataclasses import dataclass, field

import numpy as np

from .cleaning import clean
from .collect import check_file, iter_documents, resolve_inputs
from .config import CleanConfig
from .shards import ShardSetWriter, ShardWriter, open_shard, read_header

PIPELINE_VERSION = 2
EOT = "<|endoftext|>"
# The defaults `python -m tinyroots.data prepare` and `python -m tinyroots.train --data` share
# (tests/test_data_pipeline.py checks TrainConfig against them).
VAL_FRACTION = 0.1
VOCAB_SIZE = 1024
SHARD_TOKENS = 50_000_000


@dataclass
class PreparedData:
    """What prepare() made: shard paths, the tokenizer, and counts."""
    directory: str
    train: list
    val: list
    tokenizer: object
    tokenizer_dir: str
    vocab_size: int
    n_train_tokens: int
    n_val_tokens: int
    cached: bool = False
    report: dict = field(default_factory=dict, repr=False)
    vocab_note: str = ""


def _log_fn(verbose):
    # progress goes to stderr: stdout stays free for results (the CLI prints JSON there)
    return (lambda *a: print(*a, file=sys.stderr, flush=True)) if verbose else (lambda *a: None)


# --------------------------------------------------------------------------------------------
# tokenizing

class ValSplit:
    """Decides, document by document in corpus order, which whole documents go to validation:
    a document goes when the val share, counting it, stays within val_fraction of everything
    seen so far. Sizes are characters; the same stream gives the same decisions every time.

    >>> split = ValSplit(0.25)
    >>> [split(100) for _ in range(8)]
    [False, False, False, True, False, False, False, True]
    """

    def __init__(self, val_fraction):
        self.val_fraction, self.total, self.val = val_fraction, 0, 0

    def __call__(self, size):
        self.total += size
        if self.val + size <= self.val_fraction * self.total:
            self.val += size
            return True
        return False


def _batches(texts, max_docs=512, max_chars=1 << 22):
    batch, size = [], 0
    for t in texts:
        batch.append(t)
        size += len(t)
        if len(batch) >= max_docs or size >= max_chars:
            yield batch
            batch, size = [], 0
    if batch:
        yield batch


def train_tokenizer(texts, vocab_size, work_dir, sample_bytes=20_000_000, log=None):
    """Train a Tokenizer on the first sample_bytes of texts (joined by eot, which training
    cuts out, so no merge spans two documents)."""
    from ..tokenizer import Tokenizer
    log = log or (lambda *a: None)
    os.makedirs(work_dir, exist_ok=True)
    sample = os.path.join(work_dir, "tokenizer_sample.txt")
    size = 0
    with open(sample, "w", encoding="utf-8") as f:
        for t in texts:
            f.write(t)
            f.write(EOT)
            size += len(t.encode("utf-8"))
            if size >= sample_bytes:
                break
    if size == 0:
        raise ValueError("no text to train the tokenizer on")
    log(f"training a {vocab_size}-token BPE tokenizer on {size / 1e6:.1f} MB")
    try:
        return Tokenizer.train([sample], vocab_size, special_tokens=(EOT,))
    finally:
        os.remove(sample)


def tokenize_documents(texts, tokenizer, out_dir, val_fraction=VAL_FRACTION,
                       shard_tokens=SHARD_TOKENS, num_threads=None, log=None):
    """Write the token stream of texts as train_*.bin / val_*.bin shards in out_dir, with
    val_fraction of the tokens in val (see the module docstring).

    Returns (train paths, val paths, n_train_tokens, n_val_tokens).
    """
    log = log or (lambda *a: None)
    eot = tokenizer.eot_token_id
    if eot is None:
        raise ValueError(f"the tokenizer has no {EOT} token to separate documents")
    V = tokenizer.vocab_size
    writers = {False: ShardSetWriter(out_dir, "train", V, shard_tokens),
               True: ShardSetWriter(out_dir, "val", V, shard_tokens)}
    n_docs, to_val = 0, ValSplit(val_fraction)
    for batch in _batches(texts):
        # subtle: allowed_special="none" -- a document quoting "<|endoftext|>" must not be
        # able to end itself early.
        encoded = tokenizer.encode_batch(batch, allowed_special="none", num_threads=num_threads)
        for text, ids in zip(batch, encoded):
            tokens = np.empty(len(ids) + 1, np.int64)
            tokens[0] = eot
            tokens[1:] = ids
            writers[to_val(len(text))].write_document(tokens)
        n_docs += len(batch)
    train, val = writers[False].close(), writers[True].close()
    n_train, n_val = writers[False].n_tokens, writers[True].n_tokens
    if n_train + n_val == 0:
        raise ValueError("no documents to tokenize")
    missing = max(1, round(val_fraction * (n_train + n_val))) - n_val  # never an empty val
    if val_fraction > 0 and missing > 0 and n_train > 1:
        moved, path = _carve_val(train, out_dir, missing, len(val), V)
        n_train, n_val = n_train - moved, n_val + moved
        val = val + [path]
    log(f"tokenized {n_docs} documents: {n_train} train and {n_val} val tokens")
    return train, val, n_train, n_val


def _carve_val(train_paths, out_dir, n_tokens, index, vocab_size):
    """Move the last n_tokens of the last train shard (at most all but one of its tokens) into
    a new val shard val_<index>.bin; returns (tokens moved, its path)."""
    last = train_paths[-1]
    tokens = np.array(open_shard(last))  # a copy: the file is about to be rewritten
    n_val = min(n_tokens, len(tokens) - 1)
    path = os.path.join(out_dir, f"val_{index:05d}.bin")
    with ShardWriter(path, vocab_size) as w:
        w.write(tokens[len(tokens) - n_val:])
    with ShardWriter(last, vocab_size) as w:
        w.write(tokens[:len(tokens) - n_val])
    return n_val, path


# --------------------------------------------------------------------------------------------
# the cached pipeline

def content_key(files, settings):
    """Hex key from the files' names (relative to their common folder), their bytes, and the
    settings dict. Any change to a byte or a setting gives a new key."""
    h = hashlib.blake2b(digest_size=16)
    h.update(json.dumps({"version": PIPELINE_VERSION, **settings}, sort_keys=True).encode())
    root = os.path.commonpath([os.path.abspath(f) for f in files]) if files else ""
    root = root if files and os.path.isdir(root) else os.path.dirname(root)
    for path in files:
        h.update(os.path.relpath(os.path.abspath(path), root).encode("utf-8", "surrogatepass"))
        h.update(b"\x00")
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                h.update(block)
        h.update(b"\x01")
    return h.hexdigest()


def _load_manifest(directory):
    path = os.path.join(directory, "manifest.json")
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            manifest = json.load(f)
        for name in manifest["train"] + manifest["val"]:
            read_header(os.path.join(directory, name))  # every shard still whole
        return manifest
    except (OSError, ValueError, KeyError):
        return None  # damaged cache entry: rebuild it


def prepare(path, cache_dir, vocab_size=VOCAB_SIZE, *, config=None, clean_text=True,
            val_fraction=VAL_FRACTION, shard_tokens=SHARD_TOKENS, tokenizer=None,
            tokenizer_sample_bytes=20_000_000, workers=1, force=False, verbose=True):
    """Turn a file, folder or glob of text (or a list of them) into tokenizer + shards.

    path: anything collect.resolve_inputs takes (.txt, .jsonl, .jsonl.gz, folders, globs).
    cache_dir: where results live, in a subfolder named by the content key.
    vocab_size: size of the BPE vocabulary to train (ignored when tokenizer is given).
    config: CleanConfig for the cleaning step; clean_text=False skips cleaning (the documents
        are still read with config's reader settings).
    val_fraction: share of the tokens held out for validation.
    shard_tokens: maximum tokens per shard file.
    tokenizer: a Tokenizer, or the folder of a saved one, to use instead of training.
    tokenizer_sample_bytes: how much cleaned text the tokenizer is trained on.
    workers: processes for cleaning, threads for encoding. force: rebuild even if cached.

    Returns a PreparedData (train/val shard paths, tokenizer, token counts, clean report).
    """
    from ..tokenizer import Tokenizer
    log = _log_fn(verbose)
    cfg = config if config is not None else CleanConfig()
    files = resolve_inputs(path)
    if isinstance(tokenizer, (str, os.PathLike)):
        tokenizer = Tokenizer.from_pretrained(os.fspath(tokenizer))
    settings = _settings(cfg, clean_text, tokenizer, vocab_size, val_fraction, shard_tokens,
                         tokenizer_sample_bytes)
    key = content_key(files, settings)
    directory = os.path.join(cache_dir, key[:20])
    manifest = None if force else _load_manifest(directory)
    if manifest is not None:
        log(f"using cached data in {directory}")
        return _prepared(directory, manifest, cached=True)

    start = time.perf_counter()
    if os.path.exists(directory):
        shutil.rmtree(directory)  # a half-finished earlier run
    os.makedirs(directory)
    texts, report = _document_texts(path, files, cfg, clean_text, directory, workers, log)
    given = tokenizer is not None
    if not given:
        to_val = ValSplit(val_fraction)  # the same documents tokenize_documents puts in val
        train_texts = (t for t in texts() if not to_val(len(t)))
        tokenizer = train_tokenizer(train_texts, vocab_size, directory,
                                    tokenizer_sample_bytes, log)
    vocab_note = vocabulary_note(tokenizer, vocab_size, given)
    if vocab_note:
        log(vocab_note)
    tokenizer.save_pretrained(os.path.join(directory, "tokenizer"))
    train, val, n_train, n_val = tokenize_documents(
        texts(), tokenizer, os.path.join(directory, "shards"), val_fraction, shard_tokens,
        workers, log)
    manifest = {"version": PIPELINE_VERSION, "key": key,
                "inputs": [os.path.abspath(f) for f in files],
                "train": [os.path.relpath(p, directory) for p in train],
                "val": [os.path.relpath(p, directory) for p in val],
                "n_train_tokens": int(n_train), "n_val_tokens": int(n_val),
                "vocab_size": tokenizer.vocab_size, "eot_token_id": tokenizer.eot_token_id,
                "tokenizer": "tokenizer", "settings": settings,
                "clean_report": "clean/report.json" if clean_text else None,
                "vocab_size_asked": None if given else vocab_size, "vocab_note": vocab_note,
                "seconds": round(time.perf_counter() - start, 2)}
    _write_manifest(directory, manifest)
    log(f"prepared {directory} in {manifest['seconds']} s")
    return _prepared(directory, manifest, cached=False, tokenizer=tokenizer, report=report)


def _settings(cfg, clean_text, tokenizer, vocab_size, val_fraction, shard_tokens, sample_bytes):
    """Every setting that changes the result, for the cache key (a given tokenizer by the hash
    of its vocabulary and merges)."""
    tok_given = None
    if tokenizer is not None:
        tok_given = {"vocab": sorted(tokenizer.get_vocab().items()), "merges": tokenizer.merges}
    return {"clean": cfg.hash_inputs() if clean_text else None, "clean_text": clean_text,
            "reader": [cfg.text_field, cfg.id_field, cfg.txt_split, cfg.max_doc_chars],
            "vocab_size": None if tok_given else vocab_size, "val_fraction": val_fraction,
            "shard_tokens": shard_tokens, "sample_bytes": sample_bytes,
            "tokenizer": hashlib.blake2b(json.dumps(tok_given).encode()).hexdigest()
            if tok_given else None}


def _document_texts(path, files, cfg, clean_text, directory, workers, log):
    """(a function giving a fresh stream of document texts, the clean report or {}): the
    cleaned corpus in directory/clean, or the files as they are."""
    if not clean_text:
        good = [f for f in files if check_file(f) is None]
        return (lambda: (d.text for d in iter_documents(
            good, cfg.text_field, cfg.id_field, cfg.txt_split, cfg.max_doc_chars))), {}
    log(f"cleaning {len(files)} files into {directory}/clean")
    report = clean(files, os.path.join(directory, "clean"), cfg, workers=workers, log=log)
    if report["docs_out"] == 0:
        dropped = ", ".join(f"{step} {c['docs']}" for step, c in report["steps"].items()
                            if c["docs"]) or "no documents read"
        problems = report.get("problems") or []
        if problems:         # what made the records unreadable: the first few, by line
            more = f" and {len(problems) - 3} more" if len(problems) > 3 else ""
            dropped += f"; malformed: {'; '.join(problems[:3])}{more}"
        raise ValueError(f"no documents left after cleaning {path!r} (removed: {dropped}); "
                         f"see {directory}/clean/report.json")
    sources = [os.path.join(directory, "clean", "clean.jsonl")]
    return (lambda: (d.text for d in iter_documents(sources))), report


def _write_manifest(directory, manifest):
    tmp = os.path.join(directory, "manifest.json.tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(manifest, f, indent=2)
    os.replace(tmp, os.path.join(directory, "manifest.json"))  # written last: "complete"


def _prepared(directory, manifest, cached, tokenizer=None, report=None):
    from ..tokenizer import Tokenizer
    tok_dir = os.path.join(directory, manifest["tokenizer"])
    if tokenizer is None:
        tokenizer = Tokenizer.from_pretrained(tok_dir)
    if report is None and manifest.get("clean_report"):
        with open(os.path.join(directory, manifest["clean_report"]), encoding="utf-8") as f:
            report = json.load(f)
    return PreparedData(directory=directory,
                        train=[os.path.join(directory, p) for p in manifest["train"]],
                        val=[os.path.join(directory, p) for p in manifest["val"]],
                        tokenizer=tokenizer, tokenizer_dir=tok_dir,
                        vocab_size=manifest["vocab_size"],
                        n_train_tokens=manifest["n_train_tokens"],
                        n_val_tokens=manifest["n_val_tokens"], cached=cached,
                        report=report or {}, vocab_note=manifest.get("vocab_note", ""))


def vocabulary_note(tokenizer, asked, given):
    """Why the vocabulary is smaller than asked, or '' when it is not (or was given)."""
    got = tokenizer.vocab_size
    if given or got >= asked:
        return ""
    return (f"vocabulary: {got:,} tokens of the {asked:,} asked. BPE stopped after "
            f"{len(tokenizer.merges):,} merges because no pair of tokens inside a word occurs "
            "twice more in the training text; a larger corpus gives more merges, or ask for "
            f"--vocab-size {got}")
