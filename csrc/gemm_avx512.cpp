// gemm_avx512.cpp -- AVX-512 micro-kernels for gemm.cpp (Zen4, Skylake-X and later).
//
// Every function here carries the target attribute below instead of the whole build using
// -march: the driver calls into this file only when simd_isa() says the CPU has AVX-512.
//
// Packed tile: MR x NR = 12 x 32, i.e. 12 rows x 2 zmm vectors of 16 floats: 24 accumulators +
// 2 B vectors + 1 broadcast = 27 of the 32 zmm registers. Per k it loads 2 vectors of B and
// broadcasts 12 floats of A for 24 FMAs: Zen4 retires one 512-bit FMA per cycle (two 256-bit
// pipes), so 14 loads per 24 cycles leave the load ports idle half the time, and 24 independent
// accumulators hide the 4-cycle FMA latency six times over.
#if defined(__x86_64__)

#include <immintrin.h>

#include "gemm_kernels.h"

// GCC 12's AVX-512 intrinsics start from _mm512_undefined_ps(), which -Wall reports as "(may
// be) used uninitialized" wherever they are inlined (GCC bug 105593): a false alarm, silenced.
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Not a function: an attribute. It marks code the compiler may emit AVX-512 instructions for.
#define TR_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl,fma,avx2")))

namespace tinyroots {
namespace gemm_detail {
namespace {

constexpr int MR = 12;        // rows of the packed tile
constexpr int NV = 2;         // zmm vectors per row of the packed tile
constexpr int NR = 16 * NV;   // columns of the packed tile
constexpr int SMALL_M = 6;    // rows of the unpacked tile (6 x 4 = 24 accumulators)
constexpr int SMALL_NV = 4;   // zmm vectors per row of the unpacked tile: 64 columns = 256 B
constexpr int PREFETCH_ROWS = 2;  // pack_rows_simd: how far ahead it fetches source rows
constexpr int PREFETCH_K = 32;    // pack_transposed: how far ahead along a row it fetches
constexpr int DOT_M = 2;      // rows of A in a dot-product tile
constexpr int DOT_N = 8;      // rows of Bt in a dot-product tile (2 x 8 = 16 accumulators)

// exp(x) = 2^n exp(r), n = round(x / ln2), |r| <= ln2 / 2, exp(r) from Cephes' degree-6
// polynomial (~1 ulp). scalef applies 2^n with the right overflow (inf) and underflow (0).
TR_AVX512 inline __m512 exp512(__m512 x) {
    x = _mm512_max_ps(_mm512_min_ps(x, _mm512_set1_ps(100.0f)), _mm512_set1_ps(-100.0f));
    const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                          _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);  // ln2 in two parts,
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);      // so r is exact
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), _mm512_add_ps(r, _mm512_set1_ps(1.0f)));
    return _mm512_scalef_ps(p, n);
}

// gelu(x) = x / (1 + exp(-2u)), u = sqrt(2/pi) (x + 0.044715 x^3)  (see gemm_kernels.h)
TR_AVX512 inline __m512 gelu512(__m512 x) {
    const __m512 x3 = _mm512_mul_ps(_mm512_mul_ps(x, x), x);
    const __m512 u = _mm512_mul_ps(_mm512_set1_ps(kGeluScale),
                                   _mm512_fmadd_ps(_mm512_set1_ps(kGeluCubic), x3, x));
    const __m512 e = exp512(_mm512_mul_ps(_mm512_set1_ps(-2.0f), u));
    return _mm512_div_ps(x, _mm512_add_ps(_mm512_set1_ps(1.0f), e));
}

