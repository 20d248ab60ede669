"""The GEMM kernels (csrc/gemm*.cpp) against tinyroots.ref evaluated in float64.

    kernel                                    product forms it runs
    linear_forward / _gelu_ / _residual_      NN  out = x @ w (+ b, gelu, + residual)
    linear_backward                           NT  dx = dout @ w^T,  TN  dw = x^T @ dout, db
    matmul_forward / matmul_backward          NN / NT + TN, 2-D and batched 3-D, 4-D
    matmul_nt / matmul_tn                     NT / TN (the tied LM head and its gradient)

The shapes walk across every block edge of the implementation: the few-rows paths (M <= 32)
and their row groups (6, 3 or 2 rows), the micro-tile (12 x 32 on AVX-512,
6 x 16 on AVX2, 4 x 8 portable), the K slices (256; on the few-rows path, K-groups of 8
segments, some short), the row block (144), odd and prime sizes, a vocabulary of 50257.

Every instruction set is tested: this file runs in-process with the widest one the CPU has,
and test_isa_path re-runs it in a subprocess with TINYROOTS_ISA=avx2 and =portable.
"""

import math
import os
import subprocess
import sys

import numpy as np
import pytest

import tinyroots
from tinyroots import ref

_C = pytest.importorskip("tinyroots._C")
if not hasattr(_C, "linear_forward"):
    raise ImportError("tinyroots._C has no GEMM kernels: it is stale, rebuild it with "
                      "`python setup.py build_ext --inplace`")

# ---------------------------------------------------------------------------------------------
# tolerances
#
# Each output is a sum of K products accumulated in float32: every step rounds by at most
# 2^-24 (6e-8) of the running sum, so the error grows like sqrt(K) roundings of the size of
# the terms. We bound it elementwise by 1e-6 * sqrt(K) times the sum of the magnitudes of
# everything that was added (|a| @ |b| + |bias| + |residual|, computed in float64). That is
# well above what float32 accumulation produces, and far below what any real mistake gives:
# one lost term of K or one wrong column moves an entry by ~1/K of that scale or more.
REL_PER_SQRT_K = 1e-6
# GELU is applied to the float32 pre-activation: its slope is at most 1.13, and the kernel's
# exp is within a few ulp, so the activation may differ by 1.2x the pre-activation's bound
# plus a few ulp of its own value.
GELU_SLOPE = 1.2
GELU_ULPS = 5e-7


def assert_product(got, exact, scale, K, what):
    """|got - exact| <= 1e-6 sqrt(K) scale, elementwise (see the comment above)."""
    assert got.dtype == np.float32, f"{what}: dtype {got.dtype}, expected float32"
    assert got.shape == exact.shape, f"{what}: shape {got.shape}, expected {exact.shape}"
    bound = REL_PER_SQRT_K * math.sqrt(max(K, 1)) * scale + 1e-30
    err = np.abs(got.astype(np.float64) - exact)
    worst = np.unravel_index(np.argmax(err / bound), err.shape) if err.size else None
    assert np.all(err <= bound), (
        f"{what}: error {err[worst]:.3g} at {worst} exceeds bound {bound[worst]:.3g} (K={K})")


def f64(*arrays):
    return [None if a is None else a.astype(np.float64) for a in arrays]


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


@pytest.fixture(params=[1, 2, 3], ids=lambda n: f"threads={n}")
def threads(request):
    before = tinyroots.get_num_threads()
    tinyroots.set_num_threads(request.param)
    yield request.param
    tinyroots.set_num_threads(before)


