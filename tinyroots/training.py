"""The training loop, written once: pre-training (train.py) and every fine-tuning task
(finetune/loop.py) run it.

    trainer = Trainer(job, params, optimizer, schedule, LoopSettings.from_config(cfg))
    state = trainer.run()            # -> LoopState: step, best value and step, stop_reason

Read it in this order:

    optimizer_step()   the lines that are "training": each micro-batch's forward and backward,
                       then clip, step, zero_grad
    Trainer.run()      the loop: evaluate when due, check the stopping rules, take a step, log
    StopRules          max_steps, max_time, a target metric, early-stop patience (a NaN or
                       infinite loss stops the loop too: Trainer._train)
    MetricsLog         metrics.jsonl, one JSON record per line; progress_bar() on stderr

A job is what differs between pre-training and a fine-tuning task; it gives the loop:

    job.next_batch()          one micro-batch (anything loss() accepts)
    job.loss(batch)           forward: a scalar Tensor
    job.evaluate()            {"val_loss": ..., "accuracy": ...}: the validation metrics
    job.keep_best(step)       the evaluation just beat the best: keep these weights
    job.checkpoint(state)     after each evaluation and at the end: save what resume needs
    job.before_clip()         adjust the summed gradients (e.g. zero frozen embedding rows)
    job.train_stats()         extra fields for a training record in metrics.jsonl

Hooks: data parallelism plugs in here
-------------------------------------
A single process runs with ``Hooks()``, whose methods are the single-process no-ops below.
distributed.py subclasses it; the loop calls nothing else that depends on the process count.

    rank, world_size      this process and how many there are (0 and 1 here)
    is_main               rank 0: the only process that logs, draws the bar, writes
                          metrics.jsonl and checkpoint files
    attach(optimizer)     once, when the optimizer exists: lay out gradient buckets over its
                          parameters (ZeRO-1: and the shard of its state this process keeps)
    shard(n)              which of n items this process runs: the micro-batches of one
                          optimizer step (grad_accum_steps counts them across all processes),
                          and the batches of an evaluation. Every process still draws all n
                          batches, so every data stream stays in the same state everywhere
                          and a run's data order does not depend on the process count.
    before_last_backward(params)   called just before the backward of this process's last
                          micro-batch of a step: its gradients become final during that
                          backward (start bucketed allreduces as they do)
    after_backward(params)         after the last backward: wait for the reductions; from
                          here on every .grad holds the sum over all processes. The loop scales
                          each micro-batch by 1/grad_accum_steps (the global count), so a SUM
                          over processes is the mean over the global batch.
    clip_grad_norm(params, max_norm) -> the global gradient norm before clipping, with every
                          gradient scaled so the norm is at most max_norm (None: no clipping)
    optimizer_step(optimizer)      the update (ZeRO-1: update this rank's shard, allgather)
    optimizer_state(optimizer) -> (arrays, meta) as Optimizer.state_dict(), the full state
                          (ZeRO-1 gathers it); called on every process before a checkpoint
    load_optimizer_state(optimizer, arrays, meta)   resume: the inverse
    all_sum(x) -> x summed over processes (a float or a float64 array): train and eval losses
    broadcast(x) -> rank 0's x: decisions every process must share (stop, interrupted)

Mixed precision: ``Trainer.autocast`` (default: no context) is entered around each
micro-batch's forward and backward; a dtype context (bf16) can be set there.
"""

import contextlib
import json
import math
import os
import signal
import sys
import threading
import time
from dataclasses import dataclass, field
from typing import Optional

import numpy as np

from . import optim
from .tensor import no_grad

# ---------------------------------------------------------------------------------------------
# hooks: one process by default


class Hooks:
    """The places data-parallel training changes the loop (see the module docstring)."""

    rank = 0
    world_size = 1

    @property
    def is_main(self):
        return self.rank == 0

    def attach(self, optimizer):
        pass

    def shard(self, n):
        return range(n)

    def before_last_backward(self, params):
        pass

    def after_backward(self, params):
        pass

    def clip_grad_norm(self, params, max_norm):
        return optim.clip_grad_norm(params, max_norm)

    def optimizer_step(self, optimizer):
        optimizer.step()

    def optimizer_state(self, optimizer):
        return optimizer.state_dict()

    def load_optimizer_state(self, optimizer, arrays, meta):
        optimizer.load_state_dict(arrays, meta)

    def all_sum(self, x):
        return x

    def broadcast(self, x):
        return x


