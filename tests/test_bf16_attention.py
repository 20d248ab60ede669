"""The bf16 attention kernels (csrc/attention_bf16.cpp) against tinyroots.ref, and ref's bf16
attention against the float32 one.

    attention_forward_bf16    S = bf16(q) bf16(k)^T, softmax in float32, out = bf16(P) bf16(v) / l
    attention_backward_bf16   the five products of attention_backward with bf16 operands
                              (q, k, v, dout, P, dS); D, the softmax and every sum in float32

Three checks:
  * kernel against ref.attention_*_bf16 (NumPy), with bounds from the one rounding they may
    do differently: the kernel rounds P (and dS) from float32 values that can differ from
    ref's by an ulp (its own exp, another summation order), and in the forward it rounds P
    relative to a running max. Either rounding moves a term by at most 2^-9 of itself, so each
    output is within 2^-8 of the sum of the magnitudes of its terms (computed below), plus
    float32 accumulation. A lost term, a wrong transpose or a missing scale is off by the
    terms themselves;
  * ref's bf16 attention against its float32 attention: what mixed precision costs (a bound
    derived from bf16's 8 significant bits, below);
  * the same bits for any thread count, and every path the CPU has (test_each_path reruns the
    kernel tests with TINYROOTS_ISA=avx512bf16 and =portable).
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyroots import kernels, ref

_C = pytest.importorskip("tinyroots._C")
if not hasattr(_C, "attention_forward_bf16"):
    raise ImportError("tinyroots._C has no bf16 attention: it is stale, rebuild it with "
                      "`python setup.py build_ext --inplace`")

FORCED = os.environ.get("TINYROOTS_ISA")


def cpu_flags():
    """The CPU's feature flags as Linux lists them (empty elsewhere)."""
    try:
        with open("/proc/cpuinfo") as f:
            return next((line.split(":", 1)[1].split() for line in f
                         if line.startswith("flags")), [])
    except OSError:
        return []
U = 2.0 ** -8  # bf16's relative rounding error is at most half of this (2^-9); two roundings: U
F32_SUM = 1e-6  # float32 accumulation, per sqrt(terms), as in tests/test_gemm.py

# (B, T, C, NH): T = 1, odd T across the 64-query / 64-key blocks (65, 130, 200), head sizes
# that are not multiples of the AMX depth (7, 16, 48) or are larger than one tile (128, 300)
SHAPES = [(1, 1, 64, 1), (2, 5, 64, 2), (2, 70, 96, 3), (1, 130, 128, 2), (3, 65, 21, 3),
          (2, 64, 64, 1), (1, 200, 48, 1), (2, 33, 300, 1), (2, 128, 384, 6)]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


