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
                          time, trainable parameter count, skipped data lines; under "test",
                          each --test file's metrics (chat: intent_accuracy when its
                          lines carry "intent")
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

import sys

from .. import distributed
from ..config import parse_config
from .classify import GPTClassifier, load_classifier, predict, save_classifier
from .config import FinetuneConfig
from .data import (CHAT_TOKENS, TRANSLATE_TOKENS, DataError, chat_ids, read_examples,
                   translation_ids, translation_prompt)
from .evaluate import evaluate_checkpoint
from .loop import finetune

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


def task_of(argv):
    """The task named on a command line made by task_argv (--task X or --task=X), or the
    default: it picks the defaults --help shows and the job starts from."""
    for i, arg in enumerate(argv):
        if arg == "--task" and i + 1 < len(argv):
            return argv[i + 1]
        if arg.startswith("--task="):
            return arg.split("=", 1)[1]
    return FinetuneConfig.task


def main(argv=None):
    """User errors (DataError, CheckpointError, ConfigError, a missing file...) print one line
    and exit 2 (--debug shows the traceback); a diverged run exits 1, Ctrl-C 130."""
    # under mpiexec -n N: data-parallel, and an error on any rank ends every rank
    return distributed.run_command(PROG, _main, task_argv(argv))


def _main(argv):
    explicit = set()
    cfg = parse_config(FinetuneConfig, argv, prog=PROG + " TASK", description=__doc__,
                       defaults=FinetuneConfig.for_task(task_of(argv)), explicit=explicit)
    cfg = cfg.with_lora_rate(explicit)
    result = finetune(cfg)
    if result.diverged:
        print(f"{PROG}: error: training diverged: {result.metrics['stop_reason']} (try a "
              "lower --learning-rate)", file=sys.stderr)
        return 1
    return 130 if result.interrupted else 0
