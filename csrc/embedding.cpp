// embedding.cpp -- token (and position) embedding lookup and its scatter-add backward.
//
// weight is (V, C): one row of C floats per id. ids may have any shape; the binding flattens it
// to M positions.
#include "embedding.h"

#include <cstring>

#include "vecmath.h"

namespace tinyroots {

int64_t embedding_bad_id(const int64_t* ids, int64_t M, int64_t V) {
    for (int64_t i = 0; i < M; i++)
        if (ids[i] < 0 || ids[i] >= V) return i;
    return -1;
}

// weight (V, C), ids (M,) -> out (M, C): out[i, :] = weight[ids[i], :], a row copy per position.
void embedding_forward(float* out, const float* weight, const int64_t* ids, int64_t M,
                       int64_t C) {
    parallel_blocks(M, C, [&](int64_t begin, int64_t end) {
        for (int64_t i = begin; i < end; i++)
            std::memcpy(out + i * C, weight + ids[i] * C, sizeof(float) * C);
    });
}

// dout (M, C), ids (M,) -> dweight (V, C), zeroed by the caller.
// forward was out[i] = weight[ids[i]], so dweight[v] = sum of dout[i] over the i with ids[i] == v.
//
// subtle: the same id appears at many positions (every "the" in the batch), so two threads
// adding rows for the same id would race. Instead of atomics we split the *columns*: each thread
// owns a slice of the C channels, whole cache lines of it, and walks every position in order.
// No two threads ever touch the same float, the work is even however skewed the ids are, and
// each dweight[v, c] is summed in position order -- the same bits for any thread count.
//
// (For a 50257 x 768 table most of the time is not this scatter but the OS zero-filling the pages
// of the fresh (V, C) output as they are first touched; ref pays the same.)
void embedding_backward(float* dweight, const float* dout, const int64_t* ids, int64_t M,
                        int64_t C) {
    const int64_t lines = (C + kFloatsPerLine - 1) / kFloatsPerLine;  // column blocks of 16
    parallel_blocks(lines, M * kFloatsPerLine, [&](int64_t line_begin, int64_t line_end) {
        const int64_t c0 = line_begin * kFloatsPerLine;
        const int64_t c1 = line_end * kFloatsPerLine < C ? line_end * kFloatsPerLine : C;
        for (int64_t i = 0; i < M; i++) {
            float* __restrict__ dst = dweight + ids[i] * C;
            const float* __restrict__ src = dout + i * C;
#pragma omp simd
            for (int64_t c = c0; c < c1; c++) dst[c] += src[c];
        }
    });
}

}  // namespace tinyroots