def heads(a, NH):
    """(B, T, NH * HS) -> (B, NH, T, HS), float64."""
    B, T, C = a.shape
    return a.reshape(B, T, NH, C // NH).transpose(0, 2, 1, 3).astype(np.float64)


def unheads(a):
    B, NH, T, HS = a.shape
    return a.transpose(0, 2, 1, 3).reshape(B, T, NH * HS)


def rounded(a):
    return ref.from_bf16(ref.to_bf16(np.ascontiguousarray(a, dtype=np.float32)))


def probabilities(qkv, NH):
    """P (B, NH, T, T) in float64 from the bf16-rounded q and k, and the rounded q, k, v."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (heads(rounded(qkv[..., i * C:(i + 1) * C]), NH) for i in range(3))
    s = q @ np.swapaxes(k, -1, -2) / math.sqrt(C // NH)
    s = np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)
    p = np.exp(s - s.max(axis=-1, keepdims=True))
    return p / p.sum(axis=-1, keepdims=True), q, k, v


def forward_magnitude(qkv, NH):
    """sum_j P_ij |v_j|: what bounds a rounding of each P_ij by U."""
    p, _, _, v = probabilities(qkv, NH)
    return unheads(p @ np.abs(v))


def backward_magnitudes(dout, qkv, out, NH):
    """The sums of |terms| of dq, dk, dv, (B, T, 3C): the bounds of roundings of P and dS."""
    p, q, k, v = probabilities(qkv, NH)
    HS = q.shape[-1]
    dy = heads(rounded(dout), NH)
    D = (heads(dout, NH) * heads(out, NH)).sum(axis=-1, keepdims=True)
    ds = np.abs(p * ((dy @ np.swapaxes(v, -1, -2)) - D)) / math.sqrt(HS)
    return np.concatenate([unheads(ds @ np.abs(k)), unheads(np.swapaxes(ds, -1, -2) @ np.abs(q)),
                           unheads(np.swapaxes(p, -1, -2) @ np.abs(dy))], axis=-1)


def within(got, want, bound, what):
    assert got.dtype == np.float32 and got.shape == want.shape, (what, got.dtype, got.shape)
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert np.all(err <= bound), (f"{what}: error {err[worst]:.3g} at {worst}, "
                                  f"bound {bound[worst]:.3g}")


@pytest.fixture(params=[1, 2], ids=lambda n: f"threads{n}")
def threads(request):
    before = _C.get_num_threads()
    _C.set_num_threads(request.param)
    yield request.param
    _C.set_num_threads(before)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_attention_bf16(threads, shape):
    B, T, C, NH = shape
    rng = np.random.default_rng(21)
    qkv = rand(rng, B, T, 3 * C)
    want_out, want_lse = ref.attention_forward_bf16(qkv, NH)
    out, lse = _C.attention_forward_bf16(qkv, NH)
    sums = math.sqrt(T * C // NH)
    within(out, want_out.astype(np.float64),
           U * forward_magnitude(qkv, NH) + F32_SUM * sums * np.abs(want_out).max(),
           "attention_forward_bf16 out")
    # lse: float32 scores and sums of the same rounded q, k; log of a sum of up to T terms
    within(lse, want_lse.astype(np.float64), np.full(lse.shape, 1e-5 * (1 + np.abs(want_lse))),
           "attention_forward_bf16 lse")

    dout = rand(rng, B, T, C)
    want = ref.attention_backward_bf16(dout, qkv, out, lse, NH).astype(np.float64)
    got = _C.attention_backward_bf16(dout, qkv, out, lse, NH)
    mag = backward_magnitudes(dout, qkv, out, NH)
    within(got, want, U * mag + F32_SUM * sums * (mag + np.abs(want)).max(),
           "attention_backward_bf16")


@pytest.mark.parametrize("shape", [(2, 70, 96, 3), (1, 200, 64, 1), (2, 128, 384, 6)], ids=str)
def test_ref_bf16_attention_costs_what_bf16_allows(shape):
    """ref.attention_forward_bf16 against the float32 attention of the unrounded inputs.

    Rounding q and k moves each score s_ij = q_i . k_j / sqrt(HS) by at most
    d_i = (2^-8 + 2^-16) max_j |q_i| . |k_j| / sqrt(HS); every P_ij of row i then moves by a
    factor within exp(+-2 d_i) (numerator and normalizer), and rounding v and P adds U of
    sum_j P_ij |v_j|. A float32 attention fed the wrong rows is off by |v| itself."""
    B, T, C, NH = shape
    qkv = rand(np.random.default_rng(22), B, T, 3 * C)
    got, _ = ref.attention_forward_bf16(qkv, NH)
    want, _ = ref.attention_forward(qkv.astype(np.float64), NH)
    q, k, v = (heads(qkv[..., i * C:(i + 1) * C], NH) for i in range(3))
    d = (2.0 ** -8 + 2.0 ** -16) * (np.abs(q) @ np.swapaxes(np.abs(k), -1, -2)).max(-1)
    d = d / math.sqrt(C // NH)                                           # (B, NH, T)
    p, _, _, _ = probabilities(qkv.astype(np.float64), NH)
    mag = p @ np.abs(v)                                                  # (B, NH, T, HS)
    bound = unheads((np.expm1(2 * d)[..., None] * 2 + U) * mag) + 1e-6
    within(got, want, bound, "ref.attention_forward_bf16 against float32")
    # and it is not the float32 attention under another name
    assert not np.allclose(got, want, rtol=0, atol=1e-6)


def test_attention_bf16_same_bits_for_any_thread_count():
    B, T, C, NH = 3, 150, 128, 2
    rng = np.random.default_rng(23)
    qkv, dout = rand(rng, B, T, 3 * C), rand(rng, B, T, C)
    before = _C.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            _C.set_num_threads(n)
            out, lse = _C.attention_forward_bf16(qkv, NH)
            results.append((out, lse, _C.attention_backward_bf16(dout, qkv, out, lse, NH)))
    finally:
        _C.set_num_threads(before)
    for r in results[1:]:
        for a, b in zip(r, results[0]):
            assert np.array_equal(a, b)


def test_attention_bf16_errors():
    f = np.float32
    with pytest.raises(ValueError, match=r"attention_forward_bf16: qkv must be 3-D"):
        _C.attention_forward_bf16(np.ones((4, 6), f), 1)
    with pytest.raises(ValueError, match=r"attention_forward_bf16: n_head = 4 does not divide"):
        _C.attention_forward_bf16(np.ones((1, 2, 18), f), 4)
    qkv = np.ones((1, 3, 12), f)
    out, lse = _C.attention_forward_bf16(qkv, 2)
    with pytest.raises(ValueError, match=r"attention_backward_bf16: lse"):
        _C.attention_backward_bf16(out, qkv, out, lse[:, :1], 2)


def test_autocast_routes_attention_to_the_bf16_kernels(monkeypatch):
    """Inside ops.autocast('bf16') the attention op calls the bf16 kernels, forward and
    backward; outside it, the float32 ones."""
    from tinyroots import ops
    from tinyroots.tensor import Tensor
    calls = []
    for name in ("attention_forward", "attention_backward", "attention_forward_bf16",
                 "attention_backward_bf16"):
        real = getattr(kernels, name)
        monkeypatch.setattr(kernels, name,
                            lambda *a, _real=real, _name=name: calls.append(_name) or _real(*a))
    qkv = Tensor(rand(np.random.default_rng(24), 1, 4, 24), requires_grad=True)
    with ops.autocast("bf16"):
        y = ops.attention(qkv, 2)
    ops.sum(y).backward()
    assert calls == ["attention_forward_bf16", "attention_backward_bf16"]
    calls.clear()
    ops.sum(ops.attention(qkv, 2)).backward()
    assert calls == ["attention_forward", "attention_backward"]


@pytest.mark.parametrize("isa", ["avx512bf16", "portable"])
def test_each_path(isa):
    if FORCED:
        pytest.skip("already a forced-path run")
    if isa == "avx512bf16" and "avx512_bf16" not in cpu_flags():
        pytest.skip("this CPU has no AVX512-BF16")
    env = dict(os.environ, TINYROOTS_ISA=isa, OMP_NUM_THREADS="2")
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        __file__, "-k", "test_attention_bf16 and not errors"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    assert " passed" in r.stdout, r.stdout[-2000:]
