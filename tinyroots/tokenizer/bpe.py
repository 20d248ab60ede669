"""The byte-level BPE algorithm, GPT-2's: pre-tokenize, count words, learn merges, apply them.

tokenizer.py wraps this in the Tokenizer class (special tokens, files, the public API); this
module is the algorithm itself, in plain Python, each piece with its compiled twin in _bpe.pyx:

1. Pre-tokenization splits text into words with GPT-2's regex (``GPT2_SPLIT_PATTERN``), so a
   merge never crosses a word boundary and a leading space sticks to the word after it:
       "Hello world, it's 2024!"  ->  "Hello", " world", ",", " it", "'s", " 2024", "!"
   (``pretokenize``; the compiled twin is a byte scanner over the same character classes.)
2. Training counts the words of the corpus (``_count_words_python``), then repeatedly merges the
   most frequent adjacent pair of tokens into a new token (``_train_merges_python``):
       {b"low": 5, b"lower": 2} -> pairs (l, o): 7, (o, w): 7, (w, e): 2, ... -> merge (l, o)
   updating only the counts of the words that contain the merged pair.
3. Encoding a word starts from its UTF-8 bytes, one token per byte, and applies the learned
   merges by rank, lowest first (``_bpe_python``):
       b" world" -> [" ", "w", "o", "r", "l", "d"] -> ... -> [" world"]

Tokens are bytes; on disk they are written with GPT-2's printable alphabet (``bytes_to_unicode``).
The tests check the plain and the compiled versions give identical results.
"""

from __future__ import annotations

import concurrent.futures
import heapq
import os
import queue
import re
import threading
from collections import Counter, defaultdict, deque
from functools import cache

_bpe = None
if os.environ.get("TINYROOTS_BACKEND", "auto").strip().lower() != "numpy":
    try:
        from . import _bpe  # the compiled loops; optional
    except ImportError:
        _bpe = None

# GPT-2's pre-tokenizer, as written in OpenAI's encoder.py for the `regex` module. \p{L} is any
# letter, \p{N} any number, in any script. The alternatives are tried left to right.
GPT2_SPLIT_PATTERN = (r"""'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+"""
                      r"""|\s+(?!\S)|\s+""")


# ---------------------------------------------------------------------------------------------
# bytes <-> printable characters (GPT-2's alphabet for vocab.json and merges.txt)

@cache
def bytes_to_unicode():
    """GPT-2's map from each byte to a printable character, as a dict {byte: str}.

    Printable Latin-1 bytes stand for themselves ("a" -> "a"); the others (control characters,
    space, ...) are moved to U+0100 and up, in order: 0x00 -> "Ā", ..., 0x20 (space) -> "Ġ",
    0x0A (newline) -> "Ċ". So every token can be written as a string with no spaces in it,
    which is what lets merges.txt separate two tokens by a space.
    """
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


BYTE_ENCODER = bytes_to_unicode()                          # byte -> char
BYTE_DECODER = {c: b for b, c in BYTE_ENCODER.items()}     # char -> byte
# GPT-2 gives the 256 one-byte tokens ids 0..255 in the order of their characters
# ("!" is 0, "Ā" (byte 0x00) is 188, "Ġ" (space) is 220); trained tokenizers here do the same.
BYTE_IDS = [sorted(BYTE_ENCODER.values()).index(BYTE_ENCODER[b]) for b in range(256)]


def token_to_string(token_bytes):
    """b" world" -> "Ġworld" (the vocab.json spelling of a token)."""
    return "".join(BYTE_ENCODER[b] for b in token_bytes)


def string_to_token(s):
    """ "Ġworld" -> b" world"; raises KeyError on a character outside the byte alphabet."""
    return bytes(BYTE_DECODER[c] for c in s)


# ---------------------------------------------------------------------------------------------
# pre-tokenization: GPT-2's regex, with the standard library's `re`
#
# `re` has no \p{L} or \p{N}, so the classes are spelled out from the Unicode database of the
# running Python: a letter is str.isalpha() (categories Lu Ll Lt Lm Lo), a number is
# str.isnumeric() and not a letter (categories Nd Nl No), and whitespace is str.isspace() less
# U+001C..U+001F. subtle: those four separators are whitespace to Python (and to `re`'s \s) but
# not to the `regex` module GPT-2 used, so they are "other" here, as in GPT-2.
# The compiled scanner (_bpe._next_piece) uses the same three classes; tests check both against
# the `regex` module. Characters newer than this Python's Unicode version count as "other".

