"""Task data: reading and checking JSONL, the prompt templates, and text augmentation.

Each task reads one JSON object per line:

    classify    {"text": "where is my parcel?", "label": "track_order"}
    chat        {"messages": [{"role": "user", "content": "Hi"},
                              {"role": "assistant", "content": "Hello! How can I help?"}]}
                or {"prompt": "Hi", "response": "Hello! How can I help?"} (optional "system")
    translate   {"source": "the cat sleeps", "target": "le chat dort"}
    lm          {"text": "..."} per line, or any other file read as plain text

A bad line (invalid JSON, not an object, a missing field, a wrong type, empty text) is reported
with its file and line number: by default it stops the run (``DataError``); with
``bad_lines="skip"`` it is left out and listed in the log and in eval.json. Blank lines are
ignored.

Templates (the special tokens are added to the tokenizer, and the model's embeddings resized):

    chat        <|system|>Be brief.<|end|><|user|>Hi<|end|><|assistant|>Hello!<|end|>
    translate   <|source|>the cat sleeps<|target|>le chat dort<|endoftext|>

Only what the model must learn to produce carries a label (the assistant's words and the
<|end|> after them; the translation and its <|endoftext|>); every other position has label
-100, so the loss -- and its gradient -- ignores it.
"""

import os
from collections import Counter

import numpy as np

from ..data.pii import redact_pii
from ..fileio import parse_json
from ..tokenizer import ENDOFTEXT

IGNORE = -100

SYSTEM, USER, ASSISTANT, END = "<|system|>", "<|user|>", "<|assistant|>", "<|end|>"
CHAT_TOKENS = (SYSTEM, USER, ASSISTANT, END)
ROLE_TOKENS = {"system": SYSTEM, "user": USER, "assistant": ASSISTANT}
SOURCE, TARGET = "<|source|>", "<|target|>"
TRANSLATE_TOKENS = (SOURCE, TARGET, ENDOFTEXT)

TASKS = ("classify", "chat", "translate", "lm")


class DataError(ValueError):
    """A data file or one of its lines is not what the task expects."""


# ---------------------------------------------------------------------------------------------
# reading and checking


def _nonempty_str(d, key):
    """None if d[key] is a non-empty string, else what is wrong with it."""
    if key not in d:
        return f"missing field '{key}'"
    v = d[key]
    if not isinstance(v, str):
        return f"field '{key}' must be a string, got {type(v).__name__}"
    if not v.strip():
        return f"field '{key}' is empty"
    return None


def check_classify(d):
    problem = _nonempty_str(d, "text")
    if problem:
        return problem, None
    if "label" not in d:
        return "missing field 'label'", None
    label = d["label"]
    if isinstance(label, bool) or not isinstance(label, (str, int)):
        return f"field 'label' must be a string or an integer, got {type(label).__name__}", None
    if isinstance(label, str) and not label.strip():
        return "field 'label' is empty", None
    return None, {"text": d["text"], "label": label}


def with_intent(d, example):
    """A dialogue may name its intent ("intent": "track_order"); a held-out test file's intents
    let the chat task check that each greedy reply is that intent's answer (sft.py)."""
    if isinstance(d.get("intent"), str) and d["intent"].strip():
        example["intent"] = d["intent"]
    return example


def check_chat(d):
    if "messages" in d:
        msgs = d["messages"]
        if not isinstance(msgs, list) or not msgs:
            return "field 'messages' must be a non-empty list", None
        out = []
        for i, m in enumerate(msgs):
            if not isinstance(m, dict):
                return f"messages[{i}] must be an object, got {type(m).__name__}", None
            role = m.get("role")
            if role not in ROLE_TOKENS:
                return (f"messages[{i}].role must be one of user, assistant, system, "
                        f"got {role!r}"), None
            problem = _nonempty_str(m, "content")
            if problem:
                return f"messages[{i}]: {problem}", None
            out.append({"role": role, "content": m["content"]})
        if not any(m["role"] == "assistant" for m in out):
            return "no assistant message: nothing to learn from", None
        return None, with_intent(d, {"messages": out})
    if "prompt" in d or "response" in d:
        for key in ("prompt", "response"):
            problem = _nonempty_str(d, key)
            if problem:
                return problem, None
        msgs = [{"role": "user", "content": d["prompt"]},
                {"role": "assistant", "content": d["response"]}]
        if "system" in d:
            problem = _nonempty_str(d, "system")
            if problem:
                return problem, None
            msgs.insert(0, {"role": "system", "content": d["system"]})
        return None, with_intent(d, {"messages": msgs})
    return "expected 'messages' (a list) or 'prompt' and 'response'", None


