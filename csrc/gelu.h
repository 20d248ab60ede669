#pragma once
#include <cstdint>

namespace tinyroots {

// x (n,) -> out (n,): GPT-2's tanh-approximated GELU, elementwise over any shape.
void gelu_forward(float* out, const float* x, int64_t n);

// dout, x (n,) -> dx (n,).
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n);

}  // namespace tinyroots
