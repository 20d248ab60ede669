"""DataLoader: (B, T) batches of inputs and next-token targets from memory-mapped shards.

    loader = DataLoader("cache/abc123/shards", batch_size=8, block_size=256, split="train")
    x, y = loader.next_batch()         # int64 (B, T) each; y[b, t] == x[b, t + 1]
    state = loader.get_state()         # a JSON-able dict: save it with the checkpoint
    ...
    loader.set_state(state)            # a resumed run gets exactly the same batches next

Two orders:

* ``shuffle=True`` (training): every row is a window of T + 1 tokens starting at a uniformly
  random position in the corpus (windows never straddle two shards), from a NumPy PCG64
  generator seeded with ``seed``. The state is the generator's state.
* ``shuffle=False`` (evaluation): consecutive windows, walking through the shards in order and
  wrapping around at the end. The state is the position.

Shards are memory-mapped: only the pages a batch touches are read, so the corpus can be far
larger than memory.
"""

import os

import numpy as np

from .shards import ShardError, find_shards, open_shard, read_header

STATE_VERSION = 1


class DataLoader:
    def __init__(self, shards, batch_size, block_size, seed=1337, shuffle=True, split="train"):
        """shards: a directory (its ``{split}_*.bin``), a glob, or a list of shard paths."""
        for name, value in (("batch_size", batch_size), ("block_size", block_size)):
            # subtle: int() below would truncate 2.5 to 2, and "8" < 1 is a TypeError
            if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
                raise ValueError(f"DataLoader: {name} must be an integer >= 1, got {value!r}")
        if batch_size < 1 or block_size < 1:
            raise ValueError(f"batch_size and block_size must be >= 1, got {batch_size}, "
                             f"{block_size}")
        self.paths = find_shards(shards, split)
        self.batch_size, self.block_size = int(batch_size), int(block_size)
        self.seed, self.shuffle = int(seed), bool(shuffle)
        self.tokens = [open_shard(p) for p in self.paths]  # checks every header up front
        self.vocab_size = max(read_header(p)[2] for p in self.paths)
        T = self.block_size
        # A window needs T + 1 tokens (inputs and the shifted targets), all in one shard.
        self.starts_per_shard = np.array([max(0, len(t) - T) for t in self.tokens], np.int64)
        self.cum_starts = np.cumsum(self.starts_per_shard)
        if self.cum_starts[-1] == 0:
            longest = max(len(t) for t in self.tokens)
            raise ShardError(f"no shard in {self.paths[0]}{' ...' if len(self.paths) > 1 else ''}"
                             f" holds block_size + 1 = {T + 1} tokens (longest: {longest}); "
                             "use a smaller block_size or more data")
        self.reset()

    def reset(self):
        """Back to the first batch of the seed."""
        self.rng = np.random.default_rng(self.seed)
        self.shard, self.pos, self.epoch, self.step = 0, 0, 0, 0

    @property
    def n_tokens(self):
        return int(sum(len(t) for t in self.tokens))

    # -- batches ------------------------------------------------------------------------------
    def _random_windows(self):
        g = self.rng.integers(0, self.cum_starts[-1], size=self.batch_size)  # global start ids
        shard = np.searchsorted(self.cum_starts, g, side="right")  # which shard holds each
        offset = g - (self.cum_starts[shard] - self.starts_per_shard[shard])
        return list(zip(shard.tolist(), offset.tolist()))

    def _sequential_windows(self):
        T, windows = self.block_size, []
        while len(windows) < self.batch_size:
            if self.pos + T + 1 > len(self.tokens[self.shard]):  # this shard is used up
                self.shard, self.pos = self.shard + 1, 0
                if self.shard == len(self.tokens):
                    self.shard, self.epoch = 0, self.epoch + 1
                continue
            windows.append((self.shard, self.pos))
            self.pos += T
        return windows

    def next_batch(self):
        """(x, y), int64 arrays of shape (B, T); y is x shifted left by one token."""
        windows = self._random_windows() if self.shuffle else self._sequential_windows()
        T = self.block_size
        buf = np.empty((self.batch_size, T + 1), np.int64)
        for row, (shard, start) in enumerate(windows):
            buf[row] = self.tokens[shard][start:start + T + 1]
        self.step += 1
        return buf[:, :-1], buf[:, 1:]

    def __iter__(self):
        return self

    def __next__(self):
        return self.next_batch()

    # -- resuming -----------------------------------------------------------------------------
    def _identity(self):
        return {"shards": [os.path.basename(p) for p in self.paths],
                "n_tokens": [len(t) for t in self.tokens], "batch_size": self.batch_size,
                "block_size": self.block_size, "shuffle": self.shuffle, "seed": self.seed}

    def get_state(self):
        """Everything needed to continue with the same batches, as a JSON-able dict."""
        return {"version": STATE_VERSION, **self._identity(), "step": self.step,
                "rng": self.rng.bit_generator.state, "shard": self.shard, "pos": self.pos,
                "epoch": self.epoch}

    def set_state(self, state):
        """Continue from a get_state() dict; it must come from a loader over the same shards
        with the same batch_size, block_size and order."""
        if not isinstance(state, dict) or state.get("version") != STATE_VERSION:
            raise ValueError("loader state must be a dict from DataLoader.get_state() "
                             f"(version {STATE_VERSION})")
        mine = self._identity()
        for key, value in mine.items():
            if key != "seed" and state.get(key) != value:
                raise ValueError(f"loader state does not match this loader: {key} is "
                                 f"{state.get(key)!r} in the state, {value!r} here")
        self.rng = np.random.default_rng()
        self.rng.bit_generator.state = state["rng"]
        self.seed, self.step = state["seed"], state["step"]
        self.shard, self.pos, self.epoch = state["shard"], state["pos"], state["epoch"]
