"""`python -m tinyroots.train`: pre-train a GPT on a text corpus.

With no arguments it trains a small GPT with a byte-level BPE tokenizer on the embedded
Shakespeare, shows the validation loss falling, saves the run to ``out/`` and prints a sample:

    python -m tinyroots.train                                  # the default run, a few minutes
    python -m tinyroots.train --preset shakespeare_char        # nanoGPT's character-level recipe
    python -m tinyroots.train --data my_texts/ --vocab-size 8192 --max-steps 5000
    python -m tinyroots.train --out-dir out --resume           # continue an interrupted run
    python -m tinyroots.generate --checkpoint out --prompt "ROMEO:"

The run directory holds ``last/`` (weights, tokenizer, optimizer and trainer state: what
``--resume`` continues from), ``best/`` (the weights with the lowest validation loss),
``train_config.json`` (the resolved configuration), ``metrics.jsonl`` (one record per logged
step) and ``loss.png``. Ctrl-C saves ``last/`` and exits; resuming then gives exactly the losses
an uninterrupted run would have given.
"""

import dataclasses
import json
import math
import os
import shutil
import signal
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import checkpoint as ck
from . import kernels, optim
from . import random as trandom
from .config import ConfigError, parse_config, save_config
from .fileio import write_json
from .model import GPT, GPTConfig
from .tensor import no_grad

EMBEDDED_CORPUS = os.path.join(os.path.dirname(__file__), "assets", "tinyshakespeare.txt")


@dataclass
class TrainConfig:
    """Everything a pre-training run needs; see `python -m tinyroots.train --help`."""

    # data
    data: str = ""                     # a text file or folder; empty: the embedded Shakespeare
    tokenizer: str = "bpe"             # bpe (byte-level BPE, trained on the data) or char
    vocab_size: int = 1024             # BPE vocabulary size (ignored for char)
    val_fraction: float = 0.1          # the last part of the corpus held out for validation
    # model
    n_layer: int = 4                   # transformer blocks
    n_head: int = 4                    # attention heads per block
    n_embd: int = 128                  # channels (must be divisible by n_head)
    block_size: int = 128              # context length in tokens
    dropout: float = 0.0               # dropout on embeddings, attention and residuals
    bias: bool = True                  # biases in Linear and LayerNorm layers, as GPT-2
    init_from: str = ""                # start from this checkpoint directory instead of scratch
    # optimisation
    batch_size: int = 16               # sequences per micro-batch
    grad_accum_steps: int = 1          # micro-batches summed into one optimizer step
    max_steps: int = 1500              # optimizer steps
    learning_rate: float = 2e-3        # peak learning rate
    min_lr: float = 2e-4               # learning rate at the end of the cosine decay
    warmup_steps: int = 100            # linear warmup steps
    lr_decay_steps: Optional[int] = None  # cosine decay length; none: max_steps
    weight_decay: float = 0.1          # AdamW decoupled weight decay (2-D weights only)
    beta1: float = 0.9                 # AdamW beta1
    beta2: float = 0.99                # AdamW beta2
    grad_clip: float = 1.0             # global gradient-norm clip; 0 disables
    l1: float = 0.0                    # L1 penalty on 2-D weights, added to the loss
    l2: float = 0.0                    # L2 penalty on 2-D weights, added to the loss
    # evaluation and logging
    eval_interval: int = 250           # evaluate every this many steps (and at the end)
    eval_batches: int = 20             # batches per split in each evaluation
    log_interval: int = 10             # write a metrics record every this many steps
    # stopping
    max_time: float = 0.0              # stop after this many seconds of training; 0: no limit
    target_val_loss: Optional[float] = None  # stop once the validation loss reaches this
    early_stop_patience: int = 0       # stop after this many evaluations without improvement
    early_stop_min_delta: float = 0.0  # an improvement must beat the best by more than this
    # output
    out_dir: str = "out"               # the run directory
    resume: bool = False               # continue the run in out_dir from its last checkpoint
    seed: int = 1337                   # seeds initialisation, batches and dropout
    num_threads: int = 0               # kernel threads; 0: OMP_NUM_THREADS or all cores
    sample_tokens: int = 200           # tokens to generate at the end; 0 skips the sample
    sample_prompt: str = "ROMEO:"      # prompt for the final sample
    progress: bool = True              # show a progress bar
    plot: bool = True                  # save loss.png (needs matplotlib)

    def validate(self):
        positive = ("n_layer", "n_head", "n_embd", "block_size", "batch_size",
                    "grad_accum_steps", "max_steps", "eval_interval", "eval_batches",
                    "log_interval")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"TrainConfig: '{name}' must be >= 1, got "
                                  f"{getattr(self, name)}")
        if self.tokenizer not in ("bpe", "char"):
            raise ConfigError(f"TrainConfig: 'tokenizer' must be 'bpe' or 'char', got "
                              f"{self.tokenizer!r}")
        if self.data and self.tokenizer != "bpe":
            raise ConfigError("TrainConfig: --data trains a byte-level BPE tokenizer on the "
                              "cleaned corpus; tokenizer=char is for the embedded corpus only")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ConfigError(f"TrainConfig: 'vocab_size' must be >= 257 for byte-level BPE "
                              f"(256 bytes + <|endoftext|>), got {self.vocab_size}")
        if not 0.0 < self.val_fraction < 1.0:
            raise ConfigError(f"TrainConfig: 'val_fraction' must be in (0, 1), got "
                              f"{self.val_fraction}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"TrainConfig: n_embd={self.n_embd} must be divisible by "
                              f"n_head={self.n_head}")
        for name in ("learning_rate", "min_lr", "weight_decay", "grad_clip", "l1", "l2",
                     "max_time", "early_stop_min_delta"):
            if getattr(self, name) < 0:
                raise ConfigError(f"TrainConfig: '{name}' must be >= 0, got "
                                  f"{getattr(self, name)}")
        if not 0.0 <= self.dropout < 1.0:
            raise ConfigError(f"TrainConfig: 'dropout' must be in [0, 1), got {self.dropout}")
        if self.early_stop_patience < 0 or self.warmup_steps < 0 or self.sample_tokens < 0:
            raise ConfigError("TrainConfig: early_stop_patience, warmup_steps and "
                              "sample_tokens must be >= 0")


