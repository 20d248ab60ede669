"""`python -m tinyroots.train`: pre-train a GPT on a text corpus.

With no arguments it trains a small GPT with a byte-level BPE tokenizer on the embedded
Shakespeare, shows the validation loss falling, saves the run to ``out/`` and prints a sample:

    python -m tinyroots.train                                  # the default run, a few minutes
    python -m tinyroots.train --preset shakespeare_char        # nanoGPT's recipe, saved to
                                                               # out-shakespeare-char/
    python -m tinyroots.train --data my_texts/ --vocab-size 8192 --max-steps 5000 --out-dir mine
    python -m tinyroots.train --out-dir out --resume           # continue an interrupted run
    python -m tinyroots.train --out-dir out --resume --max-steps 3000   # ... and make it longer
    python -m tinyroots.generate --checkpoint out --prompt "ROMEO:"

The run directory holds ``last/`` (weights, tokenizer, optimizer and trainer state: what
``--resume`` continues from), ``best/`` (the weights with the lowest validation loss),
``train_config.json`` (the resolved configuration), ``metrics.jsonl`` (one record per logged
step) and ``loss.png``. Ctrl-C saves ``last/`` and exits; resuming then gives exactly the losses
an uninterrupted run would have given. ``--resume`` reads the run's train_config.json, so the
other flags are needed only to change something: the stopping rules (``--max-steps``,
``--max-time``, ...) may change, the model, tokenizer and data may not. A directory that
already holds a run is never replaced silently: that is an error unless ``--resume`` or
``--overwrite`` is given. Each preset has its own default directory (out-<preset>).

Progress and log lines go to stderr, the results (final losses, the sample) to stdout. An
error a user can cause prints one line and exits 2 (``--debug`` shows the traceback); a run
whose loss became NaN or infinite exits 1 and keeps its last good checkpoint.
"""
import dataclasses
import functools
import os
import shutil
import sys
import time
from dataclasses import dataclass
from typing import Optional

import numpy as np

from . import checkpoint as ck
from . import distributed, kernels, ops, optim
from . import random as trandom
from .config import (ConfigError, check_common, check_ranges, load_saved_config, parse_config,
                     save_config)
from .fileio import write_json
from .model import GPT, GPTConfig
from .training import (Batcher, LoopSettings, MetricsLog, ResumeError,
                       Trainer, load_training_state, log_to_stderr, mean_loss,
                       save_training_state)

EMBEDDED_CORPUS = os.path.join(os.path.dirname(__file__), "assets", "tinyshakespeare.txt")

__all__ = ["Batcher", "PRESETS", "TrainConfig", "main", "plot_losses", "train"]


@dataclass
class TrainConfig:
    """Everything a pre-training run needs; see `python -m tinyroots.train --help`."""

    # data
    data: str = ""                     # a text file or folder; empty: the embedded Shakespeare
    tokenizer: str = "bpe"             # bpe (byte-level BPE, trained on the data) or char
    vocab_size: int = 1024             # BPE vocabulary size (ignored for char)
    val_fraction: float = 0.1          # the last part of the corpus held out for validation
    languages: str = "any"             # --data: languages to keep (lid.176 codes: en,zh,fr) or any
    clean_config: str = ""             # --data: a TOML/JSON file of cleaning settings (CleanConfig)
    clean: str = ""                    # --data: cleaning settings "key=value;key=value"
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
    overwrite: bool = False            # replace a run already in out_dir (else: an error)
    seed: int = 1337                   # seeds initialisation, batches and dropout
    num_threads: int = 0               # kernel threads; 0: OMP_NUM_THREADS or all cores
    dtype: str = "fp32"                # bf16: mixed precision, the products in bf16 (ops.autocast)
    # several processes (mpiexec -n N python -m tinyroots.train ...)
    zero: int = 0                      # 1: ZeRO-1, each process keeps 1/N of AdamW's moments
    bucket_mb: float = 25.0            # gradients travel in buckets of about this many MB
    sample_tokens: int = 200           # tokens to generate at the end; 0 skips the sample
    sample_prompt: str = "ROMEO:"      # prompt for the final sample
    progress: bool = True              # show a progress bar
    plot: bool = True                  # save loss.png (needs matplotlib)

    def validate(self):
        check_ranges(self, TRAIN_RANGES)
        check_common(self)               # seed, num_threads, beta1, beta2, dtype
        if self.tokenizer not in ("bpe", "char"):
            raise ConfigError(f"TrainConfig: 'tokenizer' must be 'bpe' or 'char', got "
                              f"{self.tokenizer!r}")
        if self.data and self.tokenizer != "bpe":
            raise ConfigError("TrainConfig: --data trains a byte-level BPE tokenizer on the "
                              "cleaned corpus; tokenizer=char is for the embedded corpus only")
        if self.tokenizer == "bpe" and self.vocab_size < 257:
            raise ConfigError(f"TrainConfig: 'vocab_size' must be >= 257 for byte-level BPE "
                              f"(256 bytes + <|endoftext|>), got {self.vocab_size}")
        if self.n_embd % self.n_head:
            raise ConfigError(f"TrainConfig: n_embd={self.n_embd} must be divisible by "
                              f"n_head={self.n_head}")
        if not self.init_from:
            check_memory(self)


