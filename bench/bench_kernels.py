"""Each non-GEMM kernel: the C++/OpenMP twin (tinyroots._C) against the NumPy reference
(tinyroots.ref), side by side in one benchmark group, on GPT-2-124M shapes (B=4, T=256, C=768,
NH=12, V=50257) and on a small model's (B=8, T=64, C=128, NH=4, V=256). Plus the AdamW step on
124M parameters against the machine's memory bandwidth, measured with a STREAM-like triad.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE \\
        pytest bench/bench_kernels.py --benchmark-only --benchmark-group-by=group

(`env -u ...` lets NumPy's OpenBLAS pick its own kernels, so the reference runs at its best.)
Both sides use BENCH_THREADS threads (bench/conftest.py). At the end a table of speedups
(best ref time / best C++ time, same run) is printed: on a shared machine the best of many
rounds is the figure least disturbed by other processes.
"""

import time

import numpy as np
import pytest

from tinyroots import ref

_C = pytest.importorskip("tinyroots._C", reason="the C++ extension is not built")

SIZES = {
    "gpt2": dict(B=4, T=256, C=768, NH=12, V=50257),
    "small": dict(B=8, T=64, C=128, NH=4, V=256),
}
IMPLS = {"cpp": _C, "ref": ref}

_best = {}  # group -> {"cpp": seconds, "ref": seconds}


@pytest.fixture(scope="module", autouse=True)
def speedup_table(request):
    """Prints the speedup of every group at the end of the module (outside output capture)."""
    yield
    tr = request.config.pluginmanager.get_plugin("terminalreporter")
    cap = request.config.pluginmanager.get_plugin("capturemanager")
    if tr is None or not (_best or _bandwidth_lines):
        return
    lines = ["", "kernel speedups (best ref / best cpp, this run):"]
    for group, t in sorted(_best.items()):
        if "cpp" in t and "ref" in t:
            lines.append(f"  {group:42s} cpp {t['cpp'] * 1e3:9.3f} ms   "
                         f"ref {t['ref'] * 1e3:9.2f} ms   x{t['ref'] / t['cpp']:7.1f}")
    lines += _bandwidth_lines
    with cap.global_and_fixture_disabled():
        for line in lines:
            tr.write_line(line)


def run(benchmark, group, impl, fn, *args, rounds=None):
    """Benchmark fn(*args) in `group`; big cases get a fixed, small number of rounds."""
    benchmark.group = group
    if rounds:
        benchmark.pedantic(fn, args=args, rounds=rounds, iterations=1, warmup_rounds=1)
    else:
        benchmark(fn, *args)
    _best.setdefault(group, {})[impl] = benchmark.stats.stats.min


def inputs(size, seed=0):
    s = SIZES[size]
    rng = np.random.default_rng(seed)

    def randn(*shape, scale=1.0):
        return (rng.standard_normal(shape, dtype=np.float32) * np.float32(scale))

    return s, rng, randn


both = pytest.mark.parametrize("impl", ["cpp", "ref"])
sizes = pytest.mark.parametrize("size", ["gpt2", "small"])


# ---------------------------------------------------------------------------------------------
# layernorm, GELU, softmax


@sizes
@both
def test_layernorm(benchmark, impl, size):
    s, rng, randn = inputs(size)
    x, w, b = randn(s["B"] * s["T"], s["C"]), randn(s["C"]), randn(s["C"])
    run(benchmark, f"layernorm_forward {size}", impl, IMPLS[impl].layernorm_forward, x, w, b)


@sizes
@both
def test_layernorm_backward(benchmark, impl, size):
    s, rng, randn = inputs(size)
    x, w, dout = randn(s["B"] * s["T"], s["C"]), randn(s["C"]), randn(s["B"] * s["T"], s["C"])
    _, mean, rstd = ref.layernorm_forward(x, w)
    run(benchmark, f"layernorm_backward {size}", impl, IMPLS[impl].layernorm_backward, dout, x,
        w, mean, rstd)


@sizes
@both
def test_gelu(benchmark, impl, size):
    s, rng, randn = inputs(size)
    x = randn(s["B"] * s["T"], 4 * s["C"])   # the MLP's hidden activation
    run(benchmark, f"gelu_forward {size}", impl, IMPLS[impl].gelu_forward, x)


@sizes
@both
def test_gelu_backward(benchmark, impl, size):
    s, rng, randn = inputs(size)
    x, dout = randn(s["B"] * s["T"], 4 * s["C"]), randn(s["B"] * s["T"], 4 * s["C"])
    run(benchmark, f"gelu_backward {size}", impl, IMPLS[impl].gelu_backward, dout, x)


