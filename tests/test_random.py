"""The global generator: fresh randomness per process unless a seed is given."""

import subprocess
import sys

import tinyroots as tr

DRAW = ("import tinyroots.random as r; print(r.generator().integers(0, 2**62))")


def _draw_in_new_process(code=DRAW):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip()


def test_two_processes_draw_differently_without_a_seed():
    # the generator was seeded with 1337 at import, so every `generate` printed the same sample
    assert _draw_in_new_process() != _draw_in_new_process()


def test_manual_seed_makes_draws_repeat():
    seeded = DRAW.replace("; print", "; r.manual_seed(5); print")
    assert _draw_in_new_process(seeded) == _draw_in_new_process(seeded)


def test_state_round_trip():
    import tinyroots.random as r
    tr.manual_seed(3)
    state = r.get_state()
    a = r.generator().random(4)
    r.set_state(state)
    assert (r.generator().random(4) == a).all()