PRESETS = {
    "shakespeare_char": dict(
        _doc="nanoGPT's CPU recipe: characters, 4x4x128, context 64, 2000 steps",
        tokenizer="char", n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12,
        max_steps=2000, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, lr_decay_steps=2000,
        beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, dropout=0.0, val_fraction=0.1,
        eval_interval=250, eval_batches=20, sample_prompt="\n"),
    "tiny": dict(
        _doc="a seconds-long smoke test", n_layer=2, n_head=2, n_embd=32, block_size=32,
        vocab_size=300, batch_size=8, max_steps=40, eval_interval=20, eval_batches=2,
        warmup_steps=5, sample_tokens=20),
    "gpt2": dict(
        _doc="GPT-2 124M shape (12x12x768, context 1024, vocab 50257): slow on a CPU",
        n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257,
        learning_rate=6e-4, min_lr=6e-5, beta2=0.95, batch_size=4, grad_accum_steps=8,
        warmup_steps=700, max_steps=20000),
}


# ---------------------------------------------------------------------------------------------
# data


class Batcher:
    """Random (B, T) windows from an in-memory token array, with next-token targets.

        tokens [5, 9, 2, 7, 1, ...] -> x = [[9, 2, 7]], y = [[2, 7, 1]]

    Its own PCG64 generator picks the offsets, so the batch stream is fixed by the seed and can
    be saved and restored (get_state()/set_state()) independently of dropout's randomness.
    Same interface as tinyroots.data.DataLoader, which does this over token shards on disk.
    """

    def __init__(self, tokens, batch_size, block_size, seed):
        if len(tokens) < block_size + 2:
            raise ValueError(f"the data has {len(tokens)} tokens, too few for windows of "
                             f"{block_size + 1}; use a smaller block_size or more data")
        self.tokens = tokens
        self.B, self.T = batch_size, block_size
        self.rng = np.random.default_rng(seed)

    def next_batch(self):
        starts = self.rng.integers(0, len(self.tokens) - self.T - 1, self.B)
        idx = starts[:, None] + np.arange(self.T + 1)
        chunk = self.tokens[idx].astype(np.int64)
        return chunk[:, :-1], chunk[:, 1:]

    def get_state(self):
        return self.rng.bit_generator.state

    def set_state(self, state):
        self.rng.bit_generator.state = state


