# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
# distutils: language = c++
"""Compiled loops for tinyroots.tokenizer: pre-tokenization, BPE training, BPE encoding.

Everything here has a plain-Python twin in tokenizer.py, and tests/test_tokenizer.py checks the
two agree (same pre-tokens, same pair counts, same merges, same ids). Read the Python first.

What lives here:

* ``_next_piece``: GPT-2's pre-tokenizer regex, hand-written as a scanner over UTF-8 bytes
      's|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+
  with one class per code point (letter, number, space, other) looked up in a 1.1 MB table.
* ``WordCounter``: counts pre-tokens ("words") of a text, chunk by chunk, GIL released, so two
  threads can count two chunks at once.
* ``train_bpe``: the merge loop. Pair counts are updated incrementally (only the words that hold
  the merged pair are touched) and the next pair comes from a lazy max-heap.
* ``Encoder``: text -> ids. Each pre-token is looked up in a cache; on a miss, merges are applied
  by rank (lowest rank first, leftmost first), like GPT-2, Hugging Face and tiktoken.

Ids are int32 here; a pair of ids (a, b) is packed into one uint64 key ``a << 32 | b``.
"""

from cpython.bytes cimport PyBytes_FromStringAndSize
from cpython.unicode cimport Py_UNICODE_ISALPHA, Py_UNICODE_ISNUMERIC, Py_UNICODE_ISSPACE
from libc.stdint cimport int32_t, int64_t, uint8_t, uint32_t, uint64_t
from libc.string cimport memchr, memcmp, memcpy
from libcpp.pair cimport pair
from libcpp.queue cimport priority_queue
from libcpp.string cimport string
from libcpp.utility cimport move
from libcpp.vector cimport vector


cdef extern from "Python.h":
    const char* PyUnicode_AsUTF8AndSize(object text, Py_ssize_t* size) except NULL


# ---------------------------------------------------------------------------------------------
# character classes

cdef enum:
    OTHER = 0    # [^\s\p{L}\p{N}]: punctuation, symbols, marks, controls, emoji, ...
    LETTER = 1   # \p{L}: general category Lu, Ll, Lt, Lm, Lo (str.isalpha)
    NUMBER = 2   # \p{N}: general category Nd, Nl, No (str.isnumeric and not str.isalpha)
    SPACE = 3    # \s of the `regex` module: str.isspace() except U+001C..U+001F

cdef uint8_t _CLASS[0x110000]


cdef void _build_class_table() noexcept:
    cdef uint32_t cp
    for cp in range(0x110000):
        # subtle: Python's str.isspace() says yes to the four "information separators"
        # U+001C..U+001F, but the `regex` module that GPT-2 used does not count them as \s.
        if Py_UNICODE_ISSPACE(cp) and not (0x1C <= cp <= 0x1F):
            _CLASS[cp] = SPACE
        elif Py_UNICODE_ISALPHA(cp):
            _CLASS[cp] = LETTER
        elif Py_UNICODE_ISNUMERIC(cp):
            _CLASS[cp] = NUMBER
        else:
            _CLASS[cp] = OTHER


_build_class_table()


def class_table():
    """The class of every code point as bytes of length 0x110000 (0 other, 1 letter, 2 number,
    3 space); the tests compare it with tokenizer.py's definition."""
    return PyBytes_FromStringAndSize(<char*>_CLASS, 0x110000)


cdef inline uint8_t _class_at(const uint8_t* s, Py_ssize_t i, int* width) noexcept nogil:
    """Class of the code point whose UTF-8 encoding starts at s[i]; its length goes to width."""
    cdef uint32_t c = s[i]
    if c < 0x80:
        width[0] = 1
        return _CLASS[c]
    if c < 0xE0:
        width[0] = 2
        return _CLASS[((c & 0x1F) << 6) | (s[i + 1] & 0x3F)]
    if c < 0xF0:
        width[0] = 3
        return _CLASS[((c & 0x0F) << 12) | ((s[i + 1] & 0x3F) << 6) | (s[i + 2] & 0x3F)]
    width[0] = 4
    c = ((c & 0x07) << 18) | ((s[i + 1] & 0x3F) << 12) | ((s[i + 2] & 0x3F) << 6) | (s[i + 3] & 0x3F)
    return _CLASS[c] if c < 0x110000 else OTHER


