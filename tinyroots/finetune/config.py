"""FinetuneConfig: everything one fine-tuning job needs (python -m tinyroots.finetune --help)."""

import dataclasses
from dataclasses import dataclass
from typing import Optional

from ..config import ConfigError, check_common
from .data import TASKS

DEFAULT_METRIC = {"classify": "accuracy", "chat": "val_loss", "translate": "val_loss",
                  "lm": "val_loss"}
TASK_METRICS = {"classify": ("accuracy", "f1", "val_loss"), "chat": ("val_loss",),
                "translate": ("val_loss", "bleu"), "lm": ("val_loss",)}
HIGHER_IS_BETTER = {"accuracy": True, "f1": True, "bleu": True, "val_loss": False}

# Each task's own defaults, on top of the dataclass's: the settings with which README's and
# examples/README.md's recipes reach their stated figures from the 4-layer pre-trained model
# (bench/bench_finetune.py measures them). A chat dialogue or a translation pair is longer than
# a classified message, so those tasks get a 256-token context and more steps. The step counts
# come from the held-out paraphrases (examples/faq/*_paraphrase.jsonl; Intel Xeon, 1 thread):
# classify at 300 steps 84%, at 600 85-86% (three seeds); chat at 1200 steps 80%, at 1600 82%
# and 84% (two seeds), every training question answered right. Chat with LoRA
# adapts every projection (attention and MLP): on the 4x128 model, r=8 on attention alone was at
# val loss 2.65 after 200 steps, on all of them 1.42 (full fine-tuning: 0.23 after 100).
TASK_DEFAULTS = {
    "classify": {"learning_rate": 1e-3, "max_steps": 600, "eval_interval": 50},
    "chat": {"learning_rate": 1e-3, "max_steps": 1600, "eval_interval": 100, "block_size": 256,
             "batch_size": 8, "lora_targets": "all"},
    "translate": {"learning_rate": 1e-3, "max_steps": 800, "eval_interval": 100},
    "lm": {},
}
# LoRA's adapters start at zero and move more slowly than full weights: when --lora-rank is
# given without --learning-rate, the task's rate is multiplied by this
LORA_LR_FACTOR = 3.0


