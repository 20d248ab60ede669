"""The C++ kernels (tinyroots._C) against their NumPy specification (tinyroots.ref), and ref
against PyTorch.

Every kernel is run on random inputs including awkward shapes (T = 1, prime sizes, C not a
multiple of 16, V = 50257, N = 1), on 1, 2 and 3 threads, and on each SIMD path (the AVX2 and
portable paths run this file again in a subprocess with TINYROOTS_ISA set). Tolerances are
written next to each comparison with the reason for them.

    pytest tests/test_kernels.py
"""

import os
import subprocess
import sys

import numpy as np
import pytest

from tinyroots import ref

_C = pytest.importorskip("tinyroots._C", reason="the C++ extension is not built")

THREADS = [1, 2, 3]


@pytest.fixture(params=THREADS, ids=lambda n: f"threads{n}")
def threads(request):
    """Run the test on n OpenMP threads; results must not depend on it."""
    before = _C.get_num_threads()
    _C.set_num_threads(request.param)
    yield request.param
    _C.set_num_threads(before)


def rand(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def close(got, want, rtol, atol, what=""):
    """assert_allclose with the worst error in the message."""
    got, want = np.asarray(got), np.asarray(want)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert got.dtype == want.dtype, f"{what}: dtype {got.dtype} != {want.dtype}"
    np.testing.assert_allclose(got, want, rtol=rtol, atol=atol, err_msg=what)


# ---------------------------------------------------------------------------------------------
# the vectorized exp every softmax-like kernel uses


def test_exp_approx_max_error():
    # stated in csrc/vecmath.h: max relative error 8.6e-8 (1.5 ulp) on [-87.33, 88.37]
    x = np.linspace(-87.33, 88.37, 3_000_001, dtype=np.float32)
    x = np.concatenate([x, np.float32(1e-3) * rand(np.random.default_rng(0), 100_000)])
    got = _C._exp_approx(x).astype(np.float64)
    want = np.exp(x.astype(np.float64))
    assert np.max(np.abs(got - want) / want) < 9e-8


def test_exp_approx_edges():
    x = np.array([-np.inf, -1000.0, -88.0, 0.0, np.nan, 1000.0, np.inf], dtype=np.float32)
    y = _C._exp_approx(x)
    assert y[0] == 0 and y[1] == 0 and y[2] == 0      # underflow is 0: masked softmax needs it
    assert y[3] == 1.0
    assert np.isnan(y[4])                              # NaN propagates
    assert np.isfinite(y[5]) and y[5] > 2e38           # saturates instead of inf


# ---------------------------------------------------------------------------------------------
# GELU

GELU_SHAPES = [(1,), (7,), (3, 17), (2, 5, 33), (1000, 13), (64, 3072)]


@pytest.mark.parametrize("shape", GELU_SHAPES, ids=str)
def test_gelu(threads, shape):
    rng = np.random.default_rng(1)
    x = rand(rng, *shape, scale=3.0)
    x.flat[0] = -12.0   # deep in the tail, where ref's float32 1 + tanh(u) cancels to 0
    dout = rand(rng, *shape)
    # The spec is ref's formula; evaluated in float32 it cancels in its tails (1 + tanh(u) and
    # 1 - tanh(u)^2 lose most bits for x < -3: up to ~5e-6 absolute in the gradient). So compare
    # with ref evaluated in float64: ours (x * sigmoid(2u), a 1.5-ulp exp) is within a few ulp.
    x64, dout64 = x.astype(np.float64), dout.astype(np.float64)
    close(_C.gelu_forward(x).astype(np.float64), ref.gelu_forward(x64), 1e-5, 1e-6,
          "gelu_forward")
    close(_C.gelu_backward(dout, x).astype(np.float64), ref.gelu_backward(dout64, x64), 1e-5,
          1e-6, "gelu_backward")
    # and with ref in float32, within ref's own float32 error
    close(_C.gelu_backward(dout, x), ref.gelu_backward(dout, x), 1e-5, 1e-5, "gelu_backward f32")


def test_gelu_more_accurate_than_float32_ref():
    x = np.linspace(-10, 10, 20001, dtype=np.float32)
    truth = ref.gelu_forward(x.astype(np.float64))
    err_c = np.abs(_C.gelu_forward(x) - truth).max()
    assert err_c < 2e-6
    assert err_c <= np.abs(ref.gelu_forward(x) - truth).max() * 1.5


# ---------------------------------------------------------------------------------------------
# softmax and log-softmax

SOFTMAX_SHAPES = [(1, 1), (5,), (3, 5, 7), (2, 1000), (4, 12, 31, 31), (2, 50257)]


@pytest.mark.parametrize("shape", SOFTMAX_SHAPES, ids=str)
def test_softmax(threads, shape):
    rng = np.random.default_rng(2)
    x = rand(rng, *shape, scale=4.0)
    dout = rand(rng, *shape)
    # all four are sums of at most V terms in (0, 1] with a 1.5-ulp exp: relative 1e-5
    y = ref.softmax_forward(x)
    close(_C.softmax_forward(x), y, 1e-5, 1e-7, "softmax_forward")
    close(_C.softmax_backward(dout, y), ref.softmax_backward(dout, y), 1e-5, 1e-6,
          "softmax_backward")
    ly = ref.log_softmax_forward(x)
    # y = x - lse: lse is a float32 sum of up to 50257 exps, summed in another order than
    # NumPy's pairwise sum (8 or 16 lanes, then chunks): ~1e-6 relative, 2e-5 absolute at V=50257
    close(_C.log_softmax_forward(x), ly, 1e-5, 2e-5, "log_softmax_forward")
    close(_C.log_softmax_backward(dout, ly), ref.log_softmax_backward(dout, ly), 1e-5, 1e-5,
          "log_softmax_backward")


def test_softmax_masked_and_large():
    x = np.array([[0.0, -np.inf, 1.0, -np.inf], [1e4, 1e4 - 1, -1e4, 1e4]], dtype=np.float32)
    y = _C.softmax_forward(x)
    assert y[0, 1] == 0 and y[0, 3] == 0                  # exp(-inf) is exactly 0
    close(y, ref.softmax_forward(x), 1e-6, 1e-7, "masked softmax")
    close(_C.log_softmax_forward(x[1:]), ref.log_softmax_forward(x[1:]), 1e-6, 1e-3,
          "log_softmax of 1e4")                              # no overflow, ulp(1e4) ~ 1e-3


def test_softmax_noncontiguous_input():
    x = rand(np.random.default_rng(3), 8, 20)
    view = x[:, ::2]
    close(_C.softmax_forward(view), ref.softmax_forward(view), 1e-6, 1e-7, "strided softmax")


# ---------------------------------------------------------------------------------------------
# layernorm

LN_SHAPES = [(1, 1), (1, 13), (7, 768), (3, 5, 37), (257, 100), (1100, 48)]


@pytest.mark.parametrize("shape", LN_SHAPES, ids=str)
@pytest.mark.parametrize("bias", [True, False], ids=["bias", "nobias"])
def test_layernorm(threads, shape, bias):
    rng = np.random.default_rng(4)
    C = shape[-1]
    x = rand(rng, *shape, scale=2.0) + np.float32(3.0)  # an offset mean: tests the two-pass var
    w, b = rand(rng, C), (rand(rng, C) if bias else None)
    dout = rand(rng, *shape)
    want = ref.layernorm_forward(x, w, b)
    got = _C.layernorm_forward(x, w, b)
    # float32 sums over C <= 768 terms: relative 1e-5 (outputs are O(1))
    for g, r, name in zip(got, want, ["out", "mean", "rstd"]):
        close(g, r, 1e-5, 1e-5, f"layernorm_forward {name}")
    _, mean, rstd = want
    got = _C.layernorm_backward(dout, x, w, mean, rstd)
    want = ref.layernorm_backward(dout, x, w, mean, rstd)
    n = x.size // C
    # dw, db sum over n rows in another order than NumPy's pairwise sum: atol grows with sqrt(n)
    for g, r, name, atol in zip(got, want, ["dx", "dw", "db"], [1e-5, 2e-6 * n ** 0.5 + 1e-5,
                                                                 2e-6 * n ** 0.5 + 1e-5]):
        close(g, r, 1e-4, atol, f"layernorm_backward {name}")


def test_layernorm_backward_same_bits_for_any_thread_count():
    rng = np.random.default_rng(5)
    x, dout, w = rand(rng, 3000, 64), rand(rng, 3000, 64), rand(rng, 64)
    _, mean, rstd = ref.layernorm_forward(x, w)
    results = []
    for n in THREADS:
        _C.set_num_threads(n)
        results.append(_C.layernorm_backward(dout, x, w, mean, rstd))
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert np.array_equal(a, b)


def test_layernorm_default_arguments():
    x, w = rand(np.random.default_rng(6), 4, 8), np.ones(8, np.float32)
    close(_C.layernorm_forward(x, w)[0], ref.layernorm_forward(x, w)[0], 1e-5, 1e-5, "b=None")


# ---------------------------------------------------------------------------------------------
# cross-entropy

CE_SHAPES = [(1, 1), (1, 7), (5, 3), (13, 1001), (3, 50257), (64, 65)]


def ce_inputs(rng, N, V, ignore=True):
    logits = rand(rng, N, V, scale=3.0)
    targets = rng.integers(0, V, N)
    if ignore and N > 2:
        targets[1] = -100
    return logits, targets


@pytest.mark.parametrize("shape", CE_SHAPES, ids=str)
def test_cross_entropy(threads, shape):
    rng = np.random.default_rng(7)
    logits, targets = ce_inputs(rng, *shape)
    losses, lse = ref.cross_entropy_forward(logits, targets)
    # lse is a sum of V exps (relative 1e-6 each) then a log: absolute 1e-5 on values ~ 10
    for g, r, name in zip(_C.cross_entropy_forward(logits, targets), (losses, lse),
                          ["losses", "lse"]):
        close(g, r, 1e-5, 2e-5, f"cross_entropy_forward {name}")
    dl = rand(rng, shape[0])
    # probabilities: relative 1e-5 of each, absolute 1e-8 for the tiny ones
    close(_C.cross_entropy_backward(dl, logits, targets, lse),
          ref.cross_entropy_backward(dl, logits, targets, lse), 1e-5, 1e-8,
          "cross_entropy_backward")
    got = _C.cross_entropy_forward_backward(logits, targets)
    want = ref.cross_entropy_forward_backward(logits, targets)
    close(got[0], want[0], 1e-5, 2e-5, "cross_entropy_forward_backward losses")
    close(got[1], want[1], 1e-5, 1e-9, "cross_entropy_forward_backward dlogits")


def test_cross_entropy_inplace_and_int32():
    rng = np.random.default_rng(8)
    logits, targets = ce_inputs(rng, 9, 50257)
    want = ref.cross_entropy_forward_backward(logits, targets)
    buf = logits.copy()
    losses, dlogits = _C.cross_entropy_forward_backward(buf, targets.astype(np.int32),
                                                        inplace=True)
    assert dlogits is buf                               # the gradient overwrote the logits
    close(losses, want[0], 1e-5, 2e-5, "inplace losses")
    close(dlogits, want[1], 1e-5, 1e-9, "inplace dlogits")
    assert np.array_equal(logits, logits.copy())        # (the original is untouched)
    assert np.array_equal(_C.cross_entropy_forward(logits, targets.astype(np.int32))[0],
                          _C.cross_entropy_forward(logits, targets)[0])


def test_cross_entropy_all_ignored_and_custom_ignore_index():
    rng = np.random.default_rng(9)
    logits = rand(rng, 4, 10)
    targets = np.full(4, -100)
    losses, dlogits = _C.cross_entropy_forward_backward(logits, targets)
    assert np.all(losses == 0) and np.all(dlogits == 0)
    targets = np.array([3, 7, 7, 0])
    got = _C.cross_entropy_forward_backward(logits, targets, ignore_index=7)
    want = ref.cross_entropy_forward_backward(logits, targets, ignore_index=7)
    close(got[1], want[1], 1e-5, 1e-8, "ignore_index=7")


@pytest.mark.parametrize("bad", [10, -1, -101, 2**40])
def test_cross_entropy_rejects_bad_targets(bad):
    logits = np.zeros((3, 10), np.float32)
    targets = np.array([1, bad, 2])
    for call in (lambda: _C.cross_entropy_forward(logits, targets),
                 lambda: _C.cross_entropy_forward_backward(logits.copy(), targets, inplace=True),
                 lambda: _C.cross_entropy_backward(np.ones(3, np.float32), logits, targets,
                                                   np.zeros(3, np.float32))):
        with pytest.raises(ValueError, match=r"targets\[1\]"):
            call()


def test_cross_entropy_argument_errors():
    logits = np.zeros((3, 10), np.float32)
    with pytest.raises(TypeError, match="targets must be an integer array"):
        _C.cross_entropy_forward(logits, np.zeros(3, np.float32))
    with pytest.raises(ValueError, match="targets must have shape"):
        _C.cross_entropy_forward(logits, np.zeros(4, np.int64))
    with pytest.raises(ValueError, match="logits must be 2-D"):
        _C.cross_entropy_forward(np.zeros((2, 3, 10), np.float32), np.zeros(6, np.int64))
    with pytest.raises(ValueError, match="writeable, C-contiguous"):
        _C.cross_entropy_forward_backward(np.zeros((10, 3), np.float32).T, np.zeros(3, np.int64),
                                          inplace=True)


# ---------------------------------------------------------------------------------------------
# embedding


@pytest.mark.parametrize("ids_shape", [(), (1,), (7,), (2, 3, 5), (4, 256)], ids=str)
@pytest.mark.parametrize("V,C", [(1, 3), (50, 24), (50257, 37)])
def test_embedding(threads, ids_shape, V, C):
    rng = np.random.default_rng(10)
    weight = rand(rng, V, C)
    ids = rng.integers(0, min(V, 40), ids_shape)      # few distinct ids: many repeats
    # a lookup copies, and the scatter-add sums the same float32 values in position order, as
    # np.add.at does: exact for the forward, ulp-level for the backward
    assert np.array_equal(_C.embedding_forward(weight, ids), ref.embedding_forward(weight, ids))
    dout = rand(rng, *ids_shape, C)
    close(_C.embedding_backward(dout, ids, V), ref.embedding_backward(dout, ids, V), 1e-6, 1e-6,
          "embedding_backward")
    assert np.array_equal(_C.embedding_forward(weight, ids.astype(np.int32)),
                          ref.embedding_forward(weight, ids))


def test_embedding_backward_same_bits_for_any_thread_count():
    rng = np.random.default_rng(11)
    ids = rng.integers(0, 5, (4, 300))
    dout = rand(rng, 4, 300, 200)
    results = []
    for n in THREADS:
        _C.set_num_threads(n)
        results.append(_C.embedding_backward(dout, ids, 5))
    assert all(np.array_equal(r, results[0]) for r in results)


def test_embedding_rejects_out_of_range_ids():
    weight = np.zeros((10, 4), np.float32)
    for bad in (10, -1):
        with pytest.raises(ValueError, match="outside the vocabulary"):
            _C.embedding_forward(weight, np.array([[0, bad]]))
        with pytest.raises(ValueError, match="outside the vocabulary"):
            _C.embedding_backward(np.zeros((1, 2, 4), np.float32), np.array([[0, bad]]), 10)
    with pytest.raises(TypeError, match="integer"):
        _C.embedding_forward(weight, np.array([0.0, 1.0]))
    with pytest.raises(ValueError, match="dout must have shape"):
        _C.embedding_backward(np.zeros((3, 4), np.float32), np.array([0, 1]), 10)


# ---------------------------------------------------------------------------------------------
# attention

# (B, T, C, NH): T = 1, primes, HS = 7 (no SIMD width divides it), 16, 32, 64, 128, and 300
# (above kMaxTiledHS: the plain fallback); T > 64 crosses key tiles, T = 200 several.
ATTN_SHAPES = [(1, 1, 64, 1), (2, 37, 48, 3), (1, 5, 21, 3), (2, 130, 256, 4), (3, 65, 192, 3),
               (1, 129, 128, 1), (2, 67, 64, 4), (1, 200, 64, 1), (1, 70, 300, 1),
               (4, 64, 768, 12)]


@pytest.mark.parametrize("plain", [False, True], ids=["tiled", "plain"])
@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=str)
def test_attention(threads, shape, plain):
    # the kernels the model calls (tiled where they apply), and attention.cpp's plain loops
    forward = _C.attention_forward_plain if plain else _C.attention_forward
    backward = _C.attention_backward_plain if plain else _C.attention_backward
    B, T, C, NH = shape
    rng = np.random.default_rng(12)
    qkv = rand(rng, B, T, 3 * C)
    out, lse = ref.attention_forward(qkv, NH)
    got_out, got_lse = forward(qkv, NH)
    # out is a convex combination of v (|v| ~ 3): absolute 1e-5; lse sums <= T exps: 1e-5
    close(got_out, out, 1e-5, 1e-5, "attention_forward out")
    close(got_lse, lse, 1e-5, 1e-5, "attention_forward lse")
    dout = rand(rng, B, T, C)
    want = ref.attention_backward(dout, qkv, out, lse, NH)
    # dqkv sums T products of O(1) terms: relative 1e-4 of the largest gradient
    scale = np.abs(want).max()
    close(backward(dout, qkv, out, lse, NH), want, 1e-4, 1e-5 * scale, "attention_backward")