# ---------------------------------------------------------------------------------------------
# the pre-tokenizer: GPT-2's regex as a scanner

cdef Py_ssize_t _next_piece(const uint8_t* s, Py_ssize_t i, Py_ssize_t n) noexcept nogil:
    """End of the pre-token that starts at s[i] (i < n), exactly as GPT-2's regex would match it.

    The regex tries its alternatives in order and takes the first that matches:
      1. 's|'t|'re|'ve|'m|'ll|'d      an ASCII apostrophe and a lowercase contraction
      2-4. ' ?X+' for X = letters, numbers, other: an optional single space, then a run of X
      5. \\s+(?!\\S)  a whitespace run, minus its last character when a non-space follows
      6. \\s+         (only reached for a one-character run followed by a non-space)
    Example: "Hi  there!\\n" -> "Hi", " ", " there", "!", "\\n".
    """
    cdef uint8_t c = s[i], c1, c2
    cdef uint8_t cls
    cdef int width = 0
    cdef Py_ssize_t j, last
    # 1. contractions
    if c == 39 and i + 1 < n:  # 39 is "'"
        c1 = s[i + 1]
        if c1 == 115 or c1 == 116 or c1 == 109 or c1 == 100:  # s t m d
            return i + 2
        if i + 2 < n:
            c2 = s[i + 2]
            if (c2 == 101 and (c1 == 114 or c1 == 118)) or (c1 == 108 and c2 == 108):  # re ve ll
                return i + 3
    # 2-4. an optional space, then a run of one class; subtle: only U+0020 counts as that space
    j = i + 1 if (c == 32 and i + 1 < n) else i
    cls = _class_at(s, j, &width)
    if cls != SPACE:
        j += width
        while j < n and _class_at(s, j, &width) == cls:
            j += width
        return j
    # 5-6. whitespace: the run s[i:j]; `last` is where its last character starts
    j = i
    last = i
    while j < n and _class_at(s, j, &width) == SPACE:
        last = j
        j += width
    if j == n or last == i:
        return j     # the run reaches the end of the text, or is one character long
    return last      # leave the last space to start the next pre-token (" there")


cdef Py_ssize_t _find(const uint8_t* s, Py_ssize_t start, Py_ssize_t n,
                      const uint8_t* pat, Py_ssize_t m) noexcept nogil:
    """First occurrence of pat[:m] in s[start:n], or n."""
    cdef const uint8_t* p
    while start + m <= n:
        p = <const uint8_t*>memchr(s + start, pat[0], n - m + 1 - start)
        if p == NULL:
            return n
        start = p - s
        if memcmp(p, pat, m) == 0:
            return start
        start += 1
    return n


cdef class _Specials:
    """Special tokens to cut out of a text before pre-tokenization (never split, never merged).
    Read-only once built, so threads can share it."""
    cdef vector[string] text
    cdef vector[int32_t] ids

    def __init__(self, specials=()):
        for sp, i in specials:
            if len(sp) == 0:
                raise ValueError("a special token cannot be empty")
            self.text.push_back(sp)
            self.ids.push_back(i)

    cdef Py_ssize_t find_next(self, const uint8_t* s, Py_ssize_t pos, Py_ssize_t n,
                              vector[Py_ssize_t]& next_at, Py_ssize_t* which) noexcept nogil:
        """Where the next special token at or after pos starts (n if none); the earliest wins,
        and of two starting at the same place, the longer. next_at caches where each one
        occurs next (start a text with it empty), so a text is scanned once per token."""
        cdef Py_ssize_t best = n, k, at, m
        which[0] = -1
        if next_at.size() != self.text.size():
            next_at.assign(self.text.size(), -1)
        for k in range(<Py_ssize_t>self.text.size()):
            at = next_at[k]
            m = self.text[k].size()
            if at < pos:
                at = _find(s, pos, n, <const uint8_t*>self.text[k].data(), m)
                next_at[k] = at
            if at < n and (at < best or (at == best and m > <Py_ssize_t>self.text[which[0]].size())):
                best = at
                which[0] = k
        return best


# ---------------------------------------------------------------------------------------------
# hash tables: bytes -> int64 and uint64 -> uint64, open addressing with linear probing

