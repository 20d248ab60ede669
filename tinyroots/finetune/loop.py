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
    eval.json              the final validation metrics and the run's summary
    best/                  the checkpoint (see finetune/__init__.py for its files per task)
"""

import json
import math
import os
import shutil
import sys
import time

import numpy as np

from .. import kernels, optim
from .. import random as trandom
from ..config import save_config
from ..fileio import write_json
from ..generate import load_model_and_tokenizer
from ..modify import (add_blocks, apply_lora, count_parameters, freeze, freeze_blocks,
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
# the job


def finetune(cfg, out=print):
    """Run the fine-tuning job described by cfg; returns a Result with .metrics (eval.json)."""
    cfg.validate()
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    os.makedirs(cfg.out_dir, exist_ok=True)
    log = out
    t_start = time.time()
    save_config(cfg, os.path.join(cfg.out_dir, "finetune_config.json"))
    metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
    if os.path.exists(metrics_path):
        os.remove(metrics_path)
    trandom.manual_seed(cfg.seed)

    train_ex, skipped_train = read_examples(cfg.train, cfg.task, cfg.bad_lines, log)
    val_ex, skipped_val = read_examples(cfg.val, cfg.task, cfg.bad_lines, log)
    task, gpt, tokenizer, source, new_ids, n_layer_before = prepare(cfg, log)
    module = task.build(gpt, train_ex, val_ex)
    row_mask = choose_trainable(cfg, gpt, new_ids, n_layer_before)

    params = trainable_parameters(module)
    if not params:
        raise ValueError("nothing to train: every parameter is frozen")
    n_trainable, n_total = trainable_count(module, row_mask)
    masked = row_mask[0] if row_mask is not None else None
    decay = [p for p in params if p.ndim >= 2 and p is not masked]
    no_decay = [p for p in params if not (p.ndim >= 2 and p is not masked)]
    groups = [g for g in ({"params": decay}, {"params": no_decay, "weight_decay": 0.0})
              if g["params"]]
    opt = optim.AdamW(groups, lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                      weight_decay=cfg.weight_decay)
    sched = optim.WarmupCosine(opt, cfg.learning_rate, cfg.warmup_steps, cfg.max_steps,
                               cfg.learning_rate * cfg.min_lr_ratio)
    what = (f"LoRA r={cfg.lora_rank} alpha={cfg.lora_alpha:g} on {cfg.lora_targets}"
            if cfg.lora_rank else "head only" if cfg.head_only else
            f"all but the first {cfg.freeze_blocks} blocks" if cfg.freeze_blocks else "full")
    log(f"training: {what}; {n_trainable:,} of {n_total:,} parameters trainable "
        f"({100.0 * n_trainable / n_total:.2f}%); {cfg.max_steps} steps of {cfg.batch_size}, "
        f"lr {cfg.learning_rate:g}, metric {cfg.metric_name}")

    metric = cfg.metric_name
    higher = HIGHER_IS_BETTER[metric]
    history = []

    def record(rec):
        history.append(rec)
        with open(metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    best_value = -math.inf if higher else math.inf
    best_step, best_state, evals_since_best = -1, None, 0
    stop_reason = None
    step, train_loss = 0, float("nan")
    bar = _progress(cfg)
    t_loop = time.time()
    try:
        while True:
            elapsed = time.time() - t_loop
            if step % cfg.eval_interval == 0 or step >= cfg.max_steps:
                m = task.evaluate(module)
                value = m[metric]
                gain = (value - best_value) if higher else (best_value - value)
                improved = gain > cfg.early_stop_min_delta or best_step < 0
                if improved:
                    best_value, best_step, evals_since_best = value, step, 0
                    best_state = [p.data.copy() for p in params]
                else:
                    evals_since_best += 1
                rec = {"step": step, **_rounded(m), "lr": sched.lr_at(min(step, cfg.max_steps - 1)),
                       "elapsed": round(elapsed, 2), "best": improved}
                if math.isfinite(train_loss):
                    rec["train_loss"] = round(train_loss, 6)
                record(rec)
                msg = f"step {step:>5}: " + ", ".join(
                    f"{k} {v:.4f}" for k, v in m.items() if isinstance(v, float)) + \
                    ("  (best)" if improved else "")
                (bar.write if bar is not None else log)(msg)
                if cfg.early_stop_patience and evals_since_best >= cfg.early_stop_patience:
                    stop_reason = (f"early stopping: {metric} has not improved for "
                                   f"{evals_since_best} evaluations (best {best_value:.4f} at "
                                   f"step {best_step})")
            if stop_reason is None and step >= cfg.max_steps:
                stop_reason = f"reached max_steps={cfg.max_steps}"
            if stop_reason is None and cfg.max_time and elapsed >= cfg.max_time:
                stop_reason = f"max_time {cfg.max_time:g}s reached"
            if stop_reason:
                break

            t0 = time.time()
            lr = sched.step(step)
            loss = task.loss(module, task.next_batch())
            if cfg.l1 or cfg.l2:
                loss = loss + optim.penalty(decay, cfg.l1, cfg.l2)
            loss.backward()
            if row_mask is not None and masked.grad is not None:
                masked.grad[row_mask[1]] = 0.0        # only the new tokens' rows may move
            norm = optim.clip_grad_norm(params, cfg.grad_clip or None)
            opt.step()
            opt.zero_grad()
            step += 1
            train_loss = float(loss)
            if not math.isfinite(train_loss):
                stop_reason = f"the loss became {train_loss} at step {step}"
                log(f"stopping: {stop_reason}; try a lower learning_rate")
                break
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {train_loss:.4f} lr {lr:.2e}", refresh=False)
            if step % cfg.log_interval == 0 and step % cfg.eval_interval:
                record({"step": step, "train_loss": round(train_loss, 6), "lr": lr,
                        "grad_norm": round(norm, 4), "step_s": round(time.time() - t0, 4),
                        **task.augment.take_stats()})
    except KeyboardInterrupt:
        stop_reason = "interrupted (Ctrl-C)"
        log("\nCtrl-C: restoring the best weights and saving them")
    finally:
        if bar is not None:
            bar.close()
    train_time = time.time() - t_loop

    # -- the best weights, the final evaluation, the checkpoint ---------------------------------
    if cfg.restore_best and best_state is not None and best_step != step:
        for p, arr in zip(params, best_state):
            p.data = arr
    final = task.evaluate(module, final=True)
    summary = {
        "task": cfg.task, "metric": metric, "best_step": best_step, "steps": step,
        "stop_reason": stop_reason, "train_time_s": round(train_time, 2),
        "elapsed_s": round(time.time() - t_start, 2),
        "trainable_params": n_trainable, "total_params": n_total,
        "trainable_percent": round(100.0 * n_trainable / n_total, 3),
        "init": source, "training": what,
        "augmentation": {"token_dropout": cfg.token_dropout, "token_mask": cfg.token_mask,
                         "span_deletion": cfg.span_deletion},
        "skipped_lines": {"train": [list(s) for s in skipped_train],
                          "val": [list(s) for s in skipped_val]},
    }
    metrics = {**_rounded(final), **summary}
    checkpoint = None
    if cfg.save:
        checkpoint = save_checkpoint(cfg, task, module, gpt, source)
        metrics["checkpoint"] = checkpoint
    metrics["elapsed_s"] = round(time.time() - t_start, 2)
    write_json(os.path.join(cfg.out_dir, "eval.json"), metrics)
    log(f"stopped: {stop_reason} after {step} steps ({train_time:.1f}s); best {metric} "
        f"{best_value:.4f} at step {best_step}")
    log("final validation: " + ", ".join(f"{k} {v:.4f}" for k, v in final.items()
                                         if isinstance(v, float)))
    if checkpoint:
        log(f"saved: {checkpoint} (checkpoint), {cfg.out_dir}/eval.json, metrics.jsonl")
    return Result(metrics=metrics, history=history, module=module, gpt=gpt,
                  tokenizer=tokenizer, task=task, checkpoint=checkpoint)


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


def _rounded(m):
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in m.items()}


def _progress(cfg):
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.max_steps, unit="step", dynamic_ncols=True, file=sys.stdout)


__all__ = ["TASK_CLASSES", "finetune", "prepare", "save_checkpoint"]