BIG = 10 ** 12
TRAIN_RANGES = {   # inclusive; a value outside is an error naming the field
    "n_layer": (1, 1000), "n_head": (1, 4096), "n_embd": (1, 1 << 20),
    "block_size": (1, 1 << 24), "batch_size": (1, 1 << 24), "grad_accum_steps": (1, 1 << 20),
    "vocab_size": (1, 1 << 24), "max_steps": (1, BIG), "eval_interval": (1, BIG),
    "eval_batches": (1, 1 << 20), "log_interval": (1, BIG), "lr_decay_steps": (1, BIG),
    "warmup_steps": (0, BIG), "early_stop_patience": (0, BIG), "sample_tokens": (0, 1 << 20),
    "val_fraction": (0.001, 0.5), "dropout": (0.0, 0.99), "learning_rate": (0.0, None),
    "min_lr": (0.0, None), "weight_decay": (0.0, None), "grad_clip": (0.0, None),
    "l1": (0.0, None), "l2": (0.0, None), "max_time": (0.0, None),
    "early_stop_min_delta": (0.0, None), "target_val_loss": (0.0, None),
}


def training_bytes(cfg):
    """A rough lower bound of the memory a training step needs, in bytes (float32): weights,
    gradients and two AdamW moments, plus each block's saved activations (about 16 C values
    and 2 attention maps of T per head, per token) and the logits with their gradient."""
    V = 65 if cfg.tokenizer == "char" else cfg.vocab_size
    B, T, C, L, NH = cfg.batch_size, cfg.block_size, cfg.n_embd, cfg.n_layer, cfg.n_head
    params = 12 * L * C * C + (V + T) * C
    activations = L * B * T * (16 * C + 2 * NH * T) + 2 * B * T * V
    return 4 * (4 * params + activations)


def check_memory(cfg):
    """Refuse a model and batch that cannot fit in this machine's memory, before allocating."""
    try:
        total = os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return
    need = training_bytes(cfg)
    if need > total:
        raise ConfigError(f"TrainConfig: this model and batch need at least {need / 2**30:,.1f} "
                          f"GiB to train (n_layer={cfg.n_layer}, n_embd={cfg.n_embd}, "
                          f"block_size={cfg.block_size}, batch_size={cfg.batch_size}); this "
                          f"machine has {total / 2**30:.1f} GiB")


PRESETS = {
    "shakespeare_char": dict(
        _doc="nanoGPT's CPU recipe: characters, 4x4x128, context 64, 2000 steps",
        tokenizer="char", n_layer=4, n_head=4, n_embd=128, block_size=64, batch_size=12,
        max_steps=2000, learning_rate=1e-3, min_lr=1e-4, warmup_steps=100, lr_decay_steps=2000,
        beta1=0.9, beta2=0.99, weight_decay=0.1, grad_clip=1.0, dropout=0.0, val_fraction=0.1,
        eval_interval=250, eval_batches=20, sample_prompt="\n", out_dir="out-shakespeare-char"),
    "tiny": dict(
        _doc="a seconds-long smoke test", n_layer=2, n_head=2, n_embd=32, block_size=32,
        vocab_size=300, batch_size=8, max_steps=40, eval_interval=20, eval_batches=2,
        warmup_steps=5, sample_tokens=20, out_dir="out-tiny"),
    "gpt2": dict(
        _doc="GPT-2 124M shape (12x12x768, context 1024, vocab 50257): slow on a CPU",
        n_layer=12, n_head=12, n_embd=768, block_size=1024, vocab_size=50257,
        learning_rate=6e-4, min_lr=6e-5, beta2=0.95, batch_size=4, grad_accum_steps=8,
        warmup_steps=700, max_steps=20000, out_dir="out-gpt2"),
}