cdef inline uint64_t _mix(uint64_t h) noexcept nogil:
    h ^= h >> 33
    h *= 0xff51afd7ed558ccdULL
    h ^= h >> 33
    h *= 0xc4ceb9fe1a85ec53ULL
    h ^= h >> 33
    return h


cdef inline uint64_t _hash_bytes(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    cdef uint64_t h = 0x9E3779B97F4A7C15ULL ^ <uint64_t>n
    cdef uint64_t w
    while n >= 8:
        memcpy(&w, p, 8)
        h = (h ^ w) * 0x100000001b3ULL
        h ^= h >> 29
        p += 8
        n -= 8
    if n > 0:
        w = 0
        memcpy(&w, p, n)
        h = (h ^ w) * 0x100000001b3ULL
    h = _mix(h)
    return h if h != 0 else 1   # 0 marks an empty slot


cdef struct _Slot:
    uint64_t hash        # 0: empty
    int64_t value
    uint64_t key_off     # the key is keys[key_off : key_off + key_len]
    uint32_t key_len


cdef class _BytesMap:
    """bytes -> int64; the keys are copied into one arena."""
    cdef vector[_Slot] slots
    cdef vector[uint8_t] keys
    cdef Py_ssize_t count

    def __cinit__(self):
        self.clear()

    cdef void clear(self) noexcept nogil:
        cdef _Slot empty
        empty.hash = 0
        self.slots.assign(1024, empty)
        self.keys.clear()
        self.count = 0

    cdef int64_t* find(self, const uint8_t* k, Py_ssize_t n, uint64_t h) noexcept nogil:
        cdef size_t mask = self.slots.size() - 1
        cdef size_t i = h & mask
        cdef _Slot* slot
        while True:
            slot = &self.slots[i]
            if slot.hash == 0:
                return NULL
            if slot.hash == h and slot.key_len == n and \
                    memcmp(&self.keys[0] + slot.key_off, k, n) == 0:
                return &slot.value
            i = (i + 1) & mask

    cdef int64_t* upsert(self, const uint8_t* k, Py_ssize_t n, uint64_t h, bint* is_new) noexcept nogil:
        """Pointer to the value stored for k (a new key starts at 0). Valid until the next upsert."""
        cdef size_t mask, i
        cdef _Slot* slot
        if 2 * (self.count + 1) > <Py_ssize_t>self.slots.size():
            self._grow()
        mask = self.slots.size() - 1
        i = h & mask
        while True:
            slot = &self.slots[i]
            if slot.hash == 0:
                break
            if slot.hash == h and slot.key_len == n and \
                    memcmp(&self.keys[0] + slot.key_off, k, n) == 0:
                is_new[0] = False
                return &slot.value
            i = (i + 1) & mask
        slot.hash = h
        slot.value = 0
        slot.key_off = self.keys.size()
        slot.key_len = n
        self.keys.insert(self.keys.end(), k, k + n)
        self.count += 1
        is_new[0] = True
        return &slot.value

    cdef void _grow(self) noexcept nogil:
        cdef vector[_Slot] old
        cdef _Slot empty
        cdef size_t mask, i, j
        empty.hash = 0
        old.swap(self.slots)
        self.slots.assign(2 * old.size(), empty)
        mask = self.slots.size() - 1
        for j in range(old.size()):
            if old[j].hash != 0:
                i = old[j].hash & mask
                while self.slots[i].hash != 0:
                    i = (i + 1) & mask
                self.slots[i] = old[j]


cdef uint64_t _NO_KEY = 0xFFFFFFFFFFFFFFFFULL


cdef class _U64Map:
    """uint64 -> uint64 (keys are packed id pairs a << 32 | b, so never _NO_KEY)."""
    cdef vector[uint64_t] keys
    cdef vector[uint64_t] vals
    cdef Py_ssize_t count
    cdef int shift

    def __cinit__(self):
        self.keys.assign(1024, _NO_KEY)
        self.vals.assign(1024, 0)
        self.shift = 64 - 10
        self.count = 0

    cdef inline size_t _slot(self, uint64_t key) noexcept nogil:
        cdef size_t mask = self.keys.size() - 1
        cdef size_t i = (key * 0x9E3779B97F4A7C15ULL) >> self.shift
        while self.keys[i] != key and self.keys[i] != _NO_KEY:
            i = (i + 1) & mask
        return i

    cdef inline uint64_t get(self, uint64_t key, uint64_t default) noexcept nogil:
        cdef size_t i = self._slot(key)
        return self.vals[i] if self.keys[i] == key else default

    cdef uint64_t* upsert(self, uint64_t key, uint64_t default, bint* is_new) noexcept nogil:
        cdef size_t i
        if 2 * (self.count + 1) > <Py_ssize_t>self.keys.size():
            self._grow()
        i = self._slot(key)
        is_new[0] = self.keys[i] == _NO_KEY
        if is_new[0]:
            self.keys[i] = key
            self.vals[i] = default
            self.count += 1
        return &self.vals[i]

    cdef void _grow(self) noexcept nogil:
        cdef vector[uint64_t] old_keys, old_vals
        cdef size_t j, i
        old_keys.swap(self.keys)
        old_vals.swap(self.vals)
        self.keys.assign(2 * old_keys.size(), _NO_KEY)
        self.vals.assign(2 * old_keys.size(), 0)
        self.shift -= 1
        for j in range(old_keys.size()):
            if old_keys[j] != _NO_KEY:
                i = self._slot(old_keys[j])
                self.keys[i] = old_keys[j]
                self.vals[i] = old_vals[j]


cdef inline uint64_t _pair_key(int32_t a, int32_t b) noexcept nogil:
    return (<uint64_t>a << 32) | <uint32_t>b


# ---------------------------------------------------------------------------------------------
# pre-token counting (the first half of training)

def split_text(str text):
    """The pre-tokens of text (no special-token handling): the compiled twin of
    tokenizer.pretokenize, for tests and for anyone curious."""
    cdef Py_ssize_t n, i = 0, j
    cdef const uint8_t* s = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &n)
    out = []
    while i < n:
        j = _next_piece(s, i, n)
        out.append(s[i:j].decode("utf-8"))
        i = j
    return out


