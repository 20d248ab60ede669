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

The package, in reading order:

    bpe.py         the algorithm in plain Python: pre-tokenization, counting words, the merge
                   loop, applying merges
    _bpe.pyx       compiled twins of the loops that take the time (used when built, unless
                   TINYROOTS_BACKEND=numpy; the tests check both give identical results)
    tokenizer.py   the Tokenizer around it: special tokens, encode/decode, checks on its data
    formats.py     the files: GPT-2's vocab.json + merges.txt, Hugging Face's configs and
                   tokenizer.json
    char.py        CharTokenizer, one token per character
    streamer.py    TextStreamer: print text as generated ids arrive

    tok = Tokenizer.train("tinyshakespeare.txt", vocab_size=4096)
    ids = tok.encode("To be, or not to be")        # list of ints
    tok.decode(ids)                                  # 'To be, or not to be'
    tok.save_pretrained("out/tok")                   # vocab.json, merges.txt, configs
    Tokenizer.from_pretrained("out/tok")             # also reads OpenAI's GPT-2 files
"""

import os

from . import formats
from .bpe import GPT2_SPLIT_PATTERN, bytes_to_unicode
from .char import CharTokenizer
from .formats import TokenizerFileError
from .streamer import TextStreamer
from .tokenizer import ENDOFTEXT, Tokenizer

__all__ = ["CharTokenizer", "ENDOFTEXT", "GPT2Tokenizer", "GPT2_SPLIT_PATTERN", "TextStreamer",
           "Tokenizer", "TokenizerFileError", "bytes_to_unicode", "load_tokenizer"]


def load_tokenizer(folder):
    """The tokenizer saved in folder: a CharTokenizer (tokenizer.json of type "char") or a
    byte-level BPE Tokenizer (vocab.json + merges.txt)."""
    folder = os.fspath(folder)
    if not os.path.isdir(folder):
        folder = formats.hub_folder(folder)
    if os.path.isfile(os.path.join(folder, "vocab.json")) or \
            os.path.isfile(os.path.join(folder, "encoder.json")):
        return Tokenizer.from_pretrained(folder)
    path = os.path.join(folder, "tokenizer.json")
    if os.path.isfile(path):
        data = formats.read_tokenizer_json(path, "tokenizer.json")
        if isinstance(data, dict) and data.get("type") == "char":
            return CharTokenizer.from_pretrained(folder)
        return Tokenizer.from_pretrained(folder)      # Hugging Face's format
    raise FileNotFoundError(f"no tokenizer in {folder}: expected vocab.json + merges.txt "
                            "(byte-level BPE) or tokenizer.json (characters, or Hugging Face's)")


GPT2Tokenizer = Tokenizer
