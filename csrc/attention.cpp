// attention.cpp -- causal multi-head self-attention, forward and backward; and the KV-cache
// attention used when generating.
//
// qkv is (B, T, 3C): q, k, v packed along the last axis, head h of q at columns
// [h*HS, (h+1)*HS), of k at C + h*HS, of v at 2C + h*HS. out is (B, T, C), lse (B, NH, T).
// For one head, with scale = 1 / sqrt(HS):
//     S = q k^T * scale, masked to keys j <= i      (T, T)
//     P = softmax(S) row by row                     (T, T)
//     out = P v                                     (T, HS)
//
// What is stored for the backward, and why: out (the layer's output, kept anyway) and lse, the
// log-sum-exp of each row of S -- one float per query. The (T, T) matrix P is never stored:
// at T = 1024, 12 heads and batch 4 it would be 200 MB per layer. The backward rebuilds P from
// q, k and lse as P = exp(S - lse).
//
// Reading order: the plain loops below are the algorithm, one head and one query at a time,
// line for line ref.attention_forward / ref.attention_backward. attention_tiled.h computes the
// same thing fast (tiles, an online softmax, vector registers); attention_forward and
// attention_backward use it, and fall back to the plain loops for head sizes it does not handle.
// attention_forward_plain / attention_backward_plain are the plain loops on their own (tests run
// them against ref like every kernel).
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <limits>
#include <stdexcept>
#include <string>
#include <vector>

#include "attention_tiled.h"