SINGLE_PROCESS = Hooks()


# ---------------------------------------------------------------------------------------------
# one optimizer step: this is training


def optimizer_step(batches, loss_fn, params, optimizer, grad_clip, hooks=SINGLE_PROCESS,
                   before_clip=None, autocast=contextlib.nullcontext):
    """One optimizer step over the micro-batches of a global batch -> (mean loss, grad norm).

    Each micro-batch: a forward pass to the loss, and a backward pass that adds its share of
    the gradient into every parameter's .grad. Then the summed gradient is clipped, the
    optimizer moves the weights, and the gradients are cleared for the next step.
    """
    n = len(batches)
    mine = list(hooks.shard(n))
    loss_sum = 0.0
    for k, i in enumerate(mine):
        with autocast():
            loss = loss_fn(batches[i])                                 # forward
            if k == len(mine) - 1:
                hooks.before_last_backward(params)
            # each of the n micro-batches adds 1/n of its gradient: the sum is the batch mean
            loss.backward(np.full((), 1.0 / n, dtype=np.float32))      # backward
        loss_sum += float(loss)
    hooks.after_backward(params)
    if before_clip is not None:
        before_clip()
    norm = hooks.clip_grad_norm(params, grad_clip or None)             # clip
    hooks.optimizer_step(optimizer)                                    # step
    optimizer.zero_grad()                                              # zero_grad
    return float(hooks.all_sum(loss_sum)) / n, norm


def mean_loss(model, loader, n_batches, hooks=SINGLE_PROCESS):
    """Mean loss of model over n_batches from loader, without gradients, over all processes.

    Pass a freshly seeded loader: the same batches at every evaluation, so successive numbers
    differ only because the model changed.
    """
    batches = [loader.next_batch() for _ in range(n_batches)]
    was_training = model.training
    model.eval()
    total = np.zeros(2)                          # [sum of batch losses, number of batches]
    with no_grad():
        for i in hooks.shard(n_batches):
            x, y = batches[i]
            total += (float(model(x, targets=y, return_logits=False).loss), 1.0)
    model.train(was_training)
    total = hooks.all_sum(total)
    return float(total[0] / total[1])


# ---------------------------------------------------------------------------------------------
# random windows of a token array: the batches of pre-training and of fine-tuning's lm task


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
        """Restore a get_state(); anything else is a ValueError (it comes from a file)."""
        expected = self.rng.bit_generator.state
        if not isinstance(state, dict) or state.get("bit_generator") != \
                expected["bit_generator"] or set(state) != set(expected):
            raise ValueError(f"expected a {expected['bit_generator']} state with keys "
                             f"{sorted(expected)}, got {str(state)[:80]}")
        try:
            self.rng.bit_generator.state = state
        except (TypeError, ValueError, KeyError, OverflowError) as exc:
            raise ValueError(f"not a valid {expected['bit_generator']} state ({exc})") from None


# ---------------------------------------------------------------------------------------------
# settings, state and the stopping rules


@dataclass
class LoopSettings:
    """How long to train, when to evaluate and log, and what counts as better."""

    max_steps: int
    eval_interval: int
    log_interval: int = 10
    grad_accum_steps: int = 1
    grad_clip: float = 1.0
    max_time: float = 0.0               # seconds; 0: no limit
    metric: str = "val_loss"            # the validation metric that picks the best weights
    higher_is_better: bool = False
    target: Optional[float] = None      # stop once the metric reaches this
    patience: int = 0                   # stop after this many evaluations without improvement
    min_delta: float = 0.0              # an improvement must beat the best by more than this
    l1: float = 0.0                     # penalties added to the loss, on penalty_params
    l2: float = 0.0
    progress: bool = True               # draw a progress bar (stderr)
    tokens_per_step: int = 0            # for tokens/s in the records; 0: not reported

    @classmethod
    def from_config(cls, cfg, **overrides):
        """The fields TrainConfig and FinetuneConfig share, by name, plus ``overrides``."""
        names = ("max_steps", "eval_interval", "log_interval", "grad_accum_steps", "grad_clip",
                 "max_time", "l1", "l2", "progress")
        values = {k: getattr(cfg, k) for k in names if hasattr(cfg, k)}
        values["patience"] = cfg.early_stop_patience
        values["min_delta"] = cfg.early_stop_min_delta
        values.update(overrides)
        return cls(**values)


