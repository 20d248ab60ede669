"""bf16 GEMM (csrc/gemm_bf16*.cpp) against PyTorch's bf16 matmul, side by side.

The three forms a Linear layer runs, on the shapes of GPT-2 124M (B=4, T=256, so N = 1024 rows)
and of config (c) (6 x 384, B=16, T=256, N = 4096):
    NN  out = x @ W        (linear_forward_bf16)
    NT  dx  = dout @ W^T   (linear_backward_bf16's first product)
    TN  dW  = x^T @ dout   (its second)
tinyroots gets float32 operands and rounds them to bf16 as it packs them (what --dtype bf16
training does); PyTorch gets operands already in bf16, its best case (under autocast it would
cast them first). Measured alternately, best of BENCH_ROUNDS each, same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_gemm_bf16.py --benchmark-only -s
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
