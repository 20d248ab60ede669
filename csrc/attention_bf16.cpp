// attention_bf16.cpp -- causal self-attention with bf16 products (mixed precision).
//
// The same FlashAttention-2 schedule as the float32 kernel (attention_tiled.h: read it first),
// with one difference: each block's two products (forward) or five (backward) are matrix
// products on the bf16 micro-kernels of gemm_bf16 (AMX tiles, VDPBF16PS, or the portable loop,
// whichever bf16_isa() chose), and everything between the products stays float32.
//
//   forward, per head: query block Qi (kBlk rows) against the key blocks Kj left of the diagonal
//     S  = bf16(Qi) bf16(Kj)^T                          float32 sums        (kBlk x kBlk)
//     online softmax of S * scale in float32: running max m and sum l per row,
//     P  = exp(S * scale - m_new),  O = O * exp(m_old - m_new) + bf16(P) bf16(Vj)
//     out = O / l,  lse = m + log l
//   backward, per head: key block Kj outer, the query blocks Qi that see it (i >= j) inner
//     S  = bf16(Qi) bf16(Kj)^T,   P = exp(S * scale - lse)                  float32
//     dP = bf16(dOi) bf16(Vj)^T,  dS = P * (dP - D) * scale, D = rowsum(dout * out)
//     dVj += bf16(P)^T bf16(dOi),  dKj += bf16(dS)^T bf16(Qi),  dQi += bf16(dS) bf16(Kj)
//
// What is rounded to bf16: the operands of the products (q, k, v, dout, P and dS), each as it is
// packed. What stays float32: every sum, the softmax (scores, max, exp, l, lse), D, and the
// outputs. ref.py's attention_forward_bf16 / attention_backward_bf16 are the definition in
// NumPy; this code agrees with them to float32 summation order, except that the forward rounds
// P relative to the running max rather than the row's final one (the same relative error,
// 2^-9 at most, on different values) when a row spans several key blocks.
//
// Why it pays: the float32 kernel multiplies at the FMA rate, so at GPT-2's head size its two
// (forward) and five (backward) products are nearly all of its time. On AMX they become
// TDPBF16PS instructions of 16 x 16 x 32 multiply-adds, and what is left is the softmax's
// exp() over each score block, the packing, and the reading and writing of O and dqkv.
// Measured (B16 T256 C384 NH6, 2 threads, Intel Xeon with AMX; bench_gemm_bf16.py): forward +
// backward 2.3x the float32 kernel's speed, 3.3x PyTorch's bf16 scaled_dot_product_attention.
// Forced onto VDPBF16PS on that CPU it is 0.7x the float32 kernel: there one VDPBF16PS does as
// many multiply-adds per cycle as its two float32 FMA units, so only the packing is added. On
// AMD Zen 4 it does twice the FMA's (not measured here).
//
// Work: one item per head (b, h), which writes only its own columns of out, lse and dqkv: no
// locks, and the same result for any thread count. The packed operands of a head (a few tens of
// KB at T = 256) are made by the thread that uses them, into buffers kept between calls.
#include "attention.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "attention_tiled.h"
#include "common.h"
#include "gemm_bf16_kernels.h"
#include "vecmath.h"

