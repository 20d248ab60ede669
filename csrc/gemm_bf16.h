// gemm_bf16.h -- matrix multiply with bfloat16 inputs and float32 accumulation (mixed precision).
//
// bfloat16 ("brain float") is the top half of a float32: the same sign and 8-bit exponent, but
// 8 significant bits instead of 24. Rounding a float32 to bf16 (to nearest, ties to even) keeps
// the range and loses precision: relative error at most 2^-8 = 0.4%. The product of two bf16
// numbers has at most 16 significant bits, so it is exact in float32; only the sum over K rounds.
//
//     C (M, N) = round_bf16(op(A)) (M, K) @ round_bf16(op(B)) (K, N)    summed in float32
//
// then the same fused epilogue as the float32 GEMM (gemm.h: accumulate, bias, residual, GELU).
// Each operand is stored as float32 (rounded to bf16 while it is packed, so a float32 master
// weight never needs a bf16 copy) or already as bf16 (uint16 bit patterns: weights kept in bf16
// for decoding, activations saved in bf16 for the backward). C is float32.
//
// Three paths, chosen once at run time (bf16_isa()):
//   "amx"         Intel AMX tiles (Sapphire Rapids and later): TDPBF16PS multiplies a 16 x 32
//                 bf16 tile by a 32 x 16 one into a 16 x 16 float32 tile, 16K FLOPs per instruction.
//   "avx512bf16"  VDPBF16PS (Cooper Lake, Zen 4 and later): per float32 lane, c += a0*b0 + a1*b1
//                 over a pair of bf16 values, twice the float32 FMA rate.
//   "portable"    the same arithmetic in plain C++ (float32 multiply-adds of bf16 values).
// The paths sum in different orders (and the hardware ones flush float32 denormals in bf16 to
// zero), so they agree to float32 rounding of the sum, not bit for bit.
// TINYROOTS_ISA=avx512bf16 or TINYROOTS_ISA=portable caps the choice, as for the float32 kernels
// (TINYROOTS_ISA=avx512 / avx2 leave only the portable bf16 path).
#pragma once

#include <cstdint>

#include "gemm.h"

namespace tinyroots {

using bf16 = uint16_t;  // the bit pattern of a bfloat16 number

// "amx", "avx512bf16" or "portable": the path gemm_bf16 runs with, decided once. On Linux the
// AMX path asks the kernel for permission to use the tile registers (arch_prctl
// ARCH_REQ_XCOMP_PERM) the first time; if refused, it falls back to avx512bf16.
const char* bf16_isa();

// One operand: element (r, c) of the matrix as stored is data[r * ld + c], float32 or bf16.
struct Bf16Operand {
    const void* data = nullptr;
    bool is_bf16 = false;  // data is bf16 (uint16 bit patterns), else float32
    int64_t ld = 0;        // row stride in elements
};

// C = round_bf16(op(A)) @ round_bf16(op(B)) with the epilogue ep (gemm.h), op(X) = X or X^T as
// in gemm(). nthreads <= 0 means omp_get_max_threads(). Any M, N, K >= 0.
void gemm_bf16(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const Bf16Operand& A,
               const Bf16Operand& B, float* C, int64_t ldc,
               const GemmEpilogue& ep = GemmEpilogue(), int nthreads = 0);

// The same contract as a plain triple loop: the readable definition the tests compare with.
void gemm_bf16_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K,
                         const Bf16Operand& A, const Bf16Operand& B, float* C, int64_t ldc,
                         const GemmEpilogue& ep = GemmEpilogue());

// ---- Linear and the transposed products in bf16 (the float32 versions are in gemm.h) ---------
// x (N, C) and w (C, OC) are float32 or bf16 operands (each rounded to bf16 when packed); b, the
// residual, dout and every output are float32.

// out = x @ w + b  (b may be nullptr)
void linear_forward_bf16(float* out, const Bf16Operand& x, const Bf16Operand& w, const float* b,
                         int64_t N, int64_t C, int64_t OC);

// pre = x @ w + b, out = gelu(pre)
void linear_gelu_forward_bf16(float* pre, float* out, const Bf16Operand& x, const Bf16Operand& w,
                              const float* b, int64_t N, int64_t C, int64_t OC);

// out = x @ w + b + residual
void linear_residual_forward_bf16(float* out, const Bf16Operand& x, const Bf16Operand& w,
                                  const float* b, const float* residual, int64_t N, int64_t C,
                                  int64_t OC);

// forward was out = x @ w + b, so dx = dout @ w^T (skipped when dx is nullptr), dw = x^T @ dout,
// db = column sums of dout in float32 (skipped when db is nullptr).
void linear_backward_bf16(float* dx, float* dw, float* db, const float* dout,
                          const Bf16Operand& x, const Bf16Operand& w, int64_t N, int64_t C,
                          int64_t OC);

// c (M, N) = a (M, K) @ b^T, b stored (N, K): the tied LM head, logits = x @ wte^T
void matmul_nt_bf16(float* c, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N,
                    int64_t K);

// c (M, N) = a^T @ b, a stored (K, M), b (K, N): the LM head's weight gradient
void matmul_tn_bf16(float* c, const Bf16Operand& a, const Bf16Operand& b, int64_t M, int64_t N,
                    int64_t K);

// Batched products of float32 arrays with their operands rounded to bf16, the twins of
// matmul_forward / matmul_backward (gemm.h): c (batch, M, N) = a (batch, M, K) @ b (batch, K, N),
// and its backward da = dc @ b^T, db = a^T @ dc (attention composed from products, under
// autocast).
void matmul_forward_bf16(float* c, const float* a, const float* b, int64_t batch, int64_t M,
                         int64_t N, int64_t K);
void matmul_backward_bf16(float* da, float* db, const float* dc, const float* a, const float* b,
                          int64_t batch, int64_t M, int64_t N, int64_t K);

// float32 -> bf16, round to nearest even (NaN stays NaN), and back (exact). n elements.
void float_to_bf16(bf16* dst, const float* src, int64_t n);
void bf16_to_float(float* dst, const bf16* src, int64_t n);

}  // namespace tinyroots
