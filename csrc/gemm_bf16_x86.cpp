// gemm_bf16_x86.cpp -- the AVX512-BF16 and AMX micro-kernels and packing for gemm_bf16.cpp.
//
// Every function that uses these instructions carries a target attribute (TR_BF16, TR_AMX)
// instead of the whole build using -march: the driver calls into this file only when bf16_isa()
// found the CPU (and, for AMX, the OS) ready for them.
//
// AVX512-BF16 tile: MR x NR = 12 x 32, 12 rows x 2 zmm of 16 float32 = 24 accumulators. Per
// k-pair it loads 2 vectors of B (16 columns x 2 k each), broadcasts 12 (k, k+1) pairs of A and
// issues 24 VDPBF16PS, each 32 multiply-adds: twice the work of a float32 FMA per instruction.
//
// AMX tile: MR x NR = 32 x 32 as 2 x 2 float32 tiles of 16 x 16 (tmm0-3). Per 32 k it loads
// two A tiles (16 rows x 32 k, tmm4-5) and two B tiles (16 k-pairs x 16 columns, tmm6-7) and
// issues 4 TDPBF16PS, each 16 x 16 x 32 multiply-adds. Each tile is used twice per load.
#if defined(__x86_64__)

#include <cpuid.h>
#include <algorithm>
#include <immintrin.h>

#if defined(__linux__)
#include <sys/syscall.h>
#include <unistd.h>
#endif

#include "gemm_bf16_kernels.h"

#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC diagnostic ignored "-Wuninitialized"
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"
#endif

// Not functions: attributes marking code the compiler may emit these instructions for.
#define TR_BF16 __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2")))
#define TR_AMX \
    __attribute__((target("avx512f,avx512bw,avx512vl,avx512dq,avx512bf16,fma,avx2,amx-tile,amx-bf16,prfchw")))

namespace tinyroots {
namespace bf16_detail {

bool cpu_has_avx512bf16() {
    unsigned a, b, c, d;
    if (!__builtin_cpu_supports("avx512f") || !__builtin_cpu_supports("avx512bw") ||
        !__builtin_cpu_supports("avx512vl") || !__builtin_cpu_supports("avx512dq"))
        return false;
    if (!__get_cpuid_count(7, 1, &a, &b, &c, &d)) return false;
    return (a >> 5) & 1u;  // CPUID.(EAX=7, ECX=1):EAX bit 5 = AVX512_BF16
}

bool cpu_has_amx() {
    unsigned a, b, c, d;
    if (!cpu_has_avx512bf16() || !__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return ((d >> 22) & 1u) && ((d >> 24) & 1u);  // EDX bit 22 AMX-BF16, bit 24 AMX-TILE
}

// Linux keeps the 8 KB of tile registers out of a thread's saved state until the process asks
// for them; the first tile instruction without this permission kills it (SIGILL).
bool amx_permitted() {
#if defined(__linux__)
    static const bool ok = [] {
        constexpr long ARCH_REQ_XCOMP_PERM = 0x1023;
        constexpr long XFEATURE_XTILEDATA = 18;
        return syscall(SYS_arch_prctl, ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA) == 0;
    }();
    return ok;
#else
    return false;
#endif
}

namespace {

constexpr int BF16_MR = 12;
constexpr int AMX_MR = 32;

TR_BF16 inline __mmask16 first_lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);
}

// 16 values of a row as bf16 in the low half of each 32-bit lane (zeros beyond `mask`).
TR_BF16 inline __m512i load16_as_words(const View& v, int64_t offset, __mmask16 mask) {
    if (v.is_bf16)
        return _mm512_cvtepu16_epi32(
            _mm256_maskz_loadu_epi16(mask, static_cast<const bf16*>(v.data) + offset));
    const __m256bh h =
        _mm512_cvtneps_pbh(_mm512_maskz_loadu_ps(mask, static_cast<const float*>(v.data) + offset));
    return _mm512_cvtepu16_epi32((__m256i)h);
}

// 32 consecutive values of a row as bf16: 16 32-bit words, each a (k, k+1) pair.
TR_BF16 inline __m512i load32_as_pairs(const View& v, int64_t offset, int64_t count) {
    const __mmask16 lo = first_lanes(count), hi = first_lanes(count - 16);
    if (v.is_bf16)
        return _mm512_maskz_loadu_epi16(_cvtu32_mask32(lo | (uint32_t)hi << 16),
                                        static_cast<const bf16*>(v.data) + offset);
    const float* f = static_cast<const float*>(v.data) + offset;
    return (__m512i)_mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, f + 16),
                                        _mm512_maskz_loadu_ps(lo, f));
}

