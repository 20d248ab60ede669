"""nanoGPT's shakespeare_char recipe: tinyroots against the same recipe in PyTorch.

Each side runs as a whole process (imports, data, 2000 steps, evaluations), as a user would run
it; the figures are the final validation loss and the wall time. Target (issue "train and
generate"): the same val loss within 0.03, in <= 0.8x PyTorch's wall time. The machine's speed
drifts over minutes, so the two sides run alternately, BENCH_ROUNDS times each (default 2), and
each side's fastest round is compared.

    env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE pytest bench/bench_recipe.py --benchmark-only -s

test_shakespeare_char_recipe_bf16 runs the tinyroots recipe with --dtype bf16 against itself in
float32 (same alternation): the speed mixed precision buys, and what it costs in validation loss.
"""

import json
import os
import subprocess
import sys
import tempfile
import time

from conftest import BENCH_THREADS, alternate

HERE = os.path.dirname(os.path.abspath(__file__))
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def run_torch():
    corpus = os.path.join(HERE, "..", "tinyroots", "assets", "tinyshakespeare.txt")
    out = subprocess.run([sys.executable, os.path.join(HERE, "nanogpt_char_torch.py"), corpus,
                          str(BENCH_THREADS)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def run_tinyroots(dtype="fp32"):
    with tempfile.TemporaryDirectory() as out_dir:
        t0 = time.time()
        env = dict(os.environ, OMP_NUM_THREADS=str(BENCH_THREADS))
        subprocess.run([sys.executable, "-m", "tinyroots.train", "--preset", "shakespeare_char",
                        "--out-dir", out_dir, "--progress", "false", "--sample-tokens", "0",
                        "--plot", "false", "--dtype", dtype],
                       capture_output=True, text=True, check=True, env=env)
        wall = time.time() - t0
        with open(os.path.join(out_dir, "summary.json")) as f:
            summary = json.load(f)
    return {"val_loss": summary["final_val_loss"], "wall_s": wall}


def test_shakespeare_char_recipe(benchmark):
    try:
        import torch  # noqa: F401  (only to know whether the reference can run)
        frameworks = {"torch": run_torch, "tinyroots": run_tinyroots}
    except ImportError:
        frameworks = {"tinyroots": run_tinyroots}
    benchmark.group = "shakespeare_char recipe (whole process)"
    runs = benchmark.pedantic(alternate, args=(frameworks, ROUNDS), rounds=1, iterations=1)
    best = {f: min(r, key=lambda x: x["wall_s"]) for f, r in runs.items()}
    benchmark.extra_info.update(
        rounds={f: [(round(x["wall_s"], 1), x["val_loss"]) for x in r] for f, r in runs.items()})
    line = f"\n[tinyroots] val loss {best['tinyroots']['val_loss']:.4f} in " \
           f"{best['tinyroots']['wall_s']:.1f}s"
    if "torch" in best:
        ratio = best["tinyroots"]["wall_s"] / best["torch"]["wall_s"]
        diff = best["tinyroots"]["val_loss"] - best["torch"]["val_loss"]
        benchmark.extra_info.update(time_ratio_vs_torch=ratio, val_loss_diff=diff)
        line += (f" | torch val loss {best['torch']['val_loss']:.4f} in "
                 f"{best['torch']['wall_s']:.1f}s | {ratio:.2f}x PyTorch's time, val loss "
                 f"{diff:+.4f} vs PyTorch")
    per_round = ", ".join(f"{t['wall_s']:.0f}/{o['wall_s']:.0f}s"
                          for t, o in zip(runs["tinyroots"], runs.get("torch", [])))
    print(line + f" (best of {ROUNDS} rounds each; rounds tinyroots/torch: {per_round})")


def test_shakespeare_char_recipe_bf16(benchmark):
    """The same recipe with --dtype bf16 against tinyroots float32 (issue "bf16"): wall time and
    validation loss. Target: the validation loss within 0.03 of float32's."""
    benchmark.group = "shakespeare_char recipe, bf16 vs fp32 (whole process)"
    sides = {"bf16": lambda: run_tinyroots("bf16"), "fp32": lambda: run_tinyroots("fp32")}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {name: min(r, key=lambda x: x["wall_s"]) for name, r in runs.items()}
    speedup = best["fp32"]["wall_s"] / best["bf16"]["wall_s"]
    diff = best["bf16"]["val_loss"] - best["fp32"]["val_loss"]
    benchmark.extra_info.update(
        speedup_vs_fp32=speedup, val_loss_diff=diff,
        rounds={n: [(round(x["wall_s"], 1), x["val_loss"]) for x in r] for n, r in runs.items()})
    print(f"\n[bf16 ({_bf16_isa()})] val loss {best['bf16']['val_loss']:.4f} in "
          f"{best['bf16']['wall_s']:.1f}s | fp32 val loss {best['fp32']['val_loss']:.4f} in "
          f"{best['fp32']['wall_s']:.1f}s | {speedup:.2f}x fp32's speed, val loss {diff:+.4f} "
          f"(best of {ROUNDS} rounds each)")


def _bf16_isa():
    from tinyroots import kernels
    return kernels.info().get("bf16_isa", "?")
