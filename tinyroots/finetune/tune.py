"""`python -m tinyroots.tune TASK`: search fine-tuning hyperparameters, keep the best.

    python -m tinyroots.tune classify --init out --train train.jsonl --val val.jsonl \\
        --learning-rate 3e-4,1e-3,3e-3 --weight-decay 0,0.1 --lora-rank 0,8 --max-steps 200
    python -m tinyroots.tune classify ... --search random --trials 6 \\
        --learning-rate 1e-4:3e-3 --dropout 0:0.2             # ranges: sampled per trial
    python -m tinyroots.finetune --config out-tune/best_config.json   # train the winner

Each of learning_rate, weight_decay, dropout and lora_rank is a comma list of values; a grid
search tries every combination, a random search draws ``trials`` of them. For a random
search a value may also be a range LO:HI: learning rates and weight decays are then drawn
log-uniformly (every decade equally likely; a 0 lower bound means "0 or log-uniform above
LO"), dropout uniformly. Everything else comes from --base-config (a FinetuneConfig TOML or
JSON file) and the flags task, init, train, val.

Every trial is a full `tinyroots.finetune` run (no checkpoint written) scored by the task's
validation metric (accuracy for classify, val_loss otherwise, or the base config's metric).
Written to --out-dir:

    results.jsonl       one record per trial: the values tried, the metrics, the time
    results.md          the table printed at the end, best first
    best_config.json    the winning FinetuneConfig (save on, out_dir <out-dir>/best): pass it to
                        python -m tinyroots.finetune --config to train and save that model
    trial_NNN/          each trial's metrics.jsonl and eval.json
"""

import dataclasses
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from .. import kernels
from ..config import ConfigError, apply_overrides, load_config_file, parse_config, save_config
from . import FinetuneConfig, finetune, task_argv
from .config import HIGHER_IS_BETTER

SEARCHED = ("learning_rate", "weight_decay", "dropout", "lora_rank")


@dataclass
class TuneConfig:
    """A hyperparameter search over fine-tuning runs."""

    task: str = "classify"             # classify, chat, translate or lm
    init: str = ""                     # pretrained run directory or model directory
    train: str = ""                    # training data
    val: str = ""                      # validation data (the metric is measured on it)
    out_dir: str = "out-tune"          # results, the best config and each trial's logs
    base_config: str = ""              # FinetuneConfig TOML/JSON for everything not searched
    search: str = "grid"               # grid (every combination) or random
    trials: Optional[int] = None       # grid: at most this many (none: every combination);
                                       # random: how many (none: 8)
    learning_rate: str = "3e-4,1e-3"   # values (a,b,c) or, for random search, a range lo:hi
    weight_decay: str = "0"            # values or range
    dropout: str = "0"                 # values or range (uniform)
    lora_rank: str = "0"               # values; 0 is full fine-tuning
    max_steps: int = 0                 # steps per trial; 0: the base config's
    seed: int = 0                      # seeds the random search
    num_threads: int = 0               # kernel threads; 0: default

    def validate(self):
        if self.search not in ("grid", "random"):
            raise ConfigError(f"TuneConfig: 'search' must be grid or random, got "
                              f"{self.search!r}")
        if (self.trials is not None and self.trials < 1) or self.max_steps < 0:
            raise ConfigError("TuneConfig: 'trials' must be >= 1 (or none) and 'max_steps' "
                              ">= 0")
        for name in SEARCHED:
            parse_space(name, getattr(self, name), self.search)


