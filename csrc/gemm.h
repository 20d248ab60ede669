// gemm.h -- float32 matrix multiply (GEMM) and the Linear / matmul kernels built on it.
//
// Row-major throughout. The core routine computes
//
//     C (M, N) = op(A) (M, K) @ op(B) (K, N)          then the fused epilogue, per element:
//     v = [C +] A@B [+ bias[j]] [+ residual[i, j]]     ([C +] only in accumulate mode)
//     pre[i, j] = v and C[i, j] = gelu(v)  when pre is given, else C[i, j] = v
//
// where op(A) = A, stored (M, K), or A^T, stored (K, M) (trans_a); likewise op(B) = B stored
// (K, N) or B^T stored (N, K) (trans_b). A Linear layer needs three of the four forms:
//     forward   out = x @ W + b       NN   x (N, C), W (C, OC): GPT-2's Conv1D stores W (in, out)
//     backward  dx  = dout @ W^T      NT   dout (N, OC), W (C, OC)
//               dW  = x^T @ dout      TN   x (N, C), dout (N, OC)
// The blocking scheme and micro-kernels are described at the top of gemm.cpp.
#pragma once

#include <cstdint>
#include <exception>

#include "common.h"

namespace tinyroots {

// Rows up to which a product takes a few-rows path (fp32 and bf16): there each row of C is
// summed in an order that does not depend on the other rows. Past it, the packed path sums each
// element in an order set by K alone, also the same for every row, but not the few-rows order.
// So a row gets the very same result alone or among others as long as both products take the
// same side of this line -- what batched decoding and packed prompts rely on (model.py).
constexpr int64_t GEMM_FEW_ROWS_MAX = 16;

// What happens to each element after the product, fused so C is written once.
struct GemmEpilogue {
    bool accumulate = false;          // C += A @ B (gradient accumulation); else C = A @ B
    const float* bias = nullptr;      // (N,) added to every row
    const float* residual = nullptr;  // (M, N), row stride ldc; may be C itself (in place)
    float* pre = nullptr;             // (M, N), row stride ldc: when set, pre = v, C = gelu(v)
};

// C = op(A) @ op(B) with the epilogue above; lda, ldb, ldc are the row strides of the arrays
// as stored. nthreads <= 0 means omp_get_max_threads(). Any M, N, K >= 0 is handled.
void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
          const GemmEpilogue& ep = GemmEpilogue(), int nthreads = 0);

// The same contract as a plain triple loop with a double accumulator: the readable definition,
// and the fallback for shapes the blocked path does not take (K == 0).
void gemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                    const GemmEpilogue& ep = GemmEpilogue());

// The instruction set gemm() runs with ("avx512", "avx2", "portable"), from simd_isa().
const char* gemm_isa();

// ---- Linear: x (N, C), w (C, OC), b (OC,) or nullptr, out (N, OC) ----------------------------

// out = x @ w + b
void linear_forward(float* out, const float* x, const float* w, const float* b, int64_t N,
                    int64_t C, int64_t OC);

// pre = x @ w + b, out = gelu(pre)  (GPT-2's tanh GELU; pre is kept for the backward)
void linear_gelu_forward(float* pre, float* out, const float* x, const float* w, const float* b,
                         int64_t N, int64_t C, int64_t OC);

// out = x @ w + b + residual  (the attention / MLP output projection plus the skip connection)
void linear_residual_forward(float* out, const float* x, const float* w, const float* b,
                             const float* residual, int64_t N, int64_t C, int64_t OC);

// forward was out = x @ w + b, so dx = dout @ w^T (skipped when dx is nullptr),
// dw = x^T @ dout, db = column sums of dout (skipped when db is nullptr). Overwrites dx, dw, db.
void linear_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                     const float* w, int64_t N, int64_t C, int64_t OC);

// ---- plain 2-D products with one operand transposed ------------------------------------------

// c (M, N) = a (M, K) @ b^T with b stored (N, K): the weight-tied LM head, logits = x @ wte^T
void matmul_nt(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K);

// c (M, N) = a^T @ b with a stored (K, M), b (K, N): a weight gradient, dw = x^T @ dout
void matmul_tn(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K);

// ---- batched matmul: BATCH independent products of contiguous row-major matrices ------------

// c[i] (M, N) = a[i] (M, K) @ b[i] (K, N), i < batch; a, b, c are (batch, ., .) contiguous.
void matmul_forward(float* c, const float* a, const float* b, int64_t batch, int64_t M,
                    int64_t N, int64_t K);

// forward was c = a @ b, so da = dc @ b^T and db = a^T @ dc (per batch entry).
void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     int64_t batch, int64_t M, int64_t N, int64_t K);

// How the batched matmuls (float32 here, bf16 in gemm_bf16.cpp) share out BATCH products of
// one shape, each of `work` = M * N * K multiply-adds: many small ones (attention heads) run one
// per thread, each single-threaded; a few large ones run one after another, each on all
// threads. product(i, threads) computes the i-th.
template <class Product>
void for_each_product(int64_t batch, double work, const Product& product) {
    const int nthreads = max_threads();
    const bool per_thread = nthreads > 1 && batch > 1 &&
                            (batch >= 2 * nthreads || work < 256.0 * 256.0 * 256.0);
    if (!per_thread) {
        for (int64_t i = 0; i < batch; i++) product(i, nthreads);
        return;
    }
    // subtle: an exception must not leave an OpenMP region (that would abort the process), so
    // the first one (bad_alloc of a packing buffer) is carried out and rethrown.
    std::exception_ptr error = nullptr;
#pragma omp parallel for schedule(dynamic)
    for (int64_t i = 0; i < batch; i++) {
        try {
            product(i, 1);
        } catch (...) {
#pragma omp critical(tinyroots_batched_product_error)
            if (!error) error = std::current_exception();
        }
    }
    if (error) std::rethrow_exception(error);
}

}  // namespace tinyroots
