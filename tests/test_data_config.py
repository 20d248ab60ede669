"""CleanConfig: defaults, validation, files, and the command-line options made from it."""

import dataclasses
import json

import pytest

from tinyroots.data.__main__ import _config_from_args, build_parser
from tinyroots.data.config import CleanConfig, ConfigError


def test_defaults_are_valid_and_json_able():
    cfg = CleanConfig()
    assert json.loads(json.dumps(cfg.to_dict())) == cfg.to_dict()
    # thresholds come from the language's row; ROOTS' English values for English
    from tinyroots.data.languages import resolve
    assert cfg.min_words is None and cfg.languages == ("any",) and cfg.language_id
    assert resolve("en", cfg).min_words == 20 and resolve("en", cfg).max_word_repetition == 0.19
    assert resolve("zh", cfg).min_words == 1
    assert resolve("zh", cfg.replace(min_words=7)).min_words == 7
    for f in dataclasses.fields(CleanConfig):
        assert f.metadata["help"], f.name  # every knob is documented


@pytest.mark.parametrize("changes, message", [
    ({"min_wrds": 1}, "unknown CleanConfig key 'min_wrds' (did you mean 'min_words'?)"),
    ({"min_words": -1}, "CleanConfig.min_words: expected a value in [0, inf]"),
    ({"min_words": 2.5}, "CleanConfig.min_words: expected an integer"),
    ({"max_special_chars": 1.5}, "CleanConfig.max_special_chars: expected a value in [0, 1]"),
    ({"pii": "maybe"}, "CleanConfig.pii: expected true or false"),
    ({"txt_split": "page"}, "CleanConfig.txt_split: expected one of 'file', 'paragraph'"),
    ({"scripts": ["latn"]}, "unknown: 'latn'"),
    ({"pii_kinds": ["ssn"]}, "CleanConfig.pii_kinds: expected a list drawn from"),
    ({"boilerplate_sketch_width": 1000}, "expected a power of two"),
])
def test_bad_values_name_the_field(changes, message):
    with pytest.raises(ConfigError) as err:
        CleanConfig().replace(**changes)
    assert message in str(err.value)


def test_strings_are_parsed_and_lists_become_tuples():
    cfg = CleanConfig().replace(min_words="50", pii="no", scripts=["latin", "greek"],
                                near_dup_threshold="0.7")
    assert (cfg.min_words, cfg.pii, cfg.scripts, cfg.near_dup_threshold) == \
        (50, False, ("latin", "greek"), 0.7)
    assert CleanConfig().replace(scripts="latin,cyrillic").scripts == ("latin", "cyrillic")


def test_from_file_toml_json_and_errors(tmp_path):
    toml = tmp_path / "c.toml"
    toml.write_text('min_words = 7\nscripts = ["latin", "greek"]\n', encoding="utf-8")
    assert CleanConfig.from_file(str(toml)).scripts == ("latin", "greek")
    js = tmp_path / "c.json"
    js.write_text('{"clean": {"min_words": 9}}', encoding="utf-8")
    assert CleanConfig.from_file(str(js)).min_words == 9
    js.write_text('{"min_words": "lots"}', encoding="utf-8")
    with pytest.raises(ConfigError, match="c.json: CleanConfig.min_words: expected an integer"):
        CleanConfig.from_file(str(js))
    js.write_text('{"min_words": ', encoding="utf-8")
    with pytest.raises(ConfigError, match="is not valid"):
        CleanConfig.from_file(str(js))
    with pytest.raises(ConfigError, match="cannot read config file"):
        CleanConfig.from_file(str(tmp_path / "none.json"))


def test_command_line_overrides_file(tmp_path):
    js = tmp_path / "c.json"
    js.write_text('{"min_words": 9, "pii": false}', encoding="utf-8")
    args = build_parser().parse_args(["clean", "in", "-o", "out", "--config", str(js),
                                      "--min-words", "11", "--pii", "--scripts", "latin,greek"])
    cfg = _config_from_args(args)
    assert (cfg.min_words, cfg.pii, cfg.scripts) == (11, True, ("latin", "greek"))
    args = build_parser().parse_args(["clean", "in", "-o", "out"])
    assert _config_from_args(args) == CleanConfig()


@pytest.mark.parametrize("command", ["clean", "tokenize", "prepare", "info"])
def test_help_of_every_subcommand(command, capsys):
    with pytest.raises(SystemExit) as done:
        build_parser().parse_args([command, "--help"])
    assert done.value.code == 0
    out = capsys.readouterr().out
    assert "usage:" in out
    if command in ("clean", "prepare"):
        assert "--max-char-repetition" in out and "--no-near-dedup" in out
