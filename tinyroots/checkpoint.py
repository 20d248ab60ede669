"""Checkpoints: safetensors + config.json in Hugging Face's GPT-2 layout, written atomically.

A checkpoint is a directory:

    config.json               Hugging Face GPT-2 config keys (n_layer, n_head, n_embd, ...)
    model.safetensors         weights, Hugging Face names ("transformer.h.0.attn.c_attn.weight")
    vocab.json, merges.txt    the tokenizer, when one is saved alongside
    trainer_state.json        training progress (step, losses, RNG state, config), for resume
    optimizer.safetensors     the optimizer's moment arrays, for resume

Nothing is ever pickled: a checkpoint from a stranger is data, it cannot run code. safetensors is
a tiny format -- 8 bytes of header length, a JSON header, then raw little-endian arrays -- so
this module reads and writes it itself; loading memory-maps the file, so a 500 MB model costs
no copy until its weights are written to.

Every file is written to a temporary name in the same directory and renamed into place
(os.replace is atomic), so a crash or Ctrl-C mid-save leaves the previous checkpoint intact.
"""

import json
import os
import struct

import numpy as np

from .fileio import atomic_write, write_json  # noqa: F401  (re-exported)
from .fileio import read_json as _read_json
from .model import GPT, GPTConfig
from .nn import skip_init

SAFETENSORS_DTYPES = {
    "F64": np.dtype("<f8"), "F32": np.dtype("<f4"), "F16": np.dtype("<f2"),
    "BF16": np.dtype("<u2"),  # bfloat16: the upper half of a float32, widened on load
    "I64": np.dtype("<i8"), "I32": np.dtype("<i4"), "I16": np.dtype("<i2"),
    "I8": np.dtype("i1"), "U64": np.dtype("<u8"), "U32": np.dtype("<u4"),
    "U16": np.dtype("<u2"), "U8": np.dtype("u1"), "BOOL": np.dtype("?"),
}
_NAME_OF_DTYPE = {np.dtype(v).str: k for k, v in SAFETENSORS_DTYPES.items() if k != "BF16"}
MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(ValueError):
    """A checkpoint file is missing, corrupt, or does not fit the model."""


def read_json(path, what="file"):
    return _read_json(path, what, error=CheckpointError)


# ---------------------------------------------------------------------------------------------
# safetensors


def save_safetensors(path, tensors, metadata=None):
    """Write {name: array} as a safetensors file, atomically. Arrays are written in order."""
    header, offset, arrays = {}, 0, []
    for name, arr in tensors.items():
        a = np.ascontiguousarray(arr)
        if a.dtype.byteorder == ">":
            a = a.astype(a.dtype.newbyteorder("<"))
        key = _NAME_OF_DTYPE.get(a.dtype.str)
        if key is None:
            raise TypeError(f"save_safetensors: tensor '{name}' has unsupported dtype {a.dtype}")
        header[name] = {"dtype": key, "shape": list(a.shape),
                        "data_offsets": [offset, offset + a.nbytes]}
        offset += a.nbytes
        arrays.append(a)
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blob = json.dumps(header, separators=(",", ":")).encode("utf-8")
    blob += b" " * (-len(blob) % 8)  # pad so the data starts 8-byte aligned
    with atomic_write(path) as f:
        f.write(struct.pack("<Q", len(blob)))
        f.write(blob)
        for a in arrays:
            f.write(memoryview(a.reshape(-1)).cast("B") if a.size else b"")


