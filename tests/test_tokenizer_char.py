"""Tests for tinyroots.tokenizer.char: CharTokenizer, one token per character."""

import json
import pathlib

import numpy as np
import pytest

import tinyroots
from tinyroots.tokenizer import CharTokenizer, Tokenizer, TokenizerFileError, load_tokenizer

ASSET = pathlib.Path(tinyroots.__file__).parent / "assets" / "tinyshakespeare.txt"
SHAKESPEARE = ASSET.read_text(encoding="utf-8")
EOT = "<|endoftext|>"


# ---------------------------------------------------------------------------------------------
# CharTokenizer

def test_char_tokenizer(tmp_path):
    text = SHAKESPEARE[:200_000]
    t = CharTokenizer.train(text)
    assert t.vocab_size == len(set(text)) and t._chars == sorted(set(text))
    ids = t.encode(text[:1000])
    assert t.decode(ids) == text[:1000] and t.decode(np.array([ids])) == text[:1000]
    assert t.encode("ab", return_tensors="np").shape == (1, 2)
    assert t.eot_token_id is None
    with pytest.raises(ValueError, match="not in this CharTokenizer"):
        t.encode("漢")
    with pytest.raises(ValueError, match="out of range"):
        t.decode([t.vocab_size])
    assert t.add_special_tokens([EOT]) == 1 and t.eot_token_id == t.vocab_size - 1
    assert t.encode("a<|endoftext|>") == [t.token_to_id("a"), t.eot_token_id]
    assert t.decode(t.encode("a<|endoftext|>"), skip_special_tokens=True) == "a"
    t.save_pretrained(tmp_path / "c")
    data = json.loads((tmp_path / "c" / "tokenizer.json").read_text(encoding="utf-8"))
    assert data["type"] == "char" and data["chars"] == sorted(set(text))
    back = load_tokenizer(tmp_path / "c")
    assert isinstance(back, CharTokenizer) and back.encode("a<|endoftext|>b") == t.encode("a<|endoftext|>b")
    assert CharTokenizer.train(ASSET).vocab_size == 65      # nanoGPT's shakespeare_char
    with pytest.raises(ValueError, match="vocab_size"):
        CharTokenizer.train("abc", vocab_size=2)
    (tmp_path / "c" / "tokenizer.json").write_text('{"type": "char", "chars": ["a", "a"]}')
    with pytest.raises(TokenizerFileError, match="duplicates"):
        CharTokenizer.from_pretrained(tmp_path / "c")
    with pytest.raises(TokenizerFileError, match="holds a CharTokenizer"):
        Tokenizer.from_pretrained(tmp_path / "c")
