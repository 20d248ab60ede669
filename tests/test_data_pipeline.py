"""prepare(): clean -> tokenizer -> shards, cached by content; the CLI's prepare/tokenize/info."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyroots.data import DataLoader, open_shard, prepare
from tinyroots.data.normalize import normalize_text
from tinyroots.data.pipeline import EOT, is_val
from tinyroots.data.synthetic import chunk_documents, shakespeare

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
DOCS = chunk_documents(shakespeare())


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    root.mkdir()
    docs = DOCS[:60] + [f"This document quotes the token {EOT} inside its text. " + DOCS[60]]
    with open(root / "docs.jsonl", "w", encoding="utf-8") as f:
        for i, d in enumerate(docs):
            f.write(json.dumps({"text": d, "id": i}) + "\n")
    return root, docs


def test_prepare_end_to_end_and_cache(corpus, tmp_path):
    root, docs = corpus
    docs = [normalize_text(d) for d in docs]  # what cleaning does to these documents
    cache = tmp_path / "cache"
    data = prepare(str(root), str(cache), vocab_size=300, val_fraction=0.1, verbose=False)
    assert not data.cached and data.vocab_size == 300
    assert data.tokenizer.eot_token_id is not None
    eot = data.tokenizer.eot_token_id
    train = np.concatenate([open_shard(p) for p in data.train])
    val = np.concatenate([open_shard(p) for p in data.val])
    assert len(train) == data.n_train_tokens and len(val) == data.n_val_tokens > 0
    # every document starts with eot: one eot per document, none from the quoted text
    n_val_docs = sum(is_val(d, 0.1) for d in docs)
    assert (train == eot).sum() + (val == eot).sum() == len(docs)
    assert (val == eot).sum() == n_val_docs and 0 < n_val_docs < len(docs)
    assert train[0] == eot
    # decoding the stream gives the documents back, eot between them
    text = data.tokenizer.decode(train.tolist())
    train_docs = [d for d in docs if not is_val(d, 0.1)]
    assert text == "".join(EOT + d for d in train_docs)
    assert data.report["docs_out"] == len(docs)

    again = prepare(str(root), str(cache), vocab_size=300, val_fraction=0.1, verbose=False)
    assert again.cached and again.train == data.train and again.directory == data.directory
    assert again.tokenizer.encode("To be") == data.tokenizer.encode("To be")
    # any change to a byte of the input or to a setting is a new key
    other = prepare(str(root), str(cache), vocab_size=280, val_fraction=0.1, verbose=False)
    assert not other.cached and other.directory != data.directory
    with open(root / "docs.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"text": DOCS[70]}) + "\n")
    changed = prepare(str(root), str(cache), vocab_size=300, val_fraction=0.1, verbose=False)
    assert not changed.cached and changed.directory != data.directory

    loader = DataLoader(data.train, batch_size=2, block_size=16, seed=0)
    x, y = loader.next_batch()
    assert x.shape == (2, 16) and x.max() < data.vocab_size


def test_prepare_small_corpus_still_gets_val_and_damaged_cache_rebuilds(tmp_path):
    path = tmp_path / "one.txt"
    path.write_text(DOCS[0] + "\n\n" + DOCS[1], encoding="utf-8")  # one document
    data = prepare(str(path), str(tmp_path / "c"), vocab_size=270, val_fraction=0.1,
                   verbose=False)
    assert data.n_val_tokens > 0 and data.n_train_tokens > 8 * data.n_val_tokens
    # a damaged shard makes the cache entry invalid: it is rebuilt, not trusted
    with open(data.train[0], "r+b") as f:
        f.truncate(100)
    again = prepare(str(path), str(tmp_path / "c"), vocab_size=270, val_fraction=0.1,
                    verbose=False)
    assert not again.cached and again.n_train_tokens == data.n_train_tokens


def test_prepare_with_given_tokenizer_and_no_cleaning(corpus, tmp_path):
    root, docs = corpus
    first = prepare(str(root), str(tmp_path / "a"), vocab_size=300, verbose=False)
    data = prepare(str(root), str(tmp_path / "b"), tokenizer=first.tokenizer_dir,
                   clean_text=False, verbose=False)
    assert data.vocab_size == 300 and data.report == {}
    # the same documents, only not normalised (a few trailing spaces more)
    total, first_total = data.n_train_tokens + data.n_val_tokens, \
        first.n_train_tokens + first.n_val_tokens
    assert first_total <= total < first_total * 1.01


def test_cli_prepare_tokenize_info(corpus, tmp_path):
    root, _ = corpus
    run = lambda *a: subprocess.run([sys.executable, "-m", "tinyroots.data", *a], cwd=ROOT,  # noqa
                                    capture_output=True, text=True)
    res = run("prepare", str(root), "--cache-dir", str(tmp_path / "c"), "--vocab-size", "300",
              "--min-words", "10")
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["vocab_size"] == 300 and summary["train"] and not summary["cached"]
    res = run("tokenize", str(root), "-o", str(tmp_path / "t"), "--tokenizer",
              summary["tokenizer_dir"])
    assert res.returncode == 0, res.stderr
    res = run("info", str(tmp_path / "t"))
    assert res.returncode == 0 and "uint16, vocab_size 300" in res.stdout
