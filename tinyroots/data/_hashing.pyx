# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Cython twins of the hot loops in hashing.py and filters.py.

Each function here returns exactly what its ``*_py`` twin returns (tests/test_data_hashing.py
checks this); read the Python version first, it is the specification. What changes is only
where the work happens: words, shingles and n-grams are hashed in one pass over the string's
code points, with no Python string object made for each one.
"""

from cpython.unicode cimport Py_UNICODE_ISALNUM, Py_UNICODE_ISALPHA, Py_UNICODE_ISSPACE
from libc.math cimport sqrt
from libc.stdint cimport uint32_t, uint64_t
from libcpp.algorithm cimport nth_element, sort
from libcpp.vector cimport vector

import numpy as np

cdef uint32_t CRC_TABLE[256]
cdef uint64_t SHINGLE_PRIME = 0x100000001B3ULL
cdef uint64_t GRAM_BASE = 0x9E3779B97F4A7C15ULL  # odd: multiplication by it is invertible


cdef void _init_crc_table() noexcept:
    # The standard reflected CRC-32 (polynomial 0xEDB88320): the one zlib.crc32 computes.
    cdef uint32_t c
    cdef int i, k
    for i in range(256):
        c = i
        for k in range(8):
            c = (0xEDB88320 ^ (c >> 1)) if (c & 1) else (c >> 1)
        CRC_TABLE[i] = c


_init_crc_table()


cdef inline uint32_t _crc_byte(uint32_t crc, uint32_t byte) noexcept nogil:
    return CRC_TABLE[(crc ^ byte) & 0xFF] ^ (crc >> 8)


cdef inline uint32_t _crc_codepoint(uint32_t crc, uint32_t c) noexcept nogil:
    # Feed the code point's UTF-8 bytes: crc32(word.encode("utf-8")) without the bytes object.
    if c < 0x80:
        return _crc_byte(crc, c)
    if c < 0x800:
        crc = _crc_byte(crc, 0xC0 | (c >> 6))
    elif c < 0x10000:
        crc = _crc_byte(crc, 0xE0 | (c >> 12))
        crc = _crc_byte(crc, 0x80 | ((c >> 6) & 0x3F))
    else:
        crc = _crc_byte(crc, 0xF0 | (c >> 18))
        crc = _crc_byte(crc, 0x80 | ((c >> 12) & 0x3F))
        crc = _crc_byte(crc, 0x80 | ((c >> 6) & 0x3F))
    return _crc_byte(crc, 0x80 | (c & 0x3F))


cdef inline bint _is_word(Py_UCS4 c) noexcept:
    # Python's \\w: str.isalnum() or "_". Py_UNICODE_ISALNUM is four calls into the Unicode
    # database; ASCII, most of any corpus, gets a plain comparison instead.
    if c < 128:
        return (u'a' <= c <= u'z') or (u'A' <= c <= u'Z') or (u'0' <= c <= u'9') or c == u'_'
    return Py_UNICODE_ISALNUM(c)


cdef void _word_crcs(str text, vector[uint32_t]& out):
    """crc32 of each \\w+ run of text (already lowercased): hashing.word_hashes(split_words)."""
    cdef Py_UCS4 c
    cdef bint in_word = False
    cdef uint32_t crc = 0
    for c in text:
        if _is_word(c):
            if not in_word:
                crc = 0xFFFFFFFF
                in_word = True
            crc = _crc_codepoint(crc, <uint32_t>c)
        elif in_word:
            out.push_back(crc ^ 0xFFFFFFFF)
            in_word = False
    if in_word:
        out.push_back(crc ^ 0xFFFFFFFF)


def minhash_signature(str text, int n, const uint64_t[::1] a, const uint64_t[::1] b):
    """hashing.minhash_signature_py: uint32 signature of the word n-gram shingles, or None."""
    cdef vector[uint32_t] words
    _word_crcs(text.lower(), words)
    cdef Py_ssize_t nw = words.size()
    if nw == 0:
        return None
    if n > nw:
        n = <int>nw
    cdef Py_ssize_t m = nw - n + 1, i, j, k
    cdef Py_ssize_t num_perm = a.shape[0]
    cdef vector[uint64_t] shingles
    shingles.resize(m)
    cdef uint64_t s, h
    for i in range(m):
        s = 0
        for j in range(n):
            s = s * SHINGLE_PRIME + words[i + j]
        shingles[i] = ((s >> 32) ^ (s & 0xFFFFFFFFULL))
    sig_arr = np.empty(num_perm, np.uint32)
    cdef uint32_t[::1] sig = sig_arr
    cdef uint64_t mn, ak, bk
    with nogil:
        for k in range(num_perm):
            ak = a[k]
            bk = b[k]
            mn = 0xFFFFFFFFULL
            for i in range(m):
                h = (ak * shingles[i] + bk) >> 32
                if h < mn:
                    mn = h
            sig[k] = <uint32_t>mn
    return sig_arr


cdef Py_ssize_t _isqrt(Py_ssize_t x) noexcept nogil:
    cdef Py_ssize_t r = <Py_ssize_t>sqrt(<double>x)
    while r * r > x:
        r -= 1
    while (r + 1) * (r + 1) <= x:
        r += 1
    return r


cdef void _run_lengths(vector[uint64_t]& keys, vector[Py_ssize_t]& runs) noexcept nogil:
    """Sort keys and collect how many times each distinct key occurs."""
    sort(keys.begin(), keys.end())
    cdef Py_ssize_t i = 0, j, n = keys.size()
    while i < n:
        j = i + 1
        while j < n and keys[j] == keys[i]:
            j += 1
        runs.push_back(j - i)
        i = j


def char_repetition_ratio(str text, int n):
    """filters.char_repetition_ratio_py, with each n-gram a 64-bit rolling hash, not a string,
    counted in an open-addressing table instead of a dict."""
    cdef Py_ssize_t length = len(text), i, j, k, cap, slot, distinct = 0, total
    if n <= 0 or length < n:
        return 0.0
    total = length - n + 1
    cdef int shift = 60
    cap = 16
    while cap < 2 * total:
        cap *= 2
        shift -= 1
    cdef vector[uint64_t] cps
    cps.reserve(length)
    cdef Py_UCS4 c
    for c in text:
        cps.push_back(<uint64_t>c)
    cdef vector[uint64_t] keys
    cdef vector[Py_ssize_t] counts
    keys.resize(cap, 0)
    counts.resize(cap, 0)
    cdef uint64_t h = 0, top = 1, key
    cdef double acc = 0
    with nogil:
        # h = sum cps[i+j] * BASE**(n-1-j) mod 2**64, rolled one character at a time.
        for j in range(n - 1):
            top *= GRAM_BASE
        for i in range(total):
            if i == 0:
                for j in range(n):
                    h = h * GRAM_BASE + cps[j]
            else:
                h = (h - cps[i - 1] * top) * GRAM_BASE + cps[i + n - 1]
            key = h
            slot = <Py_ssize_t>((key * 0x9E3779B97F4A7C15ULL) >> shift)
            # a zero count marks an empty slot (so any key value, 0 included, can be stored)
            while counts[slot] != 0 and keys[slot] != key:
                slot = (slot + 1) & (cap - 1)
            if counts[slot] == 0:
                keys[slot] = key
                distinct += 1
            counts[slot] += 1
        # the k largest counts, k = isqrt(distinct)
        k = _isqrt(distinct)
        j = 0
        for i in range(cap):
            if counts[i]:
                counts[j] = counts[i]
                j += 1
        counts.resize(distinct)
    # the k largest counts end up (in any order) in the last k places: no full sort needed
    nth_element(counts.begin(), counts.begin() + (distinct - k), counts.end())
    for j in range(distinct - k, distinct):
        acc += counts[j]
    return acc / total


def word_repetition_ratio(list words, int n):
    """filters.word_repetition_ratio_py, with each word n-gram a 64-bit hash, not a string."""
    cdef Py_ssize_t nw = len(words), i, j, m
    if n <= 0 or nw < n:
        return 0.0
    cdef vector[uint64_t] wh
    wh.reserve(nw)
    cdef uint64_t h
    cdef Py_UCS4 c
    cdef str w
    for w in words:
        h = 0xCBF29CE484222325ULL  # FNV-1a over code points, then the length
        for c in w:
            h = (h ^ <uint64_t>c) * SHINGLE_PRIME
        wh.push_back((h ^ <uint64_t>len(w)) * GRAM_BASE)
    cdef vector[uint64_t] grams
    cdef vector[Py_ssize_t] runs
    cdef Py_ssize_t repeated = 0
    with nogil:
        m = nw - n + 1
        for i in range(m):
            h = 0
            for j in range(n):
                h = (h * GRAM_BASE) ^ wh[i + j]
                h ^= h >> 29
            grams.push_back(h)
        _run_lengths(grams, runs)
        for i in range(<Py_ssize_t>runs.size()):
            if runs[i] > 1:
                repeated += runs[i]
    return repeated / <double>m


def count_letters(str text):
    """filters.count_letters_py: how many code points are letters (str.isalpha)."""
    cdef Py_ssize_t n = 0
    cdef Py_UCS4 c
    for c in text:
        if c < 128:
            n += (u'a' <= c <= u'z') or (u'A' <= c <= u'Z')
        elif Py_UNICODE_ISALPHA(c):
            n += 1
    return n


# --------------------------------------------------------------------------------------------
# clean.line_keys_py

def line_keys(str text, Py_ssize_t min_chars):
    """clean.line_keys_py: for each line, (UTF-8 length << 32) | crc32 of the stripped line,
    or 0 when it is shorter than min_chars characters."""
    cdef Py_ssize_t n = len(text), i, start = 0, s, e, j, nbytes, line = 0
    cdef Py_ssize_t n_lines = text.count("\n") + 1
    out_arr = np.zeros(n_lines, np.uint64)
    cdef uint64_t[::1] out = out_arr
    cdef uint32_t crc, u
    cdef Py_UCS4 c
    for i in range(n + 1):
        if i < n and text[i] != u'\n':
            continue
        s, e = start, i
        while s < e and Py_UNICODE_ISSPACE(text[s]):
            s += 1
        while e > s and Py_UNICODE_ISSPACE(text[e - 1]):
            e -= 1
        if e - s >= min_chars:
            crc = 0xFFFFFFFF
            nbytes = 0
            for j in range(s, e):
                u = <uint32_t>text[j]
                crc = _crc_codepoint(crc, u)
                nbytes += 1 if u < 0x80 else 2 if u < 0x800 else 3 if u < 0x10000 else 4
            out[line] = (<uint64_t>nbytes << 32) | (crc ^ 0xFFFFFFFF)
        line += 1
        start = i + 1
    return out_arr


# --------------------------------------------------------------------------------------------
# dedup.HashIndexPy

from cpython.mem cimport PyMem_Calloc, PyMem_Free
from libc.stdint cimport int64_t


cdef class HashIndex:
    """dedup.HashIndexPy in C arrays: the same table, the same probing, ~30x faster."""
    cdef uint64_t* keys
    cdef int64_t* values
    cdef Py_ssize_t capacity, count

    def __cinit__(self, Py_ssize_t capacity=1024):
        if capacity < 2 or capacity & (capacity - 1):
            raise ValueError("capacity must be a power of two")
        self.capacity, self.count = capacity, 0
        self.keys = <uint64_t*>PyMem_Calloc(capacity, sizeof(uint64_t))
        self.values = <int64_t*>PyMem_Calloc(capacity, sizeof(int64_t))
        if self.keys == NULL or self.values == NULL:
            raise MemoryError()

    def __dealloc__(self):
        PyMem_Free(self.keys)
        PyMem_Free(self.values)

    def __len__(self):
        return self.count

    cdef inline Py_ssize_t _find(self, uint64_t stored) noexcept:
        cdef Py_ssize_t mask = self.capacity - 1
        cdef Py_ssize_t i = <Py_ssize_t>((stored >> 1) & mask)
        while self.keys[i] != 0 and self.keys[i] != stored:
            i = (i + 1) & mask
        return i

    def get(self, uint64_t key, default=None):
        cdef uint64_t stored = key | 1
        cdef Py_ssize_t i = self._find(stored)
        return self.values[i] if self.keys[i] == stored else default

    def setdefault(self, uint64_t key, int64_t value):
        cdef uint64_t stored = key | 1
        cdef Py_ssize_t i = self._find(stored)
        if self.keys[i] == stored:
            return self.values[i]
        self.keys[i] = stored
        self.values[i] = value
        self.count += 1
        if 2 * self.count > self.capacity:
            self._grow()
        return value

    cdef _grow(self):
        cdef uint64_t* old_keys = self.keys
        cdef int64_t* old_values = self.values
        cdef Py_ssize_t old_capacity = self.capacity, k, i
        self.capacity *= 2
        self.keys = <uint64_t*>PyMem_Calloc(self.capacity, sizeof(uint64_t))
        self.values = <int64_t*>PyMem_Calloc(self.capacity, sizeof(int64_t))
        if self.keys == NULL or self.values == NULL:
            raise MemoryError()
        for k in range(old_capacity):
            if old_keys[k]:
                i = self._find(old_keys[k])
                self.keys[i] = old_keys[k]
                self.values[i] = old_values[k]
        PyMem_Free(old_keys)
        PyMem_Free(old_values)

    def nbytes(self):
        return self.capacity * 16


# --------------------------------------------------------------------------------------------
# hashing.band_keys_py

def band_keys(const uint32_t[::1] sig, Py_ssize_t bands, Py_ssize_t rows):
    """hashing.band_keys_py: one 64-bit key per LSH band."""
    cdef Py_ssize_t i, j
    cdef uint64_t k
    out = []
    for i in range(bands):
        k = <uint64_t>(i + 1) * 0x9E3779B97F4A7C15ULL
        for j in range(rows):
            k = (k ^ <uint64_t>sig[i * rows + j]) * SHINGLE_PRIME
        k ^= k >> 31
        k *= 0xBF58476D1CE4E5B9ULL
        k ^= k >> 29
        out.append(k)
    return out


# --------------------------------------------------------------------------------------------
# normalize.split_words_py

def split_words(str text):
    """normalize.split_words_py: the lowercased \\\\w+ runs of text."""
    cdef str low = text.lower()
    cdef Py_ssize_t i, start = -1, n = len(low)
    out = []
    for i in range(n):
        if _is_word(low[i]):
            if start < 0:
                start = i
        elif start >= 0:
            out.append(low[start:i])
            start = -1
    if start >= 0:
        out.append(low[start:n])
    return out
