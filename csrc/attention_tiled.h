// attention_tiled.h -- the fast attention: the arithmetic of attention.cpp's plain loops, tiled
// (FlashAttention-2 on a CPU) and register-blocked. Read attention.cpp first; ref.py's
// attention_forward_online is this forward's algorithm in NumPy.
//
//   forward   one work item = (b, h). Each tile of kBr queries walks the key tiles left of the
//             diagonal with an "online softmax": a running max m and sum l per query, and the
//             output accumulator rescaled by exp(m_old - m_new) whenever the max grows.
//   backward  one work item = (b, h): key tiles outer, query tiles inner, dK and dV of a key tile
//             summed in a small buffer, dQ summed straight into dqkv (this item owns the head).
//   With fewer than two heads per thread, both split the work finer instead: the forward into
//   items (b, h, query tile); the backward in two phases (dK, dV per key tile; then dQ per
//   query tile), at the price of computing P twice.
// Every item writes only its own part of the outputs, so no locks and no atomics, and the
// result is the same, bit for bit, for any thread count.
// Speed: K^T, V (and in the backward q, k, dout) are first copied into contiguous 64-row tiles
// (PackedTiles): in a per-head item by the thread that then uses them, while they sit in its
// L2 cache; with few heads, all at once before the items. The inner loops (dot_tile2,
// axpy_rows) keep their sums in vector registers (Vec<L>, vecmath.h) and take two queries at a
// time, so each vector loaded feeds two FMAs; on a diagonal tile only the keys a pair of
// queries sees are computed (about 63 GFLOP/s per core forward and 74 backward on an AVX-512
// Zen 4 at B16 T256 C384, counting only the causal half; the FMA peak is 105).
// The scale 1/sqrt(HS) sits where the plain loops and ref.py put it: applied to q . k in the
// forward, folded into dS in the backward.
//
// Included once, by attention.cpp: everything here is in namespace tinyroots::tiled.
#pragma once

#include <cmath>
#include <cstring>
#include <limits>
#include <type_traits>
#include <vector>

#include "vecmath.h"

namespace tinyroots {
namespace tiled {

constexpr int64_t kBr = 32;           // query rows per tile
constexpr int64_t kBc = 64;           // keys per tile
constexpr int64_t kMaxTiledHS = 256;  // larger heads take the plain loops (tiles outgrow L1/L2
                                      // and no GPT shape has them)
constexpr float kNegInf = -std::numeric_limits<float>::infinity();

inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }

// ---------------------------------------------------------------------------------------------
// attention dropout, fused: P_ij is kept with probability 1 - p and scaled by 1 / (1 - p). The
// mask is never stored: keep(bh, i, j) is a hash of (seed, head, row, column), recomputed by
// the backward exactly as the forward drew it (ref.attention_dropout_keep is its NumPy twin).
// In the forward the row sums l of the softmax take every P_ij, dropped or not (dropout acts
// after the softmax), and 1 / (1 - p) joins the final 1 / l; in the backward, with Pd = the
// kept-and-scaled P and out = Pd v:
//     dV = Pd^T dout;   dP = (dout v^T) * keep / (1 - p);   dS = P * (dP - D)
// where D_i = rowsum(dout_i * out_i) still equals sum_j P_ij dP_ij.
struct Dropout {
    uint32_t threshold = 0;  // keep when the hash is >= this: round(p * 2^32); 0 = no dropout
    float scale = 1.0f;      // 1 / (1 - p)
    uint64_t seed = 0;
    bool on() const { return threshold != 0; }
};

// A 32-bit integer hash (xorshift-multiply rounds; every output bit depends on every input bit).
inline uint32_t mix32(uint32_t x) {
    x ^= x >> 16;
    x *= 0x7feb352dU;
    x ^= x >> 15;
    x *= 0x846ca68bU;
    x ^= x >> 16;
    return x;
}

constexpr uint32_t kGolden32 = 0x9E3779B9U;  // 2^32 / golden ratio: spreads consecutive indices

// The key of row i of head bh (of T rows each): its columns hash it with their index.
inline uint32_t dropout_row_key(uint64_t seed, int64_t bh, int64_t T, int64_t i) {
    const uint64_t r = (uint64_t)bh * (uint64_t)T + (uint64_t)i;
    return mix32(mix32((uint32_t)seed ^ (uint32_t)r) ^ (uint32_t)(seed >> 32) ^
                 ((uint32_t)(r >> 32) * kGolden32));
}

// f[j] = keep(row, k0 + j) ? scale : 0 for the kBc columns of a key tile: the factors a row
// of P (or dP) is multiplied by. The backward uses each row's factors twice (dP, then P).
inline void dropout_factors(float* __restrict__ f, uint32_t row_key, int64_t k0,
                            uint32_t threshold, float scale) {
#pragma omp simd
    for (int64_t j = 0; j < kBc; j++) {
        const uint32_t u = mix32(row_key ^ ((uint32_t)(k0 + j) * kGolden32));
        f[j] = u >= threshold ? scale : 0.0f;
    }
}

// x[j] *= f[j] for a row of kBc; a dropped entry becomes exactly 0 (even an inf or a NaN)
inline void scale_row(float* __restrict__ x, const float* __restrict__ f) {
#pragma omp simd
    for (int64_t j = 0; j < kBc; j++) x[j] = f[j] != 0.0f ? x[j] * f[j] : 0.0f;
}

// ---------------------------------------------------------------------------------------------
// small building blocks. HS_T is the head size when known at compile time (64 for every GPT-2),
// so that the accumulators below live in registers; HS_T = 0 means "use the runtime HS".

// s[0:NV*L] = sum_d x[d] * kt[d, 0:NV*L] for a packed (HS, kBc) tile kt: one query against the
// first NV * L keys of a key tile. The sums are NV vectors that stay in registers through the
// loop over d; each step is a broadcast of x[d] and NV FMAs.
template <int L, int NV>
inline void dot_tile_nv(float* __restrict__ s, const float* __restrict__ x,
                        const float* __restrict__ kt, int64_t HS) {
    using V = typename Vec<L>::type;
    V a[NV];
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) a[v] = V{};
    for (int64_t d = 0; d < HS; d++) {
        const float xd = x[d];
        const float* __restrict__ row = kt + d * kBc;
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) a[v] += xd * loadv<L>(row + L * v);
    }
