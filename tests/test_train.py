"""`python -m tinyroots.train` and `python -m tinyroots.generate`, on tiny models."""

import dataclasses
import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from cli_util import call_main
from tinyroots import checkpoint as ck
from tinyroots import generate as gen
from tinyroots.train import PRESETS, TrainConfig, train

TINY = {k: v for k, v in PRESETS["tiny"].items() if not k.startswith("_")}


def tiny_cfg(out_dir, **overrides):
    values = dict(TINY, out_dir=str(out_dir), progress=False, plot=False, sample_tokens=0,
                  log_interval=1)
    values.update(overrides)
    return TrainConfig(**values)


def quiet(*args, **kwargs):
    pass


def read_metrics(run_dir):
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        return [json.loads(line) for line in f]


def run_cli(args, env=None, **kwargs):
    full_env = dict(os.environ, **(env or {}))
    return subprocess.run([sys.executable, "-m"] + args, capture_output=True, text=True,
                          env=full_env, timeout=600, **kwargs)


# ---------------------------------------------------------------------------------------------
# the run


def test_tiny_run_learns_and_writes_its_files(tmp_path):
    run = train(tiny_cfg(tmp_path), out=quiet)
    assert run.stop_reason == "reached max_steps=40"
    for name in ("train_config.json", "metrics.jsonl", "summary.json"):
        assert (tmp_path / name).is_file(), name
    for sub in ("last", "best"):
        assert (tmp_path / sub / "model.safetensors").is_file()
        assert (tmp_path / sub / "vocab.json").is_file()
    assert (tmp_path / "last" / "optimizer.safetensors").is_file()
    records = read_metrics(tmp_path)
    assert [r["step"] for r in records] == list(range(0, 41))
    for r in records[1:]:
        assert {"step", "train_loss", "lr", "tokens_per_s"} <= set(r)
    evals = [r for r in records if "val_loss" in r]
    assert [r["step"] for r in evals] == [0, 20, 40]
    assert evals[-1]["val_loss"] < evals[0]["val_loss"] - 0.5      # it learned something
    saved = json.loads((tmp_path / "train_config.json").read_text())
    assert saved["max_steps"] == 40 and saved["n_embd"] == 32
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_val_loss"] == pytest.approx(min(r["val_loss"] for r in evals))


def test_resume_gives_identical_losses(tmp_path):
    # dropout on, so the global RNG state has to be restored too
    full = train(tiny_cfg(tmp_path / "full", max_steps=30, dropout=0.1, eval_interval=10),
                 out=quiet)
    part = tmp_path / "part"
    train(tiny_cfg(part, max_steps=17, lr_decay_steps=30, dropout=0.1, eval_interval=10),
          out=quiet)
    resumed = train(tiny_cfg(part, max_steps=30, dropout=0.1, eval_interval=10, resume=True),
                    out=quiet)
    assert resumed.step == full.step == 30
    a = {r["step"]: r["train_loss"] for r in read_metrics(tmp_path / "full")}
    b = {r["step"]: r["train_loss"] for r in read_metrics(part)}
    assert sorted(a) == sorted(b)
    for step in range(18, 31):
        assert a[step] == b[step], f"step {step}: {a[step]} != {b[step]}"
    va = {r["step"]: r["val_loss"] for r in read_metrics(tmp_path / "full") if "val_loss" in r}
    vb = {r["step"]: r["val_loss"] for r in read_metrics(part) if "val_loss" in r}
    assert sorted(vb) == [0, 10, 17, 20, 30]     # the interrupted segment also evaluated at 17
    assert all(va[s] == vb[s] for s in va)


def test_resume_without_checkpoint_is_an_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        train(tiny_cfg(tmp_path, resume=True), out=quiet)


@pytest.mark.parametrize("rule,overrides,expected", [
    ("target", dict(target_val_loss=100.0), "target val loss 100.0 reached"),
    ("time", dict(max_steps=100000, max_time=1.0), "max_time 1s reached"),
    ("patience", dict(learning_rate=0.0, min_lr=0.0, early_stop_patience=2, eval_interval=5),
     "early stopping: val loss has not improved for 2 evaluations"),
])
def test_stopping_rules_fire_and_are_reported(tmp_path, rule, overrides, expected):
    messages = []
    run = train(tiny_cfg(tmp_path, **overrides), out=messages.append)
    assert run.stop_reason.startswith(expected)
    assert any(expected in str(m) for m in messages)
    if rule == "target":
        assert run.step == 0
    if rule == "patience":
        assert run.step == 10          # evaluations at 0 (best), 5 and 10 (no improvement)


