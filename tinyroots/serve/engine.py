"""The decoding loop: one thread runs every request's tokens through the model, batched.

Continuous batching, as vLLM or llama.cpp's server do it, on tinyroots' own kernels:

    submit(seq) --> waiting --(next step: prompt run into its own KVCache)--> running
    running: every step, one token for every running sequence, all in one decode_rows() call
             (the matrix products see the whole batch; attention reads each row's own cache)
    a sequence leaves when it ends (its stop token, max_tokens, the context) or is cancelled
    (a client that went away, a stop string found by the HTTP layer); its slot is free at once

A request never waits for the others to finish: it joins at the next step and decodes at its
own position. The prompts that join at one step run together where that changes no bit of
their results (model.prefill_rows). Greedy tokens are those of model.generate() alone
(prefill_rows and decode_rows keep every row's arithmetic independent of its neighbours).
The loop knows token ids only; text, stop strings and the HTTP shapes live in api.py.
"""

import sys
import threading
from collections import deque

import numpy as np

from .. import kernels
from ..model import (ROWS_PER_PASS, KVCache, decode_rows, prefill_rows, sample_next,
                     warp_logits)
from ..tensor import no_grad


class QueueFull(Exception):
    """More requests are waiting than the server accepts (HTTP 429)."""


class Sequence:
    """One sequence to continue (one choice of one request) and its decoding state.

    prompt      list of token ids (fits the context with max_tokens: the caller checks)
    temperature 0 = greedy; top_k, top_p as generate(); seed: its own random generator
    stop_ids    token ids that end the sequence (not part of its text)
    logprobs    None, or how many most likely tokens to report with each new token
    emit        emit(event) from the decoding thread, event one of
                ("token", id, info)   info: None or {"logprob": lp, "top": [(id, lp), ...]}
                ("done", reason)      reason "stop", "length" or "cancelled"
                ("error", message)
    """

    def __init__(self, prompt, max_tokens, emit, temperature=1.0, top_k=None, top_p=None,
                 seed=None, stop_ids=(), logprobs=None):
        self.prompt = list(prompt)
        self.max_tokens = max_tokens
        self.emit = emit
        self.temperature, self.top_k, self.top_p = temperature, top_k, top_p
        self.rng = np.random.default_rng(seed)
        self.stop_ids = set(stop_ids)
        self.logprobs = logprobs
        self.tokens = []              # generated so far
        self.cache = None             # its KVCache, made when it starts running
        self.cancelled = False        # set from any thread; the loop drops it at its next step
        self.finished = False

    def cancel(self):
        self.cancelled = True


