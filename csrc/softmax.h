#pragma once
#include <cstdint>

namespace tinyroots {

// All four work on N rows of length C (the last axis of any (..., C) array, flattened).
// x (N, C) -> y (N, C)
void softmax_forward(float* y, const float* x, int64_t N, int64_t C);
// dout, y (N, C) -> dx (N, C)
void softmax_backward(float* dx, const float* dout, const float* y, int64_t N, int64_t C);
// x (N, C) -> y (N, C)
void log_softmax_forward(float* y, const float* x, int64_t N, int64_t C);
// dout, y (N, C) -> dx (N, C)
void log_softmax_backward(float* dx, const float* dout, const float* y, int64_t N, int64_t C);

// y = e^x elementwise with the kernels' own vectorized exp (vecmath.h: exp_approx), so that the
// tests can measure its error directly. Not a model kernel.
void exp_approx_array(float* y, const float* x, int64_t n);

}  // namespace tinyroots
