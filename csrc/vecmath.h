// vecmath.h -- the SIMD toolkit of the non-GEMM kernels: run a plain loop with the widest
// instruction set the CPU has, and an exp() that the compiler can vectorize.
//
// How the SIMD works here, without intrinsics:
//   A kernel's inner loop is written once, as ordinary C++ inside a lambda, and handed to
//   with_isa(...). with_isa calls it through one of three copies of a tiny wrapper: one compiled
//   for AVX-512, one for AVX2+FMA, one for the baseline. Each wrapper is `flatten`, so the lambda
//   (and everything it calls) is inlined into it and auto-vectorized for *that* wrapper's
//   instruction set. Which copy runs is decided by tinyroots::simd_isa(), read once, so
//   TINYROOTS_ISA=avx2|portable in the environment forces a narrower path (tests run every path).
//   So the SIMD loop and its plain twin are one and the same source: read it as scalar code.
//   The baseline copy (SSE2 on x86-64, NEON on ARM) is the portable fallback.
//   The attention tiles add explicit vectors (Vec<L>, below) where the compiler alone would not
//   keep their accumulators in registers.
//
// subtle: call with_isa *inside* an OpenMP parallel region, never around one. GCC outlines the
// body of `#pragma omp parallel` into a separate function before inlining happens, and that
// function would be compiled for the baseline instruction set.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "common.h"

#if defined(__x86_64__) && defined(__GNUC__)
// Target attributes must be spelled as attributes; there is no function that can do this.
#define TR_TARGET_AVX512                                                                    \
    __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma,bmi2,"             \
                          "prefer-vector-width=512")))
#define TR_TARGET_AVX2 __attribute__((target("avx2,fma,bmi2")))
#else
#define TR_TARGET_AVX512
#define TR_TARGET_AVX2
#endif
#if defined(__GNUC__)
#define TR_FLATTEN __attribute__((flatten))
#else
#define TR_FLATTEN
#endif

namespace tinyroots {

enum class Isa { portable, avx2, avx512 };

// simd_isa() as an enum, computed once.
inline Isa isa() {
    static const Isa level = [] {
        const char* s = simd_isa();
        if (std::strcmp(s, "avx512") == 0) return Isa::avx512;
        if (std::strcmp(s, "avx2") == 0) return Isa::avx2;
        return Isa::portable;
    }();
    return level;
}

template <class F>
TR_TARGET_AVX512 TR_FLATTEN void run_avx512(F&& f) {
    f();
}

template <class F>
TR_TARGET_AVX2 TR_FLATTEN void run_avx2(F&& f) {
    f();
}

template <class F>
TR_FLATTEN void run_portable(F&& f) {
    f();
}

// Runs f() compiled for the instruction set simd_isa() chose (see the top of this file).
template <class F>
void with_isa(F&& f) {
    switch (isa()) {
        case Isa::avx512: run_avx512(f); break;
        case Isa::avx2: run_avx2(f); break;
        default: run_portable(f); break;
    }
}

// Below this much work (in elements touched) a kernel runs on the calling thread alone: waking
// the OpenMP team costs a few microseconds, more than it saves on a small array.
constexpr int64_t kMinParallelWork = 32 * 1024;

// Splits [0, n) into one contiguous block per thread and runs body(begin, end) on each block,
// compiled for the chosen instruction set. work_per_item (e.g. a row's length) only decides
// whether threads are worth starting. The blocks depend on the thread count, so a body must
// not accumulate across items in an order-dependent way (none here does).
template <class F>
void parallel_blocks(int64_t n, int64_t work_per_item, F&& body) {
    if (n <= 0) return;
    if (n == 1 || n * work_per_item < kMinParallelWork || max_threads() == 1) {
        with_isa([&] { body(int64_t(0), n); });
        return;
    }
#pragma omp parallel
    {
#ifdef _OPENMP
        const int64_t nt = omp_get_num_threads();
#else
        const int64_t nt = 1;
#endif
        const int64_t t = thread_id();
        const int64_t begin = n * t / nt, end = n * (t + 1) / nt;
        if (begin < end) with_isa([&] { body(begin, end); });
    }
}

// ---------------------------------------------------------------------------------------------
// exp_approx: e^x in float32, max relative error 8.6e-8 (1.5 ulp) on [-87.33, 88.37].
//
// Written with only +, *, compares and integer bit moves, so a `#pragma omp simd` loop that
// calls it vectorizes (std::exp would be a scalar libm call per element). The method is the
// classic one (Cephes expf):
//     x = n ln2 + r with n = round(x / ln2), |r| <= ln2 / 2
//     e^x = 2^n e^r, e^r by a degree-7 polynomial, 2^n built directly in the exponent bits.
// Edges: x < -87.33 gives 0 (so exp(-inf) = 0, which masked softmax relies on; results below
// 2^-126 are flushed to 0); x > 88.37 saturates at 2.4e38 (true overflow starts at 88.72);
// NaN stays NaN. Tested against float64 exp in tests/test_kernels.py.
inline float exp_approx(float x) {
    const float lo = -87.33654f, hi = 88.37626f;
    // subtle: clamp with compares, not std::fmin/fmax: those would turn a NaN into the bound.
    float xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    // round-to-nearest without a rounding instruction: adding 1.5 * 2^23 pushes the fraction
    // bits out of the mantissa, and the low mantissa bits of t then hold n as an integer.
    const float magic = 12582912.0f;
    const float t = xc * 1.44269504088896341f + magic;
    const float n = t - magic;
    // r = x - n ln2, with ln2 split in two parts (Cody-Waite) so n * ln2_hi is exact.
    float r = xc - n * 0.693359375f;
    r = r - n * -2.12194440e-4f;
    float p = 1.9875691500e-4f;
    p = p * r + 1.3981999507e-3f;
    p = p * r + 8.3334519073e-3f;
    p = p * r + 4.1665795894e-2f;
    p = p * r + 1.6666665459e-1f;
    p = p * r + 5.0000001201e-1f;
    p = p * r * r + r + 1.0f;
    int32_t tbits;
    std::memcpy(&tbits, &t, sizeof tbits);
    const int32_t pow2_bits = (tbits - 0x4B400000 + 127) << 23;  // 2^n: n + bias in the exponent
    float pow2;
    std::memcpy(&pow2, &pow2_bits, sizeof pow2);
    return x < lo ? 0.0f : p * pow2;
}

// 1 / (1 + e^-z), vectorizable. Error: about 2 ulp from exp_approx and the division.
inline float sigmoid_approx(float z) { return 1.0f / (1.0f + exp_approx(-z)); }

// ---------------------------------------------------------------------------------------------
// Row helpers for the softmax-like kernels. Inline, so each is compiled for the instruction set
// of the with_isa body that calls it.
//
// subtle: a float32 sum of 50257 terms accumulated in 4 SIMD lanes is 12500 additions per lane,
// each rounding against a growing total (2e-5 relative error on SSE). Every sum here is done in
// two levels instead: lanes within a chunk of kChunk floats, then the chunk totals.
namespace rowops {

constexpr int64_t kChunk = 512;  // 2 KB: a chunk stays in L1 between two sweeps over it

inline int64_t n_chunks(int64_t C) { return (C + kChunk - 1) / kChunk; }

// body(c0, n) over the chunks [c0, c0 + n) of [0, C); returns the sum of what it returns.
template <class F>
inline float sum_chunks(int64_t C, F&& body) {
    float s = 0.0f;
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) s += body(c0, C - c0 < kChunk ? C - c0 : kChunk);
    return s;
}

// max of x[0:C] (C >= 1)
inline float max(const float* __restrict__ x, int64_t C) {
    float m = x[0];
#pragma omp simd reduction(max : m)
    for (int64_t i = 0; i < C; i++) m = x[i] > m ? x[i] : m;
    return m;
}

// sum of x[0:C]
inline float sum(const float* __restrict__ x, int64_t C) {
    return sum_chunks(C, [&](int64_t c0, int64_t n) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = c0; i < c0 + n; i++) s += x[i];
        return s;
    });
}

