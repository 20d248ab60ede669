"""Supervised fine-tuning of the language model itself: chat and translation.

Both tasks turn an example into one token sequence with a label per token (data.py):

    chat        <|user|> Hi <|end|> <|assistant|> Hello! <|end|>
    labels      -100    ... -100    -100          Hello! <|end|>
    translate   <|source|> the cat <|target|> le chat <|endoftext|>
    labels      -100       ...     -100       le chat <|endoftext|>

and trains with the model's own next-token loss, ``model(ids, labels=labels)``: position t is
trained to predict labels[t + 1], and positions whose label is -100 contribute nothing -- not
to the loss, not to the gradient. The model learns to answer (or translate), never to imitate
the user.

Validation: the same loss on the validation set (val_loss, and perplexity = exp(val_loss));
for translation also BLEU of greedy translations against the references (evaluate.bleu).
The checkpoint is an ordinary GPT-2 directory plus the tokenizer with its new special tokens:
python -m tinyroots.chat and python -m tinyroots.generate --task translate load it.
"""

import re
from collections import Counter

import numpy as np

from .. import checkpoint as ck
from ..metrics import bleu, perplexity
from .modify import ExportView
from ..tensor import no_grad
from .data import (CHAT_TOKENS, IGNORE, TRANSLATE_TOKENS, DataError, chat_ids, pad_batch,
                   translation_ids)
from .task import Task, chunks


class SFTTask(Task):
    """Shared by chat and translate: sequences with per-token labels."""

    def encode_example(self, ex):
        raise NotImplementedError

    def build(self, gpt, train_examples, val_examples):
        self.limit = self.max_length(gpt)
        self.train_items = self._encode(train_examples, self.cfg.train)
        self.val_items = self._encode(val_examples, self.cfg.val)
        self.val_examples = val_examples
        self.train_sampler = self.sampler(len(self.train_items))
        n_tokens = sum(len(ids) for ids, _ in self.train_items)
        n_labels = sum(sum(lab != IGNORE for lab in labels) for _, labels in self.train_items)
        self.log(f"{self.name}: {len(self.train_items)} train / {len(self.val_items)} val "
                 f"examples, {n_tokens:,} train tokens of which {n_labels:,} are trained on; "
                 f"special tokens {', '.join(self.special_tokens)}")
        return gpt

    def _encode(self, examples, what):
        cut_before, tokens_before = self.n_cut, self.tokens_cut
        items = self.encode_all(examples, self.encode_example, self.limit, what)
        if self.n_cut > cut_before:
            total = sum(len(ids) for ids, _ in items)
            lost = self.tokens_cut - tokens_before
            self.log(f"{what}: {self.n_cut - cut_before} of {len(items)} example(s) are longer "
                     f"than {self.limit} tokens and were cut to it, losing {lost:,} of "
                     f"{total:,} tokens ({100.0 * lost / max(total, 1):.1f}%); raise "
                     "--block-size (or --max-length) to keep them")
        kept = []
        for ids, labels in items:
            ids, labels = ids[:self.limit], labels[:self.limit]
            # subtle: labels[0] is never a target (nothing comes before it to predict it)
            if any(lab != IGNORE for lab in labels[1:]):
                kept.append((ids, labels))
        if len(kept) < len(items):
            self.log(f"{what}: {len(items) - len(kept)} example(s) longer than {self.limit} "
                     "tokens had nothing left to learn after cutting and were left out")
        if not kept:
            raise DataError(f"{what}: no usable examples (max_length {self.limit} tokens)")
        return kept

    def _batch(self, items, augment):
        seqs, labs = [], []
        for ids, labels in items:
            if augment:
                ids, labels = self.augment(ids, labels)
            seqs.append(ids)
            labs.append(labels)
        ids, labels, _ = pad_batch(seqs, self.pad_id, labs)
        return ids, labels

    def next_batch(self):
        idx = self.train_sampler.next()
        return self._batch([self.train_items[i] for i in idx], augment=True)

    def loss(self, module, batch):
        ids, labels = batch
        return module(ids, labels=labels, return_logits=False).loss

    def val_loss(self, module, items, batch_size=32):
        """Mean loss per trained token over items (the same weighting as one big batch)."""
        total, count = 0.0, 0
        order = sorted(range(len(items)), key=lambda i: len(items[i][0]))
        was_training = module.training
        module.eval()
        with no_grad():
            for idx in chunks(order, batch_size):
                ids, labels = self._batch([items[i] for i in idx], augment=False)
                n = int((labels[:, 1:] != IGNORE).sum())
                total += float(module(ids, labels=labels, return_logits=False).loss) * n
                count += n
        module.train(was_training)
        return total / max(count, 1)

    def evaluate(self, module, final=False):
        items = self.val_items if final else self.val_subset(self.val_items)
        loss = self.val_loss(module, items)
        return {"val_loss": loss, "perplexity": perplexity(loss)}

    def evaluate_test(self, module, examples, what):
        """A held-out test file (--test): the validation loss on it, n examples."""
        counts = self.n_cut, self.tokens_cut     # eval.json's truncation counts train and val
        items = self._encode(examples, what)
        self.n_cut, self.tokens_cut = counts
        loss = self.val_loss(module, items)
        return {"loss": loss, "perplexity": perplexity(loss), "n": len(items)}

    def save(self, module, path, export):
        state = export if export is not None else module.state_dict()
        ck.save_pretrained(ExportView(module.config, state), path, tokenizer=self.tokenizer)


