"""Change a pretrained GPT before fine-tuning it: vocabulary, context, depth, what trains, LoRA.

Every function takes a GPT (or any Module, where that makes sense), changes it in place and
returns it, so they chain:

    model = GPT.from_pretrained("out/best")
    resize_vocab(model, tokenizer.vocab_size)      # after tokenizer.add_special_tokens([...])
    resize_context(model, 256)                     # a longer context than pre-training used
    add_blocks(model, 1)                           # one more block, initialised as identity
    freeze(model)                                  # nothing trains ...
    apply_lora(model, r=8, alpha=16, targets="attn")   # ... except the new adapters
    count_parameters(model)                        # (trainable, total), e.g. (24576, 964608)
    ...train...
    save_adapter(model, "out/adapter")             # adapter_model.safetensors + adapter_config.json
    merge_lora(model)                              # fold A @ B into W: a plain GPT again

Freezing is ``requires_grad = False`` on Parameters. A frozen parameter gets no gradient, and
when everything *before* a layer is frozen the autograd graph is not even recorded there
(``Tensor._from_op`` records an op only if some input needs a gradient), so freezing the
embeddings and the first k blocks makes the backward pass skip those blocks entirely. Give the
optimizer ``trainable_parameters(model)`` only.

Adapters are saved in PEFT's layout (names ``base_model.model.<module>.lora_A.weight``, arrays
as torch.nn.Linear stores them: A (r, in), B (out, r)) with an ``adapter_config.json`` holding
r, lora_alpha, lora_dropout and target_modules, apart from the base weights they modify.
"""

import dataclasses
import os

import numpy as np

from ..checkpoint import CheckpointError, read_json
from ..fileio import write_json
from ..model import Block
from ..nn import Dropout, LoRALinear, Parameter, normal
from ..random import generator
from ..safetensors import load_safetensors, save_safetensors

# ---------------------------------------------------------------------------------------------
# counting and freezing


def trainable_parameters(module):
    """[Parameter] that require a gradient: what the optimizer should get."""
    return [p for p in module.parameters() if p.requires_grad]


def count_parameters(module):
    """(trainable, total) parameter counts. A tied weight (wte and the head) counts once."""
    params = module.parameters()
    return (int(sum(p.size for p in params if p.requires_grad)),
            int(sum(p.size for p in params)))


def _matches(name, patterns):
    """A parameter name matches a pattern that equals it, or is a dotted prefix of it:
    'transformer.h.0' matches 'transformer.h.0.attn.c_attn.weight', not 'transformer.h.01...'."""
    return any(name == p or name.startswith(p + ".") for p in patterns)


def freeze(module, names=None):
    """Stop gradients for parameters whose name matches ``names`` (exact names or dotted
    prefixes such as 'transformer.wte' or 'transformer.h.0'); all of them when names is None.
    Returns the number of parameters (tensors) frozen."""
    return _set_requires_grad(module, names, False)


def unfreeze(module, names=None):
    """The inverse of freeze(); returns the number of tensors switched on."""
    return _set_requires_grad(module, names, True)


def _set_requires_grad(module, names, flag):
    if isinstance(names, str):
        names = [names]
    n = 0
    matched = set()
    for name, p in module.named_parameters():
        hit = names is None or _matches(name, names)
        if hit:
            p.requires_grad = flag
            n += 1
            if names is not None:
                matched.update(q for q in names if name == q or name.startswith(q + "."))
    if names is not None:
        unknown = [q for q in names if q not in matched]
        if unknown:
            raise ValueError(f"freeze/unfreeze: no parameter is named (or starts with) "
                             f"{', '.join(repr(u) for u in unknown)}")
    return n


def freeze_blocks(model, k, embeddings=True):
    """Freeze the first k transformer blocks (and, by default, the token and position
    embeddings). With the embeddings frozen too, nothing before block k needs a gradient, so
    those blocks run forward only.

    subtle: GPT-2 ties the output head to the token embedding table, so freezing
    ``transformer.wte`` also freezes the language-model head; a classification head is
    separate and unaffected.
    """
    n_layer = len(model.transformer.h)
    if not 0 <= k <= n_layer:
        raise ValueError(f"freeze_blocks: k must be in 0..{n_layer} (the model has {n_layer} "
                         f"blocks), got {k}")
    names = [f"transformer.h.{i}" for i in range(k)]
    if embeddings:
        names += ["transformer.wte", "transformer.wpe"]
    return freeze(model, names) if names else 0


# ---------------------------------------------------------------------------------------------
# vocabulary, context, depth, dropout