@dataclass
class LoopState:
    """Where a run stands; everything resume needs besides the weights and data streams."""

    step: int = 0
    elapsed: float = 0.0                # seconds of training, over all resumed segments
    best_value: float = math.nan
    best_step: int = -1
    evals_since_best: int = 0
    train_loss: float = math.nan        # the last step's loss
    stop_reason: Optional[str] = None
    diverged: bool = False
    interrupted: bool = False
    history: list = field(default_factory=list)


class StopRules:
    """When to stop: after an evaluation (target reached, patience run out) or between steps
    (max_steps, max_time). A non-finite loss is checked by the loop right after the step."""

    def __init__(self, settings):
        self.s = settings

    def improved(self, value, state):
        """Is value better than the best by more than min_delta? (The first finite one is.)"""
        if not math.isfinite(value):
            return False
        if state.best_step < 0:
            return True
        gain = value - state.best_value if self.s.higher_is_better else state.best_value - value
        return gain > self.s.min_delta

    def after_evaluation(self, value, state):
        s, name = self.s, self.s.metric.replace("_", " ")
        if s.target is not None and (value >= s.target if s.higher_is_better
                                     else value <= s.target):
            return f"target {name} {s.target} reached ({value:.4f})"
        if s.patience and state.evals_since_best >= s.patience:
            return (f"early stopping: {name} has not improved for {state.evals_since_best} "
                    f"evaluations (best {state.best_value:.4f} at step {state.best_step})")
        return None

    def between_steps(self, state):
        if state.step >= self.s.max_steps:
            return f"reached max_steps={self.s.max_steps}"
        if self.s.max_time and state.elapsed >= self.s.max_time:
            return f"max_time {self.s.max_time:g}s reached"
        if state.interrupted:
            return "interrupted (Ctrl-C)"
        return None


# ---------------------------------------------------------------------------------------------
# metrics.jsonl and the progress bar


class MetricsLog:
    """metrics.jsonl: one JSON record per evaluation and per log_interval training steps."""

    def __init__(self, path, history=None, write=True):
        self.path = path
        self.history = list(history or [])
        self.write = write              # only the main process writes

    def record(self, rec):
        self.history.append(rec)
        if self.write:
            with open(self.path, "a", encoding="utf-8") as f:
                f.write(json.dumps(rec) + "\n")

    def start_fresh(self):
        if self.write and os.path.exists(self.path):
            os.remove(self.path)
        self.history = []

    def resume(self, upto_step):
        """Keep the records of earlier segments up to the step resumed from; rewrite the file
        without the records a crash left beyond it."""
        from .fileio import atomic_write
        records = []
        if os.path.exists(self.path):
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    try:
                        rec = json.loads(line)
                    except (json.JSONDecodeError, RecursionError):
                        continue        # a line cut short by a crash
                    if isinstance(rec, dict) and isinstance(rec.get("step", 0), int) \
                            and rec.get("step", 0) <= upto_step:
                        records.append(rec)
        self.history = records
        if self.write:
            with atomic_write(self.path, "w") as f:
                for rec in records:
                    f.write(json.dumps(rec) + "\n")


def progress_bar(total, initial=0, enabled=True):
    """A tqdm bar on stderr (results go to stdout), or None when off or tqdm is missing."""
    if not enabled:
        return None
    try:
        from tqdm import tqdm
    except ImportError:
        return None
    return tqdm(total=total, initial=initial, unit="step", dynamic_ncols=True, leave=True,
                file=sys.stderr)


def rounded(metrics):
    return {k: (round(v, 6) if isinstance(v, float) and math.isfinite(v) else v)
            for k, v in metrics.items()}


def log_to_stderr(message=""):
    """The default log: progress and status lines go to stderr, results to stdout."""
    print(message, file=sys.stderr, flush=True)


# ---------------------------------------------------------------------------------------------
# the loop