def parse_space(name, text, search):
    """'1e-4,3e-4' -> ("values", [1e-4, 3e-4]); '1e-4:1e-2' -> ("range", (1e-4, 1e-2))."""
    kind = int if name == "lora_rank" else float
    text = str(text).strip()
    bad = ConfigError(f"TuneConfig: '{name}' must be a comma list of numbers >= 0"
                      f"{' or a range lo:hi' if kind is float else ''}, got {text!r}")
    if ":" in text:
        if kind is int:
            raise ConfigError("TuneConfig: 'lora_rank' takes values, not a range")
        if search != "random":
            raise ConfigError(f"TuneConfig: '{name}' = {text!r} is a range; ranges need "
                              "--search random (a grid needs a list of values)")
        try:
            lo, hi = (float(v) for v in text.split(":"))
        except ValueError:
            raise bad from None
        if not 0 <= lo < hi < math.inf or (name == "dropout" and hi > 1):
            raise bad
        return "range", (lo, hi)
    try:
        values = [kind(float(v)) if kind is int else kind(v) for v in text.split(",") if v]
    except ValueError:
        raise bad from None
    # subtle: 'nan' and 'inf' parse as floats; checked here, each trial failed on them
    if not values or not all(0 <= v < math.inf for v in values):
        raise bad
    if name == "dropout" and max(values) >= 1:
        raise ConfigError(f"TuneConfig: 'dropout' values must be in [0, 1), got {text!r}")
    return "values", values


def draw(name, space, rng):
    kind, v = space
    if kind == "values":
        return v[int(rng.integers(len(v)))]
    lo, hi = v
    if name == "dropout":
        return float(rng.uniform(lo, hi))
    if lo == 0.0:                  # half the draws at exactly 0, the rest log-uniform
        if rng.random() < 0.5:
            return 0.0
        lo = hi / 1000.0
    return float(math.exp(rng.uniform(math.log(lo), math.log(hi))))


def trials_of(cfg):
    """[{"learning_rate": ..., "weight_decay": ..., "dropout": ..., "lora_rank": ...}]."""
    spaces = {name: parse_space(name, getattr(cfg, name), cfg.search) for name in SEARCHED}
    if cfg.search == "grid":
        combos = [dict(zip(SEARCHED, vals))
                  for vals in itertools.product(*(spaces[n][1] for n in SEARCHED))]
        return combos[:cfg.trials] if cfg.trials else combos
    n = cfg.trials or RANDOM_TRIALS
    rng = np.random.default_rng(cfg.seed)
    out, seen = [], set()
    for _ in range(n * 20):                        # distinct draws, when the space allows
        t = {name: draw(name, spaces[name], rng) for name in SEARCHED}
        key = tuple(t.values())
        if key not in seen:
            seen.add(key)
            out.append(t)
        if len(out) == n:
            break
    return out


RANDOM_TRIALS = 8                  # a random search's trials when --trials is not given


def n_combinations(cfg):
    sizes = [len(parse_space(name, getattr(cfg, name), "grid")[1]) for name in SEARCHED]
    return int(np.prod(sizes))


def base_finetune_config(cfg):
    base = FinetuneConfig.for_task(cfg.task)
    if cfg.base_config:
        base = apply_overrides(FinetuneConfig, base, load_config_file(cfg.base_config),
                               cfg.base_config)
    fixed = {"task": cfg.task, "init": cfg.init or base.init, "train": cfg.train or base.train,
             "val": cfg.val or base.val, "progress": False}
    if cfg.max_steps:
        fixed["max_steps"] = cfg.max_steps
    return dataclasses.replace(base, **fixed)


