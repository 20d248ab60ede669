"""Deduplication state: exact document hashes, MinHash LSH for near duplicates, and a
count-min sketch that finds boilerplate lines.

Everything here lives in the main process and sees documents in corpus order; the expensive
per-document work (hashing, signatures) happens in the workers before. The first copy of a
document wins, so the result never depends on the number of workers.

Memory: the text streams through. What stays in memory is the HashIndex tables, 32-64 bytes
a key (16-byte slots, a quarter to half full): one key per document for exact dedup and one per
LSH band (18 with the defaults) for near dedup, so about 0.6-1.2 KB per document with near dedup
on and 32-64 bytes with it off. The MinHash signatures go to a temporary file on disk, and the
line sketch has a fixed size (32 MB by default).
"""

import os
import tempfile
from array import array

import numpy as np

from ._native import fast as _fast
from .hashing import band_keys, jaccard, lsh_bands, minhash_params, minhash_signature


# --------------------------------------------------------------------------------------------
# a compact hash map for 64-bit keys

class HashIndexPy:
    """Map 64-bit integer keys to integer values, in two flat arrays (open addressing).

    Why not a dict: a dict entry holding two Python ints costs about 100 bytes; a slot here
    costs 16, and the table stays at most half full. Keys are hashes already, so their bits
    are uniform and can pick the slot directly.

    >>> idx = HashIndexPy()
    >>> idx.setdefault(2**63 + 5, 7), idx.setdefault(2**63 + 5, 8), idx.get(42)
    (7, 7, None)
    """

    def __init__(self, capacity=1024):
        assert capacity & (capacity - 1) == 0, "capacity must be a power of two"
        self._keys = array("Q", bytes(8 * capacity))  # 0 marks an empty slot
        self._values = array("q", bytes(8 * capacity))
        self._count = 0

    def __len__(self):
        return self._count

    @staticmethod
    def _stored(key):
        # subtle: 0 means "empty", so every stored key gets its low bit set; two keys that
        # differ only in that bit count as one (a 1 in 2**63 chance for hashes).
        return (key | 1) & 0xFFFFFFFFFFFFFFFF

    def _find(self, stored):
        keys = self._keys
        mask = len(keys) - 1
        i = (stored >> 1) & mask
        while True:
            k = keys[i]
            if k == 0 or k == stored:
                return i
            i = (i + 1) & mask  # linear probing: try the next slot

    def get(self, key, default=None):
        """The value stored for key, or default."""
        stored = self._stored(key)
        i = self._find(stored)
        return self._values[i] if self._keys[i] == stored else default

    def setdefault(self, key, value):
        """Like dict.setdefault: the existing value, or store value and return it."""
        stored = self._stored(key)
        i = self._find(stored)
        if self._keys[i] == stored:
            return self._values[i]
        self._keys[i] = stored
        self._values[i] = value
        self._count += 1
        if 2 * self._count > len(self._keys):
            self._grow()
        return value

    def _grow(self):
        old_keys, old_values = self._keys, self._values
        self._keys = array("Q", bytes(16 * len(old_keys)))
        self._values = array("q", bytes(16 * len(old_keys)))
        for k, v in zip(old_keys, old_values):
            if k:
                i = self._find(k)
                self._keys[i] = k
                self._values[i] = v

    def nbytes(self):
        """Memory held by the table."""
        return len(self._keys) * 16


# HashIndexPy's twin in _hashing.pyx when it was built: same table, same probing, ~30x faster.
HashIndex = _fast.HashIndex if _fast is not None else HashIndexPy


# --------------------------------------------------------------------------------------------
# near duplicates: MinHash + LSH, candidates verified

class SignatureStore:
    """Append-only MinHash signatures in a temporary file, read back by row number.

    Only candidate pairs are read back, so the signatures need not sit in memory.
    """

    def __init__(self, num_perm, directory=None):
        self.row_bytes = 4 * num_perm
        self._file = tempfile.TemporaryFile(prefix="tinyroots-minhash-", dir=directory)
        self._rows = 0

    def append(self, sig):
        """Store a signature (uint32 array, or its little-endian bytes); returns its row."""
        self._file.seek(0, os.SEEK_END)
        self._file.write(sig if isinstance(sig, bytes) else np.asarray(sig, "<u4").tobytes())
        self._rows += 1
        return self._rows - 1

    def __getitem__(self, row):
        self._file.seek(row * self.row_bytes)
        return np.frombuffer(self._file.read(self.row_bytes), "<u4")

    def __len__(self):
        return self._rows

    def close(self):
        self._file.close()