def _check_fits(model, name, **changes):
    """Refuse, before anything is allocated, a change after which the weights alone would not
    fit in this machine's memory (add_blocks(1_000_000) built blocks until memory ran out):
    GPTConfig's own check, run on the changed configuration."""
    try:
        dataclasses.replace(model.config, **changes)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


def resize_vocab(model, new_size, seed=None):
    """Grow (or shrink) the token embedding table to new_size rows; the tied head follows.

    New rows start at the mean of the existing ones plus a little noise: a new token's logit
    then starts near the average logit instead of at some random extreme, and the noise makes
    two new tokens distinguishable from the first step (Hewitt, "Initializing new word
    embeddings", 2021). Old rows are untouched, so logits for old tokens do not change.
    Shrinking drops the last rows.
    """
    wte = model.transformer.wte
    old, C = wte.weight.shape
    if isinstance(new_size, bool) or not isinstance(new_size, (int, np.integer)) or new_size < 1:
        raise ValueError(f"resize_vocab: new_size must be a positive integer, got {new_size!r}")
    _check_fits(model, "resize_vocab", vocab_size=int(new_size))
    if new_size == old:
        return model
    if new_size < old:
        table = np.ascontiguousarray(wte.weight.data[:new_size])
    else:
        rng = np.random.default_rng(seed) if seed is not None else generator()
        mean = wte.weight.data.astype(np.float64).mean(axis=0)
        std = 0.1 * float(wte.weight.data.std()) + 1e-8
        extra = mean + std * rng.standard_normal((new_size - old, C))
        table = np.concatenate([wte.weight.data, extra.astype(wte.weight.dtype)], axis=0)
    trainable = wte.weight.requires_grad
    wte.weight = Parameter(table, requires_grad=trainable)
    model.config.vocab_size = int(new_size)
    return model


def resize_context(model, block_size, method="keep"):
    """Change the context length (the position table wpe and config.block_size).

    Shrinking drops positions beyond block_size: outputs for shorter sequences are unchanged.
    Growing with method="keep" keeps every learned position and starts the new ones small and
    random (std = initializer_range): sequences that fit the old context give the same outputs,
    and the new positions are learned by fine-tuning on longer texts. method="interpolate"
    instead stretches the old table over the new length by linear interpolation (position
    interpolation): every position moves, but each lands between two learned ones.
    """
    wpe = model.transformer.wpe
    old, C = wpe.weight.shape
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f"resize_context: block_size must be a positive integer, "
                         f"got {block_size!r}")
    if method not in ("keep", "interpolate"):
        raise ValueError(f"resize_context: method must be 'keep' or 'interpolate', "
                         f"got {method!r}")
    _check_fits(model, "resize_context", block_size=int(block_size))
    if block_size == old:
        return model
    table = wpe.weight.data
    if block_size < old:
        new = np.ascontiguousarray(table[:block_size])
    elif method == "keep":
        extra = normal((block_size - old, C), model.config.initializer_range)
        new = np.concatenate([table, extra.astype(table.dtype)], axis=0)
    else:
        src = np.linspace(0.0, old - 1.0, block_size)        # where each new position reads
        lo = np.floor(src).astype(np.int64)
        hi = np.minimum(lo + 1, old - 1)
        frac = (src - lo)[:, None]
        new = ((1.0 - frac) * table[lo] + frac * table[hi]).astype(table.dtype)
    wpe.weight = Parameter(new, requires_grad=wpe.weight.requires_grad)
    model.config.block_size = int(block_size)
    return model


def add_blocks(model, n=1, init="identity"):
    """Append n transformer blocks after the last one.

    init="identity" zeroes each new block's two output projections (attention and MLP c_proj),
    so the block adds nothing to the residual stream at first and the model's outputs are
    exactly unchanged; training then grows the new blocks from there. init="random" uses
    GPT-2's initialisation (the model's outputs change at once).
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"add_blocks: n must be a positive integer, got {n!r}")
    if init not in ("identity", "random"):
        raise ValueError(f"add_blocks: init must be 'identity' or 'random', got {init!r}")
    _check_fits(model, "add_blocks", n_layer=model.config.n_layer + int(n))
    cfg = model.config
    cfg.n_layer += int(n)       # GPT-2's residual init scale depends on the new depth
    for _ in range(int(n)):
        block = Block(cfg)
        if init == "identity":
            for proj in (block.attn.c_proj, block.mlp.c_proj):
                proj.weight.data[...] = 0.0
                if proj.bias is not None:
                    proj.bias.data[...] = 0.0
        model.transformer.h.append(block)
    return model


def set_dropout(model, p, attention=False):
    """Set dropout on embeddings and residual branches to p (and, with attention=True, on the
    attention probabilities too: slower, as it bypasses the fused attention kernel)."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"set_dropout: p must be in [0, 1), got {p}")
    for m in model.modules():
        if isinstance(m, Dropout):
            m.p = float(p)
        if attention and hasattr(m, "attn_dropout"):
            m.attn_dropout = float(p)
    model.config.dropout = float(p)
    return model