@dataclass
class FinetuneConfig:
    """A fine-tuning job: task, data, how the model is modified, optimisation, stopping."""

    task: str = "classify"             # classify, chat, translate or lm
    init: str = ""                     # pretrained run directory (tinyroots.train) or model dir
    which: str = "best"                # in a run directory: its best or last checkpoint
    train: str = ""                    # training data: JSONL (lm: also plain text)
    val: str = ""                      # validation data, same format
    test: str = ""                     # held-out test files, comma-separated, scored once at
                                       # the end (eval.json "test", keyed by file name)
    out_dir: str = "out-finetune"      # checkpoint, metrics.jsonl and eval.json go here
    bad_lines: str = "error"           # a malformed data line: error (stop) or skip (and report)
    redact_pii: bool = False           # replace e-mails, IPs, phones, keys in the data first
    max_length: int = 0                # tokens per example, longer ones cut; 0: the context
    # the classification head
    pooling: str = "last"              # classify: last (final token's state) or mean (average)
    # modifying the model
    block_size: int = 0                # resize the context to this many positions; 0 keeps it
    add_blocks: int = 0                # append this many blocks, initialised as identity
    freeze_blocks: int = 0             # freeze the embeddings and the first k blocks
    head_only: bool = False            # classify: train the classification head only
    lora_rank: int = 0                 # LoRA rank r; 0: no LoRA (full fine-tuning)
    lora_alpha: float = 16.0           # LoRA's update is (lora_alpha / lora_rank) * A @ B
    lora_dropout: float = 0.0          # dropout on the adapters' input
    lora_targets: str = "attn"         # attn, mlp, all, or e.g. attn.c_attn,mlp.c_fc
    # optimisation
    batch_size: int = 16               # examples (lm: windows) per micro-batch
    grad_accum_steps: int = 1          # micro-batches summed into one optimizer step
    max_steps: int = 300               # optimizer steps
    learning_rate: float = 3e-4        # peak learning rate; each task has its own default,
                                       # x3 with LoRA when not given (TASK_DEFAULTS)
    min_lr_ratio: float = 0.1          # the cosine schedule ends at learning_rate * this
    warmup_steps: int = 20             # linear warmup steps
    weight_decay: float = 0.0          # AdamW decoupled weight decay on matrices
    beta1: float = 0.9                 # AdamW beta1
    beta2: float = 0.99                # AdamW beta2
    grad_clip: float = 1.0             # global gradient-norm clip; 0 disables
    l1: float = 0.0                    # L1 penalty on trainable matrices, added to the loss
    l2: float = 0.0                    # L2 penalty on trainable matrices, added to the loss
    dropout: Optional[float] = None    # dropout on embeddings and residuals; none: the model's
    # augmentation (input side only; see finetune/data.py)
    token_dropout: float = 0.0         # delete each input token with this probability
    token_mask: float = 0.0            # replace each input token by <|endoftext|> with this prob.
    span_deletion: float = 0.0         # delete one random span of input tokens with this prob.
    span_max: int = 3                  # longest span span_deletion removes
    # evaluation and stopping
    eval_interval: int = 50            # evaluate on the validation set every this many steps
    metric: str = ""                   # early-stopping metric (accuracy, f1, val_loss, bleu)
    early_stop_patience: int = 0       # stop after this many evaluations without improvement
    early_stop_min_delta: float = 0.0  # an improvement must beat the best by more than this
    max_time: float = 0.0              # stop after this many seconds of training; 0: no limit
    restore_best: bool = True          # end with the best evaluated weights (else the last)
    eval_examples: int = 0             # validation examples per evaluation; 0: all of them
    bleu_examples: int = 200           # translate: validation pairs translated for BLEU
    max_new_tokens: int = 64           # longest translation (BLEU) or sample reply generated
    # output
    seed: int = 1337                   # seeds data order, augmentation, dropout, new weights
    num_threads: int = 0               # kernel threads; 0: OMP_NUM_THREADS or all cores
    # several processes (mpiexec -n N python -m tinyroots.finetune ...)
    zero: int = 0                      # 1: ZeRO-1, each process keeps 1/N of AdamW's moments
    bucket_mb: float = 25.0            # gradients travel in buckets of about this many MB
    dtype: str = "fp32"                # bf16: mixed precision, the products in bf16 (ops.autocast)
    save: bool = True                  # write the checkpoint (tuning trials may skip it)
    overwrite: bool = False            # replace a saved run in out_dir (else: an error)
    progress: bool = True              # show a progress bar
    log_interval: int = 10             # write a training record every this many steps

    @classmethod
    def for_task(cls, task):
        """The defaults of one task (TASK_DEFAULTS over the dataclass's); an unknown task keeps
        the dataclass's, and validate() names it."""
        return cls(task=task, **TASK_DEFAULTS.get(task, {}))

    def with_lora_rate(self, explicit):
        """With LoRA and no learning rate given (explicit: the keys the user set), the task's
        rate times LORA_LR_FACTOR."""
        if self.lora_rank and "learning_rate" not in explicit:
            return dataclasses.replace(self, learning_rate=self.learning_rate * LORA_LR_FACTOR)
        return self

    @property
    def metric_name(self):
        return self.metric or DEFAULT_METRIC.get(self.task, "val_loss")

    def validate(self):
        name = type(self).__name__
        check_common(self)               # seed, num_threads, beta1, beta2, dtype
        if self.task not in TASKS:
            raise ConfigError(f"{name}: 'task' must be one of {', '.join(TASKS)}, got "
                              f"{self.task!r}")
        for key in ("init", "train", "val"):
            if not getattr(self, key):
                raise ConfigError(f"{name}: '{key}' is required (--{key} ...)")
        if self.which not in ("best", "last"):
            raise ConfigError(f"{name}: 'which' must be best or last, got {self.which!r}")
        if self.bad_lines not in ("error", "skip"):
            raise ConfigError(f"{name}: 'bad_lines' must be error or skip, got "
                              f"{self.bad_lines!r}")
        if self.pooling not in ("last", "mean"):
            raise ConfigError(f"{name}: 'pooling' must be last or mean, got {self.pooling!r}")
        for key in ("batch_size", "grad_accum_steps", "max_steps", "eval_interval",
                    "log_interval", "span_max", "bleu_examples"):
            if getattr(self, key) < 1:
                raise ConfigError(f"{name}: '{key}' must be >= 1, got {getattr(self, key)}")
        for key in ("max_length", "block_size", "add_blocks", "freeze_blocks", "lora_rank",
                    "warmup_steps", "early_stop_patience", "eval_examples", "max_new_tokens",
                    "num_threads"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}: '{key}' must be >= 0, got {getattr(self, key)}")
        for key in ("learning_rate", "weight_decay", "grad_clip", "l1", "l2", "max_time",
                    "early_stop_min_delta", "lora_alpha"):
            if getattr(self, key) < 0:
                raise ConfigError(f"{name}: '{key}' must be >= 0, got {getattr(self, key)}")
        if not 0.0 <= self.min_lr_ratio <= 1.0:
            raise ConfigError(f"{name}: 'min_lr_ratio' must be in [0, 1], got "
                              f"{self.min_lr_ratio}")
        for key in ("lora_dropout", "token_dropout", "token_mask", "span_deletion"):
            if not 0.0 <= getattr(self, key) < 1.0:
                raise ConfigError(f"{name}: '{key}' must be in [0, 1), got "
                                  f"{getattr(self, key)}")
        if self.dropout is not None and not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"{name}: 'dropout' must be in [0, 1), got {self.dropout}")
        if not 0.0 <= self.beta1 < 1.0 or not 0.0 <= self.beta2 < 1.0:
            raise ConfigError(f"{name}: 'beta1' and 'beta2' must be in [0, 1)")
        if self.metric and self.metric not in TASK_METRICS[self.task]:
            raise ConfigError(f"{name}: 'metric' for {self.task} must be one of "
                              f"{', '.join(TASK_METRICS[self.task])}, got {self.metric!r}")
        if self.head_only and self.task != "classify":
            raise ConfigError(f"{name}: 'head_only' is for the classify task (the other tasks "
                              "use the language-model head, which is the embedding table)")
        if self.head_only and self.lora_rank:
            raise ConfigError(f"{name}: 'head_only' and 'lora_rank' exclude each other")
        if self.lora_rank:
            from .modify import parse_lora_targets
            try:
                parse_lora_targets(self.lora_targets)
            except ValueError as exc:
                raise ConfigError(f"{name}: 'lora_targets': {exc}") from None
        if self.task == "lm" and (self.token_dropout or self.span_deletion):
            raise ConfigError(f"{name}: the lm task supports token_mask only (deleting tokens "
                              "would change what is predicted)")
