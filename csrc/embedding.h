#pragma once
#include <cstdint>

namespace tinyroots {

// The first position whose id is not in [0, V), or -1 when all are valid.
// The bindings call this before the kernels below, which trust their ids.
int64_t embedding_bad_id(const int64_t* ids, int64_t M, int64_t V);

// weight (V, C), ids (M,) -> out (M, C) = weight[ids]
void embedding_forward(float* out, const float* weight, const int64_t* ids, int64_t M,
                       int64_t C);

// dout (M, C), ids (M,) -> dweight (V, C) += scatter of dout rows by id.
// dweight must arrive zeroed (the binding allocates it with numpy.zeros).
void embedding_backward(float* dweight, const float* dout, const int64_t* ids, int64_t M,
                        int64_t C);

}  // namespace tinyroots
