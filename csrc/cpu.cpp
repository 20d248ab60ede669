// cpu.cpp -- which SIMD instruction set the hand-written kernels use, decided once.
#include <cstdlib>
#include <cstring>

#if defined(__GLIBC__)
#include <malloc.h>
#endif

#include "common.h"

namespace tinyroots {

const char* simd_isa() {
    static const char* isa = [] {
        const CpuFeatures f = cpu_features();
        const char* cap = std::getenv("TINYROOTS_ISA");  // lets tests force a narrower path
        // amx and avx512bf16 name a bf16 path (gemm_bf16.h); the float32 kernels keep AVX-512
        const bool allow512 = !cap || std::strcmp(cap, "avx512") == 0 ||
                              std::strcmp(cap, "avx512bf16") == 0 || std::strcmp(cap, "amx") == 0;
        const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
        if (f.avx512f && allow512) return "avx512";
        if (f.avx2_fma && allow2) return "avx2";
        return "portable";
    }();
    return isa;
}

// Keep freed activation buffers for reuse instead of giving them back to the OS.
//
// A training step allocates and frees the same large arrays (activations, gradients, tens of
// MB each) every step. glibc serves big requests with a fresh mmap and unmaps them on free, so
// every step page-faults all of that memory back in and the kernel zero-fills it: a 6-layer,
// 384-wide model at 4096 tokens per step spent ~15% of its time there. Raising the mmap
// threshold to its maximum (32 MB on 64-bit glibc) and not trimming the heap lets malloc reuse
// the pages. Peak memory is unchanged; memory is just not returned to the OS between steps.
// TINYROOTS_MALLOC_TUNE=0 leaves the allocator alone.
bool tune_allocator() {
#if defined(__GLIBC__)
    const char* env = std::getenv("TINYROOTS_MALLOC_TUNE");
    if (env && std::strcmp(env, "0") == 0) return false;
    const bool ok = mallopt(M_MMAP_THRESHOLD, (int)MALLOC_MMAP_THRESHOLD) == 1;
    return mallopt(M_TRIM_THRESHOLD, 1 << 30) == 1 && ok;
#else
    return false;
#endif
}

}  // namespace tinyroots