# ---------------------------------------------------------------------------------------------
# data


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
        from .data.config import clean_config_from
        languages = {} if cfg.languages == "any" else {"languages": cfg.languages}
        clean_cfg = clean_config_from(cfg.clean_config, cfg.clean, **languages)
        prepared = prepare(cfg.data, os.path.join(cfg.out_dir, "data"),
                           vocab_size=cfg.vocab_size, val_fraction=cfg.val_fraction,
                           config=clean_cfg, verbose=True)
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
# checkpoints of a run: last/ (resumable) and best/


def save_run_checkpoint(run_dir, name, model, tokenizer, optimizer_state=None, state=None):
    """Write run_dir/name/ as a whole: into a temporary directory first, then swapped in.

    subtle: each file is atomic on its own, but a checkpoint is several files (weights,
    optimizer, trainer state) that must match. Writing a fresh directory and renaming it into
    place means a crash leaves either the old checkpoint or the new one, never a mix; if the
    crash falls between the two renames, ``name.old`` is still there and is used on resume.
    optimizer_state: (arrays, meta) as Optimizer.state_dict() gives them.
    """
    final = os.path.join(run_dir, name)
    tmp = os.path.join(run_dir, f".{name}.tmp")
    old = os.path.join(run_dir, f"{name}.old")
    shutil.rmtree(tmp, ignore_errors=True)
    ck.save_pretrained(model, tmp, tokenizer=tokenizer)
    if optimizer_state is not None:
        save_training_state(tmp, *optimizer_state, state)
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


# what a run directory holds; a fresh run refuses to replace them unless told to (--overwrite)
RUN_FILES = ("last", "last.old", "best", "best.old", "metrics.jsonl", "summary.json",
             "train_config.json", "loss.png")

# what resume may not change: the model, the tokenizer and the data were made with these
FIXED_ON_RESUME = ("data", "tokenizer", "vocab_size", "val_fraction", "n_layer", "n_head",
                   "n_embd", "block_size", "dropout", "bias", "init_from", "seed")


def prepare_run_dir(cfg):
    """A fresh run starts in an empty run directory; it never replaces a run silently."""
    os.makedirs(cfg.out_dir, exist_ok=True)
    found = [n for n in RUN_FILES if os.path.exists(os.path.join(cfg.out_dir, n))]
    if cfg.resume or not found:
        return
    if not cfg.overwrite:
        raise FileExistsError(f"{cfg.out_dir} already holds a run ({', '.join(found)}); "
                              "continue it with --resume, or replace it with --overwrite")
    for name in found:
        path = os.path.join(cfg.out_dir, name)
        shutil.rmtree(path) if os.path.isdir(path) else os.remove(path)


def check_resume_config(cfg):
    """--resume continues the run as it was made: no change to the model, tokenizer or data."""
    path = os.path.join(cfg.out_dir, "train_config.json")
    if not os.path.isfile(path):
        return
    saved = load_saved_config(TrainConfig, path)

    def same(key):
        a, b = getattr(cfg, key), getattr(saved, key)
        if key in ("data", "init_from") and a and b:    # ./corpus/ is corpus
            return os.path.abspath(a) == os.path.abspath(b)
        return a == b
    changed = [k for k in FIXED_ON_RESUME if not same(k)]
    if changed:
        raise ConfigError("--resume: " + ", ".join(
            f"{k}={getattr(cfg, k)!r}" for k in changed) + f" contradict the run in "
            f"{cfg.out_dir} (" + ", ".join(f"{k}={getattr(saved, k)!r}" for k in changed)
            + "); drop those flags, or start a new run in another --out-dir")


def resume_config(cfg, explicit):
    """`train --out-dir X --resume [flags]`: X/train_config.json with only the flags given."""
    path = os.path.join(cfg.out_dir, "train_config.json")
    if not os.path.isfile(path):
        return cfg                 # train() says there is nothing to resume
    saved = load_saved_config(TrainConfig, path)
    flags = {k: getattr(cfg, k) for k in explicit if k != "resume"}
    return dataclasses.replace(saved, **flags, resume=True)


# ---------------------------------------------------------------------------------------------
# the job: pre-training's part of the shared loop (tinyroots/training.py)


