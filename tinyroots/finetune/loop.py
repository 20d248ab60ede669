"""The fine-tuning job: load, modify, train with early stopping, evaluate, save.

    finetune(cfg)
      1. read and check the data (a bad line is reported with its line number)
      2. load the pretrained model and tokenizer (a train run directory or a model directory)
      3. add the task's special tokens and grow the embeddings; resize the context, add blocks,
         set dropout
      4. build the module that trains (the GPT, or GPT + classification head)
      5. choose what trains: everything, the head only, all but the first k blocks, or LoRA
         adapters (+ the head, + the rows of newly added tokens)
      6. AdamW on the trainable parameters only, warmup + cosine schedule, clipping, optional
         L1/L2 penalties; evaluate every eval_interval steps; keep the best weights; stop early
         when the validation metric stops improving (patience), at max_steps or max_time
      7. restore the best weights (restore_best), evaluate on the whole validation set
         -> eval.json, and save the checkpoint to out_dir/best (LoRA merged in, the adapter
         beside it)

The run directory:

    finetune_config.json   the resolved FinetuneConfig
    metrics.jsonl          one record per evaluation and per log_interval training steps
    eval.json              the final validation metrics, each --test file's ("test") and
                           the run's summary
    best/                  the checkpoint (see finetune/__init__.py for its files per task)
"""

import functools
import os
import shutil
import time

import numpy as np

from .. import distributed, kernels, ops, optim
from .. import random as trandom
from ..config import save_config
from ..fileio import write_json
from ..training import LoopSettings, MetricsLog, Trainer, log_to_stderr, rounded
from ..checkpoint import load_model_and_tokenizer
from .modify import (add_blocks, apply_lora, count_parameters, freeze, freeze_blocks,
                     lora_layers, merged_state_dict, resize_context, resize_vocab,
                     save_adapter, set_dropout, trainable_parameters, unfreeze)
from .classify import ClassifyTask
from .config import HIGHER_IS_BETTER
from .data import read_examples
from .lm import LMTask
from .sft import ChatTask, TranslateTask

TASK_CLASSES = {"classify": ClassifyTask, "chat": ChatTask, "translate": TranslateTask,
                "lm": LMTask}


class Result:
    """What finetune() returns: the final metrics, the run's history and where things are."""

    def __init__(self, **kw):
        self.__dict__.update(kw)


# ---------------------------------------------------------------------------------------------
# model preparation


def prepare(cfg, log):
    """Steps 2-3: -> (task, gpt, tokenizer, source dir, ids of the added tokens, old depth)."""
    gpt, tokenizer, source = load_model_and_tokenizer(cfg.init, cfg.which)
    gpt.train()
    task_class = TASK_CLASSES[cfg.task]
    old_vocab = gpt.config.vocab_size
    n_tokens = tokenizer.vocab_size
    if task_class.special_tokens:
        added = tokenizer.add_special_tokens(list(task_class.special_tokens))
        if added:
            log(f"tokenizer: added {added} special token(s) "
                f"{', '.join(task_class.special_tokens)} -> vocabulary {tokenizer.vocab_size}")
    if tokenizer.vocab_size > gpt.config.vocab_size:
        resize_vocab(gpt, tokenizer.vocab_size, seed=cfg.seed)
        log(f"model: embeddings resized {old_vocab} -> {gpt.config.vocab_size} rows")
    if cfg.block_size and cfg.block_size != gpt.config.block_size:
        log(f"model: context resized {gpt.config.block_size} -> {cfg.block_size}")
        resize_context(gpt, cfg.block_size)
    n_layer_before = gpt.config.n_layer
    if cfg.add_blocks:
        add_blocks(gpt, cfg.add_blocks)
        log(f"model: added {cfg.add_blocks} block(s) (identity init) -> {gpt.config.n_layer}")
    if cfg.dropout is not None:
        set_dropout(gpt, cfg.dropout)

    task = task_class(cfg, tokenizer, log)
    new_ids = np.arange(n_tokens, tokenizer.vocab_size)
    return task, gpt, tokenizer, source, new_ids, n_layer_before


def choose_trainable(cfg, gpt, new_ids, n_layer_before):
    """Step 5: set requires_grad. -> row_mask, or None.

    row_mask: when tokens were added but the embedding table is otherwise frozen (LoRA,
    freeze_blocks), the table still trains, with the gradient of every other row zeroed before
    each step (and no weight decay), so only the new tokens' rows move:
    (parameter, boolean array over rows that is True for the rows that stay fixed).
    """
    if cfg.lora_rank:
        apply_lora(gpt, cfg.lora_rank, cfg.lora_alpha, cfg.lora_dropout, cfg.lora_targets)
        if cfg.add_blocks:   # brand-new blocks have nothing pretrained to keep: train them fully
            unfreeze(gpt, [f"transformer.h.{i}" for i in range(n_layer_before,
                                                                gpt.config.n_layer)])
    if cfg.head_only:
        freeze(gpt)
    if cfg.freeze_blocks:
        freeze_blocks(gpt, cfg.freeze_blocks)
    wte = gpt.transformer.wte.weight
    row_mask = None
    if len(new_ids) and not wte.requires_grad and cfg.task != "classify":
        wte.requires_grad = True
        fixed = np.ones(wte.shape[0], dtype=bool)
        fixed[new_ids] = False
        row_mask = (wte, fixed)
    return row_mask


