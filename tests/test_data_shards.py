"""Token shards (format, round trip, corruption) and the DataLoader (determinism, resume)."""

import json
import os

import numpy as np
import pytest

from tinyroots.data import DataLoader, ShardError, open_shard, read_header, write_shard
from tinyroots.data.shards import HEADER_BYTES, ShardSetWriter, ShardWriter, dtype_for_vocab


@pytest.mark.parametrize("vocab_size, dtype", [(50257, np.uint16), (65536, np.uint16),
                                               (100_000, np.uint32)])
def test_round_trip(tmp_path, vocab_size, dtype):
    tokens = np.random.default_rng(0).integers(0, vocab_size, size=1001)
    path = write_shard(str(tmp_path / "s.bin"), tokens, vocab_size)
    n, dt, v = read_header(path)
    assert (n, dt, v) == (1001, np.dtype(dtype).newbyteorder("<"), vocab_size)
    assert os.path.getsize(path) == HEADER_BYTES + 1001 * np.dtype(dtype).itemsize
    assert (open_shard(path) == tokens).all()
    assert not os.path.exists(path + ".tmp")


def test_writer_rejects_out_of_range_ids(tmp_path):
    with pytest.raises(ValueError, match=r"token ids must be in \[0, 10\)"):
        write_shard(str(tmp_path / "s.bin"), [1, 2, 10], 10)
    assert not os.path.exists(tmp_path / "s.bin")  # no half-written shard left behind
    assert not os.path.exists(tmp_path / "s.bin.tmp")


def test_corrupt_shards_name_the_file(tmp_path):
    path = write_shard(str(tmp_path / "good.bin"), np.arange(100), 1000)
    raw = open(path, "rb").read()
    cases = {
        "truncated.bin": (raw[:-10], "truncated or corrupt: its header promises 100 tokens"),
        "tiny.bin": (raw[:10], "shorter than the 32-byte header"),
        "magic.bin": (b"NOTASHRD" + raw[8:], "not a tinyroots token shard"),
        "version.bin": (raw[:8] + (9).to_bytes(4, "little") + raw[12:], "format version 9"),
        "itemsize.bin": (raw[:12] + (3).to_bytes(4, "little") + raw[16:], "token size 3"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(ShardError) as err:
            open_shard(str(tmp_path / name))
        assert name in str(err.value) and message in str(err.value)
    with pytest.raises(ShardError, match="missing.bin"):
        read_header(str(tmp_path / "missing.bin"))
    with pytest.raises(ShardError, match="truncated.bin"):  # the loader checks up front too
        DataLoader([str(tmp_path / "truncated.bin")], 2, 4)


def test_shard_set_writer_keeps_documents_whole(tmp_path):
    w = ShardSetWriter(str(tmp_path), "train", 100, shard_tokens=10)
    for n in (4, 4, 4, 15, 1):
        w.write_document(np.full(n, n))
    paths = w.close()
    assert [os.path.basename(p) for p in paths] == [f"train_{i:05d}.bin" for i in range(4)]
    assert [open_shard(p).tolist() for p in paths] == [
        [4] * 8, [4] * 4, [15] * 15, [1]]
    assert w.n_tokens == 28


def make_shards(tmp_path, sizes=(5000, 3000, 20)):
    rng = np.random.default_rng(0)
    paths = []
    for i, n in enumerate(sizes):
        paths.append(write_shard(str(tmp_path / f"train_{i:05d}.bin"),
                                 rng.integers(0, 500, size=n), 500))
    return paths


def test_loader_batches_are_windows_with_shifted_targets(tmp_path):
    paths = make_shards(tmp_path)
    shards = [np.asarray(open_shard(p)) for p in paths]
    loader = DataLoader(str(tmp_path), batch_size=8, block_size=32, seed=1)
    for _ in range(20):
        x, y = loader.next_batch()
        assert x.shape == y.shape == (8, 32) and x.dtype == y.dtype == np.int64
        assert (x[:, 1:] == y[:, :-1]).all()
        for row_x, row_y in zip(x, y):  # each row is a real window of one shard
            window = np.concatenate([row_x, row_y[-1:]])
            assert any(len(s) > 32 and
                       (np.lib.stride_tricks.sliding_window_view(s, 33) == window)
                       .all(axis=1).any() for s in shards)


def test_loader_is_deterministic_and_resumes_exactly(tmp_path):
    make_shards(tmp_path)
    for shuffle in (True, False):
        a = DataLoader(str(tmp_path), 4, 16, seed=7, shuffle=shuffle)
        b = DataLoader(str(tmp_path), 4, 16, seed=7, shuffle=shuffle)
        c = DataLoader(str(tmp_path), 4, 16, seed=8, shuffle=shuffle)
        first = [a.next_batch()[0] for _ in range(5)]
        assert all((x == b.next_batch()[0]).all() for x in first)
        if shuffle:
            assert not all((x == c.next_batch()[0]).all() for x in first)
        state = json.loads(json.dumps(a.get_state()))  # survives a JSON checkpoint
        expected = [a.next_batch() for _ in range(7)]
        resumed = DataLoader(str(tmp_path), 4, 16, seed=0, shuffle=shuffle)
        resumed.set_state(state)
        for (x, y), (rx, ry) in zip(expected, (resumed.next_batch() for _ in range(7))):
            assert (x == rx).all() and (y == ry).all()
        assert resumed.get_state() == a.get_state()


def test_sequential_loader_walks_every_token_in_order(tmp_path):
    paths = make_shards(tmp_path, sizes=(100, 50))
    loader = DataLoader(paths, batch_size=3, block_size=10, shuffle=False)
    x, _ = loader.next_batch()
    tokens0 = np.asarray(open_shard(paths[0]))
    assert (x.reshape(-1) == tokens0[:30]).all()
    seen = [loader.next_batch()[0] for _ in range(10)]
    assert loader.get_state()["epoch"] >= 1  # wrapped around
    assert all(s.shape == (3, 10) for s in seen)


def test_loader_state_mismatch_and_small_shards(tmp_path):
    make_shards(tmp_path)
    state = DataLoader(str(tmp_path), 4, 16).get_state()
    with pytest.raises(ValueError, match="block_size is 16 in the state, 32 here"):
        DataLoader(str(tmp_path), 4, 32).set_state(state)
    with pytest.raises(ValueError, match="DataLoader.get_state"):
        DataLoader(str(tmp_path), 4, 16).set_state({"rng": 1})
    with pytest.raises(ShardError, match="block_size \\+ 1 = 5001"):
        DataLoader(str(tmp_path), 4, 5000)
    with pytest.raises(ShardError, match="no shards found"):
        DataLoader(str(tmp_path), 4, 16, split="val")


def test_dtype_for_vocab():
    assert dtype_for_vocab(256) == np.uint16 and dtype_for_vocab(65537) == np.uint32


def test_shard_writer_context_aborts_on_error(tmp_path):
    with pytest.raises(RuntimeError):
        with ShardWriter(str(tmp_path / "x.bin"), 10) as w:
            w.write([1, 2])
            raise RuntimeError("boom")
    assert os.listdir(tmp_path) == []
