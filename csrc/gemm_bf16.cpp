// gemm_bf16.cpp -- the bf16 GEMM driver, its portable micro-kernel, and the Linear kernels on it.
//
// The same blocking as the float32 GEMM (gemm.cpp, BLIS style), with the packing doing one more
// job: it rounds float32 operands to bf16 as it lays them out, so a float32 master weight is
// read once per block and never copied to bf16 separately. A task (rows r0:r1, columns c0:c1
// of C) runs
//
//   for pc in 0..K step KC:
//     pack op(B)[pc:pc+KC, c0:c1] as bf16 pairs (gemm_bf16_kernels.h)      KC x cols
//     for ic in r0..r1 step MC:
//       pack op(A)[ic:ic+MC, pc:pc+KC] as the kernel set wants it          MC x KC
//       for jr in c0..c1 step NR:  for ir in ic..ic+MC step MR:
//         micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A sliver @ B sliver over KC, in float32
//       after the last K slice: bias, residual, GELU on the finished MC rows (still in L2)
//
// bf16 halves the bytes of a packed block, so the K slice is twice the float32 one for the
// same cache footprint: KC = 512 bf16 is a 32 KB B sliver (32 columns), as in gemm.cpp.
// Every element of C is summed over K in the same order whatever the thread count.
#include "gemm_bf16.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

#include "common.h"
#include "gelu.h"
#include "gemm_bf16_kernels.h"

