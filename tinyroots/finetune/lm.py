"""Continued pre-training on new text (domain adaptation), measured by perplexity.

Training is pre-training's loop on the new corpus: random windows of max_length tokens
(train.Batcher), next-token loss. Validation is exact: the validation text is cut into
consecutive windows, so every token after the first is predicted once, and

    val_loss   = mean cross-entropy over all those tokens (nats per token)
    perplexity = exp(val_loss)

Documents (JSONL lines) are joined with <|endoftext|> between them, as in pre-training.
The checkpoint is an ordinary GPT-2 directory, loadable by generate and by further
fine-tuning.
"""

import numpy as np

from ..metrics import perplexity
from ..tensor import no_grad
from ..training import Batcher
from .data import DataError
from .sft import SFTTask


class LMTask(SFTTask):
    name = "lm"

    def _tokens(self, examples, what):
        sep = [self.pad_id] if getattr(self.tokenizer, "eot_token_id", None) is not None else []
        ids = []
        for ex in examples:
            try:
                ids += self.tokenizer.encode(ex["text"], allowed_special="none") + sep
            except ValueError as exc:
                raise DataError(f"{what} line {ex['line']}: cannot encode it ({exc})") from None
        return np.asarray(ids, dtype=np.int64)

    def build(self, gpt, train_examples, val_examples):
        T = self.max_length(gpt)
        self.train_tokens = self._tokens(train_examples, self.cfg.train)
        self.val_tokens = self._tokens(val_examples, self.cfg.val)
        if len(self.val_tokens) < 2:
            raise DataError(f"{self.cfg.val}: the validation text has fewer than 2 tokens")
        # short corpora: shrink the window rather than refuse (Batcher needs T + 2 tokens)
        self.T = max(1, min(T, len(self.train_tokens) - 2))
        if self.T < 1 or len(self.train_tokens) < 3:
            raise DataError(f"{self.cfg.train}: the training text has too few tokens")
        self.batcher = Batcher(self.train_tokens, self.cfg.batch_size, self.T, self.cfg.seed + 1)
        self.log(f"lm: {len(self.train_tokens):,} train / {len(self.val_tokens):,} val tokens, "
                 f"windows of {self.T}")
        return gpt

    def next_batch(self):
        x, y = self.batcher.next_batch()
        if self.augment.token_mask:
            # only the inputs are masked: the targets stay the true next tokens
            x = x.copy()
            hit = self.augment.rng.random(x.shape) < self.augment.token_mask
            x[hit] = self.augment.mask_id
            self.augment.stats["tokens"] += x.size
            self.augment.stats["tokens_masked"] += int(hit.sum())
        return x, y

    def loss(self, module, batch):
        x, y = batch
        return module(x, targets=y, return_logits=False).loss

    def windows(self, tokens, limit_windows=0, batch_size=16):
        """Consecutive windows covering tokens, batch_size at a time: (x, y) with x (B, T) and
        y = x shifted by one; a last, shorter window takes what is left."""
        T = self.T
        n_full = (len(tokens) - 1) // T
        if limit_windows:
            n_full = min(n_full, limit_windows)
        x_all = tokens[:n_full * T].reshape(n_full, T)                         # (n_full, T)
        y_all = tokens[1:n_full * T + 1].reshape(n_full, T)
        for i in range(0, n_full, batch_size):
            yield x_all[i:i + batch_size], y_all[i:i + batch_size]
        rest = tokens[n_full * T:]
        if len(rest) >= 2 and not (limit_windows and n_full >= limit_windows):
            yield rest[:-1][None, :], rest[1:][None, :]

    def token_loss(self, module, tokens, limit=0):
        """-> (mean loss per predicted token over tokens' consecutive windows, tokens scored)."""
        total, count = 0.0, 0
        was_training = module.training
        module.eval()
        with no_grad():
            for x, y in self.windows(tokens, limit, self.cfg.batch_size):
                n = y.size
                total += float(module(x, targets=y, return_logits=False).loss) * n
                count += n
        module.train(was_training)
        return total / count, count

    def evaluate(self, module, final=False):
        loss, count = self.token_loss(module, self.val_tokens, 0 if final else
                                      self.cfg.eval_examples)
        return {"val_loss": loss, "perplexity": perplexity(loss), "val_tokens": count}

    def evaluate_test(self, module, examples, what):
        """A held-out text (--test): its loss and perplexity, every token once."""
        tokens = self._tokens(examples, what)
        if len(tokens) < 2:
            raise DataError(f"{what}: the test text has fewer than 2 tokens")
        loss, count = self.token_loss(module, tokens)
        return {"loss": loss, "perplexity": perplexity(loss), "n_tokens": count}
