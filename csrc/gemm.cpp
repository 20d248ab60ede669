// gemm.cpp -- cache-blocked float32 GEMM (BLIS / GotoBLAS style) and the Linear / matmul kernels.
//
// C (M, N) = op(A) (M, K) @ op(B) (K, N), row-major, then a fused epilogue (see gemm.h).
//
// The blocking. A fast GEMM keeps each operand in the cache level where it is reused most, laid
// out in the order the micro-kernel reads it ("packing"). C is cut into tasks (below); a task
// covering rows r0:r1 and columns c0:c1 of C runs
//
//   for pc in 0..K step KC:
//     pack op(B)[pc:pc+KC, c0:c1] into this thread's Bp                KC x cols  -> L2/L3
//     for ic in r0..r1 step MC:
//       pack op(A)[ic:ic+MC, pc:pc+KC] into this thread's Ap           MC x KC    -> L2
//       for jr in c0..c1 step NR:                                       KC x NR    -> L1
//         for ir in ic..ic+MC step MR:
//           micro-kernel: C[ir:ir+MR, jr:jr+NR] (+)= A sliver @ B sliver over KC
//
// Packing stores a block as k-major slivers (MR rows of A, or NR columns of B, one k after the
// other), so the micro-kernel streams two contiguous arrays whatever the layout of A and B: the
// transposed forms NT and TN differ only in the packing loops (when the source is contiguous
// along k, packing is a 16 x 16 transpose in registers). The micro-kernel keeps its MR x NR
// tile of C in registers for all of KC, and applies the epilogue (bias, residual) on the
// last K slice, while the finished tile is still in registers: C is written once. A GELU is
// applied to each finished block of MC rows instead, while it is in L2 (see gemm_packed).
//
// Sizes for Zen4 (32 KB L1d and 1 MB L2 per core, 32 MB L3 shared), in floats:
//   MR x NR  12 x 32 with AVX-512 (6 x 16 AVX2, 4 x 8 portable): see the kernel files.
//   KC = 256 a B sliver KC x NR is 32 KB (the L1), an A sliver 12 KB; the tile of C is loaded
//            and stored once per 256 rank-1 updates, under 1% of the kernel's time.
//   MC = 144 the A block, 144 x 256 = 144 KB, stays in L2 while the task's B slivers pass it.
//   cols     <= 2048: the B block, 256 x cols (up to 2 MB), sits in L2 or L3; each of its
//            slivers is read once per A block, front to back, which L3 easily feeds. Wide
//            blocks matter more: each column block of a product packs all of A again.
//
// Threads. The tasks are independent (each packs the blocks it uses into its thread's buffers)
// and a shared counter hands them out (schedule(dynamic)): there is no barrier but the last.
// On a machine shared with other work a static split, or a barrier per block, waits for
// whichever thread was descheduled; with dynamic tasks the running thread takes the work.
// task_grid cuts C into at least TASKS_PER_THREAD tasks per thread when the shape allows,
// choosing between more column blocks (each packs all of A's rows once more) and more row
// blocks (B) by which packs less. Each element of C is summed in the same order whatever the
// number of threads, so results do not depend on it.
//
// Few rows (M <= SMALL_M_MAX = GEMM_FEW_ROWS_MAX = 16): decoding one token multiplies a vector by
// each weight matrix, and each weight is used once, so the cost is reading the weights (memory
// bound). Packing B would read and write it once more, so these shapes use unpacked kernels
// that read B where it is: for x @ W, a few rows of W at a time, streamed across a wide range
// of columns (C[i, j:j+64] += x[i, k] * W[k, j:j+64], tile after tile), the rows taken from a
// few far-apart segments of W so that each segment is one long sequential stream (see
// gemm_small); for the tied LM head x @ wte^T, dot products along the rows of wte. Up to M = 16
// this also beats packing, whose cost is then spread over too few rows (at 32 rows a packed
// product of a 384 x 1152 weight was already 1.35-1.6x faster than these paths, Intel Xeon).
#include "gemm.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <exception>
#include <new>
#include <vector>

#include "common.h"
#include "gelu.h"
#include "gemm_kernels.h"

