#pragma once
#include <cstdint>

namespace tinyroots {

// x (n,) -> out (n,): GPT-2's tanh-approximated GELU, elementwise over any shape.
void gelu_forward(float* out, const float* x, int64_t n);

// The same over a block of `rows` rows of `cols` floats, row stride ld in both, on the calling
// thread alone (the GEMM applies it to each block it has just computed, while in cache).
void gelu_forward_rows(float* out, const float* x, int64_t rows, int64_t cols, int64_t ld);

// dout, x (n,) -> dx (n,).
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n);

}  // namespace tinyroots
