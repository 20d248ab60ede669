"""Text classification: a linear head on the GPT's final hidden state.

    hidden = gpt.hidden_states(ids)                 (B, T, C), after the final LayerNorm
    pooled = hidden[b, length_b - 1]                "last": the last real token, which (causal
                                                    attention) is the only one that saw all text
           | mean of hidden[b, :length_b]           "mean": the average over the real tokens
    logits = pooled @ score.weight^T                (B, K), score.weight (K, C), no bias
    loss   = cross_entropy(logits, label ids)

Labels are discovered from the training data (sorted, so the order is reproducible) and
metrics are accuracy and macro-F1 (tinyroots.evaluate).

The checkpoint is Hugging Face's GPT2ForSequenceClassification layout:

    config.json        GPT-2 keys + architectures ["GPT2ForSequenceClassification"], id2label,
                       label2id, pad_token_id, and tinyroots.pooling
    model.safetensors  the body ("transformer.h.0.attn.c_attn.weight", ...; LoRA merged in)
                       and the head "score.weight" (K, C)
    labels.json        {"labels": [...], "pooling": "last", "pad_token_id": N}
    vocab.json, merges.txt, ...   the tokenizer

With pooling "last" transformers' GPT2ForSequenceClassification.from_pretrained(dir) computes
the same logits (it, too, reads the last token that is not padding).
"""

import os

import numpy as np

from .. import checkpoint as ck
from .. import ops
from ..metrics import accuracy, f1_per_class, macro_f1
from ..fileio import write_json
from ..model import GPT, ModelOutput
from .modify import ExportView
from ..nn import Module, Parameter, normal
from ..tensor import no_grad
from ..tokenizer import load_tokenizer
from .data import DataError, encode_text, pad_batch
from .task import Task, chunks

LABELS_NAME = "labels.json"


class ScoreHead(Module):
    """weight (K, C): one row per class, Hugging Face's ``score`` (a bias-free Linear)."""

    def __init__(self, num_labels, n_embd, std=0.02):
        super().__init__()
        self.weight = Parameter(normal((num_labels, n_embd), std))

    def forward(self, x):
        return ops.linear_transposed(x, self.weight)                      # (B, K)


class GPTClassifier(Module):
    """A GPT body plus a classification head; parameter names are Hugging Face's
    GPT2ForSequenceClassification ones (``transformer.*`` and ``score.weight``).

        clf = GPTClassifier(gpt, num_labels=4, pooling="last")
        out = clf(ids, lengths, labels=y)        # out.loss, out.logits (B, K)
    """

    def __init__(self, gpt, num_labels, pooling="last"):
        super().__init__()
        if pooling not in ("last", "mean"):
            raise ValueError(f"GPTClassifier: pooling must be 'last' or 'mean', got {pooling!r}")
        if num_labels < 2:
            raise ValueError(f"GPTClassifier: need at least 2 labels, got {num_labels}")
        # the GPT is kept for its hidden_states(); only its ``transformer`` is registered as a
        # child, so names read transformer.*, not gpt.transformer.*
        object.__setattr__(self, "gpt", gpt)
        self.config = gpt.config
        self.transformer = gpt.transformer
        self.score = ScoreHead(num_labels, gpt.config.n_embd, gpt.config.initializer_range)
        self.pooling = pooling

    @property
    def num_labels(self):
        return self.score.weight.shape[0]

    def forward(self, ids, lengths=None, labels=None):
        ids = self.gpt.check_ids(ids)
        B, T = ids.shape
        lengths = np.full(B, T, dtype=np.int64) if lengths is None else np.asarray(lengths)
        if lengths.shape != (B,) or lengths.min() < 1 or lengths.max() > T:
            raise ValueError(f"GPTClassifier: lengths must be (B,) = ({B},) values in 1..{T}")
        h = self.gpt.hidden_states(ids)                                    # (B, T, C)
        if self.pooling == "last":
            pooled = h[np.arange(B), lengths - 1]                          # (B, C)
        else:
            mask = (np.arange(T)[None, :] < lengths[:, None]).astype(h.dtype)[:, :, None]
            pooled = ops.sum(h * mask, axis=1) * (1.0 / lengths[:, None].astype(h.dtype))
        logits = self.score(pooled)                                        # (B, K)
        loss = None
        if labels is not None:
            loss = ops.cross_entropy(logits, np.asarray(labels, dtype=np.int64))
        return ModelOutput(loss=loss, logits=logits)


