"""Byte-level BPE, GPT-2's tokenizer: train it, encode and decode with it, save it as GPT-2 files.

Text becomes ids in three steps.

1. Special tokens such as ``<|endoftext|>`` are cut out first: they map to their own id and are
   never split or merged with their neighbours.
2. Pre-tokenization splits the rest into words with GPT-2's regex (``GPT2_SPLIT_PATTERN``), so a
   merge never crosses a word boundary and a leading space sticks to the word after it:
       "Hello world, it's 2024!"  ->  "Hello", " world", ",", " it", "'s", " 2024", "!"
3. Each word is turned into UTF-8 bytes, one token per byte, and the learned merges are applied
   by rank, lowest first:
       b" world" -> [" ", "w", "o", "r", "l", "d"] -> ... -> [" world"]
   Any byte sequence can be encoded (there is a token for each of the 256 bytes), so nothing is
   ever "unknown".

Training learns the merges: count the words of the corpus, then repeatedly merge the most frequent
adjacent pair of tokens into a new token, until the vocabulary has ``vocab_size`` tokens.

On disk a tokenizer is GPT-2's pair of files: ``vocab.json`` ({token: id}) and ``merges.txt`` (one
merge per line, in rank order). Tokens there are strings, not bytes: every byte is written as one
printable character (``bytes_to_unicode``), e.g. the space byte as "Ġ", so " world" is "Ġworld".

The algorithm itself -- pre-tokenization, counting words, the merge loop, applying merges --
is in ``bpe.py`` in plain Python, with compiled twins in ``_bpe.pyx`` for the loops that take
the time; the plain versions are used when the extension is not built or when
``TINYROOTS_BACKEND=numpy``, and the tests check both give identical results. This module is
the tokenizer around it: special tokens, encode/decode, GPT-2's files.

    tok = Tokenizer.train("tinyshakespeare.txt", vocab_size=4096)
    ids = tok.encode("To be, or not to be")        # list of ints
    tok.decode(ids)                                  # 'To be, or not to be'
    tok.save_pretrained("out/tok")                   # vocab.json, merges.txt, configs
    Tokenizer.from_pretrained("out/tok")             # also reads OpenAI's GPT-2 files
"""

from __future__ import annotations

import json
import numbers
import os
import time

import numpy as np

from .bpe import (  # the algorithm: pre-tokenization, training, applying merges
    BYTE_ENCODER,
    BYTE_IDS,
    GPT2_SPLIT_PATTERN,  # noqa: F401  (re-exported: tokenizer.GPT2_SPLIT_PATTERN)
    _bpe,
    _bpe_python,
    _count_words_compiled,
    _count_words_python,
    _iter_chunks,
    _num_threads,
    _special_regex,
    _split_specials,
    _thread_pool,
    _train_merges_python,
    bytes_to_unicode,  # noqa: F401  (re-exported)
    pretokenize,
    string_to_token,
    token_to_string,
)
from .fileio import atomic_write

ENDOFTEXT = "<|endoftext|>"

class TokenizerFileError(ValueError):
    """A tokenizer file exists but cannot be used (bad JSON, unknown tokens, gaps in ids...)."""


# ---------------------------------------------------------------------------------------------
# file helpers

def _atomic_write(path, text):
    """Write text (UTF-8, newlines as given) atomically: see fileio.atomic_write."""
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))