def scores(size):
    s, rng, randn = inputs(size)
    return randn(s["B"], s["NH"], s["T"], s["T"], scale=3.0), randn(s["B"], s["NH"], s["T"],
                                                                    s["T"])


@sizes
@both
def test_softmax(benchmark, impl, size):
    x, _ = scores(size)   # attention-score shaped: (B, NH, T, T)
    run(benchmark, f"softmax_forward {size}", impl, IMPLS[impl].softmax_forward, x)


@sizes
@both
def test_softmax_backward(benchmark, impl, size):
    x, dout = scores(size)
    y = ref.softmax_forward(x)
    run(benchmark, f"softmax_backward {size}", impl, IMPLS[impl].softmax_backward, dout, y)


@sizes
@both
def test_log_softmax(benchmark, impl, size):
    x, _ = scores(size)
    run(benchmark, f"log_softmax_forward {size}", impl, IMPLS[impl].log_softmax_forward, x)


@sizes
@both
def test_log_softmax_backward(benchmark, impl, size):
    x, dout = scores(size)
    y = ref.log_softmax_forward(x)
    run(benchmark, f"log_softmax_backward {size}", impl, IMPLS[impl].log_softmax_backward, dout,
        y)


# ---------------------------------------------------------------------------------------------
# cross-entropy over the vocabulary


def logits_targets(size):
    s, rng, randn = inputs(size)
    N, V = s["B"] * s["T"], s["V"]
    return randn(N, V, scale=2.0), rng.integers(0, V, N)


@sizes
@both
def test_cross_entropy(benchmark, impl, size):
    logits, targets = logits_targets(size)
    run(benchmark, f"cross_entropy_forward {size}", impl, IMPLS[impl].cross_entropy_forward,
        logits, targets, rounds=5 if size == "gpt2" else None)


@sizes
@both
def test_cross_entropy_backward(benchmark, impl, size):
    logits, targets = logits_targets(size)
    _, lse = ref.cross_entropy_forward(logits, targets)
    dl = np.full(len(targets), 1.0 / len(targets), np.float32)
    run(benchmark, f"cross_entropy_backward {size}", impl, IMPLS[impl].cross_entropy_backward,
        dl, logits, targets, lse, rounds=5 if size == "gpt2" else None)


@sizes
@both
def test_cross_entropy_forward_backward(benchmark, impl, size):
    logits, targets = logits_targets(size)
    run(benchmark, f"cross_entropy_forward_backward {size}", impl,
        IMPLS[impl].cross_entropy_forward_backward, logits, targets,
        rounds=5 if size == "gpt2" else None)


@sizes
def test_cross_entropy_forward_backward_inplace(benchmark, size):
    # training's real call: the gradient overwrites the logits (no (N, V) allocation). The
    # values change every round (logits become gradients), which does not change the work.
    logits, targets = logits_targets(size)
    run(benchmark, f"cross_entropy_forward_backward inplace {size}", "cpp",
        lambda: _C.cross_entropy_forward_backward(logits, targets, inplace=True),
        rounds=5 if size == "gpt2" else None)


# ---------------------------------------------------------------------------------------------
# embedding


@sizes
@both
def test_embedding(benchmark, impl, size):
    s, rng, randn = inputs(size)
    wte, ids = randn(s["V"], s["C"]), rng.integers(0, s["V"], (s["B"], s["T"]))
    run(benchmark, f"embedding_forward {size}", impl, IMPLS[impl].embedding_forward, wte, ids)


@sizes
@both
def test_embedding_backward(benchmark, impl, size):
    s, rng, randn = inputs(size)
    ids, dout = rng.integers(0, s["V"], (s["B"], s["T"])), randn(s["B"], s["T"], s["C"])
    run(benchmark, f"embedding_backward {size}", impl, IMPLS[impl].embedding_backward, dout, ids,
        s["V"])


# ---------------------------------------------------------------------------------------------
# attention


@sizes
@both
def test_attention(benchmark, impl, size):
    s, rng, randn = inputs(size)
    qkv = randn(s["B"], s["T"], 3 * s["C"])
    run(benchmark, f"attention_forward {size}", impl, IMPLS[impl].attention_forward, qkv, s["NH"])