@dataclasses.dataclass
class Corpus:
    """The tokenized data of a run: where batches come from, and the tokenizer."""

    tokenizer: object
    train: object        # a token array, or a list of shard paths
    val: object
    n_train: int
    n_val: int

    def loader(self, split, cfg, seed):
        source = self.train if split == "train" else self.val
        if isinstance(source, np.ndarray):
            return Batcher(source, cfg.batch_size, cfg.block_size, seed)
        from .data import DataLoader
        return DataLoader(source, cfg.batch_size, cfg.block_size, seed=seed)


def load_tokenizer_from(path):
    from .tokenizer import load_tokenizer
    return load_tokenizer(path)


def prepare_data(cfg, log):
    """Tokenize the corpus and split off validation -> Corpus.

    --data PATH goes through tinyroots.data.prepare (clean, train the tokenizer, tokenize into
    shards; cached under out_dir/data, so a second run or a resume reuses it). The embedded
    Shakespeare is small enough to tokenize in memory, as nanoGPT does.
    """
    from .tokenizer import CharTokenizer, Tokenizer

    if cfg.data:
        from .data import prepare
        prepared = prepare(cfg.data, os.path.join(cfg.out_dir, "data"),
                           vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction,
                           verbose=True)
        log(f"data: {cfg.data} -> {prepared.n_train_tokens:,} train / {prepared.n_val_tokens:,} "
            f"val tokens (vocabulary {prepared.vocab_size}{', cached' if prepared.cached else ''})")
        return Corpus(prepared.tokenizer, prepared.train, prepared.val, prepared.n_train_tokens,
                      prepared.n_val_tokens)

    with open(EMBEDDED_CORPUS, encoding="utf-8") as f:
        text = f.read()
    t0 = time.time()
    if cfg.tokenizer == "char":
        tok = CharTokenizer.train(text)
    else:
        cache = os.path.join(cfg.out_dir, "tokenizer")
        try:
            tok = Tokenizer.from_pretrained(cache)
            if tok.vocab_size != cfg.vocab_size:
                raise ValueError("different vocabulary size")
        except (OSError, ValueError):  # no usable cache: train it
            tok = Tokenizer.train(text, cfg.vocab_size)
            tok.save_pretrained(cache)
    ids = np.asarray(tok.encode(text), dtype=np.int64)
    dtype = np.uint16 if tok.vocab_size <= 65536 else np.uint32
    ids = ids.astype(dtype)
    n_train = int(len(ids) * (1.0 - cfg.val_fraction))
    log(f"data: embedded Shakespeare, {len(text):,} characters -> {len(ids):,} tokens "
        f"({cfg.tokenizer}, vocabulary {tok.vocab_size}) in {time.time() - t0:.1f}s; "
        f"{n_train:,} train / {len(ids) - n_train:,} val")
    return Corpus(tok, ids[:n_train], ids[n_train:], n_train, len(ids) - n_train)


# ---------------------------------------------------------------------------------------------
# evaluation


def evaluate(model, loader, n_batches):
    """Mean loss over n_batches from a freshly seeded loader: the same batches at every
    evaluation, so successive numbers differ only because the model changed."""
    model.eval()
    losses = []
    with no_grad():
        for _ in range(n_batches):
            x, y = loader.next_batch()
            losses.append(float(model(x, targets=y, return_logits=False).loss))
    model.train()
    return float(np.mean(losses))


# ---------------------------------------------------------------------------------------------
# checkpoints of a run: last/ (resumable) and best/