def _read_json(path, what):
    """Parse a JSON file; any problem is a TokenizerFileError naming the file."""
    def no_duplicates(pairs):
        seen = {}
        for k, v in pairs:
            if k in seen:
                raise TokenizerFileError(f"{path}: the key {k!r} appears twice")
            seen[k] = v
        return seen
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f, object_pairs_hook=no_duplicates)
    except FileNotFoundError:
        raise FileNotFoundError(f"{what} not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise TokenizerFileError(f"{path} is not UTF-8 text ({exc})") from None
    except json.JSONDecodeError as exc:
        raise TokenizerFileError(f"{path} is not valid JSON: {exc}") from None


def _read_vocab(path):
    vocab = _read_json(path, "vocabulary file (vocab.json)")
    if not isinstance(vocab, dict):
        raise TokenizerFileError(f"{path}: expected a JSON object {{token: id}}, got a "
                                 f"{type(vocab).__name__}")
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise TokenizerFileError(f"{path}: the id of token {token!r} is {i!r}, not an int")
    return vocab


def _read_merges(path):
    """merges.txt -> [(left, right), ...]; an optional "#version" first line is skipped."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"merges file (merges.txt) not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise TokenizerFileError(f"{path} is not UTF-8 text ({exc})") from None
    merges = []
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerFileError(f"{path} line {n}: expected two tokens separated by one "
                                     f"space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


def _read_special_config(folder):
    """Special tokens named by Hugging Face's tokenizer_config.json / special_tokens_map.json.

    Returns (special token strings, {"bos_token": ..., "eos_token": ..., ...}, {id: token} of
    added_tokens_decoder), or (None, {}, {}) when neither file exists (OpenAI's own GPT-2
    files, for instance).
    """
    def content(v):
        return v.get("content") if isinstance(v, dict) else v
    names = {}
    specials = []
    added_by_id = {}
    found = False
    for fname in ("special_tokens_map.json", "tokenizer_config.json"):
        path = os.path.join(folder, fname)
        if not os.path.exists(path):
            continue
        found = True
        cfg = _read_json(path, fname)
        if not isinstance(cfg, dict):
            raise TokenizerFileError(f"{path}: expected a JSON object")
        for key in ("bos_token", "eos_token", "unk_token", "pad_token"):
            value = content(cfg.get(key))
            if isinstance(value, str):
                names.setdefault(key, value)
                specials.append(value)
        for key in ("additional_special_tokens", "extra_special_tokens"):
            extra = cfg.get(key) or []
            if isinstance(extra, dict):
                extra = list(extra.values())
            specials += [content(v) for v in extra if isinstance(content(v), str)]
        added = cfg.get("added_tokens_decoder") or {}
        if not isinstance(added, dict):
            raise TokenizerFileError(f"{path}: added_tokens_decoder must be an object")
        for i, v in added.items():
            if isinstance(content(v), str):
                if not str(i).isdigit():
                    raise TokenizerFileError(f"{path}: added_tokens_decoder has the id {i!r}")
                added_by_id[int(i)] = content(v)
                specials.append(content(v))
    if not found:
        return None, {}, {}
    return list(dict.fromkeys(specials)), names, added_by_id


# ---------------------------------------------------------------------------------------------
# the tokenizer

class Tokenizer:
    """GPT-2's byte-level BPE tokenizer.

    Build one with Tokenizer.train(corpus, vocab_size), Tokenizer.from_pretrained(folder), or
    Tokenizer(vocab, merges) from GPT-2-format data: vocab {token_string: id} and merges
    [(left, right), ...] (or ["left right", ...]) in rank order, token strings spelled with
    bytes_to_unicode(). special_tokens: which vocab entries are special (None: those that the
    byte alphabet and the merges cannot produce, e.g. GPT-2's "<|endoftext|>").
    """

    def __init__(self, vocab, merges, special_tokens=None, *, bos_token=None, eos_token=None,
                 unk_token=None, pad_token=None, _files=("vocab", "merges")):
        vocab_name, merges_name = _files
        if not isinstance(vocab, dict):
            raise TypeError(f"vocab must be a dict {{token: id}}, got {type(vocab).__name__}")
        n = len(vocab)
        id_to_token = [None] * n
        for token, i in vocab.items():
            if not isinstance(token, str) or not isinstance(i, int) or isinstance(i, bool):
                raise TokenizerFileError(f"{vocab_name}: entry {token!r}: {i!r} is not "
                                         "a string and an integer id")
            if not 0 <= i < n:
                raise TokenizerFileError(
                    f"{vocab_name}: ids must be 0..{n - 1} (one per token, no gaps), but "
                    f"{token!r} has id {i}" + self._first_gap(vocab))
            if id_to_token[i] is not None:
                raise TokenizerFileError(f"{vocab_name}: id {i} is given to both "
                                         f"{id_to_token[i]!r} and {token!r}")
            id_to_token[i] = token

        # the 256 one-byte tokens
        byte_ids = []
        for b in range(256):
            i = vocab.get(BYTE_ENCODER[b])
            if i is None:
                raise TokenizerFileError(
                    f"{vocab_name}: no token for the byte 0x{b:02x} (spelled "
                    f"{BYTE_ENCODER[b]!r}); a byte-level BPE vocabulary needs all 256 bytes")
            byte_ids.append(i)

        # merges: (left, right) -> the token their concatenation spells
        merge_ids = []
        derivable = set(byte_ids)
        for n_line, m in enumerate(merges, 1):
            if isinstance(m, str):
                parts = m.split(" ")
                if len(parts) != 2:
                    raise TokenizerFileError(f"{merges_name}: merge {n_line} is {m!r}; expected "
                                             "two tokens separated by one space")
                m = parts
            left, right = m
            for part in (left, right):
                if part not in vocab:
                    raise TokenizerFileError(f"{merges_name}: merge {n_line} ({left} {right}) "
                                             f"uses {part!r}, which is not in {vocab_name}")
            z = vocab.get(left + right)
            if z is None:
                raise TokenizerFileError(f"{merges_name}: merge {n_line} ({left} {right}) makes "
                                         f"{left + right!r}, which is not in {vocab_name}")
            merge_ids.append((vocab[left], vocab[right], z))
            derivable.add(z)

        # special tokens: named, or (for OpenAI's files) whatever BPE cannot produce
        if special_tokens is None:
            special_tokens = [t for i, t in enumerate(id_to_token) if i not in derivable]
        specials = {}
        for s in special_tokens:
            if s not in vocab:
                raise TokenizerFileError(f"{vocab_name}: the special token {s!r} is not in it")
            specials[s] = vocab[s]
        token_bytes = []
        for i, t in enumerate(id_to_token):
            if t in specials:
                token_bytes.append(t.encode("utf-8"))
                continue
            try:
                token_bytes.append(string_to_token(t))
            except KeyError:
                # not byte-level: an added token (Hugging Face's kind), treated as special
                specials[t] = i
                token_bytes.append(t.encode("utf-8"))

        self._tokens = id_to_token                    # id -> vocab.json spelling
        self._ids = dict(vocab)                       # vocab.json spelling -> id
        self._token_bytes = token_bytes               # id -> bytes
        self._merges = merge_ids                      # [(a, b, new_id)] in rank order
        self._byte_ids = byte_ids                     # byte -> id
        self._special = dict(sorted(specials.items(), key=lambda kv: kv[1]))
        self.eos_token = eos_token if eos_token is not None else self._default_special()
        self.bos_token = bos_token if bos_token is not None else self.eos_token
        self.unk_token = unk_token if unk_token is not None else self.eos_token
        self.pad_token = pad_token
        self._rebuild()

    @staticmethod
    def _first_gap(vocab):
        have = set(vocab.values())
        missing = next((i for i in range(len(vocab)) if i not in have), None)
        return f" (id {missing} is missing)" if missing is not None else ""

    def _default_special(self):
        if ENDOFTEXT in self._special:
            return ENDOFTEXT
        return next(iter(self._special), None)

    def _rebuild(self):
        """(Re)build the encoder state after the vocabulary or the special tokens changed."""
        self._special_ids = frozenset(self._special.values())
        self._special_regex = _special_regex(list(self._special))
        self._ranks = None                    # {(a, b): (rank, new_id)}, built when needed
        self._cache = {}                      # Python path: word bytes -> ids
        self._encoder = None
        if _bpe is not None:
            self._encoder = _bpe.Encoder(
                self._byte_ids, self._merges,
                [(s.encode("utf-8"), i) for s, i in self._special.items()])

    # -- training ---------------------------------------------------------------------------

    @classmethod
    def train(cls, text_or_files, vocab_size, special_tokens=(ENDOFTEXT,), min_frequency=2,
              verbose=False, num_threads=None):
        """Learn a byte-level BPE vocabulary of vocab_size tokens from a corpus.

        text_or_files: a str of text, a path (str or pathlib.Path) to a UTF-8 text file, or a list
            of them. Files are streamed chunk by chunk; words are counted on num_threads threads
            (default: every core).
        vocab_size: 256 byte tokens + the merges + the special tokens. Fewer when no pair occurs
            min_frequency times any more.
        special_tokens: strings that get their own ids (after all the others), are cut out of
            the corpus before counting, and are never split or merged.
        """
        special_tokens = list(dict.fromkeys(special_tokens or ()))
        for s in special_tokens:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
        if not isinstance(vocab_size, numbers.Integral) or vocab_size < 256 + len(special_tokens):
            raise ValueError(f"vocab_size must be an int >= 256 + {len(special_tokens)} "
                             f"special tokens = {256 + len(special_tokens)}, got {vocab_size!r}")
        t0 = time.perf_counter()
        chunks = _iter_chunks(text_or_files, specials=special_tokens)
        max_tokens = int(vocab_size) - len(special_tokens)
        progress = None
        if verbose:
            def progress(step, n_tokens):
                print(f"  merge {step}: {n_tokens}/{max_tokens} tokens "
                      f"({time.perf_counter() - t0:.1f} s)", flush=True)
        if _bpe is not None:
            counter = _count_words_compiled(chunks, special_tokens, _num_threads(num_threads))
            n_words = len(counter)
            t1 = time.perf_counter()
            merges = _bpe.train_bpe(counter, BYTE_IDS, max_tokens, min_frequency, progress)
        else:
            counts = _count_words_python(chunks, special_tokens)
            n_words = len(counts)
            t1 = time.perf_counter()
            merges = _train_merges_python(counts, BYTE_IDS, max_tokens, min_frequency)
        tok = cls._from_merge_ids(merges, special_tokens)
        if verbose:
            print(f"counted {n_words} distinct words in {t1 - t0:.2f} s; learned {len(merges)} "
                  f"merges in {time.perf_counter() - t1:.2f} s; vocab_size={tok.vocab_size}"
                  + ("" if tok.vocab_size == vocab_size else
                     f" (asked for {vocab_size}: no pair left with count >= {min_frequency})"))
        return tok

    @classmethod
    def _from_merge_ids(cls, merges, special_tokens):
        """A Tokenizer from training output [(a, b, new_id, ...)], ids as in BYTE_IDS."""
        token_bytes = [None] * (256 + len(merges))
        for b in range(256):
            token_bytes[BYTE_IDS[b]] = bytes([b])
        for a, b, z, *_ in merges:
            token_bytes[z] = token_bytes[a] + token_bytes[b]
        vocab = {token_to_string(tb): i for i, tb in enumerate(token_bytes)}
        # subtle: a word's tokens grow exactly as if the word were encoded on its own, so every
        # token is always made by the same last merge: no two merges can spell the same bytes
        if len(vocab) != len(token_bytes):
            raise RuntimeError("BPE training made two tokens with the same bytes")
        merge_strings = [(token_to_string(token_bytes[a]), token_to_string(token_bytes[b]))
                         for a, b, *_ in merges]
        specials = []
        for s in special_tokens:
            if s not in vocab:
                vocab[s] = len(vocab)
            specials.append(s)
        return cls(vocab, merge_strings, specials)

    # -- vocabulary -------------------------------------------------------------------------

    @property
    def vocab_size(self):
        return len(self._tokens)

    def __len__(self):
        return len(self._tokens)

    @property
    def special_tokens(self):
        """{special token: id}, in id order."""
        return dict(self._special)

    @property
    def eot_token_id(self):
        """The id of <|endoftext|> (None if this vocabulary has none)."""
        return self._special.get(ENDOFTEXT)

    @property
    def eos_token_id(self):
        return self._ids.get(self.eos_token) if self.eos_token is not None else None

    @property
    def bos_token_id(self):
        return self._ids.get(self.bos_token) if self.bos_token is not None else None

    @property
    def pad_token_id(self):
        """None unless a pad token was named (GPT-2 has none; batches are padded by the caller)."""
        return self._ids.get(self.pad_token) if self.pad_token is not None else None

    @property
    def merges(self):
        """[(left, right), ...] in rank order, spelled as in merges.txt."""
        return [(self._tokens[a], self._tokens[b]) for a, b, _ in self._merges]

    def get_vocab(self):
        """{token string: id} (vocab.json)."""
        return dict(self._ids)

    def token_to_id(self, token):
        """"Ġworld" -> its id, or None. Tokens are spelled as in vocab.json."""
        return self._ids.get(token)

    def id_to_token(self, i):
        """id -> its vocab.json spelling, or None if out of range."""
        return self._tokens[i] if 0 <= i < len(self._tokens) else None

    def token_bytes(self, i):
        """id -> the bytes it stands for (a special token: its UTF-8 text)."""
        return self._token_bytes[i]

    def add_special_tokens(self, tokens):
        """Add special tokens at the end of the vocabulary; returns how many are new.

        A token already in the vocabulary keeps its id and becomes special (as in Hugging Face).
        Resize the model's embeddings to the new vocab_size after adding some.
        """
        if isinstance(tokens, str):
            tokens = [tokens]
        added = 0
        for s in tokens:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
            if s in self._special:
                continue
            i = self._ids.get(s)
            if i is None:
                i = len(self._tokens)
                self._tokens.append(s)
                self._ids[s] = i
                self._token_bytes.append(s.encode("utf-8"))
                added += 1
            else:
                self._token_bytes[i] = s.encode("utf-8")
            self._special[s] = i
        if self.eos_token is None:
            self.eos_token = self.bos_token = self.unk_token = self._default_special()
        self._rebuild()
        return added

    def __repr__(self):
        specials = list(self._special)
        shown = specials if len(specials) <= 4 else specials[:4] + ["..."]
        return (f"{type(self).__name__}(vocab_size={self.vocab_size}, merges={len(self._merges)}, "
                f"special_tokens={shown}, backend={'compiled' if self._encoder else 'python'})")

    # -- encoding ---------------------------------------------------------------------------

    def _special_mode(self, allowed_special):
        """-> (compiled flag, regex for the Python split) for an allowed_special argument."""
        if allowed_special == "all":
            return True, self._special_regex
        if allowed_special in (None, "none") or not allowed_special:
            return False, None
        allowed = {allowed_special} if isinstance(allowed_special, str) else set(allowed_special)
        unknown = allowed - set(self._special)
        if unknown:
            raise ValueError(f"not special tokens of this tokenizer: {sorted(unknown)}")
        if allowed == set(self._special):
            return True, self._special_regex
        return None, _special_regex(sorted(allowed))

    def encode(self, text, allowed_special="all", return_tensors=None):
        """Text -> ids.

        allowed_special: "all" (default: every special token in the text becomes its id), "none"
            (special tokens are encoded as ordinary text), or the ones to recognise (a set, or
            one token as a str).
        return_tensors: None for a list of ints, "np" for an int64 array of shape (1, T).
        """
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}"
                            + ("; use encode_batch() for a list" if isinstance(text, list) else ""))
        text = _no_surrogates(text)
        compiled_flag, regex = self._special_mode(allowed_special)
        if self._encoder is not None and compiled_flag is not None:
            if return_tensors is not None:
                _check_tensors(return_tensors)
                raw = self._encoder.encode_int32(text, compiled_flag)
                return np.frombuffer(raw, dtype=np.int32).astype(np.int64)[None, :]
            return self._encoder.encode(text, compiled_flag)
        ids = self._encode_segments(text, regex)
        if return_tensors is not None:
            _check_tensors(return_tensors)
            return np.asarray(ids, dtype=np.int64).reshape(1, -1)
        return ids

    def _encode_segments(self, text, special_regex):
        ids = []
        for segment, is_special in _split_specials(text, special_regex):
            if is_special:
                ids.append(self._special[segment])
            elif self._encoder is not None:
                ids += self._encoder.encode(segment, False)
            else:
                ids += self._encode_ordinary_python(segment)
        return ids

    def _encode_ordinary_python(self, text):
        """The Python path: pre-tokenize, then each word from the cache or _bpe_python."""
        if self._ranks is None:
            # subtle: a pair listed twice keeps its last rank, as in GPT-2's encoder.py
            self._ranks = {(a, b): (rank, z) for rank, (a, b, z) in enumerate(self._merges)}
        cache = self._cache
        if len(cache) > 1_000_000:
            cache.clear()
        ids = []
        for piece in pretokenize(text):
            word = piece.encode("utf-8")
            out = cache.get(word)
            if out is None:
                out = cache[word] = _bpe_python(word, self._byte_ids, self._ranks)
            ids += out
        return ids

    def clear_cache(self):
        """Forget the cached ids of the words seen so far (the cache is bounded anyway)."""
        self._cache = {}
        if self._encoder is not None:
            self._encoder.clear_cache()

    def encode_ordinary(self, text):
        """encode(text, allowed_special="none"): special tokens are plain text here."""
        return self.encode(text, allowed_special="none")

    def encode_batch(self, texts, allowed_special="all", num_threads=None):
        """[encode(t) for t in texts], on several threads for big batches."""
        if isinstance(texts, str):
            raise TypeError("encode_batch() takes a list of str; use encode() for one str")
        texts = [_no_surrogates(t) if isinstance(t, str) else t for t in texts]
        for t in texts:
            if not isinstance(t, str):
                raise TypeError(f"encode_batch() takes a list of str, found a "
                                f"{type(t).__name__}")
        compiled_flag, _ = self._special_mode(allowed_special)
        if self._encoder is None or compiled_flag is None:
            return [self.encode(t, allowed_special) for t in texts]
        threads = _num_threads(num_threads)
        total = sum(map(len, texts))
        if threads == 1 or len(texts) < 2 or total < 200_000:
            return self._encoder.encode_batch(texts, compiled_flag)
        # contiguous slices of about equal size, one per thread
        n = min(threads * 4, len(texts))
        bounds = [round(k * len(texts) / n) for k in range(n + 1)]
        futures = [_thread_pool().submit(self._encoder.encode_batch, texts[a:b], compiled_flag)
                   for a, b in zip(bounds, bounds[1:])]
        out = []
        for f in futures:
            out += f.result()
        return out

    def __call__(self, text, allowed_special="all", return_tensors=None):
        """Like Hugging Face: {"input_ids": ..., "attention_mask": ...} for a str or a list."""
        if isinstance(text, str):
            ids = self.encode(text, allowed_special, return_tensors)
            mask = np.ones_like(ids) if return_tensors else [1] * len(ids)
            return {"input_ids": ids, "attention_mask": mask}
        ids = self.encode_batch(list(text), allowed_special)
        if return_tensors:
            _check_tensors(return_tensors)
            if len({len(x) for x in ids}) > 1:
                raise ValueError("the texts have different lengths in tokens; pad them yourself "
                                 "or call without return_tensors")
            arr = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)
            return {"input_ids": arr, "attention_mask": np.ones_like(arr)}
        return {"input_ids": ids, "attention_mask": [[1] * len(x) for x in ids]}

    # -- decoding ---------------------------------------------------------------------------

    def decode_bytes(self, ids, skip_special_tokens=False):
        """ids -> the bytes they stand for (no UTF-8 decoding; handy when streaming)."""
        ids = _as_id_list(ids)
        if skip_special_tokens and self._special_ids:
            special = self._special_ids
            ids = [i for i in ids if i not in special]
        token_bytes = self._token_bytes
        try:
            if _bpe is not None:
                return _bpe.decode_bytes(token_bytes, ids)
            # subtle: check the range first, as a negative index would wrap around quietly
            if ids and (min(ids) < 0 or max(ids) >= len(token_bytes)):
                raise IndexError
            return b"".join([token_bytes[i] for i in ids])
        except (IndexError, TypeError, OverflowError):
            raise _bad_ids_error(ids, len(token_bytes)) from None

    def decode(self, ids, skip_special_tokens=False):
        """ids (a list, a 1-D array, or a (1, T) array) -> text.

        Bytes that do not form valid UTF-8 (a word cut in the middle of a character, or a model
        that emits an odd byte) become U+FFFD, as in GPT-2's tokenizer and Hugging Face's.
        """
        return self.decode_bytes(ids, skip_special_tokens).decode("utf-8", errors="replace")

    def decode_batch(self, batch, skip_special_tokens=False):
        """[decode(ids) for ids in batch]; batch is a list of id lists or a 2-D array."""
        if isinstance(batch, np.ndarray) and batch.ndim != 2:
            raise ValueError(f"decode_batch() takes a 2-D array (B, T), got shape {batch.shape}")
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    batch_decode = decode_batch      # Hugging Face's name

    # -- files ------------------------------------------------------------------------------

    def save_pretrained(self, folder):
        """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json.

        The first two are GPT-2's format (OpenAI's and Hugging Face's readers take them); the
        configs tell Hugging Face which tokens are special and which is eos/bos/unk, so
        transformers' GPT2TokenizerFast.from_pretrained(folder) encodes exactly as this does.
        Each file is written atomically. Returns the paths written.
        """
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        vocab = json.dumps({t: i for i, t in enumerate(self._tokens)}, ensure_ascii=False)
        merges = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in self.merges)
        special_names = {"bos_token": self.bos_token, "eos_token": self.eos_token,
                         "unk_token": self.unk_token, "pad_token": self.pad_token}
        extra = [s for s in self._special if s not in special_names.values()]
        special_map = {k: v for k, v in special_names.items() if v is not None}
        if extra:
            special_map["additional_special_tokens"] = extra
        config = {
            "tokenizer_class": "GPT2Tokenizer",
            "add_prefix_space": False,
            "add_bos_token": False,
            "clean_up_tokenization_spaces": False,
            "errors": "replace",
            **special_names,
            "additional_special_tokens": extra,
            "added_tokens_decoder": {
                str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                         "single_word": False, "special": True}
                for s, i in self._special.items()},
        }
        files = {
            "vocab.json": vocab,
            "merges.txt": merges,
            "special_tokens_map.json": json.dumps(special_map, indent=2, ensure_ascii=False),
            "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False),
        }
        paths = []
        for name, text in files.items():
            path = os.path.join(folder, name)
            _atomic_write(path, text + ("" if text.endswith("\n") else "\n"))
            paths.append(path)
        return paths

    @classmethod
    def from_pretrained(cls, folder):
        """Load a GPT-2-style tokenizer from a folder: vocab.json + merges.txt, as written by
        save_pretrained, by Hugging Face, or OpenAI's own GPT-2 files (also under their
        original names encoder.json + vocab.bpe); or else Hugging Face's tokenizer.json when it
        holds a byte-level BPE (what transformers >= 5 saves)."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            if os.path.isfile(folder):
                raise NotADirectoryError(f"{folder} is a file; from_pretrained() takes the "
                                         "folder that holds vocab.json and merges.txt")
            folder = _hub_folder(folder)
        vocab_file = os.path.join(folder, "vocab.json")
        merges_file = os.path.join(folder, "merges.txt")
        hf_file = os.path.join(folder, "tokenizer.json")
        if not os.path.exists(vocab_file) and not os.path.exists(merges_file):
            if os.path.isfile(os.path.join(folder, "encoder.json")):
                # the names in OpenAI's gpt-2 repository: the same two files
                vocab_file = os.path.join(folder, "encoder.json")
                merges_file = os.path.join(folder, "vocab.bpe")
            elif os.path.isfile(hf_file):
                vocab, merges, added = _read_hf_tokenizer_json(hf_file)
                return cls._from_files(folder, vocab, merges, added, (hf_file, hf_file))
        for path in (vocab_file, merges_file):
            if not os.path.isfile(path):
                raise FileNotFoundError(f"{os.path.basename(path)} not found in {folder}")
        vocab = _read_vocab(vocab_file)
        merges = _read_merges(merges_file)
        return cls._from_files(folder, vocab, merges, {}, (vocab_file, merges_file))

    @classmethod
    def _from_files(cls, folder, vocab, merges, added, files):
        """Finish from_pretrained: add the special tokens the config files name."""
        specials, names, config_added = _read_special_config(folder)
        added = {**config_added, **added}
        for i, token in sorted(added.items()):
            # Hugging Face keeps tokens added after training out of vocab.json
            if token not in vocab and i == len(vocab):
                vocab[token] = i
        if added:
            specials = list(dict.fromkeys((specials or []) + list(added.values())))
        if specials is not None:
            specials = [s for s in specials if s in vocab or _raise_missing(s, files[0])]
        return cls(vocab, merges, specials, _files=files, bos_token=names.get("bos_token"),
                   eos_token=names.get("eos_token"), unk_token=names.get("unk_token"),
                   pad_token=names.get("pad_token"))


def _read_hf_tokenizer_json(path):
    """Hugging Face's tokenizer.json -> (vocab, merges, {id: added token}), if it is GPT-2's
    kind of tokenizer: a BPE model behind the byte-level pre-tokenizer, nothing else."""
    data = _read_json(path, "tokenizer.json")
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        if isinstance(data, dict) and data.get("type") == "char":
            raise TokenizerFileError(f"{path} holds a CharTokenizer; use CharTokenizer."
                                     "from_pretrained or load_tokenizer")
        raise TokenizerFileError(f"{path}: no \"model\" in it; not a Hugging Face tokenizer")
    pre = data.get("pre_tokenizer") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"the model is {model.get('type')!r}, not 'BPE'")
    if not isinstance(pre, dict) or pre.get("type") != "ByteLevel" or \
            pre.get("add_prefix_space") or pre.get("use_regex") is False:
        problems.append(f"the pre-tokenizer is {pre!r}, not ByteLevel(add_prefix_space=False)")
    if data.get("normalizer"):
        problems.append("it has a normalizer")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"):
        if model.get(key):
            problems.append(f"its model sets {key}={model[key]!r}")
    if problems:
        raise TokenizerFileError(f"{path} is not a GPT-2 style byte-level BPE tokenizer: "
                                 + "; ".join(problems))
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise TokenizerFileError(f"{path}: model.vocab must be an object and model.merges a list")
    added = {}
    for t in data.get("added_tokens") or []:
        if not (isinstance(t, dict) and isinstance(t.get("id"), int)
                and isinstance(t.get("content"), str)):
            raise TokenizerFileError(f"{path}: bad entry in added_tokens: {t!r}")
        added[t["id"]] = t["content"]
    return dict(vocab), merges, added