// Transposes 16 x 16 32-bit words in registers: afterwards w[c] lane i is what w[i] lane c was.
// Three rounds: 32-bit and 64-bit interleaves within each 128-bit lane (w[4i + j] then holds
// rows 4i..4i+3 of the columns 4L + j, L the 128-bit lane), then 128-bit lane shuffles.
TR_BF16 __attribute__((always_inline)) inline void transpose16(__m512i (&w)[16]) {
    __m512i t[16];
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_epi32(w[2 * i], w[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(w[2 * i], w[2 * i + 1]);
    }
    for (int i = 0; i < 4; i++) {
        w[4 * i + 0] = _mm512_unpacklo_epi64(t[4 * i + 0], t[4 * i + 2]);
        w[4 * i + 1] = _mm512_unpackhi_epi64(t[4 * i + 0], t[4 * i + 2]);
        w[4 * i + 2] = _mm512_unpacklo_epi64(t[4 * i + 1], t[4 * i + 3]);
        w[4 * i + 3] = _mm512_unpackhi_epi64(t[4 * i + 1], t[4 * i + 3]);
    }
    for (int j = 0; j < 4; j++) {
        const __m512i a = _mm512_shuffle_i32x4(w[j], w[4 + j], 0x88);
        const __m512i b = _mm512_shuffle_i32x4(w[j], w[4 + j], 0xDD);
        const __m512i c = _mm512_shuffle_i32x4(w[8 + j], w[12 + j], 0x88);
        const __m512i d = _mm512_shuffle_i32x4(w[8 + j], w[12 + j], 0xDD);
        t[j] = _mm512_shuffle_i32x4(a, c, 0x88);       // column j
        t[8 + j] = _mm512_shuffle_i32x4(a, c, 0xDD);   // column 8 + j
        t[4 + j] = _mm512_shuffle_i32x4(b, d, 0x88);   // column 4 + j
        t[12 + j] = _mm512_shuffle_i32x4(b, d, 0xDD);  // column 12 + j
    }
    for (int i = 0; i < 16; i++) w[i] = t[i];
}

// The pairs layout (gemm_bf16_kernels.h), dst32[p * R + r] = (v(r, 2p), v(r, 2p + 1)).
template <int R>
TR_BF16 void pack_pairs_simd(bf16* dst, const View& v, int rows, int64_t kc, int64_t kcp) {
    uint32_t* d = reinterpret_cast<uint32_t*>(dst);
    if (v.rs == 1) {  // the R values of one k are contiguous: two source rows make 16 pairs
        for (int64_t p = 0; p < kcp / 2; p++) {
            const int64_t k = 2 * p;
            for (int r0 = 0; r0 < R; r0 += 16) {
                const __mmask16 in = first_lanes(rows - r0), out = first_lanes(R - r0);
                const __m512i lo = k < kc ? load16_as_words(v, k * v.cs + r0, in)
                                          : _mm512_setzero_si512();
                const __m512i hi = k + 1 < kc ? load16_as_words(v, (k + 1) * v.cs + r0, in)
                                              : _mm512_setzero_si512();
                _mm512_mask_storeu_epi32(d + p * R + r0, out,
                                         _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16)));
            }
        }
        return;
    }
    if (v.cs != 1) {
        pack_pairs<R>(dst, v, rows, kc, kcp);
        return;
    }
    // k contiguous along each source row: 32 k of a row are 16 pairs; 16 rows of them,
    // transposed in registers, are 16 k-pairs of 16 rows each
    for (int64_t k = 0; k < kcp; k += KB)
        for (int r0 = 0; r0 < R; r0 += 16) {
            __m512i w[16];
            for (int r = 0; r < 16; r++)
                w[r] = r0 + r < rows ? load32_as_pairs(v, (r0 + r) * v.rs + k, kc - k)
                                     : _mm512_setzero_si512();
            transpose16(w);
            const __mmask16 out = first_lanes(R - r0);
            for (int p = 0; p < 16; p++) _mm512_mask_storeu_epi32(d + (k / 2 + p) * R + r0, out, w[p]);
        }
}

TR_BF16 void bf16_pack_a(bf16* dst, const View& A, int rows, int64_t kc, int64_t kcp) {
    pack_pairs_simd<BF16_MR>(dst, A, rows, kc, kcp);
}

