"""bf16 GEMM (csrc/gemm_bf16*.cpp) against PyTorch's bf16 matmul, side by side, and the bf16
attention built on it (csrc/attention_bf16.cpp) against PyTorch's bf16 attention.

The three forms a Linear layer runs, on the shapes of GPT-2 124M (B=4, T=256, so N = 1024 rows)
and of config (c) (6 x 384, B=16, T=256, N = 4096):
    NN  out = x @ W        (linear_forward_bf16)
    NT  dx  = dout @ W^T   (linear_backward_bf16's first product)
    TN  dW  = x^T @ dout   (its second)
tinyroots gets float32 operands and rounds them to bf16 as it packs them (what --dtype bf16
training does); PyTorch gets operands already in bf16, its best case (under autocast it would
cast them first). Measured alternately, best of BENCH_ROUNDS each, same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_gemm_bf16.py --benchmark-only -s

test_attention_bf16: causal attention forward + backward on config (c)'s shape (B16, T256,
6 heads of 64) and GPT-2 124M's (B4, T256, 12 heads), tinyroots' bf16 kernels against
torch.nn.functional.scaled_dot_product_attention on bf16 tensors (what autocast runs), and
against tinyroots' own float32 kernels (what bf16 buys), alternated, best of BENCH_ROUNDS.
"""

import os
import time

import numpy as np
import pytest

from conftest import BENCH_THREADS, alternate

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
SHAPES = [(1024, 768, 3072), (1024, 3072, 768), (1024, 768, 2304), (4096, 384, 1536),
          (4096, 1536, 384)]


def best_seconds(run, rounds):
    times = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        run()
        times.append(time.perf_counter() - t0)
    return min(times)


@pytest.mark.parametrize("form", ["NN", "NT", "TN"])
@pytest.mark.parametrize("N,C,OC", SHAPES)
def test_gemm_bf16(benchmark, form, N, C, OC):
    torch = pytest.importorskip("torch")
    import tinyroots as tr
    from tinyroots import kernels
    tr.set_num_threads(BENCH_THREADS)
    torch.set_num_threads(BENCH_THREADS)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((N, C), dtype=np.float32)
    w = rng.standard_normal((C, OC), dtype=np.float32)
    g = rng.standard_normal((N, OC), dtype=np.float32)
    tx, tw, tg = (torch.from_numpy(a).to(torch.bfloat16) for a in (x, w, g))
    ours = {"NN": lambda: kernels.linear_forward_bf16(x, w),
            "NT": lambda: kernels.matmul_nt_bf16(g, w),
            "TN": lambda: kernels.matmul_tn_bf16(x, g)}[form]
    theirs = {"NN": lambda: tx @ tw, "NT": lambda: tg @ tw.T, "TN": lambda: tx.T @ tg}[form]
    benchmark.group = f"bf16 GEMM {form} N={N} C={C} OC={OC}"

    ours(), theirs()  # warm-up
    sides = {"tinyroots": lambda: best_seconds(ours, 1), "torch": lambda: best_seconds(theirs, 1)}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {k: min(v) for k, v in runs.items()}
    flops = 2.0 * N * C * OC
    gflops = {k: flops / v / 1e9 for k, v in best.items()}
    ratio = gflops["tinyroots"] / gflops["torch"]
    isa = kernels.info()["bf16_isa"]
    benchmark.extra_info.update(gflops=gflops, speedup_vs_torch=ratio, bf16_isa=isa)
    print(f"\n[{form} {N}x{C}x{OC}, {isa}, {BENCH_THREADS} threads] tinyroots "
          f"{gflops['tinyroots']:,.0f} GFLOP/s, torch bf16 {gflops['torch']:,.0f} GFLOP/s: "
          f"{ratio:.2f}x")


@pytest.mark.parametrize("B,T,C,NH", [(16, 256, 384, 6), (4, 256, 768, 12)])
def test_attention_bf16(benchmark, B, T, C, NH):
    torch = pytest.importorskip("torch")
    import tinyroots as tr
    from tinyroots import kernels
    tr.set_num_threads(BENCH_THREADS)
    torch.set_num_threads(BENCH_THREADS)
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B, T, 3 * C), dtype=np.float32)
    dout = rng.standard_normal((B, T, C), dtype=np.float32)

    def ours(forward, backward):
        def step():
            out, lse = forward(qkv, NH)
            backward(dout, qkv, out, lse, NH)
        return step

    tqkv = torch.from_numpy(qkv).to(torch.bfloat16).requires_grad_(True)
    tdout = torch.from_numpy(dout).to(torch.bfloat16).view(B, T, NH, C // NH).transpose(1, 2)

    def theirs():
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in tqkv.split(C, dim=2))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
        y.backward(tdout)
        tqkv.grad = None

    bf16 = ours(kernels.attention_forward_bf16, kernels.attention_backward_bf16)
    fp32 = ours(kernels.attention_forward, kernels.attention_backward)
    for f in (bf16, fp32, theirs):
        f()  # warm-up
    benchmark.group = f"bf16 attention B{B} T{T} C{C} NH{NH}"
    sides = {"tinyroots bf16": lambda: best_seconds(bf16, 1),
             "torch bf16": lambda: best_seconds(theirs, 1),
             "tinyroots fp32": lambda: best_seconds(fp32, 1)}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {k: min(v) for k, v in runs.items()}
    vs_torch = best["torch bf16"] / best["tinyroots bf16"]
    vs_fp32 = best["tinyroots fp32"] / best["tinyroots bf16"]
    isa = kernels.info()["bf16_isa"]
    benchmark.extra_info.update(seconds=best, speedup_vs_torch=vs_torch, speedup_vs_fp32=vs_fp32,
                                bf16_isa=isa)
    print(f"\n[attention B{B} T{T} C{C} NH{NH}, forward + backward, {isa}, {BENCH_THREADS} "
          f"threads] tinyroots bf16 {best['tinyroots bf16'] * 1e3:.1f} ms, torch bf16 "
          f"{best['torch bf16'] * 1e3:.1f} ms, tinyroots fp32 {best['tinyroots fp32'] * 1e3:.1f} "
          f"ms: {vs_torch:.2f}x torch, {vs_fp32:.2f}x fp32")
