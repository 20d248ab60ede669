"""nanoGPT's shakespeare_char recipe: tinyroots against the same recipe in PyTorch.

Each side runs as a whole process (imports, data, 2000 steps, evaluations), as a user would run
it; the figures are the final validation loss and the wall time. Target (issue "train and
generate"): the same val loss within 0.03, in <= 0.8x PyTorch's wall time.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_recipe.py --benchmark-only -s
"""

import json
import os
import subprocess
import sys
import tempfile
import time

import pytest

from conftest import BENCH_THREADS

HERE = os.path.dirname(os.path.abspath(__file__))
_results = {}


def run_torch():
    corpus = os.path.join(HERE, "..", "tinyroots", "assets", "tinyshakespeare.txt")
    out = subprocess.run([sys.executable, os.path.join(HERE, "nanogpt_char_torch.py"), corpus,
                          str(BENCH_THREADS)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_tinyroots():
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS=str(BENCH_THREADS))
        subprocess.run([sys.executable, "-m", "tinyroots.train", "--preset", "shakespeare_char",
                        "--out-dir", out_dir, "--progress", "false", "--sample-tokens", "0",
                        "--plot", "false"], capture_output=True, text=True, check=True, env=env)
        wall = time.time() - t0
        with open(os.path.join(out_dir, "summary.json")) as f:
            summary = json.load(f)
    return {"val_loss": summary["final_val_loss"], "wall_s": wall}


@pytest.mark.parametrize("framework", ["torch", "tinyroots"])
def test_shakespeare_char_recipe(benchmark, framework):
    if framework == "torch":
        pytest.importorskip("torch")
    benchmark.group = "shakespeare_char recipe (whole process)"
    fn = run_torch if framework == "torch" else run_tinyroots
    result = benchmark.pedantic(fn, rounds=1, iterations=1)
    _results[framework] = result
    benchmark.extra_info.update(result)
    ref = _results.get("torch")
    line = f"\n[{framework}] val loss {result['val_loss']:.4f} in {result['wall_s']:.1f}s"
    if framework == "tinyroots" and ref:
        benchmark.extra_info["time_ratio_vs_torch"] = result["wall_s"] / ref["wall_s"]
        benchmark.extra_info["val_loss_diff"] = result["val_loss"] - ref["val_loss"]
        line += (f" = {result['wall_s'] / ref['wall_s']:.2f}x PyTorch's time, val loss "
                 f"{result['val_loss'] - ref['val_loss']:+.4f} vs PyTorch")
    print(line)