namespace tinyroots {

namespace gd = gemm_detail;

namespace {

// Blocking of the packed path (see the top of the file), in floats.
constexpr int64_t KC = 256;                     // K slice, evened out by balanced_block
constexpr int64_t MC = 144;                     // rows of an A block (a multiple of MR)
constexpr int64_t NCT_MAX = 2048;               // columns of a task's B block
constexpr int64_t TASKS_PER_THREAD = 2;         // for load balance, when the shape allows
// The few-rows paths.
constexpr int64_t SMALL_M_MAX = GEMM_FEW_ROWS_MAX;  // up to this many rows, the unpacked kernel ...
constexpr int64_t DOT_M_MAX = GEMM_FEW_ROWS_MAX;    // ... and for A @ B^T, its dot-product variant
constexpr int64_t SMALL_KC = 32;                // rows of B streamed side by side (below)
constexpr int64_t SMALL_GROUP_ROWS = 192;       // at least this many rows of B per K-group ...
constexpr int64_t SMALL_MAX_GROUPS = 8;         // ... and at most this many groups
constexpr int64_t SMALL_BLOCK_COLS = 128;       // columns of C kept in L1 when M > small_m
constexpr int64_t DOT_TILES_PER_TASK = 8;       // dot tiles per task of A @ B^T
constexpr double SERIAL_WORK = 64.0 * 64.0 * 64.0;  // M * N * K below which 1 thread is faster

// Splits n into ceil(n / target) nearly equal parts, each a multiple of `multiple`: K = 300
// becomes two slices of 152 and 148 rather than 256 and 44.
int64_t balanced_block(int64_t n, int64_t target, int64_t multiple) {
    const int64_t parts = ceil_div(n, target);
    return round_up(ceil_div(n, parts), multiple);
}

// A growable 64-byte aligned buffer per thread, kept between calls: the packing buffers of a
// product (under 1 MB per thread) would otherwise be allocated, and page-faulted in, each time.
struct Scratch {
    float* data = nullptr;
    size_t size = 0;
    ~Scratch() { std::free(data); }
    float* get(size_t n) {
        if (n > size) {
            std::free(data);
            size = (n + 15) / 16 * 16;  // aligned_alloc wants a multiple of the alignment
            data = static_cast<float*>(std::aligned_alloc(64, size * sizeof(float)));
            if (!data) {
                size = 0;
                throw std::bad_alloc();
            }
        }
        return data;
    }
};

float* scratch(size_t n) {
    static thread_local Scratch buffer;
    return buffer.get(n);
}

const gd::KernelSet& kernel_set() {
#if defined(__x86_64__)
    const char* isa = simd_isa();
    if (std::strcmp(isa, "avx512") == 0) return gd::kernels_avx512();
    if (std::strcmp(isa, "avx2") == 0) return gd::kernels_avx2();
#endif
    return gd::kernels_portable();
}

// The epilogue of the tile whose top-left element of C is (i, j), in a sum over K done in
// pieces: `first` piece (C is loaded only when accumulating), `last` piece (bias, residual, GELU).
gd::TileEpilogue piece_epilogue(const GemmEpilogue& ep, int64_t i, int64_t j, int64_t ldc,
                                bool first, bool last) {
    gd::TileEpilogue te;
    te.load_c = ep.accumulate || !first;
    te.last = last;
    te.bias = ep.bias ? ep.bias + j : nullptr;
    te.residual = ep.residual ? ep.residual + i * ldc + j : nullptr;
    te.pre = ep.pre ? ep.pre + i * ldc + j : nullptr;
    te.ld = ldc;
    return te;
}

// The same for the K slice [pc, pc+kc) of the packed path.
gd::TileEpilogue tile_epilogue(const GemmEpilogue& ep, int64_t i, int64_t j, int64_t ldc,
                               int64_t pc, int64_t kc, int64_t K) {
    return piece_epilogue(ep, i, j, ldc, pc == 0, pc + kc == K);
}

// How a packed product is cut into tasks: n_col column blocks x n_row row blocks.
struct TaskGrid {
    int64_t n_col, n_row, cols, rows;  // counts, and the width / height of one block
};

// Every task packs the A and B blocks it uses, so a product of n_col x n_row tasks packs A
// n_col times and B n_row times: pick the split with the least packing that still gives each
// thread TASKS_PER_THREAD tasks (when the shape has that many) and keeps a B block in L2.
TaskGrid task_grid(int64_t M, int64_t N, int64_t K, int64_t mr, int64_t nr, int nthreads) {
    const int64_t want = nthreads == 1 ? 1 : TASKS_PER_THREAD * nthreads;
    const int64_t max_col = ceil_div(N, nr), max_row = ceil_div(M, mr);
    TaskGrid best = {0, 0, 0, 0};
    double best_cost = 0.0;
    for (int64_t n_col = std::min(ceil_div(N, NCT_MAX), max_col); n_col <= max_col; n_col++) {
        const int64_t n_row = std::min(max_row, ceil_div(want, n_col));
        const double cost = (double)n_col * M * K + (double)n_row * K * N;
        if (best.n_col == 0 || cost < best_cost) {
            best = {n_col, n_row, 0, 0};
            best_cost = cost;
        }
        if (n_row == 1) break;  // more columns only adds packing of A
    }
    // equal shares: a task count that is a multiple of the thread count, so that no thread
    // runs the last task alone while the others wait (25 tasks on 2 threads take as long as 26)
    while ((best.n_col * best.n_row) % nthreads != 0 && best.n_col < max_col) best.n_col++;
    best.cols = round_up(ceil_div(N, best.n_col), nr);
    best.rows = round_up(ceil_div(M, best.n_row), mr);
    best.n_col = ceil_div(N, best.cols);
    best.n_row = ceil_div(M, best.rows);
    return best;
}

// The blocked, packed path (see the top of the file).
void gemm_packed(const gd::KernelSet& ks, bool trans_a, bool trans_b, int64_t M, int64_t N,
                 int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb, float* C,
                 int64_t ldc, const GemmEpilogue& ep, int nthreads) {
    const int64_t mr = ks.mr, nr = ks.nr;
    // op(A)(i, k) = A[i * a_rs + k * a_cs];  op(B)(k, j) = B[j * b_cs + k * b_rs]
    const int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
    const int64_t b_cs = trans_b ? ldb : 1, b_rs = trans_b ? 1 : ldb;
    const int64_t kc_max = balanced_block(K, KC, 8);
    const int64_t mc = std::max(mr, MC / mr * mr);
    const TaskGrid grid = task_grid(M, N, K, mr, nr, nthreads);
    // each thread's packing buffers: a B block (kc x cols) and an A block (mc x kc)
    const int64_t per_thread = kc_max * (grid.cols + mc);
    float* const buffers = scratch((size_t)(nthreads * per_thread));
    // With a GELU, the tiles write v into pre, and each block of mc rows, once complete, is
    // turned into gelu(v) in C while it is still in L2. (Applied in the tiles' epilogue, the GELU's
    // exp and division came between the micro-kernel's FMAs, and cost twice as much.)
    const bool block_gelu = ep.pre && !ep.accumulate;
    GemmEpilogue tile_ep = ep;
    float* tile_c = C;
    if (block_gelu) {
        tile_ep.pre = nullptr;
        tile_c = ep.pre;
    }

#pragma omp parallel num_threads(nthreads) if (nthreads > 1)
    {
        float* const Bp = buffers + thread_id() * per_thread;
        float* const Ap = Bp + kc_max * grid.cols;
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < grid.n_col * grid.n_row; t++) {
            // task t: rows [r0, r1) x columns [c0, c1) of C
            const int64_t c0 = (t % grid.n_col) * grid.cols, c1 = std::min(N, c0 + grid.cols);
            const int64_t r0 = (t / grid.n_col) * grid.rows, r1 = std::min(M, r0 + grid.rows);
            for (int64_t pc = 0; pc < K; pc += kc_max) {
                const int64_t kc = std::min(kc_max, K - pc);
                if (!trans_b)  // pack op(B)[pc:pc+kc, c0:c1]: B's rows are contiguous
                    ks.pack_b_rows(Bp, B + pc * ldb + c0, ldb, c1 - c0, kc);
                else
                    for (int64_t j = c0; j < c1; j += nr)
                        ks.pack_b(Bp + (j - c0) * kc, B + j * b_cs + pc * b_rs, b_cs, b_rs,
                                  (int)std::min(nr, c1 - j), kc);
                for (int64_t ic = r0; ic < r1; ic += mc) {
                    const int64_t ic1 = std::min(r1, ic + mc);
                    if (trans_a)  // pack op(A)[ic:ic1, pc:pc+kc]: A^T's rows are contiguous
                        ks.pack_a_rows(Ap, A + pc * lda + ic, lda, ic1 - ic, kc);
                    else
                        for (int64_t i = ic; i < ic1; i += mr)
                            ks.pack_a(Ap + (i - ic) * kc, A + i * a_rs + pc * a_cs, a_rs, a_cs,
                                      (int)std::min(mr, ic1 - i), kc);
                    for (int64_t jr = c0; jr < c1; jr += nr) {
                        const float* bp = Bp + (jr - c0) * kc;
                        const int n = (int)std::min(nr, c1 - jr);
                        for (int64_t ir = ic; ir < ic1; ir += mr)
                            ks.tile(kc, Ap + (ir - ic) * kc, bp, tile_c + ir * ldc + jr, ldc,
                                    (int)std::min(mr, ic1 - ir), n,
                                    tile_epilogue(tile_ep, ir, jr, ldc, pc, kc, K));
                    }
                    if (block_gelu && pc + kc == K)
                        gelu_forward_rows(C + ic * ldc + c0, ep.pre + ic * ldc + c0, ic1 - ic,
                                          c1 - c0, ldc);
                }
            }
        }
    }
}

// The few-rows path: B read in place, and read as a few long sequential streams, which is what
// the hardware prefetchers follow (a GEMV's speed is how fast the weights stream from DRAM).
//
// K is cut into `groups` (small_groups below), and each group's rows into SMALL_KC segments.
// The kernel takes one row from each segment at a time (SMALL_KC rows, segment_len rows apart)
// and sweeps them across the whole width, tile after tile: each segment is then read front to
// back, so a task is SMALL_KC sequential streams, each many KB long. The obvious order, SMALL_KC
// neighbouring rows at a time, reads the same block of memory but as SMALL_KC short streams
// (each one row long, 1.5 KB for a 384-wide weight) that restart every slice; the prefetchers
// lose them, and a narrow weight (the c_proj of an MLP, 1536 x 384) streamed at half the speed
// of a wide one. Each slice of SMALL_KC rows is summed from zero in registers, then added to C:
// 32 rows per slice rather than 8 halve C's reads and writes twice over, and made 24 decoding
// products of 16 rows (a 6x384 model's, weights in L3) 15-18% faster, and of a 124M model's
// 4-30%, with one row as fast as before (Intel Xeon, 2 threads, alternated runs).
// Threads take groups, each group summing into its own partial (M, N) buffer, then add the
// partial sums in group order into C with the epilogue. Splitting the columns instead (as
// before) would give each thread half of every row: a stream with holes, the same problem.
// Columns are split only when there are fewer groups than threads.
//
// Every element of C is summed in one order, fixed by K alone: the groups, in each group the
// slices (one row from each segment), and in each slice its SMALL_KC rows, summed from zero by
// the tile and then added to C. Neither the number of rows M nor the thread count changes it,
// so a row of a batch (up to SMALL_M_MAX rows) gets exactly what it gets alone: a decoding
// step can batch the requests of a server and still give each one its greedy tokens.
int64_t small_groups(int64_t K) {
    int64_t groups = 1;
    while (2 * groups <= SMALL_MAX_GROUPS && 2 * groups * SMALL_GROUP_ROWS <= K) groups *= 2;
    return groups;  // a power of two: splits evenly over 2, 4, 8 threads
}

// C[0:M, 0:n] (+)= A[0:M, rows r0..r1) @ B[r0..r1, 0:n], the epilogue ep applied piece by piece
// (a plain GemmEpilogue() for a group's partial sums). A(i, k) = A[i * a_rs + k * a_cs].
//
// One row tile (M <= small_m): each slice sweeps the whole width, as described above. More
// rows: each slice would rewrite all of C's M x n partial sums (96 KB for 16 rows of a
// 1536-wide weight, past L1) to add SMALL_KC rows of B to them, and the loop ran at the speed of L2.
// Then the columns are cut into blocks of SMALL_BLOCK_COLS, and each block takes every slice
// in turn while its M x SMALL_BLOCK_COLS sums stay in L1; the next slice's rows of B are
// prefetched a slice ahead, since they are too far apart for the hardware to follow. The
// order of the sums is the same either way: only the loops around the tiles change.
void small_group(const gd::KernelSet& ks, int64_t M, int64_t n, int64_t r0, int64_t r1,
                 const float* A, int64_t a_rs, int64_t a_cs, const float* B, int64_t ldb,
                 float* C, int64_t ldc, const GemmEpilogue& ep, int64_t j) {
    const int64_t apart = ceil_div(r1 - r0, SMALL_KC);  // rows apart in a slice = slices
    const int64_t block = M <= ks.small_m ? n : SMALL_BLOCK_COLS;
    for (int64_t jb = 0; jb < n; jb += block) {
        const int64_t w = std::min(block, n - jb);
        for (int64_t s = 0; s < apart; s++) {
            // rows r0 + s + apart * (0, 1, ...): one from each segment
            const int64_t k = r0 + s;
            const int64_t kc = std::min<int64_t>(SMALL_KC, ceil_div(r1 - k, apart));
            if (block < n && s + 1 < apart) {
                const int64_t kn = std::min<int64_t>(SMALL_KC, ceil_div(r1 - k - 1, apart));
                for (int64_t q = 0; q < kn; q++)
                    for (int64_t c = 0; c < w; c += 16)
                        __builtin_prefetch(B + (k + 1 + q * apart) * ldb + jb + c);
            }
            for (int64_t i = 0; i < M; i += ks.small_m)
                ks.small_tile(kc, A + i * a_rs + k * a_cs, a_rs, apart * a_cs, B + k * ldb + jb,
                              apart * ldb, C + i * ldc + jb, ldc,
                              (int)std::min<int64_t>(ks.small_m, M - i), w,
                              piece_epilogue(ep, i, j + jb, ldc, s == 0, s == apart - 1));
        }
    }
}

void gemm_small(const gd::KernelSet& ks, bool trans_a, int64_t M, int64_t N, int64_t K,
                const float* A, int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                const GemmEpilogue& ep, int nthreads) {
    const int64_t a_rs = trans_a ? 1 : lda, a_cs = trans_a ? lda : 1;
    const int64_t groups = small_groups(K);
    const int64_t col_blocks = groups >= nthreads ? 1 : ceil_div(nthreads, groups);
    const int64_t width = round_up(ceil_div(N, col_blocks), ks.small_nr);
    const int64_t n_col = ceil_div(N, width), tasks = groups * n_col;
    // the partial sums of each group, (M, N) each, when there is more than one
    float* const parts = groups > 1 ? scratch((size_t)(groups * M * N)) : nullptr;
    static const float ones[SMALL_MAX_GROUPS] = {1, 1, 1, 1, 1, 1, 1, 1};
#pragma omp parallel num_threads(nthreads) if (nthreads > 1 && tasks > 1)
    {
#pragma omp for schedule(dynamic)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t g = t / n_col, j = (t % n_col) * width, n = std::min(width, N - j);
            const int64_t r0 = K * g / groups, r1 = K * (g + 1) / groups;
            if (groups == 1)
                small_group(ks, M, n, r0, r1, A, a_rs, a_cs, B + j, ldb, C + j, ldc, ep, j);
            else
                small_group(ks, M, n, r0, r1, A, a_rs, a_cs, B + j, ldb,
                            parts + g * M * N + j, N, GemmEpilogue(), j);
        }
        if (groups > 1) {
            // C = [C +] parts[0] + parts[1] + ... then the epilogue: a product of ones (1, groups)
            // with the stacked partial sums (groups, N), so the kernels' epilogue does the rest
            // (x 1.0 is exact: these are plain sums, in group order)
#pragma omp for schedule(static)
            for (int64_t t = 0; t < M * n_col; t++) {
                const int64_t i = t / n_col, j = (t % n_col) * width, n = std::min(width, N - j);
                ks.small_tile(groups, ones, 0, 1, parts + i * N + j, M * N, C + i * ldc + j, ldc,
                              1, n, piece_epilogue(ep, i, j, ldc, true, true));
            }
        }
    }
}