# (N, C, OC): rows, input channels (the K of the forward product), output channels
LINEAR_SHAPES = [
    (1, 1, 1), (1, 7, 5), (2, 5, 3), (3, 17, 1), (1, 1, 300), (5, 300, 1),
    (1, 768, 2304),          # one decoded token through c_attn: the GEMV path
    (1, 1536, 384), (3, 389, 70),  # GEMV, narrow: 8 K-groups; 2 groups with a short segment
    (2, 1000, 5),            # 4 K-groups of 250 rows, one tile wide
    (4, 129, 257),           # few rows: one or two row groups
    (7, 53, 131),            # one past the AVX-512 row group, and past the dot path (NT dx)
    (12, 256, 32), (13, 257, 33),  # a few-rows size of several row groups; one past each
    (32, 97, 131), (33, 53, 131),  # the last few-rows size and the first packed one
    (36, 256, 32), (37, 257, 33),  # exactly 3 AVX-512 tiles high, exactly one K slice; one past
    (97, 131, 53), (97, 53, 131),  # primes
    (145, 600, 200),         # more rows than one block (144), K in three slices
    (64, 70, 4097),          # many column tasks, a ragged last one
    (33, 64, 50257),         # the vocabulary
    (1, 64, 50257),
]


def linear_inputs(rng, N, C, OC, lead=None):
    x = rand(rng, *(lead or (N,)), C)
    w = rand(rng, C, OC) / np.float32(math.sqrt(C))
    b = rand(rng, OC)
    return x, w, b


@pytest.mark.parametrize("N,C,OC", LINEAR_SHAPES)
def test_linear_forward_and_backward(N, C, OC, threads):
    rng = np.random.default_rng(N * 1000003 + C * 1009 + OC)
    x, w, b = linear_inputs(rng, N, C, OC)
    x64, w64, b64 = f64(x, w, b)
    scale = np.abs(x64) @ np.abs(w64)

    exact = ref.linear_forward(x64, w64, b64)
    assert_product(_C.linear_forward(x, w, b), exact, scale + np.abs(b64), C, "linear_forward")
    assert_product(_C.linear_forward(x, w), ref.linear_forward(x64, w64), scale, C,
                   "linear_forward without bias")

    pre, out = _C.linear_gelu_forward(x, w, b)
    assert_product(pre, exact, scale + np.abs(b64), C, "linear_gelu_forward pre")
    pre_bound = REL_PER_SQRT_K * math.sqrt(C) * (scale + np.abs(b64))
    gelu_exact = ref.gelu_forward(exact)
    assert np.all(np.abs(out - gelu_exact) <= GELU_SLOPE * pre_bound
                  + GELU_ULPS * np.abs(gelu_exact) + 1e-30), "linear_gelu_forward out"

    residual = rand(rng, N, OC)
    assert_product(_C.linear_residual_forward(x, w, b, residual),
                   ref.linear_residual_forward(x64, w64, b64, residual.astype(np.float64)),
                   scale + np.abs(b64) + np.abs(residual), C, "linear_residual_forward")

    dout = rand(rng, N, OC)
    d64 = dout.astype(np.float64)
    dx_exact, dw_exact, db_exact = ref.linear_backward(d64, x64, w64)
    dx, dw, db = _C.linear_backward(dout, x, w)
    assert_product(dx, dx_exact, np.abs(d64) @ np.abs(w64).T, OC, "linear_backward dx")
    assert_product(dw, dw_exact, np.abs(x64).T @ np.abs(d64), N, "linear_backward dw")
    assert_product(db, db_exact, np.abs(d64).sum(axis=0), N, "linear_backward db")
    none, dw2, db2 = _C.linear_backward(dout, x, w, need_dx=False)
    assert none is None
    np.testing.assert_array_equal(dw2, dw)
    np.testing.assert_array_equal(db2, db)


def test_linear_flattens_leading_axes():
    rng = np.random.default_rng(1)
    x, w, b = linear_inputs(rng, None, 24, 40, lead=(2, 3, 5))
    x64, w64, b64 = f64(x, w, b)
    out = _C.linear_forward(x, w, b)
    assert out.shape == (2, 3, 5, 40)
    assert_product(out, ref.linear_forward(x64, w64, b64),
                   np.abs(x64) @ np.abs(w64) + np.abs(b64), 24, "linear_forward (B, T, C)")
    pre, act = _C.linear_gelu_forward(x, w, b)
    assert pre.shape == act.shape == (2, 3, 5, 40)
    dout = rand(rng, 2, 3, 5, 40)
    dx, dw, db = _C.linear_backward(dout, x, w)
    assert dx.shape == x.shape and dw.shape == w.shape and db.shape == b.shape
    _, dw_exact, _ = ref.linear_backward(dout.reshape(-1, 40).astype(np.float64),
                                         x64.reshape(-1, 24), w64)
    assert_product(dw, dw_exact, np.abs(x64.reshape(-1, 24)).T @ np.abs(
        dout.reshape(-1, 40).astype(np.float64)), 30, "linear_backward dw (B, T, C)")


