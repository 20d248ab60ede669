// layernorm.cpp -- LayerNorm forward and backward over the last axis.
//
// Forward, per row x of length C:
//     mean = sum(x) / C
//     var  = sum((x - mean)^2) / C          (biased, as PyTorch and GPT-2)
//     rstd = 1 / sqrt(var + eps)
//     xhat = (x - mean) * rstd
//     out  = xhat * w + b
// We keep mean and rstd (two floats per row) so the backward pass can rebuild xhat cheaply
// instead of storing the whole (N, C) xhat.
#include "layernorm.h"

#include <cmath>
#include <vector>

#include "common.h"

namespace tinyroots {

namespace {

TR_MULTIVERSION
void layernorm_row_forward(float* __restrict__ out, float* mean_out, float* rstd_out,
                           const float* __restrict__ x, const float* __restrict__ w,
                           const float* __restrict__ b, int64_t C, float eps) {
    // two passes over a row that sits in L1: first the mean, then the variance around it
    // (the one-pass sum-of-squares formula loses precision when |mean| >> std).
    float sum = 0.0f;
#pragma omp simd reduction(+ : sum)
    for (int64_t i = 0; i < C; i++) sum += x[i];
    const float m = sum / (float)C;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < C; i++) {
        const float d = x[i] - m;
        sq += d * d;
    }
    const float s = 1.0f / std::sqrt(sq / (float)C + eps);
    if (b) {
        for (int64_t i = 0; i < C; i++) out[i] = (x[i] - m) * s * w[i] + b[i];
    } else {
        for (int64_t i = 0; i < C; i++) out[i] = (x[i] - m) * s * w[i];
    }
    *mean_out = m;
    *rstd_out = s;
}

// Backward for one row. The forward was out = xhat * w + b with xhat = (x - mean) * rstd, so
//     dw += dout * xhat,   db += dout
//     dxhat = dout * w
//     dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// dw_acc and db_acc are this thread's private accumulators (no races between threads).
TR_MULTIVERSION
void layernorm_row_backward(float* __restrict__ dx, float* __restrict__ dw_acc,
                            float* __restrict__ db_acc, const float* __restrict__ dout,
                            const float* __restrict__ x, const float* __restrict__ w, float m,
                            float s, int64_t C) {
    float sum_dxhat = 0.0f, sum_dxhat_xhat = 0.0f;
#pragma omp simd reduction(+ : sum_dxhat, sum_dxhat_xhat)
    for (int64_t i = 0; i < C; i++) {
        const float xhat = (x[i] - m) * s;
        const float dxhat = dout[i] * w[i];
        sum_dxhat += dxhat;
        sum_dxhat_xhat += dxhat * xhat;
        dw_acc[i] += dout[i] * xhat;
        db_acc[i] += dout[i];
    }
    const float mean_dxhat = sum_dxhat / (float)C;
    const float mean_dxhat_xhat = sum_dxhat_xhat / (float)C;
    for (int64_t i = 0; i < C; i++) {
        const float xhat = (x[i] - m) * s;
        const float dxhat = dout[i] * w[i];
        dx[i] = s * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

}  // namespace

void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
#pragma omp parallel for schedule(static)
    for (int64_t n = 0; n < N; n++) {
        layernorm_row_forward(out + n * C, mean + n, rstd + n, x + n * C, w, b, C, eps);
    }
}

void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
    // Each thread sums its rows' dw/db into a private buffer; the buffers are added at the end
    // in a fixed order, so the result does not depend on scheduling.
    const int nthreads = max_threads();
    std::vector<float> acc((size_t)nthreads * 2 * C, 0.0f);
#pragma omp parallel num_threads(nthreads)
    {
        const int tid = thread_id();
        float* dw_acc = acc.data() + (size_t)tid * 2 * C;
        float* db_acc = dw_acc + C;
#pragma omp for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            layernorm_row_backward(dx + n * C, dw_acc, db_acc, dout + n * C, x + n * C, w,
                                   mean[n], rstd[n], C);
        }
    }
    for (int64_t i = 0; i < C; i++) {
        float sw = 0.0f, sb = 0.0f;
        for (int t = 0; t < nthreads; t++) {
            sw += acc[(size_t)t * 2 * C + i];
            sb += acc[(size_t)t * 2 * C + C + i];
        }
        dw[i] = sw;
        if (db) db[i] = sb;
    }
}

}  // namespace tinyroots