#pragma GCC unroll 16
    for (int v = 0; v < NV; v++) storev<L>(s + L * v, a[v]);
}

// dot_tile_nv for two queries at once: each vector of kt loaded feeds two FMAs, which halves the
// loads per FMA (a load per FMA is what limits the one-query version). Needs 2 NV accumulators:
// only AVX-512 (32 registers, L = 16) has room; other widths do one query at a time.
template <int L, int NV>
inline void dot_tile2_nv(float* __restrict__ s0, float* __restrict__ s1,
                         const float* __restrict__ x0, const float* __restrict__ x1,
                         const float* __restrict__ kt, int64_t HS) {
    if constexpr (L == 16) {
        using V = typename Vec<L>::type;
        V a[NV], b[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) a[v] = b[v] = V{};
        for (int64_t d = 0; d < HS; d++) {
            const float x0d = x0[d], x1d = x1[d];
            const float* __restrict__ row = kt + d * kBc;
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++) {
                const V k = loadv_shared<L>(row + L * v);
                a[v] += x0d * k;
                b[v] += x1d * k;
            }
        }
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            storev<L>(s0 + L * v, a[v]);
            storev<L>(s1 + L * v, b[v]);
        }
    } else {
        dot_tile_nv<L, NV>(s0, x0, kt, HS);
        dot_tile_nv<L, NV>(s1, x1, kt, HS);
    }
}

// The scores of queries x0 and x1 against the first `cols` keys of the tile kt, rounded up to
// whole vectors: s0[0:cols'] and s1[0:cols'] with cols <= cols' <= kBc; what lies past cols' is
// left as it was. A diagonal tile is seen only in part (query i sees keys up to i), and the
// keys no query of the pair sees are not computed: at T = 128 that is a third of the work.
template <int L>
inline void dot_tile2(float* __restrict__ s0, float* __restrict__ s1, const float* __restrict__ x0,
                      const float* __restrict__ x1, const float* __restrict__ kt, int64_t HS,
                      int64_t cols) {
    static_assert(kBc / L <= 16, "dot_tile2 dispatches on up to 16 vectors");
    const int64_t nv = cols <= L ? 1 : (cols + L - 1) / L;
    switch (nv >= kBc / L ? kBc / L : nv) {
#define TR_DOT_TILE2_CASE(N) \
        case N: if constexpr (N <= kBc / L) dot_tile2_nv<L, N>(s0, s1, x0, x1, kt, HS); break;
        TR_DOT_TILE2_CASE(1) TR_DOT_TILE2_CASE(2) TR_DOT_TILE2_CASE(3) TR_DOT_TILE2_CASE(4)
        TR_DOT_TILE2_CASE(5) TR_DOT_TILE2_CASE(6) TR_DOT_TILE2_CASE(7) TR_DOT_TILE2_CASE(8)
        TR_DOT_TILE2_CASE(9) TR_DOT_TILE2_CASE(10) TR_DOT_TILE2_CASE(11) TR_DOT_TILE2_CASE(12)
        TR_DOT_TILE2_CASE(13) TR_DOT_TILE2_CASE(14) TR_DOT_TILE2_CASE(15) TR_DOT_TILE2_CASE(16)
#undef TR_DOT_TILE2_CASE
        default: break;
    }
}

// o[0:HS] = c * o + sum_{j < n} w[j * w_stride] * rows[j * ld, 0:HS]
// (a weighted sum of n rows: P V, dS K, P^T dO and dS^T q are all this loop). With HS_T, a
// multiple of 16 known at compile time, o lives in HS_T / L vector registers throughout.
template <int L, int HS_T>
inline void axpy_rows(float* __restrict__ o, float c, const float* __restrict__ w, int64_t w_stride,
                      const float* __restrict__ rows, int64_t ld, int64_t n, int64_t HS_rt) {
    if constexpr (HS_T > 0) {
        static_assert(HS_T % L == 0, "compiled head sizes are multiples of the vector width");
        using V = typename Vec<L>::type;
        constexpr int NV = HS_T / L;
        V acc[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) acc[v] = c * loadv<L>(o + L * v);
        for (int64_t j = 0; j < n; j++) {
            const float wj = w[j * w_stride];
            const float* __restrict__ r = rows + j * ld;
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++) acc[v] += wj * loadv<L>(r + L * v);
        }
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) storev<L>(o + L * v, acc[v]);
    } else {  // the plain twin, any HS
        for (int64_t d = 0; d < HS_rt; d++) o[d] *= c;
        for (int64_t j = 0; j < n; j++) {
            const float wj = w[j * w_stride];
            const float* __restrict__ r = rows + j * ld;
#pragma omp simd
            for (int64_t d = 0; d < HS_rt; d++) o[d] += wj * r[d];
        }
    }
}

// axpy_rows for two outputs over the same rows (o0 with weights w0, o1 with w1): each row loaded
// feeds two FMAs. With AVX-512 and HS <= 64 the 2 HS / 16 accumulators fit in registers; other
// cases do one output at a time.
template <int L, int HS_T>
inline void axpy_rows2(float* __restrict__ o0, float c0, const float* __restrict__ w0,
                       float* __restrict__ o1, float c1, const float* __restrict__ w1,
                       int64_t w_stride, const float* __restrict__ rows, int64_t ld, int64_t n,
                       int64_t HS_rt) {
    if constexpr (L == 16 && HS_T > 0 && HS_T <= 64) {
        using V = typename Vec<L>::type;
        constexpr int NV = HS_T / L;
        V a[NV], b[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            a[v] = c0 * loadv<L>(o0 + L * v);
            b[v] = c1 * loadv<L>(o1 + L * v);
        }
        for (int64_t j = 0; j < n; j++) {
            const float u = w0[j * w_stride], t = w1[j * w_stride];
            const float* __restrict__ r = rows + j * ld;
#pragma GCC unroll 16
            for (int v = 0; v < NV; v++) {
                const V rv = loadv_shared<L>(r + L * v);
                a[v] += u * rv;
                b[v] += t * rv;
            }
        }
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) {
            storev<L>(o0 + L * v, a[v]);
            storev<L>(o1 + L * v, b[v]);
        }
    } else {
        axpy_rows<L, HS_T>(o0, c0, w0, w_stride, rows, ld, n, HS_rt);
        axpy_rows<L, HS_T>(o1, c1, w1, w_stride, rows, ld, n, HS_rt);
    }
}

