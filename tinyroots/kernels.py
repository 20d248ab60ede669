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

# Rows up to which the extension's matrix products take their few-rows paths (csrc/gemm.h,
# GEMM_FEW_ROWS_MAX): model.py keeps batched decoding exact with it. None with NumPy.
FEW_ROWS_MAX = getattr(_C, "FEW_ROWS_MAX", None) if _C is not None else None

# which implementation each kernel got: {"layernorm_forward": "cpu", "gelu_forward": "numpy", ...}
IMPLEMENTATION = {}


def _first_array(args, kwargs):
    for a in args:
        if isinstance(a, np.ndarray):
            return a
    for a in kwargs.values():
        if isinstance(a, np.ndarray):
            return a
    return None


def _bind(slow, dtypes=(np.float32,)):
    """The kernel named like ``slow`` (a ref function): ``_C``'s twin when the first array is
    of one of ``dtypes`` (float32; the bf16 kernels also take uint16 bf16 bit patterns), the
    reference for anything else (float64 gradient checks) and when the extension lacks it."""
    name = slow.__name__
    fast = getattr(_C, name, None) if _C is not None else None
    IMPLEMENTATION[name] = "numpy" if fast is None else "cpu"
    if fast is None:
        return slow

    def kernel(*args, **kwargs):
        first = _first_array(args, kwargs)
        if first is not None and first.dtype in dtypes:
            return fast(*args, **kwargs)
        return slow(*args, **kwargs)

    kernel.__name__ = kernel.__qualname__ = name
    kernel.__doc__ = slow.__doc__
    return kernel


# ---------------------------------------------------------------------------------------------
# the kernels, one line each (same names and arguments in ref.py, csrc/ and bindings.cpp)

linear_forward = _bind(ref.linear_forward)
linear_backward = _bind(ref.linear_backward)
linear_gelu_forward = _bind(ref.linear_gelu_forward)
linear_residual_forward = _bind(ref.linear_residual_forward)

matmul_forward = _bind(ref.matmul_forward)
matmul_backward = _bind(ref.matmul_backward)
matmul_nt = _bind(ref.matmul_nt)
matmul_tn = _bind(ref.matmul_tn)

layernorm_forward = _bind(ref.layernorm_forward)
layernorm_backward = _bind(ref.layernorm_backward)

gelu_forward = _bind(ref.gelu_forward)
gelu_backward = _bind(ref.gelu_backward)

softmax_forward = _bind(ref.softmax_forward)
softmax_backward = _bind(ref.softmax_backward)
log_softmax_forward = _bind(ref.log_softmax_forward)
log_softmax_backward = _bind(ref.log_softmax_backward)

cross_entropy_forward = _bind(ref.cross_entropy_forward)
cross_entropy_backward = _bind(ref.cross_entropy_backward)
cross_entropy_forward_backward = _bind(ref.cross_entropy_forward_backward)

embedding_forward = _bind(ref.embedding_forward)
embedding_backward = _bind(ref.embedding_backward)

attention_forward = _bind(ref.attention_forward)
attention_backward = _bind(ref.attention_backward)
attention_forward_dropout = _bind(ref.attention_forward_dropout)
attention_backward_dropout = _bind(ref.attention_backward_dropout)
attention_forward_bf16 = _bind(ref.attention_forward_bf16)
attention_backward_bf16 = _bind(ref.attention_backward_bf16)
attention_decode = _bind(ref.attention_decode)
attention_decode_rows = _bind(ref.attention_decode_rows)

adamw_update = _bind(ref.adamw_update)
sgd_update = _bind(ref.sgd_update)

# bf16 mixed precision (csrc/gemm_bf16.h): operands float32 or bf16 bit patterns (uint16)
_BF16_IN = (np.float32, np.uint16)
to_bf16 = _bind(ref.to_bf16)
from_bf16 = _bind(ref.from_bf16, dtypes=(np.uint16,))
linear_forward_bf16 = _bind(ref.linear_forward_bf16, _BF16_IN)
linear_backward_bf16 = _bind(ref.linear_backward_bf16, _BF16_IN)
linear_gelu_forward_bf16 = _bind(ref.linear_gelu_forward_bf16, _BF16_IN)
linear_residual_forward_bf16 = _bind(ref.linear_residual_forward_bf16, _BF16_IN)
matmul_nt_bf16 = _bind(ref.matmul_nt_bf16, _BF16_IN)
matmul_tn_bf16 = _bind(ref.matmul_tn_bf16, _BF16_IN)
matmul_forward_bf16 = _bind(ref.matmul_forward_bf16)
matmul_backward_bf16 = _bind(ref.matmul_backward_bf16)

# every kernel above, in order (tests check each one against ref on every SIMD path)
KERNEL_NAMES = tuple(IMPLEMENTATION)


# ---------------------------------------------------------------------------------------------
# threads and runtime information


# More threads than this is a mistake, whatever the machine: 100000 overflows the stack inside
# libgomp (a segfault) and 20000 really starts 20000 threads. A fixed cap, not one derived from
# this machine's cores, so a config that works here works on every machine.
MAX_THREADS = 256


def check_num_threads(n, name="num_threads"):
    """n as an int if it is a whole number of threads in 1 .. MAX_THREADS, else a ValueError
    naming ``name``, the value and what was expected. The commands' --num-threads use it too.

        check_num_threads(4) -> 4;  check_num_threads(2.7) -> ValueError
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)):
        raise ValueError(f"{name} must be a whole number of threads from 1 to {MAX_THREADS}, "
                         f"got {n!r}")
    if not 1 <= n <= MAX_THREADS:
        raise ValueError(f"{name} must be from 1 to {MAX_THREADS} threads, got {n}")
    return int(n)


def set_num_threads(n):
    """Use n OpenMP threads in the C++ kernels (the default follows OMP_NUM_THREADS)."""
    n = check_num_threads(n, "set_num_threads(n)")
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
        "bf16_isa": _C.bf16_isa() if _C is not None else "numpy",
        "openmp": bool(getattr(_C, "openmp", False)),
        "malloc_tuned": bool(getattr(_C, "malloc_tuned", False)),
        "num_threads": get_num_threads(),
        "kernels": dict(IMPLEMENTATION),
    }
