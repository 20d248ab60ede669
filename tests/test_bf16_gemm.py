"""The bf16 GEMM kernels (csrc/gemm_bf16*.cpp) against tinyroots.ref, and ref against PyTorch.

    kernel                                          product forms
    linear_forward_bf16 / _gelu_ / _residual_       NN  out = x @ w (+ b, gelu, + residual)
    linear_backward_bf16                            NT  dx = dout @ w^T,  TN  dw = x^T @ dout, db
    matmul_nt_bf16 / matmul_tn_bf16                 NT / TN (the tied LM head and its gradient)
    to_bf16 / from_bf16                             float32 <-> bf16 bit patterns (uint16)

Two checks per product:
  * against the float64 product of the bf16-rounded inputs, with the float32-accumulation bound
    of tests/test_gemm.py: this pins the rounding (to nearest even) and the float32 sums;
  * against the float32 product of the unrounded inputs, with a bound from bf16's 8 significant
    bits (below): what mixed precision costs, and what a user of --dtype bf16 should expect.

Every path the CPU has is tested: this file runs in-process with the widest (amx on Sapphire
Rapids and later, avx512bf16 on Zen 4 / Cooper Lake), and test_each_path re-runs the product
tests in a subprocess with TINYROOTS_ISA=avx512bf16 and =portable.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

from tinyroots import kernels, ref

_C = pytest.importorskip("tinyroots._C")
if not hasattr(_C, "linear_forward_bf16"):
    raise ImportError("tinyroots._C has no bf16 kernels: it is stale, rebuild it with "
                      "`python setup.py build_ext --inplace`")

# ---------------------------------------------------------------------------------------------
# tolerances
#
# Rounding to bf16 keeps 8 significant bits, so the relative error of one input is at most
# u = 2^-8 (half a unit in the 8th bit; float32's is 2^-24). A product of two rounded inputs is
# then off by at most (1 + u)^2 - 1 = 2^-7 + 2^-16 of |a b|, and exact in float32 (8 + 8 bits
# fit in 24). Summed over K: |C_bf16 - C_fp32| <= (2^-7 + 2^-16) (|A| @ |B|) plus the float32
# accumulation error. It is a worst case (random signs make the typical error ~sqrt(K) times
# smaller), so it cannot fail by chance; the check against the rounded product below is the
# tight one, which catches a lost term or a wrong column at any K.
BF16_PRODUCT = 2.0 ** -7 + 2.0 ** -16
# float32 accumulation, as in tests/test_gemm.py: 1e-6 sqrt(K) of the sum of magnitudes.
REL_PER_SQRT_K = 1e-6
GELU_SLOPE = 1.2   # GELU's slope is at most 1.13: it carries the pre-activation's error over
GELU_ULPS = 5e-7   # plus the kernel's own exp, a few ulp


def cpu_flags():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


FLAGS = cpu_flags()
HAS_AVX512BF16 = "avx512_bf16" in FLAGS
HAS_AMX = HAS_AVX512BF16 and {"amx_bf16", "amx_tile"} <= FLAGS
FORCED = os.environ.get("TINYROOTS_ISA")


def rounded(a):
    """The values a bf16 kernel multiplies, in float64."""
    return ref.from_bf16(a if a.dtype == np.uint16 else ref.to_bf16(a)).astype(np.float64)


def check(got, a, b, what, bias=None, residual=None, exact_a=None, exact_b=None):
    """got = a @ b (+ bias + residual) in bf16: against the rounded product (float32-sum bound)
    and against the unrounded float32 operands exact_a, exact_b (bf16 bound)."""
    K = a.shape[1]
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}"
    ra, rb = rounded(a), rounded(b)
    want = ra @ rb
    scale = np.abs(ra) @ np.abs(rb)
    if bias is not None:
        want = want + bias
        scale = scale + np.abs(bias)
    if residual is not None:
        want = want + residual
        scale = scale + np.abs(residual)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bound = REL_PER_SQRT_K * math.sqrt(max(K, 1)) * scale + 1e-30
    err = np.abs(got - want)
    assert np.all(err <= bound), f"{what}: error {err.max():.3g} vs the rounded product (K={K})"
    if exact_a is not None:
        fa, fb = exact_a.astype(np.float64), exact_b.astype(np.float64)
        full = fa @ fb + (0 if bias is None else bias) + (0 if residual is None else residual)
        bound = (BF16_PRODUCT + REL_PER_SQRT_K * math.sqrt(max(K, 1))) * scale + 1e-30
        err = np.abs(got - full)
        assert np.all(err <= bound), f"{what}: error {err.max():.3g} vs float32 inputs (K={K})"


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# shapes across the block edges: the AMX tile (32 x 32, K steps of 32), the AVX512-BF16 tile
# (12 x 32), the portable tile (4 x 32), the K slice (512), the row block (128), odd and prime,
# and the few-rows path (M <= 16 with a bf16 weight, 8 rows per kernel call)
SHAPES = [(1, 1, 1), (5, 7, 3), (12, 32, 32), (13, 33, 33), (31, 65, 31), (33, 17, 64),
          (100, 37, 300), (130, 200, 513), (64, 96, 1100), (257, 129, 97),
          # up to 16 rows with a bf16 weight: the unpacked decoding path (K groups of 128 rows)
          (1, 300, 1000), (8, 200, 129), (3, 1030, 64), (11, 70, 260), (16, 33, 129)]


# ---------------------------------------------------------------------------------------------
# the conversion, against PyTorch's


def test_to_bf16_matches_torch():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    x = np.concatenate([
        rand(rng, 4096) * np.float32(10.0) ** rng.integers(-30, 30, 4096).astype(np.float32),
        np.float32([0.0, -0.0, 1.0, 1 + 2**-8, 1 + 3 * 2**-8, -(1 + 2**-8), np.inf, -np.inf,
                    3.3e38, 1e-40, 65504.0]),
        # exact halfway cases: the low 16 bits are 0x8000; ties go to the even neighbour
        (np.arange(64, dtype=np.uint32) << 16 | 0x3F808000).view(np.float32),
    ]).astype(np.float32)
    want = torch.from_numpy(x).to(torch.bfloat16).view(torch.int16).numpy().view(np.uint16)
    np.testing.assert_array_equal(ref.to_bf16(x), want)
    np.testing.assert_array_equal(_C.to_bf16(x), want)
    np.testing.assert_array_equal(ref.from_bf16(want), torch.from_numpy(want.view(np.int16))
                                  .view(torch.bfloat16).float().numpy())
    np.testing.assert_array_equal(_C.from_bf16(want), ref.from_bf16(want))


def test_nan_stays_nan():
    x = np.array([0x7F800001, 0xFF800001, 0x7FC00000], dtype=np.uint32).view(np.float32)
    for impl in (ref, _C):
        back = impl.from_bf16(impl.to_bf16(x))
        assert np.all(np.isnan(back)), f"{impl.__name__}: {back}"


# ---------------------------------------------------------------------------------------------
# every product form, on odd shapes, with float32 and bf16 operands


@pytest.mark.parametrize("N,C,OC", SHAPES)
@pytest.mark.parametrize("x_bf16,w_bf16", [(False, False), (True, False), (False, True)])
def test_linear_forward(N, C, OC, x_bf16, w_bf16):
    rng = np.random.default_rng(N * 7 + C)
    x, w, b, res = rand(rng, N, C), rand(rng, C, OC), rand(rng, OC), rand(rng, N, OC)
    xi = _C.to_bf16(x) if x_bf16 else x
    wi = _C.to_bf16(w) if w_bf16 else w
    check(_C.linear_forward_bf16(xi, wi, b), xi, wi, "linear_forward_bf16", bias=b,
          exact_a=x, exact_b=w)
    check(_C.linear_forward_bf16(xi, wi), xi, wi, "linear_forward_bf16 (no bias)")
    check(_C.linear_residual_forward_bf16(xi, wi, b, res), xi, wi, "linear_residual_forward_bf16",
          bias=b, residual=res, exact_a=x, exact_b=w)
    pre, out = _C.linear_gelu_forward_bf16(xi, wi, b)
    check(pre, xi, wi, "linear_gelu_forward_bf16 pre", bias=b)
    gelu = ref.gelu_forward(pre.astype(np.float64))
    assert np.allclose(out, gelu, rtol=GELU_ULPS, atol=1e-6), "linear_gelu_forward_bf16 out"


@pytest.mark.parametrize("N,C,OC", SHAPES)
def test_linear_backward(N, C, OC):
    rng = np.random.default_rng(N * 3 + OC)
    x, w, dout = rand(rng, N, C), rand(rng, C, OC), rand(rng, N, OC)
    for xi in (x, _C.to_bf16(x)):
        dx, dw, db = _C.linear_backward_bf16(dout, xi, w)
        check(dx, dout, w.T, "linear_backward_bf16 dx", exact_a=dout, exact_b=w.T)
        check(dw, rounded(xi).astype(np.float32).T, dout, "linear_backward_bf16 dw",
              exact_a=x.T, exact_b=dout)
        np.testing.assert_allclose(db, dout.astype(np.float64).sum(0),
                                   rtol=0, atol=1e-6 * math.sqrt(N) * np.abs(dout).sum(0).max())
        none, dw2, _ = _C.linear_backward_bf16(dout, xi, w, need_dx=False)
        assert none is None
        np.testing.assert_array_equal(dw2, dw)


@pytest.mark.parametrize("M,N,K", SHAPES)
def test_matmul_nt_tn(M, N, K):
    rng = np.random.default_rng(M + N + K)
    a, bt = rand(rng, M, K), rand(rng, N, K)
    check(_C.matmul_nt_bf16(a, bt), a, bt.T, "matmul_nt_bf16", exact_a=a, exact_b=bt.T)
    check(_C.matmul_nt_bf16(a, _C.to_bf16(bt)), a, bt.T, "matmul_nt_bf16 (bf16 b)")
    at, b = rand(rng, K, M), rand(rng, K, N)
    check(_C.matmul_tn_bf16(at, b), at.T, b, "matmul_tn_bf16", exact_a=at.T, exact_b=b)


# (batch axes, M, K, N): one product (2-D), attention-head shaped batches (many small products,
# one per thread), and a few large ones (each on all threads)
BATCHED = [((), 33, 17, 40), ((3,), 5, 64, 7), ((2, 6), 37, 16, 37), ((2,), 260, 70, 300)]


@pytest.mark.parametrize("lead,M,K,N", BATCHED, ids=str)
def test_matmul_batched(lead, M, K, N):
    """matmul_forward_bf16 / matmul_backward_bf16 (ops.matmul under autocast), each batch
    element checked like the products above: c = a @ b, da = dc @ b^T, db = a^T @ dc."""
    rng = np.random.default_rng(M + K + N)
    a, b, dc = rand(rng, *lead, M, K), rand(rng, *lead, K, N), rand(rng, *lead, M, N)
    c = _C.matmul_forward_bf16(a, b)
    da, db = _C.matmul_backward_bf16(dc, a, b)
    assert c.shape == (*lead, M, N) and da.shape == a.shape and db.shape == b.shape
    for i in np.ndindex(*lead):
        check(c[i], a[i], b[i], f"matmul_forward_bf16 {i}", exact_a=a[i], exact_b=b[i])
        check(da[i], dc[i], b[i].T, f"matmul_backward_bf16 da {i}", exact_a=dc[i],
              exact_b=b[i].T)
        check(db[i], a[i].T, dc[i], f"matmul_backward_bf16 db {i}", exact_a=a[i].T,
              exact_b=dc[i])


def test_matmul_follows_autocast():
    """ops.matmul inside autocast('bf16') gives the bf16 product (ref's), outside it float32;
    so does its backward."""
    from tinyroots import ops
    from tinyroots.tensor import Tensor
    rng = np.random.default_rng(31)
    a, b = Tensor(rand(rng, 2, 9, 40), requires_grad=True), Tensor(rand(rng, 2, 40, 11))
    with ops.autocast("bf16"):
        y = ops.matmul(a, b)
    want = ref.matmul_forward_bf16(a.data, b.data)
    scale = (np.abs(a.data) @ np.abs(b.data)).max()  # float32 summation bound, as in check()
    np.testing.assert_allclose(y.data, want, rtol=0, atol=REL_PER_SQRT_K * math.sqrt(40) * scale)
    assert not np.allclose(y.data, ref.matmul_forward(a.data, b.data), rtol=0, atol=1e-3)
    ops.sum(y).backward()
    want_da, _ = ref.matmul_backward_bf16(np.ones_like(y.data), a.data, b.data)
    scale = np.abs(b.data).sum(axis=-1).max()
    np.testing.assert_allclose(a.grad, want_da, rtol=0, atol=REL_PER_SQRT_K * math.sqrt(11) * scale)
    np.testing.assert_array_equal(ops.matmul(a, b).data, kernels.matmul_forward(a.data, b.data))


def test_ref_matches_kernels():
    """ref.*_bf16 is the specification: the kernels agree with it to float32 summation."""
    rng = np.random.default_rng(5)
    x, w, b, dout = rand(rng, 70, 96), rand(rng, 96, 80), rand(rng, 80), rand(rng, 70, 80)
    scale = np.abs(x) @ np.abs(w)
    tol = 1e-6 * math.sqrt(96) * scale.max()
    np.testing.assert_allclose(_C.linear_forward_bf16(x, w, b), ref.linear_forward_bf16(x, w, b),
                               rtol=0, atol=tol)
    for got, want in zip(_C.linear_backward_bf16(dout, x, w), ref.linear_backward_bf16(dout, x, w)):
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6 * math.sqrt(80) * 400)
    assert kernels.linear_forward_bf16(x, w).dtype == np.float32


def test_results_do_not_depend_on_threads():
    rng = np.random.default_rng(9)
    x, w = rand(rng, 300, 200), rand(rng, 200, 700)
    n = kernels.get_num_threads()
    try:
        kernels.set_num_threads(1)
        one = _C.linear_forward_bf16(x, w)
        kernels.set_num_threads(2)
        two = _C.linear_forward_bf16(x, w)
    finally:
        kernels.set_num_threads(n)
    np.testing.assert_array_equal(one, two)


@pytest.mark.parametrize("M, alone_rows", [(2, 1), (9, 1), (16, 1), (17, 17), (50, 21)])
def test_rows_are_summed_as_they_are_summed_alone(M, alone_rows):
    # With a bf16 weight: each row bitwise what it is in a product of alone_rows rows that
    # takes the same side of FEW_ROWS_MAX = 16 (batched decoding and packed prompts keep every
    # request's greedy tokens), for x @ W and the tied head's x @ E^T.
    rng = np.random.default_rng(40 + M)
    x = rand(rng, M, 260)
    w, b = _C.to_bf16(rand(rng, 260, 300)), rand(rng, 300)
    e = _C.to_bf16(rand(rng, 500, 260))
    together = _C.linear_forward_bf16(x, w, b), _C.matmul_nt_bf16(x, e)
    for i in range(M):
        rows = (np.arange(alone_rows) + i) % M                        # row i first
        alone = _C.linear_forward_bf16(x[rows], w, b), _C.matmul_nt_bf16(x[rows], e)
        for t, a in zip(together, alone):
            np.testing.assert_array_equal(t[i:i + 1], a[:1])


def test_bad_input_is_one_clear_error():
    f = np.float32
    with pytest.raises(TypeError, match="linear_forward_bf16: x must be float32, or bfloat16"):
        _C.linear_forward_bf16(np.ones((2, 3)), np.ones((3, 4), f))
    with pytest.raises(ValueError, match=r"linear_forward_bf16: w must have shape \(C, OC\)"):
        _C.linear_forward_bf16(np.ones((2, 3), f), np.ones((4, 4), f))
    with pytest.raises(ValueError, match="matmul_nt_bf16: a must be"):
        _C.matmul_nt_bf16(np.ones((2, 3), f), np.ones((2, 4), f))
    with pytest.raises(TypeError, match="from_bf16: h must be a uint16 array"):
        _C.from_bf16(np.ones(3, f))


# ---------------------------------------------------------------------------------------------
# every path this CPU has


def test_default_path_is_the_widest():
    if FORCED:
        pytest.skip(f"TINYROOTS_ISA={FORCED} forces the path")
    want = "amx" if HAS_AMX else "avx512bf16" if HAS_AVX512BF16 else "portable"
    if want == "amx" and _C.bf16_isa() == "avx512bf16":
        pytest.skip("the OS refused the AMX tile permission (arch_prctl)")
    assert _C.bf16_isa() == want
    assert kernels.info()["bf16_isa"] == want


@pytest.mark.parametrize("isa", ["avx512bf16", "portable"])
def test_each_path(isa):
    if FORCED:
        pytest.skip("already a forced-path run")
    if isa == "avx512bf16" and not HAS_AVX512BF16:
        pytest.skip("this CPU has no AVX512-BF16")
    env = dict(os.environ, TINYROOTS_ISA=isa, OMP_NUM_THREADS="2")
    code = f"import tinyroots._C as c; assert c.bf16_isa() == {isa!r}, c.bf16_isa()"
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    r = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                        __file__, "-k", "linear or matmul or threads"],
                       env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
