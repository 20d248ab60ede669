"""The whole GPT against PyTorch twins (an own one and Hugging Face's), plus model behaviour."""

import math

import numpy as np
import pytest

import tinyroots as tr
from tinyroots.model import KVCache, sample_next

torch = pytest.importorskip("torch")
F = torch.nn.functional

# float32 end to end: each op's float32 rounding (~6e-8 relative) compounds through a few layers
# and the long reductions of matmuls; 1e-4 relative to each tensor's largest entry is the bound
# the project promises (it fails loudly on any real mistake, e.g. a missing bias or mask).
REL_TOL = 1e-4

SMALL = dict(n_layer=3, n_head=4, n_embd=32, vocab_size=97, block_size=24)


def rel_err(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


def torch_twin_forward(params, cfg, ids, labels):
    """An independent GPT-2 in PyTorch, written from the paper's equations, not from ours."""
    B, T = ids.shape
    C, NH = cfg.n_embd, cfg.n_head
    p = params
    x = p["transformer.wte.weight"][ids] + p["transformer.wpe.weight"][torch.arange(T)]
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    for i in range(cfg.n_layer):
        pre = f"transformer.h.{i}."
        h = F.layer_norm(x, (C,), p[pre + "ln_1.weight"], p[pre + "ln_1.bias"], 1e-5)
        qkv = h @ p[pre + "attn.c_attn.weight"] + p[pre + "attn.c_attn.bias"]
        q, k, v = qkv.split(C, dim=-1)
        q, k, v = [t.view(B, T, NH, C // NH).transpose(1, 2) for t in (q, k, v)]
        att = (q @ k.transpose(-2, -1)) / math.sqrt(C // NH)
        att = att.masked_fill(~mask, float("-inf")).softmax(-1)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        x = x + y @ p[pre + "attn.c_proj.weight"] + p[pre + "attn.c_proj.bias"]
        h = F.layer_norm(x, (C,), p[pre + "ln_2.weight"], p[pre + "ln_2.bias"], 1e-5)
        h = F.gelu(h @ p[pre + "mlp.c_fc.weight"] + p[pre + "mlp.c_fc.bias"], approximate="tanh")
        x = x + h @ p[pre + "mlp.c_proj.weight"] + p[pre + "mlp.c_proj.bias"]
    x = F.layer_norm(x, (C,), p["transformer.ln_f.weight"], p["transformer.ln_f.bias"], 1e-5)
    logits = x @ p["transformer.wte.weight"].T
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, cfg.vocab_size), labels[:, 1:].reshape(-1),
                           ignore_index=-100)
    return loss, logits


def make_batch(cfg, B=3, T=20, seed=0):
    rng = np.random.default_rng(seed)
    ids = rng.integers(0, cfg.vocab_size, (B, T))
    labels = ids.copy()
    labels[0, 3:7] = -100          # ignored positions must contribute nothing
    labels[-1, -5:] = -100
    return ids, labels


def test_gpt_matches_torch_twin_values_and_every_gradient():
    tr.manual_seed(0)
    cfg = tr.GPTConfig(**SMALL)
    model = tr.GPT(cfg)
    ids, labels = make_batch(cfg)
    out = model(ids, labels=labels)
    out.loss.backward()

    params = {n: torch.tensor(p.data.copy(), requires_grad=True)
              for n, p in model.named_parameters()}
    loss_t, logits_t = torch_twin_forward(params, cfg, torch.tensor(ids), torch.tensor(labels))
    loss_t.backward()

    assert rel_err(float(out.loss), loss_t.item()) < REL_TOL
    assert rel_err(out.logits.data, logits_t.detach().numpy()) < REL_TOL
    for name, p in model.named_parameters():
        err = rel_err(p.grad, params[name].grad.numpy())
        assert err < REL_TOL, f"gradient of {name}: relative error {err:.2e}"


def test_gpt_matches_hugging_face_gpt2():
    transformers = pytest.importorskip("transformers")
    tr.manual_seed(1)
    cfg = tr.GPTConfig(**SMALL)
    model = tr.GPT(cfg)
    hf_cfg = transformers.GPT2Config(**{k: v for k, v in cfg.to_hf_dict().items()
                                        if k not in ("architectures", "tinyroots")})
    hf = transformers.GPT2LMHeadModel(hf_cfg).eval()
    state = {n: torch.tensor(p.data.copy()) for n, p in model.named_parameters()}
    state["lm_head.weight"] = state["transformer.wte.weight"]
    missing, unexpected = hf.load_state_dict(state, strict=False)
    assert not unexpected and all(".attn.bias" in m or "masked_bias" in m for m in missing)

    ids, labels = make_batch(cfg, seed=3)
    out = model(ids, labels=labels)
    loss, logits = out[:2]
    loss.backward()
    hf_out = hf(torch.tensor(ids), labels=torch.tensor(labels))
    hf_out.loss.backward()
    assert rel_err(float(loss), hf_out.loss.item()) < REL_TOL
    assert rel_err(logits.data, hf_out.logits.detach().numpy()) < REL_TOL
    hf_params = dict(hf.named_parameters())
    for name, p in model.named_parameters():
        assert rel_err(p.grad, hf_params[name].grad.numpy()) < REL_TOL, name


def test_parameter_names_shapes_and_init():
    tr.manual_seed(0)
    cfg = tr.GPTConfig(n_layer=2, n_head=4, n_embd=64, vocab_size=300, block_size=32)
    model = tr.GPT(cfg)
    shapes = {n: p.shape for n, p in model.named_parameters()}
    assert shapes["transformer.h.0.attn.c_attn.weight"] == (64, 192)
    assert shapes["transformer.h.1.mlp.c_fc.weight"] == (64, 256)
    assert shapes["transformer.h.1.mlp.c_proj.weight"] == (256, 64)
    assert shapes["transformer.wte.weight"] == (300, 64)
    assert shapes["transformer.wpe.weight"] == (32, 64)
    assert "lm_head.weight" not in shapes          # tied to wte, stored once
    assert len(shapes) == 2 + 12 * 2 + 2
    p = dict(model.named_parameters())
    assert abs(p["transformer.h.0.attn.c_attn.weight"].data.std() - 0.02) < 0.002
    assert abs(p["transformer.h.0.mlp.c_proj.weight"].data.std() - 0.02 / math.sqrt(4)) < 0.002
    assert np.all(p["transformer.h.0.ln_1.weight"].data == 1)
    assert np.all(p["transformer.h.0.attn.c_attn.bias"].data == 0)
    # the 124M model has the famous parameter count (wpe excluded, wte counted once)
    assert tr.GPT(tr.GPTConfig()).get_num_params() == 124439808 - 1024 * 768


def test_no_bias_model_trains():
    cfg = tr.GPTConfig(**dict(SMALL, bias=False))
    model = tr.GPT(cfg)
    assert not any(n.endswith("bias") for n, _ in model.named_parameters())
    ids, labels = make_batch(cfg)
    model(ids, labels=labels).loss.backward()
    assert all(p.grad is not None for p in model.parameters())


def test_output_unpacks_like_hugging_face():
    model = tr.GPT(tr.GPTConfig(**SMALL))
    ids, _ = make_batch(model.config, B=1, T=5)
    out = model(ids)
    assert out.loss is None and len(out) == 1 and out[0] is out.logits
    out = model(ids, labels=ids)
    loss, logits = out[:2]
    assert loss is out.loss and logits.shape == (1, 5, 97) and out["loss"] is loss
    # labels are shifted inside; targets are aligned already
    t = np.concatenate([ids[:, 1:], [[-100]]], axis=1)
    assert abs(float(model(ids, targets=t).loss) - float(loss)) < 1e-6


def test_targets_loss_is_near_log_vocab_at_init():
    model = tr.GPT(tr.GPTConfig(**SMALL))
    ids, _ = make_batch(model.config)
    loss = float(model(ids, labels=ids).loss)
    assert abs(loss - math.log(97)) < 0.1


def test_bad_inputs_raise_clear_errors():
    model = tr.GPT(tr.GPTConfig(**SMALL))
    with pytest.raises(TypeError, match="input_ids must be integer token ids"):
        model(np.array([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="token id 97, outside the vocabulary"):
        model(np.array([[1, 97]]))
    with pytest.raises(ValueError, match="token id -1"):
        model(np.array([[1, -1]]))
    with pytest.raises(ValueError, match="longer than the model's context"):
        model(np.zeros((1, 25), dtype=np.int64))
    with pytest.raises(ValueError, match="labels has shape"):
        model(np.zeros((1, 5), dtype=np.int64), labels=np.zeros((1, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="neither a token id"):
        model(np.zeros((1, 5), dtype=np.int64), labels=np.full((1, 5), 500))
    with pytest.raises(ValueError, match="divisible"):
        tr.GPTConfig(n_embd=30, n_head=4)
    with pytest.raises(ValueError, match="n_layer must be a positive integer"):
        tr.GPTConfig(n_layer=0)
    # layernorm's eps: <= 0 or NaN gave a NaN loss on a constant row
    for eps in (0.0, -1e-5, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="layer_norm_epsilon must be a finite number > 0"):
            tr.GPTConfig(n_layer=1, n_head=1, n_embd=4, vocab_size=8, block_size=4,
                         layer_norm_epsilon=eps)
    # a shape whose weights cannot fit is refused before anything is allocated
    # (config.json n_positions 1e9 tried to allocate 238 GiB; n_layer 1e6 built layers until
    # memory ran out)
    with pytest.raises(ValueError, match=r"the weights alone need [\d,.]+ GiB"):
        tr.GPTConfig(block_size=10 ** 9)
    with pytest.raises(ValueError, match=r"GiB \(n_layer=1000000"):
        tr.GPTConfig(n_layer=10 ** 6)
    cfg = tr.GPTConfig(n_layer=2, n_head=2, n_embd=8, vocab_size=11, block_size=5)
    assert cfg.weight_bytes() == 4 * tr.GPT(cfg).num_parameters()
    with pytest.raises(ValueError, match="unknown key"):
        tr.GPTConfig.from_dict({"n_layers": 3})


# ---------------------------------------------------------------------------------------------
# generation


def test_kv_cache_matches_full_recompute():
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(**SMALL)).eval()
    ids, _ = make_batch(model.config, B=2, T=6)
    cache = KVCache(model.config, 2, model.config.block_size)
    model(ids[:, :4], kv_cache=cache)
    step = model(ids[:, 4:6], kv_cache=cache).logits.data
    full = model(ids).logits.data
    np.testing.assert_allclose(step, full[:, 4:6], rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("kwargs", [
    dict(),                                                       # greedy
    dict(do_sample=True, temperature=0.9, seed=7),
    dict(do_sample=True, top_k=5, seed=7),
    dict(do_sample=True, top_p=0.8, temperature=1.3, seed=7),
])
def test_cached_and_uncached_generation_agree(kwargs):
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(**SMALL))
    ids, _ = make_batch(model.config, B=2, T=5)
    a = model.generate(ids, max_new_tokens=30, use_cache=True, **kwargs)   # runs past block 24
    b = model.generate(ids, max_new_tokens=30, use_cache=False, **kwargs)
    assert a.shape == (2, 35)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a[:, :5], ids)
    assert model.training   # generate restores the mode it found


def test_generate_defaults_seeds_and_eos():
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(**SMALL))
    ids = np.array([[1, 2, 3]])
    assert model.generate(ids).shape == (1, 23)            # 20 new tokens, as transformers
    assert model.generate(ids, max_length=10).shape == (1, 10)
    s1 = model.generate(ids, max_new_tokens=10, do_sample=True, seed=3)
    s2 = model.generate(ids, max_new_tokens=10, do_sample=True, seed=3)
    s3 = model.generate(ids, max_new_tokens=10, do_sample=True, seed=4)
    np.testing.assert_array_equal(s1, s2)
    assert not np.array_equal(s1, s3)
    np.testing.assert_array_equal(model.generate(ids, max_new_tokens=8, do_sample=True,
                                                 temperature=0),
                                  model.generate(ids, max_new_tokens=8))
    greedy = model.generate(ids, max_new_tokens=5)
    eos = int(greedy[0, 3])                                # the first generated token
    stopped = model.generate(ids, max_new_tokens=5, eos_token_id=eos)
    assert stopped.shape == (1, 4) and stopped[0, -1] == eos
    seen = []
    model.generate(ids, max_new_tokens=4, streamer=seen.append)
    assert len(seen) == 4 and all(s.shape == (1,) for s in seen)
    with pytest.raises(ValueError, match="top_p"):
        model.generate(ids, do_sample=True, top_p=0.0)
    with pytest.raises(TypeError, match="unsupported"):
        model.generate(ids, num_beams=4)


def test_sample_next_filters():
    logits = np.log(np.array([[0.5, 0.3, 0.15, 0.05]]))
    rng = np.random.default_rng(0)
    draws = [int(sample_next(logits, False, 1.0, top_k=2, rng=rng)[0]) for _ in range(300)]
    assert set(draws) == {0, 1}
    draws = [int(sample_next(logits, False, 1.0, top_p=0.7, rng=rng)[0]) for _ in range(300)]
    assert set(draws) == {0, 1}                         # 0.5 < 0.7 needs the second token
    draws = [int(sample_next(logits, False, 1.0, top_p=0.5, rng=rng)[0]) for _ in range(100)]
    assert set(draws) == {0}
    draws = [int(sample_next(logits, False, 1.0, rng=rng)[0]) for _ in range(4000)]
    freq = np.bincount(draws, minlength=4) / 4000
    np.testing.assert_allclose(freq, [0.5, 0.3, 0.15, 0.05], atol=0.03)
    assert int(sample_next(logits, True)[0]) == 0