namespace tinyroots {

namespace bd = bf16_detail;

namespace {

constexpr int64_t KC = 512;        // K slice (bf16 elements), a multiple of bd::KB
constexpr int64_t MC = 128;        // rows of an A block, rounded down to a multiple of MR
constexpr int64_t NC_MAX = 1024;   // columns of a task's B block: 512 x 1024 bf16 = 1 MB (L2)
constexpr int64_t TASKS_PER_THREAD = 2;

// A growable 64-byte aligned buffer per thread, kept between calls.
struct Scratch {
    bf16* data = nullptr;
    size_t size = 0;
    ~Scratch() { std::free(data); }
    bf16* get(size_t n) {
        if (n > size) {
            std::free(data);
            size = (n + 31) / 32 * 32;  // aligned_alloc wants a multiple of the alignment
            data = static_cast<bf16*>(std::aligned_alloc(64, size * sizeof(bf16)));
            if (!data) {
                size = 0;
                throw std::bad_alloc();
            }
        }
        return data;
    }
};

bf16* scratch(size_t n) {
    static thread_local Scratch buffer;
    return buffer.get(n);
}

// ---- the portable path: pairs layout for A (MR rows) and B, plain float32 arithmetic --------

constexpr int PORTABLE_MR = 4;

void portable_pack_a(bf16* dst, const bd::View& A, int rows, int64_t kc, int64_t kcp) {
    bd::pack_pairs<PORTABLE_MR>(dst, A, rows, kc, kcp);
}

void portable_pack_b(bf16* dst, const bd::View& B, int cols, int64_t kc, int64_t kcp) {
    bd::pack_pairs<bd::NR>(dst, B, cols, kc, kcp);
}

void portable_nothing() {}

// C[0:m, 0:n] (+)= Ap @ Bp: for each k-pair, acc[i][j] += a(i, 2p) b(2p, j) + a(i, 2p+1) b(2p+1, j),
// the sum VDPBF16PS forms (the products are exact in float32; the two adds round).
void portable_tile(int64_t kcp, const bf16* Ap, const bf16* Bp, float* C, int64_t ldc, int m,
                   int n, bool load_c) {
    constexpr int R = PORTABLE_MR, NR = bd::NR;
    float acc[R][NR] = {};
    for (int64_t p = 0; p < kcp / 2; p++) {
        const bf16* a = Ap + p * R * 2;
        const bf16* b = Bp + p * NR * 2;
        float b0[NR], b1[NR];
        for (int j = 0; j < NR; j++) {
            b0[j] = bd::bf16_value(b[2 * j]);
            b1[j] = bd::bf16_value(b[2 * j + 1]);
        }
        for (int i = 0; i < R; i++) {
            const float a0 = bd::bf16_value(a[2 * i]), a1 = bd::bf16_value(a[2 * i + 1]);
            for (int j = 0; j < NR; j++) acc[i][j] = acc[i][j] + a0 * b0[j] + a1 * b1[j];
        }
    }
    for (int i = 0; i < m; i++)
        for (int j = 0; j < n; j++) C[i * ldc + j] = (load_c ? C[i * ldc + j] : 0.0f) + acc[i][j];
}

void portable_small_nn(int m, int64_t n, int64_t kc, const float* A, int64_t lda,
                       const bf16* B, int64_t ldb, float* C, int64_t ldc) {
    for (int i = 0; i < m; i++) std::fill(C + i * ldc, C + i * ldc + n, 0.0f);
    for (int64_t k = 0; k < kc; k++)
        for (int i = 0; i < m; i++) {
            const float a = A[i * lda + k];
            for (int64_t j = 0; j < n; j++) C[i * ldc + j] += a * bd::bf16_value(B[k * ldb + j]);
        }
}

void portable_small_nt(int m, int64_t n, int64_t K, const float* A, int64_t lda, const bf16* Bt,
                       int64_t ldb, float* C, int64_t ldc, bool load_c) {
    for (int i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float sum = 0.0f;
            for (int64_t k = 0; k < K; k++) sum += A[i * lda + k] * bd::bf16_value(Bt[j * ldb + k]);
            C[i * ldc + j] = (load_c ? C[i * ldc + j] : 0.0f) + sum;
        }
}

// How a product is cut into tasks: the split with the least packing (A is packed once per
// column block, B once per row block) that still gives each thread TASKS_PER_THREAD tasks.
struct TaskGrid {
    int64_t n_col, n_row, cols, rows;
};

TaskGrid task_grid(int64_t M, int64_t N, int64_t K, int64_t mr, int nthreads) {
    const int64_t want = nthreads == 1 ? 1 : TASKS_PER_THREAD * nthreads;
    const int64_t max_col = ceil_div(N, bd::NR), max_row = ceil_div(M, mr);
    TaskGrid best = {0, 0, 0, 0};
    double best_cost = 0.0;
    for (int64_t n_col = std::min(ceil_div(N, NC_MAX), max_col); n_col <= max_col; n_col++) {
        const int64_t n_row = std::min(max_row, ceil_div(want, n_col));
        const double cost = (double)n_col * M * K + (double)n_row * K * N;
        if (best.n_col == 0 || cost < best_cost) {
            best = {n_col, n_row, 0, 0};
            best_cost = cost;
        }
        if (n_row == 1) break;
    }
    while ((best.n_col * best.n_row) % nthreads != 0 && best.n_col < max_col) best.n_col++;
    best.cols = round_up(ceil_div(N, best.n_col), bd::NR);
    best.rows = round_up(ceil_div(M, best.n_row), mr);
    best.n_col = ceil_div(N, best.cols);
    best.n_row = ceil_div(M, best.rows);
    return best;
}

// After the last K slice: C[rows, cols] = C + bias + residual, then pre = v, C = gelu(v).
void finish_block(float* C, int64_t ldc, int64_t rows, int64_t cols, const GemmEpilogue& ep) {
    if (!ep.bias && !ep.residual && !ep.pre) return;
    for (int64_t i = 0; i < rows; i++) {
        float* c = C + i * ldc;
        const float* res = ep.residual ? ep.residual + i * ldc : nullptr;
        if (ep.bias)
            for (int64_t j = 0; j < cols; j++) c[j] += ep.bias[j];
        if (res)
            for (int64_t j = 0; j < cols; j++) c[j] += res[j];
    }
    if (ep.pre) {
        for (int64_t i = 0; i < rows; i++)
            std::memcpy(ep.pre + i * ldc, C + i * ldc, (size_t)cols * sizeof(float));
        gelu_forward_rows(C, ep.pre, rows, cols, ldc);
    }
}

// The epilogue ep moved to the block whose top-left element of C is (i, j).
GemmEpilogue shifted(const GemmEpilogue& ep, int64_t i, int64_t j, int64_t ldc) {
    GemmEpilogue e = ep;
    if (e.bias) e.bias += j;
    if (e.residual) e.residual += i * ldc + j;
    if (e.pre) e.pre += i * ldc + j;
    return e;
}

void run_task(const bd::KernelSet& ks, const bd::View& a, const bd::View& b, int64_t r0,
              int64_t r1, int64_t c0, int64_t c1, int64_t K, float* C, int64_t ldc,
              const GemmEpilogue& ep, bf16* Bp, bf16* Ap, int64_t kc_max) {
    const int64_t mr = ks.mr, mc = std::max(mr, MC / mr * mr);
    for (int64_t pc = 0; pc < K; pc += kc_max) {
        const int64_t kc = std::min(kc_max, K - pc);
        const int64_t kcp = round_up(kc, bd::KB);
        for (int64_t j = c0; j < c1; j += bd::NR)
            ks.pack_b(Bp + (j - c0) * kcp, b.shifted(j, pc), (int)std::min<int64_t>(bd::NR, c1 - j),
                      kc, kcp);
        const bool load_c = ep.accumulate || pc > 0;
        for (int64_t ic = r0; ic < r1; ic += mc) {
            const int64_t ic1 = std::min(r1, ic + mc);
            for (int64_t i = ic; i < ic1; i += mr)
                ks.pack_a(Ap + (i - ic) * kcp, a.shifted(i, pc), (int)std::min(mr, ic1 - i), kc,
                          kcp);
            for (int64_t jr = c0; jr < c1; jr += bd::NR) {
                const int n = (int)std::min<int64_t>(bd::NR, c1 - jr);
                for (int64_t ir = ic; ir < ic1; ir += mr)
                    ks.tile(kcp, Ap + (ir - ic) * kcp, Bp + (jr - c0) * kcp, C + ir * ldc + jr,
                            ldc, (int)std::min(mr, ic1 - ir), n, load_c);
            }
            if (pc + kc == K)
                finish_block(C + ic * ldc + c0, ldc, ic1 - ic, c1 - c0,
                             shifted(ep, ic, c0, ldc));
        }
    }
}

// The few-rows path (M <= SMALL_M_MAX, B in bf16, A float32 and not transposed): B is read
// where it lies, once for every SMALL_M rows. A's rows are rounded to bf16 first, so the result
// is the packed path's, summed in another order. x @ W: the threads take contiguous groups of
// W's rows (each one sequential stream) into partial sums, which the same threads then add, in
// group order, column block by column block, with the epilogue; x @ Wt^T: the threads take rows
// of Wt. A decoding step calls this for every weight matrix, so its buffers are kept between
// calls and nothing is done outside the one parallel region but rounding A's few rows.
constexpr int64_t SMALL_GROUP_ROWS = 128;  // at least this many rows of B per group
constexpr int64_t SMALL_SUM_COLS = 256;    // columns per task when the partial sums are added

float* small_buffer(int slot, size_t n) {
    thread_local std::vector<float> buffers[2];
    std::vector<float>& b = buffers[slot];
    if (b.size() < n) b.resize(n);
    return b.data();
}

void gemm_small(const bd::KernelSet& ks, bool trans_b, int64_t M, int64_t N, int64_t K,
                const Bf16Operand& A, const Bf16Operand& B, float* C, int64_t ldc,
                const GemmEpilogue& ep, int nthreads) {
    float* const a = small_buffer(0, (size_t)(M * K));  // A rounded to bf16 values
    for (int64_t i = 0; i < M; i++)
        for (int64_t k = 0; k < K; k++)
            a[i * K + k] = bd::bf16_value(
                bd::round_bf16(static_cast<const float*>(A.data)[i * A.ld + k]));
    const bf16* b = static_cast<const bf16*>(B.data);
    if (trans_b) {
        const int64_t width = 64;
        const int64_t blocks = ceil_div(N, width);
#pragma omp parallel for schedule(static) num_threads(nthreads) if (nthreads > 1 && blocks > 1)
        for (int64_t t = 0; t < blocks; t++) {
            const int64_t j = t * width;
            ks.small_nt((int)M, std::min(width, N - j), K, a, K, b + j * B.ld, B.ld, C + j, ldc,
                        ep.accumulate);
        }
        finish_block(C, ldc, M, N, ep);
        return;
    }
    // the number of groups depends on K only, so sums do not depend on the thread count
    const int64_t groups = std::max<int64_t>(1, std::min<int64_t>(8, K / SMALL_GROUP_ROWS));
    float* const parts = small_buffer(1, (size_t)(groups * M * N));  // each written whole
    const int64_t col_blocks = ceil_div(N, SMALL_SUM_COLS);
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && groups > 1)
    {
#pragma omp for schedule(static)
        for (int64_t g = 0; g < groups; g++) {
            const int64_t r0 = K * g / groups, r1 = K * (g + 1) / groups;
            // SMALL_M rows at a time: the kernel keeps their values in registers
            for (int64_t i = 0; i < M; i += bd::SMALL_M)
                ks.small_nn((int)std::min<int64_t>(bd::SMALL_M, M - i), N, r1 - r0, a + i * K + r0,
                            K, b + r0 * B.ld, B.ld, parts + (g * M + i) * N, N);
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < col_blocks; t++) {
            const int64_t j0 = t * SMALL_SUM_COLS, j1 = std::min(N, j0 + SMALL_SUM_COLS);
            for (int64_t i = 0; i < M; i++) {
                float* c = C + i * ldc;
                for (int64_t j = j0; j < j1; j++) {
                    float sum = parts[i * N + j];
                    for (int64_t g = 1; g < groups; g++) sum += parts[(g * M + i) * N + j];
                    c[j] = (ep.accumulate ? c[j] : 0.0f) + sum;
                }
            }
            finish_block(C + j0, ldc, M, j1 - j0, shifted(ep, 0, j0, ldc));
        }
    }
}

}  // namespace