def save_run_checkpoint(run_dir, name, model, tokenizer, optimizer=None, state=None):
    """Write run_dir/name/ as a whole: into a temporary directory first, then swapped in.

    subtle: each file is atomic on its own, but a checkpoint is several files (weights,
    optimizer, trainer state) that must match. Writing a fresh directory and renaming it into
    place means a crash leaves either the old checkpoint or the new one, never a mix; if the
    crash falls between the two renames, ``name.old`` is still there and is used on resume.
    """
    final = os.path.join(run_dir, name)
    tmp = os.path.join(run_dir, f".{name}.tmp")
    old = os.path.join(run_dir, f"{name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    ck.save_pretrained(model, tmp, tokenizer=tokenizer)
    if optimizer is not None:
        ck.save_training_state(tmp, optimizer, state)
    if os.path.exists(final):
        shutil.rmtree(old, ignore_errors=True)
        os.replace(final, old)
    os.replace(tmp, final)
    shutil.rmtree(old, ignore_errors=True)
    return final


def find_checkpoint(run_dir, name="last"):
    """run_dir/name, or the .old copy a crash between two renames left behind."""
    for candidate in (os.path.join(run_dir, name), os.path.join(run_dir, f"{name}.old")):
        if os.path.isfile(os.path.join(candidate, ck.CONFIG_NAME)):
            return candidate
    return None


# ---------------------------------------------------------------------------------------------
# the loop


class Run:
    """One training run: state, logging and the stopping rules, around the plain loop in train()."""

    def __init__(self, cfg, out=print):
        self.cfg = cfg
        self.log = out
        self.metrics_path = os.path.join(cfg.out_dir, "metrics.jsonl")
        self.history = []           # metric records (also written to metrics.jsonl)
        self.best_val = math.inf
        self.best_step = -1
        self.evals_since_best = 0
        self.stop_reason = None
        self.interrupted = False
        self.pending = {}           # step figures waiting for the evaluation's record
        self.saved_step = None      # the step out_dir/last holds

    def record(self, rec):
        self.history.append(rec)
        with open(self.metrics_path, "a", encoding="utf-8") as f:
            f.write(json.dumps(rec) + "\n")

    def on_sigint(self, signum, frame):
        if self.interrupted:      # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self._note_interrupt()

    def on_sigint_while_saving(self, signum, frame):
        # A checkpoint is being written: remember the Ctrl-C and act on it once the write is
        # done. (Ignoring the signal instead would lose it: one Ctrl-C landing in a save
        # would then never stop the run.)
        if not self.interrupted:
            self._note_interrupt()

    def _note_interrupt(self):
        self.interrupted = True
        self.log("\nCtrl-C: finishing this step, saving out_dir/last, then exiting "
                 "(press again to abort at once; the last evaluation's checkpoint remains)")


def build_model(cfg, tokenizer, log):
    if cfg.init_from:
        model = GPT.from_pretrained(cfg.init_from)
        if model.config.vocab_size < tokenizer.vocab_size:
            raise ValueError(f"init_from {cfg.init_from}: its vocabulary ({model.config.vocab_size}"
                             f") is smaller than the tokenizer's ({tokenizer.vocab_size})")
        log(f"model: initialised from {cfg.init_from}")
        return model
    eot = getattr(tokenizer, "eot_token_id", None)
    mcfg = GPTConfig(n_layer=cfg.n_layer, n_head=cfg.n_head, n_embd=cfg.n_embd,
                     vocab_size=tokenizer.vocab_size, block_size=cfg.block_size,
                     dropout=cfg.dropout, bias=cfg.bias, bos_token_id=eot, eos_token_id=eot)
    return GPT(mcfg)


def train(cfg, out=print):
    """Run the whole training job described by cfg; returns the Run (history, best, reason)."""
    cfg.validate()
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    os.makedirs(cfg.out_dir, exist_ok=True)
    run = Run(cfg, out)
    log = run.log

    resume_dir = find_checkpoint(cfg.out_dir, "last") if cfg.resume else None
    if cfg.resume and resume_dir is None:
        raise FileNotFoundError(f"--resume: no checkpoint in {cfg.out_dir}/last to resume from")
    if resume_dir is None:
        if os.path.exists(run.metrics_path):
            os.remove(run.metrics_path)   # a fresh run starts a fresh log
        for stale in ("last", "last.old", "best", "best.old"):
            shutil.rmtree(os.path.join(cfg.out_dir, stale), ignore_errors=True)
    save_config(cfg, os.path.join(cfg.out_dir, "train_config.json"))

    trandom.manual_seed(cfg.seed)
    corpus = prepare_data(cfg, log)
    tokenizer = corpus.tokenizer
    if resume_dir is not None:
        tokenizer = load_tokenizer_from(resume_dir)
        model = GPT.from_pretrained(resume_dir)
    else:
        model = build_model(cfg, tokenizer, log)
    if model.config.block_size < cfg.block_size:
        raise ConfigError(f"TrainConfig: block_size {cfg.block_size} exceeds the model's "
                          f"context {model.config.block_size}")
    model.train()
    decay = [p for p in model.parameters() if p.ndim >= 2]
    opt = optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                      weight_decay=cfg.weight_decay)
    sched = optim.WarmupCosine(opt, cfg.learning_rate, cfg.warmup_steps,
                               cfg.lr_decay_steps or cfg.max_steps, cfg.min_lr)
    batcher = corpus.loader("train", cfg, cfg.seed + 1)

    start_step, elapsed_before = 0, 0.0
    if resume_dir is not None:
        state = ck.load_training_state(resume_dir, opt)
        start_step = int(state["step"])
        elapsed_before = float(state.get("elapsed", 0.0))
        batcher.set_state(state["batcher"])
        trandom.set_state(state["rng"])
        run.best_val = float(state.get("best_val", math.inf))
        run.best_step = int(state.get("best_step", -1))
        run.evals_since_best = int(state.get("evals_since_best", 0))
        run.history = _read_metrics(run.metrics_path, start_step)
        _rewrite_metrics(run.metrics_path, run.history)
        log(f"resumed from {resume_dir} at step {start_step}")

    n_params = model.num_parameters()
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps
    log(f"model: {model.config.n_layer} layers, {model.config.n_head} heads, "
        f"{model.config.n_embd} wide, context {model.config.block_size}, "
        f"{n_params / 1e6:.2f}M parameters | backend {kernels.BACKEND} "
        f"({kernels.info()['simd_isa']}), {kernels.get_num_threads()} threads")
    log(f"training: {cfg.max_steps} steps x {tokens_per_step:,} tokens, lr {cfg.learning_rate} "
        f"(warmup {cfg.warmup_steps}, cosine to {cfg.min_lr}), out_dir {cfg.out_dir}")

    def trainer_state(step, elapsed):
        return {"step": step, "elapsed": elapsed, "batcher": batcher.get_state(),
                "rng": trandom.get_state(), "best_val": run.best_val, "best_step": run.best_step,
                "evals_since_best": run.evals_since_best, "train_config": dataclasses.asdict(cfg)}

    def save_last(step, elapsed):
        # subtle: Ctrl-C only takes note while a checkpoint is written; the write is atomic
        # anyway, but a half-finished save would just be thrown away
        handler = signal.signal(signal.SIGINT, run.on_sigint_while_saving)
        try:
            save_run_checkpoint(cfg.out_dir, "last", model, tokenizer, opt,
                                trainer_state(step, elapsed))
            run.saved_step = step
        finally:
            signal.signal(signal.SIGINT, handler)

    previous_handler = signal.signal(signal.SIGINT, run.on_sigint)
    bar = _progress(cfg, start_step)
    t_start = time.time()
    step = start_step
    last_train_loss = float("nan")
    try:
        while True:
            elapsed = elapsed_before + time.time() - t_start
            # -- evaluate, keep the best, save a resumable checkpoint, check stopping rules ---
            is_last = step >= cfg.max_steps
            if step % cfg.eval_interval == 0 or is_last:
                rec = _evaluate_and_decide(run, model, tokenizer, corpus, step,
                                           sched.lr_at(min(step, cfg.max_steps - 1)),
                                           last_train_loss, elapsed, bar)
                if step > start_step or resume_dir is None:
                    run.record(rec)
                    save_last(step, elapsed)
            if is_last and run.stop_reason is None:
                run.stop_reason = f"reached max_steps={cfg.max_steps}"
            if cfg.max_time and elapsed >= cfg.max_time and run.stop_reason is None:
                run.stop_reason = f"max_time {cfg.max_time:g}s reached"
            if run.interrupted and run.stop_reason is None:
                run.stop_reason = "interrupted (Ctrl-C)"
            if run.stop_reason:
                break

            # -- one optimizer step --------------------------------------------------------
            t0 = time.time()
            lr = sched.step(step)
            loss_sum = 0.0
            for _ in range(cfg.grad_accum_steps):
                x, y = batcher.next_batch()
                loss = model(x, targets=y, return_logits=False).loss
                if cfg.l1 or cfg.l2:
                    loss = loss + optim.penalty(decay, cfg.l1, cfg.l2)
                # averaging over micro-batches: each contributes 1/accum of the gradient
                loss.backward(np.full((), 1.0 / cfg.grad_accum_steps, dtype=np.float32))
                loss_sum += float(loss)
            norm = optim.clip_grad_norm(model.parameters(), cfg.grad_clip or None)
            opt.step()
            opt.zero_grad()
            step += 1
            dt = time.time() - t0
            last_train_loss = loss_sum / cfg.grad_accum_steps
            if not math.isfinite(last_train_loss):
                run.stop_reason = f"the loss became {last_train_loss} at step {step}"
                log(f"stopping: {run.stop_reason}; try a lower learning_rate")
                break
            tok_s = tokens_per_step / max(dt, 1e-9)
            if bar is not None:
                bar.update(1)
                bar.set_postfix_str(f"loss {last_train_loss:.4f} lr {lr:.2e} "
                                    f"{tok_s:,.0f} tok/s", refresh=False)
            progress = {"lr": lr, "tokens_per_s": round(tok_s, 1), "grad_norm": round(norm, 4)}
            if step % cfg.eval_interval == 0 or step >= cfg.max_steps:
                run.pending = progress          # goes into the evaluation's record
            elif step % cfg.log_interval == 0:
                run.record(dict({"step": step, "train_loss": round(last_train_loss, 6)},
                                **progress,
                                elapsed=round(elapsed_before + time.time() - t_start, 2)))
    finally:
        if bar is not None:
            bar.close()
        signal.signal(signal.SIGINT, previous_handler)
    # only a clean exit from the loop reaches this line: after an exception the model may be
    # half-updated, and the last checkpoint written at an evaluation is the one to keep
    elapsed = elapsed_before + time.time() - t_start
    if run.saved_step != step:
        save_last(step, elapsed)

    run.elapsed = elapsed
    run.step = step
    log(f"stopped: {run.stop_reason} after {step} steps, {elapsed:.1f}s")
    _summary(run, model, tokenizer)
    return run


