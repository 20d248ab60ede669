"""Data-parallel training, 2 processes x 1 thread, side by side in one run.

For configs (c) 6x384 vocab 65 B16 T256 and (d) 4x128 vocab 256 B16 T128 of the kernel
benchmarks, one optimizer step of a global batch of 2 micro-batches (B sequences each), split
between the processes (bench/distributed_worker.py), four ways:

    tinyroots 2x1     mpiexec -n 2, buckets allreduced during backward (the default)
    torch DDP 2x1     PyTorch DistributedDataParallel over gloo, 2 processes (its 25 MB
                      buckets, overlapped with backward, are its default)
    tinyroots 1x1     one process running both micro-batches: the scaling baseline
    blocking 2x1      mpiexec -n 2, one blocking allreduce of all gradients after backward

and reports: speed against DDP (its step time / ours), scaling efficiency (1x1 step time /
2x1 step time / 2: 1.0 is perfect) and overlap (blocking step time / overlapped).

    pytest bench/bench_distributed.py --benchmark-only -s

The sides run alternately, BENCH_ROUNDS times each (default 2), and each side's best round is
kept: on a machine shared with other work, contention only ever adds time. Needs the mpi extra
(mpiexec next to the interpreter) and torch.
"""

import json
import os
import socket
import subprocess
import sys

import pytest

from conftest import alternate

HERE = os.path.dirname(os.path.abspath(__file__))
WORKER = os.path.join(HERE, "distributed_worker.py")
MPIEXEC = os.path.join(os.path.dirname(sys.executable), "mpiexec")
STEPS = {"c": 4, "d": 12}
ROUNDS = int(os.environ.get("BENCH_ROUNDS", "2"))


def _env():
    env = dict(os.environ, OMP_NUM_THREADS="1")
    for var in ("PMI_RANK", "PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK"):
        env.pop(var, None)
    return env


def _result(stdout):
    return json.loads(stdout.strip().splitlines()[-1])


def run_tinyroots(name, n, mode):
    cmd = [sys.executable, WORKER, "tinyroots", name, str(STEPS[name]), mode]
    if n > 1:
        cmd = [MPIEXEC, "-n", str(n), *cmd]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=_env(), cwd=HERE)
    return _result(out.stdout)


def run_torch(name, n):
    with socket.socket() as s:              # a free port for the gloo rendezvous
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    procs = [subprocess.Popen([sys.executable, WORKER, "torch", name, str(STEPS[name]), "-",
                               str(rank), str(n), str(port)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=_env(), cwd=HERE)
             for rank in range(n)]
    outs = [p.communicate(timeout=900) for p in procs]
    for p, (_, err) in zip(procs, outs):
        if p.returncode:
            raise RuntimeError(f"torch worker failed: {err[-2000:]}")
    return _result(outs[0][0])


SIDES = {
    "tinyroots 2x1": lambda name: run_tinyroots(name, 2, "overlap"),
    "torch DDP 2x1": lambda name: run_torch(name, 2),
    "tinyroots 1x1": lambda name: run_tinyroots(name, 1, "overlap"),
    "blocking 2x1": lambda name: run_tinyroots(name, 2, "blocking"),
}


@pytest.mark.parametrize("name", ["c", "d"])
def test_data_parallel(benchmark, name):
    if not os.path.exists(MPIEXEC):
        pytest.skip('needs the mpi extra: pip install "tinyroots[mpi]"')
    pytest.importorskip("torch")
    benchmark.group = f"data parallel config {name}"

    sides = {side: lambda run=run: run(name)["median_step_s"] for side, run in SIDES.items()}
    runs = benchmark.pedantic(alternate, args=(sides, ROUNDS), rounds=1, iterations=1)
    best = {side: min(times) for side, times in runs.items()}
    vs_ddp = best["torch DDP 2x1"] / best["tinyroots 2x1"]
    efficiency = best["tinyroots 1x1"] / best["tinyroots 2x1"] / 2
    overlap = best["blocking 2x1"] / best["tinyroots 2x1"]
    benchmark.extra_info.update(step_s={k: round(v, 4) for k, v in best.items()},
                                rounds={k: [round(t, 4) for t in v] for k, v in runs.items()},
                                speedup_vs_ddp=vs_ddp, scaling_efficiency=efficiency,
                                overlap_speedup=overlap)
    print(f"\n[config {name}] step time, best of {ROUNDS} rounds: "
          + ", ".join(f"{k} {v * 1e3:.0f} ms" for k, v in best.items())
          + f" | {vs_ddp:.2f}x DDP's speed, scaling efficiency {efficiency:.2f}, "
          f"overlapped {overlap:.2f}x the blocking allreduce")