def tune(cfg, out=print):
    """Run the search; returns (results sorted best first, best FinetuneConfig)."""
    cfg.validate()
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    os.makedirs(cfg.out_dir, exist_ok=True)
    save_config(cfg, os.path.join(cfg.out_dir, "tune_config.json"))
    base = base_finetune_config(cfg)
    base.validate()
    metric = base.metric_name
    higher = HIGHER_IS_BETTER[metric]
    trials = trials_of(cfg)
    if cfg.search == "grid" and cfg.trials and cfg.trials < n_combinations(cfg):
        out(f"tune: --trials {cfg.trials} runs the first {cfg.trials} of the grid's "
            f"{n_combinations(cfg)} combinations")
    out(f"tune: {cfg.search} search, {len(trials)} trials of {base.max_steps} steps, "
        f"metric {metric} ({'higher' if higher else 'lower'} is better)")
    results_path = os.path.join(cfg.out_dir, "results.jsonl")
    if os.path.exists(results_path):
        os.remove(results_path)
    results = []
    for i, values in enumerate(trials, 1):        # trials count from 1, everywhere
        rec = run_trial(base, i, values, metric, os.path.join(cfg.out_dir, f"trial_{i:03d}"))
        results.append(rec)
        with open(results_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")
        out(f"trial {i}/{len(trials)}: " + _fmt_values(values)
            + f" -> {metric} {_fmt(rec[metric])} ({rec['time_s']}s)")
    results.sort(key=lambda r: _rank_key(r[metric], higher))
    table = results_table(results, metric)
    out("\n" + table)
    with open(os.path.join(cfg.out_dir, "results.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    best = results[0]
    if best[metric] is None:
        raise ValueError("tune: every trial failed; see results.jsonl")
    best_cfg = _with_values(base, best, out_dir=os.path.join(cfg.out_dir, "best"), save=True,
                            progress=True)
    save_config(best_cfg, os.path.join(cfg.out_dir, "best_config.json"))
    out(f"best: trial {best['trial']} ({_fmt_values(best)}), {metric} {_fmt(best[metric])}; "
        f"config saved to {cfg.out_dir}/best_config.json -- train it with\n"
        f"  python -m tinyroots.finetune --config {cfg.out_dir}/best_config.json")
    return results, best_cfg


def _with_values(base, values, **fixed):
    """base with one trial's searched values (and the fixed settings) filled in."""
    return dataclasses.replace(
        base, learning_rate=values["learning_rate"], weight_decay=values["weight_decay"],
        dropout=values["dropout"], lora_rank=int(values["lora_rank"]), **fixed)


def run_trial(base, i, values, metric, out_dir):
    """Fine-tune one trial quietly -> its record: the values, the metric (None if it failed),
    the other metrics it reported, the time it took."""
    t0 = time.time()
    try:
        run = finetune(_with_values(base, values, out_dir=out_dir, save=False),
                       out=lambda m: None)
        m = run.metrics
        rec = {"trial": i, **values, metric: m[metric], "best_step": m["best_step"],
               "trainable_percent": m["trainable_percent"]}
        for extra in ("accuracy", "f1", "val_loss", "bleu", "perplexity"):
            if extra in m and extra != metric:
                rec[extra] = m[extra]
    except (ValueError, OSError) as exc:        # a diverging or impossible trial
        rec = {"trial": i, **values, metric: None, "error": str(exc)}
    rec["time_s"] = round(time.time() - t0, 1)
    return rec


def _rank_key(value, higher):
    """Sort key, best first; a failed or non-finite trial last."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return math.inf
    return -value if higher else value


def _fmt(v):
    if v is None:
        return "failed"
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt_values(values):
    return ", ".join(f"{k} {_fmt(values[k])}" for k in SEARCHED)


def results_table(results, metric):
    """A Markdown table, one row per trial in the given order."""
    extras = [k for k in ("accuracy", "f1", "val_loss", "bleu") if k != metric
              and any(k in r for r in results)]
    head = ["rank", "trial", *SEARCHED, metric, *extras, "trainable %", "time s"]
    rows = [head, ["---"] * len(head)]
    for rank, r in enumerate(results, 1):
        rows.append([str(rank), str(r["trial"]), *(_fmt(r[k]) for k in SEARCHED),
                     _fmt(r[metric]), *(_fmt(r.get(k)) for k in extras),
                     _fmt(r.get("trainable_percent")), _fmt(r["time_s"])])
    return "\n".join("| " + " | ".join(row) + " |" for row in rows)


def main(argv=None):
    cfg = parse_config(TuneConfig, task_argv(argv), prog="python -m tinyroots.tune TASK",
                       description=__doc__)
    try:
        tune(cfg)
    except (OSError, ValueError) as exc:
        print(f"python -m tinyroots.tune: error: {exc}", file=sys.stderr)
        return 2
    return 0