// s[j] = q . k_j for j < n, k_j = k + j * ld: one query against n keys in place, unpacked (the
// decoding case, where packing would double the memory traffic). q stays in HS_T / L registers;
// each key is HS_T / L FMAs and one horizontal sum.
template <int L, int HS_T>
inline void dot_rows(float* __restrict__ s, const float* __restrict__ q,
                     const float* __restrict__ k, int64_t ld, int64_t n, int64_t HS_rt) {
    if constexpr (HS_T > 0) {
        using V = typename Vec<L>::type;
        constexpr int NV = HS_T / L;
        V qv[NV];
#pragma GCC unroll 16
        for (int v = 0; v < NV; v++) qv[v] = loadv<L>(q + L * v);
        for (int64_t j = 0; j < n; j++) {
            const float* __restrict__ kj = k + j * ld;
            V acc = qv[0] * loadv<L>(kj);
#pragma GCC unroll 16
            for (int v = 1; v < NV; v++) acc += qv[v] * loadv<L>(kj + L * v);
            s[j] = hsum<L>(acc);
        }
    } else {  // the plain twin, any HS
        for (int64_t j = 0; j < n; j++) s[j] = rowops::dot(q, k + j * ld, HS_rt);
    }
}

// kt[d, j] = rows[j * ld + d] for j < n, zero for n <= j < kBc: a key (or value) tile transposed
// so that dot_tile2 reads it along j. Zero padding keeps the unused columns finite.
inline void pack_transposed(float* __restrict__ kt, const float* __restrict__ rows, int64_t ld,
                            int64_t n, int64_t HS) {
    for (int64_t d = 0; d < HS; d++) {
        float* __restrict__ dst = kt + d * kBc;
#pragma omp simd
        for (int64_t j = 0; j < n; j++) dst[j] = rows[j * ld + d];  // a gather down a column
        for (int64_t j = n; j < kBc; j++) dst[j] = 0.0f;
    }
}

// dst[j, d] = rows[j * ld + d] for j < n, zero rows for n <= j < kBc: a tile of rows made
// contiguous (64 rows of one head are otherwise 3C floats apart, one page each: TLB misses).
inline void pack_rows(float* __restrict__ dst, const float* __restrict__ rows, int64_t ld,
                      int64_t n, int64_t HS) {
    for (int64_t j = 0; j < n; j++) std::memcpy(dst + j * HS, rows + j * ld, sizeof(float) * HS);
    for (int64_t e = n * HS; e < kBc * HS; e++) dst[e] = 0.0f;
}

// Where head h of batch b lives in qkv (B, T, 3C) and in a (B, T, C) array.
struct Head {
    const float *q, *k, *v;  // row t of head h starts at q + t * ld
    int64_t ld;              // 3C
    int64_t ldo;             // C: row stride of out, dout and of one third of dqkv
    int64_t col;             // h * HS: the head's column in out / dout
};

inline Head head_of(const float* qkv, int64_t b, int64_t h, int64_t T, int64_t C, int64_t HS) {
    const float* base = qkv + b * T * 3 * C + h * HS;
    return Head{base, base + C, base + 2 * C, 3 * C, C, h * HS};
}

// ---------------------------------------------------------------------------------------------
// one query row, vectorized: attention_decode's whole work

// One query against keys 0 .. n-1: o (HS,) = softmax(q . k_j * scale) v, returns the row's lse.
// s is scratch of n floats.
template <int L, int HS_T>
inline float attend_row(float* __restrict__ o, const float* __restrict__ q,
                        const float* __restrict__ k, int64_t ldk, const float* __restrict__ v,
                        int64_t ldv, int64_t n, int64_t HS_rt, float scale,
                        float* __restrict__ s) {
    const int64_t HS = HS_T > 0 ? HS_T : HS_rt;
    dot_rows<L, HS_T>(s, q, k, ldk, n, HS);
#pragma omp simd
    for (int64_t j = 0; j < n; j++) s[j] *= scale;
    const float m = rowops::max(s, n);
    const float l = rowops::exp_store(s, s, n, m);
    for (int64_t d = 0; d < HS; d++) o[d] = 0.0f;
    axpy_rows<L, HS_T>(o, 0.0f, s, 1, v, ldv, n, HS);
    const float inv = 1.0f / l;
    for (int64_t d = 0; d < HS; d++) o[d] *= inv;
    return m + std::log(l);
}

// ---------------------------------------------------------------------------------------------
// keys and values, packed once per call

// One of q, k, v for every head, cut in tiles of kBc rows, each tile contiguous (16 KB at HS = 64):
//     transposed:  tile(bh, kt)[d * kBc + j] = x[b, kt * kBc + j, h, d]   (dot_tile2 reads K^T)
//     rows:        tile(bh, kt)[j * HS + d]  = x[b, kt * kBc + j, h, d]   (axpy_rows reads V)
// with zeros for rows past T. Packing once per call, rather than once per query tile, moves
// each key exactly once. In the rows layout the tiles of a head follow each other, so row t of
// head bh is simply tile(bh, 0) + t * HS.
struct PackedTiles {
    float* data = nullptr;  // in a packing_buffer
    int64_t n_kt = 0, HS = 0;
    const float* tile(int64_t bh, int64_t kt) const { return data + (bh * n_kt + kt) * HS * kBc; }
};