@pytest.mark.parametrize("shape", ATTN_SHAPES, ids=str)
@pytest.mark.parametrize("blocks", [(32, 64), (1, 1), (7, 5)], ids=str)
def test_ref_online_softmax_equals_the_full_softmax(shape, blocks):
    # the tiled algorithm (attention_tiled.h) in NumPy, against the full (T, T) matrix; both
    # float64, so they differ only by the order of the sums: 1e-12
    B, T, C, NH = shape
    qkv = np.random.default_rng(14).standard_normal((B, T, 3 * C))
    out, lse = ref.attention_forward(qkv, NH)
    got_out, got_lse = ref.attention_forward_online(qkv, NH, *blocks)
    np.testing.assert_allclose(got_out, out, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got_lse, lse, rtol=1e-12, atol=1e-12)
    assert ref.attention_forward_online(qkv.astype(np.float32), NH)[1].dtype == np.float32


def test_ref_attention_backward_is_softmax_backward_through_the_product():
    # the derivation in ref.attention_backward: dS = softmax_backward(dP, P) with
    # D = rowsum(dY * Y), checked against the chain of the primitive kernels, float64: 1e-12
    B, T, C, NH = 2, 11, 12, 2
    HS = C // NH
    rng = np.random.default_rng(15)
    qkv, dout = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))
    out, lse = ref.attention_forward(qkv, NH)
    q, k, v = ref._split_heads(qkv, NH)
    dy = dout.reshape(B, T, NH, HS).transpose(0, 2, 1, 3)
    s = np.where(np.tril(np.ones((T, T), bool)), q @ np.swapaxes(k, -1, -2) / np.sqrt(HS),
                 -np.inf)
    p = ref.softmax_forward(s)
    dp, dv = ref.matmul_backward(dy, p, v)                        # Y = P v
    ds = ref.softmax_backward(dp, p)                              # P = softmax(S)
    dq, dkt = ref.matmul_backward(ds / np.sqrt(HS), q, np.swapaxes(k, -1, -2))  # S = q k^T scale
    want = np.concatenate([d.transpose(0, 2, 1, 3).reshape(B, T, C)
                           for d in (dq, np.swapaxes(dkt, -1, -2), dv)], axis=-1)
    np.testing.assert_allclose(ref.attention_backward(dout, qkv, out, lse, NH), want,
                               rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("shape", [(1, 200, 64, 1), (4, 64, 768, 12), (1, 70, 300, 1)], ids=str)
def test_attention_same_bits_for_any_thread_count(shape):
    # forward and backward have two schedules each (one head per item, or split by tiles when
    # there are fewer heads than 2 x threads); both add the same terms in the same order
    B, T, C, NH = shape
    rng = np.random.default_rng(13)
    qkv, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
    results = []
    for n in THREADS:
        _C.set_num_threads(n)
        out, lse = _C.attention_forward(qkv, NH)
        results.append((out, lse, _C.attention_backward(dout, qkv, out, lse, NH)))
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert np.array_equal(a, b)


def test_attention_errors():
    with pytest.raises(ValueError, match="does not divide"):
        _C.attention_forward(np.zeros((1, 4, 30), np.float32), 4)
    with pytest.raises(ValueError, match="qkv must be 3-D"):
        _C.attention_forward(np.zeros((4, 30), np.float32), 2)
    with pytest.raises(ValueError, match="lse must have shape"):
        _C.attention_backward(np.zeros((1, 4, 10), np.float32), np.zeros((1, 4, 30), np.float32),
                              np.zeros((1, 4, 10), np.float32), np.zeros((1, 4), np.float32), 2)


@pytest.mark.parametrize("B,NH,Tq,Tk,HS,n_past", [(1, 12, 1, 1024, 64, 1023), (2, 3, 4, 10, 64, 6),
                                                  (1, 2, 1, 1, 16, 0), (2, 2, 5, 9, 7, 3),
                                                  (1, 4, 3, 40, 32, 30)])
def test_attention_decode(threads, B, NH, Tq, Tk, HS, n_past):
    rng = np.random.default_rng(14)
    q, k, v = rand(rng, B, NH, Tq, HS), rand(rng, B, NH, Tk, HS), rand(rng, B, NH, Tk, HS)
    # a softmax over <= 1024 scores then a convex combination of v: absolute 1e-5
    close(_C.attention_decode(q, k, v, n_past), ref.attention_decode(q, k, v, n_past), 1e-5,
          1e-5, "attention_decode")


def test_attention_decode_reads_cache_views_and_matches_forward():
    rng = np.random.default_rng(15)
    B, NH, T, HS = 2, 3, 11, 32
    cache = rand(rng, 2, B, NH, 20, HS)                 # a preallocated KV cache, half used
    k, v = cache[0, :, :, :T], cache[1, :, :, :T]       # strided views, not copies
    q = rand(rng, B, NH, 8, HS)[:, :, 2:5]
    close(_C.attention_decode(q, k, v, T - 3), ref.attention_decode(q, k, v, T - 3), 1e-5, 1e-5,
          "decode from views")
    # n_past = 0 with Tq = T is exactly causal attention
    qkv = rand(rng, B, T, 3 * NH * HS)
    heads = [a.reshape(B, T, NH, HS).transpose(0, 2, 1, 3) for a in np.split(qkv, 3, axis=-1)]
    dec = _C.attention_decode(*heads, 0).transpose(0, 2, 1, 3).reshape(B, T, NH * HS)
    close(dec, _C.attention_forward(qkv, NH)[0], 1e-5, 1e-6, "decode == forward")


def test_attention_decode_rows_is_each_row_alone(threads):
    # rows with their own caches (different sizes and lengths): each row bitwise what
    # attention_decode gives it alone, and the reference within the decode tolerance
    rng = np.random.default_rng(16)
    NH, HS, Tq = 3, 32, 1
    sizes, past = [9, 40, 17, 64], [0, 33, 16, 50]
    ks = [rand(rng, 1, NH, n, HS) for n in sizes]
    vs = [rand(rng, 1, NH, n, HS)[:, :, :] for n in sizes]
    q = rand(rng, len(sizes), NH, Tq, HS)
    got = _C.attention_decode_rows(q, ks, vs, past)
    for b in range(len(sizes)):
        np.testing.assert_array_equal(got[b:b + 1],
                                      _C.attention_decode(q[b:b + 1], ks[b], vs[b], past[b]))
    close(got, ref.attention_decode_rows(q, ks, vs, past), 1e-5, 1e-5, "attention_decode_rows")


def test_attention_decode_rows_appends_new_keys_first(threads):
    # with k_new, v_new: each row's new keys and values land in its own cache at n_past (as
    # ref writes them), and the attention is what it is when they were written beforehand
    rng = np.random.default_rng(17)
    NH, HS, Tq = 2, 16, 3
    sizes, past = [8, 20, 5], [2, 11, 0]
    ks = [rand(rng, 1, NH, n, HS) for n in sizes]
    vs = [rand(rng, 1, NH, n, HS) for n in sizes]
    q, k_new, v_new = (rand(rng, len(sizes), NH, Tq, HS) for _ in range(3))
    ref_ks, ref_vs = [k.copy() for k in ks], [v.copy() for v in vs]
    want = ref.attention_decode_rows(q, ref_ks, ref_vs, past, k_new=k_new, v_new=v_new)
    got = _C.attention_decode_rows(q, ks, vs, past, k_new=k_new, v_new=v_new)
    for b, n in enumerate(past):
        np.testing.assert_array_equal(ks[b], ref_ks[b])
        np.testing.assert_array_equal(ks[b][0, :, n:n + Tq], k_new[b])
        np.testing.assert_array_equal(vs[b][0, :, n:n + Tq], v_new[b])
    np.testing.assert_array_equal(got, _C.attention_decode_rows(q, ks, vs, past))
    close(got, want, 1e-5, 1e-5, "attention_decode_rows appending")


def test_large_outputs_start_apart_from_their_inputs_modulo_4k():
    # csrc/bindings.cpp output_apart: an elementwise kernel's large output starts far (modulo
    # 4 KB) from its inputs, so that its stores do not stall its loads ("4K aliasing"); it is
    # an ordinary, writeable, C-contiguous array that frees its memory with it. Only while
    # malloc is tuned (not in the sanitizer build, whose allocator is its own): then the
    # outputs are numpy's own allocations
    rng = np.random.default_rng(18)
    x, d = rand(rng, 512, 256), rand(rng, 512, 256)             # 512 KB each
    w, b = np.ones(256, np.float32), np.zeros(256, np.float32)

    def gap(out, *inputs):
        return min(min(g, 4096 - g) for g in ((out.ctypes.data - a.ctypes.data) % 4096
                                              for a in inputs))
    outs = {"gelu_forward": (_C.gelu_forward(x), (x,)),
            "gelu_backward": (_C.gelu_backward(d, x), (d, x)),
            "softmax_forward": (_C.softmax_forward(x), (x,)),
            "layernorm_forward": (_C.layernorm_forward(x, w, b, 1e-5)[0], (x,))}
    # the bf16 products too (their tile stores against the rows they pack: 10% of a bf16 step
    # of config (c)); the float32 ones measured slower placed so, and keep numpy's allocation
    W = rand(rng, 256, 256)
    pre, out = _C.linear_gelu_forward_bf16(x, W, b)
    outs.update({"linear_forward_bf16": (_C.linear_forward_bf16(x, W, b), (x,)),
                 "linear_gelu_forward_bf16 pre": (pre, (x,)),
                 "linear_gelu_forward_bf16 out": (out, (x, pre)),
                 "linear_backward_bf16 dx": (_C.linear_backward_bf16(d, x, W, True)[0], (d, x))})
    for name, (out, inputs) in outs.items():
        if _C.malloc_tuned:
            assert gap(out, *inputs) >= 1024, name
        else:
            assert out.flags.owndata, name
        assert out.flags.c_contiguous and out.flags.writeable and out.dtype == np.float32
    np.testing.assert_array_equal(outs["gelu_forward"][0], _C.gelu_forward(x.copy()))
    small = rand(rng, 4, 8)
    assert _C.gelu_forward(small).flags.owndata          # small ones: numpy's own allocation


def test_attention_decode_rows_errors():
    q, k = np.zeros((2, 2, 1, 8), np.float32), np.zeros((1, 2, 5, 8), np.float32)
    with pytest.raises(ValueError, match="one entry per row of q"):
        _C.attention_decode_rows(q, [k], [k], [0])
    with pytest.raises(ValueError, match=r"n_past\[1\] = 5"):
        _C.attention_decode_rows(q, [k, k], [k, k], [0, 5])
    with pytest.raises(ValueError, match=r"vs\[0\] must have shape"):
        _C.attention_decode_rows(q, [k, k], [k[:, :, :4], k], [0, 1])
    with pytest.raises(TypeError, match=r"ks\[1\]"):
        _C.attention_decode_rows(q, [k, k.astype(np.float64)], [k, k], [0, 1])
    new = np.zeros((2, 2, 1, 8), np.float32)
    with pytest.raises(ValueError, match="k_new and v_new come together"):
        _C.attention_decode_rows(q, [k, k], [k, k], [0, 1], k_new=new)
    with pytest.raises(ValueError, match=r"k_new must have shape"):
        _C.attention_decode_rows(q, [k, k], [k, k], [0, 1], k_new=new[:1], v_new=new)
    frozen = k.copy()
    frozen.flags.writeable = False        # appending into it would be lost, or a crash
    with pytest.raises(ValueError, match=r"ks\[1\] is updated in place"):
        _C.attention_decode_rows(q, [k, frozen], [k, k], [0, 1], k_new=new, v_new=new)
    with pytest.raises(ValueError, match=r"vs\[0\] is updated in place"):
        _C.attention_decode_rows(q, [k, k], [k[:, :, ::2], k], [0, 1], k_new=new, v_new=new)


def test_attention_decode_errors():
    q, k = np.zeros((1, 2, 3, 8), np.float32), np.zeros((1, 2, 5, 8), np.float32)
    with pytest.raises(ValueError, match="n_past"):
        _C.attention_decode(q, k, k, 3)                 # 3 + 3 new queries > 5 keys
    with pytest.raises(ValueError, match="n_past"):
        _C.attention_decode(q, k, k, -1)
    with pytest.raises(ValueError, match="v must have shape"):
        _C.attention_decode(q, k, k[:, :, :4], 2)


# ---------------------------------------------------------------------------------------------
# optimizer updates


@pytest.mark.parametrize("n", [1, 13, 1000, 100_003])
@pytest.mark.parametrize("weight_decay", [0.0, 0.1])
def test_adamw(threads, n, weight_decay):
    rng = np.random.default_rng(16)
    p, g = rand(rng, n), rand(rng, n)
    m, v = rand(rng, n, scale=0.1), np.abs(rand(rng, n, scale=0.1))
    want = [a.copy() for a in (p, m, v)]
    for step in (1, 2, 10):
        ref.adamw_update(*want[:1], g, *want[1:], 1e-3, 0.9, 0.95, 1e-8, weight_decay, step)
        assert _C.adamw_update(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, weight_decay, step) is None
    # the same float32 formula, in the same order, fused (an FMA may round once less): 1e-6
    for got, r, name in zip((p, m, v), want, ["param", "m", "v"]):
        close(got, r, 1e-6, 1e-7, f"adamw {name}")


@pytest.mark.parametrize("momentum,nesterov,weight_decay", [(0.0, False, 0.0), (0.9, False, 0.0),
                                                             (0.9, True, 0.01), (0.0, False, 0.1)])
def test_sgd(threads, momentum, nesterov, weight_decay):
    rng = np.random.default_rng(17)
    p, g = rand(rng, 10_007), rand(rng, 10_007)
    buf = np.zeros_like(p) if momentum else None
    want_p, want_buf = p.copy(), (buf.copy() if momentum else None)
    for _ in range(3):
        ref.sgd_update(want_p, g, want_buf, 0.1, momentum, weight_decay, nesterov)
        _C.sgd_update(p, g, buf, 0.1, momentum, weight_decay, nesterov)
    # p - lr * buf may round once (an FMA) where NumPy rounds twice: 1 ulp of |p| ~ 4 is 5e-7
    close(p, want_p, 1e-6, 1e-6, "sgd param")
    if momentum:
        close(buf, want_buf, 1e-6, 1e-6, "sgd buf")


def test_optimizer_errors():
    p, g = np.zeros(10, np.float32), np.zeros(10, np.float32)
    m, v = np.zeros(10, np.float32), np.zeros(10, np.float32)
    with pytest.raises(ValueError, match="param is updated in place"):
        _C.adamw_update(np.zeros(20, np.float32)[::2], g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1)
    ro = np.zeros(10, np.float32)
    ro.flags.writeable = False
    with pytest.raises(ValueError, match="v is updated in place"):
        _C.adamw_update(p, g, m, ro, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="m must have shape"):
        _C.adamw_update(p, g, np.zeros(11, np.float32), v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1)
    with pytest.raises(ValueError, match="step counts from 1"):
        _C.adamw_update(p, g, m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 0)
    with pytest.raises(ValueError, match="needs a momentum buffer"):
        _C.sgd_update(p, g, None, 0.1, 0.9, 0.0, False)
    # a strided gradient is only read: it is copied, not refused
    _C.adamw_update(p, np.ones(20, np.float32)[::2], m, v, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1)
    assert np.all(p < 0)


def test_stream_triad_for_the_bandwidth_benchmark(threads):
    rng = np.random.default_rng(18)
    a, b, c = rand(rng, 100_003), rand(rng, 100_003), rand(rng, 100_003)
    _C._stream_triad(a, b, c, 3.0)
    close(a, b + np.float32(3.0) * c, 1e-6, 1e-6, "triad")


# ---------------------------------------------------------------------------------------------
# dtypes, shapes and layouts every binding must refuse or handle

F64 = np.zeros((2, 3, 12), np.float64)


def float64_calls():
    x, ids = F64, np.zeros((2, 3), np.int64)
    w = np.zeros(12)
    return {
        "gelu_forward": lambda: _C.gelu_forward(x),
        "gelu_backward": lambda: _C.gelu_backward(x, x),
        "softmax_forward": lambda: _C.softmax_forward(x),
        "softmax_backward": lambda: _C.softmax_backward(x, x),
        "log_softmax_forward": lambda: _C.log_softmax_forward(x),
        "log_softmax_backward": lambda: _C.log_softmax_backward(x, x),
        "layernorm_forward": lambda: _C.layernorm_forward(x, w, w),
        "layernorm_backward": lambda: _C.layernorm_backward(x, x, w, w, w),
        "cross_entropy_forward": lambda: _C.cross_entropy_forward(x[0], ids[0]),
        "cross_entropy_backward": lambda: _C.cross_entropy_backward(w[:3], x[0], ids[0], w[:3]),
        "cross_entropy_forward_backward": lambda: _C.cross_entropy_forward_backward(x[0], ids[0]),
        "embedding_forward": lambda: _C.embedding_forward(x[0], ids),
        "embedding_backward": lambda: _C.embedding_backward(x, ids, 5),
        "attention_forward": lambda: _C.attention_forward(x, 2),
        "attention_backward": lambda: _C.attention_backward(x[..., :4], x, x[..., :4], x, 2),
        "attention_decode": lambda: _C.attention_decode(x[None], x[None], x[None], 0),
        "attention_decode_rows": lambda: _C.attention_decode_rows(x[None], [x[:1]] * 1,
                                                                  [x[:1]], [0]),
        "adamw_update": lambda: _C.adamw_update(w, w, w, w, 1e-3, 0.9, 0.95, 1e-8, 0.0, 1),
        "sgd_update": lambda: _C.sgd_update(w, w, None, 0.1, 0.0, 0.0, False),
    }


@pytest.mark.parametrize("name", sorted(float64_calls()))
def test_float64_raises_type_error(name):
    with pytest.raises(TypeError, match="float32"):
        float64_calls()[name]()


def test_every_ref_kernel_outside_linear_is_bound():
    from tinyroots import kernels
    for name in kernels.KERNEL_NAMES:
        if not name.startswith(("linear", "matmul")):
            assert hasattr(_C, name), name
            assert kernels.IMPLEMENTATION[name] == "cpu", name


def test_shape_errors_name_the_argument():
    x = np.zeros((4, 6), np.float32)
    with pytest.raises(ValueError, match="gelu_backward: dout must have shape"):
        _C.gelu_backward(np.zeros((4, 5), np.float32), x)
    with pytest.raises(ValueError, match="softmax_backward: dout must have shape"):
        _C.softmax_backward(np.zeros((4, 5), np.float32), x)
    with pytest.raises(ValueError, match="layernorm_forward: w must have shape"):
        _C.layernorm_forward(x, np.zeros(5, np.float32), None)
    with pytest.raises(ValueError, match="empty last axis"):
        _C.softmax_forward(np.zeros((3, 0), np.float32))
    with pytest.raises(ValueError, match="must be a numpy array"):
        _C.gelu_forward([1.0, 2.0])


def test_empty_inputs():
    e = np.zeros((0, 5), np.float32)
    assert _C.gelu_forward(e).shape == (0, 5)
    assert _C.softmax_forward(e).shape == (0, 5)
    assert _C.layernorm_forward(e, np.ones(5, np.float32))[0].shape == (0, 5)
    assert _C.cross_entropy_forward(e, np.zeros(0, np.int64))[0].shape == (0,)
    assert _C.attention_forward(np.zeros((2, 0, 12), np.float32), 2)[1].shape == (2, 2, 0)


# ---------------------------------------------------------------------------------------------
# every SIMD path: this file again, with TINYROOTS_ISA capping the instruction set


@pytest.mark.skipif(os.environ.get("TINYROOTS_ISA") is not None, reason="already a sub-run")
@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_each_isa_path(isa):
    order = ["portable", "avx2", "avx512"]
    if order.index(_C.simd_isa()) < order.index(isa):
        pytest.skip(f"this CPU has no {isa}")
    env = dict(os.environ, TINYROOTS_ISA=isa)
    check = subprocess.run([sys.executable, "-c", "from tinyroots import _C; print(_C.simd_isa())"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip() == isa
    # the whole file minus the torch checks (they do not touch the kernels)
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "-k", "not torch", __file__], env=env, capture_output=True, text=True)
    assert res.returncode == 0, res.stdout[-4000:] + res.stderr[-2000:]


# ---------------------------------------------------------------------------------------------
# ref itself against PyTorch, in float64 (values and gradients)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch")


def t64(torch, a, grad=False):
    return torch.tensor(np.asarray(a, np.float64), requires_grad=grad)


def test_ref_gelu_matches_torch(torch):
    rng = np.random.default_rng(20)
    x, dout = rng.standard_normal(1000) * 3, rng.standard_normal(1000)
    tx = t64(torch, x, True)
    ty = torch.nn.functional.gelu(tx, approximate="tanh")
    ty.backward(t64(torch, dout))
    np.testing.assert_allclose(ref.gelu_forward(x), ty.detach().numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ref.gelu_backward(dout, x), tx.grad.numpy(), rtol=1e-12,
                               atol=1e-14)


def test_ref_layernorm_matches_torch(torch):
    rng = np.random.default_rng(21)
    x, w, b, dout = (rng.standard_normal((6, 5, 24)) + 2, rng.standard_normal(24),
                     rng.standard_normal(24), rng.standard_normal((6, 5, 24)))
    tx, tw, tb = t64(torch, x, True), t64(torch, w, True), t64(torch, b, True)
    ty = torch.nn.functional.layer_norm(tx, (24,), tw, tb, 1e-5)
    ty.backward(t64(torch, dout))
    out, mean, rstd = ref.layernorm_forward(x, w, b)
    np.testing.assert_allclose(out, ty.detach().numpy(), rtol=1e-12, atol=1e-12)
    for mine, theirs in zip(ref.layernorm_backward(dout, x, w, mean, rstd),
                            (tx.grad, tw.grad, tb.grad)):
        np.testing.assert_allclose(mine, theirs.numpy(), rtol=1e-10, atol=1e-12)


def test_ref_softmax_matches_torch(torch):
    rng = np.random.default_rng(22)
    x, dout = rng.standard_normal((4, 7, 33)) * 3, rng.standard_normal((4, 7, 33))
    for fwd, bwd, tfn in [(ref.softmax_forward, ref.softmax_backward, torch.softmax),
                          (ref.log_softmax_forward, ref.log_softmax_backward, torch.log_softmax)]:
        tx = t64(torch, x, True)
        ty = tfn(tx, -1)
        ty.backward(t64(torch, dout))
        y = fwd(x)
        np.testing.assert_allclose(y, ty.detach().numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(bwd(dout, y), tx.grad.numpy(), rtol=1e-10, atol=1e-13)


def test_ref_cross_entropy_matches_torch(torch):
    rng = np.random.default_rng(23)
    N, V = 12, 50
    logits, targets = rng.standard_normal((N, V)) * 3, rng.integers(0, V, N)
    targets[[2, 5]] = -100
    F = torch.nn.functional
    tl = t64(torch, logits, True)
    tloss = F.cross_entropy(tl, torch.tensor(targets), ignore_index=-100, reduction="none")
    dl = rng.standard_normal(N)
    tloss.backward(t64(torch, dl))
    losses, lse = ref.cross_entropy_forward(logits, targets)
    np.testing.assert_allclose(losses, tloss.detach().numpy(), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ref.cross_entropy_backward(dl, logits, targets, lse),
                               tl.grad.numpy(), rtol=1e-10, atol=1e-14)
    # the fused one is the gradient of the mean over valid rows, as reduction="mean"
    tl = t64(torch, logits, True)
    F.cross_entropy(tl, torch.tensor(targets), ignore_index=-100).backward()
    _, dlogits = ref.cross_entropy_forward_backward(logits, targets)
    np.testing.assert_allclose(dlogits, tl.grad.numpy(), rtol=1e-10, atol=1e-14)


def test_ref_attention_matches_torch(torch):
    rng = np.random.default_rng(24)
    B, T, C, NH = 2, 9, 24, 3
    HS = C // NH
    qkv, dout = rng.standard_normal((B, T, 3 * C)), rng.standard_normal((B, T, C))
    tqkv = t64(torch, qkv, True)
    q, k, v = (a.reshape(B, T, NH, HS).transpose(1, 2) for a in tqkv.split(C, dim=-1))
    ty = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    tout = ty.transpose(1, 2).reshape(B, T, C)
    tout.backward(t64(torch, dout))
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    s = (q @ k.transpose(-1, -2) / HS ** 0.5).masked_fill(~mask, float("-inf"))
    out, lse = ref.attention_forward(qkv, NH)
    np.testing.assert_allclose(out, tout.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(lse, torch.logsumexp(s, -1).detach().numpy(), rtol=1e-12)
    np.testing.assert_allclose(ref.attention_backward(dout, qkv, out, lse, NH),
                               tqkv.grad.numpy(), rtol=1e-9, atol=1e-12)
    # decode with n_past = 0 and the whole sequence is the same causal attention
    dec = ref.attention_decode(q.detach().numpy(), k.detach().numpy(), v.detach().numpy(), 0)
    np.testing.assert_allclose(dec, ty.detach().numpy(), rtol=1e-10, atol=1e-12)


def test_ref_adamw_matches_torch(torch):
    rng = np.random.default_rng(25)
    p0, grads = rng.standard_normal(50), rng.standard_normal((3, 50))
    tp = t64(torch, p0, True)
    opt = torch.optim.AdamW([tp], lr=1e-2, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.1)
    p, m, v = p0.copy(), np.zeros(50), np.zeros(50)
    for step, g in enumerate(grads, start=1):
        tp.grad = t64(torch, g)
        opt.step()
        ref.adamw_update(p, g, m, v, 1e-2, 0.9, 0.95, 1e-8, 0.1, step)
    np.testing.assert_allclose(p, tp.detach().numpy(), rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("threads", THREADS)
def test_embedding_backward_accumulates_into_a_given_table(threads):
    """dweight= adds the scatter into an existing gradient (the tied wte's) in place."""
    _C.set_num_threads(threads)
    rng = np.random.default_rng(7)
    V, C = 50, 19
    ids = rng.integers(0, V, (3, 11))
    dout = rng.standard_normal((3, 11, C)).astype(np.float32)
    start = rng.standard_normal((V, C)).astype(np.float32)
    want = ref.embedding_backward(dout, ids, V, start.copy())
    into = start.copy()
    got = _C.embedding_backward(dout, ids, V, into)
    assert got is into or np.shares_memory(got, into)
    np.testing.assert_allclose(into, want, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(want - start, ref.embedding_backward(dout, ids, V), rtol=1e-4,
                               atol=1e-5)
    with pytest.raises(ValueError, match="dweight"):
        _C.embedding_backward(dout, ids, V, np.zeros((V, C + 1), np.float32))
    with pytest.raises(ValueError, match="dweight"):
        _C.embedding_backward(dout, ids, V, np.zeros((C, V), np.float32).T)
