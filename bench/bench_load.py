"""Loading a GPT-2 124M-sized checkpoint: memory-mapped, so it costs no copy.

Targets (issue "Hugging Face GPT-2 compatibility"): peak RSS <= 1.3x the weights' size, and a
load time well under one forward pass of a 256-token batch. Each measurement is a fresh process
(bench/load_worker.py), so the peak RSS is the load's alone; transformers' from_pretrained of
the same directory is timed beside it for reference.

    pytest bench/bench_load.py --benchmark-only -s
"""

import json
import os
import subprocess
import sys

import pytest

import tinyroots as tr
from conftest import BENCH_THREADS

HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def gpt2_dir(tmp_path_factory):
    tr.manual_seed(0)
    path = tmp_path_factory.mktemp("gpt2-124M")
    tr.GPT(tr.GPTConfig()).save_pretrained(path)
    return path


def test_load_124M(benchmark, gpt2_dir):
    benchmark.group = "load GPT-2 124M checkpoint"

    def run():
        out = subprocess.run([sys.executable, os.path.join(HERE, "load_worker.py"), str(gpt2_dir),
                              str(BENCH_THREADS)], capture_output=True, text=True, check=True)
        return json.loads(out.stdout.strip().splitlines()[-1])

    r = benchmark.pedantic(run, rounds=3, iterations=1)
    benchmark.extra_info.update(r)
    benchmark.extra_info["load_over_forward"] = r["load_s"] / r["forward_s"]
    print(f"\n[tinyroots] load {r['load_s'] * 1000:.1f} ms = {r['load_s'] / r['forward_s']:.3f}x "
          f"one 256-token forward ({r['forward_s'] * 1000:.0f} ms); peak RSS "
          f"{r['peak_rss_mb']:.0f} MB = {r['peak_rss_over_weights']:.2f}x the weights "
          f"({r['weights_mb']:.0f} MB), after the forward that reads them all")


def test_transformers_load_124M(benchmark, gpt2_dir):
    transformers = pytest.importorskip("transformers")
    benchmark.group = "load GPT-2 124M checkpoint"
    benchmark.pedantic(lambda: transformers.GPT2LMHeadModel.from_pretrained(gpt2_dir),
                       rounds=3, iterations=1)
    print(f"\n[transformers] from_pretrained {benchmark.stats.stats.median * 1000:.0f} ms")