class PretrainJob:
    """Batches from the corpus, the model's loss, validation on fixed batches, best/ and last/."""

    before_clip = None

    def __init__(self, cfg, model, tokenizer, corpus, optimizer, hooks):
        self.cfg, self.model, self.tokenizer = cfg, model, tokenizer
        self.corpus, self.optimizer, self.hooks = corpus, optimizer, hooks
        self.batcher = corpus.loader("train", cfg, cfg.seed + 1)

    def next_batch(self):
        return self.batcher.next_batch()

    def loss(self, batch):
        x, y = batch
        return self.model(x, targets=y, return_logits=False).loss

    def evaluate(self):
        cfg, loader = self.cfg, self.corpus.loader
        val = mean_loss(self.model, loader("val", cfg, cfg.seed + 2), cfg.eval_batches,
                        self.hooks)
        train = mean_loss(self.model, loader("train", cfg, cfg.seed + 3), cfg.eval_batches,
                          self.hooks)
        return {"eval_train_loss": train, "val_loss": val}

    def keep_best(self, step):
        if self.hooks.is_main:
            save_run_checkpoint(self.cfg.out_dir, "best", self.model, self.tokenizer)

    def checkpoint(self, state):
        optimizer_state = self.hooks.optimizer_state(self.optimizer)    # every process
        if self.hooks.is_main:
            save_run_checkpoint(self.cfg.out_dir, "last", self.model, self.tokenizer,
                                optimizer_state, self.trainer_state(state))

    def trainer_state(self, state):
        return {"step": state.step, "elapsed": state.elapsed, "batcher": self.batcher.get_state(),
                "rng": trandom.get_state(), "best_val": state.best_value,
                "best_step": state.best_step, "evals_since_best": state.evals_since_best,
                "train_config": dataclasses.asdict(self.cfg)}

    def train_stats(self):
        return {}

    def resume(self, resume_dir):
        """Restore optimizer, data stream and RNG from resume_dir/last -> LoopState."""
        raw, state = load_training_state(resume_dir, self.optimizer, self.hooks)
        path = os.path.join(resume_dir, "trainer_state.json")
        for key, restore in (("batcher", self.batcher.set_state), ("rng", trandom.set_state)):
            if key not in raw:
                raise ResumeError(f"{path}: '{key}' is missing")
            try:
                restore(raw[key])
            except (ValueError, TypeError, KeyError, AttributeError, OverflowError) as exc:
                raise ResumeError(f"{path}: '{key}' is not a saved generator state "
                                  f"({exc})") from None
        return state


# ---------------------------------------------------------------------------------------------
# the run


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


def start_run(cfg, log):
    """Check the run directory, seed, read the data, build or load the model.
    -> (corpus, tokenizer, model, the checkpoint to resume from or None)"""
    if cfg.init_from and not os.path.isdir(cfg.init_from):
        raise FileNotFoundError(f"--init-from {cfg.init_from}: no such directory (a checkpoint "
                                "directory, e.g. a run's best/)")
    world = distributed.world()
    with distributed.main_first(world):    # rank 0 writes the run directory and data caches
        if cfg.resume:
            check_resume_config(cfg)
        if world.is_main:
            prepare_run_dir(cfg)
        resume_dir = find_checkpoint(cfg.out_dir, "last") if cfg.resume else None
        if cfg.resume and resume_dir is None:
            raise FileNotFoundError(f"--resume: no checkpoint in {cfg.out_dir}/last to resume "
                                    "from")
        if world.is_main:
            save_config(cfg, os.path.join(cfg.out_dir, "train_config.json"))
        trandom.manual_seed(cfg.seed)
        corpus = prepare_data(cfg, log)
    distributed.check_same(world, "data", distributed.data_fingerprint(corpus.train, corpus.val))
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
    return corpus, tokenizer, model, resume_dir


def train(cfg, out=None, show=None, hooks=None):
    """Run the whole training job described by cfg -> the final LoopState (step, stop_reason,
    best_value, history, ...). Log lines go to out (default: stderr), the results to show
    (default: stdout; out, when only out is given)."""
    cfg.validate()
    log = out or log_to_stderr
    show = show or out or print
    hooks = hooks or distributed.hooks_for(cfg)    # one process: Hooks(), the no-ops
    if not hooks.is_main:
        log = show = distributed.quiet             # rank 0 speaks for every process
    if cfg.num_threads:
        kernels.set_num_threads(cfg.num_threads)
    corpus, tokenizer, model, resume_dir = start_run(cfg, log)
    opt = optim.AdamW(model.parameters(), lr=cfg.learning_rate, betas=(cfg.beta1, cfg.beta2),
                      weight_decay=cfg.weight_decay)
    hooks.attach(opt)
    sched = optim.WarmupCosine(opt, cfg.learning_rate, cfg.warmup_steps,
                               cfg.lr_decay_steps or cfg.max_steps, cfg.min_lr)
    job = PretrainJob(cfg, model, tokenizer, corpus, opt, hooks)
    metrics = MetricsLog(os.path.join(cfg.out_dir, "metrics.jsonl"), write=hooks.is_main)
    state = None
    if resume_dir is not None:
        state = job.resume(resume_dir)
        metrics.resume(state.step)
        log(f"resumed from {resume_dir} at step {state.step}")
    else:
        metrics.start_fresh()
    tokens_per_step = cfg.batch_size * cfg.block_size * cfg.grad_accum_steps
    describe(cfg, model, tokens_per_step, log)
    settings = LoopSettings.from_config(cfg, target=cfg.target_val_loss,
                                        tokens_per_step=tokens_per_step,
                                        progress=cfg.progress)
    trainer = Trainer(job, model.parameters(), opt, sched, settings, hooks=hooks, log=log,
                      metrics=metrics, state=state,
                      penalty_params=[p for p in model.parameters() if p.ndim >= 2])
    trainer.autocast = functools.partial(ops.autocast, cfg.dtype)
    state = trainer.run()
    state.history = metrics.history
    show(f"stopped: {state.stop_reason} after {state.step} steps, {state.elapsed:.1f}s")
    if hooks.is_main and not state.diverged:
        summarize(cfg, state, model, tokenizer, show)
    return state