def test_results_do_not_depend_on_thread_count():
    # Each output element is summed in the same order whatever the thread count (threads split
    # C into tiles, never K), so 1, 2 and 3 threads give bitwise identical results.
    rng = np.random.default_rng(2)
    x, w, b = linear_inputs(rng, 150, 300, 700)
    dout = rand(rng, 150, 700)
    before = tinyroots.get_num_threads()
    results = []
    try:
        for n in (1, 2, 3):
            tinyroots.set_num_threads(n)
            results.append((_C.linear_forward(x, w, b), *_C.linear_backward(dout, x, w)))
    finally:
        tinyroots.set_num_threads(before)
    for other in results[1:]:
        for a, b_ in zip(results[0], other):
            np.testing.assert_array_equal(a, b_)


@pytest.mark.parametrize("M", [1, 2, 3, 4, 7])
def test_few_rows_results_do_not_depend_on_thread_count(M):
    # The few-rows path sums K in groups (partial sums added in group order) and splits columns
    # when threads outnumber groups: neither may change a bit with the thread count.
    rng = np.random.default_rng(3)
    before = tinyroots.get_num_threads()
    for C, OC in [(1536, 384), (384, 1536), (389, 70)]:
        x, w, b = linear_inputs(rng, M, C, OC)
        residual = rand(rng, M, OC)
        results = []
        try:
            for n in (1, 2, 3):
                tinyroots.set_num_threads(n)
                results.append((_C.linear_forward(x, w, b), *_C.linear_gelu_forward(x, w, b),
                                _C.linear_residual_forward(x, w, b, residual)))
        finally:
            tinyroots.set_num_threads(before)
        for other in results[1:]:
            for a, b_ in zip(results[0], other):
                np.testing.assert_array_equal(a, b_)


def _rows_product(name, x, w, b, residual, e):
    if name == "linear":
        return _C.linear_forward(x, w, b)
    if name == "gelu":
        return _C.linear_gelu_forward(x, w, b)[1]
    if name == "residual":
        return _C.linear_residual_forward(x, w, b, residual)
    return _C.matmul_nt(x, e)                      # x @ e^T, the tied LM head's form


def test_few_rows_boundary_is_exported():
    assert _C.FEW_ROWS_MAX == 16          # csrc/gemm.h; model.ROWS_PER_PASS follows it


@pytest.mark.parametrize("M, alone_rows", [(2, 1), (5, 1), (8, 1), (13, 1), (16, 1),
                                           (17, 17), (40, 17), (97, 33)])
def test_rows_are_summed_as_they_are_summed_alone(M, alone_rows):
    # A row's sums do not depend on the rows beside it, as long as the product it is compared
    # with takes the same side of FEW_ROWS_MAX = 16: up to 16 rows the few-rows paths fix the
    # order by K alone, past 16 the packed path does too (its own order). What lets a server
    # decode many requests in one pass, and prefill many prompts in one pass, and still give
    # each its greedy tokens. Bitwise, for x @ W with each epilogue and for the tied head's
    # x @ E^T, with 1 and 2 threads. K = 384 and 1536 have 2 and 8 K-groups. Past 16 rows
    # each row is compared within a product of alone_rows rows (itself, then others after).
    rng = np.random.default_rng(30 + M)
    before = tinyroots.get_num_threads()
    try:
        for n in (1, 2):
            tinyroots.set_num_threads(n)
            for C, OC in [(384, 1152), (1536, 384), (389, 70)]:
                x, w, b = linear_inputs(rng, M, C, OC)
                residual, e = rand(rng, M, OC), np.ascontiguousarray(w.T)
                for name in ("linear", "gelu", "residual", "nt"):
                    together = _rows_product(name, x, w, b, residual, e)
                    for i in range(M):
                        rows = (np.arange(alone_rows) + i) % M          # row i first
                        alone = _rows_product(name, x[rows], w, b, residual[rows], e)
                        np.testing.assert_array_equal(together[i:i + 1], alone[:1],
                                                      err_msg=name)
    finally:
        tinyroots.set_num_threads(before)


