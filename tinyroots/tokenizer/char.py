"""A character-level tokenizer (nanoGPT's shakespeare_char): one token per character.

Same interface as Tokenizer (encode, decode, special tokens, save_pretrained/from_pretrained),
saved as one tokenizer.json {"type": "char", "chars": [...], "special_tokens": [...]}.
"""

import json
import os

import numpy as np

from .bpe import _iter_chunks, _special_regex, _split_specials
from .formats import HF_TOKENIZER_NAME, TokenizerFileError, read_tokenizer_json, write_files
from .tokenizer import (TokenizerBase, _as_id_list, _bad_ids_error, _check_tensors, as_tensors,
                        special_token_list)


class CharTokenizer(TokenizerBase):
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
        if not chars:
            raise ValueError("CharTokenizer.train: the corpus is empty (no characters to make a "
                             "vocabulary of)")
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

    eos_token_id = bos_token_id = TokenizerBase.eot_token_id

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
        added = 0
        for s in special_token_list(tokens):
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
            return as_tensors(np.asarray(ids, dtype=np.int64).reshape(1, -1), return_tensors)
        return ids

    def encode_batch(self, texts, allowed_special="all", num_threads=None):
        return [self.encode(t, allowed_special) for t in texts]

    def __call__(self, text, allowed_special="all", return_tensors=None):
        ids = self.encode(text, allowed_special, return_tensors and "np")
        if not return_tensors:
            return {"input_ids": ids, "attention_mask": [1] * len(ids)}
        return {"input_ids": as_tensors(ids, return_tensors),
                "attention_mask": as_tensors(np.ones_like(ids), return_tensors)}

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

    def save_pretrained(self, folder):
        """Write tokenizer.json: {"type": "char", "chars": [...], "special_tokens": [...]}."""
        text = json.dumps({"type": "char", "chars": self._chars,
                           "special_tokens": list(self._special)}, ensure_ascii=False) + "\n"
        return write_files(folder, {HF_TOKENIZER_NAME: text})

    @classmethod
    def from_pretrained(cls, folder):
        folder = os.fspath(folder)
        path = os.path.join(folder, HF_TOKENIZER_NAME)
        if not os.path.isdir(folder):
            raise FileNotFoundError(f"tokenizer folder not found: {folder}")
        data = read_tokenizer_json(path, "character tokenizer file (tokenizer.json)")
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
