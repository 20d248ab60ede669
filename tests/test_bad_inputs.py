"""A hostile user's corpus (issue 16): bad inputs at every command and API boundary that the
other test files do not already try, one table per boundary.

Each row is the input (an argv, a file mutation or a call), what must come back (an exit code
or an exception type) and the words the one-line message must hold: the thing, the value, what
was expected, and for files the path and the key. A command's user error is one line on stderr,
no traceback, and a non-zero exit. The commands run in this process through their main()
(what `python -m` runs), except where only a separate process shows the exit code.

Already covered elsewhere (not repeated here): train's flags, --data files, --config files and
resume corruptions (test_train.py), generate/chat seed, temperature and threads (test_train.py),
safetensors headers (test_safetensors.py), config.json/tokenizer files (test_checkpoint.py,
test_tokenizer_formats.py), generate's keyword checks (test_generate.py), data clean's options
(test_data_clean.py), finetune's flags and data lines (test_finetune.py, test_finetune_data.py),
inspect's indices (test_inspect.py), serve's request bodies (test_serve_api.py).
"""

import contextlib
import importlib
import io
import json
import math
import os
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import tinyroots as tr
from tinyroots.checkpoint import load_model_and_tokenizer
from tinyroots.tokenizer import CharTokenizer
from cli_util import call_main

pytestmark = pytest.mark.usefixtures("one_thread")

DEEP = "[" * 200_000                 # Python's JSON parser recurses once per "["

COMMANDS = {"train": "tinyroots.train", "finetune": "tinyroots.finetune",
            "tune": "tinyroots.finetune.tune", "generate": "tinyroots.generate",
            "chat": "tinyroots.chat", "evaluate": "tinyroots.evaluate",
            "data": "tinyroots.data.__main__", "inspect": "tinyroots.inspect.cli",
            "serve": "tinyroots.serve.__main__", "info": "tinyroots.info"}