def test_gelu_epilogue_extremes():
    # Large |pre-activation|: gelu(x) -> x for x >> 0 and -> -0 for x << 0, never inf or nan.
    C, OC = 4, 64
    x = np.ones((3, C), np.float32)
    w = np.zeros((C, OC), np.float32)
    b = np.linspace(-200, 200, OC).astype(np.float32)
    pre, out = _C.linear_gelu_forward(x, w, b)
    np.testing.assert_array_equal(pre, np.broadcast_to(b, (3, OC)))
    want = ref.gelu_forward(b.astype(np.float64))
    assert np.all(np.isfinite(out))
    np.testing.assert_allclose(out[0], want, rtol=1e-6, atol=1e-30)


# ---------------------------------------------------------------------------------------------
# matmul: 2-D and batched


MATMUL_SHAPES = [  # (batch axes, M, K, N)
    ((), 1, 1, 1), ((), 1, 64, 300), ((), 5, 33, 7), ((), 97, 131, 53), ((), 200, 300, 310),
    ((3,), 17, 8, 17), ((2,), 300, 200, 310),      # a few large: each product on all threads
    ((2, 3), 17, 8, 17), ((2, 6), 64, 16, 64),     # attention-like (B, NH, T, HS)
    ((4, 3), 1, 16, 9),                            # decoding: one query row per head
]


@pytest.mark.parametrize("lead,M,K,N", MATMUL_SHAPES)
def test_matmul_forward_and_backward(lead, M, K, N, threads):
    rng = np.random.default_rng(M * 7919 + K * 31 + N)
    a, b = rand(rng, *lead, M, K), rand(rng, *lead, K, N)
    a64, b64 = f64(a, b)
    assert_product(_C.matmul_forward(a, b), ref.matmul_forward(a64, b64),
                   np.abs(a64) @ np.abs(b64), K, "matmul_forward")
    dout = rand(rng, *lead, M, N)
    d64 = dout.astype(np.float64)
    da_exact, db_exact = ref.matmul_backward(d64, a64, b64)
    da, db = _C.matmul_backward(dout, a, b)
    assert_product(da, da_exact, np.abs(d64) @ np.swapaxes(np.abs(b64), -1, -2), N,
                   "matmul_backward da")
    assert_product(db, db_exact, np.swapaxes(np.abs(a64), -1, -2) @ np.abs(d64), M,
                   "matmul_backward db")


@pytest.mark.parametrize("M,K,N", [(1, 1, 1), (1, 64, 50257), (2, 17, 9), (3, 100, 1000),
                                   (8, 768, 131), (9, 100, 1000), (33, 70, 1000),
                                   (97, 131, 53), (40, 64, 5000)])
def test_matmul_nt_and_tn(M, K, N, threads):
    rng = np.random.default_rng(M + K + N)
    a, bt = rand(rng, M, K), rand(rng, N, K)           # matmul_nt: a @ bt^T
    a64, bt64 = f64(a, bt)
    assert_product(_C.matmul_nt(a, bt), ref.matmul_nt(a64, bt64), np.abs(a64) @ np.abs(bt64).T,
                   K, "matmul_nt")
    at, b = rand(rng, K, M), rand(rng, K, N)           # matmul_tn: at^T @ b
    at64, b64 = f64(at, b)
    assert_product(_C.matmul_tn(at, b), ref.matmul_tn(at64, b64), np.abs(at64).T @ np.abs(b64),
                   K, "matmul_tn")


