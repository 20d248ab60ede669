"""generate(): padded batches (attention_mask), scores, and its argument checks.

Checked against transformers' GPT2LMHeadModel.generate on the same weights, and against each
row generated alone.
"""

import math

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.model import KVCache, decode_rows, warp_logits

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

# float32 logits of a 2-layer model computed by two implementations (different summation
# orders in matmul and softmax): they agree to ~1e-6 relative; 1e-4 leaves room and still
# catches any real difference (a wrong position or mask changes logits by O(1))
REL_TOL = 1e-4


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    """The same random GPT-2 in tinyroots and in transformers."""
    tr.manual_seed(0)
    cfg = tr.GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=97, block_size=48)
    model = tr.GPT(cfg)
    # larger weights than GPT-2's init, so the logits are far from uniform and greedy
    # choices are clear (no near-ties that float32 rounding could flip)
    for p in model.parameters():
        p.data *= 4.0
    path = tmp_path_factory.mktemp("gen")
    model.save_pretrained(path)
    model = tr.GPT.from_pretrained(path)
    hf = transformers.GPT2LMHeadModel.from_pretrained(path).eval()
    return model, hf


PROMPTS = [[5, 17, 3, 60, 2, 9], [44, 8], [70, 71, 72, 1]]


def left_padded(prompts, pad=0):
    T = max(len(p) for p in prompts)
    ids = np.array([[pad] * (T - len(p)) + p for p in prompts], dtype=np.int64)
    mask = np.array([[0] * (T - len(p)) + [1] * len(p) for p in prompts], dtype=np.int64)
    return ids, mask


def test_greedy_scores_equal_transformers_output_scores(pair):
    model, hf = pair
    ids = np.array([PROMPTS[0], PROMPTS[0][::-1]])
    out = model.generate(ids, max_new_tokens=8, output_scores=True,
                         return_dict_in_generate=True, eos_token_id=None)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), max_new_tokens=8, do_sample=False,
                          output_scores=True, return_dict_in_generate=True,
                          pad_token_id=0, eos_token_id=None)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    assert len(out.scores) == len(ref.scores) == 8
    for ours, theirs in zip(out.scores, ref.scores):
        assert ours.shape == (2, 97) and ours.dtype == np.float32
        assert rel_err(ours, theirs.numpy()) < REL_TOL
    assert out["sequences"] is out.sequences and out[0] is out.sequences


def test_sampled_scores_are_the_warped_logits(pair):
    model, _ = pair
    ids = np.array([PROMPTS[1]])
    out = model.generate(ids, max_new_tokens=5, do_sample=True, temperature=0.7, top_k=5,
                         seed=1, output_scores=True, return_dict_in_generate=True)
    for i, s in enumerate(out.scores):
        assert np.isfinite(s).sum() == 5                      # top_k=5 kept, the rest -inf
        assert np.isfinite(s[0, out.sequences[0, 2 + i]])     # the drawn token was kept
    # scores without return_dict_in_generate: just the ids, as transformers
    plain = model.generate(ids, max_new_tokens=5, do_sample=True, temperature=0.7, top_k=5,
                           seed=1, output_scores=True)
    np.testing.assert_array_equal(plain, out.sequences)
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    z = warp_logits(logits, 1.0, top_p=0.7)                   # 0.5 < 0.7 needs a second token
    assert np.isfinite(z).tolist() == [[True, True, False, False]]


def test_left_padded_batch_equals_each_row_alone_and_transformers(pair):
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    batch = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None)
    assert batch.shape == (3, ids.shape[1] + 12)
    for row, prompt in enumerate(PROMPTS):
        alone = model.generate(np.array([prompt]), max_new_tokens=12, eos_token_id=None)
        np.testing.assert_array_equal(batch[row, ids.shape[1]:], alone[0, len(prompt):])
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                          max_new_tokens=12, do_sample=False, pad_token_id=0, eos_token_id=None)
    np.testing.assert_array_equal(batch, ref.numpy())
    # without the cache: the same tokens
    slow = model.generate(ids, attention_mask=mask, max_new_tokens=12, eos_token_id=None,
                          use_cache=False)
    np.testing.assert_array_equal(slow, batch)
    # the mask is not ignored: without it the padded rows continue differently
    unmasked = model.generate(ids, max_new_tokens=12, eos_token_id=None)
    assert not np.array_equal(unmasked[1:], batch[1:])


def test_padded_scores_and_eos_padding_match_transformers(pair):
    model, hf = pair
    ids, mask = left_padded(PROMPTS)
    first = model.generate(ids, attention_mask=mask, max_new_tokens=3, eos_token_id=None)
    eos = int(first[1, -2])                # row 1's second new token: it stops there
    out = model.generate(ids, attention_mask=mask, max_new_tokens=10, eos_token_id=eos,
                         pad_token_id=0, output_scores=True, return_dict_in_generate=True)
    with torch.no_grad():
        ref = hf.generate(torch.tensor(ids), attention_mask=torch.tensor(mask),
                          max_new_tokens=10, do_sample=False, pad_token_id=0,
                          eos_token_id=eos, output_scores=True, return_dict_in_generate=True)
    np.testing.assert_array_equal(out.sequences, ref.sequences.numpy())
    for ours, theirs in zip(out.scores, ref.scores):
        assert rel_err(ours, theirs.numpy()) < REL_TOL


