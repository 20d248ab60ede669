"""A whole training step (forward, backward, AdamW) against PyTorch eager float32.

Four configs (issue "Fast kernels"): (a) GPT-2 124M, B=4, T=64; (b) GPT-2 124M, B=4, T=256;
(c) 6 layers, 6 heads, 384 wide, vocab 65, B=16, T=256; (d) 4 layers, 4 heads, 128 wide,
vocab 256, B=16, T=128. Each measurement runs in a fresh process (bench/train_step_worker.py)
so peak RSS is that framework's alone; both frameworks use the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_train_step.py --benchmark-only

test_train_step_bf16 does the same for mixed precision: tinyroots' --dtype bf16 (the linear
products in bf16 on AMX or AVX512-BF16) against torch.autocast("cpu", dtype=torch.bfloat16)
with fused AdamW. Targets: >= 1.3x on an AMX CPU, >= 1.15x with AVX512-BF16 only.

This machine's speed drifts by 5-10% over minutes, so the two frameworks are measured
alternately, BENCH_ROUNDS times each (default 2: torch, tinyroots, torch, tinyroots), and each
side's best round is compared. The benchmark's own timing is the whole exchange; the figures to
read are printed and kept in extra_info: tokens/s and peak RSS of each side, and their ratios.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import BENCH_THREADS, alternate

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {"a": 6, "b": 4, "c": 10, "d": 30}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def measure(framework, name, dtype="fp32"):
    out = subprocess.run([sys.executable, os.path.join(HERE, "train_step_worker.py"), framework,
                          name, str(STEPS[name]), str(BENCH_THREADS), "2", dtype],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["a", "b", "c", "d"])
def test_train_step(benchmark, name):
    try:
        import torch  # noqa: F401  (only to know whether the reference can run)
        frameworks = ["torch", "tinyroots"]
    except ImportError:
        frameworks = ["tinyroots"]
    benchmark.group = f"train step config {name}"

    sides = {f: lambda f=f: measure(f, name) for f in frameworks}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {f: max(r, key=lambda x: x["tokens_per_s"]) for f, r in runs.items()}
    peak = {f: max(x["peak_rss_mb"] for x in r) for f, r in runs.items()}
    benchmark.extra_info.update(
        tinyroots_tokens_per_s=best["tinyroots"]["tokens_per_s"],
        tinyroots_peak_rss_mb=peak["tinyroots"],
        rounds={f: [round(x["tokens_per_s"], 1) for x in r] for f, r in runs.items()})
    line = (f"\n[config {name}] tinyroots {best['tinyroots']['tokens_per_s']:,.0f} tokens/s, "
            f"peak RSS {peak['tinyroots']:,.0f} MB")
    if "torch" in runs:
        speedup = best["tinyroots"]["tokens_per_s"] / best["torch"]["tokens_per_s"]
        benchmark.extra_info.update(
            torch_tokens_per_s=best["torch"]["tokens_per_s"], torch_peak_rss_mb=peak["torch"],
            speedup_vs_torch=speedup, rss_ratio_vs_torch=peak["tinyroots"] / peak["torch"])
        line += (f" | torch {best['torch']['tokens_per_s']:,.0f} tokens/s, peak RSS "
                 f"{peak['torch']:,.0f} MB | {speedup:.2f}x torch's speed, "
                 f"{peak['tinyroots'] / peak['torch']:.2f}x its memory")
    print(line + f" (best of {ROUNDS} rounds each)")


@pytest.mark.parametrize("name", ["a", "b", "c", "d"])
def test_train_step_bf16(benchmark, name):
    torch = pytest.importorskip("torch")  # noqa: F841  (the reference must be there to compare)
    benchmark.group = f"train step bf16 config {name}"

    sides = {f: lambda f=f: measure(f, name, "bf16") for f in ("torch", "tinyroots")}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {f: max(r, key=lambda x: x["tokens_per_s"]) for f, r in runs.items()}
    peak = {f: max(x["peak_rss_mb"] for x in r) for f, r in runs.items()}
    speedup = best["tinyroots"]["tokens_per_s"] / best["torch"]["tokens_per_s"]
    isa = best["tinyroots"].get("bf16_isa")
    benchmark.extra_info.update(
        bf16_isa=isa, speedup_vs_torch_autocast=speedup,
        rss_ratio_vs_torch=peak["tinyroots"] / peak["torch"],
        tokens_per_s={f: b["tokens_per_s"] for f, b in best.items()}, peak_rss_mb=peak,
        rounds={f: [round(x["tokens_per_s"], 1) for x in r] for f, r in runs.items()})
    print(f"\n[config {name}, bf16 ({isa})] tinyroots {best['tinyroots']['tokens_per_s']:,.0f} "
          f"tokens/s, peak RSS {peak['tinyroots']:,.0f} MB | torch autocast "
          f"{best['torch']['tokens_per_s']:,.0f} tokens/s, peak RSS {peak['torch']:,.0f} MB | "
          f"{speedup:.2f}x torch's speed, {peak['tinyroots'] / peak['torch']:.2f}x its memory "
          f"(best of {ROUNDS} rounds each)")
