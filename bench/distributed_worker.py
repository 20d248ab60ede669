"""One side of the data-parallel benchmark: timed optimizer steps on one or more processes.

    python bench/distributed_worker.py tinyroots c 8 overlap          # 1 process
    mpiexec -n 2 python bench/distributed_worker.py tinyroots c 8 overlap
    python bench/distributed_worker.py torch c 8 - RANK WORLD PORT    # one PyTorch DDP process
    -> rank 0 prints one JSON line {"tokens_per_s": ..., "median_step_s": ...}

Every side trains the same model on the same global batch: GLOBAL_MICRO micro-batches of
(B, T) per optimizer step, split between the processes (2 micro-batches on 1 process, 1 on each
of 2), one thread per process. tinyroots runs the shared loop's optimizer_step with the
DataParallel hooks; PyTorch runs DistributedDataParallel over gloo (its buckets of 25 MB,
overlapped with backward, are the default).
"""

import json
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from train_step_worker import CONFIGS  # noqa: E402

GLOBAL_MICRO = 2       # micro-batches per optimizer step, over all processes
WARMUP = 2


def batches(V, B, T, rng):
    """All GLOBAL_MICRO micro-batches of a step: every process draws all of them."""
    out = []
    for _ in range(GLOBAL_MICRO):
        ids = rng.integers(0, V, (B, T + 1))
        out.append((ids[:, :-1], ids[:, 1:]))
    return out


def timed(step, steps, barrier):
    times = []
    for i in range(WARMUP + steps):
        barrier()
        t0 = time.perf_counter()
        step()
        barrier()
        if i >= WARMUP:
            times.append(time.perf_counter() - t0)
    return float(np.median(times)), float(min(times))


def run_tinyroots(name, steps, mode):
    import tinyroots as tr
    from tinyroots import distributed, training
    tr.set_num_threads(1)
    world = distributed.init()
    L, NH, C, V, B, T = CONFIGS[name]
    tr.random.manual_seed(0)
    model = tr.GPT(tr.GPTConfig(n_layer=L, n_head=NH, n_embd=C, vocab_size=V, block_size=T))
    params = model.parameters()
    opt = tr.optim.AdamW(params, lr=6e-4, betas=(0.9, 0.95), weight_decay=0.1)
    hooks = distributed.DataParallel(world, zero=1 if mode == "zero" else 0,
                                     overlap=mode != "blocking")
    hooks.attach(opt)
    rng = np.random.default_rng(0)

    def loss_fn(batch):
        x, y = batch
        return model(x, targets=y, return_logits=False).loss

    def step():
        training.optimizer_step(batches(V, B, T, rng), loss_fn, params, opt, 1.0, hooks)

    med, best = timed(step, steps, world.barrier)
    return world, {"median_step_s": med, "min_step_s": best,
                   "tokens_per_s": GLOBAL_MICRO * B * T / med}


def run_torch(name, steps, rank, size, port):
    import torch
    import torch.distributed as tdist
    from torch_gpt import TorchGPT, make_adamw
    torch.set_num_threads(1)
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    tdist.init_process_group("gloo", rank=rank, world_size=size)
    L, NH, C, V, B, T = CONFIGS[name]
    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(TorchGPT(L, NH, C, V, T))
    opt = make_adamw(model.module)
    rng = np.random.default_rng(0)
    per = GLOBAL_MICRO // size

    def step():
        mine = batches(V, B, T, rng)[rank * per:(rank + 1) * per]
        for k, (x, y) in enumerate(mine):
            # DDP averages over processes; each local micro-batch adds 1/per of it
            if k < per - 1:
                with model.no_sync():
                    (model(torch.from_numpy(x), torch.from_numpy(y)) / per).backward()
            else:
                (model(torch.from_numpy(x), torch.from_numpy(y)) / per).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)

    med, best = timed(step, steps, tdist.barrier)
    tdist.destroy_process_group()
    return rank == 0, {"median_step_s": med, "min_step_s": best,
                       "tokens_per_s": GLOBAL_MICRO * B * T / med}


def main():
    framework, name, steps, mode = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]
    os.environ["OMP_NUM_THREADS"] = "1"
    if framework == "torch":
        rank, size, port = int(sys.argv[5]), int(sys.argv[6]), int(sys.argv[7])
        is_main, result = run_torch(name, steps, rank, size, port)
        result["processes"] = size
    else:
        world, result = run_tinyroots(name, steps, mode)
        is_main = world.is_main
        result["processes"] = world.size
    if is_main:
        result.update(framework=framework, config=name, mode=mode)
        print(json.dumps(result), flush=True)


if __name__ == "__main__":
    main()