cdef class WordCounter:
    """How often each pre-token occurs, as UTF-8 bytes -> count.

        >>> c = WordCounter(); c.add("the cat the"); sorted(c.items())
        [(b' cat', 1), (b' the', 1), (b'the', 1)]

    add() releases the GIL, so several threads can each fill their own counter; merge() them after.
    """
    cdef _BytesMap map
    cdef _Specials specials

    def __init__(self, specials=()):
        """specials: the UTF-8 bytes of the special tokens; they are cut out and not counted."""
        self.map = _BytesMap()
        self.specials = _Specials([(sp, -1) for sp in specials])

    def __len__(self):
        return self.map.count

    def add(self, str text):
        cdef Py_ssize_t n
        cdef const uint8_t* s = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &n)
        with nogil:
            self._add(s, n)

    cdef void _add(self, const uint8_t* s, Py_ssize_t n) noexcept nogil:
        cdef Py_ssize_t pos = 0, stop, i, j, which
        cdef bint is_new
        cdef vector[Py_ssize_t] next_at
        while pos < n:
            stop = self.specials.find_next(s, pos, n, next_at, &which)
            i = pos
            while i < stop:
                j = _next_piece(s, i, stop)
                self.map.upsert(s + i, j - i, _hash_bytes(s + i, j - i), &is_new)[0] += 1
                i = j
            if which < 0:
                break
            pos = stop + <Py_ssize_t>self.specials.text[which].size()

    def add_counts(self, counts):
        """Add a dict {bytes: count} (tests use it to feed both trainers the same words)."""
        cdef bytes key
        cdef bint is_new
        for key, c in counts.items():
            self.map.upsert(<const uint8_t*><char*>key, len(key),
                            _hash_bytes(<const uint8_t*><char*>key, len(key)), &is_new)[0] += c

    def merge(self, WordCounter other):
        """Add other's counts into this counter."""
        cdef size_t j
        cdef _Slot* slot
        cdef bint is_new
        with nogil:
            for j in range(other.map.slots.size()):
                slot = &other.map.slots[j]
                if slot.hash != 0:
                    self.map.upsert(&other.map.keys[0] + slot.key_off, slot.key_len, slot.hash,
                                    &is_new)[0] += slot.value

    def items(self):
        """[(word_bytes, count), ...] in no particular order."""
        cdef size_t j
        cdef _Slot* slot
        out = []
        for j in range(self.map.slots.size()):
            slot = &self.map.slots[j]
            if slot.hash != 0:
                out.append((PyBytes_FromStringAndSize(<char*>&self.map.keys[0] + slot.key_off,
                                                      slot.key_len), slot.value))
        return out


