"""forward(output_attentions=True, output_hidden_states=True) against transformers' GPT-2.

The attention weights are recomputed in NumPy from q and k (the fused kernel keeps none), so they
are checked against transformers' eager attention, which materialises them the same way.
"""

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.model import attention_weights

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")

# float32 end to end; weights are sums of T <= 24 exps and hidden states pass through <= 4
# blocks of 64-wide products: a few ulps of 1.0 each (measured ~1e-6), so 2e-5 absolute
ATOL = 2e-5


@pytest.mark.parametrize("n_layer,n_head,n_embd,T,B", [(1, 1, 8, 1, 1), (2, 4, 32, 9, 2),
                                                       (4, 2, 64, 24, 3)])
def test_attentions_and_hidden_states_match_transformers(tmp_path, n_layer, n_head, n_embd, T, B):
    cfg = tr.GPTConfig(n_layer=n_layer, n_head=n_head, n_embd=n_embd, vocab_size=97,
                       block_size=32, initializer_range=0.2)   # larger weights: peaky softmaxes
    model = tr.GPT(cfg).eval()
    model.save_pretrained(tmp_path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(tmp_path, attn_implementation="eager")
    hf.eval()
    ids = np.random.default_rng(n_layer).integers(0, 97, (B, T))

    out = model(ids, output_attentions=True, output_hidden_states=True)
    with torch.no_grad():
        ref = hf(torch.tensor(ids), output_attentions=True, output_hidden_states=True)

    assert len(out.attentions) == n_layer == len(ref.attentions)
    assert len(out.hidden_states) == n_layer + 1 == len(ref.hidden_states)
    for ours, theirs in zip(out.attentions, ref.attentions):
        assert ours.shape == (B, n_head, T, T)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=ATOL, rtol=0)
    for ours, theirs in zip(out.hidden_states, ref.hidden_states):
        assert ours.shape == (B, T, n_embd)
        np.testing.assert_allclose(ours, theirs.numpy(), atol=ATOL, rtol=1e-5)
    np.testing.assert_allclose(out.logits.data, ref.logits.numpy(), atol=1e-4, rtol=1e-4)


def test_weights_are_causal_rows_of_probabilities():
    qkv = np.random.default_rng(0).standard_normal((2, 6, 3 * 8)).astype(np.float32)
    w = attention_weights(qkv, 2)
    assert w.shape == (2, 2, 6, 6)
    np.testing.assert_allclose(w.sum(-1), 1.0, atol=1e-6)   # float32 sums of <= 6 terms
    assert (w[..., np.triu_indices(6, 1)[0], np.triu_indices(6, 1)[1]] == 0).all()
    assert (w[:, :, 0, 0] == 1).all()                       # the first token sees only itself


def test_not_asked_means_not_computed_and_tuple_order():
    model = tr.GPT(tr.GPTConfig(n_layer=2, n_head=2, n_embd=16, vocab_size=50, block_size=8))
    ids = np.arange(5)[None]
    plain = model(ids)
    assert plain.attentions is None and plain.hidden_states is None and len(plain) == 1
    out = model(ids, labels=ids, output_hidden_states=True)
    assert out.attentions is None and len(out.hidden_states) == 3
    loss, logits, hidden = out[:3]          # Hugging Face's order: loss, logits, hidden_states
    assert hidden is out.hidden_states and logits is out.logits
    np.testing.assert_array_equal(model(ids).logits.data, logits.data)


def test_attentions_with_a_kv_cache_is_a_clear_error():
    model = tr.GPT(tr.GPTConfig(n_layer=1, n_head=2, n_embd=16, vocab_size=50, block_size=8))
    cache = tr.model.KVCache(model.config, 1, 8)
    with pytest.raises(ValueError, match="output_attentions=True cannot be combined"):
        model.eval()(np.arange(3)[None], kv_cache=cache, output_attentions=True)
