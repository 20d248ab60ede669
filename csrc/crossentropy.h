#pragma once
#include <cstdint>

namespace tinyroots {

// The first row whose target is neither in [0, V) nor ignore_index, or -1 when all are valid.
// The bindings call this before any kernel below, which trust their targets.
int64_t cross_entropy_bad_target(const int64_t* targets, int64_t N, int64_t V,
                                 int64_t ignore_index);

// logits (N, V), targets (N,) -> losses (N,), lse (N,)
void cross_entropy_forward(float* losses, float* lse, const float* logits, const int64_t* targets,
                           int64_t N, int64_t V, int64_t ignore_index);

// dlosses (N,), logits (N, V), targets (N,), lse (N,) -> dlogits (N, V)
void cross_entropy_backward(float* dlogits, const float* dlosses, const float* logits,
                            const int64_t* targets, const float* lse, int64_t N, int64_t V,
                            int64_t ignore_index);

// logits (N, V), targets (N,) -> losses (N,), dlogits (N, V), the gradient of the mean loss over
// non-ignored rows. dlogits may be logits itself (the in-place variant).
void cross_entropy_forward_backward(float* losses, float* dlogits, const float* logits,
                                    const int64_t* targets, int64_t N, int64_t V,
                                    int64_t ignore_index);

}  // namespace tinyroots
