"""Optimisers, learning-rate schedules, gradient clipping and L1/L2 penalties.

An optimizer holds ``param_groups``: lists of parameters sharing hyperparameters, as in PyTorch
(``opt.param_groups[0]["lr"] = 3e-4`` is how a schedule changes the rate). ``step()`` updates
every parameter that has a gradient, in place, with a fused kernel (one pass over the weights).
"""

import math

import numpy as np

from . import kernels
from . import ops
from .tensor import Tensor


class Optimizer:
    def __init__(self, params, defaults):
        params = list(params)
        if not params:
            raise ValueError(f"{type(self).__name__}: got an empty parameter list")
        if isinstance(params[0], dict):
            groups = params
        else:
            groups = [{"params": params}]
        self.defaults = dict(defaults)
        self.param_groups = []
        for group in groups:
            unknown = set(group) - set(defaults) - {"params"}
            if unknown:
                raise ValueError(f"{type(self).__name__}: unknown option(s) "
                                 f"{', '.join(sorted(unknown))} in a parameter group")
            g = dict(defaults)
            g.update(group)
            g["params"] = list(group["params"])
            for p in g["params"]:
                if not isinstance(p, Tensor):
                    raise TypeError(f"{type(self).__name__}: parameters must be Tensors, "
                                    f"got {type(p).__name__}")
            self.param_groups.append(g)
        self.state = {}  # id(param) -> dict of arrays and counters

    def parameters(self):
        return [p for g in self.param_groups for p in g["params"]]

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def set_lr(self, lr):
        for g in self.param_groups:
            g["lr"] = float(lr)

    # -- saving: arrays go to safetensors, scalars to JSON; nothing is pickled -------------------

    def state_dict(self):
        """(arrays, meta): {"<index>.<name>": array} and a JSON-able dict of the rest."""
        arrays, per_param = {}, {}
        for i, p in enumerate(self.parameters()):
            st = self.state.get(id(p))
            if not st:
                continue
            scalars = {}
            for key, value in st.items():
                if isinstance(value, np.ndarray):
                    arrays[f"{i}.{key}"] = value
                else:
                    scalars[key] = value
            per_param[str(i)] = scalars
        groups = [{k: v for k, v in g.items() if k != "params"} for g in self.param_groups]
        meta = {"type": type(self).__name__, "groups": groups, "state": per_param,
                "group_sizes": [len(g["params"]) for g in self.param_groups]}
        return arrays, meta

    def load_state_dict(self, arrays, meta):
        if meta.get("type") != type(self).__name__:
            raise ValueError(f"optimizer state is for {meta.get('type')}, not "
                             f"{type(self).__name__}")
        if meta.get("group_sizes") != [len(g["params"]) for g in self.param_groups]:
            raise ValueError("optimizer state does not match the parameter groups (different "
                             "model or trainable parameters)")
        for g, saved in zip(self.param_groups, meta["groups"]):
            g.update({k: (tuple(v) if isinstance(v, list) else v) for k, v in saved.items()})
        self.state = {}
        params = self.parameters()
        for i, p in enumerate(params):
            if str(i) not in meta["state"]:
                continue
            st = dict(meta["state"][str(i)])
            prefix = f"{i}."
            for name, value in arrays.items():
                if name.startswith(prefix):
                    key = name[len(prefix):]
                    if value.shape != p.shape:
                        raise ValueError(f"optimizer state {name} has shape {value.shape}, "
                                         f"parameter has {p.shape}")
                    st[key] = np.array(value, dtype=np.float32)
            self.state[id(p)] = st