def _evaluate_and_decide(run, model, tokenizer, corpus, step, lr, last_train_loss, elapsed, bar):
    cfg = run.cfg
    val_loss = evaluate(model, corpus.loader("val", cfg, cfg.seed + 2), cfg.eval_batches)
    eval_train = evaluate(model, corpus.loader("train", cfg, cfg.seed + 3), cfg.eval_batches)
    rec = {"step": step, "train_loss": round(last_train_loss if math.isfinite(last_train_loss)
                                             else eval_train, 6),
           "eval_train_loss": round(eval_train, 6), "val_loss": round(val_loss, 6), "lr": lr,
           "elapsed": round(elapsed, 2)}
    rec.update(run.pending)
    run.pending = {}
    msg = f"step {step:>6}: train {eval_train:.4f}, val {val_loss:.4f}"
    if val_loss < run.best_val - cfg.early_stop_min_delta:
        run.best_val, run.best_step, run.evals_since_best = val_loss, step, 0
        save_run_checkpoint(cfg.out_dir, "best", model, tokenizer)
        msg += "  (best so far, saved)"
    else:
        run.evals_since_best += 1
        if cfg.early_stop_patience and run.evals_since_best >= cfg.early_stop_patience:
            run.stop_reason = (f"early stopping: val loss has not improved for "
                               f"{run.evals_since_best} evaluations (best {run.best_val:.4f} "
                               f"at step {run.best_step})")
    if cfg.target_val_loss is not None and val_loss <= cfg.target_val_loss:
        run.stop_reason = f"target val loss {cfg.target_val_loss} reached ({val_loss:.4f})"
    (bar.write if bar is not None else run.log)(msg)
    return rec