class ChatTask(SFTTask):
    name = "chat"
    special_tokens = CHAT_TOKENS

    def encode_example(self, ex):
        return chat_ids(self.tokenizer, ex["messages"])

    def evaluate(self, module, final=False):
        metrics = super().evaluate(module, final)
        if final:
            metrics["samples"] = self.samples(module)
        return metrics

    def first_reply(self, module, messages):
        """-> (the greedy reply to the turns before the first assistant message, that message)."""
        first = next(i for i, m in enumerate(messages) if m["role"] == "assistant")
        prompt, _ = chat_ids(self.tokenizer, messages[:first], add_generation_prompt=True)
        end_id = self.tokenizer.special_tokens["<|end|>"]
        reply = generate_until(module, prompt, end_id, self.cfg.max_new_tokens, self.limit)
        return self.tokenizer.decode(reply), messages[first]["content"]

    def samples(self, module, n=3):
        """Greedy replies to the first user turns of a few validation dialogues (for the log)."""
        out = []
        for ex in self.val_examples[:n]:
            output, reference = self.first_reply(module, ex["messages"])
            user = [m["content"] for m in ex["messages"] if m["role"] == "user"]
            out.append({"prompt": user[0] if user else "", "reference": reference,
                        "output": output})
        return out

    def evaluate_test(self, module, examples, what):
        """The loss on a held-out file, and, when its dialogues name their intent, the share
        whose greedy first reply is that intent's answer (intent_accuracy; see reply_intent)."""
        metrics = super().evaluate_test(module, examples, what)
        tagged = [ex for ex in examples if "intent" in ex]
        if tagged:
            answers = {}
            for ex in tagged:
                reference = next(m["content"] for m in ex["messages"] if m["role"] == "assistant")
                answers.setdefault(ex["intent"], []).append(reference)
            right = 0
            for ex in tagged:
                output, _ = self.first_reply(module, ex["messages"])
                right += reply_intent(output, answers) == ex["intent"]
            metrics["intent_accuracy"] = right / len(tagged)
            metrics["intent_examples"] = len(tagged)
        return metrics


class TranslateTask(SFTTask):
    name = "translate"
    special_tokens = TRANSLATE_TOKENS

    def encode_example(self, ex):
        return translation_ids(self.tokenizer, ex["source"], ex["target"])

    def translate(self, module, sources):
        eot = self.tokenizer.special_tokens["<|endoftext|>"]
        outs = []
        for src in sources:
            prompt, _ = translation_ids(self.tokenizer, src)
            ids = generate_until(module, prompt, eot, self.cfg.max_new_tokens, self.limit)
            outs.append(self.tokenizer.decode(ids).strip())
        return outs

    def evaluate(self, module, final=False):
        metrics = super().evaluate(module, final)
        if final or self.cfg.metric_name == "bleu":
            examples = self.val_examples[:self.cfg.bleu_examples]
            hyps = self.translate(module, [ex["source"] for ex in examples])
            refs = [ex["target"] for ex in examples]
            metrics["bleu"], metrics["bleu_implementation"] = bleu(hyps, refs)
            metrics["bleu_examples"] = len(examples)
            if final:
                metrics["samples"] = [{"source": ex["source"], "reference": ex["target"],
                                       "output": h} for ex, h in zip(examples[:3], hyps)]
        return metrics

    def evaluate_test(self, module, examples, what):
        """The loss and BLEU on a held-out file (its first bleu_examples pairs)."""
        metrics = super().evaluate_test(module, examples, what)
        examples = examples[:self.cfg.bleu_examples]
        hyps = self.translate(module, [ex["source"] for ex in examples])
        metrics["bleu"], _ = bleu(hyps, [ex["target"] for ex in examples])
        return metrics


def words(text):
    """'I checked #12345: it left.' -> ['i', 'checked', '12345', 'it', 'left']"""
    return re.findall(r"[a-z0-9]+", text.lower())


def word_f1(a, b):
    """Harmonic mean of word precision and recall between two texts (bags of words): 1.0 for
    the same words, 0.0 for none in common."""
    wa, wb = Counter(words(a)), Counter(words(b))
    common = sum((wa & wb).values())
    if not common:
        return 0.0
    p, r = common / sum(wa.values()), common / sum(wb.values())
    return 2 * p * r / (p + r)


def reply_intent(reply, answers, threshold=0.5):
    """Which intent a chat reply answers: answers is {intent: [reference replies]}; the reply
    belongs to the intent of its closest reference by word_f1, when that is at least threshold
    and strictly closer than every other intent's references (else None: nonsense, or a reply
    between two answers). Details that differ (an order number, a city) cost a few words.

    >>> reply_intent("Refunds are sent within 5 days.", {"refund": ["Refunds are sent within 5 "
    ...     "business days."], "track": ["I checked your order: it left."]})
    'refund'
    """
    best = {intent: max(word_f1(reply, r) for r in refs) for intent, refs in answers.items()}
    ranked = sorted(best.items(), key=lambda kv: -kv[1])
    if ranked[0][1] < threshold or (len(ranked) > 1 and ranked[1][1] == ranked[0][1]):
        return None
    return ranked[0][0]


def generate_until(model, prompt, stop_id, max_new_tokens, limit):
    """Greedy continuation of prompt (a list of ids) until stop_id; -> the new ids without it."""
    prompt = prompt[-limit:]
    budget = max(0, min(max_new_tokens, model.config.block_size - len(prompt)))
    was_training = model.training
    ids = model.generate(np.asarray([prompt], dtype=np.int64), max_new_tokens=budget,
                         do_sample=False, eos_token_id=stop_id)
    model.train(was_training)
    new = ids[0, len(prompt):].tolist()
    return new[:new.index(stop_id)] if stop_id in new else new