def check_translate(d):
    for key in ("source", "target"):
        problem = _nonempty_str(d, key)
        if problem:
            return problem, None
    return None, {"source": d["source"], "target": d["target"]}


def check_lm(d):
    problem = _nonempty_str(d, "text")
    return (problem, None) if problem else (None, {"text": d["text"]})


CHECKS = {"classify": check_classify, "chat": check_chat, "translate": check_translate,
          "lm": check_lm}


# the text fields of an example, per task, that PII redaction rewrites (chat: every message)
TEXT_FIELDS = {"classify": ("text",), "translate": ("source", "target"), "lm": ("text",)}


def redact_examples(examples, task):
    """Replace e-mail addresses, IP addresses, phone numbers and keys in the examples' text by
    <EMAIL>, <IP_ADDRESS>, <PHONE>, <KEY> (the corpus cleaner's rules, tinyroots.data.pii), in
    place; returns {tag: count}. Customer-service logs are where such details sit, and a model
    fine-tuned on them can repeat them word for word."""
    counts = Counter()
    for ex in examples:
        fields = ex["messages"] if task == "chat" else [ex]
        keys = ("content",) if task == "chat" else TEXT_FIELDS[task]
        for record in fields:
            for key in keys:
                record[key], found = redact_pii(record[key])
                counts.update(found)
    return dict(counts)


def read_examples(path, task, bad_lines="error", log=print, redact_pii=False):
    """-> (examples, skipped): the checked examples of a data file, each with its "line" number,
    and [(line, problem)] of the lines left out (bad_lines="skip"); with bad_lines="error" the
    first bad line raises DataError("FILE line N: problem").

    For the lm task a file that does not end in .jsonl is plain text: one example.
    redact_pii: rewrite personal details in the text first (redact_examples), and log how many.
    """
    examples, skipped = _read_examples(path, task, bad_lines, log)
    if redact_pii:
        counts = redact_examples(examples, task)
        found = ", ".join(f"{n} {tag}" for tag, n in sorted(counts.items())) or "nothing"
        log(f"{path}: PII redaction replaced {found}")
    return examples, skipped


def _read_examples(path, task, bad_lines, log):
    if task not in CHECKS:
        raise DataError(f"unknown task {task!r}; expected one of {', '.join(TASKS)}")
    if bad_lines not in ("error", "skip"):
        raise DataError(f"bad_lines must be 'error' or 'skip', got {bad_lines!r}")
    if not path:
        raise DataError(f"{task}: no data file given")
    if not os.path.isfile(path):
        raise DataError(f"{path}: data file not found")
    if task == "lm" and not path.endswith(".jsonl"):
        with open(path, encoding="utf-8", errors="replace") as f:
            text = f.read()
        if not text.strip():
            raise DataError(f"{path}: the file is empty")
        return [{"text": text, "line": 1}], []
    check = CHECKS[task]
    examples, skipped = [], []
    with open(path, encoding="utf-8", errors="replace") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = parse_json(line, "line", error=DataError)
            except DataError as exc:
                problem = str(exc).removeprefix("line: ").replace("not valid", "invalid", 1)
            else:
                if isinstance(d, dict):
                    problem, example = check(d)
                else:
                    problem = f"expected a JSON object, got {type(d).__name__}"
            if problem:
                if bad_lines == "error":
                    raise DataError(f"{path} line {n}: {problem} (use --bad-lines skip to "
                                    "leave such lines out)")
                skipped.append((n, problem))
                continue
            example["line"] = n
            examples.append(example)
    if skipped:
        shown = "; ".join(f"line {n}: {p}" for n, p in skipped[:5])
        more = f" and {len(skipped) - 5} more" if len(skipped) > 5 else ""
        log(f"{path}: skipped {len(skipped)} bad line(s) -- {shown}{more}")
    if not examples:
        raise DataError(f"{path}: no usable {task} examples")
    return examples, skipped