namespace tinyroots {

namespace {

// Where head h of batch b lives: row t of its q is q + t * ld, and likewise for k, v, out.
struct HeadRows {
    const float *q, *k, *v;  // rows of qkv, ld = 3C apart
    int64_t ld;
    int64_t out;             // offset of row 0 of this head in a (B, T, C) array (out, dout)
};

HeadRows head_rows(const float* qkv, int64_t b, int64_t h, int64_t T, int64_t C, int64_t NH) {
    const float* q = qkv + b * T * 3 * C + h * (C / NH);
    return HeadRows{q, q + C, q + 2 * C, 3 * C, b * T * C + h * (C / NH)};
}

float dot(const float* x, const float* y, int64_t n) {
    float s = 0.0f;
    for (int64_t d = 0; d < n; d++) s += x[d] * y[d];
    return s;
}

// ---------------------------------------------------------------------------------------------
// the plain loops: one head, one query at a time

// Forward of head (b, h). For each query i:
//     s_j = (q_i . k_j) * scale          for the keys j <= i it sees
//     m = max_j s_j                      (subtract it: exp overflows near 88 in float32)
//     p_j = exp(s_j - m),  l = sum_j p_j
//     out_i = sum_j p_j v_j / l,  lse_i = m + log(l)
// s is scratch of T floats.
void attention_forward_head(float* out, float* lse, const float* qkv, int64_t b, int64_t h,
                            int64_t T, int64_t C, int64_t NH, float* s) {
    const int64_t HS = C / NH;
    const float scale = 1.0f / std::sqrt((float)HS);
    const HeadRows x = head_rows(qkv, b, h, T, C, NH);
    for (int64_t i = 0; i < T; i++) {
        const float* qi = x.q + i * x.ld;
        float m = -std::numeric_limits<float>::infinity();
        for (int64_t j = 0; j <= i; j++) {
            s[j] = dot(qi, x.k + j * x.ld, HS) * scale;
            m = std::max(m, s[j]);
        }
        float l = 0.0f;
        for (int64_t j = 0; j <= i; j++) {
            s[j] = std::exp(s[j] - m);
            l += s[j];
        }
        float* oi = out + x.out + i * C;
        for (int64_t d = 0; d < HS; d++) oi[d] = 0.0f;
        for (int64_t j = 0; j <= i; j++) {
            const float* vj = x.v + j * x.ld;
            for (int64_t d = 0; d < HS; d++) oi[d] += s[j] * vj[d];
        }
        for (int64_t d = 0; d < HS; d++) oi[d] /= l;
        lse[(b * NH + h) * T + i] = m + std::log(l);
    }
}

// Backward of head (b, h), the forward's lines taken in reverse. The forward was
//     S = q k^T * scale,   P = exp(S - lse),   out = P v
// so, with dY = dout and Y = out:
//     out = P v          ->  dV_j += P_ij dY_i,   dP_ij = dY_i . v_j
//     P = softmax(S)     ->  dS_ij = P_ij (dP_ij - D_i),  D_i = sum_j P_ij dP_ij = dY_i . Y_i
//     S = q k^T * scale  ->  dQ_i += dS_ij k_j * scale,   dK_j += dS_ij q_i * scale
// The scale is folded into dS once (ds below), as in ref.py and attention_tiled.h.
void attention_backward_head(float* dqkv, const float* dout, const float* qkv, const float* out,
                             const float* lse, int64_t b, int64_t h, int64_t T, int64_t C,
                             int64_t NH) {
    const int64_t HS = C / NH;
    const float scale = 1.0f / std::sqrt((float)HS);
    const HeadRows x = head_rows(qkv, b, h, T, C, NH);
    float* dq = dqkv + (x.q - qkv);  // the same place in dqkv as q in qkv
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    for (int64_t t = 0; t < T; t++)
        for (int64_t d = 0; d < HS; d++) dq[t * x.ld + d] = dk[t * x.ld + d] = dv[t * x.ld + d] = 0;
    for (int64_t i = 0; i < T; i++) {
        const float* qi = x.q + i * x.ld;
        const float* dyi = dout + x.out + i * C;
        const float Di = dot(dyi, out + x.out + i * C, HS);
        const float lse_i = lse[(b * NH + h) * T + i];
        for (int64_t j = 0; j <= i; j++) {
            const float* kj = x.k + j * x.ld;
            const float* vj = x.v + j * x.ld;
            const float p = std::exp(dot(qi, kj, HS) * scale - lse_i);    // P_ij
            const float ds = p * (dot(dyi, vj, HS) - Di) * scale;         // dS_ij * scale
            for (int64_t d = 0; d < HS; d++) {
                dv[j * x.ld + d] += p * dyi[d];
                dq[i * x.ld + d] += ds * kj[d];
                dk[j * x.ld + d] += ds * qi[d];
            }
        }
    }
}

// Is there enough work to start the thread team? (the same rule as the tiled schedules)
bool worth_threads(int64_t B, int64_t T, int64_t C, int64_t NH) {
    return B * NH * T * T * (C / NH) > 8 * kMinParallelWork;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// every head: the plain loops, one head per thread

void attention_forward_plain(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                             int64_t C, int64_t NH) {
    if (B * T * C == 0) return;
#pragma omp parallel if (worth_threads(B, T, C, NH))
    {
        std::vector<float> s(T);
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < B * NH; bh++)
            attention_forward_head(out, lse, qkv, bh / NH, bh % NH, T, C, NH, s.data());
    }
}

void attention_backward_plain(float* dqkv, const float* dout, const float* qkv, const float* out,
                              const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH) {
    if (B * T * C == 0) return;
#pragma omp parallel for schedule(dynamic, 1) if (worth_threads(B, T, C, NH))
    for (int64_t bh = 0; bh < B * NH; bh++)
        attention_backward_head(dqkv, dout, qkv, out, lse, bh / NH, bh % NH, T, C, NH);
}

// ---------------------------------------------------------------------------------------------
// the kernels the model calls: tiled (attention_tiled.h) where it applies

void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH) {
    if (C / NH > tiled::kMaxTiledHS)
        attention_forward_plain(out, lse, qkv, B, T, C, NH);
    else
        tiled::forward(out, lse, qkv, B, T, C, NH);
}

void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH) {
    if (C / NH > tiled::kMaxTiledHS)
        attention_backward_plain(dqkv, dout, qkv, out, lse, B, T, C, NH);
    else
        tiled::backward(dqkv, dout, qkv, out, lse, B, T, C, NH);
}

// ---------------------------------------------------------------------------------------------
// with attention dropout (training): the tiled kernels, the mask drawn from `seed` in both

namespace {
tiled::Dropout dropout_of(double p, uint64_t seed, int64_t C, int64_t NH, const char* what) {
    if (!(p >= 0.0 && p < 1.0))
        throw std::invalid_argument(std::string(what) + ": dropout p must be in [0, 1), got " +
                                    std::to_string(p));
    if (C / NH > tiled::kMaxTiledHS)
        throw std::invalid_argument(std::string(what) + ": head size " + std::to_string(C / NH) +
                                    " is past the tiled kernels' " +
                                    std::to_string(tiled::kMaxTiledHS) + " (no fused dropout)");
    tiled::Dropout d;
    d.threshold = (uint32_t)std::min(4294967295.0, std::floor(p * 4294967296.0 + 0.5));
    d.scale = (float)(1.0 / (1.0 - p));
    d.seed = seed;
    return d;
}
}  // namespace