// The few-rows path of C = A @ B^T (B stored (N, K)): dot products along K, columns of C cut
// into tasks of ks.dot_n * DOT_TILES_PER_TASK.
void gemm_small_nt(const gd::KernelSet& ks, int64_t M, int64_t N, int64_t K, const float* A,
                   int64_t lda, const float* Bt, int64_t ldb, float* C, int64_t ldc,
                   const GemmEpilogue& ep, int nthreads) {
    const int64_t w = ks.dot_n * DOT_TILES_PER_TASK, tasks = ceil_div(N, w);
#pragma omp parallel for schedule(dynamic) num_threads(nthreads) if (nthreads > 1 && tasks > 1)
    for (int64_t t = 0; t < tasks; t++) {
        const int64_t j1 = std::min(N, (t + 1) * w);
        for (int64_t j = t * w; j < j1; j += ks.dot_n) {
            const int n = (int)std::min<int64_t>(ks.dot_n, j1 - j);
            for (int64_t i = 0; i < M; i += ks.dot_m) {
                ks.dot_tile(K, A + i * lda, lda, Bt + j * ldb, ldb, C + i * ldc + j, ldc,
                            (int)std::min<int64_t>(ks.dot_m, M - i), n,
                            tile_epilogue(ep, i, j, ldc, 0, K, K));
            }
        }
    }
}

}  // namespace

