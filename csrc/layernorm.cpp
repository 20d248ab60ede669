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
//
// Speed: a row (768 floats for GPT-2) sits in L1 while all its sweeps run, so the cost is one
// read of x and one write of out per row; the sweeps are vectorized for the CPU's widest
// instruction set through with_isa (vecmath.h), and rows are split among threads.
#include "layernorm.h"

#include <cmath>
#include <vector>

#include "vecmath.h"

namespace tinyroots {

namespace {

// x (C,) -> out (C,), *mean_out, *rstd_out. Inlined into a with_isa body.
inline void layernorm_row_forward(float* __restrict__ out, float* mean_out, float* rstd_out,
                                  const float* __restrict__ x, const float* __restrict__ w,
                                  const float* __restrict__ b, int64_t C, float eps) {
    // two sweeps for the statistics, first the mean, then the variance around it: the one-sweep
    // sum-of-squares formula loses precision when |mean| >> std (GPT-2's residual stream has
    // channels with huge outliers). The row is in L1, so the second sweep is nearly free.
    const float m = rowops::sum(x, C) / (float)C;
    float sq = 0.0f;
#pragma omp simd reduction(+ : sq)
    for (int64_t i = 0; i < C; i++) {
        const float d = x[i] - m;
        sq += d * d;
    }
    const float s = 1.0f / std::sqrt(sq / (float)C + eps);
    if (b) {
#pragma omp simd
        for (int64_t i = 0; i < C; i++) out[i] = (x[i] - m) * s * w[i] + b[i];
    } else {
#pragma omp simd
        for (int64_t i = 0; i < C; i++) out[i] = (x[i] - m) * s * w[i];
    }
    *mean_out = m;
    *rstd_out = s;
}

// Backward for one row. The forward was out = xhat * w + b with xhat = (x - mean) * rstd, so
//     dw += dout * xhat,   db += dout
//     dxhat = dout * w
//     dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat))
// The first sweep gathers both means and adds into dw_acc, db_acc (this chunk's private
// accumulators); the second writes dx.
inline void layernorm_row_backward(float* __restrict__ dx, float* __restrict__ dw_acc,
                                   float* __restrict__ db_acc, const float* __restrict__ dout,
                                   const float* __restrict__ x, const float* __restrict__ w,
                                   float m, float s, int64_t C) {
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
#pragma omp simd
    for (int64_t i = 0; i < C; i++) {
        const float xhat = (x[i] - m) * s;
        const float dxhat = dout[i] * w[i];
        dx[i] = s * (dxhat - mean_dxhat - xhat * mean_dxhat_xhat);
    }
}

}  // namespace

// x (N, C), w, b (C,) -> out (N, C), mean (N,), rstd (N,). b may be null.
void layernorm_forward(float* out, float* mean, float* rstd, const float* x, const float* w,
                       const float* b, int64_t N, int64_t C, float eps) {
    if (C == 0) return;
    parallel_blocks(N, C, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++)
            layernorm_row_forward(out + n * C, mean + n, rstd + n, x + n * C, w, b, C, eps);
    });
}

// dout, x (N, C), w (C,), mean, rstd (N,) -> dx (N, C), dw, db (C,). db may be null.
// dw and db are sums over all N rows. To stay free of races *and* give the same bits for any
// thread count, the rows are cut into chunks whose size depends only on N; each chunk sums into
// its own (2, C) slot, and the slots are added in chunk order at the end.
void layernorm_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                        const float* w, const float* mean, const float* rstd, int64_t N,
                        int64_t C) {
    if (C == 0) return;
    // at least 32 rows a chunk (the partial sums are then ~3% of the work), at most 256 chunks
    // (the (chunks, 2, C) buffer stays small)
    const int64_t rows_per_chunk = N / 256 > 32 ? (N + 255) / 256 : 32;
    const int64_t chunks = (N + rows_per_chunk - 1) / rows_per_chunk;
    std::vector<float> acc((size_t)(chunks > 0 ? chunks : 1) * 2 * C, 0.0f);
    parallel_blocks(chunks, rows_per_chunk * C, [&](int64_t chunk_begin, int64_t chunk_end) {
        for (int64_t k = chunk_begin; k < chunk_end; k++) {
            float* dw_acc = acc.data() + (size_t)k * 2 * C;
            float* db_acc = dw_acc + C;
            const int64_t n1 = (k + 1) * rows_per_chunk < N ? (k + 1) * rows_per_chunk : N;
            for (int64_t n = k * rows_per_chunk; n < n1; n++)
                layernorm_row_backward(dx + n * C, dw_acc, db_acc, dout + n * C, x + n * C, w,
                                       mean[n], rstd[n], C);
        }
    });
    // chunk-ordered sum of the partials, split over channels
    parallel_blocks(C, chunks * 2, [&](int64_t c_begin, int64_t c_end) {
        for (int64_t i = c_begin; i < c_end; i++) {
            float sw = 0.0f, sb = 0.0f;
            for (int64_t k = 0; k < chunks; k++) {
                sw += acc[(size_t)k * 2 * C + i];
                sb += acc[(size_t)k * 2 * C + C + i];
            }
            dw[i] = sw;
            if (db) db[i] = sb;
        }
    });
}

}  // namespace tinyroots
