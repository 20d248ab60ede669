// common.h -- small helpers shared by every tinyroots kernel.
//
// Nothing in csrc/ knows about Python: kernels take raw pointers and sizes, and the one
// binding file (bindings.cpp) checks dtypes, shapes and contiguity before calling them.
//
// Size letters mean the same thing everywhere (Python and C++):
//   B batch, T time (sequence), C channels, NH heads, HS head size (C / NH), V vocabulary,
//   N rows of a flattened (B*T, C) matrix.
#pragma once

#include <cstddef>
#include <cstdint>

#ifdef _OPENMP
#include <omp.h>
#endif

// Multiversioned functions: the compiler emits an AVX-512, an AVX2+FMA and a baseline copy,
// and the loader picks the best one for the CPU it finds (GCC/Clang "ifunc" dispatch). This lets
// a plain, readable loop run with wide SIMD without -march=native, so one build is safe on any
// x86-64 CPU. Elsewhere (ARM, MSVC) it is a plain function.
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__) && !defined(TINYROOTS_NO_CLONES)
#define TR_MULTIVERSION __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#else
#define TR_MULTIVERSION
#endif

namespace tinyroots {

inline int max_threads() {
#ifdef _OPENMP
    return omp_get_max_threads();
#else
    return 1;
#endif
}

inline int thread_id() {
#ifdef _OPENMP
    return omp_get_thread_num();
#else
    return 0;
#endif
}

inline void set_num_threads(int n) {
#ifdef _OPENMP
    if (n > 0) omp_set_num_threads(n);
#else
    (void)n;
#endif
}

// Blocking arithmetic (a, b > 0): how many blocks of b cover a, and a rounded up to whole blocks.
inline int64_t ceil_div(int64_t a, int64_t b) { return (a + b - 1) / b; }
inline int64_t round_up(int64_t a, int64_t b) { return ceil_div(a, b) * b; }

// What the CPU reports, read once (cpuid through the compiler's builtins).
struct CpuFeatures {
    bool avx2_fma = false;
    bool avx512f = false;
};

inline CpuFeatures cpu_features() {
    CpuFeatures f;
#if defined(__x86_64__) && defined(__GNUC__)
    __builtin_cpu_init();
    f.avx2_fma = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    f.avx512f = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
                __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl") &&
                f.avx2_fma;
#endif
    return f;
}

// The instruction set the hand-written SIMD kernels use on this CPU: "avx512", "avx2" or
// "portable". TINYROOTS_ISA=avx2|portable in the environment caps it (for testing each path).
const char* simd_isa();

// Tunes glibc's malloc to reuse large freed buffers (see cpu.cpp); true if it was applied.
// Then blocks under MALLOC_MMAP_THRESHOLD come from (and go back to) malloc's heap.
constexpr size_t MALLOC_MMAP_THRESHOLD = 32 * 1024 * 1024;
bool tune_allocator();

}  // namespace tinyroots
