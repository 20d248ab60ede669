"""prepare(): clean -> tokenizer -> shards, cached by content; the CLI's prepare/tokenize/info."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyroots.data import DataLoader, open_shard, prepare
from tinyroots.data.normalize import normalize_text
from tinyroots.data.pipeline import EOT, VAL_FRACTION, VOCAB_SIZE, ValSplit
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
    to_val = ValSplit(0.1)
    val_docs = [to_val(len(d)) for d in docs]
    assert (train == eot).sum() + (val == eot).sum() == len(docs)
    assert (val == eot).sum() == sum(val_docs) and 0 < sum(val_docs) < len(docs)
    assert train[0] == eot
    # the split is by tokens: 10% of them, whole documents first, then the tail of train
    assert abs(len(val) / (len(train) + len(val)) - 0.1) < 0.01
    # decoding the stream gives the documents back, eot between them (train's last tokens may
    # have gone to val)
    text = data.tokenizer.decode(train.tolist())
    joined = "".join(EOT + d for d, v in zip(docs, val_docs) if not v)
    assert joined.startswith(text) and len(text) > 0.95 * len(joined)
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


def test_small_corpus_gets_the_val_fraction_by_tokens(tmp_path):
    """Eight documents and val_fraction 0.1: 10% of the tokens go to val (the tail of the last
    document), not one document in eight (12.5%) or none."""
    path = tmp_path / "eight.jsonl"
    path.write_text("".join(json.dumps({"text": d}) + "\n" for d in DOCS[:8]), encoding="utf-8")
    data = prepare(str(path), str(tmp_path / "c"), vocab_size=300, val_fraction=0.1,
                   verbose=False)
    total = data.n_train_tokens + data.n_val_tokens
    assert data.n_val_tokens == round(0.1 * total)
    val = np.concatenate([open_shard(p) for p in data.val])
    assert (val == data.tokenizer.eot_token_id).sum() == 0  # a piece of a document


def test_vocabulary_smaller_than_asked_is_reported(tmp_path):
    path = tmp_path / "small.txt"
    path.write_text(DOCS[0], encoding="utf-8")
    data = prepare(str(path), str(tmp_path / "c"), vocab_size=8192, verbose=False)
    assert data.vocab_size < 8192
    assert f"{data.vocab_size:,} tokens of the 8,192 asked" in data.vocab_note
    assert "no pair of tokens inside a word occurs twice" in data.vocab_note
    res = subprocess.run([sys.executable, "-m", "tinyroots.data", "prepare", str(path),
                          "--cache-dir", str(tmp_path / "c2"), "--vocab-size", "8192"],
                         cwd=ROOT, capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    summary = json.loads(res.stdout)
    assert summary["vocab_size_asked"] == 8192 and "8,192 asked" in summary["vocab_note"]
    assert "8,192 asked" in res.stderr  # and in the log


def test_prepare_and_train_share_defaults():
    from tinyroots.data.__main__ import build_parser
    from tinyroots.train import TrainConfig
    args = build_parser().parse_args(["prepare", "x", "--cache-dir", "c"])
    assert (args.val_fraction, args.vocab_size) == (VAL_FRACTION, VOCAB_SIZE)
    assert (TrainConfig().val_fraction, TrainConfig().vocab_size) == (VAL_FRACTION, VOCAB_SIZE)


def test_every_data_option_has_help_and_a_default():
    from tinyroots.data.__main__ import build_parser
    sub = build_parser()._subparsers._group_actions[0].choices
    for name, parser in sub.items():
        for action in parser._actions:
            if action.dest in ("help", "inputs", "shards") or action.required:
                continue
            assert action.help and "default" in action.help, (name, action.dest, action.help)
