// crossentropy.cpp -- softmax cross-entropy over the vocabulary, the last layer of training.
//
// logits (N, V), targets (N,): row i's loss is
//     losses[i] = lse_i - logits[i, t_i],   lse_i = log(sum_v exp(logits[i, v]))
// and 0 when t_i == ignore_index (padding, or a prompt token in fine-tuning).
//
// With GPT-2's V = 50257 a row is 200 KB: it fits in L2 but the (N, V) matrix does not fit
// anywhere. So every kernel here finishes one row before the next and reads each row from
// memory once: the first sweep is the chunked one-sweep softmax of vecmath.h (the max and the
// exps chunk by chunk, one exp per element), and a second sweep, if any, runs from L2.
// No kernel allocates an (N, V) temporary.
#include "crossentropy.h"

#include <cmath>
#include <cstring>
#include <vector>

#include "vecmath.h"

namespace tinyroots {

int64_t cross_entropy_bad_target(const int64_t* targets, int64_t N, int64_t V,
                                 int64_t ignore_index) {
    for (int64_t i = 0; i < N; i++) {
        const int64_t t = targets[i];
        if (t != ignore_index && (t < 0 || t >= V)) return i;
    }
    return -1;
}

// logits (N, V), targets (N,) -> losses (N,), lse (N,): one sweep per row (rowops::logsumexp).
void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* targets,
                           int64_t N, int64_t V, int64_t ignore_index) {
    parallel_blocks(N, V, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++) {
            const float* row = logits + n * V;
            const float l = rowops::logsumexp(row, V);
            const int64_t t = targets[n];
            lse[n] = l;
            losses[n] = t == ignore_index ? 0.0f : l - row[t];
        }
    });
}

// dlosses (N,), logits (N, V), targets (N,), lse (N,) -> dlogits (N, V).
// forward was losses[i] = lse_i - logits[i, t_i], so
//     dlogits[i] = dlosses[i] * (softmax(logits[i]) - onehot(t_i)),  softmax = exp(logits - lse)
// and 0 on ignored rows. One sweep per row: the saved lse makes the max and the sum unnecessary.
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits,
                            const int64_t* targets, const float* lse, int64_t N, int64_t V,
                            int64_t ignore_index) {
    parallel_blocks(N, V, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; n++) {
            const float* __restrict__ row = logits + n * V;
            float* __restrict__ drow = dlogits + n * V;
            const int64_t t = targets[n];
            if (t == ignore_index) {
                std::memset(drow, 0, sizeof(float) * V);
                continue;
            }
            const float g = dlosses[n], l = lse[n];
#pragma omp simd
            for (int64_t v = 0; v < V; v++) drow[v] = g * exp_approx(row[v] - l);
            drow[t] = g * (exp_approx(row[t] - l) - 1.0f);
        }
    });
}

// logits (N, V), targets (N,) -> losses (N,), dlogits (N, V); dlogits may be logits (in place).
// The training-time fusion. For each row, g = 1 / (number of valid rows):
//     sweep 1: e = exp(row - m) into dlogits, with the running max m of a chunked one-sweep
//              softmax (rowops::exp_store_chunked): the row is read from memory once
//     sweep 2: dlogits = e * (g / s) chunk by chunk (from L2), then dlogits[t] -= g
// which is dlogits = g * (softmax - onehot): the gradient of the mean loss. One exp per element.
void cross_entropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                    const int64_t* targets, int64_t N, int64_t V,
                                    int64_t ignore_index) {
    int64_t n_valid = 0;
    for (int64_t n = 0; n < N; n++) n_valid += targets[n] != ignore_index;
    // as ref: 1 / max(n_valid, 1), rounded to float32 once
    const float g = (float)(1.0 / (double)(n_valid > 0 ? n_valid : 1));
    parallel_blocks(N, V, [&](int64_t begin, int64_t end) {
        std::vector<float> chunk_max(rowops::n_chunks(V));
        for (int64_t n = begin; n < end; n++) {
            // subtle: no __restrict__ here: with inplace=True, drow and row are the same memory.
            const float* row = logits + n * V;
            float* drow = dlogits + n * V;
            const int64_t t = targets[n];
            if (t == ignore_index) {
                losses[n] = 0.0f;
                std::memset(drow, 0, sizeof(float) * V);
                continue;
            }
            const float picked = row[t];  // subtle: read before sweep 1 may overwrite it
            float s;
            const float m = rowops::exp_store_chunked(drow, row, V, chunk_max.data(), &s);
            losses[n] = m + std::log(s) - picked;
            rowops::rescale_chunks(drow, V, chunk_max.data(), m, g / s);
            drow[t] -= g;
        }
    });
}

}  // namespace tinyroots
