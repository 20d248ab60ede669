"""The Tokenizer: GPT-2's byte-level BPE around the algorithm of bpe.py.

This module is what a user holds: special tokens, encode and decode (compiled loops from
_bpe.pyx when built, bpe.py's plain Python otherwise), and building a Tokenizer from GPT-2-format
data with every part checked. The files themselves are read and written by formats.py.

    tok = Tokenizer.train("tinyshakespeare.txt", vocab_size=4096)
    ids = tok.encode("To be, or not to be")        # list of ints
    tok.decode(ids)                                  # 'To be, or not to be'
    tok.save_pretrained("out/tok")                   # vocab.json, merges.txt, configs
    Tokenizer.from_pretrained("out/tok")             # also reads OpenAI's GPT-2 files
"""

from __future__ import annotations

import numbers
import os
import time

import numpy as np

from . import formats
from .bpe import (  # the algorithm: pre-tokenization, training, applying merges
    BYTE_ENCODER,
    BYTE_IDS,
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
    pretokenize,
    string_to_token,
    token_to_string,
)
from .formats import TokenizerFileError

ENDOFTEXT = "<|endoftext|>"


# ---------------------------------------------------------------------------------------------
# the tokenizer

class TokenizerBase:
    """What every tinyroots tokenizer shares. A subclass keeps self._special ({special token:
    id}) and defines vocab_size and decode()."""

    def __len__(self):
        return self.vocab_size

    @property
    def special_tokens(self):
        """{special token: id}, in id order."""
        return dict(self._special)

    @property
    def eot_token_id(self):
        """The id of <|endoftext|> (None if this vocabulary has none)."""
        return self._special.get(ENDOFTEXT)

    def decode_batch(self, batch, skip_special_tokens=False):
        """[decode(ids) for ids in batch]; batch is a list of id lists or a 2-D array."""
        if isinstance(batch, np.ndarray) and batch.ndim != 2:
            raise ValueError(f"decode_batch() takes a 2-D array (B, T), got shape {batch.shape}")
        return [self.decode(ids, skip_special_tokens) for ids in batch]

    batch_decode = decode_batch      # Hugging Face's name


def special_token_list(tokens):
    """One special token (a str) or an iterable of them -> a list, each a non-empty str."""
    tokens = [tokens] if isinstance(tokens, str) else list(tokens or ())
    for s in tokens:
        if not isinstance(s, str) or not s:
            raise ValueError(f"special tokens must be non-empty strings, got {s!r}")
    return tokens