# ---------------------------------------------------------------------------------------------
# zero sizes, layouts, and errors a caller can make


def test_zero_sizes():
    rng = np.random.default_rng(3)
    w, b = rand(rng, 5, 4), rand(rng, 4)
    assert _C.linear_forward(np.zeros((0, 5), np.float32), w, b).shape == (0, 4)
    # C = 0: an empty sum, so the output is the bias alone
    out = _C.linear_forward(np.zeros((3, 0), np.float32), np.zeros((0, 4), np.float32), b)
    np.testing.assert_array_equal(out, np.broadcast_to(b, (3, 4)))
    dx, dw, db = _C.linear_backward(np.zeros((0, 4), np.float32), np.zeros((0, 5), np.float32), w)
    assert dx.shape == (0, 5)
    np.testing.assert_array_equal(dw, np.zeros((5, 4), np.float32))
    np.testing.assert_array_equal(db, np.zeros(4, np.float32))
    assert _C.matmul_forward(np.zeros((2, 0, 3), np.float32),
                             np.zeros((2, 3, 4), np.float32)).shape == (2, 0, 4)
    np.testing.assert_array_equal(_C.matmul_nt(np.zeros((2, 0), np.float32),
                                               np.zeros((3, 0), np.float32)), np.zeros((2, 3)))


def test_non_contiguous_inputs_are_handled():
    rng = np.random.default_rng(4)
    big = rand(rng, 40, 60)
    x = big[::2, 1::3]                        # strided view, (20, 20)
    w = rand(rng, 30, 20).T                   # Fortran-ordered (20, 30)
    b = rand(rng, 60)[::2]                    # strided (30,)
    assert not x.flags.c_contiguous and not w.flags.c_contiguous and not b.flags.c_contiguous
    x64, w64, b64 = f64(x, w, b)
    assert_product(_C.linear_forward(x, w, b), ref.linear_forward(x64, w64, b64),
                   np.abs(x64) @ np.abs(w64) + np.abs(b64), 20, "strided linear_forward")
    a = rand(rng, 3, 9, 5).transpose(0, 2, 1)  # (3, 5, 9)
    c = rand(rng, 3, 9, 4)
    assert_product(_C.matmul_forward(a, c), ref.matmul_forward(*f64(a, c)),
                   np.abs(a.astype(np.float64)) @ np.abs(c.astype(np.float64)), 9,
                   "transposed matmul_forward")
    at, bt = rand(rng, 7, 6).T, rand(rng, 4, 7)  # matmul_nt's a as a transposed view (6, 7)
    at64, bt64 = f64(at, bt)
    assert_product(_C.matmul_nt(at, bt), ref.matmul_nt(at64, bt64),
                   np.abs(at64) @ np.abs(bt64).T, 7, "matmul_nt of a view")


@pytest.mark.parametrize("dtype", [np.float64, np.int64, np.int32, np.float16])
def test_wrong_dtype_is_a_clear_type_error(dtype):
    x = np.ones((4, 3), dtype)
    w = np.ones((3, 5), np.float32)
    with pytest.raises(TypeError, match=r"linear_forward: x must be float32"):
        _C.linear_forward(x, w)
    with pytest.raises(TypeError, match=r"linear_backward: w must be float32"):
        _C.linear_backward(np.ones((4, 5), np.float32), np.ones((4, 3), np.float32),
                           np.ones((3, 5), dtype))
    with pytest.raises(TypeError, match=r"linear_backward: dout must be float32"):
        _C.linear_backward(np.ones((4, 5), dtype), np.ones((4, 3), np.float32), w)
    with pytest.raises(TypeError, match=r"matmul_forward: b must be float32"):
        _C.matmul_forward(np.ones((2, 3), np.float32), np.ones((3, 2), dtype))
    with pytest.raises(TypeError, match=r"matmul_nt: a must be float32"):
        _C.matmul_nt(np.ones((2, 3), dtype), np.ones((2, 3), np.float32))