# ---------------------------------------------------------------------------------------------
# the task


class ClassifyTask(Task):
    name = "classify"

    def build(self, gpt, train_examples, val_examples):
        labels = sorted({ex["label"] for ex in train_examples}, key=lambda v: (str(type(v)), v))
        if len(labels) < 2:
            raise DataError(f"{self.cfg.train}: only one label ({labels[0]!r}) in the training "
                            "data; classification needs at least two")
        self.labels = labels
        index = {lab: i for i, lab in enumerate(labels)}
        for ex in val_examples:
            if ex["label"] not in index:
                raise DataError(f"{self.cfg.val} line {ex['line']}: label {ex['label']!r} does "
                                "not occur in the training data")
        limit = self.max_length(gpt)

        def encode(ex):
            ids = encode_text(self.tokenizer, ex["text"])
            if not ids:
                raise ValueError("the text encodes to no tokens")
            return ids, index[ex["label"]]

        self.encode_one, self.label_index = encode, index
        self.train_items = self.encode_all(train_examples, encode, limit, self.cfg.train)
        self.val_items = self.encode_all(val_examples, encode, limit, self.cfg.val)
        self.limit = limit
        if self.n_cut:
            self.log(f"classify: {self.n_cut} text(s) longer than {limit} tokens keep only "
                     f"their first {limit} ({self.tokens_cut:,} tokens cut)")
        self.train_sampler = self.sampler(len(self.train_items))
        counts = np.bincount([y for _, y in self.train_items], minlength=len(labels))
        self.log(f"classify: {len(labels)} labels from {self.cfg.train} "
                 + ", ".join(f"{lab}: {c}" for lab, c in zip(labels, counts))
                 + f"; {len(self.train_items)} train / {len(self.val_items)} val examples, pooling "
                 f"{self.cfg.pooling}")
        return GPTClassifier(gpt, len(labels), self.cfg.pooling)

    def _batch(self, items, augment):
        seqs, ys = [], []
        for ids, y in items:
            if augment:
                ids, _ = self.augment(ids)
            seqs.append(ids[:self.limit])
            ys.append(y)
        ids, lengths = pad_batch(seqs, self.pad_id)
        return ids, lengths, np.asarray(ys, dtype=np.int64)

    def next_batch(self):
        idx = self.train_sampler.next()
        return self._batch([self.train_items[i] for i in idx], augment=True)

    def loss(self, module, batch):
        ids, lengths, y = batch
        return module(ids, lengths, labels=y).loss

    def predict_ids(self, module, items, batch_size=64):
        """-> (predicted class ids, summed loss) over items [(ids, y)], without gradients."""
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))  # less padding
        preds = np.zeros(len(items), dtype=np.int64)
        total = 0.0
        was_training = module.training
        module.eval()
        with no_grad():
            for idx in chunks(order, batch_size):
                ids, lengths, y = self._batch([items[i] for i in idx], augment=False)
                out = module(ids, lengths, labels=y)
                preds[idx] = out.logits.data.argmax(axis=-1)
                total += float(out.loss) * len(idx)
        module.train(was_training)
        return preds, total

    def evaluate(self, module, final=False):
        items = self.val_items if final else self.val_subset(self.val_items)
        preds, total = self.predict_ids(module, items)
        y = [t for _, t in items]
        metrics = {"val_loss": total / len(items), "accuracy": accuracy(y, preds.tolist()),
                   "f1": macro_f1(y, preds.tolist(), labels=list(range(len(self.labels))))}
        if final:
            per_class = f1_per_class(y, preds.tolist(), labels=list(range(len(self.labels))))
            metrics["per_class_f1"] = {str(self.labels[k]): round(v[2], 4)
                                       for k, v in per_class.items()}
            metrics["n_val"] = len(items)
        return metrics

    def evaluate_test(self, module, examples, what):
        """A held-out test file (--test), scored like the validation set: accuracy, f1, loss."""
        for ex in examples:
            if ex["label"] not in self.label_index:
                raise DataError(f"{what} line {ex['line']}: label {ex['label']!r} does not "
                                "occur in the training data")
        items = [self.encode_one(ex) for ex in examples]
        preds, total = self.predict_ids(module, items)
        y, p = [t for _, t in items], preds.tolist()
        return {"accuracy": accuracy(y, p), "f1": macro_f1(y, p, labels=list(range(len(
            self.labels)))), "loss": total / len(items), "n": len(items)}

    def save(self, module, path, export):
        save_classifier(module, path, self.tokenizer, self.labels, self.pad_id, export)


