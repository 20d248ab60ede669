"""The one random-number generator behind dropout, initialisation and sampling.

Everything random in tinyroots draws from ``generator()``, a NumPy PCG64 generator, so one call
to ``manual_seed(seed)`` makes a run reproducible, and ``get_state()`` / ``set_state()`` (plain
JSON-able dicts, never pickled) let a resumed run continue exactly where it stopped.
"""

import numpy as np

# seeded from the operating system's entropy: two runs sample differently unless a seed is given
# (manual_seed, or a command's --seed); training commands always seed from their config
_generator = np.random.default_rng()


def manual_seed(seed):
    """Reseed the global generator; returns it."""
    global _generator
    _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The global generator (use it, do not keep it: manual_seed replaces it)."""
    return _generator


def get_state():
    """The generator's state as a JSON-serialisable dict."""
    return _generator.bit_generator.state


def set_state(state):
    """Restore a state produced by get_state()."""
    if not isinstance(state, dict) or state.get("bit_generator") != "PCG64":
        raise ValueError("random state must be a dict from tinyroots.random.get_state() "
                         f"(a PCG64 state), got {type(state).__name__}")
    _generator.bit_generator.state = state
