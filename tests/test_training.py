"""The shared training loop (tinyroots/training.py): the optimizer step, the hooks, the
stopping rules, and the checks on a saved training state."""

import math

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import optim
from tinyroots.training import (Batcher, Hooks, LoopSettings, LoopState, StopRules, Trainer,
                                optimizer_step)


def tiny_model(seed=0):
    tr.manual_seed(seed)
    return tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=40, block_size=8))


def batches(n, seed=0):
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 40, (2, 8)), rng.integers(0, 40, (2, 8))) for _ in range(n)]


def model_loss(model):
    return lambda b: model(b[0], targets=b[1], return_logits=False).loss


class RecordingHooks(Hooks):
    """Single-process behaviour, with every call written down."""

    def __init__(self, shard=None):
        self.calls = []
        self._shard = shard

    def shard(self, n):
        self.calls.append(("shard", n))
        return self._shard if self._shard is not None else range(n)

    def before_last_backward(self, params):
        self.calls.append(("before_last_backward",))

    def after_backward(self, params):
        self.calls.append(("after_backward",))

    def clip_grad_norm(self, params, max_norm):
        self.calls.append(("clip", max_norm))
        return super().clip_grad_norm(params, max_norm)

    def optimizer_step(self, optimizer):
        self.calls.append(("step",))
        optimizer.step()

    def all_sum(self, x):
        self.calls.append(("all_sum",))
        return x


# ---------------------------------------------------------------------------------------------
# the optimizer step


def test_accumulated_step_equals_one_step_on_the_whole_batch():
    """4 micro-batches of 2 give the update of one batch of 8 (mean loss, same gradient)."""
    micro = batches(4)
    whole = (np.concatenate([b[0] for b in micro]), np.concatenate([b[1] for b in micro]))
    results = []
    for bs in (micro, [whole]):
        model = tiny_model()
        before = [p.data.copy() for p in model.parameters()]
        # SGD with lr 1 moves each weight by exactly its gradient (Adam's first step would
        # divide tiny gradients by their own size and blow rounding up)
        opt = optim.SGD(model.parameters(), lr=1.0)
        loss, norm = optimizer_step(bs, model_loss(model), model.parameters(), opt, 0.0)
        results.append((loss, norm, [b - p.data for b, p in zip(before, model.parameters())]))
        assert all(p.grad is None or not p.grad.any() for p in model.parameters())  # zeroed
    (la, na, pa), (lb, nb, pb) = results
    # float32 sums in a different order: 1e-5 relative on the loss and the norm
    assert la == pytest.approx(lb, rel=1e-5) and na == pytest.approx(nb, rel=1e-5)
    for a, b in zip(pa, pb):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_hooks_are_called_in_order_around_the_last_backward():
    model = tiny_model()
    opt = optim.AdamW(model.parameters(), lr=1e-2)
    hooks = RecordingHooks()
    optimizer_step(batches(3), model_loss(model), model.parameters(), opt, 1.0, hooks)
    assert hooks.calls == [("shard", 3), ("before_last_backward",), ("after_backward",),
                           ("clip", 1.0), ("step",), ("all_sum",)]


def test_shard_runs_only_this_process_share_and_scales_by_the_global_count():
    """A process given micro-batches [1, 3] of 4 holds their gradient over 4, not over 2."""
    micro = batches(4)
    params_seen = {}
    for share in ([1, 3], [0, 2]):
        model = tiny_model()
        opt = optim.SGD(model.parameters(), lr=0.0)
        grads = {}

        def capture(o, model=model, grads=grads):
            grads.update({n: p.grad.copy() for n, p in model.named_parameters()})
        hooks = RecordingHooks(shard=share)
        hooks.optimizer_step = capture
        loss, _ = optimizer_step(micro, model_loss(model), model.parameters(), opt, 0.0, hooks)
        params_seen[tuple(share)] = (loss, grads)
    model = tiny_model()
    model.zero_grad()
    for b in micro:
        model_loss(model)(b).backward(np.float32(0.25))
    for n, p in model.named_parameters():
        total = params_seen[(1, 3)][1][n] + params_seen[(0, 2)][1][n]
        # two halves summed, as an allreduce would: float32, 1e-5
        np.testing.assert_allclose(total, p.grad, rtol=1e-4, atol=1e-6, err_msg=n)
    # each process reports its own sum over the global count (all_sum adds them up)
    full = sum(float(model_loss(model)(b)) for b in micro) / 4
    assert params_seen[(1, 3)][0] + params_seen[(0, 2)][0] == pytest.approx(full, rel=1e-5)


# ---------------------------------------------------------------------------------------------
# the loop and its stopping rules