# ---------------------------------------------------------------------------------------------
# templates


def require_tokens(tokenizer, tokens, what):
    """[id of each token], or a clear error if the tokenizer lacks one."""
    ids = []
    for t in tokens:
        i = tokenizer.special_tokens.get(t)
        if i is None:
            raise ValueError(f"this tokenizer has no {t} token, so it was not fine-tuned for "
                             f"{what} (run python -m tinyroots.finetune {what} ... first)")
        ids.append(i)
    return ids


def encode_text(tokenizer, text):
    """User text -> ids. Special-token spellings inside the text stay plain text: a user who
    types '<|end|>' must not be able to end the assistant's turn."""
    return tokenizer.encode(text, allowed_special="none")


def chat_ids(tokenizer, messages, add_generation_prompt=False):
    """Messages -> (ids, labels): labels are the ids on the assistant's content and the <|end|>
    closing it, -100 elsewhere. add_generation_prompt appends <|assistant|> for the reply.

        [user "Hi", assistant "Yo"] -> ids    <|user|> Hi <|end|> <|assistant|> Yo <|end|>
                                       labels  -100   -100 -100      -100      Yo <|end|>
    """
    sys_id, user_id, asst_id, end_id = require_tokens(tokenizer, CHAT_TOKENS, "chat")
    role_id = {"system": sys_id, "user": user_id, "assistant": asst_id}
    ids, labels = [], []
    for m in messages:
        content = encode_text(tokenizer, m["content"])
        ids += [role_id[m["role"]]] + content + [end_id]
        if m["role"] == "assistant":
            labels += [IGNORE] + content + [end_id]
        else:
            labels += [IGNORE] * (len(content) + 2)
    if add_generation_prompt:
        ids.append(asst_id)
        labels.append(IGNORE)
    return ids, labels


def translation_ids(tokenizer, source, target=None):
    """(ids, labels) for <|source|>SOURCE<|target|>TARGET<|endoftext|>, labels on TARGET and
    <|endoftext|>; with target None, the prompt alone (ending in <|target|>)."""
    src_id, tgt_id, eot = require_tokens(tokenizer, TRANSLATE_TOKENS, "translate")
    prompt = [src_id] + encode_text(tokenizer, source) + [tgt_id]
    if target is None:
        return prompt, [IGNORE] * len(prompt)
    out = encode_text(tokenizer, target) + [eot]
    return prompt + out, [IGNORE] * len(prompt) + out


def translation_prompt(tokenizer, text):
    """The ids a translate-tuned model continues with the translation of ``text``:
    <|source|>text<|target|>. (python -m tinyroots.generate --task translate calls this.)"""
    return translation_ids(tokenizer, text.strip())[0]


# ---------------------------------------------------------------------------------------------
# augmentation