TR_BF16 void pack_b(bf16* dst, const View& B, int cols, int64_t kc, int64_t kcp) {
    pack_pairs_simd<NR>(dst, B, cols, kc, kcp);
}

void nothing() {}

TR_BF16 void bf16_tile(int64_t kcp, const bf16* Ap, const bf16* Bp, float* C, int64_t ldc,
                       int m, int n, bool load_c) {
    constexpr int R = BF16_MR;
    const __mmask16 mask0 = first_lanes(n), mask1 = first_lanes(n - 16);
    __m512 acc[R][2];
    for (int i = 0; i < R; i++) {
        const bool row = load_c && i < m;
        acc[i][0] = row ? _mm512_maskz_loadu_ps(mask0, C + i * ldc) : _mm512_setzero_ps();
        acc[i][1] = row ? _mm512_maskz_loadu_ps(mask1, C + i * ldc + 16) : _mm512_setzero_ps();
    }
    const int32_t* a = reinterpret_cast<const int32_t*>(Ap);
    for (int64_t p = 0; p < kcp / 2; p++) {
        const __m512bh b0 = (__m512bh)_mm512_loadu_si512(Bp + p * 2 * NR);
        const __m512bh b1 = (__m512bh)_mm512_loadu_si512(Bp + p * 2 * NR + 32);
        for (int i = 0; i < R; i++) {
            const __m512bh ai = (__m512bh)_mm512_set1_epi32(a[p * R + i]);
            acc[i][0] = _mm512_dpbf16_ps(acc[i][0], ai, b0);
            acc[i][1] = _mm512_dpbf16_ps(acc[i][1], ai, b1);
        }
    }
    for (int i = 0; i < m; i++) {
        _mm512_mask_storeu_ps(C + i * ldc, mask0, acc[i][0]);
        _mm512_mask_storeu_ps(C + i * ldc + 16, mask1, acc[i][1]);
    }
}

// ---- few rows, bf16 B unpacked (decoding with bf16 weights) ----------------------------------

// 16 bf16 values -> 16 float32 (exact: the bf16 bits become the high half of each float)
TR_BF16 inline __m512 load16_bf16(const bf16* p, __mmask16 mask) {
    return _mm512_castsi512_ps(
        _mm512_slli_epi32(_mm512_cvtepu16_epi32(_mm256_maskz_loadu_epi16(mask, p)), 16));
}

// C[0:m, 0:n] = A[0:m, 0:kc] @ B[0:kc, 0:n]. The kc rows of B are cut into 4 segments, and each
// pass over C takes one row from each: 4 long sequential streams (a segment read front to
// back), which the hardware prefetchers follow; 4 neighbouring rows at a time restart their
// streams every pass. C's rows stay in L1 and are loaded and stored once per 4 rows of B; the
// next row of each segment is prefetched a pass ahead.
TR_BF16 void small_nn(int m, int64_t n, int64_t kc, const float* A, int64_t lda, const bf16* B,
                      int64_t ldb, float* C, int64_t ldc) {
    for (int i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) C[i * ldc + j] = 0.0f;
    const int64_t seg = (kc + 3) / 4;  // rows per segment
    for (int64_t s = 0; s < seg; s++) {
        int64_t k[4];
        bool in[4];
        for (int q = 0; q < 4; q++) {
            k[q] = q * seg + s;
            in[q] = k[q] < kc;
        }
        float a[SMALL_M][4];  // A[i, k[q]], zero for a row past kc
        for (int i = 0; i < m; i++)
            for (int q = 0; q < 4; q++) a[i][q] = in[q] ? A[i * lda + k[q]] : 0.0f;
        for (int64_t j = 0; j < n; j += 16) {
            const __mmask16 mask = first_lanes(n - j);
            __m512 w[4];
            for (int q = 0; q < 4; q++) {
                const bf16* row = B + k[q] * ldb + j;
                if (in[q] && j % 32 == 0 && s + 1 < seg)
                    _mm_prefetch(reinterpret_cast<const char*>(row + ldb), _MM_HINT_T0);
                w[q] = in[q] ? load16_bf16(row, mask) : _mm512_setzero_ps();
            }
            for (int i = 0; i < m; i++) {
                __m512 c = _mm512_maskz_loadu_ps(mask, C + i * ldc + j);
                for (int q = 0; q < 4; q++) c = _mm512_fmadd_ps(_mm512_set1_ps(a[i][q]), w[q], c);
                _mm512_mask_storeu_ps(C + i * ldc + j, mask, c);
            }
        }
    }
}

