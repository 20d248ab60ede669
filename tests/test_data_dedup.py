"""Hashing, MinHash/LSH and the dedup indexes; near-duplicate precision and recall."""

import json
import random
import zlib

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tinyroots.data import clean
from tinyroots.data import hashing as H
from tinyroots.data.dedup import HashIndex, HashIndexPy, LineSketch, MinHasher, NearDuplicates
from tinyroots.data.synthetic import chunk_documents, make_corpus, near_copy, shakespeare

needs_fast = pytest.mark.skipif(H._fast is None, reason="Cython extension not built")
DOCS = chunk_documents(shakespeare())


def true_jaccard(a, b, n=5):
    def shingles(t):
        w = H.split_words(t)
        return {tuple(w[i:i + n]) for i in range(len(w) - n + 1)}
    sa, sb = shingles(a), shingles(b)
    return len(sa & sb) / len(sa | sb)


# -- hashes -----------------------------------------------------------------------------------

def test_hash64_is_stable():
    # the same value in every process and on every run (no PYTHONHASHSEED)
    assert H.hash64("hello") == H.hash64(b"hello")
    assert H.hash64("hello") == int.from_bytes(
        __import__("hashlib").blake2b(b"hello", digest_size=8).digest(), "little")
    assert H.hash64("a") != H.hash64("b")


def test_word_and_shingle_hashes():
    assert H.word_hashes(["a", "é"]).tolist() == [zlib.crc32(b"a"), zlib.crc32("é".encode())]
    h = np.array([1, 2, 3, 4], np.uint32)
    assert len(H.shingle_hashes(h, 2)) == 3
    assert len(H.shingle_hashes(h, 9)) == 1  # fewer words than n: one shingle of all
    assert len(H.shingle_hashes(h[:0], 2)) == 0
    # order matters inside a shingle
    assert H.shingle_hashes(np.array([1, 2], np.uint32), 2) != \
        H.shingle_hashes(np.array([2, 1], np.uint32), 2)


def test_minhash_estimates_jaccard():
    a, b = H.minhash_params(256, seed=0)
    doc = DOCS[10]
    copy = near_copy(doc, np.random.default_rng(0), edit_rate=0.02)
    est = H.jaccard(H.minhash_signature_py(doc, 5, a, b), H.minhash_signature_py(copy, 5, a, b))
    assert abs(est - true_jaccard(doc, copy)) < 0.1  # error ~ 1/sqrt(256)
    other = H.minhash_signature_py(DOCS[11], 5, a, b)
    assert H.jaccard(H.minhash_signature_py(doc, 5, a, b), other) < 0.1
    assert H.minhash_signature_py("... !!!", 5, a, b) is None


def test_lsh_bands():
    assert H.lsh_bands(0.8, 128) == (18, 7)
    for threshold in (0.5, 0.7, 0.8, 0.9):
        bands, rows = H.lsh_bands(threshold, 128)
        assert bands * rows <= 128
        assert H.candidate_probability(threshold, bands, rows) >= 0.95
    keys = H.band_keys(np.arange(14, dtype=np.uint32), 2, 7)
    assert len(set(keys)) == 2


@needs_fast
def test_fast_band_keys_match_python():
    rng = np.random.default_rng(0)
    for bands, rows in ((18, 7), (16, 8), (1, 1), (4, 32)):
        sig = rng.integers(0, 2**32, size=128, dtype=np.uint64).astype(np.uint32)
        assert H._fast.band_keys(sig, bands, rows) == H.band_keys_py(sig, bands, rows)


@needs_fast
def test_fast_minhash_matches_python():
    a, b = H.minhash_params(128, seed=3)
    texts = DOCS[:20] + ["", "one", "Two words", "héllo wörld 日本語 😀 _x_ " * 9, "a\ud800b c"]
    for text in texts:
        for n in (1, 3, 5):
            py = H.minhash_signature_py(text, n, a, b)
            fast = H._fast.minhash_signature(text, n, a, b)
            assert (py is None and fast is None) or (py == fast).all(), text[:40]


