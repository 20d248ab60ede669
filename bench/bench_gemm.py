"""GEMM: tinyroots' blocked float32 GEMM (csrc/gemm*.cpp) against numpy.matmul (OpenBLAS).

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        pytest bench/bench_gemm.py --benchmark-only --benchmark-group-by=group

(`env -u ...` lets NumPy's OpenBLAS pick its own kernels, so the reference runs at its best.)
Both sides use BENCH_THREADS threads (bench/conftest.py; numpy's OpenBLAS uses every core,
2 on the reference machine). Groups, each with a `tinyroots` and a `numpy` benchmark:

* gemm {NN,NT,TN} MxK @ KxN: the three forms a Linear layer needs, on GPT-2-124M shapes
  (1024 tokens through c_fc and c_proj, 256 tokens through the LM head) and 2048^3.
      NN  a @ b        _C.matmul_forward   forward   out = x @ W
      NT  a @ bt.T     _C.matmul_nt        backward  dx = dout @ W^T (and the tied LM head)
      TN  at.T @ b     _C.matmul_tn        backward  dW = x^T @ dout
* gemv 1xK @ KxN: decoding one token (M = 1), memory bound: the weights are read once.
* linear ...: the fused kernels against ref's NumPy (matmul, then bias / GELU / residual).

GFLOP/s (2 M N K / median time) is in each benchmark's extra_info, and a table of the ratios
tinyroots / numpy (same run, median and best round) is printed at the end.
"""

import time

import numpy as np
import pytest

from tinyroots import ref

_C = pytest.importorskip("tinyroots._C", reason="the C++ extension is not built")

GEMM_SHAPES = [(1024, 768, 3072), (1024, 3072, 768), (256, 768, 50257), (2048, 2048, 2048)]
GEMV_SHAPES = [(768, 2304), (768, 3072), (3072, 768), (768, 50257)]
# OpenBLAS's idle workers spin (sched_yield) for tens of ms after each call, and OpenMP's for
# a moment after ours: pause before each benchmark so neither starts against the other's spin.
PAUSE_S = 0.3

_results = {}  # group -> {"tinyroots" | "numpy": (median s, min s, flops)}


@pytest.fixture(autouse=True)
def _quiet_threads():
    time.sleep(PAUSE_S)


@pytest.fixture(scope="module", autouse=True)
def ratio_table(request):
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    capture = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or capture is None or not _results:
        return
    with capture.global_and_fixture_disabled():  # teardown output is captured otherwise
        tr.write_line("")
        tr.write_line("GFLOP/s, tinyroots vs numpy (this run): median round (best round)")
        for group, r in _results.items():
            if "tinyroots" in r and "numpy" in r:
                (tm, tb, fl), (nm, nb, _) = r["tinyroots"], r["numpy"]
                tr.write_line(f"  {group:36s} tinyroots {fl / tm / 1e9:6.1f} ({fl / tb / 1e9:6.1f})"
                              f"   numpy {fl / nm / 1e9:6.1f} ({fl / nb / 1e9:6.1f})"
                              f"   ratio {nm / tm:5.3f} ({nb / tb:5.3f})")


def run(benchmark, group, impl, fn, flops, seconds=1.5):
    """Benchmark fn() in `group` for about `seconds`, and record its GFLOP/s."""
    fn()
    t0 = time.perf_counter()
    fn()
    once = time.perf_counter() - t0
    rounds = int(min(200, max(5, seconds / max(once, 1e-6))))
    benchmark.group = group
    benchmark.pedantic(fn, rounds=rounds, iterations=1, warmup_rounds=1)
    stats = benchmark.stats.stats
    benchmark.extra_info["GFLOP/s"] = round(flops / stats.median / 1e9, 2)
    benchmark.extra_info["GFLOP/s best"] = round(flops / stats.min / 1e9, 2)
    _results.setdefault(group, {})[impl] = (stats.median, stats.min, flops)


def rand(rng, *shape):
    return rng.standard_normal(shape).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# gemm: NN, NT, TN


