"""Kernel dispatch: each kernel name is bound to the C++ extension or to the NumPy reference.

The choice is made once, at import, from ``TINYROOTS_BACKEND``:

* ``auto`` (default): the C++ kernels when ``tinyroots._C`` was built and imports, else NumPy;
* ``numpy``: the pure-NumPy reference (ref.py) for everything -- slow, but the specification;
* ``cpu``: the C++ kernels, and an error if the extension is missing.

A C++ kernel only takes float32; given anything else (the float64 gradient checks) the call goes
to the reference, so the rest of the code never has to care which backend it runs on.
This module does nothing but dispatch.
"""

import os

import numpy as np

from . import ref

BACKEND_ENV = "TINYROOTS_BACKEND"
_requested = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
if _requested not in ("auto", "numpy", "cpu", "cuda"):
    raise ValueError(f"{BACKEND_ENV}={_requested!r} is not a backend; expected one of "
                     "'auto', 'numpy', 'cpu' (or 'cuda' when built with CUDA)")

_C = None
_import_error = None
if _requested != "numpy":
    try:
        from . import _C  # noqa: F811  (the compiled extension)
    except ImportError as exc:  # not built: no compiler at install time, or a source checkout
        _import_error = exc

if _requested in ("cpu", "cuda") and _C is None:
    raise ImportError(f"{BACKEND_ENV}={_requested} needs the compiled extension tinyroots._C, "
                      f"which did not import ({_import_error}). Reinstall with a C++17 compiler "
                      "(pip install .), or use TINYROOTS_BACKEND=numpy.")
if _requested == "cuda":
    raise NotImplementedError(f"{BACKEND_ENV}=cuda: this build has no CUDA kernels; "
                              "use 'cpu' or 'numpy'")

BACKEND = "cpu" if _C is not None else "numpy"

# Every kernel that ref.py defines; a name the extension lacks falls back to ref.
KERNEL_NAMES = (
    "linear_forward", "linear_backward", "linear_gelu_forward", "linear_residual_forward",
    "matmul_forward", "matmul_backward", "matmul_nt", "matmul_tn",
    "layernorm_forward", "layernorm_backward",
    "gelu_forward", "gelu_backward",
    "softmax_forward", "softmax_backward", "log_softmax_forward", "log_softmax_backward",
    "cross_entropy_forward", "cross_entropy_backward", "cross_entropy_forward_backward",
    "embedding_forward", "embedding_backward",
    "attention_forward", "attention_backward", "attention_decode",
    "adamw_update", "sgd_update",
)


def _first_array(args, kwargs):
    for a in args:
        if isinstance(a, np.ndarray):
            return a
    for a in kwargs.values():
        if isinstance(a, np.ndarray):
            return a
    return None


def _bind(name):
    slow = getattr(ref, name)
    fast = getattr(_C, name, None) if _C is not None else None
    if fast is None:
        return slow, "numpy"

    def kernel(*args, **kwargs):
        first = _first_array(args, kwargs)
        if first is not None and first.dtype == np.float32:
            return fast(*args, **kwargs)
        return slow(*args, **kwargs)

    kernel.__name__ = name
    kernel.__qualname__ = name
    kernel.__doc__ = slow.__doc__
    return kernel, "cpu"


# which implementation each name got: {"layernorm_forward": "cpu", "gelu_forward": "numpy", ...}
IMPLEMENTATION = {}
for _name in KERNEL_NAMES:
    globals()[_name], IMPLEMENTATION[_name] = _bind(_name)
del _name


# ---------------------------------------------------------------------------------------------
# threads and runtime information


def set_num_threads(n):
    """Use n OpenMP threads in the C++ kernels (the default follows OMP_NUM_THREADS)."""
    n = int(n)
    if n < 1:
        raise ValueError(f"set_num_threads: n must be a positive integer, got {n}")
    if _C is not None:
        _C.set_num_threads(n)


def get_num_threads():
    """Number of threads the C++ kernels use (1 on the NumPy backend)."""
    return _C.get_num_threads() if _C is not None else 1


def info():
    """A dict describing the backend, instruction set and threads in use."""
    return {
        "backend": BACKEND,
        "requested": _requested,
        "extension": None if _C is None else getattr(_C, "__file__", "built-in"),
        "extension_error": None if _import_error is None else str(_import_error),
        "simd_isa": _C.simd_isa() if _C is not None else "none",
        "openmp": bool(getattr(_C, "openmp", False)),
        "malloc_tuned": bool(getattr(_C, "malloc_tuned", False)),
        "num_threads": get_num_threads(),
        "kernels": dict(IMPLEMENTATION),
    }
