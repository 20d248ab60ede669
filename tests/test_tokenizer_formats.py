"""Tests for tinyroots.tokenizer.formats: GPT-2's vocab.json + merges.txt, Hugging Face's config
files and tokenizer.json, OpenAI's file names; every corrupt file gives one clear error."""

import json
import os
import pathlib

import pytest

import tinyroots
from tinyroots.tokenizer import Tokenizer, TokenizerFileError, load_tokenizer

SHAKESPEARE = (pathlib.Path(tinyroots.__file__).parent / "assets" / "tinyshakespeare.txt").read_text(
    encoding="utf-8")
EOT = "<|endoftext|>"


@pytest.fixture(scope="module")
def tok():
    t = Tokenizer.train(SHAKESPEARE[:100_000], vocab_size=600)
    t.add_special_tokens(["<|user|>", "<|assistant|>"])
    return t


# ---------------------------------------------------------------------------------------------
# files

def test_save_and_load_round_trip(tok, tmp_path):
    paths = tok.save_pretrained(tmp_path / "t")
    assert sorted(os.path.basename(p) for p in paths) == [
        "merges.txt", "special_tokens_map.json", "tokenizer_config.json", "vocab.json"]
    assert sorted(os.listdir(tmp_path / "t")) == sorted(os.path.basename(p) for p in paths)
    assert (tmp_path / "t" / "merges.txt").read_text(encoding="utf-8").startswith("#version: 0.2\n")
    back = Tokenizer.from_pretrained(tmp_path / "t")
    assert back.get_vocab() == tok.get_vocab() and back.merges == tok.merges
    assert back.special_tokens == tok.special_tokens and back.eot_token_id == tok.eot_token_id
    text = "<|user|>" + SHAKESPEARE[:5000]
    assert back.encode(text) == tok.encode(text)
    assert isinstance(load_tokenizer(tmp_path / "t"), Tokenizer)
    tok.save_pretrained(tmp_path / "t")        # overwriting works and leaves no temp files
    assert len(os.listdir(tmp_path / "t")) == 4


def _write_gpt2_layout(folder, tok):
    """The layout of OpenAI's GPT-2 files: vocab.json with <|endoftext|> last, merges.txt with
    a "#version" header, no config files."""
    folder.mkdir()
    vocab = {t: i for t, i in tok.get_vocab().items() if t not in tok.special_tokens}
    vocab[EOT] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(f"{a} {b}" for a, b in tok.merges) + "\n", encoding="utf-8")
    return vocab


def test_load_openai_gpt2_layout(tmp_path):
    t = Tokenizer.train(SHAKESPEARE[:80_000], vocab_size=500)
    vocab = _write_gpt2_layout(tmp_path / "gpt2", t)
    g = Tokenizer.from_pretrained(tmp_path / "gpt2")
    assert g.special_tokens == {EOT: len(vocab) - 1} and g.eos_token_id == len(vocab) - 1
    assert g.encode("Hello<|endoftext|>") == t.encode("Hello<|endoftext|>")
    # the same files under the names of OpenAI's gpt-2 repository
    os.rename(tmp_path / "gpt2" / "vocab.json", tmp_path / "gpt2" / "encoder.json")
    os.rename(tmp_path / "gpt2" / "merges.txt", tmp_path / "gpt2" / "vocab.bpe")
    assert load_tokenizer(tmp_path / "gpt2").encode("Hello<|endoftext|>") == g.encode("Hello<|endoftext|>")


@pytest.mark.skipif(not os.environ.get("TINYROOTS_GPT2_TOKENIZER"),
                    reason="set TINYROOTS_GPT2_TOKENIZER to a folder with GPT-2's vocab.json + merges.txt")
def test_real_gpt2_files():
    g = Tokenizer.from_pretrained(os.environ["TINYROOTS_GPT2_TOKENIZER"])
    assert g.vocab_size == 50257 and g.eot_token_id == 50256
    assert g.encode("Hello world") == [15496, 995] and g.encode(" Hello world") == [18435, 995]


@pytest.fixture
def good_folder(tmp_path):
    t = Tokenizer.train(SHAKESPEARE[:30_000], vocab_size=300)
    folder = tmp_path / "tok"
    t.save_pretrained(folder)
    return folder


