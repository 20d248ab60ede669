"""`python -m tinyroots.finetune TASK`: adapt a pretrained GPT to a task, and evaluate it.

    python -m tinyroots.finetune classify  --init out --train train.jsonl --val val.jsonl \\
        --out-dir out-intents                                    # {"text", "label"} per line
    python -m tinyroots.finetune chat      --init out --train faq_train.jsonl --val faq_val.jsonl \\
        --out-dir out-faq --lora-rank 8 --learning-rate 2e-3     # {"messages": [...]}
    python -m tinyroots.finetune translate --init out --train en_fr_train.jsonl \\
        --val en_fr_val.jsonl --out-dir out-enfr                 # {"source", "target"}
    python -m tinyroots.finetune lm        --init out --train new_domain.txt --val held_out.txt
    python -m tinyroots.finetune --config best_config.json      # e.g. from tinyroots.tune

--init takes a run directory of `python -m tinyroots.train` (its best/ checkpoint) or any model
directory. Every flag is a FinetuneConfig field (finetune/config.py; --help lists them), and a
TOML/JSON file given with --config can set them too. The model can be modified on the way:
--block-size (resize the context), --add-blocks N, --freeze-blocks K, --head-only (classify),
--lora-rank R [--lora-alpha --lora-dropout --lora-targets attn|mlp|all], --dropout P.
Overfitting controls: --early-stop-patience, --weight-decay, --l1/--l2, --dropout, and input
augmentation --token-dropout, --token-mask, --span-deletion.

Files in --out-dir:

    finetune_config.json  the resolved configuration
    metrics.jsonl         evaluations (val metrics, lr, best) and training records (loss,
                          grad norm, augmentation counts)
    eval.json             final validation metrics of the restored best weights: accuracy, f1
                          (classify); val_loss, perplexity (all); bleu (translate); plus steps,
                          time, trainable parameter count, skipped data lines
    best/                 the checkpoint:
        config.json, model.safetensors    GPT-2 layout, Hugging Face names; LoRA merged in
        vocab.json, merges.txt, ...       the tokenizer, with the task's special tokens
        adapter_model.safetensors,        with LoRA: the adapter alone (PEFT names and layout),
        adapter_config.json               to apply to the base model with modify.load_adapter
        labels.json                       classify: the labels in class-id order; the model
                                          file also holds the head, "score.weight" (K, C), as
                                          Hugging Face's GPT2ForSequenceClassification

chat/translate/lm checkpoints load in `python -m tinyroots.generate` and `python -m
tinyroots.chat`; a classifier loads with ``finetune.load_classifier(dir)``, and
`python -m tinyroots.evaluate --checkpoint DIR --task TASK --data FILE` scores any of them on
a data file.
"""

import json
import sys
from dataclasses import dataclass

from ..config import ConfigError, parse_config
from .classify import GPTClassifier, load_classifier, predict, save_classifier
from .config import FinetuneConfig
from .data import (CHAT_TOKENS, TRANSLATE_TOKENS, DataError, chat_ids, read_examples,
                   translation_ids, translation_prompt)
from .loop import TASK_CLASSES, finetune

__all__ = [
    "CHAT_TOKENS", "TRANSLATE_TOKENS", "DataError", "FinetuneConfig", "GPTClassifier",
    "chat_ids", "evaluate_checkpoint", "finetune", "load_classifier", "main", "predict",
    "read_examples", "save_classifier", "translation_ids", "translation_prompt",
]

PROG = "python -m tinyroots.finetune"


def task_argv(argv):
    """`finetune classify --x 1` -> ['--task', 'classify', '--x', '1'] (the task is positional)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and not argv[0].startswith("-"):
        return ["--task", argv[0]] + argv[1:]
    return argv


def main(argv=None):
    cfg = parse_config(FinetuneConfig, task_argv(argv), prog=PROG + " TASK",
                       description=__doc__)
    try:
        finetune(cfg)
    except (OSError, ValueError) as exc:          # DataError, CheckpointError, ConfigError...
        print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    return 0


# ---------------------------------------------------------------------------------------------
# `python -m tinyroots.evaluate`: score a fine-tuned checkpoint on a data file


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


def evaluate_checkpoint(argv=None, out=sys.stdout):
    """The body of `python -m tinyroots.evaluate`: prints the metrics as JSON; returns 0/2."""
    from .. import kernels
    from ..evaluate import accuracy, macro_f1
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
            from ..generate import load_model_and_tokenizer
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
