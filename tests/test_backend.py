"""Backend selection, the runtime report, and the layernorm kernel proven equal to ref."""

import os
import subprocess
import sys

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import kernels, ref


def run_py(code, **env):
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          env=dict(os.environ, **env), timeout=300)


def test_extension_is_built_where_required():
    """CI sets TINYROOTS_REQUIRE_EXTENSION=1: a build that silently fell back to NumPy must fail
    there, not pass slowly."""
    if os.environ.get("TINYROOTS_REQUIRE_EXTENSION") == "1":
        assert kernels._C is not None, f"tinyroots._C did not import: {kernels._import_error}"
    if kernels._C is not None:
        assert kernels.BACKEND == "cpu"
        assert kernels.IMPLEMENTATION["layernorm_forward"] == "cpu"


def test_numpy_backend_uses_ref_everywhere():
    r = run_py("import tinyroots as tr, json; print(json.dumps(tr.kernels.info()))",
               TINYROOTS_BACKEND="numpy")
    assert r.returncode == 0, r.stderr
    import json
    info = json.loads(r.stdout)
    assert info["backend"] == "numpy" and set(info["kernels"].values()) == {"numpy"}


def test_bad_backend_name_is_a_clear_error():
    r = run_py("import tinyroots", TINYROOTS_BACKEND="gpu")
    assert r.returncode != 0 and "TINYROOTS_BACKEND='gpu' is not a backend" in r.stderr


def test_info_command_reports_backend_isa_threads():
    r = subprocess.run([sys.executable, "-m", "tinyroots.info"], capture_output=True, text=True,
                       env=dict(os.environ, OMP_NUM_THREADS="1"), timeout=300)
    assert r.returncode == 0
    assert "backend:" in r.stdout and "instruction set:" in r.stdout
    assert "threads:     1" in r.stdout


def test_info_command_help_and_numpy_backend():
    r = subprocess.run([sys.executable, "-m", "tinyroots.info", "--help"], capture_output=True,
                       text=True, timeout=300)
    assert r.returncode == 0 and r.stdout.startswith("usage: python -m tinyroots.info")
    # asking for NumPy is not a failed build: it said "not built: None"
    r = run_py("from tinyroots.info import main; main([])", TINYROOTS_BACKEND="numpy")
    assert "extension:   not loaded (TINYROOTS_BACKEND=numpy" in r.stdout, r.stdout


def test_set_num_threads():
    before = tr.get_num_threads()
    try:
        tr.set_num_threads(1)
        assert tr.get_num_threads() == 1 or kernels._C is None
    finally:
        tr.set_num_threads(before)
    # a clear error before libgomp sees the number: 100000 overflowed its stack (a segfault),
    # 20000 really started 20000 threads; a fraction is not a thread count
    for bad in (0, -1, kernels.MAX_THREADS + 1, 100000, 2.7, 2.0, True, "4", None):
        with pytest.raises(ValueError, match=r"set_num_threads\(n\).*(1 to|from 1)"):
            tr.set_num_threads(bad)
    assert tr.get_num_threads() == before


def test_check_num_threads_is_the_rule_commands_share():
    assert kernels.check_num_threads(1) == 1
    assert kernels.check_num_threads(np.int64(kernels.MAX_THREADS)) == kernels.MAX_THREADS
    with pytest.raises(ValueError, match=r"--num-threads .*got 100000"):
        kernels.check_num_threads(100000, "--num-threads")


@pytest.mark.skipif(kernels._C is None, reason="the C++ extension is not built")
@pytest.mark.parametrize("shape", [(1, 1), (7, 33), (2, 5, 768), (64, 1000)])
def test_layernorm_kernel_equals_ref(shape):
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3 + 1).astype(np.float32)
    C = shape[-1]
    w = rng.standard_normal(C).astype(np.float32)
    b = rng.standard_normal(C).astype(np.float32)
    out, mean, rstd = kernels._C.layernorm_forward(x, w, b, 1e-5)
    rout, rmean, rrstd = ref.layernorm_forward(x, w, b, 1e-5)
    # float32 with different summation orders: ~1e-6 relative per element
    np.testing.assert_allclose(out, rout, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(rstd, rrstd, rtol=1e-5)
    dout = rng.standard_normal(shape).astype(np.float32)
    got = kernels._C.layernorm_backward(dout, x, w, mean, rstd)
    want = ref.layernorm_backward(dout, x, w, rmean, rrstd)
    for g, e in zip(got, want):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4 * max(1.0, np.abs(e).max()))
