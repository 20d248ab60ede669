// gemm_avx2.cpp -- AVX2 + FMA micro-kernels for gemm.cpp (Haswell, Zen1-3 and later).
//
// Every function here carries the target attribute below instead of the whole build using
// -march: the driver calls into this file only when simd_isa() says the CPU has AVX2 and FMA.
//
// Packed tile: MR x NR = 6 x 16, i.e. 6 rows x 2 ymm vectors of 8 floats: 12 accumulators +
// 2 B vectors + 1 broadcast = 15 of the 16 ymm registers (the classic Haswell sgemm shape).
// Per k: 2 loads + 6 broadcasts for 12 FMAs, which two FMA pipes retire in 6 cycles.
#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm_kernels.h"

// Not a function: an attribute. It marks code the compiler may emit AVX2 + FMA instructions for.
#define TR_AVX2 __attribute__((target("avx2,fma")))

namespace tinyroots {
namespace gemm_detail {
namespace {

constexpr int MR = 6;        // rows of the packed tile
constexpr int NV = 2;        // ymm vectors per row of the packed tile
constexpr int NR = 8 * NV;   // columns of the packed tile
constexpr int SMALL_M = 3;   // rows of the unpacked tile (3 x 4 = 12 accumulators)
constexpr int SMALL_NV = 4;  // ymm vectors per row of the unpacked tile: 32 columns
constexpr int PREFETCH_ROWS = 2;  // pack_rows_simd: how far ahead it fetches source rows
constexpr int DOT_M = 2;     // rows of A in a dot-product tile
constexpr int DOT_N = 4;     // rows of Bt in a dot-product tile (2 x 4 = 8 accumulators)

// exp(x) = 2^n exp(r) as in gemm_avx512.cpp; x is clamped to +-88 so that 2^n, built directly
// in the exponent bits, stays a normal float.
TR_AVX2 inline __m256 exp256(__m256 x) {
    x = _mm256_max_ps(_mm256_min_ps(x, _mm256_set1_ps(88.0f)), _mm256_set1_ps(-88.0f));
    const __m256 n = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                     _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m256 r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693359375f), x);
    r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.12194440e-4f), r);
    __m256 p = _mm256_set1_ps(1.9875691500e-4f);
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.3981999507e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(8.3334519073e-3f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(4.1665795894e-2f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(1.6666665459e-1f));
    p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(5.0000001201e-1f));
    p = _mm256_fmadd_ps(p, _mm256_mul_ps(r, r), _mm256_add_ps(r, _mm256_set1_ps(1.0f)));
    const __m256i e = _mm256_slli_epi32(
        _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(p, _mm256_castsi256_ps(e));
}

// gelu(x) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)  (see gemm_kernels.h)
TR_AVX2 inline __m256 gelu256(__m256 x) {
    const __m256 x3 = _mm256_mul_ps(_mm256_mul_ps(x, x), x);
    const __m256 u = _mm256_mul_ps(_mm256_set1_ps(kGeluScale),
                                   _mm256_fmadd_ps(_mm256_set1_ps(kGeluCubic), x3, x));
    const __m256 e = exp256(_mm256_mul_ps(_mm256_set1_ps(-2.0f), u));
    return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), e));
}

