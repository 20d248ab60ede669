#pragma once
#include <cstdint>

namespace tinyroots {

// x (N, C) -> out (N, C); also writes mean (N,) and rstd (N,) for the backward pass.
// w, b are (C,); b may be null (a LayerNorm without bias).
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps);

// dx (N, C) is overwritten; dw, db (C,) are overwritten (db may be null).
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C);

}  // namespace tinyroots
