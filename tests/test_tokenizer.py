"""Tests for tinyroots.tokenizer: the compiled loops against their Python twins, and both against
outside references (the `regex` module for GPT-2's pre-tokenizer, Hugging Face tokenizers and
transformers, tiktoken).

Run: python -m pytest tests/test_tokenizer.py
"""

import json
import os
import pathlib
import random
import unicodedata

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyroots
import tinyroots.tokenizer
import tinyroots.tokenizer.bpe as B
import tinyroots.tokenizer.tokenizer as T
from tinyroots.tokenizer import Tokenizer, TokenizerFileError, load_tokenizer

_bpe = T._bpe
needs_compiled = pytest.mark.skipif(_bpe is None, reason="tinyroots.tokenizer._bpe is not built")

ASSET = pathlib.Path(tinyroots.__file__).parent / "assets" / "tinyshakespeare.txt"
SHAKESPEARE = ASSET.read_text(encoding="utf-8")
EOT = "<|endoftext|>"

# text that exercises every branch of GPT-2's regex
TRICKY = [
    "", " ", "  ", "\n", "\n\n\n", " \n ", "\t\t", "a", " a", "  a", "\ta", " \ta", "\t a",
    "Hello world", "Hello  world", "Hello   world\n\nNext", "trailing spaces   ",
    "don't I'm you're we've he'll she'd it's 'tis 's 't 're 've 'm 'll 'd", "DON'T 'S 'Re",
    "''s '''", "rock'n'roll", "x's's", " 's", "!'s", "hey!!! ...?", " ?!", "a\r\nb\r\n",
    "1234567890 12,345.67 3rd 4th -5 +6", "一二三四 〇 ① ② ⅷ ² ³ ¼ ٣٤٥ ໑໒ 𝟙𝟚",   # CJK numerals are letters
    "漢字かなカナ 한국어 Ελληνικά русский עברית العربية हिन्दी ไทย",
    "e\u0301 cafe\u0301 naïve Zoë \u0300\u0301 a\u20dd",                      # combining marks
    "👍 👍🏽 👨‍👩‍👧 🇫🇷 ❤️ \U0001F600\U0001F600",                              # emoji, ZWJ
    "\u00a0nbsp\u2003em\u3000ideographic\u2028line\u2029para\u0085nel\u180emongolian",
    "\x1c\x1d\x1e\x1f separators\x1c \x1d", "\x00\x01\x7f ctrl", "\u200b\u200c\u200d zw",
    "tabs\tand\x0bvertical\x0cfeed", "<|endoftext|>", "a<|endoftext|>b", "<|endoftext|><|endoftext|>",
    " <|endoftext|> ", "<|endoftext", "|endoftext|>", "<|endoftext|>\n\nHello",
]

# characters to build random text from in the property tests
ALPHABET = ("abcXYZ019 \n\t'sdmtlrve.,!?-_" "éüñç" "\u0301\u0300" "漢字一〇" "①²٣" "\u00a0\u3000\u2028"
            "\x1c\x1f\x00" "😀👍🏽\u200d")


def _assigned(text):
    """Keep characters this Python's Unicode database knows (the `regex` module may be newer)."""
    return "".join(c for c in text if unicodedata.category(c) != "Cn")


@pytest.fixture(scope="module")
def tok():
    """A small tokenizer trained on a slice of the corpus, plus two chat special tokens."""
    t = Tokenizer.train(SHAKESPEARE[:300_000], vocab_size=1024)
    assert t.add_special_tokens(["<|user|>", "<|assistant|>"]) == 2
    return t


@pytest.fixture
def python_only(monkeypatch):
    """Run the plain-Python path: no compiled module."""
    monkeypatch.setattr(T, "_bpe", None)


def _python_twin(t):
    """The same tokenizer with its compiled encoder removed."""
    twin = Tokenizer(t.get_vocab(), t.merges, list(t.special_tokens))
    twin._encoder = None
    return twin


# ---------------------------------------------------------------------------------------------
# bytes <-> unicode

