"""FinetuneConfig: each task's own defaults, LoRA's learning rate, and what --help shows."""

import subprocess
import sys

import pytest

from tinyroots.config import parse_config
from tinyroots.finetune import FinetuneConfig, task_argv
from tinyroots.finetune import task_of
from tinyroots.finetune.config import LORA_LR_FACTOR, TASK_DEFAULTS

REQUIRED = ["--init", "pre", "--train", "t.jsonl", "--val", "v.jsonl"]


def parsed(argv):
    argv = task_argv(argv)
    explicit = set()
    cfg = parse_config(FinetuneConfig, argv, defaults=FinetuneConfig.for_task(task_of(argv)),
                       explicit=explicit)
    return cfg.with_lora_rate(explicit)


@pytest.mark.parametrize("task", sorted(TASK_DEFAULTS))
def test_each_task_starts_from_its_own_defaults(task):
    cfg = parsed([task] + REQUIRED)
    assert cfg.task == task
    for key, value in TASK_DEFAULTS[task].items():
        assert getattr(cfg, key) == value, key


def test_flags_override_the_task_defaults():
    cfg = parsed(["chat"] + REQUIRED + ["--block-size", "128", "--max-steps", "7"])
    assert (cfg.block_size, cfg.max_steps) == (128, 7)
    assert parsed(["--task=translate"] + REQUIRED).max_steps == TASK_DEFAULTS["translate"][
        "max_steps"]


def test_lora_without_a_learning_rate_gets_a_higher_one():
    base = TASK_DEFAULTS["chat"]["learning_rate"]
    assert parsed(["chat"] + REQUIRED + ["--lora-rank", "8"]).learning_rate == \
        pytest.approx(base * LORA_LR_FACTOR)
    # a rate the user gives is used as given
    assert parsed(["chat"] + REQUIRED + ["--lora-rank", "8", "--learning-rate", "2e-4"]) \
        .learning_rate == 2e-4
    assert parsed(["chat"] + REQUIRED).learning_rate == base


def test_help_shows_the_tasks_defaults():
    # `finetune chat --help` listed --task (default: 'classify') and classify's step count
    r = subprocess.run([sys.executable, "-m", "tinyroots.finetune", "chat", "--help"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0
    assert "(default: 'chat')" in r.stdout and "'classify')" not in r.stdout
    steps = TASK_DEFAULTS["chat"]["max_steps"]
    assert f"optimizer steps (default: {steps})" in " ".join(r.stdout.split())
