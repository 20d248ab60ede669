"""Score a fine-tuned checkpoint on a data file: the body of `python -m tinyroots.evaluate`.

    python -m tinyroots.evaluate --checkpoint out-ft --task classify --data val.jsonl

The metrics themselves (accuracy, macro-F1, BLEU, perplexity) are tinyroots/metrics.py; this
module loads the checkpoint, runs the task's evaluation and prints the numbers as JSON.
"""

import json
import sys
from dataclasses import dataclass

from .. import kernels
from ..checkpoint import load_model_and_tokenizer
from ..config import ConfigError, check_common, check_ranges, parse_config
from ..metrics import accuracy, macro_f1
from .classify import load_classifier, predict
from .config import FinetuneConfig
from .data import read_examples
from .loop import TASK_CLASSES


@dataclass
class EvalConfig:
    """Evaluate a fine-tuned checkpoint on a JSONL (or, for lm, text) file."""

    checkpoint: str = ""               # fine-tuning run directory or checkpoint directory
    task: str = "classify"             # classify, chat, translate or lm
    data: str = ""                     # the data file, in the task's format
    which: str = "best"                # in a run directory: best or last
    bad_lines: str = "error"           # a malformed line: error or skip
    batch_size: int = 16               # examples per forward pass (lm: windows)
    bleu_examples: int = 0             # translate: pairs translated for BLEU; 0: all
    max_new_tokens: int = 64           # translate: longest translation generated
    num_threads: int = 0               # kernel threads; 0: default

    def validate(self):
        if self.task not in TASK_CLASSES:
            raise ConfigError(f"EvalConfig: 'task' must be one of {', '.join(TASK_CLASSES)}, "
                              f"got {self.task!r}")
        for key in ("checkpoint", "data"):
            if not getattr(self, key):
                raise ConfigError(f"EvalConfig: '{key}' is required (--{key} ...)")
        if self.which not in ("best", "last"):
            raise ConfigError(f"EvalConfig: 'which' must be best or last, got {self.which!r}")
        if self.bad_lines not in ("error", "skip"):
            raise ConfigError(f"EvalConfig: 'bad_lines' must be error or skip, got "
                              f"{self.bad_lines!r}")
        # checked here, before any file is read: batch_size 0 ended in range()'s own message
        check_ranges(self, {"batch_size": (1, None), "bleu_examples": (0, None),
                            "max_new_tokens": (1, None)})
        check_common(self)


def evaluate_checkpoint(argv=None, out=sys.stdout):
    """The body of `python -m tinyroots.evaluate`: prints the metrics as JSON; returns 0/2."""
    cfg = parse_config(EvalConfig, argv, prog="python -m tinyroots.evaluate",
                       description=EvalConfig.__doc__)
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    try:
        examples, skipped = read_examples(cfg.data, cfg.task, cfg.bad_lines,
                                          log=lambda m: print(m, file=sys.stderr))
        if cfg.task == "classify":
            model, tok, labels, pad_id = load_classifier(cfg.checkpoint)
            preds = predict(model, tok, [ex["text"] for ex in examples], labels, pad_id,
                            cfg.batch_size)
            gold = [ex["label"] for ex in examples]
            metrics = {"accuracy": accuracy(gold, preds), "f1": macro_f1(gold, preds),
                       "n": len(examples)}
        else:
            gpt, tok, _ = load_model_and_tokenizer(cfg.checkpoint, cfg.which)
            fcfg = FinetuneConfig(task=cfg.task, init=cfg.checkpoint, train=cfg.data,
                                  val=cfg.data, batch_size=cfg.batch_size,
                                  bleu_examples=cfg.bleu_examples or len(examples),
                                  max_new_tokens=cfg.max_new_tokens, progress=False)
            task = TASK_CLASSES[cfg.task](fcfg, tok, log=lambda m: None)
            task.build(gpt, examples, examples)
            metrics = task.evaluate(gpt.eval(), final=True)
            metrics.pop("samples", None)
        metrics["skipped_lines"] = [list(s) for s in skipped]
    except (OSError, ValueError) as exc:
        print(f"python -m tinyroots.evaluate: error: {exc}", file=sys.stderr)
        return 2
    out.write(json.dumps(metrics, indent=2) + "\n")
    return 0
