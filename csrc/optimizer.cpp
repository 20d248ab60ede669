// optimizer.cpp -- the parameter updates: AdamW and SGD, fused and in place.
//
// An optimizer step does almost no arithmetic per byte: AdamW reads param, grad, m, v and writes
// param, m, v -- 28 bytes of memory traffic per parameter for about 15 flops. Its speed is the
// machine's memory bandwidth, so the one rule is: touch each array exactly once. The NumPy
// reference makes ~10 passes (one per operator); here each element goes through all the formulas
// in registers, one pass, every thread streaming its own contiguous block.
#include "optimizer.h"

#include <cmath>

#include "vecmath.h"

namespace tinyroots {

// param, grad, m, v (n,): param, m, v updated in place.
// The formulas and their order follow ref.adamw_update (itself torch.optim.AdamW):
//     m = beta1 m + (1 - beta1) g           v = beta2 v + (1 - beta2) g^2
//     param *= 1 - lr * weight_decay        (decoupled decay: the weight, not the gradient)
//     param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)
// The per-step scalars are computed once in double and rounded to float32, as NumPy does when
// it combines a Python float with a float32 array.
void adamw_update(float* param, const float* grad, float* m, float* v, int64_t n, double lr,
                  double beta1, double beta2, double eps, double weight_decay, double step) {
    const float b1 = (float)beta1, one_minus_b1 = (float)(1.0 - beta1);
    const float b2 = (float)beta2, one_minus_b2 = (float)(1.0 - beta2);
    const float decay = weight_decay != 0.0 ? (float)(1.0 - lr * weight_decay) : 1.0f;
    const float step_size = (float)(lr / (1.0 - std::pow(beta1, step)));
    const float bias2_sqrt = (float)std::sqrt(1.0 - std::pow(beta2, step));
    const float epsf = (float)eps;
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        float* __restrict__ p = param;
        const float* __restrict__ g = grad;
        float* __restrict__ mp = m;
        float* __restrict__ vp = v;
#pragma omp simd
        for (int64_t i = begin; i < end; i++) {
            const float gi = g[i];
            const float mi = b1 * mp[i] + one_minus_b1 * gi;
            const float vi = b2 * vp[i] + one_minus_b2 * gi * gi;
            const float denom = std::sqrt(vi) / bias2_sqrt + epsf;
            mp[i] = mi;
            vp[i] = vi;
            p[i] = p[i] * decay - step_size * mi / denom;
        }
    });
}

// param, grad, buf (n,): param and (when momentum != 0) buf updated in place.
// As ref.sgd_update (PyTorch's SGD):
//     (weight_decay == 0 skips the decay term entirely, as ref does: 0 * inf would be NaN)
//     g = grad + weight_decay * param;   buf = momentum * buf + g
//     param -= lr * (g + momentum * buf if nesterov else buf)
void sgd_update(float* param, const float* grad, float* buf, int64_t n, double lr,
                double momentum, double weight_decay, bool nesterov) {
    const float lrf = (float)lr, mu = (float)momentum, wd = (float)weight_decay;
    const bool use_buf = momentum != 0.0, use_wd = weight_decay != 0.0;
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        float* __restrict__ p = param;
        const float* __restrict__ gr = grad;
        float* __restrict__ b = buf;
        if (!use_buf) {
#pragma omp simd
            for (int64_t i = begin; i < end; i++)
                p[i] -= lrf * (use_wd ? gr[i] + wd * p[i] : gr[i]);
        } else if (nesterov) {
#pragma omp simd
            for (int64_t i = begin; i < end; i++) {
                const float g = use_wd ? gr[i] + wd * p[i] : gr[i];
                const float bi = mu * b[i] + g;
                b[i] = bi;
                p[i] -= lrf * (g + mu * bi);
            }
        } else {
#pragma omp simd
            for (int64_t i = begin; i < end; i++) {
                const float g = use_wd ? gr[i] + wd * p[i] : gr[i];
                const float bi = mu * b[i] + g;
                b[i] = bi;
                p[i] -= lrf * bi;
            }
        }
    });
}

void stream_triad(float* a, const float* b, const float* c, float s, int64_t n) {
    parallel_blocks(n, 1, [&](int64_t begin, int64_t end) {
        float* __restrict__ ap = a;
        const float* __restrict__ bp = b;
        const float* __restrict__ cp = c;
#pragma omp simd
        for (int64_t i = begin; i < end; i++) ap[i] = bp[i] + s * cp[i];
    });
}

}  // namespace tinyroots