// Memory for the packed copies, kept from one call to the next: a training loop calls attention
// with the same shapes every step, and fresh buffers would page-fault every 4 KB each time (about
// a tenth of the kernel's time). One set per thread (the calling thread's when every head is
// packed at once, each worker's own in the per-head schedules), so two Python threads calling
// at once never share one. The price: the largest packed size seen stays allocated (up to 5x
// the size of k).
inline float* packing_buffer(int slot, int64_t n) {
    thread_local std::vector<float> buffers[5];
    std::vector<float>& buf = buffers[slot];
    if ((int64_t)buf.size() < n) buf.resize(n);
    return buf.data();
}

// What to pack: row t of head (b, h) is at src + (b * T + t) * ld + col + h * HS. For qkv,
// ld = 3C and col is 0, C or 2C for q, k, v; for dout, ld = C and col = 0.
struct PackSpec {
    const float* src;
    int64_t ld, col;
    bool transposed;
};

// Tile k0 / kBc (rows k0 .. k0 + kBc) of head (b, h) of one spec, into dst (HS * kBc floats).
inline void pack_tile(float* dst, const PackSpec& sp, int64_t b, int64_t h, int64_t k0,
                      int64_t T, int64_t HS) {
    const float* rows = sp.src + (b * T + k0) * sp.ld + sp.col + h * HS;
    if (sp.transposed)
        pack_transposed(dst, rows, sp.ld, min64(kBc, T - k0), HS);
    else
        pack_rows(dst, rows, sp.ld, min64(kBc, T - k0), HS);
}

// Every tile of head (b, h) of one spec, into dst (n_kt * HS * kBc floats), on the calling
// thread (from inside with_isa, so that it is compiled for the instruction set in use).
inline void pack_head(float* dst, const PackSpec& sp, int64_t b, int64_t h, int64_t T,
                      int64_t HS) {
    for (int64_t k0 = 0; k0 < T; k0 += kBc) pack_tile(dst + k0 * HS, sp, b, h, k0, T, HS);
}

// Packs n specs into out[0 .. n) (buffer slots 0 .. n), all in one parallel loop: one start
// of the thread team per call instead of one per array.
inline void pack_heads(PackedTiles* out, const PackSpec* specs, int n, int64_t B, int64_t T, int64_t C,
                int64_t NH) {
    const int64_t HS = C / NH, n_kt = (T + kBc - 1) / kBc, items = B * NH * n_kt;
    for (int a = 0; a < n; a++) {
        out[a].HS = HS;
        out[a].n_kt = n_kt;
        out[a].data = packing_buffer(a, items * HS * kBc);  // every element is written below
    }
    const bool parallel = n * items > 1 && n * B * T * C > kMinParallelWork;
#pragma omp parallel for schedule(static) if (parallel)
    for (int64_t job = 0; job < n * items; job++) {
        const PackSpec& sp = specs[job / items];
        const int64_t item = job % items;
        const int64_t bh = item / n_kt, kt = item % n_kt;
        float* dst = out[job / items].data + item * HS * kBc;
        with_isa([&] { pack_tile(dst, sp, bh / NH, bh % NH, kt * kBc, T, HS); });
    }
}

// Calls body(std::integral_constant<int, HS_T>) with HS_T = HS for the head sizes compiled
// specially (GPT-2 uses 64; small models 16 or 32), else with HS_T = 0 (runtime HS).
template <class F>
void with_head_size(int64_t HS, F&& body) {
    switch (HS) {
        case 64: body(std::integral_constant<int, 64>{}); break;
        case 32: body(std::integral_constant<int, 32>{}); break;
        case 16: body(std::integral_constant<int, 16>{}); break;
        case 128: body(std::integral_constant<int, 128>{}); break;
        default: body(std::integral_constant<int, 0>{}); break;
    }
}

// ---------------------------------------------------------------------------------------------
// tiled forward

// Per-thread scratch for the forward.
struct ForwardScratch {
    std::vector<float> o, m, l, c, s;  // s: the tile's scores, then its exp(S - m), kBr x kBc
    std::vector<float> keep;           // one row's dropout factors
    explicit ForwardScratch(int64_t HS)
        : o(kBr * HS), m(kBr), l(kBr), c(kBr), s((kBr + 1) * kBc), keep(kBc) {}
};

// One online-softmax step of one query row against one key tile. On entry s[0:n] holds the raw
// scores q . k_j of the n keys the query sees; on return s[0:kBc] holds exp(S_j - m_new) for
// j < n and zeros past n, the running max *m and sum *l are updated, and the factor that
// rescales what was summed before (exp(m_old - m_new)) is returned.
// Every loop runs over the whole row of kBc, the unseen keys masked: whole vectors, no tails,
// and the sum is added as kBc / L vectors, then across lanes as a tree (an `omp simd` sum ends
// in a chain of L dependent scalar adds, a tenth of the forward's time at kBc = 64).
template <int L>
inline float online_softmax_step(float* __restrict__ s, int64_t n, float scale, float* m,
                                 float* l) {
    if (n <= 0) {  // the query sees none of these keys: nothing changes
        for (int64_t j = 0; j < kBc; j++) s[j] = 0.0f;
        return 1.0f;
    }
    float tile_max = kNegInf;
#pragma omp simd reduction(max : tile_max)
    for (int64_t j = 0; j < kBc; j++) {
        const float x = j < n ? s[j] * scale : kNegInf;
        s[j] = x;
        tile_max = x > tile_max ? x : tile_max;
    }
    // the running max grows to m_new, so everything summed so far (l and o) was scaled by
    // exp(-m_old) and must be rescaled by exp(m_old - m_new); exp(-inf) = 0 on the first tile
    // and for the masked keys.
    const float m_new = *m > tile_max ? *m : tile_max;
    const float correction = exp_approx(*m - m_new);
#pragma omp simd
    for (int64_t j = 0; j < kBc; j++) s[j] = exp_approx(s[j] - m_new);
    using V = typename Vec<L>::type;
    V sum = loadv<L>(s);
#pragma GCC unroll 16
    for (int64_t j = L; j < kBc; j += L) sum += loadv<L>(s + j);
    *l = *l * correction + hsum<L>(sum);
    *m = m_new;
    return correction;
}