@pytest.mark.parametrize("impl", ["tinyroots", "numpy"])
@pytest.mark.parametrize("form", ["NN", "NT", "TN"])
@pytest.mark.parametrize("M,K,N", GEMM_SHAPES, ids=lambda v: str(v))
def test_gemm(benchmark, M, K, N, form, impl):
    rng = np.random.default_rng(0)
    if form == "NN":
        a, b = rand(rng, M, K), rand(rng, K, N)
        fn = (lambda: _C.matmul_forward(a, b)) if impl == "tinyroots" else (lambda: a @ b)
    elif form == "NT":
        a, bt = rand(rng, M, K), rand(rng, N, K)
        fn = (lambda: _C.matmul_nt(a, bt)) if impl == "tinyroots" else (lambda: a @ bt.T)
    else:
        at, b = rand(rng, K, M), rand(rng, K, N)
        fn = (lambda: _C.matmul_tn(at, b)) if impl == "tinyroots" else (lambda: at.T @ b)
    run(benchmark, f"gemm {form} {M}x{K} @ {K}x{N}", impl, fn, 2.0 * M * N * K)


# ---------------------------------------------------------------------------------------------
# gemv: decoding one token


@pytest.mark.parametrize("impl", ["tinyroots", "numpy"])
@pytest.mark.parametrize("K,N", GEMV_SHAPES, ids=lambda v: str(v))
def test_gemv(benchmark, K, N, impl):
    rng = np.random.default_rng(0)
    x, w = rand(rng, 1, K), rand(rng, K, N)
    fn = (lambda: _C.matmul_forward(x, w)) if impl == "tinyroots" else (lambda: x @ w)
    run(benchmark, f"gemv 1x{K} @ {K}x{N}", impl, fn, 2.0 * K * N)


@pytest.mark.parametrize("impl", ["tinyroots", "numpy"])
def test_gemv_lm_head(benchmark, impl):
    """The tied LM head when decoding: logits = x @ wte^T, wte stored (V, C)."""
    rng = np.random.default_rng(0)
    x, wte = rand(rng, 1, 768), rand(rng, 50257, 768)
    fn = (lambda: _C.matmul_nt(x, wte)) if impl == "tinyroots" else (lambda: x @ wte.T)
    run(benchmark, "gemv NT 1x768 @ (50257x768)^T", impl, fn, 2.0 * 768 * 50257)


# ---------------------------------------------------------------------------------------------
# fused linear kernels vs ref's NumPy, GPT-2-124M with B*T = 1024 tokens


@pytest.mark.parametrize("impl", ["tinyroots", "numpy"])
@pytest.mark.parametrize("case", ["c_attn", "c_fc+gelu", "c_proj+residual", "backward c_fc"])
def test_linear(benchmark, case, impl):
    rng = np.random.default_rng(0)
    N, C = 1024, 768
    k = _C if impl == "tinyroots" else ref
    if case == "c_attn":
        x, w, b = rand(rng, N, C), rand(rng, C, 3 * C), rand(rng, 3 * C)
        fn, flops = (lambda: k.linear_forward(x, w, b)), 2.0 * N * C * 3 * C
    elif case == "c_fc+gelu":
        x, w, b = rand(rng, N, C), rand(rng, C, 4 * C), rand(rng, 4 * C)
        fn, flops = (lambda: k.linear_gelu_forward(x, w, b)), 2.0 * N * C * 4 * C
    elif case == "c_proj+residual":
        x, w, b, r = rand(rng, N, 4 * C), rand(rng, 4 * C, C), rand(rng, C), rand(rng, N, C)
        fn, flops = (lambda: k.linear_residual_forward(x, w, b, r)), 2.0 * N * 4 * C * C
    else:
        x, w, dout = rand(rng, N, C), rand(rng, C, 4 * C), rand(rng, N, 4 * C)
        fn, flops = (lambda: k.linear_backward(dout, x, w)), 2 * 2.0 * N * C * 4 * C
    run(benchmark, f"linear {case} ({N} tokens)", impl, fn, flops)