# ---------------------------------------------------------------------------------------------
# the merge loop (the second half of training)

cdef class _PairCounts:
    """Per-pair state of the merge loop: count, the words it occurs in, when last raised."""
    cdef _U64Map index
    cdef vector[uint64_t] pkey
    cdef vector[int64_t] pcount
    cdef vector[vector[int32_t]] pwhere
    cdef vector[int64_t] ptouched
    cdef vector[int32_t] touched

    def __cinit__(self):
        self.index = _U64Map()

    cdef void add(self, int32_t a, int32_t b, int64_t delta, int32_t w, int64_t step) noexcept nogil:
        """count(a, b) += delta; a raised pair remembers word w and is queued for the heap."""
        cdef bint is_new
        cdef uint64_t key = _pair_key(a, b)
        cdef uint64_t* slot = self.index.upsert(key, self.pkey.size(), &is_new)
        cdef int32_t pi = <int32_t>slot[0]
        if is_new:
            self.pkey.push_back(key)
            self.pcount.push_back(0)
            self.pwhere.push_back(vector[int32_t]())
            self.ptouched.push_back(-2)
        self.pcount[pi] += delta
        if delta > 0:
            if self.pwhere[pi].empty() or self.pwhere[pi].back() != w:
                self.pwhere[pi].push_back(w)
            if self.ptouched[pi] != step:
                self.ptouched[pi] = step
                self.touched.push_back(pi)