def load_safetensors(path, mmap=True, writeable=True):
    """Read a safetensors file -> (dict name -> np.ndarray, metadata dict).

    With mmap=True the arrays are views of a copy-on-write memory map: nothing is read until
    used, and writing to an array (training) copies only the pages written, never the file.
    Every header entry is checked against the file, so a truncated or corrupt file raises a
    CheckpointError naming the file and the tensor instead of returning garbage.
    """
    try:
        size = os.path.getsize(path)
    except OSError:
        raise CheckpointError(f"{path}: file not found") from None
    with open(path, "rb") as f:
        if size < 8:
            raise CheckpointError(f"{path}: too short to be a safetensors file ({size} bytes)")
        (n,) = struct.unpack("<Q", f.read(8))
        if n > min(size - 8, MAX_HEADER):
            raise CheckpointError(f"{path}: header length {n} does not fit the file "
                                  f"({size} bytes) -- truncated or not a safetensors file")
        try:
            header = json.loads(f.read(n).decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise CheckpointError(f"{path}: corrupt safetensors header ({exc})") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: corrupt safetensors header (not a JSON object)")
    metadata = header.pop("__metadata__", None) or {}
    start, data_size = 8 + n, size - 8 - n
    if mmap and size > 0:
        buf = np.memmap(path, dtype=np.uint8, mode="c" if writeable else "r")
    else:
        with open(path, "rb") as f:
            buf = np.frombuffer(f.read(), dtype=np.uint8)
    out, covered = {}, 0
    for name, info in header.items():
        try:
            dtype = SAFETENSORS_DTYPES[info["dtype"]]
            shape = tuple(int(d) for d in info["shape"])
            begin, end = (int(o) for o in info["data_offsets"])
        except (KeyError, TypeError, ValueError):
            raise CheckpointError(f"{path}: tensor '{name}' has a malformed header entry "
                                  f"{info!r}") from None
        count = int(np.prod(shape)) if shape else 1
        if min(shape, default=0) < 0 or not 0 <= begin <= end <= data_size \
                or end - begin != count * dtype.itemsize:
            raise CheckpointError(f"{path}: tensor '{name}' (shape {shape}, {info['dtype']}) "
                                  f"points at bytes {begin}..{end} of a {data_size}-byte data "
                                  "section -- the file is truncated or corrupt")
        arr = buf[start + begin:start + end].view(dtype).reshape(shape)
        if info["dtype"] == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        out[name] = np.asarray(arr)  # a plain ndarray view; it keeps the map alive
        covered += end - begin
    if covered > data_size:
        raise CheckpointError(f"{path}: tensors overlap in the data section -- corrupt file")
    return out, metadata


# ---------------------------------------------------------------------------------------------
# GPT-2 checkpoints


WEIGHTS_NAME = "model.safetensors"
WEIGHTS_INDEX_NAME = "model.safetensors.index.json"
CONFIG_NAME = "config.json"
PICKLE_NAMES = ("pytorch_model.bin", "pytorch_model.bin.index.json", "tf_model.h5",
                "flax_model.msgpack")


def save_pretrained(model, path, tokenizer=None):
    """Write config.json + model.safetensors (and the tokenizer, if given) into ``path``.

    The tied head is stored once, as ``transformer.wte.weight``, exactly like Hugging Face.
    Biases of a bias-free model are written as zeros so Hugging Face can still load it.
    """
    os.makedirs(path, exist_ok=True)
    tensors = {}
    for name, arr in _hf_state_dict(model).items():
        tensors[name] = arr
    save_safetensors(os.path.join(path, WEIGHTS_NAME), tensors, metadata={"format": "pt"})
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


def load_config(path):
    """GPTConfig from ``path``/config.json."""
    cfg_path = os.path.join(path, CONFIG_NAME)
    if not os.path.isfile(cfg_path):
        raise CheckpointError(f"{path}: no {CONFIG_NAME} -- not a model directory (expected "
                              f"{CONFIG_NAME} and {WEIGHTS_NAME}, as save_pretrained writes)")
    return GPTConfig.from_hf_dict(read_json(cfg_path, CONFIG_NAME), source=cfg_path)


def load_weights(path):
    """All tensors of a checkpoint directory (single or sharded safetensors) -> {name: array}."""
    single = os.path.join(path, WEIGHTS_NAME)
    index = os.path.join(path, WEIGHTS_INDEX_NAME)
    if os.path.isfile(single):
        return {name: (arr, single) for name, arr in load_safetensors(single)[0].items()}
    if os.path.isfile(index):
        meta = read_json(index, WEIGHTS_INDEX_NAME)
        weight_map = meta.get("weight_map") if isinstance(meta, dict) else None
        if not isinstance(weight_map, dict):
            raise CheckpointError(f"{index}: no 'weight_map' object")
        out = {}
        for shard in sorted(set(weight_map.values())):
            shard_path = os.path.join(path, os.path.basename(shard))
            for name, arr in load_safetensors(shard_path)[0].items():
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
    """Build a model from a checkpoint directory; every tensor is checked by name and shape."""
    path = os.fspath(path)
    if not os.path.isdir(path):
        from .hub import resolve_model_dir  # a hub name such as 'gpt2', from the local cache
        path = resolve_model_dir(path)
    config = load_config(path)
    weights = load_weights(path)
    with skip_init():            # every parameter is about to be replaced by the file's
        model = model_class(config)
    params = dict(model.named_parameters())
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
    return model


# ---------------------------------------------------------------------------------------------
# training state, for resume


TRAINER_STATE_NAME = "trainer_state.json"
OPTIMIZER_NAME = "optimizer.safetensors"


def save_training_state(path, optimizer, state):
    """Write the optimizer's arrays and a JSON dict of everything else (step, RNG, config...)."""
    arrays, meta = optimizer.state_dict()
    save_safetensors(os.path.join(path, OPTIMIZER_NAME), arrays, metadata={"format": "np"})
    write_json(os.path.join(path, TRAINER_STATE_NAME), dict(state, optimizer=meta))


def load_training_state(path, optimizer):
    """Restore the optimizer in place and return the JSON state dict saved with it."""
    state = read_json(os.path.join(path, TRAINER_STATE_NAME), TRAINER_STATE_NAME)
    arrays, _ = load_safetensors(os.path.join(path, OPTIMIZER_NAME), mmap=False)
    try:
        optimizer.load_state_dict(arrays, state["optimizer"])
    except (KeyError, ValueError) as exc:
        raise CheckpointError(f"{os.path.join(path, OPTIMIZER_NAME)}: {exc}") from None
    return state