class Tokenizer(TokenizerBase):
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
        id_to_token = _index_vocab(vocab, vocab_name)
        byte_ids = _byte_ids(vocab, vocab_name)
        merge_ids = _merge_ids(merges, vocab, vocab_name, merges_name)
        if special_tokens is None:
            # OpenAI's files name no special tokens: they are what BPE cannot produce
            derivable = set(byte_ids) | {z for _, _, z in merge_ids}
            special_tokens = [t for i, t in enumerate(id_to_token) if i not in derivable]
        specials = _special_ids(special_tokens, vocab, vocab_name)
        token_bytes = _token_bytes(id_to_token, specials)  # adds non-byte-level tokens to specials

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
        special_tokens = list(dict.fromkeys(special_token_list(special_tokens)))
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
        added = 0
        for s in special_token_list(tokens):
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
        return_tensors: None for a list of ints, "np" for an int64 array of shape (1, T), "pt"
            for a torch tensor of that shape (Hugging Face's snippets; needs torch installed).
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
                return as_tensors(np.frombuffer(raw, dtype=np.int32).astype(np.int64)[None, :],
                                  return_tensors)
            return self._encoder.encode(text, compiled_flag)
        ids = self._encode_segments(text, regex)
        if return_tensors is not None:
            _check_tensors(return_tensors)
            return as_tensors(np.asarray(ids, dtype=np.int64).reshape(1, -1), return_tensors)
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
            ids = self.encode(text, allowed_special, return_tensors and "np")
            if not return_tensors:
                return {"input_ids": ids, "attention_mask": [1] * len(ids)}
            _check_tensors(return_tensors)
            return {"input_ids": as_tensors(ids, return_tensors),
                    "attention_mask": as_tensors(np.ones_like(ids), return_tensors)}
        ids = self.encode_batch(list(text), allowed_special)
        if return_tensors:
            _check_tensors(return_tensors)
            if len({len(x) for x in ids}) > 1:
                raise ValueError("the texts have different lengths in tokens; pad them yourself "
                                 "or call without return_tensors")
            arr = np.asarray(ids, dtype=np.int64).reshape(len(ids), -1)
            return {"input_ids": as_tensors(arr, return_tensors),
                    "attention_mask": as_tensors(np.ones_like(arr), return_tensors)}
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

    # -- files ------------------------------------------------------------------------------

    def save_pretrained(self, folder):
        """Write vocab.json, merges.txt, tokenizer_config.json and special_tokens_map.json.

        The first two are GPT-2's format (OpenAI's and Hugging Face's readers take them); the
        configs tell Hugging Face which tokens are special and which is eos/bos/unk, so
        transformers' GPT2TokenizerFast.from_pretrained(folder) encodes exactly as this does.
        Each file is written atomically. Returns the paths written.
        """
        names = {"bos_token": self.bos_token, "eos_token": self.eos_token,
                 "unk_token": self.unk_token, "pad_token": self.pad_token}
        files = formats.gpt2_files(self._tokens, self.merges, self._special, names)
        return formats.write_files(folder, files)

    @classmethod
    def from_pretrained(cls, folder):
        """Load a GPT-2-style tokenizer from a folder: vocab.json + merges.txt, as written by
        save_pretrained, by Hugging Face, or OpenAI's own GPT-2 files (also under their
        original names encoder.json + vocab.bpe); or else Hugging Face's tokenizer.json when it
        holds a byte-level BPE (what transformers >= 5 saves). A name that is no folder, such
        as 'gpt2', is looked up in the local Hugging Face cache."""
        folder = os.fspath(folder)
        if not os.path.isdir(folder):
            if os.path.isfile(folder):
                raise NotADirectoryError(f"{folder} is a file; from_pretrained() takes the "
                                         "folder that holds vocab.json and merges.txt")
            folder = formats.hub_folder(folder)
        kind, first, second = formats.find_files(folder)
        if kind == "hf":
            vocab, merges, added = formats.read_hf_tokenizer_json(first)
            return cls._from_files(folder, vocab, merges, added, (first, first))
        vocab, merges = formats.read_vocab(first), formats.read_merges(second)
        return cls._from_files(folder, vocab, merges, {}, (first, second))

    @classmethod
    def _from_files(cls, folder, vocab, merges, added, files):
        """Finish from_pretrained: add the special tokens the config files name."""
        specials, names, config_added = formats.read_special_config(folder)
        added = {**config_added, **added}
        for i, token in sorted(added.items()):
            # Hugging Face keeps tokens added after training out of vocab.json
            if token not in vocab and i == len(vocab):
                vocab[token] = i
        if added:
            specials = list(dict.fromkeys((specials or []) + list(added.values())))
        for s in specials or ():
            if s not in vocab:
                raise TokenizerFileError(f"{files[0]}: the special token {s!r} named in the "
                                         "tokenizer config files is not in it")
        return cls(vocab, merges, specials, _files=files, bos_token=names.get("bos_token"),
                   eos_token=names.get("eos_token"), unk_token=names.get("unk_token"),
                   pad_token=names.get("pad_token"))


# ---------------------------------------------------------------------------------------------
# building a Tokenizer from GPT-2-format data: each step checks one thing about the files


def _index_vocab(vocab, vocab_name):
    """{token: id} -> [token by id]; ids must be 0..n-1, one per token, no gaps."""
    if not isinstance(vocab, dict):
        raise TypeError(f"vocab must be a dict {{token: id}}, got {type(vocab).__name__}")
    n = len(vocab)
    id_to_token = [None] * n
    for token, i in vocab.items():
        if not isinstance(token, str) or not isinstance(i, int) or isinstance(i, bool):
            raise TokenizerFileError(f"{vocab_name}: entry {token!r}: {i!r} is not "
                                     "a string and an integer id")
        if not 0 <= i < n:
            have = set(vocab.values())
            missing = next((j for j in range(n) if j not in have), None)
            gap = f" (id {missing} is missing)" if missing is not None else ""
            raise TokenizerFileError(f"{vocab_name}: ids must be 0..{n - 1} (one per token, no "
                                     f"gaps), but {token!r} has id {i}" + gap)
        if id_to_token[i] is not None:
            raise TokenizerFileError(f"{vocab_name}: id {i} is given to both "
                                     f"{id_to_token[i]!r} and {token!r}")
        id_to_token[i] = token
    return id_to_token


def _byte_ids(vocab, vocab_name):
    """byte -> the id of its one-byte token; all 256 must be there."""
    byte_ids = []
    for b in range(256):
        i = vocab.get(BYTE_ENCODER[b])
        if i is None:
            raise TokenizerFileError(
                f"{vocab_name}: no token for the byte 0x{b:02x} (spelled "
                f"{BYTE_ENCODER[b]!r}); a byte-level BPE vocabulary needs all 256 bytes")
        byte_ids.append(i)
    return byte_ids


def _merge_ids(merges, vocab, vocab_name, merges_name):
    """[(left, right) or "left right"] -> [(left id, right id, id of left+right)], in rank
    order; both parts and what they make must be in the vocabulary."""
    merge_ids = []
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
    return merge_ids


def _special_ids(special_tokens, vocab, vocab_name):
    """[special token] -> {special token: id}; each must be in the vocabulary."""
    specials = {}
    for s in special_tokens:
        if s not in vocab:
            raise TokenizerFileError(f"{vocab_name}: the special token {s!r} is not in it")
        specials[s] = vocab[s]
    return specials


def _token_bytes(id_to_token, specials):
    """id -> the bytes it stands for. A token not spelled in GPT-2's byte alphabet is an added
    token (Hugging Face's kind): it is made special here, and stands for its UTF-8 text."""
    token_bytes = []
    for i, t in enumerate(id_to_token):
        if t in specials:
            token_bytes.append(t.encode("utf-8"))
            continue
        try:
            token_bytes.append(string_to_token(t))
        except KeyError:
            specials[t] = i
            token_bytes.append(t.encode("utf-8"))
    return token_bytes


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
    if return_tensors not in ("np", "pt"):
        raise ValueError(f"return_tensors must be None, 'np' (a NumPy array) or 'pt' (a torch "
                         f"tensor), got {return_tensors!r}")


def as_tensors(ids, return_tensors):
    """An int64 array -> itself ("np"), or the same values as a torch tensor ("pt").

    torch is never needed by tinyroots itself; "pt" exists so that Hugging Face's snippets
    (``tokenizer.encode(text, return_tensors="pt")``) run with only the import line changed.
    """
    if return_tensors != "pt":
        return ids
    try:
        import torch
    except ImportError:
        raise ImportError("return_tensors='pt' needs PyTorch, which is not installed; use "
                          "return_tensors='np' (tinyroots models take NumPy arrays)") from None
    return torch.from_numpy(np.ascontiguousarray(ids))


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