namespace tinyroots {

namespace {

namespace bd = bf16_detail;

// queries per query block and keys per key block: the float32 kernel's key tile, so that its
// softmax rows (online_softmax_step, p_row, ds_row) serve here as they are
constexpr int64_t kBlk = tiled::kBc;
constexpr float kNegInf = tiled::kNegInf;

// ---- block products on the gemm_bf16 micro-kernels -----------------------------------------
// An A operand of `rows` rows is packed as ceil(rows / mr) slivers of mr rows, a B operand of
// `cols` columns as ceil(cols / NR) slivers of NR columns, each over the padded depth kcp
// (gemm_bf16_kernels.h has the layouts). The views say where element (row or column, depth)
// of the float32 source lies, so one packing routine serves a matrix and its transpose.

int64_t a_size(const bd::KernelSet& ks, int64_t rows, int64_t kcp) {
    return ceil_div(rows, ks.mr) * ks.mr * kcp;
}

int64_t b_size(int64_t cols, int64_t kcp) { return ceil_div(cols, bd::NR) * bd::NR * kcp; }

void pack_a(const bd::KernelSet& ks, bf16* dst, const bd::View& v, int64_t rows, int64_t kc,
            int64_t kcp) {
    for (int64_t r = 0; r < rows; r += ks.mr)
        ks.pack_a(dst + (r / ks.mr) * ks.mr * kcp, v.shifted(r, 0),
                  (int)std::min<int64_t>(ks.mr, rows - r), kc, kcp);
}

void pack_b(const bd::KernelSet& ks, bf16* dst, const bd::View& v, int64_t cols, int64_t kc,
            int64_t kcp) {
    for (int64_t c = 0; c < cols; c += bd::NR)
        ks.pack_b(dst + (c / bd::NR) * bd::NR * kcp, v.shifted(c, 0),
                  (int)std::min<int64_t>(bd::NR, cols - c), kc, kcp);
}

// C[0:m, 0:n] = (load_c ? C : 0) + A @ B over the packed depth kcp.
void product(const bd::KernelSet& ks, const bf16* Ap, const bf16* Bp, int64_t kcp, float* C,
             int64_t ldc, int64_t m, int64_t n, bool load_c) {
    for (int64_t i = 0; i < m; i += ks.mr)
        for (int64_t j = 0; j < n; j += bd::NR)
            ks.tile(kcp, Ap + (i / ks.mr) * ks.mr * kcp, Bp + (j / bd::NR) * bd::NR * kcp,
                    C + i * ldc + j, ldc, (int)std::min<int64_t>(ks.mr, m - i),
                    (int)std::min<int64_t>(bd::NR, n - j), load_c);
}

bd::View view(const float* data, int64_t rs, int64_t cs) { return {data, false, rs, cs}; }

// Per-thread memory, kept from one call to the next (a training loop calls with the same shapes
// every step; fresh buffers would page-fault each time).
struct Scratch {
    std::vector<bf16> packed;
    std::vector<float> s, dp, o, m, l, D;
    bf16* bf16s(int64_t n) {
        if ((int64_t)packed.size() < n) packed.resize(n);
        return packed.data();
    }
};

Scratch& scratch() {
    thread_local Scratch s;
    return s;
}

// ---- forward ---------------------------------------------------------------------------------

template <int L>
void forward_head(const bd::KernelSet& ks, float* out, float* lse, const float* qkv, int64_t b,
                  int64_t h, int64_t T, int64_t C, int64_t NH) {
    const int64_t HS = C / NH, kh = round_up(HS, bd::KB), nb = ceil_div(T, kBlk);
    const float scale = 1.0f / std::sqrt((float)HS);
    const tiled::Head x = tiled::head_of(qkv, b, h, T, C, HS);  // row t of q at x.q + t * x.ld
    // K^T blocks (the B of S: columns are keys, depth the head's dims) and V blocks (the B of
    // P V: columns are the head's dims, depth the keys), packed once for all query blocks
    const int64_t size_kt = b_size(kBlk, kh), size_v = b_size(HS, kBlk);
    const int64_t size_qa = a_size(ks, kBlk, kh), size_pa = a_size(ks, kBlk, kBlk);
    Scratch& w = scratch();
    bf16* const kt = w.bf16s(nb * (size_kt + size_v) + size_qa + size_pa);
    bf16* const vp = kt + nb * size_kt;
    bf16* const qa = vp + nb * size_v;
    bf16* const pa = qa + size_qa;
    w.s.resize(kBlk * kBlk);
    w.o.resize(kBlk * HS);
    w.m.resize(kBlk);
    w.l.resize(kBlk);
    float* const s = w.s.data();
    float* const o = w.o.data();
    float* const m = w.m.data();
    float* const l = w.l.data();
    for (int64_t j = 0; j < nb; j++) {
        const int64_t k0 = j * kBlk, nk = std::min(kBlk, T - k0);
        pack_b(ks, kt + j * size_kt, view(x.k + k0 * x.ld, x.ld, 1), nk, HS, kh);
        pack_b(ks, vp + j * size_v, view(x.v + k0 * x.ld, 1, x.ld), HS, nk, kBlk);
    }
    for (int64_t i = 0; i < nb; i++) {
        const int64_t q0 = i * kBlk, nq = std::min(kBlk, T - q0);
        pack_a(ks, qa, view(x.q + q0 * x.ld, x.ld, 1), nq, HS, kh);
        for (int64_t r = 0; r < nq; r++) {
            m[r] = kNegInf;
            l[r] = 0.0f;
        }
        for (int64_t j = 0; j <= i; j++) {
            const int64_t k0 = j * kBlk, nk = std::min(kBlk, T - k0);
            product(ks, qa, kt + j * size_kt, kh, s, kBlk, nq, nk, false);
            for (int64_t r = 0; r < nq; r++) {
                const int64_t seen = std::min(nk, q0 + r - k0 + 1);  // keys of Kj query r sees
                const float correction =  // exp(m_old - m_new): 0 on the first block
                    tiled::online_softmax_step<L>(s + r * kBlk, seen, scale, m + r, l + r);
                if (j > 0) {
                    float* __restrict__ orow = o + r * HS;
#pragma omp simd
                    for (int64_t d = 0; d < HS; d++) orow[d] *= correction;
                }
            }
            pack_a(ks, pa, view(s, kBlk, 1), nq, nk, kBlk);
            product(ks, pa, vp + j * size_v, kBlk, o, HS, nq, HS, j > 0);
        }
        float* lse_h = lse + (b * NH + h) * T;
        for (int64_t r = 0; r < nq; r++) {
            const float inv = 1.0f / l[r];
            float* __restrict__ orow = out + (b * T + q0 + r) * C + h * HS;
#pragma omp simd
            for (int64_t d = 0; d < HS; d++) orow[d] = o[r * HS + d] * inv;
            lse_h[q0 + r] = m[r] + std::log(l[r]);
        }
    }
}

// a . b over n floats, summed in L-lane vectors and then across them as a tree (an `omp simd`
// sum ends in a chain of dependent scalar adds, which at one per row of T showed in profiles)
template <int L>
float dot(const float* __restrict__ a, const float* __restrict__ b, int64_t n) {
    using V = typename Vec<L>::type;
    V acc{};
    int64_t i = 0;
    for (; i + L <= n; i += L) acc += loadv<L>(a + i) * loadv<L>(b + i);
    float sum = hsum<L>(acc);
    for (; i < n; i++) sum += a[i] * b[i];
    return sum;
}

// ---- backward ---------------------------------------------------------------------------------

template <int L>
void backward_head(const bd::KernelSet& ks, float* dqkv, const float* dout, const float* qkv,
                   const float* out, const float* lse, int64_t b, int64_t h, int64_t T,
                   int64_t C, int64_t NH) {
    const int64_t HS = C / NH, kh = round_up(HS, bd::KB), nb = ceil_div(T, kBlk);
    const float scale = 1.0f / std::sqrt((float)HS);
    const tiled::Head x = tiled::head_of(qkv, b, h, T, C, HS);  // row t of q at x.q + t * x.ld
    const int64_t ld = x.ld;
    const float* dy = dout + b * T * C + h * HS;  // row t at dy + t * C
    const float* y = out + b * T * C + h * HS;
    const float* lse_h = lse + (b * NH + h) * T;
    float* dq = dqkv + b * T * 3 * C + h * HS;  // row t at dq + t * ld; dk, dv C and 2C on
    float* dk = dq + C;
    float* dv = dq + 2 * C;
    // The packed operands, per query block i: Q and dO as the A of S and dP (depth: the head's
    // dims), Q and dO as the B of dK and dV (depth: the block's queries); per key block j: K^T
    // and V^T as the B of S and dP (columns: keys), K as the B of dQ (depth: keys).
    const int64_t size_ah = a_size(ks, kBlk, kh), size_bt = b_size(kBlk, kh);
    const int64_t size_bd = b_size(HS, kBlk), size_pa = a_size(ks, kBlk, kBlk);
    Scratch& w = scratch();
    bf16* const qa = w.bf16s(nb * (2 * size_ah + 3 * size_bt + 3 * size_bd) + size_pa);
    bf16* const da = qa + nb * size_ah;
    bf16* const kt = da + nb * size_ah;
    bf16* const vt = kt + nb * size_bt;
    bf16* const qb = vt + nb * size_bt;
    bf16* const db = qb + nb * size_bd;
    bf16* const kb = db + nb * size_bd;
    bf16* const pa = kb + nb * size_bd;
    for (int64_t i = 0; i < nb; i++) {
        const int64_t t0 = i * kBlk, n = std::min(kBlk, T - t0);
        pack_a(ks, qa + i * size_ah, view(x.q + t0 * ld, ld, 1), n, HS, kh);
        pack_a(ks, da + i * size_ah, view(dy + t0 * C, C, 1), n, HS, kh);
        pack_b(ks, kt + i * size_bt, view(x.k + t0 * ld, ld, 1), n, HS, kh);
        pack_b(ks, vt + i * size_bt, view(x.v + t0 * ld, ld, 1), n, HS, kh);
        pack_b(ks, qb + i * size_bd, view(x.q + t0 * ld, 1, ld), HS, n, kBlk);
        pack_b(ks, db + i * size_bd, view(dy + t0 * C, 1, C), HS, n, kBlk);
        pack_b(ks, kb + i * size_bd, view(x.k + t0 * ld, 1, ld), HS, n, kBlk);
    }
    // D_t = dout_t . out_t (float32, unrounded: it stands for rowsum(P * dP))
    w.D.resize(T);
    float* const D = w.D.data();
    for (int64_t t = 0; t < T; t++) D[t] = dot<L>(dy + t * C, y + t * C, HS);
    w.s.resize(kBlk * kBlk);
    w.dp.resize(kBlk * kBlk);
    float* const s = w.s.data();    // S, then P
    float* const dp = w.dp.data();  // dP, then dS
    for (int64_t j = 0; j < nb; j++) {
        const int64_t k0 = j * kBlk, nk = std::min(kBlk, T - k0);
        for (int64_t i = j; i < nb; i++) {
            const int64_t q0 = i * kBlk, nq = std::min(kBlk, T - q0);
            product(ks, qa + i * size_ah, kt + j * size_bt, kh, s, kBlk, nq, nk, false);
            product(ks, da + i * size_ah, vt + j * size_bt, kh, dp, kBlk, nq, nk, false);
            for (int64_t r = 0; r < nq; r++) {
                const int64_t seen = std::min(nk, q0 + r - k0 + 1);
                tiled::p_row(s + r * kBlk, seen, lse_h[q0 + r], scale);
                tiled::ds_row(dp + r * kBlk, s + r * kBlk, seen, D[q0 + r], scale);
            }
            // dV_j += P^T dO_i and dK_j += dS^T Q_i (A: rows are keys, depth the queries)
            pack_a(ks, pa, view(s, 1, kBlk), nk, nq, kBlk);
            product(ks, pa, db + i * size_bd, kBlk, dv + k0 * ld, ld, nk, HS, i > j);
            pack_a(ks, pa, view(dp, 1, kBlk), nk, nq, kBlk);
            product(ks, pa, qb + i * size_bd, kBlk, dk + k0 * ld, ld, nk, HS, i > j);
            // dQ_i += dS K_j
            pack_a(ks, pa, view(dp, kBlk, 1), nq, nk, kBlk);
            product(ks, pa, kb + j * size_bd, kBlk, dq + q0 * ld, ld, nq, HS, j > 0);
        }
    }
}

// Runs item(ks, bh, Lanes<L>) for every head bh = b * NH + h, heads spread over the threads,
// compiled for the instruction set in use (vecmath.h), L its vector width in floats.
template <class F>
void for_each_head(int64_t B, int64_t NH, int64_t T, int64_t C, F&& item) {
    const bd::KernelSet& ks = bd::selected_kernels();
    const int64_t heads = B * NH;
    const bool parallel = heads > 1 && B * T * C > kMinParallelWork && max_threads() > 1;
#pragma omp parallel if (parallel)
    {
        ks.begin();
#pragma omp for schedule(dynamic, 1)
        for (int64_t bh = 0; bh < heads; bh++)
            with_isa_lanes([&](auto lanes) { item(ks, bh, lanes); });
        ks.end();
    }
}

}  // namespace

void attention_forward_bf16(float* out, float* lse, const float* qkv, int64_t B, int64_t T,
                            int64_t C, int64_t NH) {
    if (B <= 0 || T <= 0 || C <= 0) return;
    for_each_head(B, NH, T, C, [&](const bd::KernelSet& ks, int64_t bh, auto lanes) {
        forward_head<decltype(lanes)::value>(ks, out, lse, qkv, bh / NH, bh % NH, T, C, NH);
    });
}

void attention_backward_bf16(float* dqkv, const float* dout, const float* qkv, const float* out,
                             const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH) {
    if (B <= 0 || T <= 0 || C <= 0) return;
    for_each_head(B, NH, T, C, [&](const bd::KernelSet& ks, int64_t bh, auto lanes) {
        backward_head<decltype(lanes)::value>(ks, dqkv, dout, qkv, out, lse, bh / NH, bh % NH, T,
                                              C, NH);
    });
}

}  // namespace tinyroots
