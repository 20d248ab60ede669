"""tinyroots.fileio: atomic writes that keep the umask, and the one JSON reader every file uses."""

import json
import os

import pytest

from tinyroots.fileio import atomic_write, parse_json, read_json, require_types, write_json


class Bad(ValueError):
    pass


def test_read_json_round_trip_and_errors_name_the_file(tmp_path):
    path = tmp_path / "x.json"
    write_json(path, {"a": [1, 2]})
    assert read_json(path) == {"a": [1, 2]}
    with pytest.raises(Bad, match="nope.json: config not found"):
        read_json(tmp_path / "nope.json", "config", error=Bad)
    with pytest.raises(FileNotFoundError, match="nope.json"):
        read_json(tmp_path / "nope.json", error=Bad, missing=FileNotFoundError)
    path.write_bytes(b'{"a": \xff}')
    with pytest.raises(Bad, match="x.json: not UTF-8 text"):
        read_json(path, error=Bad)
    path.write_text('{"a": 1,}')
    with pytest.raises(Bad, match="x.json: not valid JSON"):
        read_json(path, error=Bad)
    with pytest.raises(Bad, match="is a directory"):
        read_json(tmp_path, error=Bad)


@pytest.mark.parametrize("text", ["[" * 200_000, '{"a": ' * 200_000, "[" * 5000 + "]" * 5000])
def test_deep_nesting_is_one_clear_line_never_a_recursion_error(tmp_path, text):
    path = tmp_path / "deep.json"
    path.write_text(text)
    with pytest.raises(Bad, match=r"deep.json: not valid JSON here \(arrays or objects nested "
                                  r"more than \d+ deep\)") as info:
        read_json(path, error=Bad)
    assert "\n" not in str(info.value)
    ok = "[" * 100 + "]" * 100                   # nesting a real file has still parses
    assert parse_json(ok, "s") == json.loads(ok)


def test_duplicate_keys_only_when_asked(tmp_path):
    assert parse_json('{"a": 1, "a": 2}', "s") == {"a": 2}   # what json.loads does
    with pytest.raises(Bad, match="s: the key 'a' appears twice"):
        parse_json('{"a": 1, "a": 2}', "s", error=Bad, unique_keys=True)


def test_require_types():
    d = {"n": 3, "f": 1, "s": None, "b": True}
    assert require_types(d, "c.json", {"n": int, "f": (int, float), "s": (str, type(None)),
                                       "absent": int}) is d
    with pytest.raises(ValueError, match="c.json: 'b' is True \\(bool\\), expected int"):
        require_types(d, "c.json", {"b": int})
    with pytest.raises(ValueError, match="c.json: 'n' is 3 \\(int\\), expected str or null"):
        require_types(d, "c.json", {"n": (str, type(None))})
    with pytest.raises(ValueError, match="c.json: expected a JSON object, got list"):
        require_types([], "c.json", {})


@pytest.mark.parametrize("umask", [0o022, 0o077, 0o027])
def test_atomic_write_keeps_the_umask(tmp_path, umask):
    old = os.umask(umask)
    try:
        with atomic_write(tmp_path / "f.bin") as f:
            f.write(b"x")
        write_json(tmp_path / "g.json", {})
    finally:
        os.umask(old)
    for name in ("f.bin", "g.json"):
        assert (tmp_path / name).stat().st_mode & 0o777 == 0o666 & ~umask
    assert os.umask(old) == old                  # and the process umask is left as it was


def test_every_json_file_goes_through_the_one_reader(tmp_path):
    """trainer_state.json (resume) and a --config JSON file: deep nesting is one line naming
    the file there too (config.json, vocab.json and tokenizer_config.json are tested beside
    their loaders, in test_checkpoint.py and test_tokenizer_formats.py)."""
    import tinyroots as tr
    from tinyroots import training
    from tinyroots.config import ConfigError, load_config_file
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=1, n_embd=8, vocab_size=10, block_size=4))
    (tmp_path / "trainer_state.json").write_text("[" * 200_000)
    with pytest.raises(ValueError, match="trainer_state.json: not valid JSON here .*nested"):
        training.load_training_state(str(tmp_path), tr.optim.AdamW(model.parameters()))
    (tmp_path / "run.json").write_text('{"a": ' * 200_000)
    with pytest.raises(ConfigError, match="run.json: not valid JSON here .*nested"):
        load_config_file(str(tmp_path / "run.json"))
