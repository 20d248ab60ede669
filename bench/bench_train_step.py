"""A whole training step (forward, backward, AdamW) against PyTorch eager float32.

Four configs (issue "Fast kernels"): (a) GPT-2 124M, B=4, T=64; (b) GPT-2 124M, B=4, T=256;
(c) 6 layers, 6 heads, 384 wide, vocab 65, B=16, T=256; (d) 4 layers, 4 heads, 128 wide,
vocab 256, B=16, T=128. Each measurement runs in a fresh process (bench/train_step_worker.py)
so peak RSS is that framework's alone; both frameworks use the same thread count.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_train_step.py --benchmark-only

The benchmark's own timing is the whole subprocess; the figures to read are in extra_info:
tokens_per_s, peak_rss_mb, and for tinyroots the ratio to PyTorch measured in the same run.
"""

import json
import os
import subprocess
import sys

import pytest

from conftest import BENCH_THREADS

HERE = os.path.dirname(os.path.abspath(__file__))
STEPS = {"a": 6, "b": 4, "c": 10, "d": 30}
_results = {}


def measure(framework, name):
    out = subprocess.run([sys.executable, os.path.join(HERE, "train_step_worker.py"), framework,
                          name, str(STEPS[name]), str(BENCH_THREADS)],
                         capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("name", ["a", "b", "c", "d"])
@pytest.mark.parametrize("framework", ["torch", "tinyroots"])
def test_train_step(benchmark, framework, name):
    if framework == "torch":
        pytest.importorskip("torch")
    benchmark.group = f"train step config {name}"
    result = benchmark.pedantic(measure, args=(framework, name), rounds=1, iterations=1)
    _results[(framework, name)] = result
    benchmark.extra_info.update(result)
    ref = _results.get(("torch", name))
    if framework == "tinyroots" and ref:
        benchmark.extra_info["speedup_vs_torch"] = result["tokens_per_s"] / ref["tokens_per_s"]
        benchmark.extra_info["rss_ratio_vs_torch"] = result["peak_rss_mb"] / ref["peak_rss_mb"]
    print(f"\n[{framework} {name}] {result['tokens_per_s']:,.0f} tokens/s, "
          f"peak RSS {result['peak_rss_mb']:,.0f} MB"
          + (f", {benchmark.extra_info['speedup_vs_torch']:.2f}x torch"
             if "speedup_vs_torch" in benchmark.extra_info else ""))
