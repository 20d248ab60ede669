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
