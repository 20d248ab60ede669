"""tinyroots.finetune.modify: vocabulary, context, depth, freezing -- and what each keeps."""

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.finetune import modify


pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py


def tiny_gpt(seed=0, **kw):
    tr.manual_seed(seed)
    cfg = dict(n_layer=2, n_head=2, n_embd=16, vocab_size=40, block_size=16)
    cfg.update(kw)
    return tr.GPT(tr.GPTConfig(**cfg))


IDS = np.random.default_rng(0).integers(0, 40, (2, 12))


def test_resize_vocab_keeps_old_logits_and_adds_usable_rows(tmp_path):
    model = tiny_gpt()
    before = model(IDS).logits.data.copy()
    modify.resize_vocab(model, 44, seed=0)
    assert model.config.vocab_size == 44 and model.transformer.wte.weight.shape == (44, 16)
    after = model(IDS).logits.data
    np.testing.assert_array_equal(after[..., :40], before)      # old tokens: same logits
    new_rows = model.transformer.wte.weight.data[40:]
    assert len({tuple(r) for r in new_rows}) == 4               # distinguishable new tokens
    # new rows start near the mean embedding, so their logits are ordinary ones
    assert np.abs(after[..., 40:]).max() < 3 * np.abs(before).max()
    model(np.array([[43, 1]]))                                  # new ids are accepted
    model.save_pretrained(tmp_path)
    assert tr.GPT.from_pretrained(tmp_path).config.vocab_size == 44
    modify.resize_vocab(model, 30)
    assert model.config.vocab_size == 30
    with pytest.raises(ValueError, match="positive integer"):
        modify.resize_vocab(model, 0)


def test_resize_context_keep_and_interpolate():
    model = tiny_gpt()
    before = model(IDS).logits.data.copy()
    modify.resize_context(model, 32)
    assert model.config.block_size == 32 and model.transformer.wpe.weight.shape == (32, 16)
    np.testing.assert_array_equal(model(IDS).logits.data, before)   # old positions unchanged
    model(np.zeros((1, 32), dtype=np.int64))                    # the longer context works
    modify.resize_context(model, 12)
    np.testing.assert_array_equal(model(IDS[:, :12]).logits.data, before[:, :12])

    m2 = tiny_gpt()
    old = m2.transformer.wpe.weight.data.copy()
    modify.resize_context(m2, 31, method="interpolate")
    new = m2.transformer.wpe.weight.data
    np.testing.assert_allclose(new[0], old[0], rtol=0, atol=1e-7)
    np.testing.assert_allclose(new[-1], old[-1], rtol=0, atol=1e-7)
    np.testing.assert_allclose(new[1], (old[0] + old[1]) / 2, rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="method"):
        modify.resize_context(m2, 40, method="stretch")


def test_add_blocks_identity_keeps_the_function_and_trains(tmp_path):
    model = tiny_gpt()
    before = model(IDS).logits.data.copy()
    modify.add_blocks(model, 2)
    assert model.config.n_layer == 4 and len(model.transformer.h) == 4
    np.testing.assert_allclose(model(IDS).logits.data, before, rtol=1e-6, atol=1e-6)
    out = model(IDS, labels=IDS)
    out.loss.backward()
    new_block = dict(model.named_parameters())
    assert np.abs(new_block["transformer.h.3.attn.c_proj.weight"].grad).sum() > 0
    model.save_pretrained(tmp_path)
    reloaded = tr.GPT.from_pretrained(tmp_path)
    assert reloaded.config.n_layer == 4
    np.testing.assert_allclose(reloaded(IDS).logits.data, before, rtol=1e-6, atol=1e-6)
    modify.add_blocks(model, 1, init="random")
    assert np.abs(model(IDS).logits.data - before).max() > 1e-4


def test_freeze_blocks_skips_the_frozen_part_of_the_graph():
    model = tiny_gpt()
    n = modify.freeze_blocks(model, 1)
    assert n == 12 + 2                       # 12 tensors in a block, plus wte and wpe
    trainable, total = modify.count_parameters(model)
    frozen = sum(p.size for name, p in model.named_parameters()
                 if name.startswith(("transformer.h.0.", "transformer.wte", "transformer.wpe")))
    assert trainable == total - frozen
    # the first block's output does not even need a gradient: no graph is recorded there
    x = model.transformer.wte(IDS) + model.transformer.wpe(np.arange(12))
    assert not x.requires_grad
    assert not model.transformer.h[0](x).requires_grad
    model(IDS, labels=IDS).loss.backward()
    for name, p in model.named_parameters():
        assert (p.grad is None) == (not p.requires_grad), name
    with pytest.raises(ValueError, match="k must be in 0..2"):
        modify.freeze_blocks(model, 3)


def test_freeze_unfreeze_by_name():
    model = tiny_gpt()
    modify.freeze(model)
    assert modify.trainable_parameters(model) == []
    modify.unfreeze(model, ["transformer.ln_f", "transformer.h.1.mlp"])
    names = [n for n, p in model.named_parameters() if p.requires_grad]
    assert names == ["transformer.h.1.mlp.c_fc.weight", "transformer.h.1.mlp.c_fc.bias",
                     "transformer.h.1.mlp.c_proj.weight", "transformer.h.1.mlp.c_proj.bias",
                     "transformer.ln_f.weight", "transformer.ln_f.bias"]
    with pytest.raises(ValueError, match="'transformer.h.7'"):
        modify.freeze(model, "transformer.h.7")
    with pytest.raises(ValueError, match="transformer.h.1"):
        modify.freeze(model, "transformer.h.1.attn.c_at")        # a prefix must end at a dot


def test_set_dropout():
    model = tiny_gpt()
    modify.set_dropout(model, 0.2)
    assert model.config.dropout == 0.2
    assert model.transformer.drop.p == 0.2 and model.transformer.h[0].mlp.dropout.p == 0.2
    assert model.transformer.h[0].attn.attn_dropout == 0.0     # fused attention kept
    modify.set_dropout(model, 0.1, attention=True)
    assert model.transformer.h[0].attn.attn_dropout == 0.1
