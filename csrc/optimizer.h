#pragma once
#include <cstdint>

namespace tinyroots {

// One AdamW step on n parameters, in place on param, m and v. grad is read only.
// step counts from 1.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, double step);

// One SGD step on n parameters, in place on param and (when momentum != 0) buf.
void sgd_update(float* param, const float* grad, float* buf, int64_t n, double lr,
                double momentum, double weight_decay, bool nesterov);

// a = b + s * c over n floats: STREAM's "triad", the yardstick for the memory bandwidth an
// optimizer step should reach (bench/bench_kernels.py). Not a model kernel.
void stream_triad(float* a, const float* b, const float* c, float s, int64_t n);

}  // namespace tinyroots
