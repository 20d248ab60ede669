// gemm_kernels.h -- the contract between the GEMM driver (gemm.cpp) and its micro-kernels.
//
// Each instruction set has one KernelSet (gemm_avx512.cpp, gemm_avx2.cpp, gemm_portable.cpp).
// The driver is plain C++: it blocks, packs, threads and calls through these pointers; all the
// SIMD lives behind them, compiled with per-function target attributes so that the shipped
// build runs on any x86-64 CPU and only the set the CPU supports is ever called.
#pragma once

#include <cmath>
#include <cstdint>

namespace tinyroots {
namespace gemm_detail {

// What a micro-kernel does with its tile of C after the product over one K slice.
struct TileEpilogue {
    bool load_c = false;              // add to what C holds (a later K slice, or accumulate)
    bool last = true;                 // final K slice: apply bias / residual / gelu
    const float* bias = nullptr;      // bias of the tile's first column, or nullptr
    const float* residual = nullptr;  // residual of the tile's first element, or nullptr
    float* pre = nullptr;             // pre-activation of the tile's first element, or nullptr
    int64_t ld = 0;                   // row stride of residual and pre
};

struct KernelSet {
    const char* isa;
    int mr, nr;  // register tile of the packed micro-kernel: mr rows x nr columns of C

    // Packs a kc-long slice of `rows` (<= R) rows of a matrix whose element (r, k) sits at
    // src[r * rs + k * cs] into dst[k * R + r], zero-filling rows..R-1. R = mr for A, nr for B.
    void (*pack_a)(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc);
    void (*pack_b)(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc);
    // The same for a whole block whose element (r, k) sits at src[k * ld + r] (rows contiguous
    // along r): `rows` of any number become ceil(rows / R) slivers of kc x R, one after another.
    void (*pack_a_rows)(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc);
    void (*pack_b_rows)(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc);

    // C[0:m, 0:n] (+)= Ap @ Bp over kc, then ep. Ap: packed kc x mr, Bp: packed kc x nr and
    // 64-byte aligned (it is read with aligned vector loads; Ap only with scalar broadcasts);
    // m <= mr, n <= nr.
    void (*tile)(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc, int m,
                 int n, const TileEpilogue& ep);

    // The unpacked kernel for few rows (decode, GEMV): C[0:m, 0:n] (+)= A @ B over kc, where
    // A(i, k) = A[i * rsa + k * csa], B(k, j) = B[k * ldb + j]; m <= small_m, any n. It sweeps
    // small_nr-wide register tiles left to right, streaming kc rows of B across the width.
    int small_m, small_nr;
    void (*small_tile)(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* B,
                       int64_t ldb, float* C, int64_t ldc, int m, int64_t n,
                       const TileEpilogue& ep);

    // The unpacked kernel for few rows of C = A @ B^T (the tied LM head when decoding):
    // C[i, j] (+)= sum_k A[i * lda + k] * Bt[j * ldb + k], i < m <= dot_m, j < n <= dot_n.
    // Both operands are read along their contiguous axis; each sum is reduced across lanes.
    int dot_m, dot_n;
    void (*dot_tile)(int64_t K, const float* A, int64_t lda, const float* Bt, int64_t ldb,
                     float* C, int64_t ldc, int m, int n, const TileEpilogue& ep);
};

const KernelSet& kernels_portable();
#if defined(__x86_64__)
const KernelSet& kernels_avx2();
const KernelSet& kernels_avx512();
#endif

// GPT-2's tanh GELU, 0.5 x (1 + tanh(u)) with u = sqrt(2/pi) (x + 0.044715 x^3), written as
// x * sigmoid(2u) = x / (1 + exp(-2u)): the same function, one exp and no cancellation near 0.
constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

inline float gelu_scalar(float x) {
    const float u = kGeluScale * (x + kGeluCubic * x * x * x);
    return x / (1.0f + std::exp(-2.0f * u));
}

// The same epilogue for the tile dj columns to the right.
inline TileEpilogue shifted(TileEpilogue ep, int64_t dj) {
    if (ep.bias) ep.bias += dj;
    if (ep.residual) ep.residual += dj;
    if (ep.pre) ep.pre += dj;
    return ep;
}

// The scalar epilogue on one element (for the portable path and the reference loop).
inline void epilogue_scalar(float* c, float sum, int64_t i, int64_t j, const TileEpilogue& ep) {
    float v = ep.load_c ? *c + sum : sum;
    if (ep.last) {
        if (ep.bias) v += ep.bias[j];
        if (ep.residual) v += ep.residual[i * ep.ld + j];
        if (ep.pre) {
            ep.pre[i * ep.ld + j] = v;
            v = gelu_scalar(v);
        }
    }
    *c = v;
}

// The plain packing loop, shared by every kernel set: dst[k * R + r] = src[r * rs + k * cs].
template <int R>
inline void pack_panel(float* __restrict__ dst, const float* __restrict__ src, int64_t rs,
                       int64_t cs, int rows, int64_t kc) {
    if (rs == 1 && rows == R) {  // each k is R contiguous floats: a straight copy
        for (int64_t k = 0; k < kc; k++)
            for (int r = 0; r < R; r++) dst[k * R + r] = src[k * cs + r];
        return;
    }
    for (int64_t k = 0; k < kc; k++) {
        for (int r = 0; r < rows; r++) dst[k * R + r] = src[r * rs + k * cs];
        for (int r = rows; r < R; r++) dst[k * R + r] = 0.0f;
    }
}

// Packs a block whose element (r, k) sits at src[k * ld + r]: dst holds ceil(rows / R) slivers
// of kc x R (zero-padded), as pack_panel would write them one by one. The block is read a whole
// source row at a time, one long sequential stream per k, which the hardware prefetchers follow;
// sliver by sliver it would be kc short pieces, each ld floats (often a page or more) apart.
template <int R>
inline void pack_rows(float* __restrict__ dst, const float* __restrict__ src, int64_t ld,
                      int64_t rows, int64_t kc) {
    const int64_t full = rows / R, tail = rows % R;
    for (int64_t k = 0; k < kc; k++) {
        const float* s = src + k * ld;
        for (int64_t q = 0; q < full; q++)
            for (int r = 0; r < R; r++) dst[(q * kc + k) * R + r] = s[q * R + r];
        if (tail) {
            float* d = dst + (full * kc + k) * R;
            for (int r = 0; r < R; r++) d[r] = r < tail ? s[full * R + r] : 0.0f;
        }
    }
}

}  // namespace gemm_detail
}  // namespace tinyroots