// The first n of 16 lanes (n may be <= 0 or >= 16).
TR_AVX512 inline __mmask16 first_lanes(int n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// Writes the R x V-vector accumulator tile to C[0:m, 0:n] through the epilogue. Always
// inlined: a call would take the accumulators' address, and GCC then keeps a copy of them in
// memory, storing all of them on every k step of the caller's loop.
template <int R, int V>
TR_AVX512 __attribute__((always_inline)) inline void store_tile(
    const __m512 (&acc)[R][V], float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    __mmask16 mask[V];
    __m512 bias[V];
    for (int v = 0; v < V; v++) {
        mask[v] = first_lanes(n - 16 * v);
        bias[v] = (ep.last && ep.bias) ? _mm512_maskz_loadu_ps(mask[v], ep.bias + 16 * v)
                                       : _mm512_setzero_ps();
    }
    // fully unrolled, so that every acc[i][v] is a register, never an indexed array
#pragma GCC unroll 16
    for (int i = 0; i < R; i++) {
        if (i >= m) break;
        float* c = C + i * ldc;
#pragma GCC unroll 16
        for (int v = 0; v < V; v++) {
            __m512 x = acc[i][v];
            if (ep.load_c) x = _mm512_add_ps(x, _mm512_maskz_loadu_ps(mask[v], c + 16 * v));
            if (ep.last) {
                x = _mm512_add_ps(x, bias[v]);
                if (ep.residual)
                    x = _mm512_add_ps(
                        x, _mm512_maskz_loadu_ps(mask[v], ep.residual + i * ep.ld + 16 * v));
                if (ep.pre) _mm512_mask_storeu_ps(ep.pre + i * ep.ld + 16 * v, mask[v], x);
            }
            _mm512_mask_storeu_ps(c + 16 * v, mask[v], x);
        }
    }
    // GELU in a second pass over the tile, which is still in L1. subtle: doing it in the loop
    // above, with up to 24 accumulators live, makes the compiler spill them around the
    // polynomial; here no accumulator is live any more.
    if (ep.last && ep.pre) {
        for (int i = 0; i < m && i < R; i++) {
            for (int v = 0; v < V; v++) {
                const __m512 x = _mm512_maskz_loadu_ps(mask[v], ep.pre + i * ep.ld + 16 * v);
                _mm512_mask_storeu_ps(C + i * ldc + 16 * v, mask[v], gelu512(x));
            }
        }
    }
}

// C[0:m, 0:n] (+)= Ap (kc x MR, packed) @ Bp (kc x NR, packed): the inner loop of the GEMM,
// for the first R <= MR rows of the sliver (R = MR except in a last, partial sliver).
template <int R>
TR_AVX512 void tile_packed_rows(int64_t kc, const float* __restrict__ Ap,
                                const float* __restrict__ Bp, float* C, int64_t ldc, int m,
                                int n, const TileEpilogue& ep) {
    __m512 acc[R][NV];
    // unrolled, so that the accumulators are registers from the start
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) acc[i][v] = _mm512_setzero_ps();
    // C is read back at the end: start fetching both cache lines of each of its rows now, so
    // they arrive while the loop runs (a tile of C is 12 rows x 128 bytes, ldc floats apart)
    for (int i = 0; i < R; i++) {
        _mm_prefetch((const char*)(C + i * ldc), _MM_HINT_T0);
        _mm_prefetch((const char*)(C + i * ldc + 16), _MM_HINT_T0);
    }
    for (int64_t k = 0; k < kc; k++) {
        const float* a = Ap + k * MR;
        const float* b = Bp + k * NR;
        __m512 bv[NV];
        for (int v = 0; v < NV; v++) bv[v] = _mm512_load_ps(b + 16 * v);
        for (int i = 0; i < R; i++) {
            const __m512 ai = _mm512_set1_ps(a[i]);
            for (int v = 0; v < NV; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    store_tile<R, NV>(acc, C, ldc, m, n, ep);
}

// A sliver with m <= 4 or 8 real rows (M not a multiple of 12, e.g. 256 = 21 x 12 + 4) runs a
// shorter kernel instead of multiplying rows of zeros.
TR_AVX512 void tile_packed(int64_t kc, const float* Ap, const float* Bp, float* C, int64_t ldc,
                           int m, int n, const TileEpilogue& ep) {
    if (m <= 4) return tile_packed_rows<4>(kc, Ap, Bp, C, ldc, m, n, ep);
    if (m <= 8) return tile_packed_rows<8>(kc, Ap, Bp, C, ldc, m, n, ep);
    tile_packed_rows<MR>(kc, Ap, Bp, C, ldc, m, n, ep);
}

// Unpacked R x (16 V) tile for few rows: A(i, k) = A[i * rsa + k * csa], B(k, j) = B[k * ldb + j].
// B is read straight from the caller's matrix (columns past n masked off), so a GEMV streams
// the weights once instead of packing them first.
template <int R, int V>
TR_AVX512 __attribute__((always_inline)) inline void tile_unpacked(
    int64_t kc, const float* __restrict__ A, int64_t rsa, int64_t csa, const float* __restrict__ B,
    int64_t ldb, float* C, int64_t ldc, int n, const TileEpilogue& ep) {
    __m512 acc[R][V];
    __mmask16 mask[V];
    for (int v = 0; v < V; v++) mask[v] = first_lanes(n - 16 * v);
    // unrolled, so that the accumulators are registers from the start
#pragma GCC unroll 16
    for (int i = 0; i < R; i++)
#pragma GCC unroll 16
        for (int v = 0; v < V; v++) acc[i][v] = _mm512_setzero_ps();
    const bool full = n == 16 * V;  // interior tiles use plain loads; the edge one masks
    for (int64_t k = 0; k < kc; k++) {
        const float* b = B + k * ldb;
        __m512 bv[V];
        for (int v = 0; v < V; v++)
            bv[v] = full ? _mm512_loadu_ps(b + 16 * v) : _mm512_maskz_loadu_ps(mask[v], b + 16 * v);
        for (int i = 0; i < R; i++) {
            const __m512 ai = _mm512_set1_ps(A[i * rsa + k * csa]);
            for (int v = 0; v < V; v++) acc[i][v] = _mm512_fmadd_ps(ai, bv[v], acc[i][v]);
        }
    }
    store_tile<R, V>(acc, C, ldc, R, n, ep);
}

// The unpacked R-row kernel across any width n: one register tile after another.
template <int R>
TR_AVX512 void rows_unpacked(int64_t kc, const float* A, int64_t rsa, int64_t csa,
                            const float* B, int64_t ldb, float* C, int64_t ldc, int64_t n,
                            const TileEpilogue& ep) {
    constexpr int64_t width = 16 * SMALL_NV;
    for (int64_t j = 0; j < n; j += width)
        tile_unpacked<R, SMALL_NV>(kc, A, rsa, csa, B + j, ldb, C + j, ldc,
                                   (int)(n - j < width ? n - j : width), shifted(ep, j));
}

TR_AVX512 void small_tile(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* B,
                         int64_t ldb, float* C, int64_t ldc, int m, int64_t n,
                         const TileEpilogue& ep) {
    switch (m) {
        case 1: return rows_unpacked<1>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        case 2: return rows_unpacked<2>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        case 3: return rows_unpacked<3>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        case 4: return rows_unpacked<4>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        case 5: return rows_unpacked<5>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
        default: return rows_unpacked<6>(kc, A, rsa, csa, B, ldb, C, ldc, n, ep);
    }
}

// Dot-product tile, C = A @ Bt^T for R rows of A and n <= DOT_N rows of Bt: R x DOT_N
// accumulators of 16 k each, summed across their lanes at the end.
template <int R>
TR_AVX512 void dot_tile_rows(int64_t K, const float* __restrict__ A, int64_t lda,
                             const float* __restrict__ Bt, int64_t ldb, float* C, int64_t ldc,
                             int n, const TileEpilogue& ep) {
    __m512 acc[R][DOT_N];
    const float* b[DOT_N];
#pragma GCC unroll 16
    for (int j = 0; j < DOT_N; j++) {
        b[j] = Bt + (j < n ? j : 0) * ldb;  // rows past n repeat row 0; their sums are dropped
        for (int i = 0; i < R; i++) acc[i][j] = _mm512_setzero_ps();
    }
    int64_t k = 0;
    for (; k + 16 <= K; k += 16) {
        __m512 a[R];
        for (int i = 0; i < R; i++) a[i] = _mm512_loadu_ps(A + i * lda + k);
        for (int j = 0; j < DOT_N; j++) {
            const __m512 bj = _mm512_loadu_ps(b[j] + k);
            for (int i = 0; i < R; i++) acc[i][j] = _mm512_fmadd_ps(a[i], bj, acc[i][j]);
        }
    }
    if (k < K) {  // the last K % 16 values, masked
        const __mmask16 mask = first_lanes((int)(K - k));
        __m512 a[R];
        for (int i = 0; i < R; i++) a[i] = _mm512_maskz_loadu_ps(mask, A + i * lda + k);
        for (int j = 0; j < DOT_N; j++) {
            const __m512 bj = _mm512_maskz_loadu_ps(mask, b[j] + k);
            for (int i = 0; i < R; i++) acc[i][j] = _mm512_fmadd_ps(a[i], bj, acc[i][j]);
        }
    }
    for (int i = 0; i < R; i++)
        for (int j = 0; j < n; j++)
            epilogue_scalar(C + i * ldc + j, _mm512_reduce_add_ps(acc[i][j]), i, j, ep);
}

TR_AVX512 void dot_tile(int64_t K, const float* A, int64_t lda, const float* Bt, int64_t ldb,
                        float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    if (m == 1) return dot_tile_rows<1>(K, A, lda, Bt, ldb, C, ldc, n, ep);
    return dot_tile_rows<2>(K, A, lda, Bt, ldb, C, ldc, n, ep);
}

// In-register transpose of a 16 x 16 block: r[i] holds row i on entry and column i on exit.
// Four rounds of shuffles, each swapping ever larger pieces (1 float, 2 floats, 4-float lanes).
TR_AVX512 inline void transpose16(__m512 (&r)[16]) {
    __m512 t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    for (int g = 0; g < 4; g++) {
        const __m512d t0 = _mm512_castps_pd(t[4 * g]), t1 = _mm512_castps_pd(t[4 * g + 1]);
        const __m512d t2 = _mm512_castps_pd(t[4 * g + 2]), t3 = _mm512_castps_pd(t[4 * g + 3]);
        r[4 * g] = _mm512_castpd_ps(_mm512_unpacklo_pd(t0, t2));
        r[4 * g + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(t0, t2));
        r[4 * g + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(t1, t3));
        r[4 * g + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(t1, t3));
    }
    // r[4g + c], 128-bit lane L, now holds rows 4g..4g+3 of column 4L + c
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

// pack_panel for a source whose rows are contiguous along k (cs == 1): the layout change is a
// transpose, done 16 x 16 in registers instead of one float at a time. Each of the 16 rows is a
// short stream along k; fetching PREFETCH_K ahead keeps them flowing from DRAM.
template <int R>
TR_AVX512 void pack_transposed(float* __restrict__ dst, const float* __restrict__ src,
                               int64_t rs, int rows, int64_t kc) {
    for (int r0 = 0; r0 < R; r0 += 16) {
        const int nr = R - r0 < 16 ? R - r0 : 16;         // rows of dst this block fills
        const int valid = rows - r0;                       // rows of src that exist
        const __mmask16 store_mask = first_lanes(nr);
        for (int64_t k0 = 0; k0 < kc; k0 += 16) {
            const int nk = kc - k0 < 16 ? (int)(kc - k0) : 16;
            const __mmask16 load_mask = first_lanes(nk);
            __m512 r[16];
            for (int i = 0; i < 16; i++) {
                if (i < valid && k0 + PREFETCH_K < kc)
                    _mm_prefetch((const char*)(src + (r0 + i) * rs + k0 + PREFETCH_K),
                                 _MM_HINT_T0);
                r[i] = i < valid ? _mm512_maskz_loadu_ps(load_mask, src + (r0 + i) * rs + k0)
                                 : _mm512_setzero_ps();
            }
            transpose16(r);
            for (int k = 0; k < nk; k++)
                _mm512_mask_storeu_ps(dst + (k0 + k) * R + r0, store_mask, r[k]);
        }
    }
}

TR_AVX512 void pack_a(float* dst, const float* src, int64_t rs, int64_t cs, int rows,
                      int64_t kc) {
    if (cs == 1) return pack_transposed<MR>(dst, src, rs, rows, kc);
    pack_panel<MR>(dst, src, rs, cs, rows, kc);
}

TR_AVX512 void pack_b(float* dst, const float* src, int64_t rs, int64_t cs, int rows,
                      int64_t kc) {
    if (cs == 1) return pack_transposed<NR>(dst, src, rs, rows, kc);
    pack_panel<NR>(dst, src, rs, cs, rows, kc);
}

// pack_rows (gemm_kernels.h) with each R-float piece moved as one or two masked zmm: written
// out because GCC turns the plain loop into a memmove call per 128-byte piece. While it copies
// a source row it prefetches the one PREFETCH_ROWS below: each row starts a new stream (often
// on a new page), which the hardware prefetcher would only pick up after a few misses.
template <int R>
TR_AVX512 void pack_rows_simd(float* __restrict__ dst, const float* __restrict__ src,
                              int64_t ld, int64_t rows, int64_t kc) {
    constexpr int V = (R + 15) / 16;
    const int64_t slivers = (rows + R - 1) / R;
    for (int64_t k = 0; k < kc; k++) {
        const float* s = src + k * ld;
        for (int64_t q = 0; q < slivers; q++) {
            const int valid = (int)(rows - q * R < R ? rows - q * R : R);  // the rest is zero
            float* d = dst + (q * kc + k) * R;
            for (int v = 0; v < V; v++) {
                if (k + PREFETCH_ROWS < kc)
                    _mm_prefetch((const char*)(s + PREFETCH_ROWS * ld + q * R + 16 * v),
                                 _MM_HINT_T0);
                const __m512 x = _mm512_maskz_loadu_ps(first_lanes(valid - 16 * v),
                                                       s + q * R + 16 * v);
                _mm512_mask_storeu_ps(d + 16 * v, first_lanes(R - 16 * v), x);
            }
        }
    }
}

TR_AVX512 void pack_a_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows_simd<MR>(dst, src, ld, rows, kc);
}

TR_AVX512 void pack_b_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows_simd<NR>(dst, src, ld, rows, kc);
}

}  // namespace

const KernelSet& kernels_avx512() {
    static const KernelSet ks = {
        "avx512",     MR,       NR,                                  // packed tile
        pack_a,   pack_b,   pack_a_rows, pack_b_rows, tile_packed,  // packed path
        SMALL_M,  16 * SMALL_NV, small_tile,                        // few rows, A @ B
        DOT_M,    DOT_N,    dot_tile,                            // few rows, A @ B^T
    };
    return ks;
}

}  // namespace gemm_detail
}  // namespace tinyroots

#endif  // __x86_64__
