"""Shared settings for the benchmarks (`pytest bench/ --benchmark-only`).

Every benchmark runs tinyroots and its reference side by side in one session, on the same
number of threads (BENCH_THREADS, default 2), so the report can be read as ratios: on a shared
machine absolute times drift, ratios measured in one run much less.
"""

import os

import pytest

BENCH_THREADS = int(os.environ.get("BENCH_THREADS", "2"))


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