// Queries [q0, q1) of head bh = b * NH + h: their rows of out and lse. Queries go two at a time
// (dot_tile2, axpy_rows2) so that each key and value loaded serves both.
// kt_head, v_head: the head's packed K^T and V, tile k0 / kBc at + k0 * HS.
template <int L, int HS_T>
void forward_tile(float* out, float* lse, const float* qkv, const float* kt_head,
                  const float* v_head, int64_t bh, int64_t q0, int64_t q1, int64_t T, int64_t C,
                  int64_t NH, const Dropout& drop, ForwardScratch& w) {
    const int64_t HS = HS_T > 0 ? HS_T : C / NH, b = bh / NH;
    const float scale = 1.0f / std::sqrt((float)HS);
    const Head x = head_of(qkv, b, bh % NH, T, C, HS);
    float* __restrict__ o = w.o.data();
    float* __restrict__ m = w.m.data();
    float* __restrict__ l = w.l.data();
    for (int64_t r = 0; r < q1 - q0; r++) {
        m[r] = kNegInf;
        l[r] = 0.0f;
        for (int64_t d = 0; d < HS; d++) o[r * HS + d] = 0.0f;
    }
    // causal: the last query of the tile sees keys up to q1 - 1. Each key tile in two passes,
    // each reading one packed 16 KB tile (K^T, then V), so that it stays in L1 across the pass.
    float* __restrict__ c = w.c.data();
    for (int64_t k0 = 0; k0 < q1; k0 += kBc) {
        const int64_t nk = min64(kBc, q1 - k0);
        const float* ktile = kt_head + k0 * HS;
        const float* vrows = v_head + k0 * HS;
        // pass 1: the scores of every query of the tile (an odd last one paired with itself,
        // its twin landing in the spare row kBr of s), then their online softmax step
        for (int64_t i = q0; i < q1; i += 2) {
            const int64_t r = i - q0, i1 = i + 1 < q1 ? i + 1 : i;
            if (i - k0 + 2 <= 0) continue;  // neither query sees a key of this tile
            float* s0 = w.s.data() + r * kBc;
            float* s1 = i1 > i ? s0 + kBc : w.s.data() + kBr * kBc;
            dot_tile2<L>(s0, s1, x.q + i * x.ld, x.q + i1 * x.ld, ktile, HS,
                         min64(nk, i1 - k0 + 1));
        }
        for (int64_t i = q0; i < q1; i++) {
            const int64_t r = i - q0, n = min64(nk, i - k0 + 1);  // keys of this tile i sees
            // (zeros past n, so the pair's sum below reads zeros where only the second sees)
            c[r] = online_softmax_step<L>(w.s.data() + r * kBc, n, scale, m + r, l + r);
            if (drop.on()) {  // l took every exp(S - m); o takes the kept ones (scale at the end)
                dropout_factors(w.keep.data(), dropout_row_key(drop.seed, bh, T, i), k0,
                                drop.threshold, 1.0f);
                scale_row(w.s.data() + r * kBc, w.keep.data());
            }
        }
        // pass 2: o = c o + exp(S - m) v, two queries at a time
        for (int64_t i = q0; i < q1; i += 2) {
            const int64_t r = i - q0;
            const float* s0 = w.s.data() + r * kBc;
            if (i + 1 < q1) {
                const int64_t n1 = min64(nk, i - k0 + 2);  // keys the pair's second query sees
                if (n1 <= 0) continue;
                axpy_rows2<L, HS_T>(o + r * HS, c[r], s0, o + (r + 1) * HS, c[r + 1], s0 + kBc,
                                    1, vrows, HS, n1, HS);
            } else {
                const int64_t n0 = min64(nk, i - k0 + 1);
                if (n0 > 0) axpy_rows<L, HS_T>(o + r * HS, c[r], s0, 1, vrows, HS, n0, HS);
            }
        }
    }
    float* lse_h = lse + bh * T;
    for (int64_t i = q0; i < q1; i++) {
        const int64_t r = i - q0;
        const float inv = drop.scale / l[r];
        float* __restrict__ orow = out + (b * T + i) * C + x.col;
#pragma omp simd
        for (int64_t d = 0; d < HS; d++) orow[d] = o[r * HS + d] * inv;
        lse_h[i] = m[r] + std::log(l[r]);
    }
}

// ---------------------------------------------------------------------------------------------
// tiled backward

struct BackwardScratch {
    std::vector<float> p, ds, dk, dv, D, s;
    std::vector<float> keep;  // the block's dropout factors, kBr x kBc, for dP and then P
    BackwardScratch(int64_t HS, int64_t T)
        : p(kBr * kBc), ds(kBr * kBc), dk(kBc * HS), dv(kBc * HS), D(T), s(2 * kBc),
          keep(kBr * kBc) {}
};

// The packed copies of everything the backward reads (see PackedTiles).
struct BackwardInputs {
    PackedTiles q, k, dy;  // rows layout: row t of head bh at tile(bh, 0) + t * HS
    PackedTiles kt, vt;    // K^T and V^T tiles, for dot_tile2
};

// The tensors of one head in the backward.
struct HeadGrad {
    const float *q, *k, *dy;  // packed rows (stride HS)
    const float *kt, *vt;     // packed K^T, V^T tiles: tile k0 / kBc at kt + k0 * HS
    const float* dout;        // dout and out rows of this head, as given (stride C)
    const float* y;
    const float* lse;         // (T,)
    float* dq;                // dqkv rows of this head: dq, dk, dv (stride 3C)
    float* dk;
    float* dv;
    int64_t ld, ldo;          // 3C, C
    float scale;
    Dropout drop;
    int64_t bh, T;            // the head and its rows: the dropout mask's coordinates
};