def test_gradient_accumulation_matches_a_bigger_batch(tmp_path):
    """Two micro-batches of 4 accumulate to the gradient of one batch of 8 (same windows)."""
    import tinyroots as tr
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=8))
    rng = np.random.default_rng(0)
    x = rng.integers(0, 40, (8, 8))
    y = rng.integers(0, 40, (8, 8))
    model(x, targets=y).loss.backward()
    big = {n: p.grad.copy() for n, p in model.named_parameters()}
    model.zero_grad()
    for half in (slice(0, 4), slice(4, 8)):
        model(x[half], targets=y[half]).loss.backward(np.float32(0.5))
    for n, p in model.named_parameters():
        np.testing.assert_allclose(p.grad, big[n], rtol=1e-4, atol=1e-7, err_msg=n)


def test_penalties_and_char_tokenizer_run(tmp_path):
    run = train(tiny_cfg(tmp_path, tokenizer="char", l1=1e-5, l2=1e-4, max_steps=10,
                         eval_interval=5), out=quiet)
    assert run.stop_reason.startswith("reached max_steps")
    cfg = json.loads((tmp_path / "last" / "config.json").read_text())
    assert cfg["vocab_size"] == 65          # Shakespeare's 65 distinct characters


# ---------------------------------------------------------------------------------------------
# configuration errors


def test_config_errors_name_the_key(tmp_path):
    r = run_cli(["tinyroots.train", "--no-such-key", "3"])
    assert r.returncode == 2 and "--no-such-key" in r.stderr
    r = run_cli(["tinyroots.train", "--learning-rate", "fast"])
    assert r.returncode == 2 and "'learning_rate' must be float, got 'fast'" in r.stderr
    r = run_cli(["tinyroots.train", "--n-embd", "30", "--n-head", "4"])
    assert r.returncode == 2 and "n_embd=30 must be divisible by n_head=4" in r.stderr
    toml = tmp_path / "bad.toml"
    toml.write_text('max_steps = 5\nlearnig_rate = 0.1\n')
    r = run_cli(["tinyroots.train", "--config", str(toml)])
    assert r.returncode == 2 and "unknown key 'learnig_rate'" in r.stderr and "bad.toml" in r.stderr
    r = run_cli(["tinyroots.train", "--preset", "nope"])
    assert r.returncode == 2 and "invalid choice" in r.stderr


@pytest.mark.parametrize("argv, line", [
    (["tinyroots.train", "--learning-rat", "3e-4"],
     "python -m tinyroots.train: error: unrecognized arguments: --learning-rat 3e-4 "
     "(did you mean --learning-rate?); see python -m tinyroots.train --help"),
    # after a subcommand, the parser above reports it: the hint looks in the subcommands too
    (["tinyroots.data", "clean", "in.txt", "-o", "out", "--min-wrds", "3"],
     "python -m tinyroots.data: error: unrecognized arguments: --min-wrds 3 "
     "(did you mean --min-words?); see python -m tinyroots.data --help"),
    (["tinyroots.generate", "--prompt"],
     "python -m tinyroots.generate: error: argument --prompt: expected one argument; "
     "see python -m tinyroots.generate --help"),
])
def test_a_wrong_command_line_is_one_line(argv, line):
    # not argparse's usage block (26 lines for train) above the error
    r = run_cli(argv)
    assert r.returncode == 2
    assert r.stderr.splitlines() == [line]


def test_config_file_and_flags_precedence(tmp_path):
    from tinyroots.config import parse_config
    toml = tmp_path / "run.toml"
    toml.write_text('[model]\nn_layer = 3\n[train]\nmax_steps = 7\nlearning_rate = 0.01\n')
    cfg = parse_config(TrainConfig, ["--preset", "tiny", "--config", str(toml),
                                     "--max-steps", "9"], presets=PRESETS)
    assert (cfg.n_layer, cfg.max_steps, cfg.learning_rate, cfg.n_embd) == (3, 9, 0.01, 32)
    cfg = parse_config(TrainConfig, ["--target-val-loss", "none", "--bias", "false"])
    assert cfg.target_val_loss is None and cfg.bias is False