const char* gemm_isa() { return kernel_set().isa; }

void gemm_reference(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
                    int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
                    const GemmEpilogue& ep) {
    const gd::TileEpilogue te = tile_epilogue(ep, 0, 0, ldc, 0, K, K);
    for (int64_t i = 0; i < M; i++) {
        for (int64_t j = 0; j < N; j++) {
            double sum = 0.0;
            for (int64_t k = 0; k < K; k++) {
                const float a = trans_a ? A[k * lda + i] : A[i * lda + k];
                const float b = trans_b ? B[j * ldb + k] : B[k * ldb + j];
                sum += (double)a * (double)b;
            }
            gd::epilogue_scalar(C + i * ldc + j, (float)sum, i, j, te);
        }
    }
}

void gemm(bool trans_a, bool trans_b, int64_t M, int64_t N, int64_t K, const float* A,
          int64_t lda, const float* B, int64_t ldb, float* C, int64_t ldc,
          const GemmEpilogue& ep_in, int nthreads) {
    if (M <= 0 || N <= 0) return;
    GemmEpilogue ep = ep_in;
    if (ep.residual == C) {  // in place, C += A @ B (+ bias): the residual is what C holds
        ep.residual = nullptr;
        ep.accumulate = true;
    }
    if (K <= 0) {  // no product, only the epilogue: not worth a blocked path
        gemm_reference(trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ep);
        return;
    }
    if (nthreads <= 0) nthreads = max_threads();
    if ((double)M * (double)N * (double)K < SERIAL_WORK) nthreads = 1;
    const gd::KernelSet& ks = kernel_set();
    if (M <= SMALL_M_MAX && !trans_b)
        gemm_small(ks, trans_a, M, N, K, A, lda, B, ldb, C, ldc, ep, nthreads);
    else if (M <= DOT_M_MAX && !trans_a)
        gemm_small_nt(ks, M, N, K, A, lda, B, ldb, C, ldc, ep, nthreads);
    else
        gemm_packed(ks, trans_a, trans_b, M, N, K, A, lda, B, ldb, C, ldc, ep, nthreads);
}