def _char_class_ranges(predicate):
    """[(first, last), ...] code point ranges where predicate(chr(cp)) holds."""
    ranges = []
    start = None
    for cp, yes in enumerate(map(predicate, map(chr, range(0x110000)))):
        if yes and start is None:
            start = cp
        elif not yes and start is not None:
            ranges.append((start, cp - 1))
            start = None
    if start is not None:
        ranges.append((start, 0x10FFFF))
    return ranges


def _is_space(c):
    return c.isspace() and not "\x1c" <= c <= "\x1f"


def _is_letter(c):
    return c.isalpha()


def _is_number(c):
    return c.isnumeric() and not c.isalpha()


@cache
def _split_regex():
    """GPT2_SPLIT_PATTERN for `re`, with \\p{L}, \\p{N} and \\s spelled out (built once, ~0.2 s)."""
    def cls(predicate):
        return "".join(f"\\U{a:08x}" if a == b else f"\\U{a:08x}-\\U{b:08x}"
                       for a, b in _char_class_ranges(predicate))
    L, N, S = cls(_is_letter), cls(_is_number), cls(_is_space)
    pattern = (f"'s|'t|'re|'ve|'m|'ll|'d| ?[{L}]+| ?[{N}]+| ?[^{S}{L}{N}]+"
               f"|[{S}]+(?![^{S}])|[{S}]+")
    return re.compile(pattern)


def pretokenize(text):
    """Split text into GPT-2's pre-tokens (no special-token handling).

        >>> pretokenize("Hello world, it's  2024!\\n")
        ['Hello', ' world', ',', ' it', "'s", ' ', ' 2024', '!', '\\n']
    """
    return _split_regex().findall(text)


def char_class_table():
    """The class of every code point, as bytes (0 other, 1 letter, 2 number, 3 space)."""
    table = bytearray(0x110000)
    for value, predicate in ((2, _is_number), (1, _is_letter), (3, _is_space)):
        for a, b in _char_class_ranges(predicate):
            table[a:b + 1] = bytes([value]) * (b + 1 - a)
    return bytes(table)


def _special_regex(specials):
    """A regex that finds any of the special tokens; the longest wins where two start together."""
    if not specials:
        return None
    return re.compile("|".join(re.escape(s) for s in sorted(specials, key=len, reverse=True)))


def _split_specials(text, special_regex):
    """Yield (segment, is_special) in order:
    "a<|endoftext|>b" -> ("a", 0), ("<|endoftext|>", 1), ("b", 0)."""
    if special_regex is None:
        yield text, False
        return
    pos = 0
    for m in special_regex.finditer(text):
        if m.start() > pos:
            yield text[pos:m.start()], False
        yield m.group(), True
        pos = m.end()
    if pos < len(text):
        yield text[pos:], False


# ---------------------------------------------------------------------------------------------
# reading a corpus: a string, a file, or a list of them, in chunks that pre-tokenize independently

def _looks_like_path(s):
    return len(s) < 4096 and not any(c in s for c in "\n\r\t ") and (
        os.sep in s or "/" in s or os.path.splitext(s)[1] != "")


def _sources(text_or_files):
    """Yield ("text", str) or ("file", path) for each item of text_or_files."""
    items = [text_or_files] if isinstance(text_or_files, (str, os.PathLike)) else text_or_files
    try:
        items = list(items)
    except TypeError:
        raise TypeError("text_or_files must be a str of text, a path, or a list of them; got "
                        f"{type(text_or_files).__name__}") from None
    for item in items:
        if isinstance(item, os.PathLike) or (isinstance(item, str) and os.path.isfile(item)):
            path = os.fspath(item)
            if os.path.isdir(path):
                raise IsADirectoryError(f"{path} is a directory; pass a list of its text files")
            if not os.path.isfile(path):
                raise FileNotFoundError(f"training file not found: {path}")
            yield "file", path
        elif isinstance(item, str):
            if _looks_like_path(item):
                # subtle: a str is text unless it names a file; a missing file would otherwise
                # be trained on as if it were the corpus
                raise FileNotFoundError(f"training file not found: {item} (a str with no "
                                        "whitespace that looks like a path is read as one)")
            yield "text", item
        else:
            raise TypeError(f"expected text or a path, got {type(item).__name__}")


def _safe_split(text, lo, hi, specials=()):
    """The largest p in (lo, hi) where text[:p] and text[p:] pre-tokenize independently, or -1.

    subtle: a pre-token never holds a non-space followed by a space (only " ?X+" starts with a
    space, and whitespace runs are all space), and the regex looks no further than the next
    character, so cutting just before a space that follows a non-space is always safe.
    """
    while hi > lo:
        p = max(text.rfind(" ", lo + 1, hi), text.rfind("\n", lo + 1, hi))
        if p <= lo:
            return -1
        if not text[p - 1].isspace() and not any(
                sp in text[max(0, p - len(sp) + 1):p + len(sp) - 1] for sp in specials):
            return p
        hi = p
    return -1


