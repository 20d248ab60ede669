"""Attention with dropout in training, forward + backward through ops.attention (what a
fine-tuning step runs: a Hugging Face GPT-2 checkpoint brings attn_pdrop = 0.1).

    tinyroots fused      kernels.attention_*_dropout: the mask a hash replayed in backward
    tinyroots composed   ops.attention_composed: the (T, T) scores, softmax, dropout mask and
                         products as separate ops (what training with dropout ran before)
    torch                scaled_dot_product_attention(dropout_p=p, is_causal=True), float32

Same threads (BENCH_THREADS), sides alternated, best of BENCH_ROUNDS each:

    pytest bench/bench_attention_dropout.py --benchmark-only -s
"""

import os
import time

import numpy as np
import pytest

from conftest import BENCH_THREADS, alternate

ROUNDS = int(os.environ.get("BENCH_ROUNDS", "5"))
P = 0.1


def best_seconds(run):
    t0 = time.perf_counter()
    run()
    return time.perf_counter() - t0


@pytest.mark.parametrize("B,T,C,NH", [(16, 256, 384, 6), (4, 256, 768, 12)])
def test_attention_dropout(benchmark, B, T, C, NH):
    torch = pytest.importorskip("torch")
    import tinyroots as tr
    from tinyroots import ops
    tr.set_num_threads(BENCH_THREADS)
    torch.set_num_threads(BENCH_THREADS)
    rng = np.random.default_rng(0)
    qkv = rng.standard_normal((B, T, 3 * C), dtype=np.float32)
    dout = rng.standard_normal((B, T, C), dtype=np.float32)

    def ours(op):
        def step():
            x = tr.Tensor(qkv, requires_grad=True)
            y = op(x, NH, P, True)
            y.backward(dout)
        return step

    tqkv = torch.from_numpy(qkv).requires_grad_(True)
    tdout = torch.from_numpy(dout).view(B, T, NH, C // NH).transpose(1, 2)

    def theirs():
        q, k, v = (t.view(B, T, NH, C // NH).transpose(1, 2) for t in tqkv.split(C, dim=2))
        y = torch.nn.functional.scaled_dot_product_attention(q, k, v, dropout_p=P,
                                                             is_causal=True)
        y.backward(tdout)
        tqkv.grad = None

    fused, composed = ours(ops.attention), ours(ops.attention_composed)
    for f in (fused, composed, theirs):
        f()  # warm-up
    benchmark.group = f"attention dropout {P} B{B} T{T} C{C} NH{NH}"
    sides = {"fused": lambda: best_seconds(fused), "composed": lambda: best_seconds(composed),
             "torch": lambda: best_seconds(theirs)}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {k: min(v) for k, v in runs.items()}
    vs_composed = best["composed"] / best["fused"]
    vs_torch = best["torch"] / best["fused"]
    benchmark.extra_info.update(seconds=best, speedup_vs_composed=vs_composed,
                                speedup_vs_torch=vs_torch)
    print(f"\n[attention, dropout {P}, B{B} T{T} C{C} NH{NH}, forward + backward, "
          f"{BENCH_THREADS} threads] fused {best['fused'] * 1e3:.1f} ms, composed "
          f"{best['composed'] * 1e3:.1f} ms, torch SDPA {best['torch'] * 1e3:.1f} ms: "
          f"{vs_composed:.2f}x composed, {vs_torch:.2f}x torch")