def _progress(cfg, start):
    if not cfg.progress:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=cfg.max_steps, initial=start, unit="step", dynamic_ncols=True,
                leave=True, file=sys.stdout)


def _read_metrics(path, upto_step):
    """Records of an earlier run segment, cut at the step we resume from."""
    records = []
    if os.path.exists(path):
        with open(path, encoding="utf-8") as f:
            for line in f:
                try:
                    rec = json.loads(line)
                except json.JSONDecodeError:
                    continue        # a line cut short by a crash
                if rec.get("step", 0) <= upto_step:
                    records.append(rec)
    return records


def _rewrite_metrics(path, records):
    from .fileio import atomic_write
    with atomic_write(path, "w") as f:
        for rec in records:
            f.write(json.dumps(rec) + "\n")


def _summary(run, model, tokenizer):
    cfg, log = run.cfg, run.log
    evals = [r for r in run.history if "val_loss" in r]
    speeds = [r["tokens_per_s"] for r in run.history if "tokens_per_s" in r]
    if evals:
        first, last = evals[0], evals[-1]
        log(f"val loss {first['val_loss']:.4f} (step {first['step']}) -> {last['val_loss']:.4f} "
            f"(step {last['step']}); best {run.best_val:.4f} at step {run.best_step}")
    if speeds:
        log(f"throughput: median {np.median(speeds):,.0f} tokens/s")
    summary = {"stop_reason": run.stop_reason, "steps": run.step,
               "elapsed_s": round(run.elapsed, 2), "best_val_loss": run.best_val,
               "best_step": run.best_step,
               "final_val_loss": evals[-1]["val_loss"] if evals else None,
               "median_tokens_per_s": float(np.median(speeds)) if speeds else None}
    write_json(os.path.join(cfg.out_dir, "summary.json"), summary)
    if cfg.plot:
        plot_losses(run.history, os.path.join(cfg.out_dir, "loss.png"), log)
    log(f"saved: {cfg.out_dir}/last (resumable), {cfg.out_dir}/best (lowest val loss), "
        f"metrics.jsonl, summary.json")
    if cfg.sample_tokens:
        log(f"\n--- sample ({cfg.sample_tokens} tokens, temperature 0.8, top-k 50) ---")
        ids = np.asarray([tokenizer.encode(cfg.sample_prompt)], dtype=np.int64)
        if ids.shape[1] == 0:
            ids = np.zeros((1, 1), dtype=np.int64)
        out = model.generate(ids, max_new_tokens=cfg.sample_tokens, do_sample=True,
                             temperature=0.8, top_k=50, seed=cfg.seed, eos_token_id=None)
        log(tokenizer.decode(out[0].tolist()))
        log("---")


def plot_losses(history, path, log=print):
    """Save train and validation loss curves as a PNG (matplotlib is an optional extra)."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        log("note: matplotlib is not installed, so no loss.png (pip install 'tinyroots[plot]')")
        return None
    steps = [r["step"] for r in history if "train_loss" in r and r["step"] > 0]
    train = [r["train_loss"] for r in history if "train_loss" in r and r["step"] > 0]
    vsteps = [r["step"] for r in history if "val_loss" in r]
    val = [r["val_loss"] for r in history if "val_loss" in r]
    fig, ax = plt.subplots(figsize=(7, 4), dpi=110)
    ax.plot(steps, train, label="train (batch)", alpha=0.6, linewidth=1)
    ax.plot(vsteps, val, "o-", label="validation", linewidth=2)
    ax.set_xlabel("step")
    ax.set_ylabel("cross-entropy loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def main(argv=None):
    cfg = parse_config(TrainConfig, argv, presets=PRESETS, prog="python -m tinyroots.train",
                       description=__doc__)
    run = train(cfg)
    return 130 if run.interrupted else 0


if __name__ == "__main__":
    sys.exit(main())