void attention_forward_dropout(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                               int64_t C, int64_t NH, double p, uint64_t seed) {
    tiled::forward(out, lse, qkv, B, T, C, NH,
                   dropout_of(p, seed, C, NH, "attention_forward_dropout"));
}

void attention_backward_dropout(float* dqkv, const float* dout, const float* qkv, const float* out,
                                const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH,
                                double p, uint64_t seed) {
    tiled::backward(dqkv, dout, qkv, out, lse, B, T, C, NH,
                    dropout_of(p, seed, C, NH, "attention_backward_dropout"));
}


// Each (b, h, query) row is independent: the softmax over its visible keys, then the weighted
// sum of values (attend_row). For batch-1 generation that is B * NH = 12 rows of up to 1024 keys:
// the time is reading K and V once, so rows are spread over threads and K, V are read in place
// (any strides), never copied.
void attention_decode(float* out, HeadsView q, HeadsView k, HeadsView v, int64_t B, int64_t NH,
                      int64_t Tq, int64_t HS, int64_t n_past) {
    // row b of one shared cache is a cache of its own, whose batch stride is the cache's
    std::vector<HeadsView> ks((size_t)B, k), vs((size_t)B, v);
    std::vector<int64_t> past((size_t)B, n_past);
    for (int64_t b = 0; b < B; b++) {
        ks[(size_t)b].data = k.row(b, 0, 0);
        vs[(size_t)b].data = v.row(b, 0, 0);
    }
    attention_decode_rows(out, q, ks.data(), vs.data(), past.data(), B, NH, Tq, HS);
}

void attention_decode_rows(float* out, HeadsView q, const HeadsView* k, const HeadsView* v,
                           const int64_t* n_past, int64_t B, int64_t NH, int64_t Tq, int64_t HS) {
    const int64_t rows = B * NH * Tq;
    if (rows == 0 || HS == 0) return;
    const float scale = 1.0f / std::sqrt((float)HS);
    int64_t keys = 0, longest = 0;  // keys read in all, and the most any row reads
    for (int64_t b = 0; b < B; b++) {
        keys += NH * Tq * (n_past[b] + Tq);
        longest = std::max(longest, n_past[b] + Tq);
    }
    const bool parallel = rows > 1 && keys * HS > 2 * kMinParallelWork;
#pragma omp parallel if (parallel)
    {
        std::vector<float> s((size_t)longest);
#pragma omp for schedule(static)
        for (int64_t r = 0; r < rows; r++) {
            const int64_t i = r % Tq, bh = r / Tq, b = bh / NH, h = bh % NH;
            const int64_t n = n_past[b] + i + 1;  // keys 0 .. n_past + i
            float* o = out + r * HS;
            with_isa_lanes([&](auto lanes) {
                tiled::with_head_size(HS, [&](auto hs) {
                    constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                    tiled::attend_row<L, HS_T>(o, q.row(b, h, i), k[b].row(0, h, 0),
                                               k[b].stride_t, v[b].row(0, h, 0), v[b].stride_t,
                                               n, HS, scale, s.data());
                });
            });
        }
    }
}

void kv_append_rows(HeadsView k_new, HeadsView v_new, const HeadsView* k, const HeadsView* v,
                    const int64_t* n_past, int64_t B, int64_t NH, int64_t Tq, int64_t HS) {
    const size_t bytes = (size_t)HS * sizeof(float);
    for (int64_t b = 0; b < B; b++)
        for (int64_t h = 0; h < NH; h++)
            for (int64_t t = 0; t < Tq; t++) {
                std::memcpy(const_cast<float*>(k[b].row(0, h, n_past[b] + t)), k_new.row(b, h, t),
                            bytes);
                std::memcpy(const_cast<float*>(v[b].row(0, h, n_past[b] + t)), v_new.row(b, h, t),
                            bytes);
            }
}

}  // namespace tinyroots