def test_bytes_to_unicode_is_gpt2s():
    enc = B.bytes_to_unicode()
    assert len(enc) == 256 and len(set(enc.values())) == 256
    assert enc[ord("a")] == "a" and enc[ord(" ")] == "Ġ" and enc[ord("\n")] == "Ċ"
    assert all(c.isprintable() and not c.isspace() for c in enc.values())
    # GPT-2's ids for the one-byte tokens: "!" is 0, space is 220, newline 198, byte 0 is 188
    assert B.BYTE_IDS[ord("!")] == 0 and B.BYTE_IDS[ord(" ")] == 220
    assert B.BYTE_IDS[ord("\n")] == 198 and B.BYTE_IDS[0] == 188
    assert sorted(B.BYTE_IDS) == list(range(256))
    assert B.string_to_token(B.token_to_string(bytes(range(256)))) == bytes(range(256))


# ---------------------------------------------------------------------------------------------
# pre-tokenization against GPT-2's regex

def _reference_split():
    """GPT-2's regex from the `regex` module, else Hugging Face's ByteLevel pre-tokenizer."""
    try:
        import regex
        pattern = regex.compile(B.GPT2_SPLIT_PATTERN)
        return pattern.findall
    except ImportError:
        pre = pytest.importorskip("tokenizers").pre_tokenizers.ByteLevel(add_prefix_space=False)
        return lambda s: [B.string_to_token(p).decode("utf-8") for p, _ in pre.pre_tokenize_str(s)]


@pytest.mark.parametrize("text", TRICKY)
def test_pretokenize_matches_gpt2_regex(text):
    ref = _reference_split()(text)
    assert B.pretokenize(text) == ref
    if _bpe is not None:
        assert _bpe.split_text(text) == ref


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=60))
def test_pretokenize_matches_gpt2_regex_random(text):
    ref = _reference_split()(text)
    assert B.pretokenize(text) == ref
    if _bpe is not None:
        assert _bpe.split_text(text) == ref
    assert "".join(ref) == text


@settings(max_examples=100, deadline=None)
@given(st.text(max_size=40))
def test_pretokenize_matches_gpt2_regex_any_text(text):
    text = _assigned(text)
    ref = _reference_split()(text)
    assert B.pretokenize(text) == ref
    if _bpe is not None:
        assert _bpe.split_text(text) == ref


def test_every_character_is_classified_like_the_regex_module():
    """Letter / number / space / other, for every code point this Python's Unicode database
    assigns, as the regex module's \\p{L}, \\p{N} and \\s see it."""
    regex = pytest.importorskip("regex")
    everything = "".join(map(chr, range(0x110000)))
    expected = bytearray(0x110000)
    for value, cls in ((1, r"\p{L}"), (2, r"\p{N}"), (3, r"\s")):
        for m in regex.finditer(cls, everything):
            expected[m.start()] = value
    table = B.char_class_table()
    assigned = [cp for cp in range(0x110000) if unicodedata.category(chr(cp)) != "Cn"]
    assert [table[cp] for cp in assigned] == [expected[cp] for cp in assigned]


def test_characters_in_context_split_like_the_regex_module():
    """A sample of characters, each in contexts that exercise every alternative of the regex."""
    regex = pytest.importorskip("regex")
    rng = random.Random(0)
    chars = [chr(c) for c in range(0x110000) if unicodedata.category(chr(c)) not in ("Cn", "Cs")]
    sample = rng.sample(chars, 3000) + [c for c in chars if c < "\u3000"]
    text = "".join("x" + c + "a " + c + "1 " + c + c + "  " + c + "\n" for c in sample)
    ref = regex.compile(B.GPT2_SPLIT_PATTERN).findall(text)
    assert B.pretokenize(text) == ref
    if _bpe is not None:
        assert _bpe.split_text(text) == ref


@needs_compiled
def test_compiled_class_table_equals_python():
    assert _bpe.class_table() == B.char_class_table()


# ---------------------------------------------------------------------------------------------
# training: compiled against Python, and against Hugging Face