// ---- Linear ---------------------------------------------------------------------------------

void linear_forward(float* out, const float* x, const float* w, const float* b, int64_t N,
                    int64_t C, int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    gemm(false, false, N, OC, C, x, C, w, OC, out, OC, ep);
}

void linear_gelu_forward(float* pre, float* out, const float* x, const float* w, const float* b,
                         int64_t N, int64_t C, int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    ep.pre = pre;
    gemm(false, false, N, OC, C, x, C, w, OC, out, OC, ep);
}

void linear_residual_forward(float* out, const float* x, const float* w, const float* b,
                             const float* residual, int64_t N, int64_t C, int64_t OC) {
    GemmEpilogue ep;
    ep.bias = b;
    ep.residual = residual;
    gemm(false, false, N, OC, C, x, C, w, OC, out, OC, ep);
}

void linear_backward(float* dx, float* dw, float* db, const float* dout, const float* x,
                     const float* w, int64_t N, int64_t C, int64_t OC) {
    // forward was out = x @ w + b, so
    //     dx = dout @ w^T  (NT)   and   dw = x^T @ dout  (TN),
    // two products of the same size (N * C * OC multiply-adds each).
    const auto dx_gemm = [&](int threads) {
        gemm(false, true, N, C, OC, dout, OC, w, OC, dx, C, GemmEpilogue(), threads);
    };
    const auto dw_gemm = [&](int threads) {
        gemm(true, false, C, OC, N, x, C, dout, OC, dw, OC, GemmEpilogue(), threads);
    };
    const bool big = (double)N * (double)C * (double)OC >= SERIAL_WORK;
    if (dx && big && max_threads() == 2) {
        // On two threads, one product each, side by side, rather than both threads on one
        // product and then on the other: no barrier inside either product, and each thread's
        // panels stay in its own cache (measured in isolation: 2-15% faster on the layers of a
        // 128-wide model at 768 tokens, as fast on larger ones). With more threads, splitting them in teams would take nested
        // OpenMP regions, so those keep the plain order. The results are the same either way:
        // a product's sums do not depend on how many threads compute it.
        std::exception_ptr error = nullptr;
#pragma omp parallel num_threads(2)
        {
            try {
                if (thread_id() == 0)
                    dx_gemm(1);
                else
                    dw_gemm(1);
            } catch (...) {
#pragma omp critical(tinyroots_gemm_error)
                if (!error) error = std::current_exception();
            }
        }
        if (error) std::rethrow_exception(error);
    } else {
        if (dx) dx_gemm(0);
        dw_gemm(0);
    }
    if (db) {  // db = sum_n dout = ones (1, N) @ dout: a GEMV, streamed like decoding's
        const std::vector<float> ones((size_t)N, 1.0f);
        gemm(false, false, 1, OC, N, ones.data(), N, dout, OC, db, OC);
    }
}