// C[i, j] (+)= sum_k A[i, k] Bt[j, k]: 4 rows of Bt at a time (read from memory once, then
// from L1 for each row of A), 32 k per step: A's 32 values (bf16 values already, so packing
// them is exact) against 64 bytes of each row, one VDPBF16PS per cache line of Bt. Each sum is
// reduced across its lanes at the end. Converting Bt to float32 and using FMAs, as before, took
// four times the instructions per line, and the LM head of a 124M model (77 MB, from DRAM)
// streamed at 0.80x the float32 kernel's bytes per second; with VDPBF16PS at 0.91x (Intel Xeon
// with AMX, 2 threads, median of 9 alternated runs).
TR_BF16 void small_nt(int m, int64_t n, int64_t K, const float* A, int64_t lda, const bf16* Bt,
                      int64_t ldb, float* C, int64_t ldc, bool load_c) {
    constexpr int R = 4;
    for (int64_t j = 0; j < n; j += R) {
        const int rows = (int)std::min<int64_t>(R, n - j);
        for (int i = 0; i < m; i++) {
            __m512 acc[R] = {_mm512_setzero_ps(), _mm512_setzero_ps(), _mm512_setzero_ps(),
                             _mm512_setzero_ps()};
            for (int64_t k = 0; k < K; k += 32) {
                const __mmask16 lo = first_lanes(K - k), hi = first_lanes(K - k - 16);
                const __m512bh a = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, A + i * lda + k + 16),
                                                      _mm512_maskz_loadu_ps(lo, A + i * lda + k));
                const __mmask32 mask = (__mmask32)lo | ((__mmask32)hi << 16);
                for (int r = 0; r < rows; r++) {
                    // the next 4 rows, a pass ahead: each row is a short stream (K values),
                    // too short for the hardware prefetchers to pick up on their own
                    if (i == 0 && j + R + r < n)
                        _mm_prefetch(reinterpret_cast<const char*>(Bt + (j + R + r) * ldb + k),
                                     _MM_HINT_T0);
                    const __m512i b = _mm512_maskz_loadu_epi16(mask, Bt + (j + r) * ldb + k);
                    acc[r] = _mm512_dpbf16_ps(acc[r], a, (__m512bh)b);
                }
            }
            for (int r = 0; r < rows; r++) {
                float* c = C + i * ldc + j + r;
                *c = (load_c ? *c : 0.0f) + _mm512_reduce_add_ps(acc[r]);
            }
        }
    }
}

// ---- AMX -------------------------------------------------------------------------------------

// A sliver, one AMX A tile pair after another: for each 32-wide slice of k, the 32 rows of
// that slice (64 bytes each), dst[(k / 32) * 1024 + r * 32 + k % 32], rows zero-padded to
// AMX_MR. Each tile is then 1 KB in one piece and the kernel reads the sliver front to back,
// the order the L2 prefetchers follow (row-major rows kcp apart streamed half as fast).
TR_AMX void amx_pack_a(bf16* dst, const View& A, int rows, int64_t kc, int64_t kcp) {
    constexpr int64_t BLOCK = AMX_MR * KB;  // bf16 elements per k slice of the sliver
    if (A.cs == 1) {  // k contiguous: convert each row 32 values at a time
        for (int r = 0; r < rows; r++)
            for (int64_t k = 0; k < kcp; k += KB)
                _mm512_storeu_si512(dst + (k / KB) * BLOCK + r * KB,
                                    load32_as_pairs(A, r * A.rs + k, kc - k));
    } else if (A.rs == 1) {  // rows contiguous (A^T stored): pairs of k, then transposed
        for (int64_t k = 0; k < kcp; k += KB)
            for (int r0 = 0; r0 < rows; r0 += 16) {
                const __mmask16 in = first_lanes(rows - r0);
                __m512i w[16];  // w[p] lane r: the pair (k + 2p, k + 2p + 1) of row r0 + r
                for (int p = 0; p < 16; p++) {
                    const int64_t kk = k + 2 * p;
                    const __m512i lo = kk < kc ? load16_as_words(A, kk * A.cs + r0, in)
                                               : _mm512_setzero_si512();
                    const __m512i hi = kk + 1 < kc ? load16_as_words(A, (kk + 1) * A.cs + r0, in)
                                                   : _mm512_setzero_si512();
                    w[p] = _mm512_or_si512(lo, _mm512_slli_epi32(hi, 16));
                }
                transpose16(w);  // w[r] lane p
                for (int r = 0; r < 16; r++)
                    _mm512_storeu_si512(dst + (k / KB) * BLOCK + (r0 + r) * KB, w[r]);
            }
    } else {
        for (int r = 0; r < rows; r++)
            for (int64_t k = 0; k < kcp; k++)
                dst[(k / KB) * BLOCK + r * KB + k % KB] = k < kc ? round_bf16(A.at(r, k)) : 0;
    }
    for (int64_t k = 0; k < kcp; k += KB)
        for (int r = rows; r < AMX_MR; r++)
            _mm512_storeu_si512(dst + (k / KB) * BLOCK + r * KB, _mm512_setzero_si512());
}

