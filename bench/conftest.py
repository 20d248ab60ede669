"""Shared settings for the benchmarks (`pytest bench/ --benchmark-only`).

Every benchmark runs tinyroots and its reference side by side in one session, on the same
number of threads (BENCH_THREADS, default 2), so the report can be read as ratios: on a shared
machine absolute times drift, ratios measured in one run much less.
"""

import os
import statistics

import pytest

BENCH_THREADS = int(os.environ.get("BENCH_THREADS", "2"))


# subtle: this machine's speed drifts from one minute to the next by more than most of the gaps
# the benchmarks measure (the same run 1.3x or 1.7x slower an hour later), so two sides timed
# minutes apart can say 2.8x or 5x. Sides measured by turns share the drift: alternate() runs
# them round after round, and paired_ratios() takes each ratio from a pair run back to back and
# reports the median of several pairs.


def alternate(sides, rounds):
    """{name: fn} -> {name: [fn() of each round]}: the sides take turns, `rounds` times each."""
    runs = {name: [] for name in sides}
    for _ in range(rounds):
        for name, fn in sides.items():
            runs[name].append(fn())
    return runs


def paired_ratios(numerator, denominator, rounds, done=()):
    """Ratios numerator() / denominator(), each pair run back to back, until there are `rounds`
    of them counting those already `done` -> (their median, the ratios)."""
    ratios = list(done)
    while len(ratios) < rounds:
        ratios.append(numerator() / denominator())
    return float(statistics.median(ratios)), ratios


def pairs_text(ratios):
    """'median of 3 pairs: 4.12, 3.80, 4.51' for a report line."""
    return f"median of {len(ratios)} pairs: {', '.join(f'{r:.2f}' for r in ratios)}"


@pytest.fixture(scope="session", autouse=True)
def _threads():
    import tinyroots as tr
    tr.set_num_threads(BENCH_THREADS)
    try:
        import torch
        torch.set_num_threads(BENCH_THREADS)
    except ImportError:
        pass
    yield BENCH_THREADS