@needs_compiled
def test_word_counts_compiled_equal_python():
    text = SHAKESPEARE[:200_000] + "x<|endoftext|>y<|endoftext|><|endoftext|> z" + "".join(TRICKY)
    counter = _bpe.WordCounter([EOT.encode()])
    counter.add(text)
    expected = B._count_words_python([text], [EOT])
    assert dict(counter.items()) == expected
    assert not any(EOT.encode() in w for w in expected)
    # counting in two halves and merging gives the same
    a, b = _bpe.WordCounter([EOT.encode()]), _bpe.WordCounter([EOT.encode()])
    p = B._safe_split(text, 0, len(text) // 2)
    a.add(text[:p])
    b.add(text[p:])
    a.merge(b)
    assert dict(a.items()) == expected


@needs_compiled
@pytest.mark.parametrize("vocab_size,min_frequency", [(700, 2), (1500, 1), (2000, 5)])
def test_train_compiled_equals_python(vocab_size, min_frequency):
    counts = B._count_words_python([SHAKESPEARE[:150_000]], [EOT])
    counter = _bpe.WordCounter()
    counter.add_counts(counts)
    expected = B._train_merges_python(counts, B.BYTE_IDS, vocab_size, min_frequency)
    got = _bpe.train_bpe(counter, B.BYTE_IDS, vocab_size, min_frequency)
    assert got == expected
    assert len(got) > 100


@needs_compiled
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.binary(min_size=1, max_size=12).map(lambda b: bytes(x % 5 + 97 for x in b)),
                       st.integers(1, 20), max_size=30),
       st.integers(256, 300), st.integers(1, 3))
def test_train_compiled_equals_python_random(counts, max_tokens, min_frequency):
    """Tiny alphabets make the tricky cases common: overlapping pairs ("aaaa", "abab"), ties."""
    counter = _bpe.WordCounter()
    counter.add_counts(counts)
    expected = B._train_merges_python(counts, B.BYTE_IDS, max_tokens, min_frequency)
    assert _bpe.train_bpe(counter, B.BYTE_IDS, max_tokens, min_frequency) == expected


