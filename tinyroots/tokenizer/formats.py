"""A tokenizer's files: GPT-2's vocab.json + merges.txt, Hugging Face's configs and tokenizer.json.

Reading gives plain data (a vocab dict, a merges list, the special tokens' names); the
Tokenizer class (tokenizer.py) checks it fits together and builds the encoder from it.

    vocab.json                 {"!": 0, ..., "Ġworld": 995, ..., "<|endoftext|>": 50256}
    merges.txt                 "#version: 0.2", then one merge per line in rank order: "Ġ w"
    tokenizer_config.json      which tokens are bos/eos/unk/pad, the added (special) tokens
    special_tokens_map.json    the same names, the older file
    tokenizer.json             Hugging Face's single file (transformers >= 5 writes only this)

OpenAI's gpt-2 repository names the first two encoder.json and vocab.bpe; both spellings load.
Tokens are strings there, not bytes: every byte is written as one printable character
(bpe.bytes_to_unicode), e.g. the space byte as "Ġ", so " world" is "Ġworld".
"""

import json
import os

from .. import hub
from ..fileio import atomic_write, read_json, require_types

VOCAB_NAME, MERGES_NAME = "vocab.json", "merges.txt"
OPENAI_NAMES = ("encoder.json", "vocab.bpe")        # the same two files, as OpenAI named them
HF_TOKENIZER_NAME = "tokenizer.json"
CONFIG_NAMES = ("special_tokens_map.json", "tokenizer_config.json")
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "pad_token")


class TokenizerFileError(ValueError):
    """A tokenizer file exists but cannot be used (bad JSON, unknown tokens, gaps in ids...)."""


def read_tokenizer_json(path, what):
    """Parse a tokenizer JSON file (duplicate keys refused); problems name the file."""
    return read_json(path, what, error=TokenizerFileError, unique_keys=True,
                     missing=FileNotFoundError)


def write_text(path, text):
    """Write text (UTF-8, newlines as given) atomically: see fileio.atomic_write."""
    with atomic_write(path, "wb") as f:
        f.write(text.encode("utf-8"))


# ---------------------------------------------------------------------------------------------
# finding the files


def hub_folder(name):
    """A name that is not a folder, e.g. 'gpt2': its snapshot in the local Hugging Face cache
    (never downloaded), or FileNotFoundError saying where the files should be."""
    if not hub.looks_like_repo_id(name):
        raise FileNotFoundError(f"tokenizer folder not found: {name}")
    return hub.cached_snapshot(name, required=(VOCAB_NAME,))


def find_files(folder):
    """-> ("gpt2", vocab path, merges path) or ("hf", tokenizer.json path, None)."""
    vocab_file = os.path.join(folder, VOCAB_NAME)
    merges_file = os.path.join(folder, MERGES_NAME)
    hf_file = os.path.join(folder, HF_TOKENIZER_NAME)
    if not os.path.exists(vocab_file) and not os.path.exists(merges_file):
        if os.path.isfile(os.path.join(folder, OPENAI_NAMES[0])):
            vocab_file, merges_file = (os.path.join(folder, n) for n in OPENAI_NAMES)
        elif os.path.isfile(hf_file):
            return "hf", hf_file, None
    for path in (vocab_file, merges_file):
        if not os.path.isfile(path):
            raise FileNotFoundError(f"{os.path.basename(path)} not found in {folder}")
    return "gpt2", vocab_file, merges_file


# ---------------------------------------------------------------------------------------------
# GPT-2's two files


def read_vocab(path):
    """vocab.json -> {token string: id}; every id must be an int."""
    vocab = read_tokenizer_json(path, "vocabulary file (vocab.json)")
    if not isinstance(vocab, dict):
        raise TokenizerFileError(f"{path}: expected a JSON object {{token: id}}, got a "
                                 f"{type(vocab).__name__}")
    for token, i in vocab.items():
        if not isinstance(i, int) or isinstance(i, bool):
            raise TokenizerFileError(f"{path}: the id of token {token!r} is {i!r}, not an int")
    return vocab


def read_merges(path):
    """merges.txt -> [(left, right), ...]; an optional "#version" first line is skipped."""
    try:
        with open(path, encoding="utf-8", newline="") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        raise FileNotFoundError(f"merges file (merges.txt) not found: {path}") from None
    except UnicodeDecodeError as exc:
        raise TokenizerFileError(f"{path}: not UTF-8 text ({exc})") from None
    merges = []
    for n, line in enumerate(lines, 1):
        line = line.rstrip("\r")
        if not line or (n == 1 and line.startswith("#version")):
            continue
        parts = line.split(" ")
        if len(parts) != 2 or not parts[0] or not parts[1]:
            raise TokenizerFileError(f"{path} line {n}: expected two tokens separated by one "
                                     f"space, got {line!r}")
        merges.append((parts[0], parts[1]))
    return merges


# ---------------------------------------------------------------------------------------------
# Hugging Face's config files: which tokens are special


def _content(value):
    """A token as the config files write it: "<s>" or {"content": "<s>", ...}."""
    return value.get("content") if isinstance(value, dict) else value