def test_decode_rows_gives_each_row_its_logits_alone():
    """16 rows of different lengths in one step: bit-equal to each row alone (ROWS_PER_PASS)."""
    tr.manual_seed(1)
    cfg = tr.GPTConfig(n_layer=2, n_head=6, n_embd=384, vocab_size=65, block_size=64)
    model = tr.GPT(cfg).eval()
    rng = np.random.default_rng(0)
    prompts = [rng.integers(0, 65, (1, n)) for n in rng.integers(1, 20, 16)]
    caches = [KVCache(cfg, 1, 64) for _ in prompts]
    for p, c in zip(prompts, caches):
        model(p, kv_cache=c)
    nxt = rng.integers(0, 65, 16)
    together = decode_rows(model, nxt, caches)
    for i, p in enumerate(prompts):
        c = KVCache(cfg, 1, 64)
        model(p, kv_cache=c)
        alone = model(np.array([[nxt[i]]]), kv_cache=c).logits.data[:, -1]
        np.testing.assert_array_equal(together[i:i + 1], alone)
        assert caches[i].length == p.shape[1] + 1


def test_prefill_groups_keep_each_prompt_on_its_side_of_few_rows():
    from tinyroots.model import FEW_ROWS, PACKED_ROWS_MAX, prefill_groups
    assert FEW_ROWS == 16
    lengths = [3, 40, 9, 16, 5, 17, 2, 4000, 300]
    groups = prefill_groups(lengths)
    assert sorted(i for g in groups for i in g) == list(range(len(lengths)))
    for g in groups:
        sizes = [lengths[i] for i in g]
        if max(sizes) <= FEW_ROWS:                  # short prompts: all of them few-rows
            assert sum(sizes) <= FEW_ROWS
        else:                                       # long ones: all of them packed
            assert min(sizes) > FEW_ROWS
            assert len(g) == 1 or sum(sizes) <= PACKED_ROWS_MAX
    assert [3, 9] in [[lengths[i] for i in g] for g in groups]     # 3 + 9 share; + 16 would not


@pytest.mark.parametrize("weights, n_embd", [("fp32", 384), ("fp32", 30), ("bf16", 384)])
def test_prefill_rows_gives_each_prompt_its_logits_alone(weights, n_embd):
    """Prompts run together (packed side by side, or several short ones in a few-rows pass):
    each prompt's logits and cache bit-equal to running it alone. n_embd 30 leaves vector
    tails in every row-wise kernel."""
    from tinyroots.model import prefill_rows
    tr.manual_seed(2)
    cfg = tr.GPTConfig(n_layer=2, n_head=6 if n_embd == 384 else 3, n_embd=n_embd,
                       vocab_size=65, block_size=128)
    model = tr.GPT(cfg).eval()
    if weights == "bf16":
        model.bf16_weights()
    rng = np.random.default_rng(3)
    lengths = [3, 40, 9, 17, 33, 1, 64, 5, 100, 2]
    prompts = [rng.integers(0, 65, n) for n in lengths]
    caches = [KVCache(cfg, 1, 128) for _ in prompts]
    together = prefill_rows(model, prompts, caches)
    assert together.shape == (len(prompts), 65)
    for i, p in enumerate(prompts):
        c = KVCache(cfg, 1, 128)
        alone = model(p[None], kv_cache=c, last_only=True).logits.data[:, -1]
        np.testing.assert_array_equal(together[i:i + 1], alone, err_msg=f"prompt {i}")
        assert caches[i].length == len(p)
        for layer in range(cfg.n_layer):
            np.testing.assert_array_equal(caches[i].k[layer], c.k[layer])
            np.testing.assert_array_equal(caches[i].v[layer], c.v[layer])
    with pytest.raises(ValueError, match=r"prompts\[1\] contains token id 65"):
        prefill_rows(model, [prompts[0], [1, 65]], [KVCache(cfg, 1, 128) for _ in range(2)])
    with pytest.raises(ValueError, match="exceed its size 8"):
        prefill_rows(model, [prompts[1]], [KVCache(cfg, 1, 8)])


@pytest.mark.parametrize("kwargs, match", [
    (dict(do_sample=True, temperature=math.nan), "temperature"),
    (dict(do_sample=True, temperature=math.inf), "temperature"),
    (dict(do_sample=True, temperature="hot"), "temperature"),
    (dict(do_sample=True, top_k=2.5), "top_k"),
    (dict(do_sample=True, top_k=0), "top_k"),
    (dict(do_sample=True, top_p=math.nan), "top_p"),
    (dict(eos_token_id=-1), "eos_token_id"),
    (dict(pad_token_id=-3), "pad_token_id"),
    (dict(max_length=2.5), "max_length"),
    (dict(seed=-1), "seed"),
    (dict(attention_mask=[[1, 0, 1]]), "left padding"),
    (dict(attention_mask=[[1, 1]]), "shape"),
    (dict(attention_mask=[[0, 0, 0]]), "no token"),
    (dict(attention_mask=[[2, 1, 1]]), "only 0"),
])
def test_bad_arguments_are_clear_errors(pair, kwargs, match):
    model, _ = pair
    with pytest.raises(ValueError, match=match):
        model.generate(np.array([[1, 2, 3]]), max_new_tokens=2, **kwargs)


def test_unsupported_keywords_and_empty_batches(pair):
    model, _ = pair
    with pytest.raises(TypeError, match="repetition_penalty"):
        model.generate(np.array([[1, 2]]), repetition_penalty=1.2)
    with pytest.raises(TypeError, match="num_beams=3"):
        model.generate(np.array([[1, 2]]), num_beams=3)
    with pytest.raises(ValueError, match="empty batch"):
        model.generate(np.zeros((0, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="longest prompt"):
        model.generate(np.array([[0, 1, 2]]), attention_mask=[[0, 1, 1]], max_new_tokens=60)
