// cpu.cpp -- which SIMD instruction set the hand-written kernels use, decided once.
#include <cstdlib>
#include <cstring>

#include "common.h"

namespace tinyroots {

const char* simd_isa() {
    static const char* isa = [] {
        const CpuFeatures f = cpu_features();
        const char* cap = std::getenv("TINYROOTS_ISA");  // lets tests force a narrower path
        const bool allow512 = !cap || std::strcmp(cap, "avx512") == 0;
        const bool allow2 = allow512 || std::strcmp(cap, "avx2") == 0;
        if (f.avx512f && allow512) return "avx512";
        if (f.avx2_fma && allow2) return "avx2";
        return "portable";
    }();
    return isa;
}

}  // namespace tinyroots
