// gemm_portable.cpp -- plain C++ micro-kernels for gemm.cpp, for any CPU (ARM, old x86-64).
//
// The same blocking as the SIMD sets, written as loops over small fixed-size arrays that the
// compiler vectorizes for whatever the baseline target is (SSE2 on x86-64, NEON on AArch64).
// Tile MR x NR = 4 x 8: 32 accumulators = 8 SSE / NEON registers, which leaves registers for
// A and B (a 4 x 16 tile fills all 16 and spills: 5x slower).
#include "gemm_kernels.h"

namespace tinyroots {
namespace gemm_detail {
namespace {

constexpr int MR = 4;
constexpr int NR = 8;
constexpr int SMALL_M = 2;
constexpr int SMALL_NR = 32;
constexpr int DOT_M = 2;
constexpr int DOT_N = 4;

template <int R, int W>
void store_tile(const float (&acc)[R][W], float* C, int64_t ldc, int m, int n,
                const TileEpilogue& ep) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) epilogue_scalar(C + i * ldc + j, acc[i][j], i, j, ep);
}

// C[0:m, 0:n] (+)= Ap (kc x MR, packed) @ Bp (kc x NR, packed)
void tile_packed(int64_t kc, const float* __restrict__ Ap, const float* __restrict__ Bp,
                 float* C, int64_t ldc, int m, int n, const TileEpilogue& ep) {
    float acc[MR][NR] = {};
    for (int64_t k = 0; k < kc; k++) {
        const float* a = Ap + k * MR;
        const float* b = Bp + k * NR;
        for (int i = 0; i < MR; i++)
            for (int j = 0; j < NR; j++) acc[i][j] += a[i] * b[j];
    }
    store_tile<MR, NR>(acc, C, ldc, m, n, ep);
}

// The unpacked tile for few rows: A(i, k) = A[i * rsa + k * csa], B(k, j) = B[k * ldb + j].
template <int R>
void tile_unpacked(int64_t kc, const float* __restrict__ A, int64_t rsa, int64_t csa,
                   const float* __restrict__ B, int64_t ldb, float* C, int64_t ldc, int n,
                   const TileEpilogue& ep) {
    float acc[R][SMALL_NR] = {};
    if (n == SMALL_NR) {  // full width: fixed trip counts the compiler vectorizes
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < R; i++) {
                const float a = A[i * rsa + k * csa];
                for (int j = 0; j < SMALL_NR; j++) acc[i][j] += a * B[k * ldb + j];
            }
    } else {
        for (int64_t k = 0; k < kc; k++)
            for (int i = 0; i < R; i++) {
                const float a = A[i * rsa + k * csa];
                for (int j = 0; j < n; j++) acc[i][j] += a * B[k * ldb + j];
            }
    }
    store_tile<R, SMALL_NR>(acc, C, ldc, R, n, ep);
}

void small_tile(int64_t kc, const float* A, int64_t rsa, int64_t csa, const float* B,
                int64_t ldb, float* C, int64_t ldc, int m, int64_t n, const TileEpilogue& ep) {
    for (int64_t j = 0; j < n; j += SMALL_NR) {
        const int w = (int)(n - j < SMALL_NR ? n - j : SMALL_NR);
        if (m == 1)
            tile_unpacked<1>(kc, A, rsa, csa, B + j, ldb, C + j, ldc, w, shifted(ep, j));
        else
            tile_unpacked<2>(kc, A, rsa, csa, B + j, ldb, C + j, ldc, w, shifted(ep, j));
    }
}

// Dot-product tile, C = A @ Bt^T for m rows of A and n <= DOT_N rows of Bt.
void dot_tile(int64_t K, const float* A, int64_t lda, const float* Bt, int64_t ldb, float* C,
              int64_t ldc, int m, int n, const TileEpilogue& ep) {
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) {
            const float* __restrict__ a = A + i * lda;
            const float* __restrict__ b = Bt + j * ldb;
            float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
            for (int64_t k = 0; k < K; k++) sum += a[k] * b[k];
            epilogue_scalar(C + i * ldc + j, sum, i, j, ep);
        }
}

void pack_a(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc) {
    pack_panel<MR>(dst, src, rs, cs, rows, kc);
}

void pack_b(float* dst, const float* src, int64_t rs, int64_t cs, int rows, int64_t kc) {
    pack_panel<NR>(dst, src, rs, cs, rows, kc);
}

void pack_a_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows<MR>(dst, src, ld, rows, kc);
}

void pack_b_rows(float* dst, const float* src, int64_t ld, int64_t rows, int64_t kc) {
    pack_rows<NR>(dst, src, ld, rows, kc);
}

}  // namespace

const KernelSet& kernels_portable() {
    static const KernelSet ks = {
        "portable",     MR,       NR,                                  // packed tile
        pack_a,   pack_b,   pack_a_rows, pack_b_rows, tile_packed,  // packed path
        SMALL_M,  SMALL_NR, small_tile,                        // few rows, A @ B
        DOT_M,    DOT_N,    dot_tile,                            // few rows, A @ B^T
    };
    return ks;
}

}  // namespace gemm_detail
}  // namespace tinyroots