void matmul_nt(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K) {
    gemm(false, true, M, N, K, a, K, b, K, c, N);
}

void matmul_tn(float* c, const float* a, const float* b, int64_t M, int64_t N, int64_t K) {
    gemm(true, false, M, N, K, a, M, b, N, c, N);
}

// ---- batched matmul -------------------------------------------------------------------------

// BATCH products of the same shape, contiguous batch strides, shared out by for_each_product
static void gemm_batched(bool trans_a, bool trans_b, int64_t batch, int64_t M, int64_t N,
                         int64_t K, const float* A, int64_t lda, const float* B, int64_t ldb,
                         float* C, int64_t ldc) {
    const int64_t sa = M * K, sb = K * N, sc = M * N;
    for_each_product(batch, (double)M * N * K, [&](int64_t i, int threads) {
        gemm(trans_a, trans_b, M, N, K, A + i * sa, lda, B + i * sb, ldb, C + i * sc, ldc,
             GemmEpilogue(), threads);
    });
}

void matmul_forward(float* c, const float* a, const float* b, int64_t batch, int64_t M,
                    int64_t N, int64_t K) {
    gemm_batched(false, false, batch, M, N, K, a, K, b, N, c, N);
}

void matmul_backward(float* da, float* db, const float* dc, const float* a, const float* b,
                     int64_t batch, int64_t M, int64_t N, int64_t K) {
    // forward was c (M, N) = a (M, K) @ b (K, N), so
    //   da (M, K) = dc (M, N) @ b^T   an NT product with inner size N, b stored (K, N)
    //   db (K, N) = a^T @ dc (M, N)   a TN product with inner size M, a stored (M, K)
    gemm_batched(false, true, batch, M, K, N, dc, N, b, N, da, K);
    gemm_batched(true, false, batch, K, N, M, a, K, dc, N, db, N);
}

}  // namespace tinyroots