def test_train_matches_huggingface_bpe_trainer():
    """On the same text and settings, Hugging Face's BpeTrainer learns the very same merges."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import models, pre_tokenizers, trainers
    text = SHAKESPEARE[:300_000]
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.train_from_iterator([text], trainers.BpeTrainer(
        vocab_size=2048, min_frequency=2, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf_merges = [tuple(m.split(" ")) if isinstance(m, str) else tuple(m)
                 for m in json.loads(hf.to_str())["model"]["merges"]]
    ours = Tokenizer.train(text, vocab_size=2048)
    assert ours.merges == hf_merges


def test_train_python_path_gives_the_same_tokenizer(python_only):
    t = Tokenizer.train(SHAKESPEARE[:60_000], vocab_size=500)
    assert t._encoder is None and "python" in repr(t)
    T._bpe = _bpe
    if _bpe is not None:
        c = Tokenizer.train(SHAKESPEARE[:60_000], vocab_size=500)
        assert c.merges == t.merges and c.get_vocab() == t.get_vocab()


def test_train_vocab_size_and_layout():
    t = Tokenizer.train(SHAKESPEARE[:100_000], vocab_size=600, special_tokens=[EOT, "<|pad|>"])
    assert t.vocab_size == len(t) == 600
    assert t.special_tokens == {EOT: 598, "<|pad|>": 599}
    assert t.eot_token_id == t.eos_token_id == t.bos_token_id == 598
    assert len(t.merges) == 600 - 256 - 2
    assert t.id_to_token(0) == "!" and t.token_to_id("Ġ") == 220
    assert t.token_to_id("no such token") is None and t.id_to_token(10**6) is None
    with pytest.raises(ValueError, match="vocab_size"):
        Tokenizer.train("abc", vocab_size=200)
    # a tiny corpus runs out of pairs: fewer tokens than asked for
    small = Tokenizer.train("aaa bbb aaa", vocab_size=1000, special_tokens=())
    assert small.vocab_size < 1000 and small.eot_token_id is None


def test_train_inputs_text_path_and_lists(tmp_path):
    text = SHAKESPEARE[:80_000]
    cut = B._safe_split(text, 0, 40_000)   # before a space that follows a non-space
    f1, f2 = tmp_path / "a.txt", tmp_path / "b.txt"
    f1.write_text(text[:cut], encoding="utf-8")
    f2.write_text(text[cut:], encoding="utf-8")
    ref = Tokenizer.train(text, vocab_size=400)
    for src in ([f1, f2], [str(f1), str(f2)], [str(f1), text[cut:]]):
        assert Tokenizer.train(src, vocab_size=400).merges == ref.merges
    assert Tokenizer.train(f1, vocab_size=300).merges == Tokenizer.train(text[:cut], 300).merges
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer.train(str(tmp_path / "missing.txt"), vocab_size=300)
    with pytest.raises(FileNotFoundError, match="missing.txt"):
        Tokenizer.train(tmp_path / "missing.txt", vocab_size=300)
    with pytest.raises(IsADirectoryError):
        Tokenizer.train(tmp_path, vocab_size=300)
    with pytest.raises(TypeError):
        Tokenizer.train(123, vocab_size=300)


def test_chunks_cut_at_safe_points_count_like_the_whole(tmp_path):
    text = SHAKESPEARE[:100_000] + "".join(TRICKY) + " <|endoftext|> tail\n"
    path = tmp_path / "c.txt"
    path.write_bytes(text.encode("utf-8"))
    for src in (text, path):
        chunks = list(B._iter_chunks(src, chunk_chars=4096, specials=[EOT]))
        assert len(chunks) > 10 and "".join(chunks) == text
        assert [p for c in chunks for p in B.pretokenize(c)] == B.pretokenize(text)
        assert B._count_words_python(chunks, [EOT]) == B._count_words_python([text], [EOT])


def test_training_never_merges_across_special_tokens():
    text = ("hello<|endoftext|>world " * 200) + "<|endoftext|><|endoftext|>"
    t = Tokenizer.train(text, vocab_size=400)
    assert not any(c in tok for tok in t.get_vocab() if tok != EOT and len(tok) > 1 for c in "<|>")
    assert t.encode(text)[:3] == [t.token_to_id("hello"), t.eot_token_id, t.token_to_id("world")]


# ---------------------------------------------------------------------------------------------
# encoding: compiled against Python, round trips, special tokens

def test_encode_compiled_equals_python(tok):
    twin = _python_twin(tok)
    for text in [SHAKESPEARE[300_000:360_000], "".join(TRICKY), *TRICKY]:
        assert tok.encode(text) == twin.encode(text)
        assert tok.encode(text, allowed_special="none") == twin.encode(text, allowed_special="none")


@needs_compiled
def test_bpe_short_and_long_paths_equal_python(tok):
    enc = tok._encoder
    ranks = {(a, b): (r, z) for r, (a, b, z) in enumerate(tok._merges)}
    rng = random.Random(0)
    words = [w.encode() for w in B.pretokenize(SHAKESPEARE[:20_000])]
    words += [b"a" * n for n in (2, 3, 47, 48, 49, 200)] + [b" " * 300, b"ab" * 100]
    words += [bytes(rng.choice(b"the qu\xc3\xa9ick ") for _ in range(rng.randint(2, 120)))
              for _ in range(300)]
    for w in words:
        expected = B._bpe_python(w, tok._byte_ids, ranks)
        assert enc.bpe(w) == expected
        assert enc.bpe(w, True) == expected


def _bpe_by_scanning(word, byte_ids, ranks):
    """The definition _bpe_python implements with a heap: scan every adjacent pair, merge the
    lowest rank (the leftmost among equals), repeat. O(n) per merge, O(n^2) per word."""
    ids = [byte_ids[b] for b in word]
    while len(ids) > 1:
        best = min(((ranks[p][0], k) for k, p in enumerate(zip(ids, ids[1:])) if p in ranks),
                   default=None)
        if best is None:
            return ids
        k = best[1]
        ids[k:k + 2] = [ranks[(ids[k], ids[k + 1])][1]]
    return ids


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(b"abcab \xc3\xa9"), max_size=60).map(bytes))
def test_heap_bpe_equals_the_scan_it_replaces(tok, word):
    ranks = {(a, b): (r, z) for r, (a, b, z) in enumerate(tok._merges)}
    assert B._bpe_python(word, tok._byte_ids, ranks) == \
        _bpe_by_scanning(word, tok._byte_ids, ranks)


def test_heap_bpe_equals_the_scan_on_made_up_merges():
    """Random merge tables (ties between equal pairs, chains, merges of merges) on words of
    repeated letters, where the order of merges matters most."""
    rng = random.Random(1)
    for _ in range(200):
        byte_ids = list(range(256))
        ranks, tokens = {}, list(b"abc")
        for r in range(rng.randint(1, 12)):
            pair = (rng.choice(tokens), rng.choice(tokens))
            if pair not in ranks:
                ranks[pair] = (r, 256 + r)
                tokens.append(256 + r)
        word = bytes(rng.choice(b"abc") for _ in range(rng.randint(0, 40)))
        assert B._bpe_python(word, byte_ids, ranks) == _bpe_by_scanning(word, byte_ids, ranks)


def test_python_bpe_is_not_quadratic_in_one_word():
    """One pre-token of 16,000 emoji (64,000 bytes, merged ~32,000 times): the old rescan after
    every merge took about 150 s; the heap takes well under a second (limit: 10 s, for slow,
    shared CI machines). Checked against the compiled encoder when it is built."""
    import time
    gpt2 = os.environ.get("TINYROOTS_GPT2_TOKENIZER")
    t = Tokenizer.from_pretrained(gpt2) if gpt2 else Tokenizer.train(
        "\U0001F600" * 50 + SHAKESPEARE[:20_000], vocab_size=400)
    ranks = {(a, b): (r, z) for r, (a, b, z) in enumerate(t._merges)}
    word = ("\U0001F600" * 16_000).encode()
    start = time.perf_counter()
    ids = B._bpe_python(word, t._byte_ids, ranks)
    assert time.perf_counter() - start < 10.0
    assert len(ids) < len(word)                 # the emoji's bytes did merge
    if t._encoder is not None:
        assert ids == t._encoder.bpe(word)


@settings(max_examples=200, deadline=None)
@given(st.text())
def test_round_trip_any_text(tok, text):
    ids = tok.encode(text)
    if any("\ud800" <= c <= "\udfff" for c in text):
        return      # lone surrogates cannot be UTF-8: they become U+FFFD (tested below)
    assert tok.decode(ids) == text
    assert tok.decode(tok.encode(text, allowed_special="none")) == text


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=ALPHABET + "<|>endoftx", max_size=80))
def test_round_trip_and_python_path(tok, text):
    twin = _python_twin(tok)
    ids = tok.encode(text)
    assert ids == twin.encode(text)
    assert tok.decode(ids) == twin.decode(ids) == text


def test_encode_from_many_threads(tok):
    """Threads share the encoder (each takes its own word cache); results match one thread."""
    import concurrent.futures
    texts = [SHAKESPEARE[i:i + 20_000] + "<|user|>x<|endoftext|>" for i in range(0, 600_000, 20_000)]
    expected = [tok.encode(t) for t in texts]
    tok.clear_cache()
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        assert list(pool.map(tok.encode, texts)) == expected
        assert list(pool.map(lambda t: tok.encode_batch([t, t]), texts)) == [[e, e] for e in expected]


def test_lone_surrogates_become_replacement_characters(tok):
    assert tok.decode(tok.encode("a\ud800b")) == "a\ufffdb"
    assert tok.encode_batch(["x\udfff"])[0] == tok.encode("x\ufffd")


def test_special_tokens(tok):
    eot, user, asst = tok.eot_token_id, tok.token_to_id("<|user|>"), tok.token_to_id("<|assistant|>")
    assert (eot, user, asst) == (1023, 1024, 1025) and tok.vocab_size == 1026
    assert tok.encode("<|endoftext|>") == [eot]
    assert tok.encode("<|user|>hi<|assistant|>") == [user] + tok.encode("hi") + [asst]
    assert tok.encode("a<|endoftext|><|endoftext|>b") == tok.encode("a") + [eot, eot] + tok.encode("b")
    # "none": the special token's text is plain text, split like any other
    plain = tok.encode("<|endoftext|>", allowed_special="none")
    assert eot not in plain and tok.decode(plain) == EOT
    assert tok.encode("<|endoftext|>") == tok.encode("<|endoftext|>", allowed_special={EOT, "<|user|>", "<|assistant|>"})
    subset = tok.encode("<|user|><|endoftext|>", allowed_special={"<|user|>"})
    assert subset[0] == user and eot not in subset
    assert tok.encode("<|user|><|endoftext|>", allowed_special="<|user|>") == subset
    with pytest.raises(ValueError, match="not special"):
        tok.encode("x", allowed_special={"<|nope|>"})
    ids = tok.encode("<|user|>hi<|endoftext|>")
    assert tok.decode(ids) == "<|user|>hi<|endoftext|>"
    assert tok.decode(ids, skip_special_tokens=True) == "hi"
    assert tok.add_special_tokens(["<|user|>"]) == 0 and tok.vocab_size == 1026


def test_add_special_tokens_to_a_copy():
    t = Tokenizer.train(SHAKESPEARE[:50_000], vocab_size=300)
    assert t.add_special_tokens("<|sep|>") == 1 and t.special_tokens["<|sep|>"] == 300
    # a string that is already a (regular) token keeps its id and becomes special
    assert t.add_special_tokens([t.id_to_token(260)]) == 0
    assert t.encode("x" + t.id_to_token(260)) [-1] == 260


def test_tensors_and_batches(tok):
    text = "To be, or not to be"
    ids = tok.encode(text)
    arr = tok.encode(text, return_tensors="np")
    assert arr.dtype == np.int64 and arr.shape == (1, len(ids)) and arr[0].tolist() == ids
    assert _python_twin(tok).encode(text, return_tensors="np").tolist() == [ids]
    for form in (ids, tuple(ids), np.array(ids), arr, np.array(ids, dtype=np.int32), [ids]):
        assert tok.decode(form) == text
    assert tok.decode(ids[0]) == tok.decode([ids[0]])
    with pytest.raises(ValueError, match="decode_batch"):
        tok.decode(np.zeros((2, 3), dtype=np.int64))
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([1, tok.vocab_size])
    with pytest.raises(ValueError, match="out of range"):
        tok.decode([-1])
    with pytest.raises(TypeError, match="must be ints"):
        tok.decode([1, 2.5])
    with pytest.raises(TypeError, match="must be integers"):
        tok.decode(np.array([1.0, 2.0]))
    with pytest.raises(ValueError, match="return_tensors"):
        tok.encode(text, return_tensors="tf")
    with pytest.raises(TypeError):
        tok.encode(["a list"])
    texts = [SHAKESPEARE[i:i + 5000] for i in range(0, 400_000, 5000)] + TRICKY
    assert tok.encode_batch(texts) == [tok.encode(t) for t in texts]
    assert tok.encode_batch(texts, num_threads=1) == [tok.encode(t) for t in texts]
    assert tok.decode_batch(tok.encode_batch(texts)) == texts
    assert tok.decode_batch(np.array([ids, ids])) == [text, text]
    out = tok(text)
    assert out["input_ids"] == ids and out["attention_mask"] == [1] * len(ids)
    assert tok(text, return_tensors="np")["input_ids"].shape == (1, len(ids))
    assert tok(["a b", "c d"])["input_ids"] == [tok.encode("a b"), tok.encode("c d")]
    assert "vocab_size=1026" in repr(tok)


def test_invalid_utf8_decodes_with_replacement_characters(tok):
    """Ids whose bytes are not valid UTF-8 decode as bytes.decode(errors="replace")."""
    byte_id = {b: tok._byte_ids[b] for b in range(256)}
    cases = [b"\xff", b"\xe4\xb8", b"a\xe4\xb8b", b"\xf0\x9f\x98", b"\xed\xa0\x80", b"\xc0\xaf",
             b"\x80\x80abc", "漢".encode()[:2] + "漢".encode()]
    for raw in cases:
        ids = [byte_id[b] for b in raw]
        assert tok.decode(ids) == raw.decode("utf-8", errors="replace")
        assert tok.decode_bytes(ids) == raw
    # a character cut across two tokens still decodes when both are there
    ids = tok.encode("😀")
    assert tok.decode(ids) == "😀" and "\ufffd" in tok.decode(ids[:1]) + "\ufffd"


# ---------------------------------------------------------------------------------------------
# outside references: tiktoken and transformers

def test_identical_ids_to_tiktoken(tok):
    tiktoken = pytest.importorskip("tiktoken")
    ranks = {tok.token_bytes(i): i for i in range(tok.vocab_size) if i not in tok._special_ids}
    enc = tiktoken.Encoding("tinyroots-test", pat_str=B.GPT2_SPLIT_PATTERN,
                            mergeable_ranks=ranks, special_tokens=tok.special_tokens)
    texts = [SHAKESPEARE[300_000:400_000], "".join(TRICKY), *TRICKY,
             "<|user|>hello<|assistant|> hi<|endoftext|>"]
    for text in texts:
        assert tok.encode(text) == enc.encode(text, allowed_special="all")
        assert tok.encode(text, allowed_special="none") == enc.encode_ordinary(text)


@settings(max_examples=100, deadline=None)
@given(st.text(alphabet=ALPHABET, max_size=80) | st.text(max_size=40).map(_assigned))
def test_identical_ids_to_tiktoken_random(tok, text):
    tiktoken = pytest.importorskip("tiktoken")
    enc = getattr(test_identical_ids_to_tiktoken_random, "enc", None)
    if enc is None:
        ranks = {tok.token_bytes(i): i for i in range(tok.vocab_size) if i not in tok._special_ids}
        enc = tiktoken.Encoding("tinyroots-test", pat_str=B.GPT2_SPLIT_PATTERN,
                                mergeable_ranks=ranks, special_tokens=tok.special_tokens)
        test_identical_ids_to_tiktoken_random.enc = enc
    assert tok.encode(text, allowed_special="none") == enc.encode_ordinary(text)


@pytest.fixture(scope="module")
def hf_pair(tok, tmp_path_factory):
    transformers = pytest.importorskip("transformers")
    folder = tmp_path_factory.mktemp("hf")
    tok.save_pretrained(folder)
    return transformers.GPT2TokenizerFast.from_pretrained(str(folder))


def test_huggingface_loads_save_pretrained_and_encodes_identically(tok, hf_pair):
    hf = hf_pair
    assert len(hf) == tok.vocab_size
    assert hf.eos_token == hf.bos_token == EOT and hf.eos_token_id == tok.eos_token_id
    assert set(hf.all_special_tokens) == set(tok.special_tokens)
    texts = [SHAKESPEARE[300_000:340_000], "".join(TRICKY), *TRICKY,
             "<|user|>hello<|assistant|> hi there<|endoftext|>\n\nNext"]
    for text in texts:
        assert hf(text)["input_ids"] == tok.encode(text), text[:50]
    ids = tok.encode(texts[-1])
    assert hf.decode(ids) == tok.decode(ids)
    assert hf.decode(ids, skip_special_tokens=True) == tok.decode(ids, skip_special_tokens=True)
    for raw in (b"\xff", b"a\xe4\xb8", b"\xed\xa0\x80z"):
        ids = [tok._byte_ids[b] for b in raw]
        assert hf.decode(ids) == tok.decode(ids)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.text(alphabet=ALPHABET, max_size=80))
def test_huggingface_identical_random(tok, hf_pair, text):
    assert hf_pair(text)["input_ids"] == tok.encode(text)


def test_load_what_transformers_saves(tok, tmp_path):
    """transformers >= 5 saves tokenizer.json (no vocab.json / merges.txt); that loads too,
    with a pad token added on the Hugging Face side."""
    transformers = pytest.importorskip("transformers")
    tok.save_pretrained(tmp_path / "src")
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path / "src"))
    hf.add_special_tokens({"pad_token": "[PAD]"})
    hf.save_pretrained(str(tmp_path))
    if os.path.exists(tmp_path / "vocab.json"):
        os.remove(tmp_path / "vocab.json")
        os.remove(tmp_path / "merges.txt")
    back = load_tokenizer(tmp_path)
    assert back.vocab_size == tok.vocab_size + 1 == len(hf)
    assert back.pad_token_id == hf.pad_token_id == tok.vocab_size
    text = "<|user|>hi [PAD] there<|endoftext|>" + SHAKESPEARE[:3000]
    assert back.encode(text) == hf(text)["input_ids"]


def test_load_a_tokenizers_json_with_specials_first(tmp_path):
    """A tokenizer trained and saved by Hugging Face tokenizers: special token at id 0, bytes
    ordered differently. Same ids as Hugging Face on any text."""
    tokenizers = pytest.importorskip("tokenizers")
    from tokenizers import decoders, models, pre_tokenizers, trainers
    hf = tokenizers.Tokenizer(models.BPE())
    hf.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    hf.decoder = decoders.ByteLevel()
    hf.train_from_iterator([SHAKESPEARE[:100_000]], trainers.BpeTrainer(
        vocab_size=600, special_tokens=[EOT], show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    hf.save(str(tmp_path / "tokenizer.json"))
    ours = load_tokenizer(tmp_path)
    assert ours.special_tokens == {EOT: 0} and ours.vocab_size == 600
    for text in ["".join(TRICKY), SHAKESPEARE[100_000:120_000], "a<|endoftext|>b"]:
        assert ours.encode(text) == hf.encode(text).ids
        assert ours.decode(ours.encode(text)) == text
    hf.normalizer = tokenizers.normalizers.NFKC()
    hf.save(str(tmp_path / "tokenizer.json"))
    with pytest.raises(TokenizerFileError, match="tokenizer.json is not a GPT-2 style.*normalizer"):
        load_tokenizer(tmp_path)


def test_duplicate_merge_lines_keep_the_last_rank(tmp_path):
    """A pair listed twice in merges.txt takes its last rank (GPT-2's encoder.py builds a dict)."""
    transformers = pytest.importorskip("transformers")
    t = Tokenizer.train(SHAKESPEARE[:50_000], vocab_size=400)
    text = SHAKESPEARE[50_000:60_000]
    for m in t.merges:      # the first merge whose moving to the end changes the ids
        ours = Tokenizer(t.get_vocab(), t.merges + [m], list(t.special_tokens))
        if ours.encode(text) != t.encode(text):
            break
    t.save_pretrained(tmp_path)
    with open(tmp_path / "merges.txt", "a", encoding="utf-8") as f:
        f.write(" ".join(m) + "\n")
    ours = Tokenizer.from_pretrained(tmp_path)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    assert ours.encode(text) != t.encode(text)
    assert ours.encode(text) == _python_twin(ours).encode(text) == hf(text)["input_ids"]


def test_huggingface_without_special_tokens(tmp_path):
    transformers = pytest.importorskip("transformers")
    t = Tokenizer.train(SHAKESPEARE[:50_000], vocab_size=300, special_tokens=())
    t.save_pretrained(tmp_path)
    hf = transformers.GPT2TokenizerFast.from_pretrained(str(tmp_path))
    assert len(hf) == 300
    assert hf("Hello there")["input_ids"] == t.encode("Hello there")


def test_aliases():
    assert tinyroots.tokenizer.GPT2Tokenizer is Tokenizer is tinyroots.Tokenizer
