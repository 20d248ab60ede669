// softmax.cpp -- softmax and log-softmax over the last axis, forward and backward.
//
// Each row of C floats is handled by one thread, start to finish, while it sits in L1/L2:
//     softmax:      m = max(x);  e = exp(x - m) written to y with its sum;  y *= 1 / sum
//                   (rows longer than 512: the one-sweep chunked form, see vecmath.h)
//     log-softmax:  lse = logsumexp(x) (vecmath.h: one sweep, chunk by chunk);  y = x - lse
// subtract the row max first: exp overflows near 88 in float32, and x - m <= 0 keeps every
// term in (0, 1].
#include "softmax.h"

#include <cmath>
#include <vector>

#include "vecmath.h"

namespace tinyroots {

// x (N, C) -> y (N, C): N rows of the last axis.
void softmax_forward(float* y, const float* x, int64_t N, int64_t C) {
    parallel_blocks(N, C, [&](int64_t begin, int64_t end) {
        std::vector<float> chunk_max(rowops::n_chunks(C));
        for (int64_t n = begin; n < end; n++) {
            const float* __restrict__ xr = x + n * C;
            float* __restrict__ yr = y + n * C;
            if (C <= rowops::kChunk) {  // a short row (attention scores): three sweeps in L1
                const float m = rowops::max(xr, C);
                const float inv = 1.0f / rowops::exp_store(yr, xr, C, m);
#pragma omp simd
                for (int64_t i = 0; i < C; i++) yr[i] *= inv;
            } else {  // a long row (a vocabulary): one sweep from memory, one rescale from L2
                float s;
                const float m = rowops::exp_store_chunked(yr, xr, C, chunk_max.data(), &s);
                rowops::rescale_chunks(yr, C, chunk_max.data(), m, 1.0f / s);
            }
        }
    });
}

// dout, y (N, C) -> dx (N, C). forward was y = softmax(x), so dx = y * (dout - sum(dout * y)).
void softmax_backward(float* dx, const float* dout, const float* y, int64_t N, int64_t C) {
    parallel_blocks(N, C, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++) {
            const float* __restrict__ gr = dout + n * C;
            const float* __restrict__ yr = y + n * C;
            float* __restrict__ dr = dx + n * C;
            const float s = rowops::dot(gr, yr, C);
#pragma omp simd
            for (int64_t i = 0; i < C; i++) dr[i] = yr[i] * (gr[i] - s);
        }
    });
}

// x (N, C) -> y (N, C).
void log_softmax_forward(float* y, const float* x, int64_t N, int64_t C) {
    parallel_blocks(N, C, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++) {
            const float* __restrict__ xr = x + n * C;
            float* __restrict__ yr = y + n * C;
            const float lse = rowops::logsumexp(xr, C);
#pragma omp simd
            for (int64_t i = 0; i < C; i++) yr[i] = xr[i] - lse;
        }
    });
}

// dout, y (N, C) -> dx (N, C). forward was y = x - lse(x), so dx = dout - exp(y) * sum(dout).
void log_softmax_backward(float* dx, const float* dout, const float* y, int64_t N, int64_t C) {
    parallel_blocks(N, C, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++) {
            const float* __restrict__ gr = dout + n * C;
            const float* __restrict__ yr = y + n * C;
            float* __restrict__ dr = dx + n * C;
            const float s = rowops::sum(gr, C);
#pragma omp simd
            for (int64_t i = 0; i < C; i++) dr[i] = gr[i] - exp_approx(yr[i]) * s;
        }
    });
}

void exp_approx_array(float* y, const float* x, int64_t n) {
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        const float* __restrict__ xp = x;
        float* __restrict__ yp = y;
#pragma omp simd
        for (int64_t i = begin; i < end; i++) yp[i] = exp_approx(xp[i]);
    });
}

}  // namespace tinyroots