// The tile configuration (palette 1): 8 tiles of 16 rows x 64 bytes.
struct alignas(64) TileConfig {
    uint8_t palette_id = 1;
    uint8_t start_row = 0;
    uint8_t reserved[14] = {};
    uint16_t colsb[16] = {64, 64, 64, 64, 64, 64, 64, 64};
    uint8_t rows[16] = {16, 16, 16, 16, 16, 16, 16, 16};
};

TR_AMX void amx_begin() {
    static const TileConfig config;
    _tile_loadconfig(&config);
}

TR_AMX void amx_end() { _tile_release(); }

// C[0:m, 0:n] (+)= Ap (32 x kcp, in 32 x 32 slices) @ Bp (pairs, kcp/2 x 32 x 2). A tile of C that is
// only partly inside the matrix goes through a 32 x 32 buffer.
TR_AMX void amx_tile(int64_t kcp, const bf16* Ap, const bf16* Bp, float* C, int64_t ldc, int m,
                     int n, bool load_c) {
    alignas(64) float buf[AMX_MR * NR];
    const bool full = m == AMX_MR && n == NR;
    float* c = full ? C : buf;
    const int64_t ld = full ? ldc : NR, stride = ld * 4;  // bytes
    if (load_c) {
        if (!full)
            for (int i = 0; i < AMX_MR; i++)
                for (int j = 0; j < NR; j++) buf[i * NR + j] = i < m && j < n ? C[i * ldc + j] : 0;
        _tile_loadd(0, c, stride);
        _tile_loadd(1, c + 16, stride);
        _tile_loadd(2, c + 16 * ld, stride);
        _tile_loadd(3, c + 16 * ld + 16, stride);
    } else {
        _tile_zero(0);
        _tile_zero(1);
        _tile_zero(2);
        _tile_zero(3);
        // C is only written: ask for its 64 lines now, so that their trip from memory overlaps
        // the products instead of stalling the stores (a K of 384 is under 800 cycles of work)
        for (int i = 0; i < m; i++) {
            _m_prefetchw(C + i * ldc);
            _m_prefetchw(C + i * ldc + 16);
        }
    }
    for (int64_t k = 0; k < kcp; k += KB) {
        const bf16* a = Ap + k * AMX_MR;                  // this k slice of the sliver
        _tile_loadd(4, a, KB * 2);                        // rows 0-15, k .. k+31
        _tile_loadd(5, a + 16 * KB, KB * 2);              // rows 16-31
        _tile_loadd(6, Bp + k * NR, 2 * NR * 2);          // k-pairs k/2 .. k/2+15, columns 0-15
        _tile_loadd(7, Bp + k * NR + 32, 2 * NR * 2);     // columns 16-31
        _tile_dpbf16ps(0, 4, 6);
        _tile_dpbf16ps(1, 4, 7);
        _tile_dpbf16ps(2, 5, 6);
        _tile_dpbf16ps(3, 5, 7);
    }
    _tile_stored(0, c, stride);
    _tile_stored(1, c + 16, stride);
    _tile_stored(2, c + 16 * ld, stride);
    _tile_stored(3, c + 16 * ld + 16, stride);
    if (!full)
        for (int i = 0; i < m; i++)
            for (int j = 0; j < n; j++) C[i * ldc + j] = buf[i * NR + j];
}

}  // namespace

const KernelSet& kernels_avx512bf16() {
    static const KernelSet ks = {"avx512bf16", BF16_MR, bf16_pack_a, pack_b, nothing, nothing,
                                 bf16_tile, small_nn, small_nt};
    return ks;
}

const KernelSet& kernels_amx() {
    static const KernelSet ks = {"amx", AMX_MR, amx_pack_a, pack_b, amx_begin, amx_end, amx_tile,
                                 small_nn, small_nt};
    return ks;
}

}  // namespace bf16_detail
}  // namespace tinyroots

#endif  // __x86_64__
