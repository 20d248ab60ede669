// gelu.cpp -- GPT-2's GELU ("gelu_new"), elementwise:
//     out = 0.5 x (1 + tanh(u)),   u = sqrt(2/pi) (x + 0.044715 x^3)
//
// We never call tanh. The identity 0.5 (1 + tanh(u)) = sigmoid(2u) = 1 / (1 + e^-2u) turns the
// whole activation into one exp and one division, both of which vectorize (vecmath.h):
//     out = x * sigmoid(2u)
// It is also more accurate than the tanh form in float32 for x < -3, where 1 + tanh(u) cancels
// to a handful of bits. Error vs float64: about 3e-7 relative (see tests/test_kernels.py).
#include "gelu.h"

#include "vecmath.h"

namespace tinyroots {

namespace {

constexpr float kGeluScale = 0.7978845608028654f;  // sqrt(2 / pi)
constexpr float kGeluCubic = 0.044715f;

// out[0:n] = gelu(x[0:n])
inline void gelu_span(float* __restrict__ out, const float* __restrict__ x, int64_t n) {
#pragma omp simd
    for (int64_t i = 0; i < n; i++) {
        const float xi = x[i];
        const float u = kGeluScale * (xi + kGeluCubic * xi * xi * xi);
        out[i] = xi * sigmoid_approx(2.0f * u);
    }
}

}  // namespace

// x (n,) -> out (n,), any shape flattened.
void gelu_forward(float* out, const float* x, int64_t n) {
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        gelu_span(out + begin, x + begin, end - begin);
    });
}

void gelu_forward_rows(float* out, const float* x, int64_t rows, int64_t cols, int64_t ld) {
    with_isa([&] {
        for (int64_t r = 0; r < rows; r++) gelu_span(out + r * ld, x + r * ld, cols);
    });
}

// dout, x (n,) -> dx (n,). forward was out = x * sg with sg = sigmoid(2u) = 0.5 (1 + tanh u), so
//     dout/dx = sg + x * d(sg)/dx = sg + x * 2 sg (1 - sg) * du/dx
//     du/dx   = sqrt(2/pi) (1 + 3 * 0.044715 x^2)
// (the same as ref's 0.5 (1 + t) + 0.5 x (1 - t^2) du, since 1 - t^2 = 4 sg (1 - sg)).
void gelu_backward(float* dx, const float* dout, const float* x, int64_t n) {
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        const float* __restrict__ xp = x;
        const float* __restrict__ gp = dout;
        float* __restrict__ dp = dx;
#pragma omp simd
        for (int64_t i = begin; i < end; i++) {
            const float xi = xp[i];
            const float u = kGeluScale * (xi + kGeluCubic * xi * xi * xi);
            const float du = kGeluScale * (1.0f + 3.0f * kGeluCubic * xi * xi);
            const float sg = sigmoid_approx(2.0f * u);
            dp[i] = gp[i] * sg * (1.0f + 2.0f * xi * (1.0f - sg) * du);
        }
    });
}

}  // namespace tinyroots
