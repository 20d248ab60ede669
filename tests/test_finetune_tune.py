"""`python -m tinyroots.tune`: grid and random search over fine-tuning runs."""

import json

import numpy as np
import pytest
from test_finetune import make_pretrained, make_text, write_jsonl

from tinyroots.config import ConfigError, load_saved_config
from tinyroots.finetune import FinetuneConfig
from tinyroots.finetune.tune import TuneConfig, trials_of, tune

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    d = tmp_path_factory.mktemp("tune")
    pre = make_pretrained(d / "pre")
    rng = np.random.default_rng(1)
    rows = [{"text": make_text(rng, lab), "label": lab}
            for lab in ("fruit", "tool") for _ in range(40)]
    base = d / "base.toml"
    base.write_text("max_steps = 6\neval_interval = 3\nbatch_size = 8\nwarmup_steps = 1\n")
    return pre, write_jsonl(d / "t.jsonl", rows), write_jsonl(d / "v.jsonl", rows[::4]), base


def test_grid_search_tries_every_combination_and_saves_the_best(setup, tmp_path):
    pre, train, val, base = setup
    cfg = TuneConfig(task="classify", init=pre, train=train, val=val, out_dir=str(tmp_path),
                     base_config=str(base), learning_rate="1e-3,1e-2", lora_rank="0,2",
                     weight_decay="0,0.1")                 # no --trials: the whole grid
    printed = []
    results, best_cfg = tune(cfg, out=printed.append)
    assert len(results) == 8
    combos = {(r["learning_rate"], r["lora_rank"], r["weight_decay"]) for r in results}
    assert len(combos) == 8
    accs = [r["accuracy"] for r in results]
    assert accs == sorted(accs, reverse=True)                 # best first
    table = (tmp_path / "results.md").read_text().splitlines()
    assert table[0].startswith("| rank | trial | learning_rate | weight_decay | dropout |")
    assert len(table) == 2 + 8 and table[2].startswith("| 1 |")
    assert any("best: trial" in line for line in printed)
    saved = load_saved_config(FinetuneConfig, str(tmp_path / "best_config.json"))
    assert saved.learning_rate == results[0]["learning_rate"]
    assert saved.lora_rank == results[0]["lora_rank"] and saved.max_steps == 6
    assert saved.save and saved.out_dir == str(tmp_path / "best")
    lines = (tmp_path / "results.jsonl").read_text().splitlines()
    assert len(lines) == 8 and "time_s" in json.loads(lines[0])
    # one numbering everywhere, from 1: progress lines, table, records and directories
    assert [line.split(":")[0] for line in printed if line.startswith("trial ")] == \
        [f"trial {i}/8" for i in range(1, 9)]
    assert sorted(r["trial"] for r in results) == list(range(1, 9))
    assert (tmp_path / "trial_001" / "eval.json").is_file()
    assert not (tmp_path / "trial_000").exists()
    assert not (tmp_path / "trial_001" / "best").exists()      # trials write no checkpoint


def test_grid_runs_every_combination_unless_trials_says_otherwise():
    # 12 combinations asked, "grid search, 8 trials" run: the old default of --trials cut it
    grid = dict(learning_rate="3e-4,1e-3,3e-3", weight_decay="0,0.1", lora_rank="0,8")
    assert len(trials_of(TuneConfig(**grid))) == 12
    assert len(trials_of(TuneConfig(trials=5, **grid))) == 5
    assert len(trials_of(TuneConfig(search="random", learning_rate="1e-4:1e-2"))) == 8
    with pytest.raises(ConfigError, match="'trials' must be >= 1"):
        TuneConfig(trials=0).validate()


def test_trials_start_from_the_tasks_defaults():
    from tinyroots.finetune.tune import base_finetune_config
    base = base_finetune_config(TuneConfig(task="chat", init="x", train="t", val="v"))
    assert base.block_size == FinetuneConfig.for_task("chat").block_size == 256


def test_random_search_draws_from_ranges():
    cfg = TuneConfig(search="random", trials=20, learning_rate="1e-4:1e-2", dropout="0:0.3",
                     weight_decay="0:0.1", lora_rank="0,4,8", seed=3)
    trials = trials_of(cfg)
    assert len(trials) == 20
    lrs = np.array([t["learning_rate"] for t in trials])
    assert lrs.min() >= 1e-4 and lrs.max() <= 1e-2
    assert (lrs < 1e-3).any() and (lrs > 1e-3).any()          # log-uniform: both decades
    assert all(0 <= t["dropout"] <= 0.3 for t in trials)
    assert {t["lora_rank"] for t in trials} <= {0, 4, 8}
    assert any(t["weight_decay"] == 0.0 for t in trials)
    assert trials == trials_of(cfg)                            # the seed fixes the draws


def test_search_space_errors():
    with pytest.raises(ConfigError, match="ranges need --search random"):
        TuneConfig(learning_rate="1e-4:1e-2").validate()
    with pytest.raises(ConfigError, match="'dropout' must be a comma list"):
        TuneConfig(dropout="high").validate()
    with pytest.raises(ConfigError, match="lora_rank"):
        TuneConfig(search="random", lora_rank="0:8").validate()