// sum of x[0:C] * y[0:C]
inline float dot(const float* __restrict__ x, const float* __restrict__ y, int64_t C) {
    return sum_chunks(C, [&](int64_t c0, int64_t n) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = c0; i < c0 + n; i++) s += x[i] * y[i];
        return s;
    });
}

// sum of exp(x - m), nothing stored
inline float sum_exp(const float* __restrict__ x, int64_t C, float m) {
    return sum_chunks(C, [&](int64_t c0, int64_t n) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = c0; i < c0 + n; i++) s += exp_approx(x[i] - m);
        return s;
    });
}

// e = exp(x - m); returns sum(e). e may be x itself (in place): element i reads x[i] before it
// writes e[i], so the omp simd promise (no dependence between iterations) still holds.
inline float exp_store(float* e, const float* x, int64_t C, float m) {
    return sum_chunks(C, [&](int64_t c0, int64_t n) {
        float s = 0.0f;
#pragma omp simd reduction(+ : s)
        for (int64_t i = c0; i < c0 + n; i++) {
            const float ei = exp_approx(x[i] - m);
            e[i] = ei;
            s += ei;
        }
        return s;
    });
}

// --- one-sweep versions for long rows (a 50257-word vocabulary) ------------------------------
// Each chunk's max is taken first (from L1, cheap), then its exps are computed against the
// running max; when a chunk raises the max, what was summed so far is rescaled once. So the row
// is read from memory once, with one exp per element, instead of a max sweep from memory
// followed by an exp sweep.

// log(sum(exp(x[0:C]))) in one sweep.
inline float logsumexp(const float* __restrict__ x, int64_t C) {
    float m = -INFINITY, s = 0.0f;
    for (int64_t c0 = 0; c0 < C; c0 += kChunk) {
        const int64_t n = C - c0 < kChunk ? C - c0 : kChunk;
        const float cm = max(x + c0, n);
        if (cm > m) {
            s *= exp_approx(m - cm);  // exp(-inf) = 0 on the first chunk
            m = cm;
        }
        s += sum_exp(x + c0, n, m);
    }
    return m + std::log(s);
}

