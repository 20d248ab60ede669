"""Load a checkpoint in a fresh process; report load time, one forward's time and peak RSS.

    python bench/load_worker.py DIR [threads]   -> one JSON line
"""

import json
import sys
import time

import numpy as np

from memory import peak_rss_mb, status_mb


def rss_mb():
    return status_mb("VmRSS")


def main():
    path = sys.argv[1]
    import tinyroots as tr
    if len(sys.argv) > 2:
        tr.set_num_threads(int(sys.argv[2]))
    base = rss_mb()
    t0 = time.perf_counter()
    model = tr.GPT.from_pretrained(path)
    load_s = time.perf_counter() - t0
    after_load = rss_mb()
    ids = np.random.default_rng(0).integers(0, model.config.vocab_size, (1, 256))
    with tr.no_grad():
        t0 = time.perf_counter()
        model(ids)
        first_forward_s = time.perf_counter() - t0        # includes reading the weights in
        t0 = time.perf_counter()
        model(ids)
        forward_s = time.perf_counter() - t0
    weights_mb = model.num_parameters() * 4 / 2 ** 20
    peak = peak_rss_mb()
    print(json.dumps({"load_s": load_s, "forward_s": forward_s,
                      "first_forward_s": first_forward_s, "weights_mb": weights_mb,
                      "rss_before_mb": base, "rss_after_load_mb": after_load,
                      "peak_rss_mb": peak, "peak_rss_over_weights": peak / weights_mb}))


if __name__ == "__main__":
    main()