def _next_safe_split(text, lo, specials=()):
    """The smallest safe split point p > lo (see _safe_split), or -1."""
    p = lo
    while True:
        found = [x for x in (text.find(" ", p + 1), text.find("\n", p + 1)) if x > 0]
        if not found:
            return -1
        p = min(found)
        if not text[p - 1].isspace() and not any(
                sp in text[max(0, p - len(sp) + 1):p + len(sp) - 1] for sp in specials):
            return p


def _iter_chunks(text_or_files, chunk_chars=1 << 21, specials=()):
    """Yield the corpus as str chunks of about chunk_chars characters, cut at safe points.

    Files are read as UTF-8, chunk by chunk (a 50 MB corpus never sits in memory twice), with
    their line endings kept as they are; bytes that are not UTF-8 are read as U+FFFD.
    """
    for kind, src in _sources(text_or_files):
        if kind == "text":
            start = 0
            while len(src) - start > chunk_chars:
                p = _safe_split(src, start, start + chunk_chars, specials)
                if p < 0:
                    p = _next_safe_split(src, start + chunk_chars, specials)
                    if p < 0:
                        break
                yield src[start:p]
                start = p
            if start < len(src):
                yield src[start:]
            continue
        with open(src, encoding="utf-8", errors="replace", newline="") as f:
            carry = ""
            while True:
                block = f.read(chunk_chars)
                if not block:
                    break
                buf = carry + block
                p = _safe_split(buf, 0, len(buf), specials)
                if p < 0:
                    carry = buf
                    continue
                yield buf[:p]
                carry = buf[p:]
            if carry:
                yield carry


def _num_threads(num_threads=None):
    if num_threads:
        return max(1, int(num_threads))
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:
        return os.cpu_count() or 1


_pool = None
_pool_lock = threading.Lock()


def _thread_pool():
    """One shared pool of worker threads (the compiled loops release the GIL)."""
    global _pool
    with _pool_lock:
        if _pool is None:
            _pool = concurrent.futures.ThreadPoolExecutor(
                max_workers=max(2, _num_threads()), thread_name_prefix="tinyroots-tok")
        return _pool


# ---------------------------------------------------------------------------------------------
# training, the plain-Python reference

def _count_words_python(chunks, specials):
    """{word_bytes: count} over the pre-tokens of all chunks, special tokens cut out.

        ["the cat the"] -> {b"the": 1, b" cat": 1, b" the": 1}
    """
    special_regex = _special_regex(specials)
    counts = Counter()
    for chunk in chunks:
        for segment, is_special in _split_specials(chunk, special_regex):
            if not is_special:
                counts.update(pretokenize(segment))
    return {w.encode("utf-8"): c for w, c in counts.items()}


def _merge_word(word, pair, new_id):
    """Replace each occurrence of pair in word, left to right: [1, 2, 3, 1, 2], (1, 2), 9
    -> [9, 3, 9]; and [1, 1, 1], (1, 1), 9 -> [9, 1]."""
    out = []
    i = 0
    while i < len(word):
        if i + 1 < len(word) and word[i] == pair[0] and word[i + 1] == pair[1]:
            out.append(new_id)
            i += 2
        else:
            out.append(word[i])
            i += 1
    return out