namespace bf16_detail {
const KernelSet& kernels_portable() {
    static const KernelSet ks = {"portable", PORTABLE_MR, portable_pack_a, portable_pack_b,
                                 portable_nothing, portable_nothing, portable_tile,
                                 portable_small_nn, portable_small_nt};
    return ks;
}

const KernelSet& selected_kernels() {
#if defined(__x86_64__)
    const char* isa = bf16_isa();
    if (std::strcmp(isa, "amx") == 0) return kernels_amx();
    if (std::strcmp(isa, "avx512bf16") == 0) return kernels_avx512bf16();
#endif
    return kernels_portable();
}
}  // namespace bf16_detail

const char* bf16_isa() {
    static const char* isa = [] {
#if defined(__x86_64__)
        const char* cap = std::getenv("TINYROOTS_ISA");  // lets tests force a narrower path
        const bool allow_amx = !cap || std::strcmp(cap, "amx") == 0;
        const bool allow_bf16 = allow_amx || std::strcmp(cap, "avx512bf16") == 0;
        if (allow_amx && bd::cpu_has_amx() && bd::amx_permitted()) return "amx";
        if (allow_bf16 && bd::cpu_has_avx512bf16()) return "avx512bf16";
#endif
        return "portable";
    }();
    return isa;
}