@needs_fast
@settings(max_examples=150, deadline=None)
@given(st.text(alphabet=st.sampled_from(list("ab Z\n_1é日😀,")), max_size=200), st.integers(1, 6))
def test_fast_minhash_matches_python_random(text, n):
    a, b = H.minhash_params(16, seed=1)
    py, fast = H.minhash_signature_py(text, n, a, b), H._fast.minhash_signature(text, n, a, b)
    assert (py is None and fast is None) or (py == fast).all()


# -- indexes ---------------------------------------------------------------------------------

@pytest.mark.parametrize("cls", [HashIndexPy, HashIndex])
def test_hash_index(cls):
    idx = cls(capacity=4)
    rng = random.Random(0)
    keys = [rng.getrandbits(64) & ~1 for _ in range(5000)] + [0, 2, 2**64 - 2]
    for i, k in enumerate(keys):
        assert idx.setdefault(k, i) == i
    assert len(idx) == len(keys)
    # subtle, and documented: keys that differ only in the lowest bit are one key
    assert idx.setdefault(1, -1) == idx.get(0) == 5000
    for i, k in enumerate(keys):
        assert idx.get(k) == i and idx.setdefault(k, -1) == i
    assert idx.get(12345) is None and idx.get(12345, "x") == "x"
    assert idx.nbytes() <= 16 * 4 * len(keys)  # at most half full... and at least a quarter


def test_line_sketch_never_undercounts():
    sk = LineSketch(width=1 << 8, depth=4, seed=0)  # tiny: many collisions
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, size=2000, dtype=np.uint64)
    counts = rng.integers(1, 5, size=2000)
    sk.add(np.repeat(hashes, counts))
    assert (sk.estimate(hashes) >= counts).all()
    big = LineSketch(width=1 << 16, depth=4, seed=0)
    big.add(np.repeat(hashes, counts))
    assert (big.estimate(hashes) == counts).mean() > 0.95  # roomy: nearly exact


def test_near_duplicates_first_copy_wins():
    hasher = MinHasher(threshold=0.8, num_perm=128, shingle_words=5, seed=0)
    nd = NearDuplicates(0.8, 128)
    rng = np.random.default_rng(0)
    assert nd.add(*hasher(DOCS[0])) is False
    assert nd.add(*hasher(near_copy(DOCS[0], rng, 0.005))) is True
    assert nd.add(*hasher(DOCS[1])) is False
    assert nd.add(*hasher("")) is False  # no words: never a duplicate
    assert nd.add(*hasher("")) is False
    nd.close()


# -- the whole cleaning run: planted duplicates -------------------------------------------------

def test_exact_and_near_dedup_precision_recall(tmp_path):
    docs, truth = make_corpus(n_docs=400, seed=7, source="chunks", exact_rate=0.05,
                              near_rate=0.15, noise_rate=0.0)
    path = tmp_path / "corpus.jsonl"
    path.write_text("".join(json.dumps(d) + "\n" for d in docs), encoding="utf-8")
    clean([str(path)], str(tmp_path / "out"), keep_rejected=10_000)

    def dropped(reason):
        p = tmp_path / "out" / "rejected" / f"{reason}.jsonl"
        return {json.loads(line)["id"] for line in open(p, encoding="utf-8")}

    # planted near copies really are near: 0.8 <= J < 1 for most of them
    by_id = {d["id"]: d["text"] for d in docs}
    js = [true_jaccard(by_id[c], by_id[o]) for c, o in truth["near_of"].items()]
    assert np.median(js) > 0.8 and max(js) < 1

    assert dropped("exact_dup") == set(truth["exact_dup"])
    near, planted = dropped("near_dup"), set(truth["near_dup"])
    precision = len(near & planted) / len(near)
    recall = len(near & planted) / len(planted)
    print(f"near-dup precision {precision:.3f} recall {recall:.3f} "
          f"({len(planted)} planted, {len(near)} found)")
    assert precision >= 0.9 and recall >= 0.9
