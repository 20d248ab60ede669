"""Attention dropout, fused: kernels.attention_forward_dropout / attention_backward_dropout.

    out = (P * keep / (1 - p)) v,   P = softmax(q k^T / sqrt(HS), causal),
    keep = ref.attention_dropout_keep(seed, B, NH, T, p)   (a hash: never stored)

Checked here: the C++ kernels against ref (both schedules, many shapes, same bits for any
thread count); ref against PyTorch's autograd given the same mask (values and gradients); the
mask's statistics; p = 0 is plain attention; errors; and ops.attention taking the fused path
in training, with a finite-difference gradient check through it.
"""

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import kernels, ops, ref

_C = pytest.importorskip("tinyroots._C", reason="the C++ extension is not built")

SEED = 0x1234_5678_9ABC_DEF0

# (B, T, C, NH, p): one head per thread-item and the split schedule (B NH < 2 x threads), key
# tiles crossed (T > 64), T = 1, head sizes 7 (no SIMD width divides it), 32, 64, 128, 256
SHAPES = [(2, 70, 64, 2, 0.1), (1, 130, 96, 3, 0.5), (3, 33, 32, 1, 0.9), (1, 1, 16, 1, 0.3),
          (2, 37, 21, 3, 0.2), (4, 64, 768, 12, 0.1), (1, 200, 256, 1, 0.25),
          (2, 129, 512, 2, 0.1)]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def close(got, want, rtol, atol, what):
    err = np.abs(got - want) - (atol + rtol * np.abs(want))
    assert err.max() <= 0, f"{what}: off by {np.abs(got - want).max():.3g}"


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_kernels_match_ref(shape):
    B, T, C, NH, p = shape
    rng = np.random.default_rng(B * T + C)
    qkv, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
    want_out, want_lse = ref.attention_forward_dropout(qkv.astype(np.float64), NH, p, SEED)
    out, lse = _C.attention_forward_dropout(qkv, NH, p, SEED)
    # as test_kernels.test_attention: out is a convex combination of v scaled by 1 / (1 - p)
    # (|v| ~ 3): absolute 1e-5 / (1 - p); lse is the softmax's: 1e-5
    close(out, want_out, 1e-5, 1e-5 / (1 - p), "attention_forward_dropout out")
    close(lse, want_lse, 1e-5, 1e-5, "attention_forward_dropout lse")
    want = ref.attention_backward_dropout(dout.astype(np.float64), qkv.astype(np.float64),
                                          want_out, want_lse, NH, p, SEED)
    got = _C.attention_backward_dropout(dout, qkv, out, lse, NH, p, SEED)
    # sums of T products of O(1 / (1 - p)) terms: relative 1e-4 of the largest gradient
    close(got, want, 1e-4, 1e-5 * np.abs(want).max(), "attention_backward_dropout")
    # another seed draws another mask, so another output
    assert not np.allclose(_C.attention_forward_dropout(qkv, NH, p, SEED + 1)[0], out)


def test_same_bits_for_any_thread_count():
    rng = np.random.default_rng(3)
    before = tr.get_num_threads()
    for B, T, C, NH in [(1, 200, 64, 1), (4, 64, 256, 4)]:  # the split and per-head schedules
        qkv, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
        results = []
        try:
            for n in (1, 2, 3):
                tr.set_num_threads(n)
                out, lse = _C.attention_forward_dropout(qkv, NH, 0.2, SEED)
                results.append((out, lse, _C.attention_backward_dropout(dout, qkv, out, lse,
                                                                        NH, 0.2, SEED)))
        finally:
            tr.set_num_threads(before)
        for r in results[1:]:
            for a, b in zip(r, results[0]):
                assert np.array_equal(a, b)


def test_p_zero_is_plain_attention():
    rng = np.random.default_rng(4)
    qkv, dout = rand(rng, 2, 90, 3 * 64), rand(rng, 2, 90, 64)
    out, lse = _C.attention_forward_dropout(qkv, 2, 0.0, SEED)
    plain_out, plain_lse = _C.attention_forward(qkv, 2)
    assert np.array_equal(out, plain_out) and np.array_equal(lse, plain_lse)
    assert np.array_equal(_C.attention_backward_dropout(dout, qkv, out, lse, 2, 0.0, SEED),
                          _C.attention_backward(dout, qkv, out, lse, 2))


