"""Build script for tinyroots' native extensions.

Everything declarative (name, version, dependencies) lives in pyproject.toml; this file only
knows how to compile:

* ``tinyroots._C``: the C++17 kernels in ``csrc/`` bound with pybind11 (OpenMP when the
  compiler has it). SIMD code paths (AVX2, AVX-512) are compiled with per-function target
  attributes and chosen at run time from what the CPU reports, so one wheel runs on any x86-64.
* every ``tinyroots/**/*.pyx``: small Cython helpers for loops over Python strings
  (BPE merges, shingling for deduplication), each beside the pure-Python module it speeds up.

Every extension is optional. When a compiler is missing or a build fails, the install still
succeeds with a warning and tinyroots runs on its NumPy / pure-Python reference code.
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def _warn(msg):
    bar = "!" * 78
    print(f"\n{bar}\nWARNING (tinyroots): {msg}\n{bar}\n", file=sys.stderr, flush=True)


def _compiler_accepts(compiler_cmd, flags, source="int main(void){return 0;}\n", suffix=".cpp"):
    """Return True if `compiler_cmd flags` compiles and links a tiny test program."""
    tmp = tempfile.mkdtemp(prefix="tinyroots_probe_")
    try:
        src = os.path.join(tmp, "probe" + suffix)
        with open(src, "w") as f:
            f.write(source)
        cmd = list(compiler_cmd) + [src, "-o", os.path.join(tmp, "probe.out")] + list(flags)
        res = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        return res.returncode == 0
    except OSError:
        return False
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


OPENMP_PROBE = """
#include <omp.h>
int main(void) { int n = 0;
#pragma omp parallel reduction(+:n)
  n += 1;
  return n > 0 ? 0 : 1; }
"""


class OptionalBuildExt(build_ext):
    """build_ext that adds OpenMP when available and never fails the install."""

    def finalize_options(self):
        super().finalize_options()
        if not self.parallel:
            self.parallel = os.cpu_count() or 1  # compile the C++ files side by side

    def build_extensions(self):
        compiler_so = getattr(self.compiler, "compiler_so", None)
        compiler_cmd = compiler_so[:1] if compiler_so else None
        is_msvc = self.compiler.compiler_type == "msvc"
        openmp = []
        if is_msvc:
            openmp = ["/openmp"]
        elif compiler_cmd and _compiler_accepts(compiler_cmd, ["-fopenmp"], OPENMP_PROBE):
            openmp = ["-fopenmp"]
        else:
            _warn("the C++ compiler has no OpenMP; kernels will run on one thread.")
        for ext in self.extensions:
            if getattr(ext, "tinyroots_openmp", False) and openmp:
                ext.extra_compile_args = list(ext.extra_compile_args) + openmp
                ext.extra_link_args = list(ext.extra_link_args) + openmp
            if is_msvc:
                ext.extra_compile_args = [a for a in ext.extra_compile_args
                                          if not a.startswith("-")] + ["/O2", "/std:c++17"]
        super().build_extensions()

    def run(self):
        super().run()
        if not self.inplace:
            # Also place the compiled modules next to their sources. pip builds a local
            # directory in place, so after `pip install .` a `python -m tinyroots.train` run
            # from the repository root -- which imports the source tree, not site-packages --
            # still finds the fast kernels instead of silently falling back to NumPy.
            try:
                self.copy_extensions_to_source()
            except Exception as exc:  # noqa: BLE001 -- a read-only checkout is fine
                _warn(f"could not copy the built extensions into the source tree ({exc}); "
                      "run tinyroots from outside the repository directory.")

    def build_extension(self, ext):
        try:
            super().build_extension(ext)
        except Exception as exc:  # noqa: BLE001 -- any compiler failure must not fail the install
            _warn(f"could not build the extension {ext.name} ({type(exc).__name__}: {exc}).\n"
                  "tinyroots will run on its pure NumPy / Python reference code, which is "
                  "correct but slower.\nInstall a C++17 compiler (e.g. g++) and reinstall to "
                  "get the fast kernels.")


def native_extension():
    try:
        import pybind11
    except ImportError:
        _warn("pybind11 is not available at build time; skipping tinyroots._C.")
        return []
    sources = sorted(glob.glob(os.path.join("csrc", "*.cpp")))
    ext = Extension(
        "tinyroots._C",
        sources=sources,
        include_dirs=[pybind11.get_include(), "csrc"],
        language="c++",
        extra_compile_args=["-std=c++17", "-O3", "-fvisibility=hidden", "-fno-math-errno",
                            "-fno-trapping-math", "-fopenmp-simd", "-Wall", "-Wno-unused-function"],
        depends=sorted(glob.glob(os.path.join("csrc", "*.h"))),
        optional=True,
    )
    ext.tinyroots_openmp = True
    sanitize = os.environ.get("TINYROOTS_SANITIZE", "").strip()
    if sanitize:
        # a checking build for CI (.ci/sanitize): e.g. TINYROOTS_SANITIZE=address,undefined.
        # -O1 keeps the stack traces readable; the flags come after -O3 and so win
        flags = [f"-fsanitize={sanitize}", "-fno-omit-frame-pointer", "-fno-sanitize-recover=all",
                 "-O1", "-g"]
        ext.extra_compile_args += flags
        ext.extra_link_args = list(ext.extra_link_args) + [f"-fsanitize={sanitize}"]
    return [ext]


def cython_extensions():
    pyx = sorted(glob.glob(os.path.join("tinyroots", "**", "*.pyx"), recursive=True))
    if not pyx:
        return []
    try:
        from Cython.Build import cythonize
    except ImportError:
        _warn("Cython is not available at build time; the pure-Python helpers will be used.")
        return []
    exts = []
    for path in pyx:
        name = os.path.splitext(path)[0].replace(os.sep, ".")
        ext = Extension(name, [path], language="c++", optional=True,
                        extra_compile_args=["-std=c++17", "-O3", "-fno-math-errno"])
        try:  # one at a time: a broken .pyx must not disable the others
            (built,) = cythonize([ext], compiler_directives={
                "language_level": "3", "boundscheck": False, "wraparound": False,
                "cdivision": True}, quiet=True)
        except Exception as exc:  # noqa: BLE001
            _warn(f"cythonize failed for {path} ({exc}); its pure-Python twin will be used.")
            continue
        built.tinyroots_openmp = False
        built.optional = True
        exts.append(built)
    return exts


setup(
    ext_modules=native_extension() + cython_extensions(),
    cmdclass={"build_ext": OptionalBuildExt},
)