// All-ones in the first n of 8 lanes (n may be <= 0 or >= 8): the mask maskload/maskstore want.
TR_AVX2 inline __m256i first_lanes(int n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

// Writes the R x V-vector accumulator tile to C[0:m, 0:n] through the epilogue. Always
// inlined: a call would take the accumulators' address, and GCC then keeps a copy of them in
// memory, storing all of them on every k step of the caller's loop.
template <int R, int V>
TR_AVX2 __attribute__((always_inline)) inline void store_tile(
    const __m256 (&acc)[R][V], float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    __m256i mask[V];
    __m256 bias[V];
    for (int v = 0; v < V; v++) {
        mask[v] = first_lanes(n - 8 * v);
        bias[v] = (ep.last && ep.bias) ? _mm256_maskload_ps(ep.bias + 8 * v, mask[v])
                                       : _mm256_setzero_ps();
    }
    // fully unrolled, so that every acc[i][v] is a register, never an indexed array
#pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
        if (i >= m) break;
        float* c = C + i * ldc;
#pragma GCC unroll 16
        for (int v = 0; v < V; v++) {
            __m256 x = acc[i][v];
            if (ep.load_c) x = _mm256_add_ps(x, _mm256_maskload_ps(c + 8 * v, mask[v]));
            if (ep.last) {
                x = _mm256_add_ps(x, bias[v]);
                if (ep.residual)
                    x = _mm256_add_ps(
                        x, _mm256_maskload_ps(ep.residual + i * ep.ld + 8 * v, mask[v]));
                if (ep.pre) _mm256_maskstore_ps(ep.pre + i * ep.ld + 8 * v, mask[v], x);
            }
            _mm256_maskstore_ps(c + 8 * v, mask[v], x);
        }
    }
    // GELU in a second pass over the tile, which is still in L1. subtle: doing it in the loop
    // above, with up to 24 accumulators live, makes the compiler spill them around the
    // polynomial; here no accumulator is live any more.
    if (ep.last && ep.pre) {
        for (int i = 0; i < m && i < R; i++) {
            for (int v = 0; v < V; v++) {
                const __m256 x = _mm256_maskload_ps(ep.pre + i * ep.ld + 8 * v, mask[v]);
                _mm256_maskstore_ps(C + i * ldc + 8 * v, mask[v], gelu256(x));
            }
        }
    }
}

