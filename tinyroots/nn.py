"""Module and Parameter, and the layers a GPT is built from.

A Module owns Parameters (tensors that the optimizer updates) and child Modules, registered
simply by assigning them as attributes; ``named_parameters()`` walks that tree and yields dotted
names such as ``transformer.h.0.attn.c_attn.weight``. That is all the bookkeeping a framework
needs: the arithmetic is in ops.py.
"""

from collections import OrderedDict
from contextlib import contextmanager

import numpy as np

from . import ops
from .random import generator
from .tensor import Tensor


class Parameter(Tensor):
    """A Tensor that is a trainable weight: requires_grad is on, and Modules register it."""

    __slots__ = ()

    def __init__(self, data, requires_grad=True, dtype=None):
        super().__init__(data, requires_grad=requires_grad, dtype=dtype)

    def __repr__(self):
        return "Parameter" + super().__repr__()[len("Tensor"):]


class Module:
    """Base class of every layer. Subclasses set attributes and define ``forward``."""

    def __init__(self):
        object.__setattr__(self, "_parameters", OrderedDict())
        object.__setattr__(self, "_modules", OrderedDict())
        object.__setattr__(self, "training", True)

    def __setattr__(self, name, value):
        if "_parameters" not in self.__dict__:
            raise RuntimeError(f"{type(self).__name__}: call super().__init__() before "
                               "assigning attributes")
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        if isinstance(value, Parameter):
            self._parameters[name] = value
        elif isinstance(value, Module):
            self._modules[name] = value
        object.__setattr__(self, name, value)

    def __delattr__(self, name):
        self._parameters.pop(name, None)
        self._modules.pop(name, None)
        object.__delattr__(self, name)

    def __call__(self, *args, **kwargs):
        return self.forward(*args, **kwargs)

    def forward(self, *args, **kwargs):
        raise NotImplementedError(f"{type(self).__name__} does not define forward()")

    # -- the tree -----------------------------------------------------------------------------

    def named_modules(self, prefix=""):
        """Yield (name, module) for this module and every descendant, depth first."""
        yield prefix, self
        for name, child in self._modules.items():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self):
        return [m for _, m in self.named_modules()]

    def children(self):
        return list(self._modules.values())

    def named_parameters(self, prefix="", remove_duplicate=True):
        """Yield (dotted name, Parameter); a parameter shared by two modules is yielded once."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name, p in module._parameters.items():
                if remove_duplicate:
                    if id(p) in seen:
                        continue
                    seen.add(id(p))
                yield (f"{mod_name}.{name}" if mod_name else name), p

    def parameters(self):
        return [p for _, p in self.named_parameters()]

    def num_parameters(self, trainable_only=False):
        return int(sum(p.size for p in self.parameters()
                       if p.requires_grad or not trainable_only))

    def state_dict(self):
        """OrderedDict name -> np.ndarray (the live arrays, not copies)."""
        return OrderedDict((name, p.data) for name, p in self.named_parameters())

    def load_state_dict(self, state, strict=True):
        """Copy arrays into the parameters with the same names.

        Shapes must match exactly. With strict=True, a missing or unexpected name is an error.
        Returns (missing, unexpected) name lists.
        """
        params = dict(self.named_parameters())
        missing = [n for n in params if n not in state]
        unexpected = [n for n in state if n not in params]
        if strict and (missing or unexpected):
            parts = []
            if missing:
                parts.append("missing: " + ", ".join(missing[:8])
                             + (" ..." if len(missing) > 8 else ""))
            if unexpected:
                parts.append("unexpected: " + ", ".join(unexpected[:8])
                             + (" ..." if len(unexpected) > 8 else ""))
            raise KeyError("load_state_dict: parameter names do not match (" + "; ".join(parts)
                           + ")")
        for name, p in params.items():
            if name not in state:
                continue
            value = np.asarray(state[name])
            if value.shape != p.shape:
                raise ValueError(f"load_state_dict: '{name}' has shape {value.shape} in the "
                                 f"state dict but {p.shape} in the model")
            p.data[...] = value
        return missing, unexpected

    # -- modes and gradients ---------------------------------------------------------------------

    def train(self, mode=True):
        for m in self.modules():
            object.__setattr__(m, "training", bool(mode))
        return self

    def eval(self):
        return self.train(False)

    def zero_grad(self):
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, flag=True):
        for p in self.parameters():
            p.requires_grad = bool(flag)
        return self

    def apply(self, fn):
        for m in self.modules():
            fn(m)
        return self

    def extra_repr(self):
        return ""

    def __repr__(self):
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        for name, child in self._modules.items():
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return lines[0] + ")" if len(lines) == 1 else "\n".join(lines) + "\n)"


class ModuleList(Module):
    """A list of modules, registered as children '0', '1', ... (GPT-2's ``transformer.h``)."""

    def __init__(self, modules=()):
        super().__init__()
        for m in modules:
            self.append(m)

    def append(self, module):
        setattr(self, str(len(self._modules)), module)
        return self

    def __getitem__(self, i):
        items = list(self._modules.values())
        return items[i] if not isinstance(i, slice) else ModuleList(items[i])

    def __len__(self):
        return len(self._modules)

    def __iter__(self):
        return iter(self._modules.values())


# ---------------------------------------------------------------------------------------------
# layers


_init_weights = True


@contextmanager
def skip_init():
    """Build modules without drawing random initial weights, because a checkpoint is about to
    replace them: drawing 124M normal numbers takes a second, and the memory they held would
    stay in the process after the checkpoint's arrays took their place."""
    global _init_weights
    previous, _init_weights = _init_weights, False
    try:
        yield
    finally:
        _init_weights = previous


def normal(shape, std):
    """Normal(0, std) initial weights from the global generator, float32 (uninitialised memory
    inside skip_init(): no page is touched until something is written there)."""
    if not _init_weights:
        return np.empty(shape, dtype=np.float32)
    return generator().standard_normal(shape, dtype=np.float32) * np.float32(std)


class Linear(Module):
    """y = x @ weight + bias, weight stored (in_features, out_features) like GPT-2's Conv1D."""

    def __init__(self, in_features, out_features, bias=True, std=0.02):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        self.weight = Parameter(normal((in_features, out_features), std))
        self.bias = Parameter(np.zeros(out_features, dtype=np.float32)) if bias else None

    def forward(self, x):
        return ops.linear(x, self.weight, self.bias)

    def extra_repr(self):
        return f"{self.in_features}, {self.out_features}, bias={self.bias is not None}"


class Embedding(Module):
    """A (num_embeddings, dim) table; forward(ids) looks rows up."""

    def __init__(self, num_embeddings, dim, std=0.02):
        super().__init__()
        self.weight = Parameter(normal((num_embeddings, dim), std))

    def forward(self, ids):
        return ops.embedding(self.weight, ids)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, {self.weight.shape[1]}"


class LayerNorm(Module):
    """LayerNorm over the last axis with a learned scale (and shift, unless bias=False)."""

    def __init__(self, dim, eps=1e-5, bias=True):
        super().__init__()
        self.eps = float(eps)
        self.weight = Parameter(np.ones(dim, dtype=np.float32))
        self.bias = Parameter(np.zeros(dim, dtype=np.float32)) if bias else None

    def forward(self, x):
        return ops.layernorm(x, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return f"{self.weight.shape[0]}, eps={self.eps}"


class Dropout(Module):
    """Inverted dropout, active only in training mode."""

    def __init__(self, p=0.0):
        super().__init__()
        if not 0.0 <= p < 1.0:
            raise ValueError(f"Dropout: p must be in [0, 1), got {p}")
        self.p = float(p)

    def forward(self, x):
        return ops.dropout(x, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}"


# ---------------------------------------------------------------------------------------------
# LoRA: a frozen Linear plus a trainable low-rank update


class LoRALinear(Module):
    """``base`` (a Linear) with a LoRA adapter: y = x @ W + b + (alpha / r) * dropout(x) @ A @ B.

    W and b are the base layer's own Parameters (same objects, so a checkpoint's names such as
    ``transformer.h.0.attn.c_attn.weight`` do not change) and are frozen; only A (in, r) and
    B (r, out) train: r * (in + out) numbers instead of in * out.

    A starts random and B at zero, so at first the layer computes exactly what ``base`` did and
    fine-tuning starts from the pretrained model. ``merged_weight()`` is W + (alpha / r) A @ B:
    a plain Linear with that weight gives the same outputs (modify.merge_lora does this).

        layer = LoRALinear(model.transformer.h[0].attn.c_attn, r=8, alpha=16)
        layer.lora_A.shape, layer.lora_B.shape       # (C, 8), (8, 3C)
    """

    def __init__(self, base, r=8, alpha=16.0, dropout=0.0):
        super().__init__()
        if not isinstance(base, Linear):
            raise TypeError(f"LoRALinear: base must be a Linear, got {type(base).__name__}")
        if isinstance(r, bool) or not isinstance(r, (int, np.integer)) or r < 1:
            raise ValueError(f"LoRALinear: rank r must be a positive integer, got {r!r}")
        if not 0.0 <= dropout < 1.0:
            raise ValueError(f"LoRALinear: dropout must be in [0, 1), got {dropout}")
        self.in_features, self.out_features = base.in_features, base.out_features
        self.r, self.alpha, self.dropout = int(r), float(alpha), float(dropout)
        self.weight = base.weight
        self.bias = base.bias
        self.weight.requires_grad = False
        if self.bias is not None:
            self.bias.requires_grad = False
        # PEFT's init: A ~ kaiming-uniform(a=sqrt(5)), i.e. U(-1/sqrt(in), 1/sqrt(in)); B = 0
        bound = 1.0 / np.sqrt(self.in_features)
        a = generator().uniform(-bound, bound, (self.in_features, self.r))
        self.lora_A = Parameter(a.astype(self.weight.dtype))
        self.lora_B = Parameter(np.zeros((self.r, self.out_features), dtype=self.weight.dtype))

    @property
    def scale(self):
        return self.alpha / self.r

    def forward(self, x):
        return ops.lora_linear(x, self.weight, self.bias, self.lora_A, self.lora_B, self.scale,
                               self.dropout, self.training)

    def merged_weight(self):
        """W + (alpha / r) A @ B, a new (in, out) array; W itself is not changed."""
        delta = (self.lora_A.data.astype(np.float64) @ self.lora_B.data.astype(np.float64))
        return (self.weight.data + self.scale * delta).astype(self.weight.dtype)

    def to_linear(self):
        """A plain Linear holding the merged weight (and the same bias Parameter)."""
        lin = Linear(self.in_features, self.out_features, bias=False)
        lin.weight = Parameter(self.merged_weight(), requires_grad=False)
        lin.bias = self.bias
        return lin

    def extra_repr(self):
        return (f"{self.in_features}, {self.out_features}, r={self.r}, alpha={self.alpha:g}, "
                f"dropout={self.dropout:g}, bias={self.bias is not None}")