def describe(cfg, model, tokens_per_step, log):
    c = model.config
    log(f"model: {c.n_layer} layers, {c.n_head} heads, {c.n_embd} wide, context "
        f"{c.block_size}, {model.num_parameters() / 1e6:.2f}M parameters | backend "
        f"{kernels.BACKEND} ({kernels.info()['simd_isa']}), {kernels.get_num_threads()} threads"
        + (f", bf16 products ({kernels.info()['bf16_isa']})" if cfg.dtype == "bf16" else ""))
    log(f"training: {cfg.max_steps} steps x {tokens_per_step:,} tokens, lr {cfg.learning_rate} "
        f"(warmup {cfg.warmup_steps}, cosine to {cfg.min_lr}), out_dir {cfg.out_dir}")


def summarize(cfg, state, model, tokenizer, show):
    """summary.json, loss.png, and the results: the validation loss, speed and a sample."""
    evals = [r for r in state.history if "val_loss" in r]
    speeds = [r["tokens_per_s"] for r in state.history if "tokens_per_s" in r]
    if evals:
        first, last = evals[0], evals[-1]
        show(f"val loss {first['val_loss']:.4f} (step {first['step']}) -> "
             f"{last['val_loss']:.4f} (step {last['step']}); best {state.best_value:.4f} at "
             f"step {state.best_step}")
    if speeds:
        show(f"throughput: median {np.median(speeds):,.0f} tokens/s")
    summary = {"stop_reason": state.stop_reason, "steps": state.step,
               "elapsed_s": round(state.elapsed, 2), "best_val_loss": state.best_value,
               "best_step": state.best_step,
               "final_val_loss": evals[-1]["val_loss"] if evals else None,
               "median_tokens_per_s": float(np.median(speeds)) if speeds else None}
    write_json(os.path.join(cfg.out_dir, "summary.json"), summary)
    if cfg.plot:
        plot_losses(state.history, os.path.join(cfg.out_dir, "loss.png"), show)
    show(f"saved: {cfg.out_dir}/last (resumable), {cfg.out_dir}/best (lowest val loss), "
         f"metrics.jsonl, summary.json")
    if cfg.sample_tokens:
        show(f"\n--- sample ({cfg.sample_tokens} tokens, temperature 0.8, top-k 50) ---")
        ids = np.asarray([tokenizer.encode(cfg.sample_prompt)], dtype=np.int64)
        if ids.shape[1] == 0:
            ids = np.zeros((1, 1), dtype=np.int64)
        out = model.generate(ids, max_new_tokens=cfg.sample_tokens, do_sample=True,
                             temperature=0.8, top_k=50, seed=cfg.seed, eos_token_id=None)
        show(tokenizer.decode(out[0].tolist()))
        show("---")


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
    # one process: config.run_command; under mpiexec an error on any rank ends every rank
    return distributed.run_command(PROG, _main, argv)


def _main(argv):
    explicit = set()
    cfg = parse_config(TrainConfig, argv, presets=PRESETS, prog=PROG, description=__doc__,
                       explicit=explicit)
    if cfg.resume:
        cfg = resume_config(cfg, explicit)
    state = train(cfg)
    if state.diverged:
        print(f"{PROG}: error: training diverged: {state.stop_reason}; the last good "
              f"checkpoint is {cfg.out_dir}/last (try a lower --learning-rate)", file=sys.stderr)
        return 1
    return 130 if state.interrupted else 0


PROG = "python -m tinyroots.train"

if __name__ == "__main__":
    sys.exit(main())
