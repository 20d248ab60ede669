"""Checkpoints: safetensors + config.json in Hugging Face's GPT-2 layout, written atomically.

A checkpoint is a directory:

    config.json               Hugging Face GPT-2 config keys (n_layer, n_head, n_embd, ...)
    model.safetensors         weights, Hugging Face names ("transformer.h.0.attn.c_attn.weight")
    vocab.json, merges.txt    the tokenizer, when one is saved alongside
    trainer_state.json        training progress (step, losses, RNG state, config), for resume
    optimizer.safetensors     the optimizer's moment arrays, for resume (both: training.py)

Nothing is ever pickled: a checkpoint from a stranger is data, it cannot run code. The
safetensors format itself is safetensors.py (which knows no model); loading memory-maps the
file, so a 500 MB model costs no copy until its weights are written to.

This is the one place that turns a name into a model and its tokenizer: a model directory, a
run directory (its best/ or last/), or a hub id found in the local Hugging Face cache (hub.py).
GPT.from_pretrained and GPT.save_pretrained (model.py, a layer below) call into this module
through the two functions registered at the bottom of this file.

Every file is written to a temporary name in the same directory and renamed into place
(os.replace is atomic), so a crash or Ctrl-C mid-save leaves the previous checkpoint intact.
"""

import os

import numpy as np

from . import hub
from . import model as model_module
from .fileio import read_json as _read_json
from .fileio import require_types, write_json
from .model import GPT, GPTConfig
from .nn import skip_init
from .safetensors import SafetensorsError, load_safetensors, save_safetensors
from .tokenizer import load_tokenizer


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def read_json(path, what="file"):
    return _read_json(path, what, error=CheckpointError)


def read_tensors(path, **kwargs):
    """load_safetensors, its format errors raised as CheckpointError (same message)."""
    try:
        return load_safetensors(path, **kwargs)
    except SafetensorsError as exc:
        raise CheckpointError(str(exc)) from None


# ---------------------------------------------------------------------------------------------
# GPT-2 checkpoints


WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                "flax_model.msgpack")


def save_pretrained(model, path, tokenizer=None, dtype="fp32"):
    """Write config.json + model.safetensors (and the tokenizer, if given) into ``path``.

    The tied head is stored once, as ``transformer.wte.weight``, exactly like Hugging Face.
    Biases of a bias-free model are written as zeros so Hugging Face can still load it.
    dtype="bf16" stores every tensor as bfloat16 ("BF16", as transformers writes a bf16 model);
    weights the model keeps in bf16 (GPT.bf16_weights) are stored as BF16 either way.
    """
    if dtype not in ("fp32", "bf16"):
        raise ValueError(f"save_pretrained: dtype must be 'fp32' or 'bf16', got {dtype!r}")
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, arr in _hf_state_dict(model).items():
        tensors[name] = arr
    bf16 = {name: "BF16" for name, arr in tensors.items()
            if dtype == "bf16" or arr.dtype == np.uint16}
    save_safetensors(os.path.join(path, WEIGHTS_NAME), tensors, metadata={"format": "pt"},
                     dtypes=bf16)
    write_json(os.path.join(path, CONFIG_NAME), model.config.to_hf_dict())
    gen = {"bos_token_id": model.config.bos_token_id, "eos_token_id": model.config.eos_token_id}
    write_json(os.path.join(path, "generation_config.json"),
               {k: v for k, v in gen.items() if v is not None})
    if tokenizer is not None:
        tokenizer.save_pretrained(path)
    return path


def _hf_state_dict(model):
    """name -> array in Hugging Face's naming, zero biases filled in for bias-free models."""
    state = dict(model.state_dict())
    if not model.config.bias:
        C, H = model.config.n_embd, model.config.hidden_size
        zeros = {"ln_1.bias": C, "ln_2.bias": C, "attn.c_attn.bias": 3 * C,
                 "attn.c_proj.bias": C, "mlp.c_fc.bias": H, "mlp.c_proj.bias": C}
        for i in range(model.config.n_layer):
            for key, n in zeros.items():
                state[f"transformer.h.{i}.{key}"] = np.zeros(n, dtype=np.float32)
        state["transformer.ln_f.bias"] = np.zeros(C, dtype=np.float32)
    return state


