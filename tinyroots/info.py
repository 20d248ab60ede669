"""`python -m tinyroots.info`: which backend, instruction set and thread count are in use."""

import platform
import sys

import numpy as np

from . import __version__, distributed, kernels
from .config import CommandParser


def describe():
    info = kernels.info()
    lines = [
        f"tinyroots {__version__} (Python {platform.python_version()}, NumPy {np.__version__}, "
        f"{platform.machine()})",
        f"backend:     {info['backend']} (TINYROOTS_BACKEND={info['requested']})",
        f"extension:   {_extension(info)}",
        f"instruction set: {info['simd_isa']}",
        f"bf16 products: {info['bf16_isa']} (GEMM and attention; TINYROOTS_ISA=avx512bf16 or "
        "portable caps it)",
        f"OpenMP:      {'yes' if info['openmp'] else 'no'}",
        f"malloc:      {'large buffers reused' if info['malloc_tuned'] else 'default'} "
        "(TINYROOTS_MALLOC_TUNE=0 turns the tuning off)",
        f"threads:     {info['num_threads']} (set with OMP_NUM_THREADS or "
        "tinyroots.set_num_threads)",
    ]
    lines += _processes()
    fast = sorted(k for k, v in info["kernels"].items() if v == "cpu")
    slow = sorted(k for k, v in info["kernels"].items() if v != "cpu")
    lines.append(f"C++ kernels: {', '.join(fast) if fast else 'none'}")
    if slow:
        lines.append(f"NumPy kernels: {', '.join(slow)}")
    return "\n".join(lines)


def _extension(info):
    if info["extension"]:
        return info["extension"]
    if info["requested"] == "numpy":
        return "not loaded (TINYROOTS_BACKEND=numpy asks for the NumPy reference)"
    return f"not built ({info['extension_error']})"


def _processes():
    """Rank, world size and MPI library (mpiexec -n N python -m tinyroots.info shows each)."""
    try:
        world = distributed.init()
        where = f"rank {world.rank} of {world.size}"
    except distributed.DistributedError as exc:
        where = f"unavailable ({exc})"
    launched = "" if distributed.launched_by_mpi() else " (not started by an MPI launcher)"
    return [f"processes:   {where}{launched}",
            f"MPI:         {distributed.library_version()}"]


def main(argv=None):
    CommandParser(prog="python -m tinyroots.info", description=__doc__).parse_args(argv)
    print(describe())
    return 0


if __name__ == "__main__":
    sys.exit(main())
