"""What every fine-tuning task provides to the shared loop (loop.py).

A task turns checked examples (data.py) into token ids, builds the module that trains (the GPT
itself, or the GPT plus a head), and knows its loss, its validation metrics and how its
checkpoint is written:

    task = ClassifyTask(cfg, tokenizer, log)
    module = task.build(gpt, train_examples, val_examples)
    loss = task.loss(module, task.next_batch())        # a scalar Tensor
    metrics = task.evaluate(module)                    # {"val_loss": ..., "accuracy": ...}
    tests = task.evaluate_test(module, examples, path) # a held-out file, after training
    task.save(module, "out/best")
"""

from .data import Augmenter, DataError, EpochSampler


class Task:
    name = ""
    special_tokens = ()        # added to the tokenizer (and the embeddings resized) before build

    def __init__(self, cfg, tokenizer, log=print):
        self.cfg = cfg
        self.tokenizer = tokenizer
        self.log = log
        self.n_cut = 0         # examples longer than max_length (cut)
        self.tokens_cut = 0    # the tokens those cuts removed
        eot = getattr(tokenizer, "eot_token_id", None)
        self.pad_id = eot if eot is not None else 0
        self.augment = Augmenter(cfg.token_dropout, cfg.token_mask, cfg.span_deletion,
                                 cfg.span_max, mask_id=self.pad_id,
                                 protect=tokenizer.special_tokens.values(), seed=cfg.seed + 7)

    # -- to override ---------------------------------------------------------------------------

    def build(self, gpt, train_examples, val_examples):
        """Encode the data for this model and return the Module to train."""
        raise NotImplementedError

    def next_batch(self):
        raise NotImplementedError

    def loss(self, module, batch):
        raise NotImplementedError

    def evaluate(self, module, final=False):
        raise NotImplementedError

    def evaluate_test(self, module, examples, what):
        """Metrics on a held-out test file (--test; examples as data.read_examples gives them),
        scored once after training: {"accuracy": ..., "loss": ..., "n": ...}."""
        raise NotImplementedError

    def save(self, module, path, export):
        raise NotImplementedError

    # -- shared helpers ------------------------------------------------------------------------

    def max_length(self, gpt):
        block = gpt.config.block_size
        return min(self.cfg.max_length, block) if self.cfg.max_length else block

    def encode_all(self, examples, encode_one, limit, what):
        """[encode_one(example)] with each encoding error naming the example's line."""
        out = []
        for ex in examples:
            try:
                item = encode_one(ex)
            except ValueError as exc:
                raise DataError(f"{what} line {ex['line']}: cannot encode it ({exc})") from None
            if len(item[0]) > limit:
                self.n_cut += 1
                self.tokens_cut += len(item[0]) - limit
            out.append(item)
        return out

    @property
    def truncation(self):
        """For eval.json: how many examples the context (max_length) cut, and by how much."""
        return {"examples": self.n_cut, "tokens": self.tokens_cut}

    def sampler(self, n):
        return EpochSampler(n, self.cfg.batch_size, self.cfg.seed + 11)

    def val_subset(self, items):
        n = self.cfg.eval_examples
        return items[:n] if n else items


def chunks(items, n):
    for i in range(0, len(items), n):
        yield items[i:i + n]
