"""Stable hashes and MinHash signatures for deduplication.

Python's built-in ``hash()`` of a string changes from one process to the next
(``PYTHONHASHSEED``), so nothing here uses it: worker processes and a rerun tomorrow must agree.

* ``hash64``: a 64-bit BLAKE2b digest, for whole documents (lines use cleaning.line_key).
* ``minhash_signature``: the MinHash of a document's word shingles. Two documents whose shingle
  sets have Jaccard similarity J agree in each signature position with probability J, so
  comparing signatures estimates J without comparing texts.
* ``lsh_bands``: how to cut a signature into bands for locality-sensitive hashing.

The loops here have a Cython twin in ``_hashing.pyx`` (built when a compiler is present); the
tests check that both give identical signatures. ``TINYROOTS_BACKEND=numpy`` forces this file.
"""

import hashlib
import zlib

import numpy as np

from ._native import fast as _fast
from .normalize import split_words

MASK32 = 0xFFFFFFFF
# Multiplier that folds n word hashes into one shingle hash (the 64-bit FNV prime).
SHINGLE_PRIME = 0x100000001B3


def hash64(data):
    """A stable 64-bit hash of a str (as UTF-8) or bytes.

    >>> hash64("hello") == hash64(b"hello")
    True
    """
    if isinstance(data, str):
        data = data.encode("utf-8")
    return int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")


# --------------------------------------------------------------------------------------------
# shingles: every run of n consecutive words, as one 32-bit number

def word_hashes(words):
    """CRC-32 of each word's UTF-8 bytes, as uint32.

    >>> word_hashes(["a", "b"]).tolist() == [zlib.crc32(b"a"), zlib.crc32(b"b")]
    True
    """
    return np.fromiter((zlib.crc32(w.encode("utf-8")) for w in words), np.uint64,
                       count=len(words)).astype(np.uint32)


def shingle_hashes(hashes, n):
    """Fold every window of n word hashes into one 32-bit shingle hash.

    s = ((h[i] * P + h[i+1]) * P + ...) mod 2**64, then its two halves are xor-ed together.
    A text with fewer than n words is one shingle of all its words; no words, no shingles.

    >>> shingle_hashes(np.array([1, 2, 3], np.uint32), 2).shape
    (2,)
    """
    hashes = np.asarray(hashes, np.uint64)
    if len(hashes) == 0:
        return np.zeros(0, np.uint32)
    n = min(n, len(hashes))
    m = len(hashes) - n + 1
    s = np.zeros(m, np.uint64)
    for j in range(n):
        s = s * np.uint64(SHINGLE_PRIME) + hashes[j:j + m]  # uint64 wraps: that is the mod 2**64
    return ((s >> np.uint64(32)) ^ (s & np.uint64(MASK32))).astype(np.uint32)


# --------------------------------------------------------------------------------------------
# MinHash

def minhash_params(num_perm, seed):
    """The num_perm random hash functions h_k(x) = ((a_k * x + b_k) mod 2**64) >> 32.

    This "multiply-add-shift" family is 2-independent for 32-bit x when a, b are random 64-bit
    numbers, which is all MinHash needs. Returned as two uint64 arrays (a, b); a is odd.
    """
    rng = np.random.default_rng(seed)
    a = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False) | np.uint64(1)
    b = rng.integers(0, 2**64, size=num_perm, dtype=np.uint64, endpoint=False)
    return a, b


def minhash_signature_py(text, n, a, b):
    """MinHash signature (uint32, one value per hash function) of the text's word n-grams.

    For each hash function k the signature keeps min over shingles x of h_k(x). Returns None
    when the text has no words (it then has no shingles and cannot be compared).

    >>> a, b = minhash_params(4, seed=0)
    >>> sig = minhash_signature_py("to be or not to be", 2, a, b)
    >>> sig.dtype, sig.shape
    (dtype('uint32'), (4,))
    >>> bool((sig == minhash_signature_py("TO be, or not to be!", 2, a, b)).all())
    True
    """
    x = shingle_hashes(word_hashes(split_words(text)), n)
    if len(x) == 0:
        return None
    sig = np.full(len(a), MASK32, np.uint64)
    x = x.astype(np.uint64)
    # subtle: a (num_perm, m) table can be large for a long document; take shingles in blocks.
    for i in range(0, len(x), 2048):
        block = x[None, i:i + 2048]
        h = (a[:, None] * block + b[:, None]) >> np.uint64(32)  # (num_perm, block)
        np.minimum(sig, h.min(axis=1), out=sig)
    return sig.astype(np.uint32)


def minhash_signature(text, n, a, b):
    """minhash_signature_py, in Cython when it was built (same result, about 5x faster)."""
    if _fast is not None:
        return _fast.minhash_signature(text, n, a, b)
    return minhash_signature_py(text, n, a, b)


def jaccard(sig1, sig2):
    """Estimated Jaccard similarity of two MinHash signatures: the fraction that agree.

    >>> jaccard(np.array([1, 2, 3, 4]), np.array([1, 2, 0, 0]))
    0.5
    """
    return float(np.mean(sig1 == sig2))


# --------------------------------------------------------------------------------------------
# locality-sensitive hashing

def candidate_probability(j, bands, rows):
    """Chance that two documents of Jaccard j share at least one band: 1 - (1 - j**r)**b.

    >>> round(candidate_probability(0.8, 16, 8), 3)
    0.947
    """
    return 1.0 - (1.0 - j ** rows) ** bands


def lsh_bands(threshold, num_perm, recall=0.95):
    """(bands, rows): the most rows per band that still find a pair at `threshold` with
    probability >= recall.

    More rows per band means fewer chance candidates (each one costs a signature comparison);
    too many and real near-duplicates slip through. Candidates are then checked against the
    threshold, so this only trades speed for recall.

    >>> lsh_bands(0.8, 128)
    (18, 7)
    """
    for rows in range(num_perm, 0, -1):
        bands = num_perm // rows
        if candidate_probability(threshold, bands, rows) >= recall:
            return bands, rows
    return num_perm, 1


def band_keys_py(sig, bands, rows):
    """One 64-bit key per band: the band's values folded together with its index.

    k = (band index + 1) * C; then for each value v of the band: k = (k ^ v) * P; and a final
    mix so that every bit of k depends on every value. Equal bands give equal keys; two
    different bands share a key by chance about once in 2**64.

    >>> len(set(band_keys_py(np.arange(8, dtype=np.uint32), 4, 2)))
    4
    """
    v = np.asarray(sig[:bands * rows], np.uint64).reshape(bands, rows)
    # subtle: the band index is part of the key, so band 0 of one document never matches
    # band 5 of another that happens to hold the same values.
    k = (np.arange(1, bands + 1, dtype=np.uint64) * np.uint64(0x9E3779B97F4A7C15))
    for j in range(rows):
        k = (k ^ v[:, j]) * np.uint64(SHINGLE_PRIME)  # uint64 wraps: mod 2**64
    k ^= k >> np.uint64(31)
    k *= np.uint64(0xBF58476D1CE4E5B9)
    k ^= k >> np.uint64(29)
    return k.tolist()


def band_keys(sig, bands, rows):
    """band_keys_py, in Cython when it was built (same keys)."""
    if _fast is not None:
        return _fast.band_keys(np.ascontiguousarray(sig, np.uint32), bands, rows)
    return band_keys_py(sig, bands, rows)
