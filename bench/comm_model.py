"""Data-parallel GPT-2 124M on N nodes, on paper: predicted step time from a measured one.

    python bench/comm_model.py                     # measures one node's step on this machine
    python bench/comm_model.py --step-s 5.6        # or takes a step time you measured elsewhere

The model (README, "Training on many machines"):

- compute: t_c, one node's forward + backward + AdamW on its micro-batch (measured here with
  bench/train_step_worker.py, GPT-2 124M, B=4, T=256; pass --step-s for another machine),
  and for a bigger node (--node-cores) that time divided by the ratio of cores (optimistic);
  about 2/3 of it is backward, the part the gradient allreduce can hide behind;
- communication: a ring allreduce of the float32 gradients, each node sending and receiving
  2 (N-1)/N x 4 P bytes (P = 124.4M parameters) at the link's bandwidth:
  t_a = 2 (N-1)/N x 4 P / bandwidth, plus 2 (N-1) x latency for the ring's steps;
- overlapped (buckets sent during backward): t_step = t_c + max(0, t_a - t_backward);
  ZeRO-1 moves the same bytes (reduce-scatter during backward, allgather after the update),
  but the allgather half cannot hide behind this step's backward: t_a/2 is always exposed;
- gradient accumulation over A micro-batches multiplies compute by A and leaves t_a alone
  (only the last micro-batch's backward sends), which is how a slow network is amortised.

The speed-up over one node at the same per-node batch is N t_c / t_step (weak scaling).
"""

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
P = 124_439_808            # GPT-2 124M parameters (tied embedding counted once)
BACKWARD_SHARE = 2 / 3     # backward is about twice the forward's work
LATENCY_S = 20e-6          # per message on a commodity Ethernet link
NODES = (2, 4, 8, 16, 32, 64)
LINKS_GBIT = (10, 100)


def allreduce_s(n, gbit, nbytes=4 * P):
    """Ring allreduce time on n nodes: 2 (n-1)/n of the bytes each way, 2 (n-1) latencies."""
    return 2 * (n - 1) / n * nbytes / (gbit * 1e9 / 8) + 2 * (n - 1) * LATENCY_S


def step_s(t_c, n, gbit, accum=1, zero=False):
    """Predicted optimizer step time on n nodes (see the module docstring)."""
    t_a = allreduce_s(n, gbit)
    hidden_behind = BACKWARD_SHARE * t_c        # the last micro-batch's backward
    if zero:
        exposed = max(0.0, t_a / 2 - hidden_behind) + t_a / 2
    else:
        exposed = max(0.0, t_a - hidden_behind)
    return accum * t_c + exposed


def memory_per_rank_gb(n, zero):
    """float32 weights + gradients + the bucket buffers they travel in + AdamW's two moments;
    ZeRO-1 keeps the moments of 1/n of the parameters, plus that piece's summed gradient and
    a send buffer for the allgather (2 x 4P/n)."""
    if zero:
        return (4 * P * 3 + 8 * P / n + 8 * P / n) / 1e9
    return (4 * P * 3 + 8 * P) / 1e9


def table(t_c):
    lines = ["| nodes | 10 Gb/s: allreduce, step, speed-up | ZeRO-1 step | A=8 step, speed-up "
             "| 100 Gb/s: allreduce, step, speed-up | ZeRO-1 step | memory/rank (ZeRO-1) |",
             "|---|---|---|---|---|---|---|"]
    for n in NODES:
        cells = [str(n)]
        for gbit in LINKS_GBIT:
            t = step_s(t_c, n, gbit)
            cell = f"{allreduce_s(n, gbit):.2f} s, {t:.2f} s, {n * t_c / t:.1f}x"
            cells += [cell, f"{step_s(t_c, n, gbit, zero=True):.2f} s"]
            if gbit == 10:
                t8 = step_s(t_c, n, gbit, accum=8)
                cells.append(f"{t8:.1f} s, {n * 8 * t_c / t8:.1f}x")
        cells.append(f"{memory_per_rank_gb(n, False):.2f} GB ({memory_per_rank_gb(n, True):.2f}"
                     " GB)")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def measure(threads):
    out = subprocess.run([sys.executable, os.path.join(HERE, "train_step_worker.py"),
                          "tinyroots", "b", "3", str(threads), "1"],
                         capture_output=True, text=True, check=True)
    # the best step: contention on a shared machine only ever adds time
    return json.loads(out.stdout.strip().splitlines()[-1])["min_step_s"]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--step-s", type=float, default=0.0,
                    help="one node's step time in seconds (default: measure it here)")
    ap.add_argument("--threads", type=int, default=2, help="threads for the measurement")
    ap.add_argument("--node-cores", type=int, default=32,
                    help="cores of a cluster node for the second table")
    args = ap.parse_args(argv)
    t_c = args.step_s or measure(args.threads)
    print(f"GPT-2 124M: {P / 1e6:.1f}M parameters, {4 * P / 1e6:.0f} MB of float32 gradients; "
          f"one step at B=4, T=256 on {args.threads} threads: {t_c:.2f} s"
          f"{'' if args.step_s else ' (measured)'}")
    for cores in (args.threads, args.node_cores):
        # optimistic: the step time divides by the core count (threads scale perfectly)
        t_node = t_c * args.threads / cores
        print(f"\nnodes of {cores} cores: t_c = {t_node:.2f} s per micro-batch step\n")
        print(table(t_node))
    for gbit in LINKS_GBIT:
        t_a = allreduce_s(64, gbit)
        print(f"\n{gbit} Gb/s: the allreduce ({t_a:.2f} s at 64 nodes) stops hiding behind "
              f"backward once a node's micro-batch step is under {t_a / BACKWARD_SHARE:.2f} s; "
              "then A micro-batches per step spread what shows over A times the compute")


if __name__ == "__main__":
    main()