class Augmenter:
    """Noise on the *input* side of an example, to fight overfitting on a small data set.

    token_dropout  each eligible token is deleted with this probability
    token_mask     each eligible token is replaced by ``mask_id`` with this probability
    span_deletion  with this probability, one random span of 1..span_max eligible tokens in a
                   row is deleted

    Eligible tokens are those without a label (labels == -100: the prompt of a chat or a
    translation), or all of them when there are no labels (classification), except the ids in
    ``protect`` (the template's special tokens). A token that must be produced is never
    touched, and an example never loses all its tokens. Counts of what
    was done go into ``stats`` (and from there into metrics.jsonl).

        ids [5, 6, 7, 8], span deleted at 1..2 -> [5, 8]
    """

    def __init__(self, token_dropout=0.0, token_mask=0.0, span_deletion=0.0, span_max=3,
                 mask_id=0, protect=(), seed=0):
        for name, p in (("token_dropout", token_dropout), ("token_mask", token_mask),
                        ("span_deletion", span_deletion)):
            if not 0.0 <= p < 1.0:
                raise ValueError(f"augmentation: {name} must be in [0, 1), got {p}")
        self.token_dropout, self.token_mask = float(token_dropout), float(token_mask)
        self.span_deletion, self.span_max = float(span_deletion), int(span_max)
        self.mask_id = int(mask_id)
        self.protect = frozenset(int(i) for i in protect)
        self.rng = np.random.default_rng(seed)
        self.stats = Counter()

    @property
    def active(self):
        return bool(self.token_dropout or self.token_mask or self.span_deletion)

    def __call__(self, ids, labels=None):
        """-> (ids, labels), new lists (labels None stays None)."""
        if not self.active:
            return list(ids), (None if labels is None else list(labels))
        ids = list(ids)
        labels = None if labels is None else list(labels)
        eligible = np.array([t not in self.protect and (labels is None or labels[i] == IGNORE)
                             for i, t in enumerate(ids)], dtype=bool)
        self.stats["tokens"] += int(eligible.sum())
        keep = np.ones(len(ids), dtype=bool)
        rng = self.rng
        if self.span_deletion and rng.random() < self.span_deletion:
            pos = np.flatnonzero(eligible)
            if len(pos) > 1:
                length = int(rng.integers(1, min(self.span_max, len(pos) - 1) + 1))
                start = int(rng.integers(0, len(pos) - length + 1))
                span = pos[start:start + length]
                # a span is consecutive eligible tokens only: stop at the first gap
                span = span[:np.argmax(np.diff(np.append(span, -1)) != 1) + 1]
                keep[span] = False
                self.stats["spans_deleted"] += 1
                self.stats["span_tokens_deleted"] += len(span)
        if self.token_dropout:
            drop = eligible & keep & (rng.random(len(ids)) < self.token_dropout)
            keep &= ~drop
            self.stats["tokens_dropped"] += int(drop.sum())
        if self.token_mask:
            mask = eligible & keep & (rng.random(len(ids)) < self.token_mask)
            for i in np.flatnonzero(mask):
                ids[i] = self.mask_id
            self.stats["tokens_masked"] += int(mask.sum())
        if not keep.any():
            keep[0] = True
        ids = [t for t, k in zip(ids, keep) if k]
        if labels is not None:
            labels = [t for t, k in zip(labels, keep) if k]
        return ids, labels

    def take_stats(self):
        """The counts since the last call, as {"aug_<name>": n}; resets them."""
        out = {f"aug_{k}": int(v) for k, v in sorted(self.stats.items())}
        self.stats = Counter()
        return out


# ---------------------------------------------------------------------------------------------
# batching


def pad_batch(seqs, pad_id, label_seqs=None):
    """Right-pad lists of ids into an int64 (B, T) array, T the longest; labels padded with
    -100. Returns (ids, lengths) or (ids, labels, lengths).

    Right padding is safe in a causal model: position t never sees positions after it, so the
    pad tokens change nothing before them.
    """
    lengths = np.array([len(s) for s in seqs], dtype=np.int64)
    T = int(lengths.max())
    ids = np.full((len(seqs), T), pad_id, dtype=np.int64)
    for i, s in enumerate(seqs):
        ids[i, :len(s)] = s
    if label_seqs is None:
        return ids, lengths
    labels = np.full((len(seqs), T), IGNORE, dtype=np.int64)
    for i, s in enumerate(label_seqs):
        labels[i, :len(s)] = s
    return ids, labels, lengths


class EpochSampler:
    """Indices in a fresh random order each epoch, batch_size at a time."""

    def __init__(self, n, batch_size, seed):
        self.n, self.batch_size = n, min(batch_size, n)
        self.rng = np.random.default_rng(seed)
        self.order, self.pos, self.epoch = self.rng.permutation(n), 0, 0

    def next(self):
        if self.pos + self.batch_size > self.n:
            self.order, self.pos = self.rng.permutation(self.n), 0
            self.epoch += 1
        idx = self.order[self.pos:self.pos + self.batch_size]
        self.pos += self.batch_size
        return idx