def trainable_count(module, row_mask):
    trainable, total = count_parameters(module)
    if row_mask is not None:
        wte, fixed = row_mask
        trainable -= int(fixed.sum()) * wte.shape[1]
    return trainable, total


# ---------------------------------------------------------------------------------------------
# the job: fine-tuning's part of the shared loop (tinyroots/training.py)


class FinetuneJob:
    """The task's batches, loss and validation metrics; the best weights kept in memory."""

    def __init__(self, task, module, params, row_mask):
        self.task, self.module, self.params, self.row_mask = task, module, params, row_mask
        self.best_state = None
        self.tests = []             # [(name, path, examples)]: --test files, scored at the end

    def next_batch(self):
        return self.task.next_batch()

    def loss(self, batch):
        return self.task.loss(self.module, batch)

    def evaluate(self):
        return self.task.evaluate(self.module)

    def keep_best(self, step):
        self.best_state = [p.data.copy() for p in self.params]

    def checkpoint(self, state):
        pass                        # the checkpoint is written once, at the end (best/)

    def before_clip(self):
        if self.row_mask is not None:
            wte, fixed = self.row_mask
            if wte.grad is not None:
                wte.grad[fixed] = 0.0           # only the new tokens' rows may move

    def train_stats(self):
        return self.task.augment.take_stats()

    def restore_best(self):
        for p, arr in zip(self.params, self.best_state):
            p.data = arr


def finetune(cfg, out=None, show=None, hooks=None):
    """Run the fine-tuning job described by cfg; returns a Result with .metrics (eval.json).
    Log lines go to out (default: stderr), the results to show (default: stdout; out, when
    only out is given)."""
    cfg.validate()
    log, show = out or log_to_stderr, show or out or print
    hooks = hooks or distributed.hooks_for(cfg)    # one process: Hooks(), the no-ops
    if not hooks.is_main:
        log = show = distributed.quiet             # rank 0 speaks for every process
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    t_start = time.time()
    with distributed.main_first(distributed.world()):   # rank 0 prepares out_dir
        if hooks.is_main:
            prepare_out_dir(cfg)
            save_config(cfg, os.path.join(cfg.out_dir, "finetune_config.json"))
    metrics = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), write=hooks.is_main)
    metrics.start_fresh()
    trandom.manual_seed(cfg.seed)

    train_ex, skipped_train = read_examples(cfg.train, cfg.task, cfg.bad_lines, log, cfg.redact_pii)
    val_ex, skipped_val = read_examples(cfg.val, cfg.task, cfg.bad_lines, log, cfg.redact_pii)
    tests = read_tests(cfg, log)
    task, gpt, tokenizer, source, new_ids, n_layer_before = prepare(cfg, log)
    module = task.build(gpt, train_ex, val_ex)
    row_mask = choose_trainable(cfg, gpt, new_ids, n_layer_before)
    params = trainable_parameters(module)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    opt, sched, decay = make_optimizer(cfg, params, row_mask)
    if row_mask is not None and getattr(hooks, "zero", 0):
        raise distributed.DistributedError(
            "--zero 1 cannot keep the embedding's old rows fixed (their gradients are zeroed "
            "after the reduce-scatter has taken them); run without --zero")
    hooks.attach(opt)
    what = describe(cfg, module, row_mask, log)

    job = FinetuneJob(task, module, params, row_mask)
    job.tests = tests
    metric = cfg.metric_name
    settings = LoopSettings.from_config(cfg, metric=metric,
                                        higher_is_better=HIGHER_IS_BETTER[metric])
    trainer = Trainer(job, params, opt, sched, settings, hooks=hooks, log=log, metrics=metrics,
                      penalty_params=decay)
    trainer.autocast = functools.partial(ops.autocast, cfg.dtype)
    state = trainer.run()
    about = {"init": source, "training": what,
             "skipped_lines": {"train": [list(s) for s in skipped_train],
                               "val": [list(s) for s in skipped_val]}}
    results, final, checkpoint = finish(cfg, job, state, gpt, source, about, t_start,
                                        hooks.is_main)
    report(state, metric, final, results.get("test", {}), checkpoint, cfg, show)
    return Result(metrics=results, history=metrics.history, module=module, gpt=gpt,
                  tokenizer=tokenizer, task=task, checkpoint=checkpoint, state=state,
                  diverged=state.diverged, interrupted=state.interrupted)