def _check_hyperparameters(name, **values):
    """Each value a finite number >= 0: lr=nan passed `lr < 0` and trained on NaN weights."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)) \
                or not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name}: {key} must be a finite number >= 0, got {value!r}")


class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum (and Nesterov), PyTorch's form."""

    def __init__(self, params, lr=1e-2, momentum=0.0, weight_decay=0.0, nesterov=False):
        _check_hyperparameters("SGD", lr=lr, momentum=momentum, weight_decay=weight_decay)
        super().__init__(params, dict(lr=lr, momentum=momentum, weight_decay=weight_decay,
                                      nesterov=nesterov))

    def step(self):
        for g in self.param_groups:
            for p in g["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                st = self.state.setdefault(id(p), {})
                buf = None
                if g["momentum"]:
                    buf = st.get("momentum_buffer")
                    if buf is None:
                        buf = st["momentum_buffer"] = np.zeros_like(p.data)
                kernels.sgd_update(p.data, p.grad, buf, g["lr"], g["momentum"],
                                   g["weight_decay"], bool(g["nesterov"]))


class AdamW(Optimizer):
    """Adam with decoupled weight decay (Loshchilov & Hutter 2019), as torch.optim.AdamW.

    Given a plain list of parameters, weight decay applies only to those with 2 or more axes
    (matrices and embeddings); biases and LayerNorm gains are not decayed -- shrinking them
    towards 0 only hurts. Pass explicit groups to choose otherwise.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2):
        _check_hyperparameters("AdamW", lr=lr, eps=eps, weight_decay=weight_decay)
        if not all(0.0 <= b < 1.0 for b in betas):
            raise ValueError(f"AdamW: betas must be in [0, 1), got {betas}")
        params = list(params)
        if params and not isinstance(params[0], dict):
            decay = [p for p in params if p.ndim >= 2]
            no_decay = [p for p in params if p.ndim < 2]
            params = [{"params": decay}, {"params": no_decay, "weight_decay": 0.0}]
            params = [g for g in params if g["params"]]
        super().__init__(params, dict(lr=lr, betas=tuple(betas), eps=eps,
                                      weight_decay=weight_decay))

    def step(self):
        for g in self.param_groups:
            beta1, beta2 = g["betas"]
            for p in g["params"]:
                if p.grad is None or not p.requires_grad:
                    continue
                st = self.state.get(id(p))
                if st is None:
                    st = self.state[id(p)] = {"step": 0, "exp_avg": np.zeros_like(p.data),
                                              "exp_avg_sq": np.zeros_like(p.data)}
                st["step"] += 1
                grad = p.grad if p.grad.dtype == p.data.dtype else p.grad.astype(p.data.dtype)
                kernels.adamw_update(p.data, np.ascontiguousarray(grad), st["exp_avg"],
                                     st["exp_avg_sq"], g["lr"], beta1, beta2, g["eps"],
                                     g["weight_decay"], st["step"])


# ---------------------------------------------------------------------------------------------
# schedules, clipping, penalties


def cosine_lr(step, max_lr, warmup_steps, max_steps, min_lr=0.0):
    """Linear warmup to max_lr over warmup_steps, then cosine decay to min_lr at max_steps.

        step 0 -> max_lr / warmup_steps ... step warmup_steps -> max_lr ... max_steps -> min_lr
    Past max_steps the rate stays at min_lr.
    """
    if warmup_steps > 0 and step < warmup_steps:
        return max_lr * (step + 1) / warmup_steps
    if step >= max_steps:
        return min_lr
    span = max(max_steps - warmup_steps, 1)
    progress = (step - warmup_steps) / span
    return min_lr + 0.5 * (1.0 + math.cos(math.pi * progress)) * (max_lr - min_lr)


class WarmupCosine:
    """cosine_lr as an object bound to an optimizer: ``sched.step(i)`` sets the rate for step i."""

    def __init__(self, optimizer, max_lr, warmup_steps, max_steps, min_lr=0.0):
        self.optimizer = optimizer
        self.max_lr, self.min_lr = float(max_lr), float(min_lr)
        self.warmup_steps, self.max_steps = int(warmup_steps), int(max_steps)

    def lr_at(self, step):
        return cosine_lr(step, self.max_lr, self.warmup_steps, self.max_steps, self.min_lr)

    def step(self, step):
        lr = self.lr_at(step)
        self.optimizer.set_lr(lr)
        return lr


def grad_norm(params):
    """The global L2 norm of all gradients, as if they were one long vector."""
    total = 0.0
    for p in params:
        if p.grad is not None:
            g = p.grad.reshape(-1)
            total += float(np.dot(g, g))
    return math.sqrt(total)


def clip_grad_norm(params, max_norm):
    """Scale all gradients together so their global norm is at most max_norm.

    Returns the norm before clipping (log it: spikes warn of instability). Clipping the global
    norm keeps the update's direction and only shortens it.
    """
    params = [p for p in params if p.grad is not None]
    norm = grad_norm(params)
    if not math.isfinite(norm):
        return norm
    if max_norm is not None and max_norm > 0 and norm > max_norm:
        scale = np.float32(max_norm / (norm + 1e-6))
        for p in params:
            p.grad = p.grad * scale
    return norm


def penalty(params, l1=0.0, l2=0.0):
    """The regularisation term l1 * sum|w| + l2 * sum w^2 over ``params``, as a Tensor.

    Add it to the loss before backward(). (AdamW's weight_decay is the decoupled alternative to
    l2; these penalties act through the gradient like classic L1/L2 regularisation.)
    """
    terms = []
    for p in params:
        if l1:
            terms.append(ops.mul(ops.sum(ops.abs(p)), l1))
        if l2:
            terms.append(ops.mul(ops.sum(ops.mul(p, p)), l2))
    if not terms:
        return Tensor(0.0)
    total = terms[0]
    for t in terms[1:]:
        total = ops.add(total, t)
    return total
