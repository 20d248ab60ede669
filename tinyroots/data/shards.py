"""Token shards: flat binary files of token ids with a small header, read by memory map.

Layout of a shard (little-endian), 32 bytes of header then the tokens:

    offset  size  field
    0       8     magic       b"TRSHARD\\0"
    8       4     version     1
    12      4     itemsize    2 (uint16 tokens) or 4 (uint32)
    16      8     n_tokens    number of tokens that follow
    24      8     vocab_size  every token is < vocab_size
    32      ...   tokens      n_tokens * itemsize bytes

uint16 halves the disk and page-cache footprint when the vocabulary fits in 65536 ids (GPT-2's
50257 does). A shard is written to a temporary name and renamed when complete, so a crash never
leaves a file that looks finished; a shard whose size disagrees with its header is refused
with the file named.
"""

import os
import struct

import numpy as np

MAGIC = b"TRSHARD\x00"
VERSION = 1
HEADER = struct.Struct("<8sIIQQ")  # magic, version, itemsize, n_tokens, vocab_size
HEADER_BYTES = HEADER.size  # 32


class ShardError(ValueError):
    """A shard file that is missing, truncated, or not a tinyroots shard."""


def dtype_for_vocab(vocab_size):
    """uint16 when every id fits in 16 bits, else uint32.

    >>> dtype_for_vocab(50257), dtype_for_vocab(70000)
    (dtype('uint16'), dtype('uint32'))
    """
    return np.dtype(np.uint16) if vocab_size <= 1 << 16 else np.dtype(np.uint32)


def read_header(path):
    """(n_tokens, dtype, vocab_size) of a shard, after checking magic, version and size."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(f"cannot read shard {path}: {exc.strerror}") from None
    if len(raw) < HEADER_BYTES:
        raise ShardError(f"shard {path} is truncated: {size} bytes, shorter than the "
                         f"{HEADER_BYTES}-byte header")
    magic, version, itemsize, n_tokens, vocab_size = HEADER.unpack(raw)
    if magic != MAGIC:
        raise ShardError(f"{path} is not a tinyroots token shard (bad magic {magic!r})")
    if version != VERSION:
        raise ShardError(f"shard {path} has format version {version}; this tinyroots reads "
                         f"version {VERSION}")
    if itemsize not in (2, 4):
        raise ShardError(f"shard {path} is corrupt: token size {itemsize} bytes (expected 2 or 4)")
    # the writer stores uint16 exactly when every id fits: anything else is a damaged header
    if vocab_size < 1 or dtype_for_vocab(vocab_size).itemsize != itemsize:
        raise ShardError(f"shard {path} is corrupt: vocab_size {vocab_size} with {itemsize}-byte "
                         f"tokens (expected 2 bytes up to 65536, else 4)")
    expected = HEADER_BYTES + n_tokens * itemsize
    if size != expected:
        raise ShardError(f"shard {path} is truncated or corrupt: its header promises {n_tokens} "
                         f"tokens ({expected} bytes) but the file has {size} bytes")
    return n_tokens, np.dtype("<u2" if itemsize == 2 else "<u4"), vocab_size


def open_shard(path):
    """The tokens of a shard as a read-only memory map (nothing is read until used)."""
    n_tokens, dtype, _ = read_header(path)
    if n_tokens == 0:
        return np.zeros(0, dtype)
    return np.memmap(path, dtype=dtype, mode="r", offset=HEADER_BYTES, shape=(n_tokens,))


def write_shard(path, tokens, vocab_size):
    """Write one shard at once (atomically). Returns path.

    >>> import tempfile, os
    >>> p = write_shard(os.path.join(tempfile.mkdtemp(), "a.bin"), [5, 6, 7], 100)
    >>> open_shard(p).tolist()
    [5, 6, 7]
    """
    with ShardWriter(path, vocab_size) as w:
        w.write(tokens)
    return path


class ShardWriter:
    """Append tokens to one shard file; the header's count is filled in at close.

    with ShardWriter("train_00000.bin", vocab_size=4096) as w:
        w.write(ids)        # any number of times
    """

    def __init__(self, path, vocab_size):
        self.path = os.fspath(path)
        self.vocab_size = int(vocab_size)
        self.dtype = dtype_for_vocab(self.vocab_size)
        self.n_tokens = 0
        self._tmp = self.path + ".tmp"
        self._file = open(self._tmp, "wb")
        self._file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, 0, self.vocab_size))

    def write(self, tokens):
        tokens = np.asarray(tokens)
        if tokens.size and (tokens.min() < 0 or tokens.max() >= self.vocab_size):
            raise ValueError(f"token ids must be in [0, {self.vocab_size}), got "
                             f"[{tokens.min()}, {tokens.max()}] while writing {self.path}")
        self._file.write(tokens.astype(self.dtype.newbyteorder("<")).tobytes())
        self.n_tokens += tokens.size

    def close(self):
        if self._file.closed:
            return
        self._file.seek(0)
        self._file.write(HEADER.pack(MAGIC, VERSION, self.dtype.itemsize, self.n_tokens,
                                     self.vocab_size))
        self._file.close()
        os.replace(self._tmp, self.path)

    def abort(self):
        self._file.close()
        if os.path.exists(self._tmp):
            os.remove(self._tmp)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, *_):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class ShardSetWriter:
    """Write a stream of tokens as numbered shards of at most shard_tokens tokens each:
    ``{prefix}_00000.bin``, ``{prefix}_00001.bin``, ...

    Documents are never split across shards unless a single one is longer than a shard: the
    loader samples windows inside one shard, and a document cut in two loses the context
    across the cut.
    """

    def __init__(self, directory, prefix, vocab_size, shard_tokens=100_000_000):
        self.directory, self.prefix = directory, prefix
        self.vocab_size, self.shard_tokens = vocab_size, shard_tokens
        self.paths, self.n_tokens = [], 0
        self._writer = None
        os.makedirs(directory, exist_ok=True)

    def write_document(self, tokens):
        if self._writer is not None and self._writer.n_tokens + len(tokens) > self.shard_tokens:
            self._writer.close()
            self._writer = None
        if self._writer is None:
            path = os.path.join(self.directory, f"{self.prefix}_{len(self.paths):05d}.bin")
            self._writer = ShardWriter(path, self.vocab_size)
            self.paths.append(path)
        self._writer.write(tokens)
        self.n_tokens += len(tokens)

    def close(self):
        if self._writer is not None:
            self._writer.close()
            self._writer = None
        return self.paths


def find_shards(path_or_paths, split=None):
    """Shard paths from a list, a glob, or a directory (``{split}_*.bin`` in it, sorted)."""
    import glob as _glob
    if isinstance(path_or_paths, (list, tuple)):
        return [os.fspath(p) for p in path_or_paths]
    path = os.fspath(path_or_paths)
    if os.path.isdir(path):
        pattern = os.path.join(path, f"{split}_*.bin" if split else "*.bin")
        paths = sorted(_glob.glob(pattern))
    elif any(c in path for c in "*?["):
        paths = sorted(_glob.glob(path))
    else:
        paths = [path]
    if not paths:
        raise ShardError(f"no shards found at {path}" + (f" for split {split!r}" if split else ""))
    return paths