class Trainer:
    """Runs a job: evaluate when due, check the stopping rules, take an optimizer step, log.

    state: a LoopState read from a checkpoint, to resume (its step was evaluated, if due,
    before that checkpoint was written); None starts at step 0.
    """

    def __init__(self, job, params, optimizer, schedule, settings, hooks=None, log=None,
                 metrics=None, penalty_params=(), state=None):
        self.job, self.params, self.optimizer, self.schedule = job, params, optimizer, schedule
        self.s = settings
        self.rules = StopRules(settings)
        self.hooks = hooks or SINGLE_PROCESS
        self.log = log or log_to_stderr
        self.metrics = metrics
        self.penalty_params = list(penalty_params)
        self.state = state or LoopState()
        self.start_step = self.state.step
        self.resumed = state is not None         # a state is given only to resume a run
        self.saved_step = self.state.step if self.resumed else None
        self.autocast = contextlib.nullcontext    # a dtype context for forward + backward
        self.pending = {}                         # a step's record, merged into its evaluation
        self.bar = None

    # -- the loop ------------------------------------------------------------------------------

    def run(self):
        """Train until a stopping rule fires -> the LoopState (stop_reason says which)."""
        st = self.state
        elapsed_before, t_start = st.elapsed, time.time()
        previous_handler = self._catch_sigint()
        self.bar = progress_bar(self.s.max_steps, st.step, self.s.progress and self.hooks.is_main)
        try:
            while True:
                st.elapsed = elapsed_before + time.time() - t_start
                if self._evaluation_due():
                    self._evaluate()
                    self._checkpoint()
                if st.stop_reason is None:
                    st.stop_reason = self.hooks.broadcast(self.rules.between_steps(st))
                if st.stop_reason:
                    break
                self._train()
                if st.diverged:
                    break
        finally:
            if self.bar is not None:
                self.bar.close()
            if previous_handler is not None:
                signal.signal(signal.SIGINT, previous_handler)
        st.elapsed = elapsed_before + time.time() - t_start
        # a clean stop saves where it is; a diverged model is not worth resuming from, and the
        # last checkpoint written at an evaluation is the one to keep
        if not st.diverged and self.saved_step != st.step:
            self._checkpoint()
        return st

    def _evaluation_due(self):
        st = self.state
        if self.resumed and st.step == self.start_step:
            return False                # evaluated (if due) before the checkpoint was written
        return st.step % self.s.eval_interval == 0 or st.step >= self.s.max_steps

    def _train(self):
        """One optimizer step, then the NaN check, the bar and the metrics record."""
        st, s = self.state, self.s
        t0 = time.time()
        lr = self.schedule.step(st.step)
        batches = [self.job.next_batch() for _ in range(s.grad_accum_steps)]
        loss, norm = optimizer_step(batches, self._loss, self.params, self.optimizer,
                                    s.grad_clip, self.hooks, self.job.before_clip,
                                    self.autocast)
        st.step += 1
        st.train_loss = loss
        dt = time.time() - t0
        if not math.isfinite(loss):
            st.diverged = True
            st.stop_reason = f"the loss became {loss} at step {st.step}"
            self._say(f"stopping: {st.stop_reason}; try a lower learning_rate")
            return
        rec = {"lr": lr, "grad_norm": round(norm, 4), "step_s": round(dt, 4)}
        if s.tokens_per_step:
            rec["tokens_per_s"] = round(s.tokens_per_step / max(dt, 1e-9), 1)
        rec.update(self.job.train_stats())
        if self.bar is not None:
            self.bar.update(1)
            speed = f" {rec['tokens_per_s']:,.0f} tok/s" if s.tokens_per_step else ""
            self.bar.set_postfix_str(f"loss {loss:.4f} lr {lr:.2e}{speed}", refresh=False)
        if st.step % s.eval_interval == 0 or st.step >= s.max_steps:
            self.pending = rec                  # goes into the evaluation's record
        elif st.step % s.log_interval == 0:
            self._record({"step": st.step, "train_loss": round(loss, 6), **rec,
                          "elapsed": round(st.elapsed + dt, 2)})

    def _loss(self, batch):
        loss = self.job.loss(batch)
        if self.s.l1 or self.s.l2:
            loss = loss + optim.penalty(self.penalty_params, self.s.l1, self.s.l2)
        return loss

    def _evaluate(self):
        """Validation metrics -> a record; keep the best; apply the target and patience rules."""
        st = self.state
        metrics = self.job.evaluate()
        value = metrics[self.s.metric]
        improved = self.rules.improved(value, st)
        if improved:
            st.best_value, st.best_step, st.evals_since_best = value, st.step, 0
            with self._interrupts_deferred():
                self.job.keep_best(st.step)
        else:
            st.evals_since_best += 1
        rec = {"step": st.step, **rounded(metrics),
               "lr": self.schedule.lr_at(min(st.step, self.s.max_steps - 1)),
               "elapsed": round(st.elapsed, 2), "best": improved}
        if math.isfinite(st.train_loss):
            rec["train_loss"] = round(st.train_loss, 6)
        elif "eval_train_loss" in rec:      # before the first step: the evaluated train loss
            rec["train_loss"] = rec["eval_train_loss"]
        rec.update(self.pending)
        self.pending = {}
        self._record(rec)
        self._say(f"step {st.step:>6}: " + ", ".join(
            f"{k} {v:.4f}" for k, v in metrics.items() if isinstance(v, float))
            + ("  (best)" if improved else ""))
        st.stop_reason = self.hooks.broadcast(self.rules.after_evaluation(value, st))

    def _checkpoint(self):
        with self._interrupts_deferred():
            self.job.checkpoint(self.state)
        self.saved_step = self.state.step

    def _record(self, rec):
        if self.metrics is not None:
            self.metrics.record(rec)

    def _say(self, message):
        if not self.hooks.is_main:
            return
        if self.bar is not None:
            self.bar.write(message, file=sys.stderr)
        else:
            self.log(message)

    # -- Ctrl-C: finish the step, save, stop -----------------------------------------------------

    def _catch_sigint(self):
        if threading.current_thread() is not threading.main_thread():
            return None                 # signal handlers can only be set from the main thread
        return signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame):
        if self.state.interrupted:      # a second Ctrl-C: the user really wants out
            raise KeyboardInterrupt
        self._note_interrupt()

    def _on_sigint_while_saving(self, signum, frame):
        # a checkpoint is being written: remember the Ctrl-C and act on it once the write is
        # done (ignoring the signal would lose it: a Ctrl-C landing in a save would then never
        # stop the run)
        if not self.state.interrupted:
            self._note_interrupt()

    def _note_interrupt(self):
        self.state.interrupted = True
        self._say("\nCtrl-C: finishing this step, saving, then exiting (press again to abort "
                  "at once; the last checkpoint written remains)")

    @contextlib.contextmanager
    def _interrupts_deferred(self):
        """subtle: while a checkpoint is written, Ctrl-C only takes note. The write is atomic
        anyway, but a half-finished save would just be thrown away."""
        if threading.current_thread() is not threading.main_thread():
            yield
            return
        handler = signal.signal(signal.SIGINT, self._on_sigint_while_saving)
        try:
            yield
        finally:
            signal.signal(signal.SIGINT, handler)


