// gemm_bf16_kernels.h -- the contract between the bf16 GEMM driver (gemm_bf16.cpp) and its
// micro-kernels (portable in gemm_bf16.cpp, AVX512-BF16 and AMX in gemm_bf16_x86.cpp).
//
// Packed layouts (bf16 elements; K is padded with zeros to kcp, a multiple of KB = 32):
//   B sliver, NR = 32 columns:  dst[(p * NR + j) * 2 + e] = B(k = 2p + e, j)     "pairs"
//       each k-pair p is one 128-byte row: 32 columns x (k even, k odd). This is the layout
//       both VDPBF16PS (a 512-bit load = 16 columns' pairs) and AMX (a B tile is 16 k-pair rows
//       of 16 columns' pairs, 64 bytes each, read here with a 128-byte row stride) consume.
//   A sliver, mr rows, for VDPBF16PS and portable: the same pairs layout with mr rows in place
//       of NR columns: one 32-bit broadcast gives a row's (k even, k odd) pair.
//   A sliver for AMX (mr = 32): 32 x 32 slices one after another, dst[(k/32)*1024 + r*32 + k%32]:
//       an A tile (16 rows x 32 k) is 1 KB in one piece.
#pragma once

#include <cstdint>
#include <cstring>

#include "gemm.h"
#include "gemm_bf16.h"

namespace tinyroots {
namespace bf16_detail {

constexpr int NR = 32;  // columns of every packed tile
constexpr int KB = 32;  // the packed K is a multiple of this: one AMX tile's depth

// float32 -> bf16, round to nearest, ties to even: add 0x7FFF plus the lowest kept bit, then
// drop the low 16 bits. subtle: a NaN whose payload sits in the low bits would round to inf,
// so NaNs are made quiet (a high payload bit set) instead.
inline bf16 round_bf16(float f) {
    uint32_t u;
    std::memcpy(&u, &f, 4);
    if ((u & 0x7FFFFFFFu) > 0x7F800000u) return (bf16)((u >> 16) | 0x40u);
    return (bf16)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
}

inline float bf16_value(bf16 h) {
    const uint32_t u = (uint32_t)h << 16;
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}

// A block to pack, seen as rows r and depth k: element (r, k) at data[r * rs + k * cs].
// For A, r is a row of op(A); for B, r is a column of op(B) (so the packing code is shared).
struct View {
    const void* data;
    bool is_bf16;
    int64_t rs, cs;

    float at(int64_t r, int64_t k) const {
        const int64_t i = r * rs + k * cs;
        return is_bf16 ? bf16_value(static_cast<const bf16*>(data)[i])
                       : static_cast<const float*>(data)[i];
    }
    // the view starting at element (r, k)
    View shifted(int64_t r, int64_t k) const {
        const int64_t i = r * rs + k * cs;
        const void* p = is_bf16 ? (const void*)(static_cast<const bf16*>(data) + i)
                                : (const void*)(static_cast<const float*>(data) + i);
        return {p, is_bf16, rs, cs};
    }
};

struct KernelSet {
    const char* isa;
    int mr;  // rows of the micro tile (it has NR columns)

    // Pack rows 0..rows-1 (<= mr; zero rows up to mr) and k 0..kc-1 (zeros up to kcp) of A.
    void (*pack_a)(bf16* dst, const View& A, int rows, int64_t kc, int64_t kcp);
    // Pack columns 0..cols-1 (<= NR; zeros up to NR) and k 0..kc-1 (zeros up to kcp) of B.
    void (*pack_b)(bf16* dst, const View& B, int cols, int64_t kc, int64_t kcp);
    // Called by a thread before it runs tiles (AMX loads its tile configuration), and after.
    void (*begin)();
    void (*end)();
    // C[0:m, 0:n] = (load_c ? C : 0) + Ap @ Bp over kcp; m <= mr, n <= NR.
    void (*tile)(int64_t kcp, const bf16* Ap, const bf16* Bp, float* C, int64_t ldc, int m,
                 int n, bool load_c);

    // The few-rows kernels for a bf16 B read where it lies, unpacked (decoding with bf16
    // weights: each weight is read once, so its 2 bytes are the cost). A is float32 holding
    // values already rounded to bf16, m <= SMALL_M rows, row stride lda.
    // C[0:m, 0:n] = A[0:m, 0:kc] @ B[0:kc, 0:n], B (kc rows, row stride ldb); C overwritten.
    void (*small_nn)(int m, int64_t n, int64_t kc, const float* A, int64_t lda, const bf16* B,
                     int64_t ldb, float* C, int64_t ldc);
    // C[i, j] (+)= sum_k A[i, k] Bt[j, k], i < m, j < n: B^T stored (n, K) (the tied LM head).
    void (*small_nt)(int m, int64_t n, int64_t K, const float* A, int64_t lda, const bf16* Bt,
                     int64_t ldb, float* C, int64_t ldc, bool load_c);
};

// Rows of A up to which a bf16 B is read in place (SMALL_M_MAX), SMALL_M rows per kernel call.
// Each row's sums do not depend on the other rows, so a batch of up to 16 rows decoded together
// gets what each row gets alone (GEMM_FEW_ROWS_MAX, gemm.h).
constexpr int SMALL_M = 8;
constexpr int SMALL_M_MAX = (int)GEMM_FEW_ROWS_MAX;

const KernelSet& kernels_portable();
// The set bf16_isa() chose: what gemm_bf16 and the bf16 attention (attention_bf16.cpp) run on.
const KernelSet& selected_kernels();
#if defined(__x86_64__)
const KernelSet& kernels_avx512bf16();
const KernelSet& kernels_amx();
bool amx_permitted();  // asks the OS for the tile data permission (Linux), once
bool cpu_has_avx512bf16();
bool cpu_has_amx();
#endif

// The pairs layout (see the top), shared by every path's B and by the portable A:
// dst32[p * R + r] = bf16(v(r, 2p)) | bf16(v(r, 2p + 1)) << 16.
template <int R>
void pack_pairs(bf16* dst, const View& v, int rows, int64_t kc, int64_t kcp) {
    uint32_t* d = reinterpret_cast<uint32_t*>(dst);
    auto word = [&](int64_t r, int64_t k) -> uint32_t {
        const uint32_t lo = k < kc ? round_bf16(v.at(r, k)) : 0u;
        const uint32_t hi = k + 1 < kc ? round_bf16(v.at(r, k + 1)) : 0u;
        return lo | hi << 16;
    };
    for (int64_t p = 0; p < kcp / 2; p++) {
        for (int r = 0; r < rows; r++) d[p * R + r] = word(r, 2 * p);
        for (int r = rows; r < R; r++) d[p * R + r] = 0u;
    }
}

}  // namespace bf16_detail
}  // namespace tinyroots