# the types config.json keys must have (GPTConfig.from_hf_dict converts them; a float n_layer
# or a string "tinyroots" must be refused here rather than truncated or crash there)
_NUMBER = (int, float)
_CONFIG_TYPES = {
    **{k: int for k in ("n_layer", "n_head", "n_embd", "vocab_size", "n_positions", "n_ctx")},
    "n_inner": (int, type(None)), "tinyroots": dict, "model_type": str,
    "activation_function": str, "layer_norm_epsilon": _NUMBER, "initializer_range": _NUMBER,
    **{k: (*_NUMBER, type(None)) for k in ("resid_pdrop", "embd_pdrop", "attn_pdrop")},
    "bos_token_id": (int, type(None)), "eos_token_id": (int, list, type(None)),
}


def load_config(path):
    """GPTConfig from ``path``/config.json; a key of the wrong type names the file and key."""
    cfg_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{path}: no {CONFIG_NAME} -- not a model directory (expected "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}, as save_pretrained writes)")
    d = require_types(read_json(cfg_path, CONFIG_NAME), cfg_path, _CONFIG_TYPES, CheckpointError)
    require_types(d.get("tinyroots", {}), f"{cfg_path}: 'tinyroots'", {"bias": bool},
                  CheckpointError)
    try:
        return GPTConfig.from_hf_dict(d, source=cfg_path)
    except ValueError as exc:
        raise CheckpointError(str(exc)) from None