# ---------------------------------------------------------------------------------------------
# LoRA

# shorthands for apply_lora(targets=...): the four projections of each GPT-2 block
LORA_TARGETS = {
    "attn": ("attn.c_attn", "attn.c_proj"),
    "mlp": ("mlp.c_fc", "mlp.c_proj"),
    "all": ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"),
}
_PROJECTIONS = LORA_TARGETS["all"]


def parse_lora_targets(targets):
    """'attn' / 'mlp' / 'all' / 'attn.c_attn,mlp.c_fc' / a list -> a tuple of projections."""
    if isinstance(targets, str):
        targets = [t.strip() for t in targets.split(",") if t.strip()]
    out = []
    for t in targets:
        if t in LORA_TARGETS:
            out += LORA_TARGETS[t]
        elif t in _PROJECTIONS:
            out.append(t)
        elif t in ("c_attn", "c_fc"):
            out.append(("attn." if t == "c_attn" else "mlp.") + t)
        else:
            raise ValueError(f"LoRA target {t!r} is not one of attn, mlp, all, "
                             + ", ".join(_PROJECTIONS))
    if not out:
        raise ValueError("LoRA: no target modules given")
    return tuple(dict.fromkeys(out))


def apply_lora(model, r=8, alpha=16.0, dropout=0.0, targets="attn", freeze_base=True):
    """Put a LoRA adapter on the chosen projections of every block; returns the model.

    targets: 'attn' (c_attn and attn.c_proj), 'mlp' (c_fc and mlp.c_proj), 'all', or a list of
    those projection names. With freeze_base (the point of LoRA) every other parameter of the
    model is frozen first; unfreeze what else should train (a task head, say) afterwards.
    """
    targets = parse_lora_targets(targets)
    if any(isinstance(m, LoRALinear) for m in model.modules()):
        raise ValueError("apply_lora: the model already has LoRA adapters (merge_lora first)")
    if freeze_base:
        freeze(model)
    for block in model.transformer.h:
        for target in targets:
            parent_name, child = target.split(".")
            parent = getattr(block, parent_name)
            # (MLP.forward sees that c_fc is no longer a plain Linear and routes through it)
            setattr(parent, child, LoRALinear(getattr(parent, child), r, alpha, dropout))
    model.lora_config = {"r": int(r), "lora_alpha": float(alpha), "lora_dropout": float(dropout),
                         "target_modules": list(targets)}
    return model


def lora_layers(model):
    """[(module name, LoRALinear)] in model order."""
    return [(name, m) for name, m in model.named_modules() if isinstance(m, LoRALinear)]