# ---------------------------------------------------------------------------------------------
# fixtures: a tiny trained run and a folder of good and bad data files


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A 2-step `tiny` run (BPE vocabulary 300, context 32): a second or two."""
    from tinyroots.train import main
    out = tmp_path_factory.mktemp("run")
    with contextlib.redirect_stderr(io.StringIO()), contextlib.redirect_stdout(io.StringIO()):
        rc = main(["--preset", "tiny", "--max-steps", "2", "--eval-interval", "1",
                   "--out-dir", str(out), "--overwrite", "--no-progress", "--no-plot",
                   "--sample-tokens", "0"])
    assert rc in (0, None)
    return out


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("files")
    rows = [{"text": f"hello number {i}", "label": "a" if i % 2 else "b"} for i in range(12)]
    (d / "cls.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (d / "deep.jsonl").write_text(DEEP + "\n")
    (d / "notext.jsonl").write_text('{"text": 12}\n')
    (d / "deep.json").write_text(DEEP)
    (d / "deep.toml").write_text("a = " + "[" * 100_000)
    (d / "huge.toml").write_text("n_layer = 1e20\n")
    (d / "hugeint.toml").write_text("n_layer = 100000000000000000000\n")
    (d / "list.json").write_text("[1, 2]")
    (d / "unknown.json").write_text('{"min_wordz": 3}')
    (d / "latin1.txt").write_bytes("caf\xe9 ".encode("latin-1") * 50)
    (d / "existing.txt").write_text("I am a file, not a directory\n")
    return d


def fill(argv, run_dir, files):
    return [a.replace("{run}", str(run_dir)).replace("{d}", str(files)) for a in argv]


def run_main(command, argv, capsys, monkeypatch):
    """(exit code, stdout, stderr) of `python -m <command> argv`, run in this process. An
    exception escaping main() fails the test: it would have been a traceback."""
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))    # chat reads stdin
    return call_main(importlib.import_module(COMMANDS[command]).main, argv, capsys)


def one_clear_line(err, words):
    assert "Traceback" not in err, err
    lines = [ln for ln in err.splitlines() if "error" in ln]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])


# ---------------------------------------------------------------------------------------------
# command lines: (command, argv, exit code, words of the one-line message)

FT = ["classify", "--init", "{run}", "--train", "{d}/cls.jsonl", "--val", "{d}/cls.jsonl",
      "--out-dir", "{d}/ft", "--no-progress", "--max-steps", "2"]
TUNE = ["classify", "--init", "{run}", "--train", "{d}/cls.jsonl", "--val", "{d}/cls.jsonl",
        "--out-dir", "{d}/tune"]
EVAL = ["--checkpoint", "{run}", "--task", "lm", "--data", "{d}/cls.jsonl"]

BAD_COMMANDS = [
    # train: what test_train.py does not try
    ("train", ["--config", "{d}/huge.toml", "--out-dir", "{d}/t"], 2,
     ["'n_layer'", "[1, 1000]", "100000000000000000000"]),
    ("train", ["--config", "{d}/hugeint.toml", "--out-dir", "{d}/t"], 2,
     ["'n_layer'", "100000000000000000000"]),
    ("train", ["--n-layer", "1000", "--n-embd", "4096", "--n-head", "8", "--out-dir", "{d}/t"],
     2, ["GiB to train", "n_layer=1000", "this machine has"]),
    ("train", ["--preset", "nosuch"], 2, ["--preset", "nosuch"]),
    ("train", ["--n-head", "3", "--n-embd", "32", "--out-dir", "{d}/t"], 2,
     ["n_embd=32", "n_head=3", "divisible"]),
    ("train", ["--learnin-rate", "1"], 2, ["--learnin-rate"]),
    ("train", ["--preset", "tiny", "--data", "{d}/deep.jsonl", "--out-dir", "{d}/t"], 2,
     ["no documents left", "deep.jsonl"]),
    ("train", ["--preset", "tiny", "--data", "{d}/notext.jsonl", "--out-dir", "{d}/t2"], 2,
     ["no documents left", "malformed", "notext.jsonl:1", "no string field 'text'"]),
    # finetune
    ("finetune", FT + ["--block-size", "1000000000"], 2,
     ["resize_context", "block_size=1000000000", "GiB", "this machine has"]),
    ("finetune", FT + ["--add-blocks", "1000000"], 2,
     ["add_blocks", "n_layer=1000002", "GiB", "this machine has"]),
    ("finetune", FT + ["--freeze-blocks", "99"], 2, ["freeze_blocks", "0..2", "99"]),
    ("finetune", FT + ["--token-dropout", "1.5"], 2, ["'token_dropout'", "[0, 1)", "1.5"]),
    ("finetune", FT + ["--max-length", "-3"], 2, ["'max_length'", ">= 0", "-3"]),
    ("finetune", FT + ["--lora-rank", "-1"], 2, ["'lora_rank'", ">= 0", "-1"]),
    ("finetune", FT + ["--lora-alpha", "nan"], 2, ["'lora_alpha'", "finite number", "nan"]),
    ("finetune", FT + ["--learning-rate", "inf"], 2, ["'learning_rate'", "finite", "inf"]),
    ("finetune", FT + ["--dropout", "2"], 2, ["'dropout'", "[0, 1)", "2.0"]),
    ("finetune", FT + ["--batch-size", "0"], 2, ["'batch_size'", ">= 1", "0"]),
    ("finetune", FT + ["--lora-rank", "2", "--lora-targets", "bogus"], 2,
     ["'lora_targets'", "'bogus'", "attn, mlp, all"]),
    ("finetune", FT + ["--which", "middle"], 2, ["'which'", "best or last", "'middle'"]),
    ("finetune", FT + ["--metric", "bleu"], 2, ["'metric'", "classify", "'bleu'"]),
    ("finetune", FT + ["--bad-lines", "maybe"], 2, ["'bad_lines'", "error or skip", "'maybe'"]),
    ("finetune", FT + ["--test", "{d}/nope.jsonl"], 2, ["nope.jsonl", "not found"]),
    ("finetune", FT[:4] + ["{d}/deep.jsonl"] + FT[5:], 2,
     ["deep.jsonl line 1", "nested more than"]),
    ("finetune", FT[:4] + ["{d}/latin1.txt"] + FT[5:], 2, ["latin1.txt"]),
    ("finetune", ["classify", "--config", "{d}/deep.json"], 2, ["deep.json", "nested"]),
    ("finetune", ["classify", "--config", "{d}/list.json"], 2, ["list.json", "table"]),
    ("finetune", ["classify", "--init", "{run}"], 2, ["'train' is required"]),
    # tune
    ("tune", TUNE + ["--learning-rate", "nan"], 2, ["'learning_rate'", "numbers >= 0", "'nan'"]),
    ("tune", TUNE + ["--learning-rate", "1e-3,inf"], 2, ["'learning_rate'", "'1e-3,inf'"]),
    ("tune", TUNE + ["--search", "random", "--learning-rate", "1e-4:inf"], 2,
     ["'learning_rate'", "'1e-4:inf'"]),
    ("tune", TUNE + ["--dropout", "5"], 2, ["'dropout'", "[0, 1)", "'5'"]),
    ("tune", TUNE + ["--learning-rate", "x,y"], 2, ["'learning_rate'", "'x,y'"]),
    ("tune", TUNE + ["--learning-rate", "1:0", "--search", "random"], 2, ["'1:0'"]),
    ("tune", TUNE + ["--learning-rate", "1e-4:1e-3"], 2, ["range", "--search random"]),
    ("tune", TUNE + ["--lora-rank", "0:8", "--search", "random"], 2, ["'lora_rank'", "values"]),
    ("tune", TUNE + ["--trials", "0"], 2, ["'trials'", ">= 1"]),
    ("tune", TUNE + ["--search", "bogus"], 2, ["'search'", "grid or random", "'bogus'"]),
    ("tune", TUNE + ["--num-threads", "100000"], 2, ["100000"]),
    ("tune", TUNE + ["--base-config", "{d}/deep.json"], 2, ["deep.json", "nested"]),
    # generate and chat (seed, temperature and threads are in test_train.py)
    ("generate", ["--checkpoint", "{run}", "--top-k", "2.5"], 2, ["'top_k'", "int", "'2.5'"]),
    ("generate", ["--checkpoint", "{run}", "--top-k", "-1"], 2, ["'top_k'", ">= 1", "-1"]),
    ("generate", ["--checkpoint", "{run}", "--top-p", "nan"], 2, ["'top_p'", "finite", "nan"]),
    ("generate", ["--checkpoint", "{run}", "--max-new-tokens", "-1"], 2, ["max_new_tokens",
                                                                          ">= 0"]),
    ("generate", ["--checkpoint", "{run}", "--num-samples", "0"], 2, ["num_samples", ">= 1"]),
    ("generate", ["--checkpoint", "{run}", "--which", "middle"], 2, ["'which'", "'middle'"]),
    ("generate", ["--checkpoint", "{run}", "--dtype", "float8"], 2, ["'dtype'", "'float8'"]),
    ("generate", ["--checkpoint", "{run}", "--num-threads", "2.7"], 2, ["'num_threads'", "2.7"]),
    ("generate", ["--checkpoint", "{run}", "--prompt-file", "{d}/nope.txt"], 2,
     ["--prompt-file", "nope.txt", "No such file"]),
    ("generate", ["--checkpoint", "{d}/cls.jsonl"], 2, ["cls.jsonl"]),
    ("chat", ["--checkpoint", "{run}", "--max-new-tokens", "-1"], 2, ["'max_new_tokens'",
                                                                      ">= 1", "-1"]),
    ("chat", ["--checkpoint", "{run}", "--top-k", "2.5"], 2, ["'top_k'", "'2.5'"]),
    ("chat", ["--checkpoint", "{run}", "--top-p", "0"], 2, ["'top_p'", "0"]),
    ("chat", ["--checkpoint", "{d}/nope"], 2, ["nope", "no such directory"]),
    # evaluate
    (("evaluate", EVAL + ["--num-threads", "100000"], 2, ["'num_threads'", "100000"])),
    ("evaluate", EVAL + ["--batch-size", "0"], 2, ["'batch_size'", ">= 1", "0"]),
    ("evaluate", EVAL + ["--which", "middle"], 2, ["'which'", "best or last", "'middle'"]),
    ("evaluate", EVAL + ["--bad-lines", "maybe"], 2, ["'bad_lines'", "'maybe'"]),
    ("evaluate", EVAL + ["--max-new-tokens", "0"], 2, ["'max_new_tokens'", ">= 1"]),
    ("evaluate", EVAL[:3] + ["bogus"] + EVAL[4:], 2, ["'task'", "'bogus'"]),
    ("evaluate", EVAL[:3] + ["classify"] + EVAL[4:], 2, ["labels.json", "not found"]),
    ("evaluate", EVAL[:-1] + ["{d}/nope.txt"], 2, ["nope.txt", "not found"]),
    ("evaluate", EVAL[:-1] + ["{d}/deep.jsonl"], 2, ["deep.jsonl line 1", "nested"]),
    ("evaluate", ["--checkpoint", "{d}/nope"] + EVAL[2:], 2, ["nope", "no such directory"]),
    ("evaluate", [], 2, ["'checkpoint' is required"]),
    # data clean / prepare / tokenize / info (the option checks are in test_data_clean.py)
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--workers", "100000"], 2,
     ["--workers", "expected an integer <=", "100000"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--config", "{d}/deep.json"], 2,
     ["deep.json", "nested"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--config", "{d}/deep.toml"], 2,
     ["deep.toml", "nested too deeply"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--config", "{d}/unknown.json"], 2,
     ["min_wordz", "min_words"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--config", "{d}/nope.toml"], 2,
     ["nope.toml"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--min-words", "-5"], 2,
     ["min_words", "[0, inf]", "-5"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/c1", "--min-words", "nan"], 2,
     ["min_words", "integer", "'nan'"]),
    ("data", ["clean", "{d}/cls.jsonl", "-o", "{d}/existing.txt"], 2,
     ["existing.txt", "existing file", "expected a directory"]),
    ("data", ["clean", "{d}/nope.jsonl", "-o", "{d}/c2"], 2, ["nope.jsonl", "no such file"]),
    ("data", ["prepare", "{d}/cls.jsonl", "--cache-dir", "{d}/p", "--vocab-size", "10"], 2,
     ["--vocab-size", ">= 257", "10"]),
    ("data", ["prepare", "{d}/cls.jsonl", "--cache-dir", "{d}/p", "--val-fraction", "2"], 2,
     ["--val-fraction", "(0, 1)", "'2'"]),
    ("data", ["prepare", "{d}/cls.jsonl", "--cache-dir", "{d}/p", "--shard-tokens", "0"], 2,
     ["--shard-tokens", ">= 1", "0"]),
    ("data", ["prepare", "{d}/cls.jsonl", "--cache-dir", "{d}/p", "--workers", "100000"], 2,
     ["--workers", "100000"]),
    ("data", ["prepare", "{d}/cls.jsonl", "--cache-dir", "{d}/p", "--tokenizer", "{d}/nope"], 2,
     ["tokenizer", "nope"]),
    ("data", ["prepare", "{d}/nope.txt", "--cache-dir", "{d}/p"], 2, ["nope.txt"]),
    ("data", ["tokenize", "{d}/cls.jsonl", "-o", "{d}/tk", "--workers", "0"], 2,
     ["--workers", ">= 1", "0"]),
    ("data", ["info", "{d}/cls.jsonl"], 2, ["cls.jsonl", "not a tinyroots token shard"]),
    ("data", ["info", "{d}/nope.bin"], 2, ["nope.bin", "No such file"]),
    ("data", ["bogus"], 2, ["bogus"]),
    # inspect
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--top-k", "-3"], 2,
     ["--top-k", ">= 1", "-3"]),
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--temperature", "nan"], 2,
     ["--temperature", "> 0", "nan"]),
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--temperature", "0"], 2,
     ["--temperature", "> 0", "0"]),
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--num-threads", "100000"],
     2, ["100000"]),
    ("inspect", ["embeddings", "--checkpoint", "{run}", "--token", "e", "--k", "-1"], 2,
     ["--k", ">= 1", "-1"]),
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--which", "middle"], 2,
     ["--which", "'middle'"]),
    ("inspect", ["next", "--checkpoint", "{run}", "--text", "hi", "--out", "{d}/no/x.png"], 2,
     ["--out", "does not exist"]),
    ("inspect", ["bogus", "--checkpoint", "{run}"], 2, ["'bogus'"]),
    # serve (each refused before the socket is opened)
    ("serve", ["--checkpoint", "{run}", "--num-threads", "100000"], 2, ["'num_threads'",
                                                                        "100000"]),
    ("serve", ["--checkpoint", "{run}", "--port", "70000"], 2, ["'port'", "0..65535", "70000"]),
    ("serve", ["--checkpoint", "{run}", "--max-running", "0"], 2, ["'max_running'", ">= 1"]),
    ("serve", ["--checkpoint", "{run}", "--max-body", "-1"], 2, ["'max_body'", ">= 1"]),
    ("serve", ["--checkpoint", "{run}", "--shutdown-timeout", "nan"], 2,
     ["'shutdown_timeout'", "finite", "nan"]),
    ("serve", ["--checkpoint", "{run}", "--which", "middle"], 2, ["'which'", "'middle'"]),
    ("serve", ["--checkpoint", "{d}/nope"], 2, ["nope", "no such directory"]),
    ("serve", ["--checkpoint", "{run}", "--port", "x"], 2, ["'port'", "int", "'x'"]),
    # info
    ("info", ["--bogus"], 2, ["--bogus"]),
    ("info", ["--num-threads", "100000"], 2, ["--num-threads"]),
]


@pytest.mark.parametrize("command,argv,code,words", BAD_COMMANDS,
                         ids=[f"{c[0]} {' '.join(c[1])}"[:80] for c in BAD_COMMANDS])
def test_bad_command_lines_are_one_clear_line(command, argv, code, words, run_dir, files,
                                             capsys, monkeypatch):
    rc, out, err = run_main(command, fill(argv, run_dir, files), capsys, monkeypatch)
    assert rc == code, err
    one_clear_line(err, fill(words, run_dir, files))


def test_a_deeply_nested_line_is_counted_not_a_crash(files, tmp_path, capsys, monkeypatch):
    """The collector's promise: a malformed record (here 200,000 nested arrays, which end
    Python's JSON parser in a RecursionError) is counted with its file and line, never a
    crash, and the good records around it are kept."""
    mixed = tmp_path / "mixed.jsonl"
    text = open(os.path.join(os.path.dirname(tr.__file__), "assets", "tinyshakespeare.txt"),
                encoding="utf-8").read()
    mixed.write_text(json.dumps({"text": text[:1500]}) + "\n" + DEEP + "\n" + json.dumps(
        {"text": text[5000:6500]}) + "\n")
    rc, out, err = run_main("data", ["clean", str(mixed), "-o", str(tmp_path / "o"),
                                     "--no-language-id", "--no-near-dedup"], capsys, monkeypatch)
    assert rc in (0, None) and "Traceback" not in err, err
    report = json.loads((tmp_path / "o" / "report.json").read_text())
    assert f"{mixed}:2: JSON nested too deeply" in report["problems"]
    kept = (tmp_path / "o" / "clean.jsonl").read_text().splitlines()
    assert len(kept) == 2


# ---------------------------------------------------------------------------------------------
# the same through `python -m`, where the exit code is the process's own (a few: each is a
# fresh interpreter)

BAD_PROCESSES = [
    (["tinyroots.evaluate", "--checkpoint", "x", "--task", "lm", "--data", "x",
      "--num-threads", "100000"], ["'num_threads'", "100000"]),
    (["tinyroots.serve", "--checkpoint", "x", "--num-threads", "100000"], ["'num_threads'"]),
    (["tinyroots.data", "clean", "x.jsonl", "-o", "y", "--workers", "100000"], ["--workers"]),
    (["tinyroots.info", "--bogus"], ["--bogus"]),
]


@pytest.mark.parametrize("argv,words", BAD_PROCESSES, ids=[" ".join(c[0][:2]) for c in
                                                           BAD_PROCESSES])
def test_bad_command_lines_exit_2_from_a_process(argv, words, tmp_path):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    p = subprocess.run([sys.executable, "-m"] + argv, capture_output=True, text=True, env=env,
                       cwd=tmp_path, timeout=120)
    assert p.returncode == 2, p.stderr
    one_clear_line(p.stderr, words)


# ---------------------------------------------------------------------------------------------
# checkpoint directories with a config.json that lies about the model's size: refused before
# anything is allocated, by the API and by every command that loads one


def _config(**change):
    def mutate(path):
        cfg = json.loads((path / "config.json").read_text())
        cfg.update(change)
        (path / "config.json").write_text(json.dumps(cfg))
    return mutate


def _write(name, text):
    def mutate(path):
        (path / name).write_text(text) if isinstance(text, str) else (path / name).write_bytes(
            text)
    return mutate


BAD_CHECKPOINTS = [   # (name, mutation of a model directory, words)
    ("n_positions 1e9", _config(n_positions=1_000_000_000, n_ctx=1_000_000_000),
     ["config.json", "GiB", "block_size=1000000000", "this machine has"]),
    ("n_positions 1e9 float", _config(n_positions=1e9),
     ["config.json", "'n_positions'", "1000000000.0", "expected int"]),
    ("n_layer 1e6", _config(n_layer=1_000_000), ["config.json", "GiB", "n_layer=1000000"]),
    ("vocab 1e9", _config(vocab_size=1_000_000_000), ["config.json", "GiB"]),
    ("n_layer 0", _config(n_layer=0), ["config.json", "n_layer", "positive integer", "0"]),
    ("n_layer -2", _config(n_layer=-2), ["config.json", "n_layer", "-2"]),
    ("n_head 3", _config(n_head=3), ["config.json", "n_embd=32", "n_head=3"]),
    ("epsilon 0", _config(layer_norm_epsilon=0), ["config.json", "layer_norm_epsilon",
                                                  "> 0"]),
    ("dropout 1", _config(resid_pdrop=1.0, embd_pdrop=1.0), ["config.json", "dropout"]),
    ("eos -1", _config(eos_token_id=-1), ["config.json", "eos_token_id", "-1"]),
    ("config list", _write("config.json", "[1]"), ["config.json", "expected a JSON object"]),
    ("config deep", _write("config.json", DEEP), ["config.json", "nested"]),
    ("config not utf8", _write("config.json", b'{"n_layer": "\xff"}'),
     ["config.json", "not UTF-8"]),
    ("config gone", lambda p: (p / "config.json").unlink(), ["config.json"]),
    ("weights gone", lambda p: (p / "model.safetensors").unlink(), ["model.safetensors"]),
    ("weights empty", _write("model.safetensors", b""), ["model.safetensors"]),
    ("weights text", _write("model.safetensors", "hello"), ["model.safetensors"]),
    ("vocab deep", _write("vocab.json", DEEP), ["vocab.json", "nested"]),
    ("vocab list", _write("vocab.json", "[1, 2]"), ["vocab.json"]),
    ("merges binary", _write("merges.txt", b"\xff\xfe\x00"), ["merges.txt"]),
    ("tokenizer_config deep", _write("tokenizer_config.json", DEEP),
     ["tokenizer_config.json", "nested"]),
]


@pytest.fixture
def model_dir(run_dir, tmp_path):
    path = tmp_path / "model"
    shutil.copytree(run_dir / "best", path)
    return path


@pytest.mark.parametrize("name,mutate,words", BAD_CHECKPOINTS, ids=[c[0] for c in
                                                                     BAD_CHECKPOINTS])
def test_bad_checkpoints_are_refused_by_the_api(name, mutate, words, model_dir):
    mutate(model_dir)
    with pytest.raises((ValueError, OSError)) as exc:
        load_model_and_tokenizer(str(model_dir))
    message = str(exc.value)
    assert "\n" not in message.strip(), message
    for word in words:
        assert word in message, (word, message)


@pytest.mark.parametrize("command", ["generate", "chat", "evaluate", "inspect", "serve"])
@pytest.mark.parametrize("name,mutate,words", BAD_CHECKPOINTS[:3],
                         ids=[c[0] for c in BAD_CHECKPOINTS[:3]])
def test_bad_checkpoints_are_refused_by_every_command(command, name, mutate, words, model_dir,
                                                      files, capsys, monkeypatch):
    mutate(model_dir)
    argv = {"generate": ["--checkpoint", str(model_dir), "--max-new-tokens", "1"],
            "chat": ["--checkpoint", str(model_dir)],
            "evaluate": ["--checkpoint", str(model_dir), "--task", "lm", "--data",
                         str(files / "cls.jsonl")],
            "inspect": ["next", "--checkpoint", str(model_dir), "--text", "hi"],
            "serve": ["--checkpoint", str(model_dir)]}[command]
    rc, out, err = run_main(command, argv, capsys, monkeypatch)
    assert rc == 2, err
    one_clear_line(err, words)


# ---------------------------------------------------------------------------------------------
# the Python API: (name, call, exception type, regex the message must match)

def _tiny(**kw):
    values = dict(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=8)
    values.update(kw)
    return tr.GPTConfig(**values)


@pytest.fixture(scope="module")
def api(run_dir):
    tr.manual_seed(0)
    model = tr.GPT(_tiny())
    tok = CharTokenizer.train("abcdefgh ")
    return {"model": model, "tok": tok, "ids": np.array([[1, 2, 3]]), "run": str(run_dir)}


HF = {"model_type": "gpt2", "vocab_size": 40, "n_positions": 8, "n_embd": 16, "n_layer": 1,
      "n_head": 2}


def _hf(**change):
    return {**HF, **change}


BAD_CALLS = [
    # GPTConfig and GPTConfig.from_hf_dict
    ("n_layer float", lambda a: _tiny(n_layer=2.5), ValueError, r"n_layer .*got 2\.5"),
    ("n_layer bool", lambda a: _tiny(n_layer=True), ValueError, r"n_layer .*got True"),
    ("n_layer str", lambda a: _tiny(n_layer="2"), ValueError, r"n_layer .*got '2'"),
    ("block_size 1e9", lambda a: _tiny(block_size=10 ** 9), ValueError,
     r"GiB .*block_size=1000000000.*this machine has"),
    ("n_embd huge", lambda a: _tiny(n_embd=2 ** 20, n_head=2), ValueError, r"GiB"),
    ("dropout 1", lambda a: _tiny(dropout=1.0), ValueError, r"dropout must be in \[0, 1\)"),
    ("dropout nan", lambda a: _tiny(dropout=math.nan), ValueError, r"dropout"),
    ("n_inner 0", lambda a: _tiny(n_inner=0), ValueError, r"n_inner .*got 0"),
    ("bos -1", lambda a: _tiny(bos_token_id=-1), ValueError, r"bos_token_id .*-1"),
    ("init range nan", lambda a: _tiny(initializer_range=math.nan), ValueError,
     r"initializer_range"),
    ("hf not a dict", lambda a: tr.GPTConfig.from_hf_dict([1]), ValueError,
     r"config.json: expected a JSON object"),
    ("hf missing key", lambda a: tr.GPTConfig.from_hf_dict({"model_type": "gpt2"}),
     ValueError, r"config.json: missing key"),
    ("hf n_positions 1e9", lambda a: tr.GPTConfig.from_hf_dict(_hf(n_positions=10 ** 9)),
     ValueError, r"GiB"),
    ("hf n_layer 1e6", lambda a: tr.GPTConfig.from_hf_dict(_hf(n_layer=10 ** 6, n_embd=1024,
                                                               n_head=8)),
     ValueError, r"GiB .*n_layer=1000000"),
    ("hf activation", lambda a: tr.GPTConfig.from_hf_dict(_hf(activation_function="swish")),
     ValueError, r"activation_function 'swish'"),
    ("GPT wrong config", lambda a: tr.GPT({"n_layer": 1}), TypeError, r"GPTConfig"),
    # forward
    ("forward (0, T)", lambda a: a["model"](np.zeros((0, 4), np.int64)), ValueError,
     r"input_ids must have shape \(B, T\) with B >= 1 and T >= 1, got \(0, 4\)"),
    ("forward (B, 0)", lambda a: a["model"](np.zeros((2, 0), np.int64)), ValueError,
     r"input_ids must have shape \(B, T\) with B >= 1 and T >= 1, got \(2, 0\)"),
    ("forward 3-D", lambda a: a["model"](np.zeros((1, 2, 3), np.int64)), ValueError,
     r"shape \(B, T\)"),
    ("forward floats", lambda a: a["model"](np.array([[1.0, 2.0]])), TypeError,
     r"integer token ids, got dtype float64"),
    ("forward strings", lambda a: a["model"](np.array([["a"]])), TypeError,
     r"integer token ids"),
    ("forward id too big", lambda a: a["model"](np.array([[40]])), ValueError,
     r"token id 40, outside the vocabulary"),
    ("forward too long", lambda a: a["model"](np.zeros((1, 9), np.int64)), ValueError,
     r"longer than the"),
    ("labels float", lambda a: a["model"](a["ids"], labels=np.array([[1.0, 2, 3]])),
     TypeError, r"labels must be integer token ids"),
    ("labels bad id", lambda a: a["model"](a["ids"], labels=np.array([[1, 2, 99]])),
     ValueError, r"labels contains 99"),
    # generate (test_generate.py has temperature, top_k, top_p, eos, seed, masks)
    ("generate (0, T)", lambda a: a["model"].generate(np.zeros((0, 3), np.int64)), ValueError,
     r"empty batch"),
    ("generate top_k 2.5", lambda a: a["model"].generate(a["ids"], do_sample=True, top_k=2.5),
     ValueError, r"top_k must be an integer >= 1 or None, got 2\.5"),
    ("generate top_p 0", lambda a: a["model"].generate(a["ids"], do_sample=True, top_p=0),
     ValueError, r"top_p must be a number in \(0, 1\]"),
    ("generate top_p 1.5", lambda a: a["model"].generate(a["ids"], do_sample=True, top_p=1.5),
     ValueError, r"top_p .*1\.5"),
    ("generate temperature -1", lambda a: a["model"].generate(a["ids"], do_sample=True,
                                                              temperature=-1.0),
     ValueError, r"temperature must be a finite number >= 0"),
    ("generate max_new_tokens -1", lambda a: a["model"].generate(a["ids"], max_new_tokens=-1),
     ValueError, r"max_new_tokens must be an integer >= 0, got -1"),
    ("generate max_new_tokens 2.5", lambda a: a["model"].generate(a["ids"],
                                                                  max_new_tokens=2.5),
     ValueError, r"max_new_tokens .*2\.5"),
    ("generate id too big", lambda a: a["model"].generate(np.array([[99]])), ValueError,
     r"token id 99"),
    ("generate floats", lambda a: a["model"].generate(np.array([[1.5]])), TypeError,
     r"integer token ids"),
    ("generate unknown kw", lambda a: a["model"].generate(a["ids"], length_penalty=2.0),
     TypeError, r"length_penalty"),
    # tokenizers
    ("from_pretrained missing", lambda a: tr.Tokenizer.from_pretrained("/nonexistent/tok"),
     OSError, r"/nonexistent/tok"),
    ("encode None", lambda a: a["tok"].encode(None), TypeError, r"str"),
    ("encode bytes", lambda a: a["tok"].encode(b"abc"), TypeError, r"str"),
    ("char encode unknown", lambda a: a["tok"].encode("xyz"), ValueError,
     r"not in this CharTokenizer"),
    ("char decode -1", lambda a: a["tok"].decode([-1]), ValueError, r"out of range"),
    ("char decode huge", lambda a: a["tok"].decode([10 ** 12]), ValueError, r"out of range"),
    ("char decode float", lambda a: a["tok"].decode([1.5]), TypeError, r"int"),
    ("char train empty", lambda a: CharTokenizer.train(""), ValueError, r"corpus is empty"),
    ("bpe train vocab 10", lambda a: tr.Tokenizer.train("hello world", vocab_size=10),
     ValueError, r"vocab_size"),
    ("bpe train vocab float", lambda a: tr.Tokenizer.train("hello world", vocab_size=300.5),
     (ValueError, TypeError), r"vocab_size"),
    # optimizers
    ("AdamW betas 1.5", lambda a: tr.optim.AdamW(a["model"].parameters(), betas=(1.5, 0.9)),
     ValueError, r"betas"),
    ("AdamW betas nan", lambda a: tr.optim.AdamW(a["model"].parameters(),
                                                 betas=(0.9, math.nan)),
     ValueError, r"betas"),
    ("AdamW eps -1", lambda a: tr.optim.AdamW(a["model"].parameters(), eps=-1.0), ValueError,
     r"eps"),
    ("AdamW lr str", lambda a: tr.optim.AdamW(a["model"].parameters(), lr="fast"), ValueError,
     r"lr .*'fast'"),
    ("SGD lr inf", lambda a: tr.optim.SGD(a["model"].parameters(), lr=math.inf), ValueError,
     r"lr must be a finite number"),
    # threads
    ("threads 100000", lambda a: tr.set_num_threads(100000), ValueError, r"100000"),
    ("threads 0", lambda a: tr.set_num_threads(0), ValueError, r"got 0"),
    ("threads 2.7", lambda a: tr.set_num_threads(2.7), ValueError, r"2\.7"),
    ("threads str", lambda a: tr.set_num_threads("4"), ValueError, r"'4'"),
    # loading
    ("load missing", lambda a: load_model_and_tokenizer("/nonexistent/ckpt"), OSError,
     r"/nonexistent/ckpt: no such directory"),
    ("load which", lambda a: load_model_and_tokenizer(a["run"], "middle"), ValueError, r"middle"),
]


@pytest.mark.parametrize("name,call,error,match", BAD_CALLS, ids=[c[0] for c in BAD_CALLS])
def test_bad_api_calls_raise_one_clear_error(name, call, error, match, api):
    with pytest.raises(error, match=match) as exc:
        call(api)
    assert "\n" not in str(exc.value).strip()


def test_data_loader_arguments(tmp_path):
    from tinyroots.data.loader import DataLoader
    from tinyroots.data.shards import ShardError, write_shard
    shard = tmp_path / "train_000.bin"
    write_shard(str(shard), np.arange(100) % 50, vocab_size=50)
    cases = [((str(tmp_path / "nope"), 2, 4), (ShardError, OSError), "nope"),
             ((str(shard), 0, 4), ValueError, "batch_size and block_size must be >= 1"),
             ((str(shard), 2, 0), ValueError, "got 2, 0"),
             ((str(shard), 2.5, 4), ValueError, "batch_size must be an integer >= 1, got 2.5"),
             ((str(shard), 2, "8"), ValueError, "block_size must be an integer >= 1, got '8'"),
             ((str(shard), 2, 1000), ShardError, "block_size \\+ 1 = 1001")]
    for args, error, match in cases:
        with pytest.raises(error, match=match):
            DataLoader(*args)


# ---------------------------------------------------------------------------------------------
# property tests (hypothesis): the character tokenizer's round trip with special tokens, BPE
# with special tokens between arbitrary Unicode, and the shard reader on mutated files

SPECIALS = ["<|endoftext|>", "<|user|>", "<|end|>"]
# text around the special tokens: any Unicode but lone surrogates (not encodable as UTF-8)
PLAIN = st.text(st.characters(blacklist_categories=("Cs",)), max_size=30)
WITH_SPECIALS = st.lists(st.one_of(PLAIN, st.sampled_from(SPECIALS)), max_size=8).map("".join)


@settings(max_examples=300, deadline=None)
@given(WITH_SPECIALS)
def test_char_tokenizer_round_trips_any_text_with_special_tokens(text):
    # (a str without whitespace that looks like a path is read as a file: add a space)
    tok = CharTokenizer.train(text + " a", special_tokens=SPECIALS)
    ids = tok.encode(text)
    assert all(0 <= i < tok.vocab_size for i in ids)
    assert tok.decode(ids) == text
    # a special token is one id, never its characters
    for s in SPECIALS:
        assert ids.count(tok.token_to_id(s)) == text.count(s)
    # skip_special_tokens drops exactly the special tokens the text held
    without = "".join(re.split("|".join(map(re.escape, SPECIALS)), text))
    assert tok.decode(ids, skip_special_tokens=True) == without


@pytest.fixture(scope="module")
def bpe():
    text = open(os.path.join(os.path.dirname(tr.__file__), "assets", "tinyshakespeare.txt"),
                encoding="utf-8").read()[:60_000]
    tok = tr.Tokenizer.train(text, vocab_size=400)
    tok.add_special_tokens(SPECIALS)
    return tok


@settings(max_examples=200, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(WITH_SPECIALS)
def test_bpe_round_trips_unicode_with_special_tokens(bpe, text):
    ids = bpe.encode(text)
    assert bpe.decode(ids) == text
    for s in SPECIALS:
        assert ids.count(bpe.token_to_id(s)) == text.count(s)
    # with special tokens not allowed they are ordinary text, and still come back
    assert bpe.decode(bpe.encode(text, allowed_special="none")) == text
    assert all(i not in {bpe.token_to_id(s) for s in SPECIALS}
               for i in bpe.encode(text, allowed_special="none"))


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(["flip", "truncate", "append", "insert", "header"]),
       st.integers(0, 10_000), st.integers(0, 255), st.sampled_from([300, 70_000]))
def test_shard_reader_on_mutated_files(kind, where, byte, vocab_size):
    """A damaged shard is either refused with a ShardError naming it, or read as exactly the
    tokens its header promises, each inside the vocabulary the header states (the loader's
    and the model's checks are then what stands between a flipped data byte and training)."""
    import tempfile

    from tinyroots.data.shards import HEADER_BYTES, ShardError, open_shard, read_header
    from tinyroots.data.shards import write_shard as write
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "train_00000.bin")
        write(path, np.arange(50) % 300, vocab_size)
        raw = bytearray(open(path, "rb").read())
        i = where % len(raw)
        if kind == "flip":
            raw[i] ^= byte or 1
        elif kind == "truncate":
            raw = raw[:i]
        elif kind == "append":
            raw += bytes([byte]) * (1 + where % 7)
        elif kind == "insert":
            raw[i:i] = bytes([byte])
        else:
            raw[where % HEADER_BYTES] = byte
        open(path, "wb").write(bytes(raw))
        try:
            n, dtype, vocab = read_header(path)
            tokens = open_shard(path)
        except ShardError as exc:
            assert path in str(exc) and "\n" not in str(exc)
            return
        assert len(tokens) == n and HEADER_BYTES + n * dtype.itemsize == len(raw)
        assert vocab >= 1 and tokens.dtype.itemsize == (2 if vocab <= 1 << 16 else 4)