def _vocab(folder):
    return json.loads((folder / "vocab.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("corrupt,error,message", [
    (lambda f: (f / "vocab.json").unlink(), FileNotFoundError, "vocab.json"),
    (lambda f: (f / "merges.txt").unlink(), FileNotFoundError, "merges.txt"),
    (lambda f: (f / "vocab.json").write_text("{not json", encoding="utf-8"), TokenizerFileError,
     "vocab.json: not valid JSON"),
    (lambda f: (f / "vocab.json").write_text("[1, 2]", encoding="utf-8"), TokenizerFileError,
     "vocab.json: expected a JSON object"),
    (lambda f: (f / "vocab.json").write_bytes(b"\xff\xfe{}"), TokenizerFileError, "not UTF-8"),
    (lambda f: (f / "vocab.json").write_text(json.dumps({**_vocab(f), "zz": "7"}), encoding="utf-8"),
     TokenizerFileError, "'zz' is '7', not an int"),
    (lambda f: (f / "vocab.json").write_text(json.dumps({**_vocab(f), "zz": 5000}), encoding="utf-8"),
     TokenizerFileError, "vocab.json: ids must be 0..300"),
    (lambda f: (f / "vocab.json").write_text(json.dumps({**_vocab(f), "zz": 7}), encoding="utf-8"),
     TokenizerFileError, "vocab.json: ids must be 0..300|id 7 is given to both"),
    (lambda f: (f / "vocab.json").write_text(
        json.dumps({k: v for k, v in _vocab(f).items() if k != "Ġ"}), encoding="utf-8"),
     TokenizerFileError, "vocab.json: ids must be 0..|vocab.json: no token for the byte"),
    (lambda f: (f / "vocab.json").write_text(
        '{"a": 0, "a": 1}', encoding="utf-8"), TokenizerFileError, "'a' appears twice"),
    (lambda f: (f / "merges.txt").write_text("#version: 0.2\nĠ t\nĠt hex\n", encoding="utf-8"),
     TokenizerFileError, "merges.txt: merge 2 .* uses 'hex', which is not in .*vocab.json"),
    (lambda f: (f / "merges.txt").write_text("#version: 0.2\nq z\n", encoding="utf-8"),
     TokenizerFileError, "merges.txt: merge 1 \\(q z\\) makes 'qz', which is not in"),
    (lambda f: (f / "merges.txt").write_text("#version: 0.2\nĠ t x\n", encoding="utf-8"),
     TokenizerFileError, "merges.txt line 2: expected two tokens"),
    (lambda f: (f / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": "<|nope|>"}), encoding="utf-8"),
     TokenizerFileError, "special token '<|nope|>' named in the tokenizer config"),
    (lambda f: (f / "tokenizer_config.json").write_text("{", encoding="utf-8"),
     TokenizerFileError, "tokenizer_config.json: not valid JSON"),
])
def test_corrupt_files_give_one_clear_error(good_folder, corrupt, error, message):
    corrupt(good_folder)
    with pytest.raises(error, match=message):
        Tokenizer.from_pretrained(good_folder)


def test_missing_folder_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="not found"):
        Tokenizer.from_pretrained(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no tokenizer in"):
        load_tokenizer(tmp_path)
    (tmp_path / "f").write_text("x")
    with pytest.raises(NotADirectoryError):
        Tokenizer.from_pretrained(tmp_path / "f")


@pytest.mark.parametrize("name", ["vocab.json", "tokenizer_config.json",
                                  "special_tokens_map.json"])
def test_deeply_nested_json_is_one_clear_error(good_folder, name):
    (good_folder / name).write_text("[" * 200_000, encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=f"{name}: not valid JSON here .*nested") as e:
        Tokenizer.from_pretrained(good_folder)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("config,message", [
    ({"additional_special_tokens": 5},
     "tokenizer_config.json: 'additional_special_tokens' is 5 \\(int\\), expected list or null"),
    ({"additional_special_tokens": [5]},
     "tokenizer_config.json: 'additional_special_tokens' holds 5, expected token strings"),
    ({"eos_token": 7}, "tokenizer_config.json: 'eos_token' is 7 \\(int\\), expected str or dict"),
    ({"added_tokens_decoder": []}, "'added_tokens_decoder' is \\[\\] \\(list\\), expected dict"),
    ({"added_tokens_decoder": {"x": {"content": "<a>"}}}, "added_tokens_decoder has the id 'x'"),
    ({"extra_special_tokens": "<a>"}, "'extra_special_tokens' is '<a>' \\(str\\)"),
])
def test_tokenizer_config_of_the_wrong_types_names_file_and_key(good_folder, config, message):
    (good_folder / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")
    with pytest.raises(TokenizerFileError, match=message):
        Tokenizer.from_pretrained(good_folder)


def test_a_tokenizer_from_the_hub_cache_by_owner_and_name(tmp_path, monkeypatch, tok):
    snap = tmp_path / "hub" / "models--openai-community--gpt2" / "snapshots" / "0123abcd"
    tok.save_pretrained(snap)
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "hub"))
    for name in ("openai-community/gpt2", "gpt2"):
        assert load_tokenizer(name).get_vocab() == tok.get_vocab()
    with pytest.raises(FileNotFoundError, match="never downloads"):
        load_tokenizer("someone/else")