// C[0:m, 0:n] (+)= Ap (kc x MR, packed) @ Bp (kc x NR, packed): the inner loop of the GEMM.
TR_AVX2 void tile_packed(int64_t kc, const float* __restrict__ Ap, const float* __restrict__ Bp,
                         float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    __m256 acc[MR][NV];
    // unrolled, so that the accumulators are registers from the start
#pragma GCC unroll 16
    for (int i = 0; i < MR; i++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) acc[i][v] = _mm256_setzero_ps();
    // C is read back at the end: start fetching its rows (6 x 64 bytes, ldc floats apart) now,
    // so they arrive while the loop runs
    for (int i = 0; i < MR; i++) _mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
    for (int64_t k = 0; k < kc; k++) {
        const float* a = Ap + k * MR;
        const float* b = Bp + k * NR;
        __m256 bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = _mm256_load_ps(b + 8 * v);
        for (int i = 0; i < MR; i++) {
            const __m256 ai = _mm256_broadcast_ss(a + i);
            for (int v = 0; v < NV; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    store_tile<MR, NV>(acc, C, ldc, m, n, ep);
}

// Unpacked R x (8 V) tile for few rows: A(i, k) = A[i * rsa + k * csa], B(k, j) = B[k * ldb + j].
template <int R, int V>
TR_AVX2 __attribute__((always_inline)) inline void tile_unpacked(
    int64_t kc, const float* __restrict__ A, int64_t rsa, int64_t csa, const float* __restrict__ B,
    int64_t ldb, float* C, int64_t ldc, int n, const TileEpilogue& ep) {
    __m256 acc[R][V];
    __m256i mask[V];
    for (int v = 0; v < V; v++) mask[v] = first_lanes(n - 8 * v);
    // unrolled, so that the accumulators are registers from the start
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 16
        for (int v = 0; v < V; v++) acc[i][v] = _mm256_setzero_ps();
    const bool full = n == 8 * V;  // interior tiles use plain loads; the edge one masks
    for (int64_t k = 0; k < kc; k++) {
        const float* b = B + k * ldb;
        __m256 bv[V];
        for (int v = 0; v < V; v++)
            bv[v] = full ? _mm256_loadu_ps(b + 8 * v) : _mm256_maskload_ps(b + 8 * v, mask[v]);
        for (int i = 0; i < R; i++) {
            const __m256 ai = _mm256_broadcast_ss(A + i * rsa + k * csa);
            for (int v = 0; v < V; v++) acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    store_tile<R, V>(acc, C, ldc, R, n, ep);
}

// The unpacked R-row kernel across any width n: one register tile after another.
template <int R>
TR_AVX2 void rows_unpacked(int64_t kc, const float* A, int64_t rsa, int64_t csa,
                          const float* B, int64_t ldb, float* C, int64_t ldc, int64_t n,
                          const TileEpilogue& ep) {
    constexpr int64_t width = 8 * SMALL_NV;
    for (int64_t j = 0; j < n; j += width)
        tile_unpacked<R, SMALL_NV>(kc, A, rsa, csa, B + j, ldb, C + j, ldc,
                                   (int)(n - j < width ? n - j : width), shifted(ep, j));
}

TR_AVX2 void small_tile(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* B,
                       int64_t ldb, float* C, int64_t ldc, int m, int64_t n,
                       const TileEpilogue& ep) {
    switch (m) {
        case 1: return rows_unpacked<1>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        case 2: return rows_unpacked<2>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        default: return rows_unpacked<3>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
    }
}

// Sum of the 8 lanes of v.
TR_AVX2 inline float reduce_add(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

// Dot-product tile, C = A @ Bt^T for R rows of A and n <= DOT_N rows of Bt: R x DOT_N
// accumulators of 8 k each, summed across their lanes at the end.
template <int R>
TR_AVX2 void dot_tile_rows(int64_t K, const float* __restrict__ A, int64_t lda,
                           const float* __restrict__ Bt, int64_t ldb, float* C, int64_t ldc,
                           int n, const TileEpilogue& ep) {
    __m256 acc[R][DOT_N];
    const float* b[DOT_N];
#pragma GCC unroll 16
    for (int j = 0; j < DOT_N; j++) {
        b[j] = Bt + (j < n ? j : 0) * ldb;  // rows past n repeat row 0; their sums are dropped
        for (int i = 0; i < R; i++) acc[i][j] = _mm256_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 8 <= K; k += 8) {
        __m256 a[R];
        for (int i = 0; i < R; i++) a[i] = _mm256_loadu_ps(A + i * lda + k);
        for (int j = 0; j < DOT_N; j++) {
            const __m256 bj = _mm256_loadu_ps(b[j] + k);
            for (int i = 0; i < R; i++) acc[i][j] = _mm256_fmadd_ps(a[i], bj, acc[i][j]);
        }
    }
    if (k < K) {  // the last K % 8 values, masked
        const __m256i mask = first_lanes((int)(K - k));
        __m256 a[R];
        for (int i = 0; i < R; i++) a[i] = _mm256_maskload_ps(A + i * lda + k, mask);
        for (int j = 0; j < DOT_N; j++) {
            const __m256 bj = _mm256_maskload_ps(b[j] + k, mask);
            for (int i = 0; i < R; i++) acc[i][j] = _mm256_fmadd_ps(a[i], bj, acc[i][j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < n; j++)
            epilogue_scalar(C + i * ldc + j, reduce_add(acc[i][j]), i, j, ep);
}

TR_AVX2 void dot_tile(int64_t K, const float* A, int64_t lda, const float* Bt, int64_t ldb,
                      float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    if (m == 1) return dot_tile_rows<1>(K, A, lda, Bt, ldb, C, ldc, n, ep);
    return dot_tile_rows<2>(K, A, lda, Bt, ldb, C, ldc, n, ep);
}

// In-register transpose of an 8 x 8 block: r[i] holds row i on entry and column i on exit.
TR_AVX2 inline void transpose8(__m256 (&r)[8]) {
    __m256 t[8];
    for (int i = 0; i < 4; i++) {  // interleave pairs of rows: 1-float pieces
        t[2 * i] = _mm256_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm256_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 2; g++) {  // 2-float pieces
        r[4 * g] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0x44);
        r[4 * g + 1] = _mm256_shuffle_ps(t[4 * g], t[4 * g + 2], 0xEE);
        r[4 * g + 2] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0x44);
        r[4 * g + 3] = _mm256_shuffle_ps(t[4 * g + 1], t[4 * g + 3], 0xEE);
    }
    for (int c = 0; c < 4; c++) {  // 128-bit halves
        t[c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x20);
        t[4 + c] = _mm256_permute2f128_ps(r[c], r[4 + c], 0x31);
    }
    for (int i = 0; i < 8; i++) r[i] = t[i];
}

// pack_panel for a source whose rows are contiguous along k (cs == 1): the layout change is a
// transpose, done 8 x 8 in registers instead of one float at a time.
template <int R>
TR_AVX2 void pack_transposed(float* __restrict__ dst, const float* __restrict__ src, int64_t rs,
                             int rows, int64_t kc) {
    for (int r0 = 0; r0 < R; r0 += 8) {
        const int nr = R - r0 < 8 ? R - r0 : 8;  // rows of dst this block fills
        const int valid = rows - r0;              // rows of src that exist
        const __m256i store_mask = first_lanes(nr);
        for (int64_t k0 = 0; k0 < kc; k0 += 8) {
            const int nk = kc - k0 < 8 ? (int)(kc - k0) : 8;
            const __m256i load_mask = first_lanes(nk);
            __m256 r[8];
            for (int i = 0; i < 8; i++)
                r[i] = i < valid ? _mm256_maskload_ps(src + (r0 + i) * rs + k0, load_mask)
                                 : _mm256_setzero_ps();
            transpose8(r);
            for (int k = 0; k < nk; k++)
                _mm256_maskstore_ps(dst + (k0 + k) * R + r0, store_mask, r[k]);
        }
    }
}

TR_AVX2 void pack_a(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc) {
    if (cs == 1) return pack_transposed<MR>(dst, src, rs, rows, kc);
    pack_panel<MR>(dst, src, rs, cs, rows, kc);
}

TR_AVX2 void pack_b(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc) {
    if (cs == 1) return pack_transposed<NR>(dst, src, rs, rows, kc);
    pack_panel<NR>(dst, src, rs, cs, rows, kc);
}

// pack_rows (gemm_kernels.h) with each R-float piece moved as one or two masked ymm: written
// out because GCC turns the plain loop into a memmove call per 64-byte piece. While it copies
// a source row it prefetches the one PREFETCH_ROWS below: each row starts a new stream (often
// on a new page), which the hardware prefetcher would only pick up after a few misses.
template <int R>
TR_AVX2 void pack_rows_simd(float* __restrict__ dst, const float* __restrict__ src, int64_t ld,
                            int64_t rows, int64_t kc) {
    constexpr int V = (R + 7) / 8;
    const int64_t slivers = (rows + R - 1) / R;
    for (int64_t k = 0; k < kc; k++) {
        const float* s = src + k * ld;
        for (int64_t q = 0; q < slivers; q++) {
            const int valid = (int)(rows - q * R < R ? rows - q * R : R);  // the rest is zero
            float* d = dst + (q * kc + k) * R;
            if (k + PREFETCH_ROWS < kc)  // one 64-byte line per piece of R = 16 floats
                _mm_prefetch((const char*)(s + PREFETCH_ROWS * ld + q * R), _MM_HINT_T0);
            for (int v = 0; v < V; v++) {
                const __m256 x = _mm256_maskload_ps(s + q * R + 8 * v, first_lanes(valid - 8 * v));
                _mm256_maskstore_ps(d + 8 * v, first_lanes(R - 8 * v), x);
            }
        }
    }
}

TR_AVX2 void pack_a_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows_simd<MR>(dst, src, ld, rows, kc);
}

TR_AVX2 void pack_b_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows_simd<NR>(dst, src, ld, rows, kc);
}

}  // namespace

const KernelSet& kernels_avx2() {
    static const KernelSet ks = {
        "avx2",     MR,       NR,                                  // packed tile
        pack_a,   pack_b,   pack_a_rows, pack_b_rows, tile_packed,  // packed path
        SMALL_M,  8 * SMALL_NV, small_tile,                        // few rows, A @ B
        DOT_M,    DOT_N,    dot_tile,                            // few rows, A @ B^T
    };
    return ks;
}

}  // namespace gemm_detail
}  // namespace tinyroots

#endif  // __x86_64__