# ---------------------------------------------------------------------------------------------
# resumable state: trainer_state.json + optimizer.safetensors, checked before anything is used

TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"
MAX_STEP = 10 ** 12                 # far beyond any run; a larger step is a corrupt file
MOMENTS = {"AdamW": ("exp_avg", "exp_avg_sq"), "SGD": ()}


class ResumeError(ValueError):
    """A saved training state is missing something or holds a value it cannot hold."""


def save_training_state(path, arrays, meta, state):
    """path/optimizer.safetensors (the arrays) and path/trainer_state.json (state + meta)."""
    from .safetensors import save_safetensors
    from .fileio import write_json
    save_safetensors(os.path.join(path, OPTIMIZER_NAME), arrays, metadata={"format": "np"})
    write_json(os.path.join(path, TRAINER_STATE_NAME), dict(state, optimizer=meta))


def load_training_state(path, optimizer, hooks=SINGLE_PROCESS):
    """Check path's trainer state and optimizer state, restore the optimizer.

    -> (the trainer_state.json dict, the LoopState in it). Every problem is one ResumeError
    naming the file and the key.
    """
    from .safetensors import load_safetensors
    from .fileio import read_json
    state_file = os.path.join(path, TRAINER_STATE_NAME)
    raw = read_json(state_file, "trainer state", error=ResumeError)
    if not isinstance(raw, dict):
        raise ResumeError(f"{state_file}: expected a JSON object, got {type(raw).__name__}")
    loop = LoopState(
        step=_number(raw, "step", state_file, int, 0, MAX_STEP),
        elapsed=_number(raw, "elapsed", state_file, float, 0.0, math.inf, default=0.0),
        best_value=_number(raw, "best_val", state_file, float, -math.inf, math.inf,
                           default=math.nan, nan_ok=True),
        best_step=_number(raw, "best_step", state_file, int, -1, MAX_STEP, default=-1),
        evals_since_best=_number(raw, "evals_since_best", state_file, int, 0, MAX_STEP,
                                 default=0))
    if loop.best_step > loop.step:
        raise ResumeError(f"{state_file}: 'best_step' {loop.best_step} is after 'step' "
                          f"{loop.step}")
    opt_file = os.path.join(path, OPTIMIZER_NAME)
    try:
        arrays, _ = load_safetensors(opt_file, mmap=False)
    except FileNotFoundError:
        raise ResumeError(f"{opt_file}: not found (the optimizer state)") from None
    meta = raw.get("optimizer")
    check_optimizer_state(arrays, meta, optimizer, state_file, opt_file)
    try:
        hooks.load_optimizer_state(optimizer, arrays, meta)
    except (KeyError, ValueError, TypeError) as exc:
        raise ResumeError(f"{state_file}: 'optimizer': {exc}") from None
    return raw, loop