def test_ref_matches_torch_autograd_given_the_mask():
    # the derivation in ref.attention_backward_dropout, against PyTorch's autograd of the
    # written-out formula with the same mask; float64: 1e-10
    torch = pytest.importorskip("torch")
    B, T, C, NH, p = 2, 19, 24, 3, 0.3
    HS = C // NH
    rng = np.random.default_rng(5)
    qkv, dout = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))
    keep = torch.from_numpy(ref.attention_dropout_keep(SEED, B, NH, T, p))
    scale_d = float(np.float32(1 / (1 - p)))   # 1 / (1 - p) as the kernels hold it: float32
    x = torch.tensor(qkv, requires_grad=True)
    q, k, v = (t.reshape(B, T, NH, HS).transpose(1, 2) for t in x.split(C, dim=-1))
    s = (q @ k.transpose(-1, -2)) / HS ** 0.5
    s = s.masked_fill(~torch.tril(torch.ones(T, T, dtype=torch.bool)), float("-inf"))
    pd = torch.softmax(s, dim=-1) * keep * scale_d
    y = (pd @ v).transpose(1, 2).reshape(B, T, C)
    y.backward(torch.from_numpy(dout))
    out, lse = ref.attention_forward_dropout(qkv, NH, p, SEED)
    np.testing.assert_allclose(out, y.detach().numpy(), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(ref.attention_backward_dropout(dout, qkv, out, lse, NH, p, SEED),
                               x.grad.numpy(), rtol=1e-10, atol=1e-10)


def test_the_mask_keeps_1_minus_p_independently():
    B, NH, T = 2, 3, 256
    n = B * NH * T * T
    for p in (0.1, 0.5, 0.9):
        keep = ref.attention_dropout_keep(SEED, B, NH, T, p)
        # the kept share within 6 standard deviations of 1 - p (it cannot fail by chance)
        assert abs(keep.mean() - (1 - p)) < 6 * np.sqrt(p * (1 - p) / n)
        # two heads, two rows, two seeds: masks as unrelated as two independent draws, whose
        # agreement is p^2 + (1 - p)^2 on average
        agree = p * p + (1 - p) ** 2
        other = ref.attention_dropout_keep(SEED + 1, B, NH, T, p)
        for a, b in [(keep[0, 0], keep[0, 1]), (keep[0, 0, :-1], keep[0, 0, 1:]),
                     (keep, other)]:
            assert abs((a == b).mean() - agree) < 6 * np.sqrt(agree * (1 - agree) / a.size)


def test_bad_input_is_one_clear_error():
    qkv = np.zeros((1, 4, 3 * 8), np.float32)
    for p in (-0.1, 1.0, float("nan")):
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
            _C.attention_forward_dropout(qkv, 2, p, SEED)
        with pytest.raises(ValueError, match=r"p must be in \[0, 1\)"):
            ref.attention_forward_dropout(qkv, 2, p, SEED)
    big = np.zeros((1, 4, 3 * 300), np.float32)
    with pytest.raises(ValueError, match="head size 300"):
        _C.attention_forward_dropout(big, 1, 0.1, SEED)
    with pytest.raises(ValueError, match="qkv"):
        _C.attention_forward_dropout(np.zeros((1, 4, 10), np.float32), 2, 0.1, SEED)


def test_ops_attention_is_fused_in_training_and_its_gradient_checks(monkeypatch):
    calls = []
    fused = kernels.attention_forward_dropout
    monkeypatch.setattr(kernels, "attention_forward_dropout",
                        lambda *a: calls.append(a[2:]) or fused(*a))
    B, T, C, NH, p = 2, 9, 12, 2, 0.4
    rng = np.random.default_rng(6)
    x0, w = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))

    def loss(x):
        tr.manual_seed(7)                # the same seed is drawn, so the same mask each time
        y = ops.attention(tr.Tensor(x, dtype=np.float64), NH, p, training=True)
        return float((y.data * w).sum())

    # float64 (the reference kernels; the C++ ones are checked against them above), so that
    # central differences with eps = 1e-6 agree to ~1e-9
    x = tr.Tensor(x0.copy(), requires_grad=True, dtype=np.float64)
    tr.manual_seed(7)
    y = ops.attention(x, NH, p, training=True)
    (y * tr.Tensor(w, dtype=np.float64)).sum().backward()
    assert calls and calls[0][0] == p
    eps, h = 1e-6, np.zeros_like(x0)
    for idx in [(0, 0, 0), (1, 8, 5), (0, 4, 13), (1, 6, 30), (0, 8, 35)]:
        h[idx] = eps
        numeric = (loss(x0 + h) - loss(x0 - h)) / (2 * eps)
        h[idx] = 0.0
        assert abs(numeric - x.grad[idx]) <= 1e-6 * max(1.0, abs(numeric)), idx
    # evaluation, or p = 0: no dropout at all
    assert np.array_equal(ops.attention(x0, NH, p, training=False).data,
                          ops.attention(x0, NH).data)


def test_a_model_with_dropout_trains_on_the_fused_kernels(monkeypatch):
    calls = []
    fused = kernels.attention_backward_dropout
    monkeypatch.setattr(kernels, "attention_backward_dropout",
                        lambda *a: calls.append(1) or fused(*a))
    tr.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=2, n_head=2, n_embd=32, vocab_size=50, block_size=32,
                                dropout=0.1))
    model.train()
    opt = tr.optim.AdamW(model.parameters(), lr=3e-3)
    ids = np.random.default_rng(8).integers(0, 50, (4, 32))
    losses = []
    for _ in range(30):
        out = model(ids, labels=ids)
        losses.append(float(out.loss))
        out.loss.backward()
        opt.step()
        opt.zero_grad()
    assert len(calls) == 30 * 2                        # every layer's attention, every step
    assert np.mean(losses[-5:]) < losses[0] - 1.0      # it memorises the batch