# ---------------------------------------------------------------------------------------------
# checkpoint


def save_classifier(module, path, tokenizer, labels, pad_id, export=None):
    """Write the classifier in Hugging Face's GPT2ForSequenceClassification layout (see the
    module docstring). ``export`` is the {name: array} to write (LoRA merged), by default the
    module's own state."""
    state = export if export is not None else module.state_dict()
    config = module.config
    view = ExportView(config, state)
    ck.save_pretrained(view, path, tokenizer=tokenizer)
    hf = config.to_hf_dict()
    hf["architectures"] = ["GPT2ForSequenceClassification"]
    hf["id2label"] = {str(i): str(lab) for i, lab in enumerate(labels)}
    hf["label2id"] = {str(lab): i for i, lab in enumerate(labels)}
    hf["pad_token_id"] = int(pad_id)
    hf["problem_type"] = "single_label_classification"
    hf["tinyroots"] = dict(hf.get("tinyroots", {}), pooling=module.pooling)
    write_json(os.path.join(path, ck.CONFIG_NAME), hf)
    write_json(os.path.join(path, LABELS_NAME), {"labels": list(labels),
                                                 "pooling": module.pooling,
                                                 "pad_token_id": int(pad_id)})
    return path


def load_classifier(path):
    """(GPTClassifier, tokenizer, labels, pad_id) from a directory save_classifier wrote (or a
    fine-tuning run directory holding one in best/)."""
    path = ck.resolve_model_dir(path)
    meta = ck.read_json(os.path.join(path, LABELS_NAME), LABELS_NAME)
    try:
        labels, pooling, pad_id = meta["labels"], meta["pooling"], int(meta["pad_token_id"])
    except (KeyError, TypeError, ValueError):
        raise ck.CheckpointError(f"{path}/{LABELS_NAME}: expected labels, pooling and "
                                 "pad_token_id") from None
    config = ck.load_config(path)
    gpt = GPT(config)
    model = GPTClassifier(gpt, len(labels), pooling)
    params = dict(model.named_parameters())
    found = set()
    for name, (arr, file) in ck.load_weights(path).items():
        key = name if name in params or name.startswith("transformer.") or name == "score.weight" \
            else "transformer." + name
        if key not in params:
            if not config.bias and key.endswith(".bias"):
                continue            # the zero biases written for a bias-free model
            raise ck.CheckpointError(f"{file}: unexpected tensor {name!r} for a classifier")
        if tuple(arr.shape) != params[key].shape:
            raise ck.CheckpointError(f"{file}: {name!r} has shape {tuple(arr.shape)}, the config "
                                     f"needs {params[key].shape}")
        params[key].data = np.ascontiguousarray(arr, dtype=np.float32)
        found.add(key)
    missing = sorted(set(params) - found)
    if missing:
        raise ck.CheckpointError(f"{path}: tensors missing from the checkpoint: "
                                 f"{', '.join(missing[:4])}")
    return model.eval(), load_tokenizer(path), labels, pad_id


def predict(model, tokenizer, texts, labels, pad_id, batch_size=64):
    """Classify a list of texts with a loaded classifier -> [label]."""
    out = []
    with no_grad():
        for part in chunks(list(texts), batch_size):
            seqs = [encode_text(tokenizer, t)[:model.config.block_size] or [pad_id]
                    for t in part]
            ids, lengths = pad_batch(seqs, pad_id)
            logits = model(ids, lengths).logits.data
            out += [labels[int(k)] for k in logits.argmax(axis=-1)]
    return out