def _raise_missing(token, vocab_file):
    raise TokenizerFileError(f"{vocab_file}: the special token {token!r} named in the "
                             "tokenizer config files is not in it")


def _bad_ids_error(ids, n):
    """The error for the first id that is not an int in range(n)."""
    for i in ids:
        if not isinstance(i, (int, np.integer)) or isinstance(i, bool):
            return TypeError(f"token ids must be ints, got {i!r} ({type(i).__name__})")
        if not 0 <= i < n:
            return ValueError(f"token id {i} is out of range for a vocabulary of {n} tokens")
    return ValueError("invalid token ids")


def _no_surrogates(text):
    """Replace lone surrogates (which UTF-8 cannot encode) with U+FFFD, as tiktoken does."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _check_tensors(return_tensors):
    if return_tensors != "np":
        raise ValueError(f"return_tensors must be None or 'np' (tinyroots returns NumPy "
                         f"arrays), got {return_tensors!r}")


def _as_id_list(ids):
    """A list of ints from a list, an int, a 1-D array or a (1, T) array."""
    if isinstance(ids, (int, np.integer)):
        return [int(ids)]
    if isinstance(ids, np.ndarray):
        if ids.ndim == 2 and ids.shape[0] == 1:
            ids = ids[0]
        if ids.ndim != 1:
            raise ValueError(f"decode() takes ids of shape (T,) or (1, T), got {ids.shape}; "
                             "use decode_batch() for (B, T)")
        if ids.size and not np.issubdtype(ids.dtype, np.integer):
            raise TypeError(f"token ids must be integers, got an array of {ids.dtype}")
        return ids.tolist()
    if isinstance(ids, (list, tuple)):
        if ids and isinstance(ids[0], (list, tuple, np.ndarray)):
            if len(ids) != 1:
                raise ValueError("decode() takes one sequence of ids; use decode_batch() for "
                                 f"{len(ids)} sequences")
            return _as_id_list(ids[0])
        return ids
    if hasattr(ids, "tolist"):          # e.g. a tensor from another library
        return _as_id_list(np.asarray(ids))
    return list(ids)


# ---------------------------------------------------------------------------------------------
# a character-level tokenizer (nanoGPT's shakespeare_char)

class CharTokenizer:
    """One token per character: the vocabulary is the sorted set of characters of the corpus,
    then any special tokens. Same interface as Tokenizer; saved as tokenizer.json
    {"type": "char", "chars": [...], "special_tokens": [...]}.

        >>> tok = CharTokenizer.train("hello"); tok.encode("hole")
        [1, 3, 2, 0]
    """

    def __init__(self, chars, special_tokens=()):
        chars = list(chars)
        for c in chars:
            if not isinstance(c, str) or len(c) != 1:
                raise ValueError(f"CharTokenizer chars must be single characters, got {c!r}")
        if len(set(chars)) != len(chars):
            raise ValueError("CharTokenizer chars contain duplicates")
        self._chars = chars
        self._stoi = {c: i for i, c in enumerate(chars)}
        self._special = {}
        self.add_special_tokens(special_tokens)

    @classmethod
    def train(cls, text_or_files, vocab_size=None, special_tokens=(), verbose=False, **unused):
        """The sorted set of characters of the corpus. vocab_size, if given, must be at least
        the number of tokens found (it is only checked: a character vocabulary is what it is)."""
        chars = set()
        for chunk in _iter_chunks(text_or_files):
            chars.update(chunk)
        tok = cls(sorted(chars), special_tokens)
        if vocab_size is not None and tok.vocab_size > vocab_size:
            raise ValueError(f"the corpus has {tok.vocab_size} distinct characters and special "
                             f"tokens, more than vocab_size={vocab_size}")
        if verbose:
            print(f"CharTokenizer: {tok.vocab_size} tokens")
        return tok

    @property
    def vocab_size(self):
        return len(self._chars) + len(self._special)

    def __len__(self):
        return self.vocab_size

    @property
    def special_tokens(self):
        return dict(self._special)

    @property
    def eot_token_id(self):
        return self._special.get(ENDOFTEXT)

    eos_token_id = bos_token_id = eot_token_id

    @property
    def pad_token_id(self):
        return None

    def get_vocab(self):
        return {**self._stoi, **self._special}

    def token_to_id(self, token):
        return self._special.get(token, self._stoi.get(token))

    def id_to_token(self, i):
        if 0 <= i < len(self._chars):
            return self._chars[i]
        if len(self._chars) <= i < self.vocab_size:
            return list(self._special)[i - len(self._chars)]
        return None

    def add_special_tokens(self, tokens):
        if isinstance(tokens, str):
            tokens = [tokens]
        added = 0
        for s in tokens:
            if not isinstance(s, str) or not s:
                raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
            if s not in self._special:
                self._special[s] = self.vocab_size
                added += 1
        self._special_regex = _special_regex(list(self._special))
        self._itos = self._chars + list(self._special)
        return added

    def __repr__(self):
        return f"CharTokenizer(vocab_size={self.vocab_size}, special_tokens={list(self._special)})"

    def encode(self, text, allowed_special="all", return_tensors=None):
        if not isinstance(text, str):
            raise TypeError(f"encode() takes a str, got {type(text).__name__}")
        regex = self._special_regex if allowed_special == "all" else (
            None if allowed_special in (None, "none") or not allowed_special
            else _special_regex(sorted(set(allowed_special))))
        ids = []
        stoi = self._stoi
        for segment, is_special in _split_specials(text, regex):
            if is_special:
                ids.append(self._special[segment])
                continue
            try:
                ids += [stoi[c] for c in segment]
            except KeyError:
                bad = next(c for c in segment if c not in stoi)
                raise ValueError(f"character {bad!r} is not in this CharTokenizer's vocabulary "
                                 f"of {len(self._chars)} characters") from None
        if return_tensors is not None:
            _check_tensors(return_tensors)
            return np.asarray(ids, dtype=np.int64).reshape(1, -1)
        return ids

    def encode_batch(self, texts, allowed_special="all", num_threads=None):
        return [self.encode(t, allowed_special) for t in texts]

    def __call__(self, text, allowed_special="all", return_tensors=None):
        ids = self.encode(text, allowed_special, return_tensors)
        mask = np.ones_like(ids) if return_tensors else [1] * len(ids)
        return {"input_ids": ids, "attention_mask": mask}

    def decode(self, ids, skip_special_tokens=False):
        ids = _as_id_list(ids)
        if skip_special_tokens and self._special:
            special = set(self._special.values())
            ids = [i for i in ids if i not in special]
        try:
            if ids and (min(ids) < 0 or max(ids) >= self.vocab_size):
                raise IndexError
            return "".join([self._itos[i] for i in ids])
        except (IndexError, TypeError):
            raise _bad_ids_error(ids, self.vocab_size) from None

    def decode_batch(self, batch, skip_special_tokens=False):
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    batch_decode = decode_batch

    def save_pretrained(self, folder):
        folder = os.fspath(folder)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "tokenizer.json")
        _atomic_write(path, json.dumps({"type": "char", "chars": self._chars,
                                        "special_tokens": list(self._special)},
                                       ensure_ascii=False) + "\n")
        return [path]

    @classmethod
    def from_pretrained(cls, folder):
        folder = os.fspath(folder)
        path = os.path.join(folder, "tokenizer.json")
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        data = _read_json(path, "character tokenizer file (tokenizer.json)")
        if not isinstance(data, dict) or data.get("type") != "char":
            got = data.get("type") if isinstance(data, dict) else data
            raise TokenizerFileError(f"{path}: expected {{\"type\": \"char\", \"chars\": "
                                     f"[...]}}, got type {got!r}")
        chars = data.get("chars")
        specials = data.get("special_tokens", [])
        if not isinstance(chars, list) or not isinstance(specials, list):
            raise TokenizerFileError(f"{path}: \"chars\" and \"special_tokens\" must be lists")
        try:
            return cls(chars, specials)
        except ValueError as exc:
            raise TokenizerFileError(f"{path}: {exc}") from None


def _hub_folder(name):
    """A name that is not a folder, e.g. 'gpt2': its snapshot in the local Hugging Face cache
    (never downloaded), or FileNotFoundError saying where the files should be."""
    if name.startswith((".", "/", "~")) or name.count("/") > 1 or not name:
        raise FileNotFoundError(f"tokenizer folder not found: {name}")
    from .hub import resolve_model_dir
    return resolve_model_dir(name, required=("vocab.json",))


def load_tokenizer(folder):
    """The tokenizer saved in folder: a CharTokenizer (tokenizer.json of type "char") or a
    byte-level BPE Tokenizer (vocab.json + merges.txt)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        folder = _hub_folder(folder)
    if os.path.isfile(os.path.join(folder, "vocab.json")) or \
            os.path.isfile(os.path.join(folder, "encoder.json")):
        return Tokenizer.from_pretrained(folder)
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        data = _read_json(path, "tokenizer.json")
        if isinstance(data, dict) and data.get("type") == "char":
            return CharTokenizer.from_pretrained(folder)
        return Tokenizer.from_pretrained(folder)      # Hugging Face's format
    raise FileNotFoundError(f"no tokenizer in {folder}: expected vocab.json + merges.txt "
                            "(byte-level BPE) or tokenizer.json (characters, or Hugging Face's)")


GPT2Tokenizer = Tokenizer