def test_bad_shapes_are_clear_value_errors():
    f = np.float32
    x, w = np.ones((4, 3), f), np.ones((3, 5), f)
    cases = [
        (lambda: _C.linear_forward(x, np.ones((4, 5), f)), r"linear_forward: w must have shape"),
        (lambda: _C.linear_forward(x, np.ones(3, f)), r"linear_forward: w must have shape"),
        (lambda: _C.linear_forward(x, w, np.ones(4, f)), r"linear_forward: b must have shape"),
        (lambda: _C.linear_forward(np.float32(1.0), w), r"linear_forward: x must be a numpy"),
        (lambda: _C.linear_forward([[1.0, 2.0, 3.0]], w), r"linear_forward: x must be a numpy"),
        (lambda: _C.linear_gelu_forward(x, w, np.ones((1, 5), f)),
         r"linear_gelu_forward: b must have shape"),
        (lambda: _C.linear_residual_forward(x, w, None, np.ones((4, 4), f)),
         r"linear_residual_forward: residual must have shape \(4, 5\)"),
        (lambda: _C.linear_backward(np.ones((4, 4), f), x, w), r"linear_backward: dout must"),
        (lambda: _C.matmul_forward(np.ones(3, f), np.ones(3, f)), r"matmul_forward: a and b"),
        (lambda: _C.matmul_forward(np.ones((2, 3), f), np.ones((4, 2), f)),
         r"matmul_forward: .*last axis of a"),
        (lambda: _C.matmul_forward(np.ones((2, 2, 3), f), np.ones((3, 3, 2), f)),
         r"matmul_forward: the batch axes"),
        (lambda: _C.matmul_forward(np.ones((2, 2, 3), f), np.ones((3, 2), f)),
         r"matmul_forward: a and b"),  # broadcasting: ops.matmul sends it to ref
        (lambda: _C.matmul_forward(np.ones((1, 1, 1, 2, 3), f), np.ones((1, 1, 1, 3, 2), f)),
         r"matmul_forward: a and b"),
        (lambda: _C.matmul_backward(np.ones((2, 3), f), np.ones((2, 3), f), np.ones((3, 2), f)),
         r"matmul_backward: dout must have shape \(2, 2\)"),
        (lambda: _C.matmul_nt(np.ones((2, 3), f), np.ones((2, 4), f)), r"matmul_nt: a must be"),
        (lambda: _C.matmul_tn(np.ones((2, 3), f), np.ones((3, 4), f)), r"matmul_tn: a must be"),
    ]
    for call, message in cases:
        with pytest.raises(ValueError, match=message):
            call()


def test_dispatch_names_match_ref():
    for name in ("linear_forward", "linear_backward", "linear_gelu_forward",
                 "linear_residual_forward", "matmul_forward", "matmul_backward", "matmul_nt",
                 "matmul_tn"):
        assert hasattr(_C, name) and hasattr(ref, name), name
        assert name in tinyroots.kernels.KERNEL_NAMES, name


# ---------------------------------------------------------------------------------------------
# every instruction-set path


@pytest.mark.skipif(bool(os.environ.get("TINYROOTS_ISA")), reason="already in a subprocess")
@pytest.mark.parametrize("isa", ["avx2", "portable"])
def test_isa_path(isa):
    """Re-run this file with the narrower instruction set forced (it is read once per process)."""
    if isa == "avx2" and _C.simd_isa() == "portable":
        pytest.skip("this CPU has no AVX2")
    env = dict(os.environ, TINYROOTS_ISA=isa)
    check = subprocess.run([sys.executable, "-c", "from tinyroots import _C; print(_C.simd_isa())"],
                           env=env, capture_output=True, text=True, check=True)
    assert check.stdout.strip() == isa          # the subprocess really runs the forced path
    res = subprocess.run([sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider",
                          "-p", "no:randomly", __file__], env=env, capture_output=True,
                         text=True, cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert res.returncode == 0, f"TINYROOTS_ISA={isa}:\n{res.stdout[-4000:]}\n{res.stderr[-2000:]}"