class CountingJob:
    """A job over a tiny GPT whose validation 'metric' is scripted."""

    before_clip = None

    def __init__(self, model, values):
        self.model, self.values = model, list(values)
        self.best, self.checkpoints, self.data = [], [], batches(1000)

    def next_batch(self):
        return self.data.pop()

    def loss(self, batch):
        return model_loss(self.model)(batch)

    def evaluate(self):
        return {"val_loss": self.values.pop(0) if self.values else 1.0}

    def keep_best(self, step):
        self.best.append(step)

    def checkpoint(self, state):
        self.checkpoints.append(state.step)

    def train_stats(self):
        return {"extra": 1}


def run_loop(values, lr=1e-3, **settings):
    model = tiny_model()
    opt = optim.AdamW(model.parameters(), lr=lr)
    sched = optim.WarmupCosine(opt, lr, 0, settings.get("max_steps", 10), lr)
    job = CountingJob(model, values)
    s = LoopSettings(**dict(dict(max_steps=10, eval_interval=5, log_interval=1,
                                 progress=False), **settings))
    messages = []
    state = Trainer(job, model.parameters(), opt, sched, s, log=messages.append).run()
    return state, job, messages


def test_loop_evaluates_keeps_the_best_and_checkpoints():
    state, job, _ = run_loop([3.0, 2.0, 2.5])
    assert state.stop_reason == "reached max_steps=10" and state.step == 10
    assert job.best == [0, 5] and state.best_value == 2.0 and state.best_step == 5
    assert job.checkpoints == [0, 5, 10]       # after each evaluation; the end is one of them


@pytest.mark.parametrize("settings,values,reason,step", [
    (dict(target=2.0), [3.0, 2.0], "target val loss 2.0 reached (2.0000)", 5),
    (dict(patience=2, eval_interval=2), [3.0, 3.0, 3.0], "early stopping: val loss has not "
     "improved for 2 evaluations (best 3.0000 at step 0)", 4),
    (dict(patience=1, eval_interval=2, min_delta=0.5), [3.0, 2.8], "early stopping", 2),
    (dict(max_time=1e-9, max_steps=1000), [], "max_time 1e-09s reached", 0),
    (dict(target=0.5, higher_is_better=True, metric="accuracy"), None, "target accuracy", 0),
])
def test_stopping_rules(settings, values, reason, step):
    if values is None:              # a metric where higher is better

        class Acc(CountingJob):
            def evaluate(self):
                return {"accuracy": 0.75}
        model = tiny_model()
        opt = optim.AdamW(model.parameters(), lr=1e-3)
        job = Acc(model, [])
        s = LoopSettings(**dict(dict(max_steps=10, eval_interval=5, progress=False), **settings))
        state = Trainer(job, model.parameters(), opt, optim.WarmupCosine(opt, 1e-3, 0, 10),
                        s, log=lambda m: None).run()
    else:
        state, job, messages = run_loop(values, **settings)
    assert state.stop_reason.startswith(reason), state.stop_reason
    assert state.step == step


def test_a_resumed_loop_does_not_evaluate_its_first_step_again():
    model = tiny_model()
    opt = optim.AdamW(model.parameters(), lr=1e-3)
    job = CountingJob(model, [2.0, 1.0])
    s = LoopSettings(max_steps=10, eval_interval=5, progress=False)
    for start in (0, 5):       # a run stopped right after its evaluation at 0 or at 5
        job.values, job.best, job.checkpoints = [2.0, 1.0], [], []
        state = LoopState(step=start, best_step=start, best_value=3.0)
        state = Trainer(job, model.parameters(), opt, optim.WarmupCosine(opt, 1e-3, 0, 10), s,
                        log=lambda m: None, state=state).run()
        assert state.step == 10 and job.checkpoints == ([5, 10] if start == 0 else [10])
        assert job.best == ([5, 10] if start == 0 else [10])


def test_a_non_finite_loss_stops_the_loop_and_skips_the_final_checkpoint():
    state, job, messages = run_loop([3.0], lr=1e9, grad_clip=0.0, max_steps=200,
                                    eval_interval=1000)
    assert state.diverged and "the loss became" in state.stop_reason
    assert job.checkpoints == [0]              # no checkpoint of the diverged weights
    assert any("try a lower learning_rate" in m for m in messages)


def test_stop_rules_improvement_rule():
    rules = StopRules(LoopSettings(max_steps=1, eval_interval=1, min_delta=0.1))
    st = LoopState()
    assert rules.improved(5.0, st)                          # the first finite value
    assert not rules.improved(math.nan, st)
    st.best_step, st.best_value = 0, 5.0
    assert rules.improved(4.8, st) and not rules.improved(4.95, st)


# ---------------------------------------------------------------------------------------------
# Batcher state


def test_batcher_state_round_trips_and_rejects_garbage():
    b = Batcher(np.arange(100, dtype=np.uint16), 2, 4, seed=0)
    state = b.get_state()
    first = b.next_batch()
    b.set_state(state)
    np.testing.assert_array_equal(b.next_batch()[0], first[0])
    for bad in (None, [], {"bit_generator": "MT19937"}, {**state, "state": "x"},
                {**state, "state": {"state": "x", "inc": 1}}):
        with pytest.raises(ValueError):
            b.set_state(bad)