def test_help_explains_every_option():
    r = run_cli(["tinyroots.train", "--help"])
    assert r.returncode == 0
    for f in dataclasses.fields(TrainConfig):
        assert "--" + f.name.replace("_", "-") in r.stdout, f.name
    assert "peak learning rate" in r.stdout


# ---------------------------------------------------------------------------------------------
# Ctrl-C


def test_sigint_saves_and_exits_cleanly_then_resumes(tmp_path):
    args = ["tinyroots.train", "--preset", "tiny", "--max-steps", "100000", "--eval-interval",
            "50", "--log-interval", "1", "--progress", "false", "--out-dir", str(tmp_path),
            "--sample-tokens", "0"]
    proc = subprocess.Popen([sys.executable, "-m"] + args, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    metrics = tmp_path / "metrics.jsonl"
    deadline = time.time() + 300
    while time.time() < deadline:
        if metrics.exists() and len(metrics.read_text().splitlines()) >= 20:
            break
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, err
    assert "Traceback" not in err
    assert "interrupted (Ctrl-C)" in out
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert 20 <= state["step"] < 100000
    run = train(tiny_cfg(tmp_path, max_steps=state["step"] + 3, resume=True), out=quiet)
    assert run.step == state["step"] + 3


def test_ctrl_c_during_a_checkpoint_write_is_not_lost(tmp_path, monkeypatch):
    # A Ctrl-C that lands while last/ is being written must still stop the run (right after the
    # write), not be swallowed: the test above sends one SIGINT at a random moment.
    import tinyroots.train as T
    real_save, saves = T.save_run_checkpoint, []

    def save_with_ctrl_c(run_dir, name, *args, **kwargs):
        saves.append(name)
        if saves.count("last") == 2:            # the save at the second evaluation (step 10)
            os.kill(os.getpid(), signal.SIGINT)
        return real_save(run_dir, name, *args, **kwargs)

    monkeypatch.setattr(T, "save_run_checkpoint", save_with_ctrl_c)
    run = train(tiny_cfg(tmp_path, max_steps=1000, eval_interval=10), out=quiet)
    assert run.stop_reason == "interrupted (Ctrl-C)"
    assert run.step == 10
    state = json.loads((tmp_path / "last" / "trainer_state.json").read_text())
    assert state["step"] == 10


# ---------------------------------------------------------------------------------------------
# generation


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("run")
    train(tiny_cfg(run_dir, max_steps=30, eval_interval=10), out=quiet)
    return run_dir


def test_generate_cli_every_option(trained, tmp_path):
    base = ["tinyroots.generate", "--checkpoint", str(trained), "--max-new-tokens", "12"]
    r = run_cli(base + ["--prompt", "ROMEO:", "--seed", "1"])
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("ROMEO:") and len(r.stdout) > len("ROMEO:") + 3
    again = run_cli(base + ["--prompt", "ROMEO:", "--seed", "1"])
    assert again.stdout == r.stdout                                     # seeded: reproducible
    greedy = run_cli(base + ["--prompt", "ROMEO:", "--temperature", "0"])
    greedy2 = run_cli(base + ["--prompt", "ROMEO:", "--temperature", "0", "--seed", "5"])
    assert greedy.returncode == 0 and greedy.stdout == greedy2.stdout
    for opts in (["--top-k", "3"], ["--top-p", "0.9"], ["--top-k", "none", "--temperature",
                                                         "1.5"], ["--use-cache", "false"],
                 ["--which", "last"], ["--stream", "false"]):
        r = run_cli(base + ["--prompt", "KING", "--seed", "2"] + opts)
        assert r.returncode == 0 and r.stdout.startswith("KING"), (opts, r.stderr)
    for stream in ("true", "false"):
        # each sample whole and numbered: "--- sample i ---", then the prompt and its
        # continuation (the prompt used to be printed once, before "--- sample 1 ---")
        r = run_cli(base + ["--prompt", "ROMEO:", "--num-samples", "3", "--seed", "3",
                            "--stream", stream])
        samples = r.stdout.split("--- sample ")[1:]
        assert r.stdout.startswith("--- sample 1 ---\n") and len(samples) == 3, r.stdout
        for i, sample in enumerate(samples, 1):
            assert sample.startswith(f"{i} ---\nROMEO:"), (stream, sample)
    draft = tmp_path / "draft.txt"
    draft.write_text("First Citizen:\n")
    r = run_cli(base + ["--prompt-file", str(draft)])
    assert r.returncode == 0 and r.stdout.startswith("First Citizen:\n")
    r = run_cli(base + ["--prompt", "-"], input="MENENIUS:")
    assert r.returncode == 0 and r.stdout.startswith("MENENIUS:")


def test_generate_cached_equals_uncached_on_trained_model(trained):
    cfg = gen.GenerateConfig(checkpoint=str(trained), max_new_tokens=40, seed=4, stream=False)
    model, tok, _ = ck.load_model_and_tokenizer(str(trained))
    ids = tok.encode("ROMEO:")
    a = list(gen.generate_text(model, tok, cfg, ids))
    b = list(gen.generate_text(model, tok, dataclasses.replace(cfg, use_cache=False), ids))
    assert a == b and len(a[0]) > 0


def test_generate_errors(tmp_path):
    r = run_cli(["tinyroots.generate", "--checkpoint", str(tmp_path / "nope")])
    assert r.returncode == 2 and "no such directory" in r.stderr
    r = run_cli(["tinyroots.generate", "--checkpoint", str(tmp_path)])
    assert r.returncode == 2 and "neither a model directory" in r.stderr
    r = run_cli(["tinyroots.generate", "--top-p", "2"])
    assert r.returncode == 2 and "top_p" in r.stderr


@pytest.mark.parametrize("command", ["tinyroots.generate", "tinyroots.chat"])
@pytest.mark.parametrize("flags,words", [
    (["--seed", "-1"], "'seed' must be in [0,"),
    (["--temperature", "nan"], "'temperature' must be a finite number"),
    (["--num-threads", "100000"], "'num_threads' must be in [0,"),
])
def test_sampling_commands_check_values_before_loading(command, flags, words):
    # checked before the checkpoint is looked for: the message is about the value
    r = run_cli([command, "--checkpoint", "does-not-exist"] + flags)
    assert r.returncode == 2 and words in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1


def test_prompt_file_that_is_not_utf8_is_named(trained, tmp_path):
    bad = tmp_path / "draft.txt"
    bad.write_bytes(b"ROMEO:\n\xff\xfe")
    r = run_cli(["tinyroots.generate", "--checkpoint", str(trained), "--prompt-file", str(bad)])
    assert r.returncode == 2 and f"--prompt-file {bad}: not UTF-8 text" in r.stderr


def test_numpy_backend_trains_the_same_model(tmp_path):
    """TINYROOTS_BACKEND=numpy runs the pure reference path; it must follow the same losses."""
    losses = {}
    for backend in ("numpy", "auto"):
        out = tmp_path / backend
        r = run_cli(["tinyroots.train", "--preset", "tiny", "--max-steps", "8", "--log-interval",
                     "1", "--progress", "false", "--out-dir", str(out), "--sample-tokens", "0",
                     "--eval-interval", "4"], env={"TINYROOTS_BACKEND": backend})
        assert r.returncode == 0, r.stderr
        losses[backend] = [rec["train_loss"] for rec in read_metrics(out)[1:]]
    assert len(losses["numpy"]) == 8
    # same data, same init; float32 kernels sum in different orders, so allow 1e-4 relative
    np.testing.assert_allclose(losses["numpy"], losses["auto"], rtol=1e-4)


def test_train_on_a_folder_of_text(tmp_path):
    """--data PATH: clean -> tokenizer -> shards (cached) -> train, and resume on shards."""
    corpus = tmp_path / "corpus"
    (corpus / "plays").mkdir(parents=True)
    with open(os.path.join(os.path.dirname(__file__), "..", "tinyroots", "assets",
                           "tinyshakespeare.txt"), encoding="utf-8") as f:
        scenes = f.read()[:400_000].split("\n\n")
    for i in range(0, len(scenes), 40):              # ~100 documents in 10 files
        (corpus / "plays" / f"part{i // 40:03d}.txt").write_text("\n\n".join(scenes[i:i + 40]))
    (corpus / "notes.jsonl").write_text(json.dumps({"text": " ".join(scenes[:60])}) + "\n")
    (corpus / "binary.bin.txt").write_bytes(bytes(range(256)) * 10)   # reported, skipped
    run_dir = tmp_path / "run"
    run = train(tiny_cfg(run_dir, data=str(corpus), vocab_size=400, max_steps=12,
                         eval_interval=6), out=quiet)
    assert run.stop_reason.startswith("reached max_steps")
    assert json.loads((run_dir / "last" / "config.json").read_text())["vocab_size"] == 400
    shards = [p for p in (run_dir / "data").rglob("*.bin")]
    assert any("train" in p.name for p in shards) and any("val" in p.name for p in shards)
    again = train(tiny_cfg(run_dir, data=str(corpus), vocab_size=400, max_steps=16,
                           eval_interval=6, resume=True), out=quiet)
    assert again.step == 16
    steps = [r["step"] for r in read_metrics(run_dir)]
    assert steps == sorted(steps) and steps[-1] == 16


# ---------------------------------------------------------------------------------------------
# bad input: one line on stderr, a non-zero exit, no traceback (in-process: main() is what
# `python -m tinyroots.train` runs)


def run_main(argv, capsys):
    from tinyroots.train import main
    return call_main(main, argv, capsys)


def fast(out_dir, *extra):
    return ["--preset", "tiny", "--out-dir", str(out_dir), "--max-steps", "4",
            "--eval-interval", "2", "--no-progress", "--no-plot", "--sample-tokens", "0",
            *extra]


def write(path, data):
    (path.write_bytes if isinstance(data, bytes) else path.write_text)(data)
    return str(path)


BAD_ARGV = [   # (extra flags, expected exit code, words the one-line message must hold)
    (["--beta1", "2"], 2, ["'beta1' must be in [0, 1)", "2.0"]),
    (["--beta2", "-0.1"], 2, ["'beta2'"]),
    (["--seed", "-1"], 2, ["'seed'", "-1"]),
    (["--num-threads", "-1"], 2, ["'num_threads'", "-1"]),
    (["--num-threads", "100000"], 2, ["'num_threads'", "100000"]),
    (["--val-fraction", "1e-9"], 2, ["'val_fraction'", "1e-09"]),
    (["--lr-decay-steps", "0"], 2, ["'lr_decay_steps'", "0"]),
    (["--lr-decay-steps", "-5"], 2, ["'lr_decay_steps'", "-5"]),
    (["--n-layer", "2.5"], 2, ["'n_layer' must be int", "2.5"]),
    (["--learning-rate", "nan"], 2, ["'learning_rate' must be a finite number", "nan"]),
    (["--learning-rate", "inf"], 2, ["'learning_rate' must be a finite number", "inf"]),
    (["--target-val-loss", "nan"], 2, ["'target_val_loss'", "nan"]),
    (["--learning-rate", "-1"], 2, ["'learning_rate' must be >= 0.0"]),
    (["--max-steps", "0"], 2, ["'max_steps'"]),
    (["--dropout", "1"], 2, ["'dropout'"]),
    (["--block-size", "1000000000"], 2, ["'block_size'"]),
    (["--block-size", "1000000"], 2, ["GiB to train", "block_size=1000000"]),
    (["--n-layer", "900", "--n-embd", "8192", "--n-head", "8"], 2, ["GiB to train"]),
    (["--resume", "maybe"], 2, ["'resume' must be bool", "maybe"]),
    (["--data", "/nonexistent/corpus"], 2, ["/nonexistent/corpus"]),
    (["--init-from", "/nonexistent/model"], 2, ["--init-from /nonexistent/model",
                                                 "no such directory"]),
    (["--resume"], 2, ["--resume", "no checkpoint"]),
]


@pytest.mark.parametrize("extra,code,words", BAD_ARGV, ids=[" ".join(c[0]) for c in BAD_ARGV])
def test_bad_command_lines_are_one_clear_line(extra, code, words, tmp_path, capsys):
    rc, out, err = run_main(fast(tmp_path / "run", *extra), capsys)
    assert rc == code, err
    assert "Traceback" not in err and err.count("error:") == 1, err
    line = [ln for ln in err.splitlines() if "error:" in ln][0]
    for word in words:
        assert word in line, (word, line)


@pytest.mark.parametrize("name,data", [
    ("empty.txt", ""), ("binary.txt", bytes(range(256)) * 40),
    ("latin1.txt", "caf\xe9 na\xefve r\xe9sum\xe9 ".encode("latin-1") * 300),
])
def test_unusable_data_files_are_one_clear_line(name, data, tmp_path, capsys):
    path = write(tmp_path / name, data)
    rc, out, err = run_main(fast(tmp_path / "run", "--data", path), capsys)
    assert rc == 2 and "Traceback" not in err
    assert name in err.splitlines()[-1]


def test_config_files_are_checked_like_flags(tmp_path, capsys):
    cases = [("nested.json", "[" * 100_000, "nested more than"),
             ("nested.toml", "a = " + "[" * 100_000, "nested too deeply"),
             ("float.toml", "n_layer = 2.5\n", "'n_layer' must be int"),
             ("nan.toml", "learning_rate = nan\n", "finite number"),
             ("beta.json", '{"beta1": 2}', "'beta1' must be in [0, 1), got 2.0"),
             ("list.json", "[1, 2]", "expected a table")]
    for name, text, words in cases:
        rc, out, err = run_main(fast(tmp_path / "run", "--config", write(tmp_path / name, text)),
                                capsys)
        assert rc == 2 and words in err, (name, err)
        # a value out of range is found once the sources are merged: it names the key only
        assert name in err or name == "beta.json", (name, err)
        assert "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path):
    from tinyroots.train import main
    with pytest.raises(FileNotFoundError, match="/nonexistent/model"):
        main(fast(tmp_path / "run", "--init-from", "/nonexistent/model", "--debug"))


def test_boolean_options_are_switches():
    from tinyroots.config import parse_config
    cfg = parse_config(TrainConfig, ["--resume", "--no-progress", "--plot", "false"])
    assert cfg.resume is True and cfg.progress is False and cfg.plot is False
    cfg = parse_config(TrainConfig, ["--resume", "true", "--progress", "--out-dir", "x"])
    assert cfg.resume is True and cfg.progress is True and cfg.out_dir == "x"
    cfg = parse_config(TrainConfig, ["--resume", "--max-steps", "5"])
    assert cfg.resume is True and cfg.max_steps == 5
    explicit = set()
    parse_config(TrainConfig, ["--preset", "tiny", "--max-steps", "5"], presets=PRESETS,
                 explicit=explicit)
    assert {"max_steps", "n_layer", "out_dir"} <= explicit and "learning_rate" not in explicit


# ---------------------------------------------------------------------------------------------
# run directories are never replaced silently; results on stdout, progress on stderr


def test_a_run_directory_is_not_replaced_without_overwrite(tmp_path, capsys):
    run = tmp_path / "run"
    assert run_main(fast(run), capsys)[0] == 0
    before = (run / "metrics.jsonl").read_text()
    rc, out, err = run_main(fast(run), capsys)
    assert rc == 2 and "already holds a run" in err and "--resume" in err and "--overwrite" in err
    assert (run / "metrics.jsonl").read_text() == before          # untouched
    rc, out, err = run_main(fast(run, "--overwrite", "--max-steps", "2"), capsys)
    assert rc == 0 and read_metrics(run)[-1]["step"] == 2


def test_presets_have_their_own_run_directories():
    from tinyroots.config import parse_config
    dirs = {name: parse_config(TrainConfig, ["--preset", name], presets=PRESETS).out_dir
            for name in PRESETS}
    assert dirs["shakespeare_char"] == "out-shakespeare-char"
    assert len(set(dirs.values()) | {TrainConfig().out_dir}) == len(PRESETS) + 1


def test_results_go_to_stdout_and_progress_to_stderr(tmp_path):
    r = run_cli(["tinyroots.train"] + fast(tmp_path / "run", "--progress"),
                env={"OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "stopped: reached max_steps=4" in r.stdout and "val loss" in r.stdout
    assert "\r" not in r.stdout and "data: embedded Shakespeare" not in r.stdout
    assert "data: embedded Shakespeare" in r.stderr and "step      2" in r.stderr


def test_a_diverged_run_exits_non_zero(tmp_path, capsys):
    rc, out, err = run_main(fast(tmp_path / "run", "--learning-rate", "1e9", "--grad-clip", "0",
                                 "--max-steps", "40", "--eval-interval", "100",
                                 "--warmup-steps", "0"), capsys)
    assert rc == 1 and "diverged" in err and "the loss became" in err


# ---------------------------------------------------------------------------------------------
# resume continues the run as it was configured, and trusts nothing it reads


def test_resume_alone_reads_the_saved_configuration(tmp_path, capsys):
    run = tmp_path / "run"
    # non-default model, tokenizer and schedule: a resume with defaults would not fit them
    assert run_main(fast(run, "--n-embd", "16", "--vocab-size", "280", "--max-steps", "3"),
                    capsys)[0] == 0
    rc, out, err = run_main(["--out-dir", str(run), "--resume", "--max-steps", "5"], capsys)
    assert rc == 0, err
    assert read_metrics(run)[-1]["step"] == 5
    saved = json.loads((run / "train_config.json").read_text())
    assert saved["n_embd"] == 16 and saved["vocab_size"] == 280 and saved["max_steps"] == 5
    rc, out, err = run_main(["--out-dir", str(run), "--resume", "--n-embd", "32",
                             "--max-steps", "6"], capsys)
    assert rc == 2 and "n_embd=32" in err and "contradict" in err and "n_embd=16" in err


@pytest.fixture(scope="module")
def saved_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("resumable")
    train(tiny_cfg(run_dir, max_steps=4, eval_interval=2), out=quiet)
    return run_dir


def _edit_state(**changes):
    def mutate(last):
        path = last / "trainer_state.json"
        state = json.loads(path.read_text())
        for key, value in changes.items():
            if value is KeyError:
                state.pop(key)
            else:
                state[key] = value
        path.write_text(json.dumps(state))
    return mutate


def _edit_optimizer(fn):
    def mutate(last):
        from tinyroots.checkpoint import load_safetensors, save_safetensors
        arrays, _ = load_safetensors(last / "optimizer.safetensors", mmap=False)
        arrays = {k: np.array(v) for k, v in arrays.items()}
        fn(arrays)
        save_safetensors(last / "optimizer.safetensors", arrays)
    return mutate


def _list_shaped_optimizer_state(last):
    path = last / "trainer_state.json"
    state = json.loads(path.read_text())
    state["optimizer"]["state"] = list(state["optimizer"]["state"].values())
    path.write_text(json.dumps(state))


RESUME_CORRUPTIONS = [   # (mutation of last/, words the message must hold)
    ("no step", _edit_state(step=KeyError), ["trainer_state.json", "'step' is missing"]),
    ("step string", _edit_state(step="4"), ["trainer_state.json", "'step'", "'4'"]),
    ("step negative", _edit_state(step=-5), ["trainer_state.json", "'step'", "-5"]),
    ("step huge", _edit_state(step=1e30), ["trainer_state.json", "'step'", "1e+30"]),
    ("step float", _edit_state(step=2.5), ["trainer_state.json", "'step'", "2.5"]),
    ("no batcher", _edit_state(batcher=KeyError), ["trainer_state.json", "'batcher'"]),
    ("bad batcher", _edit_state(batcher={"bit_generator": "PCG64", "state": 5}),
     ["trainer_state.json", "'batcher'"]),
    ("batcher list", _edit_state(batcher=[1, 2]), ["trainer_state.json", "'batcher'"]),
    ("bad rng", _edit_state(rng="seed"), ["trainer_state.json", "'rng'"]),
    ("no rng", _edit_state(rng=KeyError), ["trainer_state.json", "'rng'"]),
    ("state not a dict", lambda last: (last / "trainer_state.json").write_text("[4]"),
     ["trainer_state.json", "expected a JSON object"]),
    ("not JSON", lambda last: (last / "trainer_state.json").write_text("{step: 4"),
     ["trainer_state.json"]),
    ("deep JSON", lambda last: (last / "trainer_state.json").write_text("[" * 100_000),
     ["trainer_state.json", "nested"]),
    ("optimizer list-shaped", _list_shaped_optimizer_state,
     ["trainer_state.json", "'optimizer'", "'state' object"]),
    ("optimizer missing", _edit_state(optimizer=KeyError), ["trainer_state.json",
                                                             "'optimizer'"]),
    ("optimizer lr string", lambda last: _edit_state()(last) or _set_group(last, "lr", "x"),
     ["trainer_state.json", "optimizer.groups[0]"]),
    ("moment missing", _edit_optimizer(lambda a: a.pop("0.exp_avg")),
     ["optimizer.safetensors", "'0.exp_avg' is missing"]),
    ("moment int32", _edit_optimizer(lambda a: a.update({"0.exp_avg_sq":
                                                         a["0.exp_avg_sq"].view(np.int32)})),
     ["optimizer.safetensors", "'0.exp_avg_sq'", "int32", "expected float32"]),
    ("moment shape", _edit_optimizer(lambda a: a.update({"0.exp_avg": a["0.exp_avg"][:1]})),
     ["optimizer.safetensors", "'0.exp_avg'", "expected float32"]),
    ("moment nan", _edit_optimizer(lambda a: a["1.exp_avg"].fill(np.nan)),
     ["optimizer.safetensors", "'1.exp_avg'", "NaN"]),
    ("stray tensor", _edit_optimizer(lambda a: a.update({"999.exp_avg": np.zeros(2,
                                                                                 np.float32)})),
     ["optimizer.safetensors", "'999.exp_avg'"]),
    ("optimizer file gone", lambda last: (last / "optimizer.safetensors").unlink(),
     ["optimizer.safetensors", "not found"]),
]


def _set_group(last, key, value):
    path = last / "trainer_state.json"
    state = json.loads(path.read_text())
    state["optimizer"]["groups"][0][key] = value
    path.write_text(json.dumps(state))


@pytest.mark.parametrize("name,mutate,words", RESUME_CORRUPTIONS,
                         ids=[c[0] for c in RESUME_CORRUPTIONS])
def test_resume_checks_every_saved_value(name, mutate, words, saved_run, tmp_path, capsys):
    import shutil
    run = tmp_path / "run"
    shutil.copytree(saved_run, run)
    mutate(run / "last")
    rc, out, err = run_main(["--out-dir", str(run), "--resume", "--max-steps", "6"], capsys)
    assert rc == 2, (name, err)
    assert "Traceback" not in err and err.count("error:") == 1, err
    for word in words:
        assert word in err, (word, err)


def test_kills_and_ctrl_c_at_random_moments_then_resume_give_the_same_run(tmp_path):
    """A small fault loop: SIGKILL, Ctrl-C, SIGKILL at random moments of one run, each time
    resumed with `--resume` alone; the losses equal those of a run never interrupted (dropout on,
    so the random state must come back too), and no checkpoint is left half-written."""
    import random
    rng = random.Random(0)
    args = ["tinyroots.train", "--preset", "tiny", "--max-steps", "60", "--eval-interval", "4",
            "--log-interval", "1", "--no-progress", "--no-plot", "--sample-tokens", "0",
            "--dropout", "0.1"]
    env = dict(os.environ, OMP_NUM_THREADS="1")
    ref = run_cli(args + ["--out-dir", str(tmp_path / "ref")], env=env)
    assert ref.returncode == 0, ref.stderr
    run = tmp_path / "run"
    command = args + ["--out-dir", str(run)]
    for sig in (signal.SIGKILL, signal.SIGINT, signal.SIGKILL):
        proc = subprocess.Popen([sys.executable, "-m"] + command, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, env=env)
        # wait until this process trains (a signal during start-up tests nothing here)
        metrics = run / "metrics.jsonl"
        seen = len(metrics.read_text().splitlines()) if metrics.exists() else 0
        deadline = time.time() + 300
        while time.time() < deadline and proc.poll() is None and not (
                metrics.exists() and len(metrics.read_text().splitlines()) > seen + 1
                and (run / "last" / "trainer_state.json").exists()):
            time.sleep(0.05)
        time.sleep(rng.uniform(0.0, 1.0))          # somewhere in the next steps or saves
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=300)
        assert "Traceback" not in err, err
        assert proc.returncode in (-signal.SIGKILL, 130, 0), (proc.returncode, err)
        command = ["tinyroots.train", "--out-dir", str(run), "--resume"]
    final = run_cli(command, env=env)
    assert final.returncode == 0, final.stderr
    a = {r["step"]: r["train_loss"] for r in read_metrics(tmp_path / "ref")}
    b = {r["step"]: r["train_loss"] for r in read_metrics(run)}
    assert a == b
    assert not [p.name for p in run.iterdir() if p.name.endswith((".tmp", ".old"))]