// Head bh, whose packed copies are head in_bh of `in` (bh itself when every head was packed;
// 0 when `in` holds just the one head).
inline HeadGrad head_grad_of(float* dqkv, const float* dout, const float* out, const float* lse,
                      const BackwardInputs& in, int64_t in_bh, int64_t bh, int64_t T, int64_t C,
                      int64_t NH, const Dropout& drop) {
    const int64_t HS = C / NH, b = bh / NH, h = bh % NH, p = in_bh;
    float* dq = dqkv + b * T * 3 * C + h * HS;
    const int64_t o = b * T * C + h * HS;
    return HeadGrad{in.q.tile(p, 0),   in.k.tile(p, 0), in.dy.tile(p, 0), in.kt.tile(p, 0),
                    in.vt.tile(p, 0),  dout + o,        out + o,          lse + bh * T,
                    dq,                dq + C,           dq + 2 * C,        3 * C,
                    C,                 1.0f / std::sqrt((float)HS), drop,
                    bh,                T};
}

// D_i = rowsum(dout_i * out_i) for rows [i0, i1), into w.D[i]. With HS_T known, in vector
// registers: the plain dot here is a scalar chain of dependent adds (a reduction the compiler
// will not reorder), which cost about 5% of the whole backward at T = 256.
template <int L, int HS_T>
void compute_D(BackwardScratch& w, const HeadGrad& g, int64_t i0, int64_t i1, int64_t HS) {
    if constexpr (HS_T > 0 && HS_T % L == 0) {
        using V = typename Vec<L>::type;
        constexpr int NV = HS_T / L;
        for (int64_t i = i0; i < i1; i++) {
            const float* __restrict__ dy = g.dout + i * g.ldo;
            const float* __restrict__ y = g.y + i * g.ldo;
            V acc = loadv<L>(dy) * loadv<L>(y);
#pragma GCC unroll 16
            for (int v = 1; v < NV; v++) acc += loadv<L>(dy + L * v) * loadv<L>(y + L * v);
            w.D[i] = hsum<L>(acc);
        }
    } else {
        for (int64_t i = i0; i < i1; i++)
            w.D[i] = rowops::dot(g.dout + i * g.ldo, g.y + i * g.ldo, HS);
    }
}

// Row i of P for the key tile whose n first keys query i sees: on entry p holds the scores
// s_j = q_i . k_j (unscaled), on return P_ij = exp(s_j * scale - lse_i), and exactly 0 for the
// masked and padding columns.
inline void p_row(float* __restrict__ p, int64_t n, float lse_i, float scale) {
#pragma omp simd
    for (int64_t j = 0; j < kBc; j++) p[j] = j < n ? exp_approx(p[j] * scale - lse_i) : 0.0f;
}

// Row i of dS from its row of P: on entry ds holds dP_ij = dout_i . v_j, on return
//     dS_ij = P_ij (dP_ij - D_i) * scale
// (the scale of S folded into dS, since dQ and dK both need it) for j < n; 0 past n, where
// dP was not computed.
inline void ds_row(float* __restrict__ ds, const float* __restrict__ p, int64_t n, float D_i,
                   float scale) {
#pragma omp simd
    for (int64_t j = 0; j < kBc; j++) ds[j] = j < n ? p[j] * (ds[j] - D_i) * scale : 0.0f;
}