def _read_one_config(path, names, specials, added_by_id):
    """Add what one config file says to names, specials and added_by_id."""
    cfg = read_tokenizer_json(path, os.path.basename(path))
    require_types(cfg, path, {key: (str, dict, type(None)) for key in SPECIAL_NAMES},
                  error=TokenizerFileError)
    require_types(cfg, path, {"additional_special_tokens": (list, type(None)),
                              "extra_special_tokens": (list, dict, type(None)),
                              "added_tokens_decoder": (dict, type(None))},
                  error=TokenizerFileError)
    for key in SPECIAL_NAMES:
        value = _content(cfg.get(key))
        if isinstance(value, str):
            names.setdefault(key, value)
            specials.append(value)
    for key in ("additional_special_tokens", "extra_special_tokens"):
        extra = cfg.get(key) or []
        for v in (extra.values() if isinstance(extra, dict) else extra):
            if not isinstance(_content(v), str):
                raise TokenizerFileError(f"{path}: '{key}' holds {v!r}, expected token strings")
            specials.append(_content(v))
    for i, v in (cfg.get("added_tokens_decoder") or {}).items():
        if isinstance(_content(v), str):
            if not str(i).isdigit():
                raise TokenizerFileError(f"{path}: added_tokens_decoder has the id {i!r}")
            added_by_id[int(i)] = _content(v)
            specials.append(_content(v))


def read_special_config(folder):
    """Special tokens named by Hugging Face's tokenizer_config.json / special_tokens_map.json.

    Returns (special token strings, {"bos_token": ..., "eos_token": ..., ...}, {id: token} of
    added_tokens_decoder), or (None, {}, {}) when neither file exists (OpenAI's own GPT-2
    files, for instance).
    """
    names, specials, added_by_id = {}, [], {}
    paths = [os.path.join(folder, f) for f in CONFIG_NAMES]
    paths = [p for p in paths if os.path.exists(p)]
    if not paths:
        return None, {}, {}
    for path in paths:
        _read_one_config(path, names, specials, added_by_id)
    return list(dict.fromkeys(specials)), names, added_by_id


# ---------------------------------------------------------------------------------------------
# Hugging Face's tokenizer.json


def _hf_problems(data, model):
    """Why a tokenizer.json is not GPT-2's byte-level BPE ([] when it is)."""
    pre = data.get("pre_tokenizer") or {}
    problems = []
    if model.get("type") != "BPE":
        problems.append(f"the model is {model.get('type')!r}, not 'BPE'")
    if not isinstance(pre, dict) or pre.get("type") != "ByteLevel" or \
            pre.get("add_prefix_space") or pre.get("use_regex") is False:
        problems.append(f"the pre-tokenizer is {pre!r}, not ByteLevel(add_prefix_space=False)")
    if data.get("normalizer"):
        problems.append("it has a normalizer")
    for key in ("dropout", "continuing_subword_prefix", "end_of_word_suffix", "ignore_merges"):
        if model.get(key):
            problems.append(f"its model sets {key}={model[key]!r}")
    return problems


def read_hf_tokenizer_json(path):
    """Hugging Face's tokenizer.json -> (vocab, merges, {id: added token}), if it is GPT-2's
    kind of tokenizer: a BPE model behind the byte-level pre-tokenizer, nothing else."""
    data = read_tokenizer_json(path, HF_TOKENIZER_NAME)
    model = data.get("model") if isinstance(data, dict) else None
    if not isinstance(model, dict):
        if isinstance(data, dict) and data.get("type") == "char":
            raise TokenizerFileError(f"{path} holds a CharTokenizer; use CharTokenizer."
                                     "from_pretrained or load_tokenizer")
        raise TokenizerFileError(f"{path}: no \"model\" in it; not a Hugging Face tokenizer")
    problems = _hf_problems(data, model)
    if problems:
        raise TokenizerFileError(f"{path} is not a GPT-2 style byte-level BPE tokenizer: "
                                 + "; ".join(problems))
    vocab, merges = model.get("vocab"), model.get("merges")
    if not isinstance(vocab, dict) or not isinstance(merges, list):
        raise TokenizerFileError(f"{path}: model.vocab must be an object and model.merges a list")
    added = {}
    for t in data.get("added_tokens") or []:
        if not (isinstance(t, dict) and isinstance(t.get("id"), int)
                and isinstance(t.get("content"), str)):
            raise TokenizerFileError(f"{path}: bad entry in added_tokens: {t!r}")
        added[t["id"]] = t["content"]
    return dict(vocab), merges, added


# ---------------------------------------------------------------------------------------------
# writing


def gpt2_files(tokens, merges, special, names):
    """{file name: text} of a byte-level BPE tokenizer in GPT-2's format plus Hugging Face's
    configs, which tell transformers which tokens are special and which is eos/bos/unk/pad.

    tokens: id -> vocab.json spelling; merges: [(left, right)] in rank order; special:
    {token: id}; names: {"bos_token": ..., "eos_token": ..., "unk_token": ..., "pad_token": ...}.
    """
    extra = [s for s in special if s not in names.values()]
    special_map = {k: v for k, v in names.items() if v is not None}
    if extra:
        special_map["additional_special_tokens"] = extra
    config = {
        "tokenizer_class": "GPT2Tokenizer",
        "add_prefix_space": False,
        "add_bos_token": False,
        "clean_up_tokenization_spaces": False,
        "errors": "replace",
        **names,
        "additional_special_tokens": extra,
        "added_tokens_decoder": {
            str(i): {"content": s, "lstrip": False, "normalized": False, "rstrip": False,
                     "single_word": False, "special": True}
            for s, i in special.items()},
    }
    return {
        VOCAB_NAME: json.dumps({t: i for i, t in enumerate(tokens)}, ensure_ascii=False) + "\n",
        MERGES_NAME: "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges),
        "special_tokens_map.json": json.dumps(special_map, indent=2, ensure_ascii=False) + "\n",
        "tokenizer_config.json": json.dumps(config, indent=2, ensure_ascii=False) + "\n",
    }


def write_files(folder, files):
    """Write {file name: text} into folder, each file atomically; returns the paths."""
    folder = os.fspath(folder)
    os.makedirs(folder, exist_ok=True)
    paths = []
    for name, text in files.items():
        path = os.path.join(folder, name)
        write_text(path, text)
        paths.append(path)
    return paths