@sizes
@both
def test_attention_backward(benchmark, impl, size):
    s, rng, randn = inputs(size)
    qkv, dout = randn(s["B"], s["T"], 3 * s["C"]), randn(s["B"], s["T"], s["C"])
    out, lse = ref.attention_forward(qkv, s["NH"])
    run(benchmark, f"attention_backward {size}", impl, IMPLS[impl].attention_backward, dout, qkv,
        out, lse, s["NH"])


@pytest.mark.parametrize("n_keys", [1024, 64])
@both
def test_attention_decode(benchmark, impl, n_keys):
    # batch-1 generation: one new token against n_keys cached keys, 12 heads of 64
    rng = np.random.default_rng(0)
    q = rng.standard_normal((1, 12, 1, 64), dtype=np.float32)
    k = rng.standard_normal((1, 12, n_keys, 64), dtype=np.float32)
    v = rng.standard_normal((1, 12, n_keys, 64), dtype=np.float32)
    run(benchmark, f"attention_decode 1x{n_keys} keys", impl, IMPLS[impl].attention_decode, q, k,
        v, n_keys - 1)


# ---------------------------------------------------------------------------------------------
# optimizer updates and the memory bandwidth they should reach

N_124M = 124_439_808  # GPT-2 small's parameter count
N_SMALL = 1_000_000
_bandwidth_lines = []


def opt_arrays(n, k):
    rng = np.random.default_rng(0)
    return [rng.standard_normal(n, dtype=np.float32) * np.float32(0.01) for _ in range(k)]


@pytest.mark.parametrize("n", [N_124M, N_SMALL], ids=["124M", "1M"])
@both
def test_adamw(benchmark, impl, n):
    p, g, m, v = opt_arrays(n, 4)
    v = np.abs(v)
    fn = IMPLS[impl].adamw_update
    run(benchmark, f"adamw_update {n // 1_000_000}M", impl, fn, p, g, m, v, 6e-4, 0.9, 0.95, 1e-8,
        0.1, 10, rounds=5 if n == N_124M else None)
    if impl == "cpp":
        benchmark.extra_info["GB/s"] = 28 * n / benchmark.stats.stats.min / 1e9


@pytest.mark.parametrize("momentum", [0.9])
@both
def test_sgd(benchmark, impl, momentum):
    p, g, buf = opt_arrays(N_124M, 3)
    run(benchmark, "sgd_update 124M", impl, IMPLS[impl].sgd_update, p, g, buf, 0.1, momentum,
        0.0, False, rounds=5)


def best_seconds(fn, repeats):
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def test_adamw_bandwidth(benchmark):
    """AdamW on 124M parameters as a fraction of the memory bandwidth a triad reaches.

    The yardstick is STREAM's triad a = b + s c, in C++ on the same OpenMP threads
    (_C._stream_triad). Bytes moved: AdamW reads param, grad, m, v and writes param, m, v in
    place: 28 bytes per parameter. The triad reads b and c and writes a: 12 bytes per element as
    STREAM counts them, 16 as the memory really sees them (writing a first reads its lines).
    The ratio uses the 16-byte figure (the stricter one); the STREAM one is printed too. The two
    are timed in alternation, best of 7 each, so both see the same machine.
    """
    p, g, m, v = opt_arrays(N_124M, 4)
    v = np.abs(v)
    a, b, c = opt_arrays(N_124M, 3)

    def adam():
        _C.adamw_update(p, g, m, v, 6e-4, 0.9, 0.95, 1e-8, 0.1, 10)

    def triad():
        _C._stream_triad(a, b, c, 3.0)

    adam(), triad()
    t_adam = t_triad = float("inf")
    for _ in range(7):
        t_adam = min(t_adam, best_seconds(adam, 1))
        t_triad = min(t_triad, best_seconds(triad, 1))
    benchmark.group = "adamw bandwidth"
    benchmark.pedantic(adam, rounds=3, iterations=1)
    adam_gbs = 28 * N_124M / t_adam / 1e9
    triad_gbs, stream_gbs = 16 * N_124M / t_triad / 1e9, 12 * N_124M / t_triad / 1e9
    ratio = adam_gbs / triad_gbs
    benchmark.extra_info.update(adamw_GBps=adam_gbs, triad_GBps=triad_gbs,
                                triad_stream_GBps=stream_gbs, ratio=ratio)
    _bandwidth_lines.append(
        f"adamw_update 124M: {adam_gbs:.1f} GB/s; triad {triad_gbs:.1f} GB/s moved "
        f"({stream_gbs:.1f} GB/s as STREAM counts): adamw reaches {100 * ratio:.0f}% of the "
        f"triad ({100 * adam_gbs / stream_gbs:.0f}% of the STREAM figure)")