class MinHasher:
    """The per-document half of near dedup: text -> (MinHash signature, LSH band keys).

    A pure function of the text and the settings, so worker processes each build their own.
    """

    def __init__(self, threshold=0.8, num_perm=128, shingle_words=5, seed=1337):
        self.shingle_words = shingle_words
        self.a, self.b = minhash_params(num_perm, seed)
        self.bands, self.rows = lsh_bands(threshold, num_perm)

    def __call__(self, text):
        """(signature, band keys); (None, []) for a text without words."""
        sig = minhash_signature(text, self.shingle_words, self.a, self.b)
        if sig is None:
            return None, []
        return sig, band_keys(sig, self.bands, self.rows)


class NearDuplicates:
    """The corpus-wide half: is this signature >= threshold similar to an earlier document?

    Each signature is cut into bands of rows values; two documents that agree on a whole band
    become candidates (lsh_bands picks the shape so a pair at the threshold is found 95% of
    the time). A candidate counts as a duplicate only when the signatures' estimated Jaccard
    reaches the threshold, so a chance band match costs a comparison, not a document.

    >>> hasher = MinHasher(threshold=0.8, num_perm=64, shingle_words=3, seed=0)
    >>> nd = NearDuplicates(0.8, num_perm=64)
    >>> text = "the quick brown fox jumps over the lazy dog " * 3
    >>> nd.add(*hasher(text)), nd.add(*hasher(text + "again")), nd.add(*hasher("other words"))
    (False, True, False)
    """

    def __init__(self, threshold=0.8, num_perm=128, directory=None):
        self.threshold = threshold
        self.index = HashIndex()
        self.store = SignatureStore(num_perm, directory)

    def add(self, sig, keys):
        """True if sig is a near duplicate of a document added before; else remember it.

        sig: a uint32 signature, or its little-endian bytes (as scan_document sends it).
        """
        if sig is None:
            return False
        checked = set()
        for key in keys:
            row = self.index.get(key)
            if row is not None and row not in checked:
                checked.add(row)
                mine = np.frombuffer(sig, "<u4") if isinstance(sig, bytes) else sig
                if jaccard(mine, self.store[row]) >= self.threshold:
                    return True
        row = self.store.append(sig)
        for key in keys:
            self.index.setdefault(key, row)  # the first document in a bucket stays its witness
        return False

    def close(self):
        self.store.close()


# --------------------------------------------------------------------------------------------
# boilerplate lines: count in how many documents each line appears

class LineSketch:
    """Count-min sketch: approximate counts for any number of distinct lines in fixed memory.

    depth rows of width counters; a line adds 1 to one counter per row (each row hashes it
    differently), and its estimated count is the smallest of its depth counters. Collisions can
    only add, so the estimate is never below the truth and rarely far above it while the number
    of distinct lines stays well under width.

    >>> sk = LineSketch(width=1024, depth=4)
    >>> sk.add(np.array([7, 7, 9], np.uint64))
    >>> sk.estimate(np.array([7, 9, 11], np.uint64)).tolist()
    [2, 1, 0]
    """

    def __init__(self, width=1 << 21, depth=4, seed=1337):
        assert width & (width - 1) == 0, "width must be a power of two"
        self.table = np.zeros((depth, width), np.uint32)
        self.shift = np.uint64(64 - (width.bit_length() - 1))
        rng = np.random.default_rng(seed)
        self.mult = rng.integers(0, 2**64, size=depth, dtype=np.uint64) | np.uint64(1)

    def _columns(self, hashes):
        # multiply-shift: the top bits of h * odd_constant pick the counter, one constant a row
        return (hashes[None, :] * self.mult[:, None]) >> self.shift  # (depth, n)

    def add(self, hashes):
        cols = self._columns(np.asarray(hashes, np.uint64))
        for r in range(len(self.table)):
            # subtle: table[r][cols] += 1 would add once for a column listed twice; count the
            # repeats first (np.add.at does the same, but is ~10x slower).
            unique, counts = np.unique(cols[r], return_counts=True)
            self.table[r][unique] += counts.astype(np.uint32)

    def estimate(self, hashes):
        cols = self._columns(np.asarray(hashes, np.uint64))
        return np.min([self.table[r][cols[r]] for r in range(len(self.table))], axis=0)