void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Bf16Operand& A,
               const Bf16Operand& B, float* C, int64_t ldc, const GemmEpilogue& ep,
               int nthreads) {
    if (M <= 0 || N <= 0) return;
    if (K <= 0) {  // an empty sum: C = [C] + 0, then the epilogue
        if (!ep.accumulate)
            for (int64_t i = 0; i < M; i++) std::fill(C + i * ldc, C + i * ldc + N, 0.0f);
        finish_block(C, ldc, M, N, ep);
        return;
    }
    const bd::KernelSet& ks = bd::selected_kernels();
    if (nthreads <= 0) nthreads = max_threads();
    if (M <= bd::SMALL_M_MAX && B.is_bf16 && !A.is_bf16 && !trans_a) {
        gemm_small(ks, trans_b, M, N, K, A, B, C, ldc, ep, nthreads);
        return;
    }
    if ((double)M * N * K < 64.0 * 64.0 * 64.0) nthreads = 1;
    // op(A)(i, k) and op(B)(k, j) as views (row, depth): B's "rows" are its columns j
    const bd::View a = {A.data, A.is_bf16, trans_a ? 1 : A.ld, trans_a ? A.ld : 1};
    const bd::View b = {B.data, B.is_bf16, trans_b ? B.ld : 1, trans_b ? 1 : B.ld};
    const int64_t kc_max = std::min(round_up(K, bd::KB), KC);
    const int64_t mc = std::max<int64_t>(ks.mr, MC / ks.mr * ks.mr);
    const TaskGrid grid = task_grid(M, N, K, ks.mr, nthreads);
    const int64_t per_thread = kc_max * (round_up(grid.cols, bd::NR) + mc);
    bf16* const buffers = scratch((size_t)(nthreads * per_thread));
#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        bf16* const Bp = buffers + thread_id() * per_thread;
        bf16* const Ap = Bp + kc_max * round_up(grid.cols, bd::NR);
        ks.begin();
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < grid.n_col * grid.n_row; t++) {
            const int64_t c0 = (t % grid.n_col) * grid.cols, c1 = std::min(N, c0 + grid.cols);
            const int64_t r0 = (t / grid.n_col) * grid.rows, r1 = std::min(M, r0 + grid.rows);
            run_task(ks, a, b, r0, r1, c0, c1, K, C, ldc, ep, Bp, Ap, kc_max);
        }
        ks.end();
    }
}