def load_weights(path):
    """All tensors of a checkpoint directory (single or sharded safetensors) -> {name: array}."""
    single = os.path.join(path, WEIGHTS_NAME)
    index = os.path.join(path, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return {name: (arr, single) for name, arr in read_tensors(single)[0].items()}
    if os.path.isfile(index):
        meta = read_json(index, WEIGHTS_INDEX_NAME)
        weight_map = meta.get("weight_map") if isinstance(meta, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        bad = next((k for k, v in weight_map.items() if not isinstance(v, str)), None)
        if bad is not None:
            raise CheckpointError(f"{index}: weight_map['{bad}'] is {weight_map[bad]!r}, "
                                  "expected the file name of a shard")
        out = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(path, os.path.basename(shard))
            for name, arr in read_tensors(shard_path)[0].items():
                out[name] = (arr, shard_path)
        missing = [n for n in weight_map if n not in out]
        if missing:
            raise CheckpointError(f"{index}: tensors listed in the index are missing from "
                                  f"their shards: {', '.join(missing[:5])}")
        return out
    for name in PICKLE_NAMES:
        if os.path.exists(os.path.join(path, name)):
            raise CheckpointError(
                f"{os.path.join(path, name)}: refusing to load a pickle-based checkpoint. "
                "Unpickling runs arbitrary code from the file, so tinyroots never does it. "
                "Convert it once, in an environment you trust, with transformers: "
                "GPT2LMHeadModel.from_pretrained(dir).save_pretrained(dir, "
                "safe_serialization=True) -- that writes model.safetensors.")
    raise CheckpointError(f"{path}: no {WEIGHTS_NAME} (or {WEIGHTS_INDEX_NAME}) found")


def _canonical(name):
    """Map the names different GPT-2 savers use onto ours.

        'h.0.attn.c_attn.weight' (GPT2Model) -> 'transformer.h.0.attn.c_attn.weight'
    """
    if name.startswith("transformer."):
        return name
    if name.startswith(("h.", "wte.", "wpe.", "ln_f.")):
        return "transformer." + name
    return name


# buffers some GPT-2 checkpoints carry that are not parameters (causal masks)
_IGNORED_SUFFIXES = (".attn.bias", ".attn.masked_bias")


def load_pretrained(path, model_class=GPT, mmap=True):
    """Build a model from a checkpoint directory (or a run directory, or a cached hub id);
    every tensor is checked by name and shape. Returned in eval mode, as transformers does:
    call .train() before training it (dropout is on only then)."""
    path = resolve_model_dir(path)
    config = load_config(path)
    weights = load_weights(path)
    with skip_init():            # every parameter is about to be replaced by the file's
        model = model_class(config)
    params = dict(model.named_parameters())
    found = _match_parameters(weights, params, config)
    for key, p in params.items():
        if key not in found:
            raise CheckpointError(f"{path}: tensor '{key}' (shape {p.shape}) is missing from "
                                  "the checkpoint")
        arr, file = found[key]
        if tuple(arr.shape) != p.shape:
            raise CheckpointError(f"{file}: tensor '{key}' has shape {tuple(arr.shape)}, the "
                                  f"config in {CONFIG_NAME} needs {p.shape}")
        if arr.dtype.kind != "f":
            raise CheckpointError(f"{file}: tensor '{key}' has dtype {arr.dtype}, expected "
                                  "floating point")
        if mmap and arr.dtype == np.float32:
            p.data = arr  # a copy-on-write view of the file: no copy until written
        else:
            p.data = np.ascontiguousarray(arr, dtype=np.float32)
    return model.eval()


def _match_parameters(weights, params, config):
    """{file's name: (array, file)} -> {parameter name: (array, file)}, dropping the buffers
    and zero biases GPT-2 files carry; a tensor that fits no parameter is an error."""
    found = {}
    for name, (arr, file) in weights.items():
        key = _canonical(name)
        if key in params:
            found[key] = (arr, file)
        elif key == "lm_head.weight" or key.endswith(_IGNORED_SUFFIXES):
            continue
        elif not config.bias and key.endswith(".bias"):
            continue  # the zeros save_pretrained writes for bias-free models
        else:
            raise CheckpointError(f"{file}: unexpected tensor '{name}' -- not a parameter of a "
                                  f"GPT-2 with this config ({config.n_layer} layers)")
    return found


# ---------------------------------------------------------------------------------------------
# names -> directories -> a model and its tokenizer


def resolve_model_dir(path, which="best", required=(CONFIG_NAME,)):
    """The directory a name stands for:

        a model directory (config.json)     -> itself
        a run directory (best/, last/)      -> its best/ (or last/ with which="last"; the other
                                               one, or a .old copy left by an interrupted save,
                                               when that is all there is)
        a hub id ('gpt2', 'owner/name')     -> its snapshot in the local Hugging Face cache
    """
    if which not in ("best", "last"):     # it is joined to the path below
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    path = os.fspath(path)
    if os.path.isdir(path):
        if all(os.path.isfile(os.path.join(path, r)) for r in required):
            return path
        order = (which, "last" if which == "best" else "best")
        for name in order:
            for candidate in (os.path.join(path, name), os.path.join(path, name + ".old")):
                if os.path.isfile(os.path.join(candidate, CONFIG_NAME)):
                    return candidate
        raise CheckpointError(f"{path}: neither a model directory ({CONFIG_NAME}) nor a run "
                              "directory with best/ or last/ checkpoints")
    if os.path.exists(path):
        raise CheckpointError(f"{path}: a file; expected a model directory (config.json + "
                              "model.safetensors) or a run directory")
    if not hub.looks_like_repo_id(path):
        raise FileNotFoundError(f"{path}: no such directory (expected a model directory with "
                                "config.json + model.safetensors, or a run directory of "
                                "python -m tinyroots.train)")
    return hub.cached_snapshot(path, required)


def load_model_and_tokenizer(path, which="best"):
    """(model in eval mode, tokenizer, directory) from a run or model directory, or a hub id."""
    path = resolve_model_dir(path, which)
    model = GPT.from_pretrained(path)
    tokenizer = load_tokenizer(path)
    if tokenizer.vocab_size > model.config.vocab_size:
        raise CheckpointError(f"{path}: the tokenizer has {tokenizer.vocab_size} tokens but the "
                              f"model only {model.config.vocab_size}")
    return model, tokenizer, path


# GPT.from_pretrained / GPT.save_pretrained are these two functions. model.py sits below this
# module and must not import it (that would be a cycle), so this module hands them over.
model_module.register_checkpoint_io(load=load_pretrained, save=save_pretrained)
