#pragma once
#include <cstdint>

namespace tinyroots {

// Causal multi-head self-attention, fused (no (T, T) matrix is ever stored).
// qkv (B, T, 3C) -> out (B, T, C), lse (B, NH, T). HS = C / NH.
void attention_forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C,
                       int64_t NH);

// dout (B, T, C), qkv (B, T, 3C), out (B, T, C), lse (B, NH, T) -> dqkv (B, T, 3C).
void attention_backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                        const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH);

// The same two kernels as plain loops, one head and one query at a time (the readable twins of
// the tiled code, which attention_forward / attention_backward use where it applies).
void attention_forward_plain(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                             int64_t C, int64_t NH);
void attention_backward_plain(float* dqkv, const float* dout, const float* qkv, const float* out,
                              const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH);

// The two kernels with attention dropout, for training: each probability P_ij is kept with
// probability 1 - p and scaled by 1 / (1 - p). The mask is a hash of (seed, head, row, column)
// (attention_tiled.h; ref.attention_dropout_keep in NumPy), recomputed by the backward, which
// takes the forward's p and seed. Heads up to tiled::kMaxTiledHS = 256 (the tiled kernels);
// p outside [0, 1) or a larger head is std::invalid_argument. p = 0 is attention_forward.
void attention_forward_dropout(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                               int64_t C, int64_t NH, double p, uint64_t seed);
void attention_backward_dropout(float* dqkv, const float* dout, const float* qkv, const float* out,
                                const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH,
                                double p, uint64_t seed);

// The same two kernels with bf16 products (mixed precision, attention_bf16.cpp): q, k, v, dout
// and the probabilities are rounded to bf16 as the products take them; sums, softmax, lse and
// every output stay float32. Same arguments and outputs as attention_forward / _backward.
void attention_forward_bf16(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                            int64_t C, int64_t NH);
void attention_backward_bf16(float* dqkv, const float* dout, const float* qkv, const float* out,
                             const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH);

// A read-only (B, NH, T, HS) array whose last axis is contiguous; the other three axes may have
// any strides (in floats), so a slice of a preallocated KV cache needs no copy.
struct HeadsView {
    const float* data;
    int64_t stride_b, stride_h, stride_t;
    const float* row(int64_t b, int64_t h, int64_t t) const {
        return data + b * stride_b + h * stride_h + t * stride_t;
    }
};

// Attention of Tq new queries against a KV cache, for generation (no backward).
// q (B, NH, Tq, HS), k, v (B, NH, Tk, HS) -> out (B, NH, Tq, HS), contiguous.
// Query i sits at position n_past + i and sees keys 0 .. n_past + i (the caller checks that
// n_past + Tq <= Tk: the cache holds them).
void attention_decode(float* out, HeadsView q, HeadsView k, HeadsView v, int64_t B, int64_t NH,
                      int64_t Tq, int64_t HS, int64_t n_past);

// The same for a batch whose rows each keep their own cache (a server's requests): row b's keys
// and values are k[b], v[b] (each a batch of one), and its queries sit at n_past[b] onwards.
void attention_decode_rows(float* out, HeadsView q, const HeadsView* k, const HeadsView* v,
                           const int64_t* n_past, int64_t B, int64_t NH, int64_t Tq, int64_t HS);

// What comes before it in a decoding step: row b's Tq new keys and values, k_new and v_new
// (B, NH, Tq, HS), are written into its own cache k[b], v[b] at positions n_past[b] onwards.
// The caller makes sure those caches are writable (the only decoding kernel that writes into
// its arguments).
void kv_append_rows(HeadsView k_new, HeadsView v_new, const HeadsView* k, const HeadsView* v,
                    const int64_t* n_past, int64_t B, int64_t NH, int64_t Tq, int64_t HS);

}  // namespace tinyroots