def _train_merges_python(word_counts, byte_ids, max_tokens, min_frequency=2):
    """Learn merges from {word_bytes: count}: the reference for _bpe.train_bpe (same arguments,
    same result). Returns [(a, b, new_id, count), ...] in merge order.

    Each step merges the most frequent pair of adjacent tokens (the smallest (a, b) among equals)
    in every word. Counting all pairs again after each merge would be simple and slow; instead
    `where` remembers which words hold each pair, only those words are rewritten, and their old
    pairs are subtracted from the counts and their new pairs added. A heap finds the most
    frequent pair; its entries can be stale (a count that has gone down since), which is checked
    when one is popped.
    """
    words = [[byte_ids[b] for b in w] for w in word_counts if len(w) >= 2]
    counts = [c for w, c in word_counts.items() if len(w) >= 2]

    pair_counts = defaultdict(int)
    where = defaultdict(set)
    for i, word in enumerate(words):
        for pair in zip(word, word[1:]):
            pair_counts[pair] += counts[i]
            where[pair].add(i)
    heap = [(-c, pair) for pair, c in pair_counts.items()]
    heapq.heapify(heap)

    merges = []
    n_tokens = 256
    min_frequency = max(min_frequency, 1)
    while n_tokens < max_tokens and heap:
        neg_count, pair = heapq.heappop(heap)
        count = pair_counts[pair]
        if -neg_count != count:                      # stale entry
            if count > 0:
                heapq.heappush(heap, (-count, pair))
            continue
        if count < min_frequency:
            break
        new_id = n_tokens
        n_tokens += 1
        merges.append((pair[0], pair[1], new_id, count))

        raised = set()
        for i in where.pop(pair):
            old = words[i]
            new = _merge_word(old, pair, new_id)
            delta = Counter(zip(new, new[1:]))
            delta.subtract(Counter(zip(old, old[1:])))
            for p, d in delta.items():
                if d:
                    pair_counts[p] += d * counts[i]
                if d > 0:
                    where[p].add(i)
                    raised.add(p)
            words[i] = new
        for p in raised:
            if pair_counts[p] > 0:
                heapq.heappush(heap, (-pair_counts[p], p))
    return merges


# ---------------------------------------------------------------------------------------------
# encoding one word, the plain-Python reference

def _bpe_python(word, byte_ids, ranks):
    """The ids of one pre-token (bytes): start from one token per byte, then merge the adjacent
    pair with the lowest rank, the leftmost among equals, until no pair has a rank.
    ranks: {(a, b): (rank, new_id)}.

        b"hello" -> [h, e, l, l, o] -> [h, e, ll, o] -> [he, ll, o] -> [hell, o] -> [hello]
    (Merging one pair at a time like this gives what GPT-2's encoder.py gives, and what
    Hugging Face and tiktoken give.)

    Rescanning the whole word for its best pair after every merge costs O(n) per merge, O(n^2)
    per word: a single "word" of 16,000 emoji took minutes. So the tokens are a linked list
    (nxt, prv) and the candidate pairs wait in a heap keyed (rank, position), which pops the
    lowest rank, leftmost first, exactly as the scan would choose: O(n log n).
    subtle: merging changes pairs the heap already holds. They are not removed; a popped pair
    is used only if both tokens are still there and still the same ids (lazy deletion).
    """
    ids = [byte_ids[b] for b in word]
    n = len(ids)
    nxt = list(range(1, n + 1))              # nxt[i]: the token after token i (n: none)
    prv = list(range(-1, n - 1))             # prv[i]: the token before token i (-1: none)

    def pair(i):
        """(rank, i, left id, right id, new id) for the pair that starts at token i, or None."""
        if i < 0 or nxt[i] >= n:
            return None
        r = ranks.get((ids[i], ids[nxt[i]]))
        return None if r is None else (r[0], i, ids[i], ids[nxt[i]], r[1])

    heap = [p for p in map(pair, range(n - 1)) if p is not None]
    heapq.heapify(heap)
    while heap:
        _, i, a, b, new_id = heapq.heappop(heap)
        j = nxt[i]
        if ids[i] != a or j >= n or ids[j] != b:
            continue                          # stale: one of the two was merged meanwhile
        ids[i], ids[j] = new_id, None         # token j disappears into token i
        nxt[i] = nxt[j]
        if nxt[i] < n:
            prv[nxt[i]] = i
        for k in (prv[i], i):                 # the two pairs the new token now belongs to
            p = pair(k)
            if p is not None:
                heapq.heappush(heap, p)
    return [t for t in ids if t is not None]


def _count_words_compiled(chunks, specials, num_threads):
    """_count_words_python with the compiled counter: each chunk is counted on a worker thread
    into one of num_threads counters (never two threads on one counter), merged at the end."""
    special_bytes = [s.encode("utf-8") for s in specials]
    idle = queue.SimpleQueue()
    for _ in range(num_threads):
        idle.put(_bpe.WordCounter(special_bytes))

    def count(chunk):
        counter = idle.get()
        try:
            counter.add(chunk)
        finally:
            idle.put(counter)

    if num_threads == 1:
        counter = idle.get()
        for chunk in chunks:
            counter.add(chunk)
        return counter
    pending = deque()
    pool = _thread_pool()
    for chunk in chunks:
        pending.append(pool.submit(count, chunk))
        while len(pending) > 2 * num_threads:      # bound the chunks held in memory
            pending.popleft().result()
    for f in pending:
        f.result()
    counters = [idle.get() for _ in range(num_threads)]
    total = max(counters, key=len)
    for c in counters:
        if c is not total:
            total.merge(c)
    return total