def _number(raw, key, where, kind, lo, hi, default=None, nan_ok=False):
    """raw[key] as kind (int or float) within [lo, hi], or a ResumeError naming where and key."""
    if key not in raw:
        if default is None:
            raise ResumeError(f"{where}: '{key}' is missing")
        return default
    value = raw[key]
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok and kind is int:
        ok = isinstance(value, int)
    if ok and math.isnan(value):
        ok = nan_ok
    elif ok:
        ok = lo <= value <= hi
    if not ok:
        want = "an integer" if kind is int else "a number"
        raise ResumeError(f"{where}: '{key}' must be {want} in [{lo}, {hi}], got {value!r}")
    return kind(value)


def check_optimizer_state(arrays, meta, optimizer, state_file, opt_file):
    """Every saved moment present, float32, shaped as its parameter, finite; nothing else."""
    if not isinstance(meta, dict) or not isinstance(meta.get("state"), dict) \
            or not isinstance(meta.get("groups"), list):
        raise ResumeError(f"{state_file}: 'optimizer' must be an object with a 'state' object "
                          f"and a 'groups' list, got {str(meta)[:80]}")
    kind = meta.get("type")
    if kind != type(optimizer).__name__:
        raise ResumeError(f"{state_file}: 'optimizer.type' is {kind!r}, expected "
                          f"{type(optimizer).__name__!r}")
    for i, group in enumerate(meta["groups"]):
        if not isinstance(group, dict) or not all(_finite_numbers(v) for v in group.values()):
            raise ResumeError(f"{state_file}: 'optimizer.groups[{i}]' must hold finite numbers, "
                              f"got {str(group)[:80]}")
    params = optimizer.parameters()
    for key, entry in meta["state"].items():
        if not key.isdigit() or int(key) >= len(params) or not isinstance(entry, dict):
            raise ResumeError(f"{state_file}: 'optimizer.state' entry {key!r} is not a "
                              f"parameter index below {len(params)} with an object")
        if "step" in entry:
            _number(entry, "step", f"{state_file}: 'optimizer.state.{key}'", int, 0, MAX_STEP)
        shape = params[int(key)].shape
        for moment in MOMENTS.get(kind, ()):
            name = f"{key}.{moment}"
            if name not in arrays:
                raise ResumeError(f"{opt_file}: tensor '{name}' is missing")
            a = arrays[name]
            if a.dtype != np.float32 or a.shape != shape:
                raise ResumeError(f"{opt_file}: tensor '{name}' is {a.dtype} {a.shape}, "
                                  f"expected float32 {shape}")
            if not np.isfinite(a).all():
                raise ResumeError(f"{opt_file}: tensor '{name}' holds NaN or infinity")
    for name in arrays:
        if name.split(".", 1)[0] not in meta["state"]:
            raise ResumeError(f"{opt_file}: tensor '{name}' belongs to no saved parameter")


def _finite_numbers(v):
    if isinstance(v, (list, tuple)):
        return all(_finite_numbers(x) for x in v)
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) \
        or isinstance(v, bool)