// One (query tile, key tile) block: queries [q0, q1) against keys [k0, k0 + nk). The forward
// lines it differentiates:
//     S = q k^T * scale;  P = exp(S - lse);  out = P v
// so, with D_i = rowsum(dout_i * out_i):
//     dV += P^T dout;   dP = dout v^T;   dS = P * (dP - D);
//     dQ += dS k * scale;   dK += dS^T q * scale
// dQ rows are added into dqkv directly; dK and dV into w.dk, w.dv (this key tile's buffers).
// Rows (and below, keys) go two at a time so that every vector loaded feeds two FMAs.
template <int L, int HS_T>
void backward_block(const HeadGrad& g, int64_t k0, int64_t nk, int64_t q0, int64_t q1,
                    bool want_dq, bool want_dkv, int64_t HS_rt, BackwardScratch& w) {
    const int64_t HS = HS_T > 0 ? HS_T : HS_rt;
    const float* ktile = g.kt + k0 * HS;
    const float* vtile = g.vt + k0 * HS;
    const float* krows = g.k + k0 * HS;
    // Three passes over the block's rows, each reading one packed 16 KB tile (K^T, then V^T,
    // then K), so that the tile stays in L1 across the pass; interleaving them per row pair
    // kept 32 KB and more in flight and streamed the tiles from L2.
    // pass 1: P = exp(S - lse) into w.p, from S = q k^T (unscaled)
    float* __restrict__ s0 = w.s.data();
    float* __restrict__ s1 = s0 + kBc;
    for (int64_t i = q0; i < q1; i += 2) {
        const int64_t r = i - q0;
        const bool pair = i + 1 < q1;
        const int64_t i1 = pair ? i + 1 : i;  // an odd last row is paired with itself
        float* p0 = w.p.data() + r * kBc;
        float* p1 = pair ? p0 + kBc : s1;     // (unpaired: row i + 1's results land in scratch)
        dot_tile2<L>(p0, p1, g.q + i * HS, g.q + i1 * HS, ktile, HS, min64(nk, i1 - k0 + 1));
        p_row(p0, min64(nk, i - k0 + 1), g.lse[i], g.scale);
        if (pair) p_row(p1, min64(nk, i1 - k0 + 1), g.lse[i1], g.scale);
    }
    // pass 2: dS = P (dP - D) * scale into w.ds, from dP = dout v^T
    for (int64_t i = q0; i < q1; i += 2) {
        const int64_t r = i - q0;
        const bool pair = i + 1 < q1;
        const int64_t i1 = pair ? i + 1 : i;
        float* ds0 = w.ds.data() + r * kBc;
        float* ds1 = pair ? ds0 + kBc : s1;
        dot_tile2<L>(ds0, ds1, g.dy + i * HS, g.dy + i1 * HS, vtile, HS,  // dP
                     min64(nk, i1 - k0 + 1));
        if (g.drop.on()) {  // dP of the dropped probabilities, back to those before dropout
            float* f0 = w.keep.data() + r * kBc;
            dropout_factors(f0, dropout_row_key(g.drop.seed, g.bh, g.T, i), k0, g.drop.threshold,
                            g.drop.scale);
            scale_row(ds0, f0);
            if (pair) {
                dropout_factors(f0 + kBc, dropout_row_key(g.drop.seed, g.bh, g.T, i1), k0,
                                g.drop.threshold, g.drop.scale);
                scale_row(ds1, f0 + kBc);
            }
        }
        ds_row(ds0, w.p.data() + r * kBc, min64(nk, i - k0 + 1), w.D[i], g.scale);
        if (pair)
            ds_row(ds1, w.p.data() + (r + 1) * kBc, min64(nk, i1 - k0 + 1), w.D[i1], g.scale);
    }
    // pass 3: dQ += dS k (the scale is in dS)
    if (want_dq) {
        for (int64_t i = q0; i < q1; i += 2) {
            const int64_t r = i - q0;
            const bool pair = i + 1 < q1;
            const int64_t n0 = min64(nk, i - k0 + 1), n1 = min64(nk, i - k0 + 2);
            const float* ds0 = w.ds.data() + r * kBc;
            if (pair && n1 > 0)
                axpy_rows2<L, HS_T>(g.dq + i * g.ld, 1.0f, ds0, g.dq + (i + 1) * g.ld, 1.0f,
                                    ds0 + kBc, 1, krows, HS, n1, HS);
            else if (n0 > 0)
                axpy_rows<L, HS_T>(g.dq + i * g.ld, 1.0f, ds0, 1, krows, HS, n0, HS);
        }
    }
    if (!want_dkv) return;
    if (g.drop.on())  // dV takes the probabilities out = Pd v used: kept and scaled
        for (int64_t r = 0; r < q1 - q0; r++)
            scale_row(w.p.data() + r * kBc, w.keep.data() + r * kBc);
    // dV_j += sum_i P_ij dout_i and dK_j += sum_i dS_ij q_i, over the queries i >= k0 + j that
    // see key j (the rows above have P = dS = 0, so a pair can start at the first key's row).
    for (int64_t j = 0; j < nk; j += 2) {
        const int64_t i0 = max64(q0, k0 + j);
        if (i0 >= q1) continue;
        const int64_t r0 = i0 - q0, n = q1 - i0;
        const float* pc = w.p.data() + r0 * kBc + j;  // column j of P, stride kBc
        const float* dsc = w.ds.data() + r0 * kBc + j;
        float* dv = w.dv.data() + j * HS;
        float* dk = w.dk.data() + j * HS;
        if (j + 1 < nk) {
            axpy_rows2<L, HS_T>(dv, 1.0f, pc, dv + HS, 1.0f, pc + 1, kBc, g.dy + i0 * HS, HS, n,
                                HS);
            axpy_rows2<L, HS_T>(dk, 1.0f, dsc, dk + HS, 1.0f, dsc + 1, kBc, g.q + i0 * HS, HS, n,
                                HS);
        } else {
            axpy_rows<L, HS_T>(dv, 1.0f, pc, kBc, g.dy + i0 * HS, HS, n, HS);
            axpy_rows<L, HS_T>(dk, 1.0f, dsc, kBc, g.q + i0 * HS, HS, n, HS);
        }
    }
}

// dK and dV of the key tile [k0, k0 + kBc), from every query tile that sees it; when want_dq,
// also adds this key tile's share of dQ (the per-head schedule).
template <int L, int HS_T>
void backward_key_tile(const HeadGrad& g, int64_t k0, int64_t T, int64_t HS, bool want_dq,
                       BackwardScratch& w) {
    const int64_t nk = min64(kBc, T - k0);
    for (int64_t e = 0; e < kBc * HS; e++) w.dk[e] = w.dv[e] = 0.0f;
    for (int64_t q0 = k0; q0 < T; q0 += kBr)
        backward_block<L, HS_T>(g, k0, nk, q0, min64(q0 + kBr, T), want_dq, true, HS, w);
    for (int64_t j = 0; j < nk; j++) {
        std::memcpy(g.dk + (k0 + j) * g.ld, w.dk.data() + j * HS, sizeof(float) * HS);
        std::memcpy(g.dv + (k0 + j) * g.ld, w.dv.data() + j * HS, sizeof(float) * HS);
    }
}

// dQ of the query tile [q0, q1) alone, from every key tile it sees (the split schedule).
template <int L, int HS_T>
void backward_query_tile(const HeadGrad& g, int64_t q0, int64_t q1, int64_t HS,
                         BackwardScratch& w) {
    for (int64_t i = q0; i < q1; i++)
        for (int64_t d = 0; d < HS; d++) g.dq[i * g.ld + d] = 0.0f;
    for (int64_t k0 = 0; k0 < q1; k0 += kBc)
        backward_block<L, HS_T>(g, k0, min64(kBc, q1 - k0), q0, q1, true, false, HS, w);
}

// ---------------------------------------------------------------------------------------------
// the schedules: which thread does which head or tile