// Sweep 1 of a one-sweep softmax: e = exp(x - m_k) on each chunk k, m_k the running max after
// chunk k (saved in chunk_max[k], n_chunks(C) floats). Returns the row max m; *sum gets
// sum(exp(x - m)). e may be x itself.
inline float exp_store_chunked(float* e, const float* x, int64_t C, float* __restrict__ chunk_max,
                               float* sum) {
    float m = -INFINITY, s = 0.0f;
    for (int64_t k = 0, c0 = 0; c0 < C; k++, c0 += kChunk) {
        const int64_t n = C - c0 < kChunk ? C - c0 : kChunk;
        const float cm = max(x + c0, n);
        if (cm > m) {
            s *= exp_approx(m - cm);
            m = cm;
        }
        s += exp_store(e + c0, x + c0, n, m);
        chunk_max[k] = m;
    }
    *sum = s;
    return m;
}

// Sweep 2: e *= exp(m_k - m) * scale on each chunk k, so that e = scale * exp(x - m) everywhere.
inline void rescale_chunks(float* __restrict__ e, int64_t C, const float* __restrict__ chunk_max,
                           float m, float scale) {
    for (int64_t k = 0, c0 = 0; c0 < C; k++, c0 += kChunk) {
        const int64_t n = C - c0 < kChunk ? C - c0 : kChunk;
        const float f = exp_approx(chunk_max[k] - m) * scale;
#pragma omp simd
        for (int64_t i = 0; i < n; i++) e[c0 + i] *= f;
    }
}

}  // namespace rowops

// ---------------------------------------------------------------------------------------------
// Explicit vectors for register-blocked inner loops (the attention tiles), where the
// auto-vectorizer, inside a large flattened function, would keep accumulators in memory.
//
// Vec<L>::type is L floats handled as one value (the GCC/Clang vector extension): `a += x * v`
// on it is one FMA instruction. L is the native width of the instruction set the code is compiled
// for -- 16 (one zmm register) with AVX-512, 8 (ymm) with AVX2, 4 (xmm / NEON) otherwise -- and
// with_isa_lanes passes it to the body as a compile-time constant.
#if defined(__GNUC__) && !defined(__clang__)
// subtle: passing a 32- or 64-byte vector to a function compiled without AVX "changes the ABI";
// these helpers are always inlined into their caller, so no such call ever happens.
#pragma GCC diagnostic ignored "-Wpsabi"
#endif

template <int L>
struct Vec;
template <>
struct Vec<16> {
    typedef float type __attribute__((vector_size(64)));
};
template <>
struct Vec<8> {
    typedef float type __attribute__((vector_size(32)));
};
template <>
struct Vec<4> {
    typedef float type __attribute__((vector_size(16)));
};

template <int L>
inline typename Vec<L>::type loadv(const float* p) {
    typename Vec<L>::type v;
    std::memcpy(&v, p, sizeof v);  // an unaligned vector load
    return v;
}

// loadv into a register that the next several FMAs share. GCC would otherwise fold the load into
// each FMA that uses the vector (an FMA can take one operand from memory), so two FMAs on the
// same vector would load it twice: Zen 4 loads one 512-bit vector a cycle, and the FMAs of the
// attention tiles then ran at half their rate, waiting on loads. The empty asm tells the
// compiler the value must exist in a vector register, which ends the folding; it emits nothing.
template <int L>
inline typename Vec<L>::type loadv_shared(const float* p) {
    typename Vec<L>::type v = loadv<L>(p);
#if defined(__GNUC__) && defined(__x86_64__)
    asm("" : "+v"(v));
#endif
    return v;
}

template <int L>
inline void storev(float* p, const typename Vec<L>::type& v) {
    std::memcpy(p, &v, sizeof v);
}

// The sum of the L lanes of a: halves added until four lanes are left (the memcpy of a half is
// one register extract).
template <int L>
inline float hsum(const typename Vec<L>::type& a) {
    if constexpr (L == 4) {
        return (a[0] + a[1]) + (a[2] + a[3]);
    } else {
        typename Vec<L / 2>::type lo, hi;
        std::memcpy(&lo, &a, sizeof lo);
        std::memcpy(&hi, reinterpret_cast<const char*>(&a) + sizeof lo, sizeof hi);
        return hsum<L / 2>(lo + hi);
    }
}

template <int L>
using Lanes = std::integral_constant<int, L>;

// Like with_isa, but calls f(Lanes<L>{}) with L the vector width (in floats) of the chosen
// instruction set, for code written with Vec<L>.
template <class F>
void with_isa_lanes(F&& f) {
    switch (isa()) {
        case Isa::avx512: run_avx512([&] { f(Lanes<16>{}); }); break;
        case Isa::avx2: run_avx2([&] { f(Lanes<8>{}); }); break;
        default: run_portable([&] { f(Lanes<4>{}); }); break;
    }
}

// A cache line holds 16 floats; per-thread column slices start on one so threads never share a
// line (no false sharing).
constexpr int64_t kFloatsPerLine = 16;

}  // namespace tinyroots