def train_bpe(WordCounter counter, byte_ids, Py_ssize_t max_tokens, int64_t min_frequency=2,
              progress=None, Py_ssize_t progress_every=1000):
    """Learn merges from counted words; the compiled twin of tokenizer._train_merges_python.

    byte_ids[b] is the id of the one-byte token b (a permutation of 0..255); new tokens get ids
    256, 257, ... The loop stops when there are max_tokens tokens, or the most frequent pair
    occurs fewer than min_frequency times. Returns [(a, b, new_id, count), ...] in merge order.

    Each step merges the most frequent pair, the smallest (a, b) among equals. Only the words
    that hold that pair are rewritten, and each rewrite adjusts the counts of the pairs around
    it, e.g. merging (a, b) -> z in "x a b y" (count c):
        (x, a) -= c, (b, y) -= c, (a, b) -= c, (x, z) += c, (z, y) += c
    The heap holds (count, pair) entries that may be stale (counts only go down lazily): a popped
    entry whose count is no longer current is pushed back with the current count.
    """
    cdef vector[int32_t] syms        # all words, one after another, as token ids
    cdef vector[int64_t] wstart      # word w is syms[wstart[w] : wstart[w] + wlen[w]]
    cdef vector[int32_t] wlen
    cdef vector[int64_t] wcount
    cdef vector[int64_t] seen        # the merge step that last rewrote word w
    cdef int32_t bid[256]
    cdef size_t j
    cdef _Slot* slot
    cdef const uint8_t* key
    cdef Py_ssize_t k, w, n_words, start, length, r, o
    cdef int64_t c

    if len(byte_ids) != 256 or sorted(byte_ids) != list(range(256)):
        raise ValueError("byte_ids must be a permutation of 0..255")
    for k in range(256):
        bid[k] = byte_ids[k]
    min_frequency = max(min_frequency, 1)

    # words with at least two bytes (a one-byte word has no pair to merge)
    for j in range(counter.map.slots.size()):
        slot = &counter.map.slots[j]
        if slot.hash == 0 or slot.key_len < 2:
            continue
        key = &counter.map.keys[0] + slot.key_off
        wstart.push_back(syms.size())
        wlen.push_back(slot.key_len)
        wcount.push_back(slot.value)
        for k in range(slot.key_len):
            syms.push_back(bid[key[k]])
    n_words = wcount.size()
    seen.assign(n_words, -1)

    # every pair's count and the words it occurs in
    cdef _PairCounts pc = _PairCounts()
    for w in range(n_words):
        start = wstart[w]
        for k in range(wlen[w] - 1):
            pc.add(syms[start + k], syms[start + k + 1], wcount[w], <int32_t>w, -1)

    cdef priority_queue[pair[int64_t, int64_t]] heap   # (count, -key): most frequent, smallest
    for k in range(<Py_ssize_t>pc.pkey.size()):
        heap.push(pair[int64_t, int64_t](pc.pcount[k], -<int64_t>pc.pkey[k]))

    cdef Py_ssize_t n_tokens = 256, step = 0
    cdef int64_t cnt, cur
    cdef uint64_t pkey_top
    cdef int32_t a, b, z, pi
    cdef vector[int32_t] where
    cdef int32_t* ws
    merges = []
    while n_tokens < max_tokens and not heap.empty():
        cnt = heap.top().first
        pkey_top = <uint64_t>(-heap.top().second)
        heap.pop()
        pi = <int32_t>pc.index.get(pkey_top, 0)
        cur = pc.pcount[pi]
        if cnt != cur:          # stale entry: the pair's count went down since it was pushed
            if cur > 0:
                heap.push(pair[int64_t, int64_t](cur, -<int64_t>pkey_top))
            continue
        if cnt < min_frequency:
            break
        a = <int32_t>(pkey_top >> 32)
        b = <int32_t>(pkey_top & 0xFFFFFFFFULL)
        z = <int32_t>n_tokens
        n_tokens += 1
        merges.append((a, b, z, cnt))

        # rewrite every word that holds (a, b)
        where.clear()
        where.swap(pc.pwhere[pi])   # (a, b) never forms again: its list is done after this
        pc.touched.clear()
        with nogil:
            for k in range(<Py_ssize_t>where.size()):
                w = where[k]
                if seen[w] == step:
                    continue
                seen[w] = step
                ws = &syms[wstart[w]]
                length = wlen[w]
                c = wcount[w]
                r = 0
                o = 0
                while r < length:
                    if r + 1 < length and ws[r] == a and ws[r + 1] == b:
                        pc.add(a, b, -c, <int32_t>w, step)
                        if o > 0:                 # the symbol before, maybe a fresh z
                            pc.add(ws[o - 1], a, -c, <int32_t>w, step)
                            pc.add(ws[o - 1], z, c, <int32_t>w, step)
                        if r + 2 < length:        # the symbol after
                            pc.add(b, ws[r + 2], -c, <int32_t>w, step)
                            pc.add(z, ws[r + 2], c, <int32_t>w, step)
                        ws[o] = z
                        r += 2
                    else:
                        ws[o] = ws[r]
                        r += 1
                    o += 1
                wlen[w] = <int32_t>o
        for k in range(<Py_ssize_t>pc.touched.size()):
            pi = pc.touched[k]
            if pc.pcount[pi] > 0:
                heap.push(pair[int64_t, int64_t](pc.pcount[pi], -<int64_t>pc.pkey[pi]))
        step += 1
        if progress is not None and step % progress_every == 0:
            progress(step, n_tokens)
    return merges


# ---------------------------------------------------------------------------------------------
# encoding

cdef class _Cache:
    """pre-token bytes -> its ids. Used by one thread at a time (the Encoder keeps a pool)."""
    cdef _BytesMap map
    cdef vector[int32_t] ids     # the value of a key is (offset << 24 | length) into ids

    def __cinit__(self):
        self.map = _BytesMap()


cdef enum:
    _CACHE_MAX_WORDS = 1 << 20    # a cache is cleared when it grows past this many pre-tokens
    _SHORT_PIECE = 48             # longer pre-tokens use the heap-based merge