void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                         const Bf16Operand& A, const Bf16Operand& B, float* C, int64_t ldc,
                         const GemmEpilogue& ep) {
    const bd::View a = {A.data, A.is_bf16, trans_a ? 1 : A.ld, trans_a ? A.ld : 1};
    const bd::View b = {B.data, B.is_bf16, trans_b ? B.ld : 1, trans_b ? 1 : B.ld};
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double sum = 0.0;
            for (int64_t k = 0; k < K; k++)
                sum += (double)bd::bf16_value(bd::round_bf16(a.at(i, k))) *
                       (double)bd::bf16_value(bd::round_bf16(b.at(j, k)));
            C[i * ldc + j] = (ep.accumulate ? C[i * ldc + j] : 0.0f) + (float)sum;
        }
    finish_block(C, ldc, M, N, ep);
}

// ---- Linear ----------------------------------------------------------------------------------

void linear_forward_bf16(float* out, const Bf16Operand& x, const Bf16Operand& w, const float* b,
                         int64_t N, int64_t C, int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    gemm_bf16(false, false, N, OC, C, x, w, out, OC, ep);
}

void linear_gelu_forward_bf16(float* pre, float* out, const Bf16Operand& x, const Bf16Operand& w,
                              const float* b, int64_t N, int64_t C, int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    ep.pre = pre;
    gemm_bf16(false, false, N, OC, C, x, w, out, OC, ep);
}

void linear_residual_forward_bf16(float* out, const Bf16Operand& x, const Bf16Operand& w,
                                  const float* b, const float* residual, int64_t N, int64_t C,
                                  int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    ep.residual = residual;
    gemm_bf16(false, false, N, OC, C, x, w, out, OC, ep);
}

void linear_backward_bf16(float* dx, float* dw, float* db, const float* dout,
                          const Bf16Operand& x, const Bf16Operand& w, int64_t N, int64_t C,
                          int64_t OC) {
    // forward was out = x @ w + b, so dx = dout @ w^T (NT) and dw = x^T @ dout (TN)
    const Bf16Operand g = {dout, false, OC};
    if (dx) gemm_bf16(false, true, N, C, OC, g, w, dx, C);
    gemm_bf16(true, false, C, OC, N, x, g, dw, OC);
    if (db) {  // db = sum_n dout, in float32: a bias gradient is not worth rounding
        const std::vector<float> ones((size_t)N, 1.0f);
        gemm(false, false, 1, OC, N, ones.data(), N, dout, OC, db, OC);
    }
}

void matmul_nt_bf16(float* c, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N,
                    int64_t K) {
    gemm_bf16(false, true, M, N, K, a, b, c, N);
}

void matmul_tn_bf16(float* c, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N,
                    int64_t K) {
    gemm_bf16(true, false, M, N, K, a, b, c, N);
}

// ---- batched products (ops.matmul under autocast) ---------------------------------------------

// BATCH products of the same shape, contiguous batch strides, shared out by for_each_product
// (gemm.h) as the float32 ones are
static void gemm_bf16_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N,
                              int64_t K, const float* A, int64_t lda, const float* B,
                              int64_t ldb, float* C, int64_t ldc) {
    const int64_t sa = M * K, sb = K * N, sc = M * N;
    for_each_product(batch, (double)M * N * K, [&](int64_t i, int threads) {
        gemm_bf16(trans_a, trans_b, M, N, K, Bf16Operand{A + i * sa, false, lda},
                  Bf16Operand{B + i * sb, false, ldb}, C + i * sc, ldc, GemmEpilogue(), threads);
    });
}

void matmul_forward_bf16(float* c, const float* a, const float* b, int64_t batch, int64_t M,
                         int64_t N, int64_t K) {
    gemm_bf16_batched(false, false, batch, M, N, K, a, K, b, N, c, N);
}

void matmul_backward_bf16(float* da, float* db, const float* dc, const float* a, const float* b,
                          int64_t batch, int64_t M, int64_t N, int64_t K) {
    // as matmul_backward: da (M, K) = dc @ b^T, db (K, N) = a^T @ dc, operands rounded to bf16
    gemm_bf16_batched(false, true, batch, M, K, N, dc, N, b, N, da, K);
    gemm_bf16_batched(true, false, batch, K, N, M, a, K, dc, N, db, N);
}

// ---- conversions -------------------------------------------------------------------------------

void float_to_bf16(bf16* dst, const float* src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
    for (int64_t i = 0; i < n; i++) dst[i] = bd::round_bf16(src[i]);
}

void bf16_to_float(float* dst, const bf16* src, int64_t n) {
#pragma omp parallel for schedule(static) if (n > (1 << 18))
    for (int64_t i = 0; i < n; i++) dst[i] = bd::bf16_value(src[i]);
}

}  // namespace tinyroots
