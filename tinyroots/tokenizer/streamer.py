"""Decoding while generating: print each token's text as soon as it is whole."""

import sys

import numpy as np


class TextStreamer:
    """Prints decoded text as token ids arrive.

    subtle: one character can span several byte-level tokens; until its last byte arrives the
    partial text ends in U+FFFD, so a trailing replacement character is held back until the
    next token (or the end) decides it.
    """

    def __init__(self, tokenizer, out=sys.stdout, skip_ids=()):
        self.tokenizer = tokenizer
        self.out = out
        self.skip_ids = set(skip_ids)   # e.g. <|endoftext|>: it ends a sample, it is not text
        self.ids = []
        self.printed = 0

    def put(self, ids):
        token = int(np.asarray(ids).reshape(-1)[0])
        if token in self.skip_ids:
            return
        self.ids.append(token)
        text = self.tokenizer.decode(self.ids)
        stable = text.rstrip("\ufffd")
        if len(stable) > self.printed:
            self.out.write(stable[self.printed:])
            self.out.flush()
            self.printed = len(stable)

    def end(self):
        text = self.tokenizer.decode(self.ids)
        if len(text) > self.printed:
            self.out.write(text[self.printed:])
        self.out.write("\n")
        self.out.flush()