def merge_lora(model):
    """Replace every LoRALinear by a plain Linear with W + (alpha / r) A @ B: the same outputs,
    no adapter cost at inference, and a model any GPT-2 loader reads. Returns the model."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("merge_lora: the model has no LoRA adapters")
    for name, layer in layers:
        parent = model
        *path, child = name.split(".")
        for part in path:
            parent = getattr(parent, part)
        setattr(parent, child, layer.to_linear())
    if hasattr(model, "lora_config"):
        del model.__dict__["lora_config"]
    return model


def merged_state_dict(model):
    """{Hugging Face name: array} of the model as merge_lora would make it, without changing
    the model: adapters folded into their weights, no lora_A / lora_B entries."""
    state = {}
    lora = dict(lora_layers(model))
    for name, p in model.named_parameters():
        owner, _, leaf = name.rpartition(".")
        if owner in lora:
            if leaf in ("lora_A", "lora_B"):
                continue
            if leaf == "weight":
                state[name] = lora[owner].merged_weight()
                continue
        state[name] = p.data
    return state


class ExportView:
    """What checkpoint.save_pretrained needs from a model (config and state_dict()), over a
    given state: saves a LoRA model merged, without merging the live one."""

    def __init__(self, config, state):
        self.config = config
        self._state = state

    def state_dict(self):
        return dict(self._state)


# -- saving and loading adapters (PEFT's file layout) --------------------------------------------

ADAPTER_WEIGHTS_NAME = "adapter_model.safetensors"
ADAPTER_CONFIG_NAME = "adapter_config.json"
_PEFT_PREFIX = "base_model.model."


def lora_state_dict(model):
    """{PEFT name: array}: 'base_model.model.transformer.h.0.attn.c_attn.lora_A.weight' is our
    A transposed to (r, in), lora_B.weight our B transposed to (out, r) (torch Linear layout)."""
    out = {}
    for name, layer in lora_layers(model):
        out[f"{_PEFT_PREFIX}{name}.lora_A.weight"] = np.ascontiguousarray(layer.lora_A.data.T)
        out[f"{_PEFT_PREFIX}{name}.lora_B.weight"] = np.ascontiguousarray(layer.lora_B.data.T)
    return out


def save_adapter(model, path, base_model=""):
    """Write adapter_model.safetensors + adapter_config.json into path (the base weights are not
    written: the adapter is a small file applied on top of them)."""
    layers = lora_layers(model)
    if not layers:
        raise ValueError("save_adapter: the model has no LoRA adapters")
    first = layers[0][1]
    cfg = getattr(model, "lora_config", None) or {
        "r": first.r, "lora_alpha": first.alpha, "lora_dropout": first.dropout,
        "target_modules": sorted({n.split(".", 3)[-1] for n, _ in layers})}
    os.makedirs(path, exist_ok=True)
    save_safetensors(os.path.join(path, ADAPTER_WEIGHTS_NAME), lora_state_dict(model),
                     metadata={"format": "pt"})
    write_json(os.path.join(path, ADAPTER_CONFIG_NAME), {
        "peft_type": "LORA", "task_type": "CAUSAL_LM", "base_model_name_or_path": base_model,
        "r": cfg["r"], "lora_alpha": cfg["lora_alpha"], "lora_dropout": cfg["lora_dropout"],
        # GPT-2's projections are Conv1D, stored (in, out): PEFT calls this fan_in_fan_out
        "target_modules": list(cfg["target_modules"]), "fan_in_fan_out": True, "bias": "none",
        "inference_mode": True})
    return path


def load_adapter(model, path):
    """Apply the adapter saved in path to model (adds LoRA layers, loads A and B). The model
    must be the base the adapter was trained on (same shapes). Returns the model."""
    cfg_path = os.path.join(path, ADAPTER_CONFIG_NAME)
    cfg = read_json(cfg_path, ADAPTER_CONFIG_NAME)
    try:
        r, alpha = int(cfg["r"]), float(cfg["lora_alpha"])
        dropout = float(cfg.get("lora_dropout", 0.0))
        targets = cfg["target_modules"]
    except (KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(f"{cfg_path}: missing or bad LoRA setting ({exc})") from None
    arrays, _ = load_safetensors(os.path.join(path, ADAPTER_WEIGHTS_NAME), mmap=False)
    apply_lora(model, r, alpha, dropout, targets)
    seen = set()
    for name, layer in lora_layers(model):
        for leaf, param in (("lora_A", layer.lora_A), ("lora_B", layer.lora_B)):
            key = f"{_PEFT_PREFIX}{name}.{leaf}.weight"
            if key not in arrays:
                raise CheckpointError(f"{path}/{ADAPTER_WEIGHTS_NAME}: tensor {key!r} is missing")
            arr = np.asarray(arrays[key]).T
            if arr.shape != param.shape:
                raise CheckpointError(f"{path}/{ADAPTER_WEIGHTS_NAME}: {key!r} has shape "
                                      f"{arr.shape[::-1]}, the model needs {param.shape[::-1]}")
            param.data = np.ascontiguousarray(arr, dtype=param.dtype)
            seen.add(key)
    extra = sorted(set(arrays) - seen)
    if extra:
        raise CheckpointError(f"{path}/{ADAPTER_WEIGHTS_NAME}: tensors that fit no LoRA layer "
                              f"of this model: {', '.join(extra[:4])}")
    return model


def lora_fraction(model):
    """Share of the model's parameters that are trainable, in percent (LoRA's headline)."""
    trainable, total = count_parameters(model)
    return 100.0 * trainable / max(total, 1)


__all__ = [
    "ExportView", "LORA_TARGETS", "add_blocks", "apply_lora", "count_parameters",
    "freeze", "freeze_blocks", "load_adapter", "lora_fraction", "lora_layers", "lora_state_dict",
    "merge_lora", "merged_state_dict", "parse_lora_targets", "resize_context", "resize_vocab",
    "save_adapter", "set_dropout", "trainable_parameters", "unfreeze",
]