cdef class Encoder:
    """Applies merges by rank; the compiled twin of tokenizer._bpe_python + the encode loop.

    merges: [(a, b, new_id), ...] in rank order; byte_ids[b]: the id of byte b;
    specials: [(utf8_bytes, id), ...] recognised in the text when encode(..., specials=True).
    """
    cdef int32_t bid[256]
    cdef _U64Map ranks            # (a, b) -> rank << 32 | new_id
    cdef _Specials specials
    cdef list pool                # idle caches

    def __init__(self, byte_ids, merges, specials=()):
        cdef bint is_new
        cdef Py_ssize_t rank
        cdef uint64_t* slot
        if len(byte_ids) != 256:
            raise ValueError("byte_ids must have 256 entries")
        for k in range(256):
            self.bid[k] = byte_ids[k]
        self.ranks = _U64Map()
        for rank, (a, b, z) in enumerate(merges):
            # a pair listed twice keeps its last rank, as in GPT-2's encoder.py and Hugging Face
            slot = self.ranks.upsert(_pair_key(a, b), 0, &is_new)
            slot[0] = (<uint64_t>rank << 32) | <uint32_t>z
        self.specials = _Specials(specials)
        self.pool = []

    cdef inline uint64_t _rank(self, int32_t a, int32_t b) noexcept nogil:
        return self.ranks.get(_pair_key(a, b), _NO_KEY)

    cdef void _bpe(self, const uint8_t* p, Py_ssize_t m, vector[int32_t]& out) noexcept nogil:
        """Append the ids of one pre-token p[:m] (m >= 2) to out."""
        cdef int32_t ids[_SHORT_PIECE]
        cdef uint64_t rk[_SHORT_PIECE]
        cdef Py_ssize_t k, best_k, n = m
        cdef uint64_t best
        if m > _SHORT_PIECE:
            self._bpe_long(p, m, out)
            return
        for k in range(n):
            ids[k] = self.bid[p[k]]
        for k in range(n - 1):
            rk[k] = self._rank(ids[k], ids[k + 1])
        while n > 1:
            # the pair with the lowest rank, leftmost among equals (rk packs rank << 32 | id)
            best = _NO_KEY
            best_k = -1
            for k in range(n - 1):
                if rk[k] < best:
                    best = rk[k]
                    best_k = k
            if best_k < 0:
                break
            ids[best_k] = <int32_t>(best & 0xFFFFFFFFULL)
            for k in range(best_k + 1, n - 1):
                ids[k] = ids[k + 1]
            for k in range(best_k + 1, n - 2):
                rk[k] = rk[k + 1]
            n -= 1
            if best_k > 0:
                rk[best_k - 1] = self._rank(ids[best_k - 1], ids[best_k])
            if best_k < n - 1:
                rk[best_k] = self._rank(ids[best_k], ids[best_k + 1])
        for k in range(n):
            out.push_back(ids[k])

    cdef void _bpe_long(self, const uint8_t* p, Py_ssize_t m, vector[int32_t]& out) noexcept nogil:
        """Same result as _bpe in O(m log m) for long pre-tokens: a linked list of symbols and a
        min-heap of (rank, position) entries, checked for staleness when popped."""
        cdef vector[int32_t] ids, nxt, prv
        cdef priority_queue[pair[int64_t, int64_t]] heap   # (-rank, -position): lowest first
        cdef Py_ssize_t k, q
        cdef uint64_t rk
        cdef int64_t rank
        ids.resize(m)
        nxt.resize(m)
        prv.resize(m)
        for k in range(m):
            ids[k] = self.bid[p[k]]
            nxt[k] = <int32_t>(k + 1) if k + 1 < m else -1
            prv[k] = <int32_t>(k - 1)
        for k in range(m - 1):
            rk = self._rank(ids[k], ids[k + 1])
            if rk != _NO_KEY:
                heap.push(pair[int64_t, int64_t](-<int64_t>(rk >> 32), -k))
        while not heap.empty():
            rank = -heap.top().first
            k = -heap.top().second
            heap.pop()
            q = nxt[k]
            if ids[k] < 0 or q < 0:
                continue
            rk = self._rank(ids[k], ids[q])
            if rk == _NO_KEY or <int64_t>(rk >> 32) != rank:
                continue       # stale: this position's pair changed since it was pushed
            ids[k] = <int32_t>(rk & 0xFFFFFFFFULL)
            ids[q] = -1
            nxt[k] = nxt[q]
            if nxt[q] >= 0:
                prv[nxt[q]] = <int32_t>k
                rk = self._rank(ids[k], ids[nxt[k]])
                if rk != _NO_KEY:
                    heap.push(pair[int64_t, int64_t](-<int64_t>(rk >> 32), -k))
            if prv[k] >= 0:
                rk = self._rank(ids[prv[k]], ids[k])
                if rk != _NO_KEY:
                    heap.push(pair[int64_t, int64_t](-<int64_t>(rk >> 32), -<int64_t>prv[k]))
        k = 0
        while k >= 0:
            out.push_back(ids[k])
            k = nxt[k]

    cdef void _encode_piece(self, const uint8_t* p, Py_ssize_t m, _Cache cache,
                            vector[int32_t]& out) noexcept nogil:
        cdef uint64_t h
        cdef int64_t* hit
        cdef int64_t v
        cdef Py_ssize_t k, off, length, before
        cdef bint is_new
        if m == 1:
            out.push_back(self.bid[p[0]])
            return
        h = _hash_bytes(p, m)
        hit = cache.map.find(p, m, h)
        if hit != NULL:
            v = hit[0]
            off = v >> 24
            length = v & 0xFFFFFF
            out.insert(out.end(), cache.ids.begin() + off, cache.ids.begin() + off + length)
            return
        before = out.size()
        self._bpe(p, m, out)
        length = out.size() - before
        if length >= 0xFFFFFF:
            return
        if cache.map.count >= _CACHE_MAX_WORDS:
            cache.map.clear()
            cache.ids.clear()
        cache.map.upsert(p, m, h, &is_new)[0] = (<int64_t>cache.ids.size() << 24) | length
        cache.ids.insert(cache.ids.end(), out.begin() + before, out.end())

    cdef void _encode(self, const uint8_t* s, Py_ssize_t n, bint use_specials, _Cache cache,
                      vector[int32_t]& out) noexcept nogil:
        cdef Py_ssize_t pos = 0, stop, i, j, which = -1
        cdef vector[Py_ssize_t] next_at
        while pos < n:
            stop = self.specials.find_next(s, pos, n, next_at, &which) if use_specials else n
            i = pos
            while i < stop:
                j = _next_piece(s, i, stop)
                self._encode_piece(s + i, j - i, cache, out)
                i = j
            if which < 0:
                break
            out.push_back(self.specials.ids[which])
            pos = stop + <Py_ssize_t>self.specials.text[which].size()

    cdef _Cache _take_cache(self):
        return self.pool.pop() if self.pool else _Cache()

    cdef int _encode_text(self, str text, bint specials, vector[int32_t]& out) except -1:
        """text -> its ids appended to out, with a cache from the pool (the GIL is released
        while encoding, so several threads can share one Encoder)."""
        cdef Py_ssize_t n
        cdef const uint8_t* s = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &n)
        cdef _Cache cache = self._take_cache()
        try:
            with nogil:
                self._encode(s, n, specials, cache, out)
        finally:
            self.pool.append(cache)
        return 0

    def encode(self, str text, bint specials=True):
        """ids of text as a list (specials: recognise the special tokens in text)."""
        cdef vector[int32_t] out
        self._encode_text(text, specials, out)
        return out

    def encode_int32(self, str text, bint specials=True):
        """ids of text as the raw bytes of an int32 array (for numpy.frombuffer)."""
        cdef vector[int32_t] out
        self._encode_text(text, specials, out)
        return PyBytes_FromStringAndSize(<char*>out.data(), out.size() * sizeof(int32_t))

    def encode_batch(self, list texts, bint specials=True):
        """[encode(t) for t in texts] with one cache; the GIL is released for each text, so
        several threads may call it at once on different batches."""
        cdef vector[int32_t] out
        cdef Py_ssize_t n
        cdef const uint8_t* s
        cdef _Cache cache = self._take_cache()
        results = []
        try:
            for text in texts:
                s = <const uint8_t*>PyUnicode_AsUTF8AndSize(text, &n)
                out.clear()
                with nogil:
                    self._encode(s, n, specials, cache, out)
                results.append(out)
        finally:
            self.pool.append(cache)
        return results

    def bpe(self, bytes piece, bint long_path=False):
        """The ids of one pre-token, merged without the cache (tests compare both paths)."""
        cdef vector[int32_t] out
        cdef Py_ssize_t m = len(piece)
        cdef const uint8_t* p = <const uint8_t*><char*>piece
        if m == 1:
            out.push_back(self.bid[p[0]])
        elif m > 1:
            if long_path:
                self._bpe_long(p, m, out)
            else:
                self._bpe(p, m, out)
        return out

    def clear_cache(self):
        self.pool = []


def decode_bytes(list token_bytes, ids):
    """b"".join(token_bytes[i] for i in ids), checking every id is in range."""
    cdef Py_ssize_t n = len(token_bytes), i
    cdef list parts = []
    for i in ids:
        if i < 0 or i >= n:
            raise IndexError(i)
        parts.append(token_bytes[i])
    return b"".join(parts)
