"""ordered_map: map a function over a stream on worker processes, in order, with bounded memory.

Why not Pool.imap: its feeder thread pulls items from the input as fast as it can, so when the
workers are slower than the reader the whole corpus piles up in memory. Here at most
`max_pending` items are in flight; the reader waits for the oldest before it reads more.
"""

import multiprocessing as mp
import os
from collections import deque

# More worker processes than this only queue for the cores, and each is a fork of this process:
# --workers 100000 forked until the machine ran out of memory. The commands refuse more.
MAX_WORKERS = 4 * (os.cpu_count() or 1)


def _context():
    # fork starts workers instantly and shares the parent's read-only state (word lists, the
    # boilerplate set) without pickling; spawn is the portable fallback (macOS, Windows).
    methods = mp.get_all_start_methods()
    return mp.get_context("fork" if "fork" in methods else "spawn")


def ordered_map(fn, items, workers=1, initializer=None, initargs=(), max_pending=None):
    """Yield (context, fn(payload)) for each (context, payload) in items, in input order.

    context stays in this process (say, the documents' ids); only payload travels to a worker.
    With workers <= 1 everything runs here, which is also what the tests compare against.

    >>> list(ordered_map(len, [("a", "xy"), ("b", "xyz")]))
    [('a', 2), ('b', 3)]
    """
    if workers <= 1:
        if initializer is not None:
            initializer(*initargs)
        for context, payload in items:
            yield context, fn(payload)
        return
    max_pending = max_pending or 2 * workers
    with _context().Pool(workers, initializer, initargs) as pool:
        pending = deque()
        for context, payload in items:
            pending.append((context, pool.apply_async(fn, (payload,))))
            if len(pending) >= max_pending:
                context, result = pending.popleft()
                yield context, result.get()
        while pending:
            context, result = pending.popleft()
            yield context, result.get()