inline void forward(float* out, float* lse, const float* qkv, int64_t B, int64_t T, int64_t C,
                    int64_t NH, const Dropout& drop = Dropout()) {
    const int64_t HS = C / NH;
    if (B * T * C == 0) return;
    const bool parallel = B * NH * T * T * HS > 8 * kMinParallelWork;
    const PackSpec specs[2] = {{qkv, 3 * C, C, true},        // K^T
                               {qkv, 3 * C, 2 * C, false}};  // V
    const int64_t n_qt = (T + kBr - 1) / kBr, n_kt = (T + kBc - 1) / kBc;
    const int64_t threads = parallel ? max_threads() : 1;
    if (B * NH >= 2 * threads) {
        // One item per head: the thread packs the head's K^T and V (2 x 64 KB at T = 256,
        // HS = 64) and runs all its query tiles while they are still in its L2 cache.
#pragma omp parallel if (parallel)
        {
            ForwardScratch w(HS);
            float* kt_head = packing_buffer(0, n_kt * HS * kBc);
            float* v_head = packing_buffer(1, n_kt * HS * kBc);
#pragma omp for schedule(dynamic, 1)
            for (int64_t bh = 0; bh < B * NH; bh++) {
                with_isa_lanes([&](auto lanes) {
                    with_head_size(HS, [&](auto hs) {
                        constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                        pack_head(kt_head, specs[0], bh / NH, bh % NH, T, HS);
                        pack_head(v_head, specs[1], bh / NH, bh % NH, T, HS);
                        for (int64_t q0 = 0; q0 < T; q0 += kBr)
                            forward_tile<L, HS_T>(out, lse, qkv, kt_head, v_head, bh, q0,
                                                  min64(q0 + kBr, T), T, C, NH, drop, w);
                    });
                });
            }
        }
        return;
    }
    // Few heads (batch 1 with few heads, or many threads): pack every head first, in parallel,
    // then items (query tile, b, h), heaviest first (the last query tile sees the most keys),
    // handed out dynamically so the causal triangle's uneven work evens out.
    PackedTiles packed[2];
    pack_heads(packed, specs, 2, B, T, C, NH);
    const PackedTiles &kt = packed[0], &vp = packed[1];
    const int64_t items = n_qt * B * NH;
#pragma omp parallel if (parallel)
    {
        ForwardScratch w(HS);
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < items; item++) {
            const int64_t qt = n_qt - 1 - item / (B * NH), bh = item % (B * NH);
            const int64_t q0 = qt * kBr, q1 = min64(q0 + kBr, T);
            with_isa_lanes([&](auto lanes) {
                with_head_size(HS, [&](auto hs) {
                    constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                    forward_tile<L, HS_T>(out, lse, qkv, kt.tile(bh, 0), vp.tile(bh, 0), bh,
                                          q0, q1, T, C, NH, drop, w);
                });
            });
        }
    }
}

inline void backward(float* dqkv, const float* dout, const float* qkv, const float* out,
                     const float* lse, int64_t B, int64_t T, int64_t C, int64_t NH,
                     const Dropout& drop = Dropout()) {
    const int64_t HS = C / NH;
    if (B * T * C == 0) return;
    const int64_t heads = B * NH;
    const bool parallel = heads * T * T * HS > 8 * kMinParallelWork;
    const PackSpec specs[5] = {{qkv, 3 * C, 0, false},     // Q
                               {qkv, 3 * C, C, false},     // K
                               {dout, C, 0, false},        // dout
                               {qkv, 3 * C, C, true},      // K^T
                               {qkv, 3 * C, 2 * C, true}};  // V^T
    const int64_t threads = parallel ? max_threads() : 1;
    const int64_t n_kt = (T + kBc - 1) / kBc, n_qt = (T + kBr - 1) / kBr;
    if (heads >= 2 * threads) {
        // One item per head: the thread packs the head's five arrays (5 x 64 KB at T = 256,
        // HS = 64), which then stay in its L2 cache, and sums dQ, dK and dV of the head.
#pragma omp parallel if (parallel)
        {
            BackwardScratch w(HS, T);
            PackedTiles mine[5];  // this thread's packed copies of its current head
            for (int a = 0; a < 5; a++)
                mine[a] = PackedTiles{packing_buffer(a, n_kt * HS * kBc), n_kt, HS};
            const BackwardInputs in{mine[0], mine[1], mine[2], mine[3], mine[4]};
#pragma omp for schedule(dynamic, 1)
            for (int64_t bh = 0; bh < heads; bh++) {
                const HeadGrad g = head_grad_of(dqkv, dout, out, lse, in, 0, bh, T, C, NH, drop);
                with_isa_lanes([&](auto lanes) {
                    with_head_size(HS, [&](auto hs) {
                        constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                        for (int a = 0; a < 5; a++)
                            pack_head(mine[a].data, specs[a], bh / NH, bh % NH, T, HS);
                        compute_D<L, HS_T>(w, g, 0, T, HS);
                        for (int64_t i = 0; i < T; i++)
                            for (int64_t d = 0; d < HS; d++) g.dq[i * g.ld + d] = 0.0f;
                        for (int64_t k0 = 0; k0 < T; k0 += kBc)
                            backward_key_tile<L, HS_T>(g, k0, T, HS, true, w);
                    });
                });
            }
        }
        return;
    }
    // Too few heads to keep every thread busy: pack every head first, in parallel; then split
    // each head's work by tiles, in two phases (dK, dV per key tile; then dQ per query tile).
    // Each phase writes disjoint rows of dqkv.
    PackedTiles packed[5];
    pack_heads(packed, specs, 5, B, T, C, NH);
    const BackwardInputs in{packed[0], packed[1], packed[2], packed[3], packed[4]};
#pragma omp parallel if (parallel)
    {
        BackwardScratch w(HS, T);
#pragma omp for schedule(dynamic, 1) nowait
        for (int64_t item = 0; item < heads * n_kt; item++) {
            const int64_t k0 = item / heads * kBc, bh = item % heads;  // first key tiles: heaviest
            const HeadGrad g = head_grad_of(dqkv, dout, out, lse, in, bh, bh, T, C, NH, drop);
            with_isa_lanes([&](auto lanes) {
                with_head_size(HS, [&](auto hs) {
                    constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                    compute_D<L, HS_T>(w, g, k0, T, HS);
                    backward_key_tile<L, HS_T>(g, k0, T, HS, false, w);
                });
            });
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t item = 0; item < heads * n_qt; item++) {
            const int64_t qt = n_qt - 1 - item / heads, bh = item % heads;  // heaviest first
            const int64_t q0 = qt * kBr, q1 = min64(q0 + kBr, T);
            const HeadGrad g = head_grad_of(dqkv, dout, out, lse, in, bh, bh, T, C, NH, drop);
            with_isa_lanes([&](auto lanes) {
                with_head_size(HS, [&](auto hs) {
                    constexpr int L = decltype(lanes)::value, HS_T = decltype(hs)::value;
                    compute_D<L, HS_T>(w, g, q0, q1, HS);
                    backward_query_tile<L, HS_T>(g, q0, q1, HS, w);
                });
            });
        }
    }
}

}  // namespace tiled
}  // namespace tinyroots