class Engine:
    """The decoding thread and its two lists, ``waiting`` and ``running``.

        engine = Engine(model, max_running=16, max_waiting=64).start()
        engine.submit([seq])         # QueueFull when too many wait
        engine.stop(timeout)         # cancels what is left, joins the thread
    """

    def __init__(self, model, max_running=16, max_waiting=64, rows_per_pass=ROWS_PER_PASS):
        self.model = model.eval()
        self.rows_per_pass = rows_per_pass    # see model.decode_rows: the default is exact
        self.max_running, self.max_waiting = max_running, max_waiting
        self.waiting = deque()
        self.running = []
        self.wakeup = threading.Condition()
        self.stopping = False
        self.steps = 0                # decoding steps run (tests and /health read it)
        # subtle: OpenMP's thread count is a per-thread setting; a thread made later starts from
        # OMP_NUM_THREADS, not from what set_num_threads chose, so the loop re-applies it
        self.num_threads = kernels.get_num_threads()
        self.thread = threading.Thread(target=self._loop, name="tinyroots-decode", daemon=True)

    def start(self):
        # subtle: every kernel call releases the GIL and takes it back; while the HTTP thread
        # holds it (streaming 16 responses), Python makes the taker wait up to the switch
        # interval, 5 ms by default -- on each of a step's hundred kernel calls. 0.2 ms keeps
        # the decoding thread's waits short (measured: see bench/bench_serve.py).
        sys.setswitchinterval(min(sys.getswitchinterval(), 0.0002))
        self.thread.start()
        return self

    def submit(self, seqs):
        """Queue all of seqs (one request's choices) or none of them."""
        with self.wakeup:
            if self.stopping:
                raise QueueFull("the server is shutting down")
            if len(self.waiting) + len(seqs) > self.max_waiting:
                raise QueueFull(f"{len(self.waiting)} sequences are already waiting (the limit "
                                f"is {self.max_waiting}); retry later")
            self.waiting.extend(seqs)
            self.wakeup.notify()

    def cancel(self, seqs):
        for s in seqs:
            s.cancel()
        with self.wakeup:
            self.wakeup.notify()

    def stats(self):
        with self.wakeup:
            return {"running": len(self.running), "waiting": len(self.waiting),
                    "steps": self.steps}

    def stop(self, timeout=5.0):
        """Stop taking work, cancel whatever still runs or waits, and join the thread."""
        with self.wakeup:
            self.stopping = True
            for s in list(self.waiting) + self.running:
                s.cancel()
            self.wakeup.notify()
        self.thread.join(timeout)

    # -- the loop ---------------------------------------------------------------------------

    def _loop(self):
        kernels.set_num_threads(self.num_threads)
        with no_grad():
            while True:
                with self.wakeup:
                    while not (self.waiting or self.running or self.stopping):
                        self.wakeup.wait()
                    if self.stopping and not self.waiting and not self.running:
                        return
                    joining = []
                    while self.waiting and len(self.running) + len(joining) < self.max_running:
                        joining.append(self.waiting.popleft())
                self._start(joining)
                self._drop_finished()
                if self.running:
                    self._step()
                    self._drop_finished()

    def _start(self, seqs):
        """Run the prompts into their own caches (together: prefill_rows); pick first tokens."""
        seqs = [s for s in seqs if not self._cancelled(s)]
        if not seqs:
            return
        cfg = self.model.config
        for seq in seqs:
            seq.cache = KVCache(cfg, 1, len(seq.prompt) + seq.max_tokens)
        try:
            logits = prefill_rows(self.model, [s.prompt for s in seqs], [s.cache for s in seqs])
        except Exception:            # noqa: BLE001 - find the one that fails; the others go on
            logits = None
        for i, seq in enumerate(seqs):
            try:
                if logits is None:   # alone, into a fresh cache
                    seq.cache = KVCache(cfg, 1, len(seq.prompt) + seq.max_tokens)
                    row = prefill_rows(self.model, [seq.prompt], [seq.cache])
                else:
                    row = logits[i:i + 1]
                self._advance(seq, row)
            except Exception as exc:  # noqa: BLE001 - one bad sequence must not stop the loop
                self._fail(seq, exc)
                continue
            with self.wakeup:
                self.running.append(seq)

    def _cancelled(self, seq):
        if seq.cancelled:
            self._finish(seq, "cancelled")
        return seq.cancelled

    def _step(self):
        """One token for every running sequence."""
        batch = [s for s in self.running if not s.finished]
        if not batch:
            return
        try:
            logits = decode_rows(self.model, [s.tokens[-1] for s in batch],
                                 [s.cache for s in batch], self.rows_per_pass)  # (B, V)
        except Exception as exc:     # noqa: BLE001
            for s in batch:
                self._fail(s, exc)
            return
        self.steps += 1
        for i, s in enumerate(batch):
            try:
                self._advance(s, logits[i:i + 1])
            except Exception as exc:  # noqa: BLE001
                self._fail(s, exc)

    def _advance(self, seq, logits):
        """logits (1, V) of the sequence's next position -> one token, emitted."""
        if seq.cancelled:
            self._finish(seq, "cancelled")
            return
        greedy = not seq.temperature
        z = logits if greedy else warp_logits(logits, seq.temperature, seq.top_k, seq.top_p)
        token = int(sample_next(z, greedy, 1.0, rng=seq.rng)[0])
        seq.tokens.append(token)
        seq.emit(("token", token, _logprobs(logits[0], token, seq.logprobs)))
        if token in seq.stop_ids:
            self._finish(seq, "stop")
        elif len(seq.tokens) >= seq.max_tokens:
            self._finish(seq, "length")

    def _finish(self, seq, reason):
        if not seq.finished:
            seq.finished = True
            seq.cache = None          # free its memory now, not when the list is cleaned
            seq.emit(("done", reason))

    def _fail(self, seq, exc):
        if not seq.finished:
            seq.finished = True
            seq.cache = None
            seq.emit(("error", f"{type(exc).__name__}: {exc}"))

    def _drop_finished(self):
        with self.wakeup:
            for s in self.running:
                if s.cancelled and not s.finished:
                    self._finish(s, "cancelled")
            self.running = [s for s in self.running if not s.finished]


def _logprobs(logits, token, top):
    """None, or the chosen token's log-probability under the model and the `top` likeliest.

    These are the model's own probabilities (log_softmax of the logits), before temperature
    and filtering, as OpenAI reports them.
    """
    if top is None:
        return None
    z = logits.astype(np.float64)
    logp = z - z.max() - np.log(np.exp(z - z.max()).sum())                  # log_softmax
    best = np.argsort(-logp, kind="stable")[:top] if top else []
    return {"logprob": float(logp[token]), "top": [(int(i), float(logp[i])) for i in best]}
