"""Run N training steps of one config in a fresh process and report tokens/s and peak RSS.

    python bench/train_step_worker.py tinyroots c 10 2 [warmup] [fp32|bf16]
    -> one JSON line {"tokens_per_s": ..., "peak_rss_mb": ...}

bf16: tinyroots' --dtype bf16 (ops.autocast: the linear products in bf16) against PyTorch's
torch.autocast("cpu", dtype=torch.bfloat16) around the forward, with its fused AdamW.

A fresh process per measurement gives an honest peak resident memory (VmHWM) for each
framework and config, uncontaminated by whatever ran before in the same interpreter.
"""

import json
import os
import sys
import time

import numpy as np

from memory import peak_rss_mb

CONFIGS = {
    # name: (n_layer, n_head, n_embd, vocab, B, T)
    "a": (12, 12, 768, 50257, 4, 64),
    "b": (12, 12, 768, 50257, 4, 256),
    "c": (6, 6, 384, 65, 16, 256),
    "d": (4, 4, 128, 256, 16, 128),
}


def batch(V, B, T, rng):
    ids = rng.integers(0, V, (B, T + 1))
    return ids[:, :-1], ids[:, 1:]


def run_tinyroots(cfg, steps, warmup, dtype="fp32"):
    import tinyroots as tr
    L, NH, C, V, B, T = cfg
    model = tr.GPT(tr.GPTConfig(n_layer=L, n_head=NH, n_embd=C, vocab_size=V, block_size=T))
    opt = tr.optim.AdamW(model.parameters(), lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    rng = np.random.default_rng(0)

    def step():
        x, y = batch(V, B, T, rng)
        with tr.ops.autocast(dtype):
            loss = model(x, targets=y, return_logits=False).loss
            loss.backward()
        opt.step()
        opt.zero_grad()
        return float(loss)

    return _time(step, steps, warmup, B * T)


def run_torch(cfg, steps, warmup, dtype="fp32"):
    import torch
    sys.path.insert(0, os.path.dirname(__file__))
    from torch_gpt import TorchGPT, make_adamw
    L, NH, C, V, B, T = cfg
    model = TorchGPT(L, NH, C, V, T)
    opt = make_adamw(model)
    rng = np.random.default_rng(0)

    def step():
        x, y = batch(V, B, T, rng)
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=dtype == "bf16"):
            loss = model(torch.from_numpy(x), torch.from_numpy(y))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return loss.item()

    return _time(step, steps, warmup, B * T)


def _time(step, steps, warmup, tokens):
    for _ in range(warmup):
        step()
    times = []
    for _ in range(steps):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    med = float(np.median(times))
    return {"tokens_per_s": tokens / med, "median_step_s": med, "min_step_s": min(times),
            "peak_rss_mb": peak_rss_mb()}


def main():
    framework, name, steps, threads = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    warmup = int(sys.argv[5]) if len(sys.argv) > 5 else 2
    dtype = sys.argv[6] if len(sys.argv) > 6 else "fp32"
    os.environ["OMP_NUM_THREADS"] = str(threads)
    if framework == "torch":
        import torch
        torch.set_num_threads(threads)
        result = run_torch(CONFIGS[name], steps, warmup, dtype)
    else:
        import tinyroots as tr
        tr.set_num_threads(threads)
        result = run_tinyroots(CONFIGS[name], steps, warmup, dtype)
        if dtype == "bf16":
            result.update(bf16_isa=tr.kernels.info()["bf16_isa"])
    result.update(framework=framework, config=name, threads=threads, dtype=dtype)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
