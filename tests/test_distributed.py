"""Data parallelism, the parts one process can check: the "gradient is final" hook of backward,
launcher detection, micro-batch sharding, the consistency check. The multi-process behaviour
(N=1 against N=2, ZeRO-1, resume at another N, faults) is in test_distributed_mpi.py."""

import numpy as np

import tinyroots as tr
from tinyroots.tensor import on_grad_final


def tiny_gpt():
    tr.random.manual_seed(0)
    cfg = tr.GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=32, block_size=8)
    return tr.GPT(cfg)


def test_each_gradient_is_announced_once_and_is_final_when_announced():
    model = tiny_gpt()
    ids = np.random.default_rng(0).integers(0, 32, (2, 9))
    seen = {}

    def grad_final(p):
        assert id(p) not in seen, "a parameter was announced twice"
        seen[id(p)] = p.grad.copy()

    loss = model(ids[:, :-1], targets=ids[:, 1:], return_logits=False).loss
    with on_grad_final(grad_final):
        loss.backward()
    params = model.parameters()
    assert len(seen) == len(params)
    for p in params:
        # exact: announced after the last op that adds into it, nothing is added later
        np.testing.assert_array_equal(seen[id(p)], p.grad)


def test_tied_embedding_is_announced_after_both_uses():
    # wte is used twice (the input embedding and the LM head): it is final only after the
    # embedding's backward, the very last op of the graph
    model = tiny_gpt()
    ids = np.random.default_rng(1).integers(0, 32, (2, 9))
    order = []
    loss = model(ids[:, :-1], targets=ids[:, 1:], return_logits=False).loss
    with on_grad_final(order.append):
        loss.backward()
    wte = dict(model.named_parameters())["transformer.wte.weight"]
    assert any(p is wte for p in order[-2:])


def test_no_hook_no_cost_and_hook_removed_after_the_block():
    import importlib
    tensor = importlib.import_module("tinyroots.tensor")   # (tinyroots.tensor is also a function)
    with on_grad_final(lambda p: None):
        assert tensor._grad_final_hook is not None
    assert tensor._grad_final_hook is None


# ---------------------------------------------------------------------------------------------
# launcher detection, the no-mpi4py error, sharding


def test_launcher_variables_are_recognised():
    from tinyroots.distributed import launched_by_mpi
    assert launched_by_mpi({}) is None
    assert launched_by_mpi({"PMI_RANK": "1", "PMI_SIZE": "4"}) == (1, 4)            # MPICH
    assert launched_by_mpi({"OMPI_COMM_WORLD_RANK": "0", "OMPI_COMM_WORLD_SIZE": "2"}) == (0, 2)
    assert launched_by_mpi({"PMIX_RANK": "3"}) == (3, None)                         # PMIx


def test_several_processes_without_mpi4py_is_a_clear_error(monkeypatch):
    import sys

    import pytest

    from tinyroots import distributed
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "2")
    monkeypatch.setitem(sys.modules, "mpi4py", None)       # import mpi4py -> ImportError
    with pytest.raises(distributed.DistributedError, match=r'pip install "tinyroots\[mpi\]"'):
        distributed.init()
    # and the command says it in one line, exit code 2, no traceback
    from tinyroots import train
    assert train.main(["--max-steps", "1"]) == 2


def test_one_process_launched_by_mpiexec_without_mpi4py_just_runs(monkeypatch):
    import sys

    from tinyroots import distributed
    monkeypatch.setattr(distributed, "_world", None)
    monkeypatch.setenv("PMI_RANK", "0")
    monkeypatch.setenv("PMI_SIZE", "1")
    monkeypatch.setitem(sys.modules, "mpi4py", None)
    assert distributed.init().size == 1


class FakeWorld:
    def __init__(self, rank, size):
        self.rank, self.size, self.comm = rank, size, None


def test_micro_batches_split_into_contiguous_blocks_whatever_n():
    import pytest

    from tinyroots.distributed import DataParallel, DistributedError, split_micro_batches
    runs = [list(split_micro_batches(FakeWorld(r, 4), 8)) for r in range(4)]
    assert runs == [[0, 1], [2, 3], [4, 5], [6, 7]]       # together: every micro-batch once
    with pytest.raises(DistributedError, match="grad_accum_steps=6 .* divisible .* 4"):
        split_micro_batches(FakeWorld(0, 4), 6)
    # evaluation batches need not divide: every N-th, still each batch exactly once
    hooks = [DataParallel(FakeWorld(r, 3)) for r in range(3)]
    assert sorted(i for h in hooks for i in h.shard(7)) == list(range(7))


def test_buckets_cover_every_parameter_once_in_backward_order():
    from tinyroots.distributed import make_buckets
    params = tiny_gpt().parameters()
    buckets = make_buckets(params, bucket_mb=0.004, size_multiple=3)   # ~1000 floats each
    slots = [p for b in buckets for p, _, _ in b.slots]
    assert [id(p) for p in slots] == [id(p) for p in reversed(params)]
    assert len(buckets) > 3
    for b in buckets:
        assert len(b.flat) % 3 == 0                      # ZeRO's reduce-scatter needs N | size
        assert len(b.slots) == 1 or sum(n for _, _, n in b.slots) <= 1000


def test_info_shows_rank_world_size_and_mpi_library():
    from tinyroots import info
    text = info.describe()
    assert "processes:   rank 0 of 1" in text
    assert "MPI:" in text