def finish(cfg, job, state, gpt, source, about, t_start, is_main):
    """Step 7: the best weights back, the final evaluation on the whole validation set, the
    checkpoint and eval.json -> (the eval.json dict, the final metrics, the checkpoint
    directory or None)."""
    task, module = job.task, job.module
    if cfg.restore_best and job.best_state is not None and state.best_step != state.step:
        job.restore_best()
    final = task.evaluate(module, final=True)
    tests = {name: rounded(task.evaluate_test(module, examples, path))
             for name, path, examples in job.tests}
    n_trainable, n_total = trainable_count(module, job.row_mask)
    results = {
        **rounded(final), "task": cfg.task, "metric": cfg.metric_name,
        "best_step": state.best_step, "steps": state.step, "stop_reason": state.stop_reason,
        "train_time_s": round(state.elapsed, 2), "trainable_params": n_trainable,
        "total_params": n_total, "trainable_percent": round(100.0 * n_trainable / n_total, 3),
        **about,
        "augmentation": {"token_dropout": cfg.token_dropout, "token_mask": cfg.token_mask,
                         "span_deletion": cfg.span_deletion},
        "examples_truncated": getattr(task, "truncation", None),
    }
    if tests:
        results["test"] = tests
    checkpoint = None
    if cfg.save and is_main:
        checkpoint = save_checkpoint(cfg, task, module, gpt, source)
        results["checkpoint"] = checkpoint
    results["elapsed_s"] = round(time.time() - t_start, 2)
    if is_main:
        write_json(os.path.join(cfg.out_dir, "eval.json"), results)
    return results, final, checkpoint


def read_tests(cfg, log):
    """--test a.jsonl,b.jsonl -> [(name, path, examples)], read before training so that a
    missing file or a bad line stops the run at once; a name is the file's stem (a, b)."""
    out, names = [], set()
    for path in [p.strip() for p in cfg.test.split(",") if p.strip()]:
        name = os.path.splitext(os.path.basename(path))[0]
        if name in names:
            name = path
        names.add(name)
        examples, _ = read_examples(path, cfg.task, cfg.bad_lines, log, cfg.redact_pii)
        out.append((name, path, examples))
    return out


def prepare_out_dir(cfg):
    """A run that saves a checkpoint never replaces another run's silently."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    found = [n for n in ("best", "eval.json") if os.path.exists(os.path.join(cfg.out_dir, n))]
    if found and cfg.save and not cfg.overwrite:
        raise FileExistsError(f"{cfg.out_dir} already holds a fine-tuning run "
                              f"({', '.join(found)}); choose another --out-dir, or replace it "
                              "with --overwrite")


def make_optimizer(cfg, params, row_mask):
    """AdamW on the trainable parameters (no weight decay on vectors or on a masked table),
    warmup + cosine -> (optimizer, schedule, the matrices the L1/L2 penalties apply to)."""
    masked = row_mask[0] if row_mask is not None else None
    decay = [p for p in params if p.ndim >= 2 and p is not masked]
    no_decay = [p for p in params if not (p.ndim >= 2 and p is not masked)]
    groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    opt = optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                      weight_decay=cfg.weight_decay)
    sched = optim.WarmupCosine(opt, cfg.learning_rate, cfg.warmup_steps, cfg.max_steps,
                               cfg.learning_rate * cfg.min_lr_ratio)
    return opt, sched, decay


def describe(cfg, module, row_mask, log):
    """Log what trains -> the one-line description that eval.json keeps."""
    n_trainable, n_total = trainable_count(module, row_mask)
    what = (f"LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha:g} on {cfg.lora_targets}"
            if cfg.lora_rank else "head only" if cfg.head_only else
            f"all but the first {cfg.freeze_blocks} blocks" if cfg.freeze_blocks else "full")
    log(f"training: {what}; {n_trainable:,} of {n_total:,} parameters trainable "
        f"({100.0 * n_trainable / n_total:.2f}%); {cfg.max_steps} steps of {cfg.batch_size}, "
        f"lr {cfg.learning_rate:g}, metric {cfg.metric_name}")
    return what


def report(state, metric, final, tests, checkpoint, cfg, show):
    show(f"stopped: {state.stop_reason} after {state.step} steps ({state.elapsed:.1f}s); best "
         f"{metric} {state.best_value:.4f} at step {state.best_step}")
    show("final validation: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()
                                          if isinstance(v, float)))
    for name, metrics in tests.items():
        show(f"test {name}: " + ", ".join(f"{k} {v:.4f}" for k, v in metrics.items()
                                          if isinstance(v, float)))
    if checkpoint:
        show(f"saved: {checkpoint} (checkpoint), {cfg.out_dir}/eval.json, metrics.jsonl")


def save_checkpoint(cfg, task, module, gpt, source):
    """out_dir/best: written to a temporary directory, then renamed into place."""
    final = os.path.join(cfg.out_dir, "best")
    tmp = os.path.join(cfg.out_dir, ".best.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    has_lora = bool(lora_layers(module))
    export = merged_state_dict(module) if has_lora else None
    task.save(module, tmp, export)
    if has_lora:
        save_adapter(gpt, tmp, base_model=os.path.abspath(source))
    shutil.rmtree(final, ignore_errors=True)
    os.replace(tmp, final)
    return final


__all__ = ["TASK_CLASSES", "FinetuneJob", "finetune", "prepare", "save_checkpoint"]
