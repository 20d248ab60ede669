"""Peak resident memory of this process, for the benchmark workers (run as scripts from bench/).

VmHWM from /proc/self/status, not getrusage's ru_maxrss: Linux carries ru_maxrss across exec
from the forked parent, so a worker started by a large pytest process (one holding torch and a
124M model) would report the parent's size instead of its own.
"""

import resource


def status_mb(key):
    """A memory figure of this process from /proc/self/status (Linux), in MB (nan elsewhere)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def peak_rss_mb():
    peak = status_mb("VmHWM")
    if peak != peak:  # no /proc: ru_maxrss, the best there is
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return peak
