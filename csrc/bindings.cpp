// bindings.cpp -- the one place where C++ meets Python.
//
// Every kernel in csrc/ takes raw pointers and sizes and knows nothing about Python. This file:
//   1. checks each argument's dtype, shape and contiguity and raises a clear Python error
//      naming the kernel and the argument (never a crash, never a silent wrong answer);
//   2. allocates the outputs as NumPy arrays;
//   3. releases the GIL while the kernel runs.
// Each binding has the same name and argument order as its NumPy twin in tinyroots/ref.py.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <cstdint>
#include <cstdlib>
#include <initializer_list>
#include <new>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#if defined(__linux__)
#include <sys/mman.h>
#endif

#include "attention.h"
#include "common.h"
#include "crossentropy.h"
#include "embedding.h"
#include "gelu.h"
#include "gemm.h"
#include "gemm_bf16.h"
#include "layernorm.h"
#include "optimizer.h"
#include "softmax.h"

namespace py = pybind11;

namespace {

using Shape = std::vector<int64_t>;
using F32 = py::array_t<float, py::array::c_style>;

std::string shape_str(const py::array& a) {
    std::ostringstream os;
    os << "(";
    for (py::ssize_t i = 0; i < a.ndim(); i++) os << (i ? ", " : "") << a.shape(i);
    os << (a.ndim() == 1 ? ",)" : ")");
    return os.str();
}

std::string shape_str(const Shape& s) {
    std::ostringstream os;
    os << "(";
    for (size_t i = 0; i < s.size(); i++) os << (i ? ", " : "") << s[i];
    os << (s.size() == 1 ? ",)" : ")");
    return os.str();
}

[[noreturn]] void fail(const char* kernel, const std::string& msg) {
    throw py::value_error(std::string(kernel) + ": " + msg);
}

// A new float32 array for an elementwise kernel's output (or a bf16 product's, below), placed
// well away from its inputs modulo 4 KB.
//
// subtle: "4K aliasing". A core decides whether a load depends on an earlier, unfinished store
// by comparing the low 12 bits of their addresses first. Two arrays of the same large size
// allocated one after the other (an activation and its GELU, a gradient and the next) sit 16
// bytes apart modulo 4 KB, so every store to out[i] looks like a store to x[i + 4] and holds up
// that load until it completes: gelu_forward over 4096 x 1536 floats took 14 ms instead of 2.9
// (Intel Xeon, 1 thread). Outputs of at least APART_MIN_BYTES are therefore allocated here with
// a 64-byte-aligned start as far as possible (modulo 4 KB) from every input's, freed with the
// array; smaller ones stay in the caches, where it costs little. Only while malloc serves them
// from its heap (under the mmap threshold that tune_allocator raises to 32 MB): a larger block
// is mapped afresh each time and faults in 4 KB pages, where numpy's own allocation asks for
// huge pages (a 51 MB cross-entropy gradient: 12,565 page faults and 36 ms instead of 18).
// The bf16 products (AMX tile stores while x is packed) gained from it too; the float32 ones
// measured 5-10% slower placed so, and keep numpy's allocation.
constexpr size_t APART_MIN_BYTES = 256 * 1024;
constexpr size_t HUGE_PAGE_MIN_BYTES = 4 * 1024 * 1024;
bool malloc_tuned = false;  // set once at import

F32 output_apart(const Shape& shape, std::initializer_list<const void*> inputs) {
    size_t n = 1;
    for (int64_t d : shape) n *= (size_t)d;
    const size_t bytes = n * sizeof(float);
    const size_t heap_max = malloc_tuned ? tinyroots::MALLOC_MMAP_THRESHOLD - 8192 : 0;
    if (bytes < APART_MIN_BYTES || bytes > heap_max) return F32(shape);
    char* raw = static_cast<char*>(std::malloc(bytes + 4096 + 64));
    if (!raw) throw std::bad_alloc();
#if defined(__linux__)
    // huge pages for a large block, as numpy asks for its own (4 MB and up), so that moving an
    // output here does not also cost it that (fewer TLB misses on a product's tile stores)
    if (bytes >= HUGE_PAGE_MIN_BYTES) {
        const uintptr_t lo = ((uintptr_t)raw + 4095) & ~(uintptr_t)4095;
        const uintptr_t hi = ((uintptr_t)raw + bytes + 4096 + 64) & ~(uintptr_t)4095;
        madvise(reinterpret_cast<void*>(lo), hi - lo, MADV_HUGEPAGE);  // a hint: errors ignored
    }
#endif
    const uintptr_t first = ((uintptr_t)raw + 63) & ~(uintptr_t)63;
    uintptr_t best = first;
    int64_t best_gap = -1;
    for (uintptr_t p = first; p < first + 4096; p += 64) {
        int64_t gap = 2048;  // the distance modulo 4 KB to the nearest input, either way
        for (const void* in : inputs) {
            int64_t d = (int64_t)((p - (uintptr_t)in) & 4095);
            gap = std::min(gap, std::min(d, 4096 - d));
        }
        if (gap > best_gap) best_gap = gap, best = p;
    }
    py::capsule owner(raw, [](void* q) { std::free(q); });
    return F32(shape, reinterpret_cast<float*>(best), owner);
}

// A read-only float32 input. Non-contiguous arrays are copied to C order (handled, not refused);
// any other dtype is an error: converting float64 silently would hide a bug upstream.
F32 input_f32(const py::handle& obj, const char* kernel, const char* name) {
    if (!py::isinstance<py::array>(obj))
        fail(kernel, std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(obj))));
    auto a = py::reinterpret_borrow<py::array>(obj);
    if (!a.dtype().is(py::dtype::of<float>()))
        throw py::type_error(std::string(kernel) + ": " + name + " must be float32, got " +
                             std::string(py::str(a.dtype())));
    return F32::ensure(a);
}

// An array the kernel writes into in place: it must already be float32 and C-contiguous,
// because a copy would silently drop the update.
F32 inplace_f32(const py::handle& obj, const char* kernel, const char* name) {
    auto a = input_f32(obj, kernel, name);
    auto orig = py::reinterpret_borrow<py::array>(obj);
    if (!(orig.flags() & py::array::c_style) || !orig.writeable())
        fail(kernel, std::string(name) + " is updated in place, so it must be a writeable, "
                                         "C-contiguous float32 array");
    return py::reinterpret_borrow<F32>(obj);
}

void expect_shape(const py::array& a, const Shape& want, const char* kernel, const char* name) {
    bool ok = (int64_t)a.ndim() == (int64_t)want.size();
    for (size_t i = 0; ok && i < want.size(); i++) ok = want[i] < 0 || a.shape(i) == want[i];
    if (!ok)
        fail(kernel, std::string(name) + " must have shape " + shape_str(want) + ", got " +
                         shape_str(a));
}

// Splits x (..., C) into N rows of C: the leading axes are flattened.
void rows_of(const py::array& x, int64_t* N, int64_t* C, const char* kernel, const char* name) {
    if (x.ndim() < 1) fail(kernel, std::string(name) + " must have at least one axis");
    *C = x.shape(x.ndim() - 1);
    *N = *C ? (int64_t)x.size() / *C : 0;
}

Shape shape_of(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim()); }

Shape leading(const py::array& a) { return Shape(a.shape(), a.shape() + a.ndim() - 1); }

using I64 = py::array_t<int64_t, py::array::c_style>;

// Integer indices (token ids, targets): any integer dtype, any layout, returned as a C-ordered
// int64 array (int32 ids are converted, which costs one small copy). Floats or bools are refused:
// they would only be ids by accident.
I64 input_ids(const py::handle& obj, const char* kernel, const char* name) {
    if (!py::isinstance<py::array>(obj))
        fail(kernel, std::string(name) + " must be a numpy array of integers, got " +
                         std::string(py::str(py::type::of(obj))));
    auto a = py::reinterpret_borrow<py::array>(obj);
    const char kind = a.dtype().kind();
    if (kind != 'i' && kind != 'u')
        throw py::type_error(std::string(kernel) + ": " + name +
                             " must be an integer array (int64 or int32), got " +
                             std::string(py::str(a.dtype())));
    return py::array_t<int64_t, py::array::c_style | py::array::forcecast>::ensure(a);
}

// A float32 array whose last axis is contiguous; the other axes keep their strides (a slice of a
// KV cache stays a view). Anything else is copied to C order first.
F32 input_f32_rows(const py::handle& obj, const char* kernel, const char* name) {
    if (!py::isinstance<py::array>(obj) ||
        !py::reinterpret_borrow<py::array>(obj).dtype().is(py::dtype::of<float>()))
        return input_f32(obj, kernel, name);  // raises the usual type / dtype error
    auto orig = py::reinterpret_borrow<py::array>(obj);
    const bool last_contiguous =
        orig.ndim() >= 1 && (orig.shape(orig.ndim() - 1) <= 1 ||
                             orig.strides(orig.ndim() - 1) == (py::ssize_t)sizeof(float));
    bool aligned = (uintptr_t)orig.data() % sizeof(float) == 0;
    for (py::ssize_t i = 0; i < orig.ndim(); i++)
        aligned = aligned && orig.strides(i) % (py::ssize_t)sizeof(float) == 0;
    if (last_contiguous && aligned) return py::reinterpret_borrow<F32>(obj);
    return F32::ensure(orig);
}

// Stride of axis i of a float32 array, in floats.
int64_t stride_f32(const py::array& a, int i) {
    return (int64_t)a.strides(i) / (int64_t)sizeof(float);
}

// Shape a + (tail,), e.g. the output of an embedding lookup: ids.shape + (C,).
Shape with_tail(const py::array& a, int64_t tail) {
    Shape s = shape_of(a);
    s.push_back(tail);
    return s;
}

// The kernels release the GIL while they work, so that other Python threads run meanwhile (a
// server's HTTP thread while its decoding thread computes). Taking it back costs a wait when
// another thread holds it, up to the interpreter's switch interval: measured, a decoding step of
// 16 requests went from 6.8 to 10.6 ms beside a busy Python thread, most of it in these waits.
// So the kernels that run once per layer on a few rows (layernorm, GELU, the embedding lookup,
// decoding attention) keep the GIL when their work is under RELEASE_GIL_WORK elements, a few
// microseconds; on training-sized arrays they release it as before.
constexpr int64_t RELEASE_GIL_WORK = 1 << 18;

struct ReleaseGilFor {
    std::optional<py::gil_scoped_release> released;
    explicit ReleaseGilFor(int64_t work) {
        if (work >= RELEASE_GIL_WORK) released.emplace();
    }
};

// ---------------------------------------------------------------------------------------------
// ---- linear / matmul (gemm.h)
//
// Every product runs through tinyroots::gemm (csrc/gemm.cpp). Linear weights follow GPT-2's
// Conv1D layout, w (C, OC) = (in, out), which is exactly what x @ w wants.

// x (..., C) -> N, the number of rows once the leading axes are flattened (1 for a vector).
int64_t rows_before_last(const py::array& x) {
    int64_t n = 1;
    for (py::ssize_t i = 0; i + 1 < x.ndim(); i++) n *= (int64_t)x.shape(i);
    return n;
}

// Shape s + (a,) or s + (a, b).
Shape append(Shape s, int64_t a) {
    s.push_back(a);
    return s;
}
Shape append(Shape s, int64_t a, int64_t b) {
    s.push_back(a);
    s.push_back(b);
    return s;
}

// The arguments of a linear layer: x (..., C), w (C, OC), b (OC,) or None.
struct LinearArgs {
    F32 x, w, b;
    const float* bias = nullptr;
    int64_t N = 0, C = 0, OC = 0;
    Shape out_shape;  // (..., OC)
};

LinearArgs linear_args(py::handle x_, py::handle w_, py::handle b_, const char* k) {
    LinearArgs a;
    a.x = input_f32(x_, k, "x");
    a.w = input_f32(w_, k, "w");
    if (a.x.ndim() < 1) fail(k, "x must have shape (..., C), got a 0-d array");
    a.C = a.x.shape(a.x.ndim() - 1);
    a.N = rows_before_last(a.x);
    if (a.w.ndim() != 2 || a.w.shape(0) != a.C)
        fail(k, "w must have shape (C, OC) with C = " + std::to_string(a.C) +
                    " (the last axis of x " + shape_str(a.x) + "), got " + shape_str(a.w));
    a.OC = a.w.shape(1);
    if (!b_.is_none()) {
        a.b = input_f32(b_, k, "b");
        expect_shape(a.b, {a.OC}, k, "b");
        a.bias = a.b.data();
    }
    a.out_shape = append(leading(a.x), a.OC);
    return a;
}

F32 linear_forward(py::handle x_, py::handle w_, py::handle b_) {
    LinearArgs a = linear_args(x_, w_, b_, "linear_forward");
    F32 out(a.out_shape);
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_forward(out.mutable_data(), a.x.data(), a.w.data(), a.bias, a.N, a.C,
                                  a.OC);
    }
    return out;
}

py::tuple linear_gelu_forward(py::handle x_, py::handle w_, py::handle b_) {
    LinearArgs a = linear_args(x_, w_, b_, "linear_gelu_forward");
    F32 pre(a.out_shape), out(a.out_shape);
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_gelu_forward(pre.mutable_data(), out.mutable_data(), a.x.data(),
                                       a.w.data(), a.bias, a.N, a.C, a.OC);
    }
    return py::make_tuple(pre, out);
}

F32 linear_residual_forward(py::handle x_, py::handle w_, py::handle b_, py::handle residual_) {
    const char* k = "linear_residual_forward";
    LinearArgs a = linear_args(x_, w_, b_, k);
    F32 residual = input_f32(residual_, k, "residual");
    expect_shape(residual, a.out_shape, k, "residual");
    F32 out = output_apart(a.out_shape, {residual.data()});  // the epilogue reads residual
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_residual_forward(out.mutable_data(), a.x.data(), a.w.data(), a.bias,
                                           residual.data(), a.N, a.C, a.OC);
    }
    return out;
}

py::tuple linear_backward(py::handle dout_, py::handle x_, py::handle w_, bool need_dx) {
    const char* k = "linear_backward";
    LinearArgs a = linear_args(x_, w_, py::none(), k);
    F32 dout = input_f32(dout_, k, "dout");
    expect_shape(dout, a.out_shape, k, "dout");
    F32 dw(Shape{a.C, a.OC}), db(Shape{a.OC});
    F32 dx;
    if (need_dx) dx = F32(shape_of(a.x));
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_backward(need_dx ? dx.mutable_data() : nullptr, dw.mutable_data(),
                                   db.mutable_data(), dout.data(), a.x.data(), a.w.data(), a.N,
                                   a.C, a.OC);
    }
    return py::make_tuple(need_dx ? py::object(dx) : py::none(), dw, db);
}

// a (..., M, K) @ b (..., K, N) with the same batch axes (none, one or two of them). Batch axes
// that broadcast are refused with a ValueError; ops.matmul sends those to tinyroots.ref.
struct MatmulDims {
    int64_t batch = 1, M = 0, K = 0, N = 0;
    Shape lead;  // the batch axes
};

MatmulDims matmul_dims(const F32& a, const F32& b, const char* k) {
    const int nd = (int)a.ndim();
    if (nd < 2 || nd > 4 || b.ndim() != nd)
        fail(k, "a and b must both be 2-D, 3-D or 4-D, (..., M, K) @ (..., K, N) with the same "
                "batch axes; got a " + shape_str(a) + " and b " + shape_str(b));
    MatmulDims d;
    for (int i = 0; i < nd - 2; i++) {
        if (a.shape(i) != b.shape(i))
            fail(k, "the batch axes of a " + shape_str(a) + " and b " + shape_str(b) +
                        " differ (broadcasting them is left to tinyroots.ref)");
        d.lead.push_back(a.shape(i));
        d.batch *= a.shape(i);
    }
    d.M = a.shape(nd - 2);
    d.K = a.shape(nd - 1);
    d.N = b.shape(nd - 1);
    if (b.shape(nd - 2) != d.K)
        fail(k, "a " + shape_str(a) + " @ b " + shape_str(b) +
                    ": the last axis of a must equal the second-to-last of b");
    return d;
}

using MatmulForward = void (*)(float*, const float*, const float*, int64_t, int64_t, int64_t,
                               int64_t);
using MatmulBackward = void (*)(float*, float*, const float*, const float*, const float*, int64_t,
                                int64_t, int64_t, int64_t);

// matmul_forward and matmul_forward_bf16 (kernel): the same checks, the same output.
F32 matmul_forward_with(MatmulForward kernel, const char* k, py::handle a_, py::handle b_) {
    F32 a = input_f32(a_, k, "a"), b = input_f32(b_, k, "b");
    const MatmulDims d = matmul_dims(a, b, k);
    F32 out(append(d.lead, d.M, d.N));
    {
        py::gil_scoped_release nogil;
        kernel(out.mutable_data(), a.data(), b.data(), d.batch, d.M, d.N, d.K);
    }
    return out;
}

py::tuple matmul_backward_with(MatmulBackward kernel, const char* k, py::handle dout_,
                               py::handle a_, py::handle b_) {
    F32 a = input_f32(a_, k, "a"), b = input_f32(b_, k, "b");
    F32 dout = input_f32(dout_, k, "dout");
    const MatmulDims d = matmul_dims(a, b, k);
    expect_shape(dout, append(d.lead, d.M, d.N), k, "dout");
    F32 da(shape_of(a)), db(shape_of(b));
    {
        py::gil_scoped_release nogil;
        kernel(da.mutable_data(), db.mutable_data(), dout.data(), a.data(), b.data(), d.batch,
               d.M, d.N, d.K);
    }
    return py::make_tuple(da, db);
}

F32 matmul_forward(py::handle a, py::handle b) {
    return matmul_forward_with(tinyroots::matmul_forward, "matmul_forward", a, b);
}

py::tuple matmul_backward(py::handle dout, py::handle a, py::handle b) {
    return matmul_backward_with(tinyroots::matmul_backward, "matmul_backward", dout, a, b);
}

F32 matmul_forward_bf16(py::handle a, py::handle b) {
    return matmul_forward_with(tinyroots::matmul_forward_bf16, "matmul_forward_bf16", a, b);
}

py::tuple matmul_backward_bf16(py::handle dout, py::handle a, py::handle b) {
    return matmul_backward_with(tinyroots::matmul_backward_bf16, "matmul_backward_bf16", dout, a,
                                b);
}

// a (M, K) @ b^T with b stored (N, K) -> (M, N)
F32 matmul_nt(py::handle a_, py::handle b_) {
    const char* k = "matmul_nt";
    F32 a = input_f32(a_, k, "a"), b = input_f32(b_, k, "b");
    if (a.ndim() != 2 || b.ndim() != 2 || a.shape(1) != b.shape(1))
        fail(k, "a must be (M, K) and b (N, K) with the same K, got a " + shape_str(a) +
                    " and b " + shape_str(b));
    const int64_t M = a.shape(0), K = a.shape(1), N = b.shape(0);
    F32 out(Shape{M, N});
    {
        py::gil_scoped_release nogil;
        tinyroots::matmul_nt(out.mutable_data(), a.data(), b.data(), M, N, K);
    }
    return out;
}

// a^T @ b with a stored (K, M) and b (K, N) -> (M, N)
F32 matmul_tn(py::handle a_, py::handle b_) {
    const char* k = "matmul_tn";
    F32 a = input_f32(a_, k, "a"), b = input_f32(b_, k, "b");
    if (a.ndim() != 2 || b.ndim() != 2 || a.shape(0) != b.shape(0))
        fail(k, "a must be (K, M) and b (K, N) with the same K, got a " + shape_str(a) +
                    " and b " + shape_str(b));
    const int64_t K = a.shape(0), M = a.shape(1), N = b.shape(1);
    F32 out(Shape{M, N});
    {
        py::gil_scoped_release nogil;
        tinyroots::matmul_tn(out.mutable_data(), a.data(), b.data(), M, N, K);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// ---- bf16 mixed precision (gemm_bf16.h)
//
// A bf16 operand is a float32 array (rounded to bf16 as the GEMM packs it) or a uint16 array of
// bf16 bit patterns (what tinyroots.ref.to_bf16 returns; NumPy has no bfloat16 dtype).

using U16 = py::array_t<uint16_t, py::array::c_style>;

struct Bf16Input {
    py::array array;  // keeps the (possibly copied) data alive
    tinyroots::Bf16Operand op;
};

Bf16Input input_bf16(const py::handle& obj, const char* kernel, const char* name) {
    if (!py::isinstance<py::array>(obj))
        fail(kernel, std::string(name) + " must be a numpy array, got " +
                         std::string(py::str(py::type::of(obj))));
    auto a = py::reinterpret_borrow<py::array>(obj);
    Bf16Input in;
    if (a.dtype().is(py::dtype::of<float>())) {
        F32 f = F32::ensure(a);
        in.op = {f.data(), false, 0};
        in.array = f;
    } else if (a.dtype().is(py::dtype::of<uint16_t>())) {
        U16 h = U16::ensure(a);
        in.op = {h.data(), true, 0};
        in.array = h;
    } else {
        throw py::type_error(std::string(kernel) + ": " + name +
                             " must be float32, or bfloat16 bit patterns as uint16 "
                             "(tinyroots.ref.to_bf16), got " + std::string(py::str(a.dtype())));
    }
    if (in.array.ndim() >= 1) in.op.ld = (int64_t)in.array.shape(in.array.ndim() - 1);
    return in;
}

struct LinearBf16Args {
    Bf16Input x, w;
    F32 b;
    const float* bias = nullptr;
    int64_t N = 0, C = 0, OC = 0;
    Shape out_shape;
};

LinearBf16Args linear_bf16_args(py::handle x_, py::handle w_, py::handle b_, const char* k) {
    LinearBf16Args a;
    a.x = input_bf16(x_, k, "x");
    a.w = input_bf16(w_, k, "w");
    const py::array& x = a.x.array;
    const py::array& w = a.w.array;
    if (x.ndim() < 1) fail(k, "x must have shape (..., C), got a 0-d array");
    a.C = x.shape(x.ndim() - 1);
    a.N = rows_before_last(x);
    if (w.ndim() != 2 || w.shape(0) != a.C)
        fail(k, "w must have shape (C, OC) with C = " + std::to_string(a.C) +
                    " (the last axis of x " + shape_str(x) + "), got " + shape_str(w));
    a.OC = w.shape(1);
    if (!b_.is_none()) {
        a.b = input_f32(b_, k, "b");
        expect_shape(a.b, {a.OC}, k, "b");
        a.bias = a.b.data();
    }
    a.out_shape = append(leading(x), a.OC);
    return a;
}

F32 linear_forward_bf16(py::handle x_, py::handle w_, py::handle b_) {
    LinearBf16Args a = linear_bf16_args(x_, w_, b_, "linear_forward_bf16");
    F32 out = output_apart(a.out_shape, {a.x.array.data()});
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_forward_bf16(out.mutable_data(), a.x.op, a.w.op, a.bias, a.N, a.C,
                                       a.OC);
    }
    return out;
}

py::tuple linear_gelu_forward_bf16(py::handle x_, py::handle w_, py::handle b_) {
    LinearBf16Args a = linear_bf16_args(x_, w_, b_, "linear_gelu_forward_bf16");
    F32 pre = output_apart(a.out_shape, {a.x.array.data()});
    F32 out = output_apart(a.out_shape, {a.x.array.data(), pre.data()});
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_gelu_forward_bf16(pre.mutable_data(), out.mutable_data(), a.x.op,
                                            a.w.op, a.bias, a.N, a.C, a.OC);
    }
    return py::make_tuple(pre, out);
}

F32 linear_residual_forward_bf16(py::handle x_, py::handle w_, py::handle b_,
                                 py::handle residual_) {
    const char* k = "linear_residual_forward_bf16";
    LinearBf16Args a = linear_bf16_args(x_, w_, b_, k);
    F32 residual = input_f32(residual_, k, "residual");
    expect_shape(residual, a.out_shape, k, "residual");
    F32 out = output_apart(a.out_shape, {residual.data()});  // the epilogue reads residual
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_residual_forward_bf16(out.mutable_data(), a.x.op, a.w.op, a.bias,
                                                residual.data(), a.N, a.C, a.OC);
    }
    return out;
}

py::tuple linear_backward_bf16(py::handle dout_, py::handle x_, py::handle w_, bool need_dx) {
    const char* k = "linear_backward_bf16";
    LinearBf16Args a = linear_bf16_args(x_, w_, py::none(), k);
    F32 dout = input_f32(dout_, k, "dout");
    expect_shape(dout, a.out_shape, k, "dout");
    F32 dw(Shape{a.C, a.OC}), db(Shape{a.OC});
    F32 dx;
    if (need_dx) dx = output_apart(shape_of(a.x.array), {dout.data(), a.x.array.data()});
    {
        py::gil_scoped_release nogil;
        tinyroots::linear_backward_bf16(need_dx ? dx.mutable_data() : nullptr, dw.mutable_data(),
                                        db.mutable_data(), dout.data(), a.x.op, a.w.op, a.N,
                                        a.C, a.OC);
    }
    return py::make_tuple(need_dx ? py::object(dx) : py::none(), dw, db);
}

// a (M, K) @ b^T with b stored (N, K) -> (M, N)
F32 matmul_nt_bf16(py::handle a_, py::handle b_) {
    const char* k = "matmul_nt_bf16";
    Bf16Input a = input_bf16(a_, k, "a"), b = input_bf16(b_, k, "b");
    if (a.array.ndim() != 2 || b.array.ndim() != 2 || a.array.shape(1) != b.array.shape(1))
        fail(k, "a must be (M, K) and b (N, K) with the same K, got a " + shape_str(a.array) +
                    " and b " + shape_str(b.array));
    const int64_t M = a.array.shape(0), K = a.array.shape(1), N = b.array.shape(0);
    F32 out(Shape{M, N});
    {
        py::gil_scoped_release nogil;
        tinyroots::matmul_nt_bf16(out.mutable_data(), a.op, b.op, M, N, K);
    }
    return out;
}

// a^T @ b with a stored (K, M) and b (K, N) -> (M, N)
F32 matmul_tn_bf16(py::handle a_, py::handle b_) {
    const char* k = "matmul_tn_bf16";
    Bf16Input a = input_bf16(a_, k, "a"), b = input_bf16(b_, k, "b");
    if (a.array.ndim() != 2 || b.array.ndim() != 2 || a.array.shape(0) != b.array.shape(0))
        fail(k, "a must be (K, M) and b (K, N) with the same K, got a " + shape_str(a.array) +
                    " and b " + shape_str(b.array));
    const int64_t K = a.array.shape(0), M = a.array.shape(1), N = b.array.shape(1);
    F32 out(Shape{M, N});
    {
        py::gil_scoped_release nogil;
        tinyroots::matmul_tn_bf16(out.mutable_data(), a.op, b.op, M, N, K);
    }
    return out;
}

// float32 (any shape) -> bf16 bit patterns as uint16, rounded to nearest even
U16 to_bf16(py::handle x_) {
    F32 x = input_f32(x_, "to_bf16", "x");
    U16 out(shape_of(x));
    {
        py::gil_scoped_release nogil;
        tinyroots::float_to_bf16(out.mutable_data(), x.data(), (int64_t)x.size());
    }
    return out;
}

// bf16 bit patterns (uint16, any shape) -> float32, exactly
F32 from_bf16(py::handle h_) {
    if (!py::isinstance<py::array>(h_) ||
        !py::reinterpret_borrow<py::array>(h_).dtype().is(py::dtype::of<uint16_t>()))
        throw py::type_error("from_bf16: h must be a uint16 array of bf16 bit patterns");
    U16 h = U16::ensure(py::reinterpret_borrow<py::array>(h_));
    F32 out(shape_of(h));
    {
        py::gil_scoped_release nogil;
        tinyroots::bf16_to_float(out.mutable_data(), h.data(), (int64_t)h.size());
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// layernorm

py::tuple layernorm_forward(py::handle x_, py::handle w_, py::handle b_, float eps) {
    const char* k = "layernorm_forward";
    F32 x = input_f32(x_, k, "x"), w = input_f32(w_, k, "w");
    int64_t N, C;
    rows_of(x, &N, &C, k, "x");
    expect_shape(w, {C}, k, "w");
    F32 b;
    if (!b_.is_none()) {
        b = input_f32(b_, k, "b");
        expect_shape(b, {C}, k, "b");
    }
    F32 out = output_apart(shape_of(x), {x.data()}), mean(leading(x)), rstd(leading(x));
    {
        ReleaseGilFor nogil((int64_t)x.size());
        tinyroots::layernorm_forward(out.mutable_data(), mean.mutable_data(), rstd.mutable_data(),
                                     x.data(), w.data(), b_.is_none() ? nullptr : b.data(), N, C,
                                     eps);
    }
    return py::make_tuple(out, mean, rstd);
}

py::tuple layernorm_backward(py::handle dout_, py::handle x_, py::handle w_, py::handle mean_,
                             py::handle rstd_) {
    const char* k = "layernorm_backward";
    F32 x = input_f32(x_, k, "x"), dout = input_f32(dout_, k, "dout");
    F32 w = input_f32(w_, k, "w"), mean = input_f32(mean_, k, "mean");
    F32 rstd = input_f32(rstd_, k, "rstd");
    int64_t N, C;
    rows_of(x, &N, &C, k, "x");
    expect_shape(dout, shape_of(x), k, "dout");
    expect_shape(w, {C}, k, "w");
    expect_shape(mean, leading(x), k, "mean");
    expect_shape(rstd, leading(x), k, "rstd");
    F32 dx = output_apart(shape_of(x), {dout.data(), x.data()}), dw(Shape{C}), db(Shape{C});
    {
        py::gil_scoped_release nogil;
        tinyroots::layernorm_backward(dx.mutable_data(), dw.mutable_data(), db.mutable_data(),
                                      dout.data(), x.data(), w.data(), mean.data(), rstd.data(),
                                      N, C);
    }
    return py::make_tuple(dx, dw, db);
}

// ---------------------------------------------------------------------------------------------
// gelu

F32 gelu_forward(py::handle x_) {
    F32 x = input_f32(x_, "gelu_forward", "x");
    F32 out = output_apart(shape_of(x), {x.data()});
    {
        ReleaseGilFor nogil((int64_t)x.size());
        tinyroots::gelu_forward(out.mutable_data(), x.data(), (int64_t)x.size());
    }
    return out;
}

F32 gelu_backward(py::handle dout_, py::handle x_) {
    const char* k = "gelu_backward";
    F32 dout = input_f32(dout_, k, "dout"), x = input_f32(x_, k, "x");
    expect_shape(dout, shape_of(x), k, "dout");
    F32 dx = output_apart(shape_of(x), {dout.data(), x.data()});
    {
        py::gil_scoped_release nogil;
        tinyroots::gelu_backward(dx.mutable_data(), dout.data(), x.data(), (int64_t)x.size());
    }
    return dx;
}

// ---------------------------------------------------------------------------------------------
// softmax and log-softmax over the last axis

// Rows of x (..., C) with C >= 1: the max of an empty row is undefined (NumPy raises too).
void softmax_rows(const py::array& x, int64_t* N, int64_t* C, const char* k, const char* name) {
    rows_of(x, N, C, k, name);
    if (*C == 0) fail(k, std::string(name) + " has an empty last axis " + shape_str(x));
}

using RowKernel = void (*)(float*, const float*, int64_t, int64_t);
using RowGradKernel = void (*)(float*, const float*, const float*, int64_t, int64_t);

F32 rows_forward(py::handle x_, const char* k, RowKernel kernel) {
    F32 x = input_f32(x_, k, "x");
    int64_t N, C;
    softmax_rows(x, &N, &C, k, "x");
    F32 y = output_apart(shape_of(x), {x.data()});
    {
        py::gil_scoped_release nogil;
        kernel(y.mutable_data(), x.data(), N, C);
    }
    return y;
}

F32 rows_backward(py::handle dout_, py::handle y_, const char* k, RowGradKernel kernel) {
    F32 dout = input_f32(dout_, k, "dout"), y = input_f32(y_, k, "y");
    int64_t N, C;
    softmax_rows(y, &N, &C, k, "y");
    expect_shape(dout, shape_of(y), k, "dout");
    F32 dx = output_apart(shape_of(y), {dout.data(), y.data()});
    {
        py::gil_scoped_release nogil;
        kernel(dx.mutable_data(), dout.data(), y.data(), N, C);
    }
    return dx;
}

F32 softmax_forward(py::handle x) {
    return rows_forward(x, "softmax_forward", tinyroots::softmax_forward);
}
F32 softmax_backward(py::handle dout, py::handle y) {
    return rows_backward(dout, y, "softmax_backward", tinyroots::softmax_backward);
}
F32 log_softmax_forward(py::handle x) {
    return rows_forward(x, "log_softmax_forward", tinyroots::log_softmax_forward);
}
F32 log_softmax_backward(py::handle dout, py::handle y) {
    return rows_backward(dout, y, "log_softmax_backward", tinyroots::log_softmax_backward);
}

// ---------------------------------------------------------------------------------------------
// cross-entropy

// logits must be (N, V) with V >= 1, targets (N,) of integers in [0, V) or == ignore_index.
I64 checked_targets(const F32& logits, py::handle targets_, int64_t ignore_index, const char* k) {
    if (logits.ndim() != 2) fail(k, "logits must be 2-D (N, V), got " + shape_str(logits));
    const int64_t N = logits.shape(0), V = logits.shape(1);
    if (V == 0) fail(k, "logits has an empty vocabulary axis " + shape_str(logits));
    I64 targets = input_ids(targets_, k, "targets");
    expect_shape(targets, {N}, k, "targets");
    const int64_t bad = tinyroots::cross_entropy_bad_target(targets.data(), N, V, ignore_index);
    if (bad >= 0)
        fail(k, "targets[" + std::to_string(bad) + "] = " + std::to_string(targets.data()[bad]) +
                    " is not a class index: expected 0 <= target < V = " + std::to_string(V) +
                    ", or ignore_index = " + std::to_string(ignore_index));
    return targets;
}

py::tuple cross_entropy_forward(py::handle logits_, py::handle targets_, int64_t ignore_index) {
    const char* k = "cross_entropy_forward";
    F32 logits = input_f32(logits_, k, "logits");
    I64 targets = checked_targets(logits, targets_, ignore_index, k);
    const int64_t N = logits.shape(0), V = logits.shape(1);
    F32 losses(Shape{N}), lse(Shape{N});
    {
        py::gil_scoped_release nogil;
        tinyroots::cross_entropy_forward(losses.mutable_data(), lse.mutable_data(), logits.data(),
                                         targets.data(), N, V, ignore_index);
    }
    return py::make_tuple(losses, lse);
}

F32 cross_entropy_backward(py::handle dlosses_, py::handle logits_, py::handle targets_,
                           py::handle lse_, int64_t ignore_index) {
    const char* k = "cross_entropy_backward";
    F32 dlosses = input_f32(dlosses_, k, "dlosses"), logits = input_f32(logits_, k, "logits");
    F32 lse = input_f32(lse_, k, "lse");
    I64 targets = checked_targets(logits, targets_, ignore_index, k);
    const int64_t N = logits.shape(0), V = logits.shape(1);
    expect_shape(dlosses, {N}, k, "dlosses");
    expect_shape(lse, {N}, k, "lse");
    F32 dlogits = output_apart(shape_of(logits), {logits.data()});
    {
        py::gil_scoped_release nogil;
        tinyroots::cross_entropy_backward(dlogits.mutable_data(), dlosses.data(), logits.data(),
                                          targets.data(), lse.data(), N, V, ignore_index);
    }
    return dlogits;
}

py::tuple cross_entropy_forward_backward(py::handle logits_, py::handle targets_,
                                         int64_t ignore_index, bool inplace) {
    const char* k = "cross_entropy_forward_backward";
    // inplace: the gradient overwrites logits, which must then be writeable and C-contiguous
    F32 logits = inplace ? inplace_f32(logits_, k, "logits") : input_f32(logits_, k, "logits");
    I64 targets = checked_targets(logits, targets_, ignore_index, k);
    const int64_t N = logits.shape(0), V = logits.shape(1);
    F32 losses(Shape{N});
    F32 dlogits = inplace ? logits : F32(shape_of(logits));
    {
        py::gil_scoped_release nogil;
        tinyroots::cross_entropy_forward_backward(losses.mutable_data(), dlogits.mutable_data(),
                                                  logits.data(), targets.data(), N, V,
                                                  ignore_index);
    }
    return py::make_tuple(losses, dlogits);
}

// ---------------------------------------------------------------------------------------------
// embedding

I64 checked_ids(py::handle ids_, int64_t V, const char* k) {
    I64 ids = input_ids(ids_, k, "ids");
    const int64_t bad = tinyroots::embedding_bad_id(ids.data(), (int64_t)ids.size(), V);
    if (bad >= 0)
        fail(k, "ids contains " + std::to_string(ids.data()[bad]) + " (at flat position " +
                    std::to_string(bad) + "), outside the vocabulary [0, " + std::to_string(V) +
                    ")");
    return ids;
}

F32 embedding_forward(py::handle weight_, py::handle ids_) {
    const char* k = "embedding_forward";
    F32 weight = input_f32(weight_, k, "weight");
    if (weight.ndim() != 2) fail(k, "weight must be 2-D (V, C), got " + shape_str(weight));
    const int64_t V = weight.shape(0), C = weight.shape(1);
    I64 ids = checked_ids(ids_, V, k);
    F32 out(with_tail(ids, C));
    {
        ReleaseGilFor nogil((int64_t)out.size());
        tinyroots::embedding_forward(out.mutable_data(), weight.data(), ids.data(),
                                     (int64_t)ids.size(), C);
    }
    return out;
}

F32 embedding_backward(py::handle dout_, py::handle ids_, int64_t V, py::handle dweight_) {
    const char* k = "embedding_backward";
    F32 dout = input_f32(dout_, k, "dout");
    if (V < 0) fail(k, "V must be >= 0, got " + std::to_string(V));
    I64 ids = checked_ids(ids_, V, k);
    if (dout.ndim() != ids.ndim() + 1)
        fail(k, "dout must have shape ids.shape + (C,) = " + shape_str(with_tail(ids, -1)) +
                    ", got " + shape_str(dout));
    const int64_t C = dout.shape(dout.ndim() - 1);
    expect_shape(dout, with_tail(ids, C), k, "dout");
    F32 dweight;
    if (!dweight_.is_none()) {
        // accumulate into an existing gradient (the tied wte already holds the head's part)
        dweight = inplace_f32(dweight_, k, "dweight");
        expect_shape(dweight, {V, C}, k, "dweight");
    } else {
        // numpy.zeros, not a fresh array + memset: it asks the OS for zeroed pages (calloc),
        // which appear lazily, so rows of a 50257 x 768 table that no id touches cost nothing.
        dweight = py::module_::import("numpy").attr("zeros")(py::make_tuple(V, C),
                                                             py::arg("dtype") = "float32");
    }
    {
        py::gil_scoped_release nogil;
        tinyroots::embedding_backward(dweight.mutable_data(), dout.data(), ids.data(),
                                      (int64_t)ids.size(), C);
    }
    return dweight;
}

// ---------------------------------------------------------------------------------------------
// attention

// qkv (B, T, 3C) with n_head dividing C; returns C.
int64_t attention_channels(const F32& qkv, int64_t n_head, const char* k) {
    if (qkv.ndim() != 3) fail(k, "qkv must be 3-D (B, T, 3C), got " + shape_str(qkv));
    const int64_t C3 = qkv.shape(2);
    if (C3 % 3 != 0)
        fail(k, "qkv's last axis must hold q, k and v (3C), got " + std::to_string(C3));
    if (n_head <= 0) fail(k, "n_head must be positive, got " + std::to_string(n_head));
    if ((C3 / 3) % n_head != 0)
        fail(k, "n_head = " + std::to_string(n_head) + " does not divide C = " +
                    std::to_string(C3 / 3));
    return C3 / 3;
}

// attention_forward and its twins (kernel: a function with attention_forward's arguments, or
// a lambda that adds its own): the same checks, the same outputs. Likewise the backward.
template <class Kernel>
py::tuple attention_forward_with(Kernel kernel, const char* k, py::handle qkv_, int64_t n_head) {
    F32 qkv = input_f32(qkv_, k, "qkv");
    const int64_t C = attention_channels(qkv, n_head, k);
    const int64_t B = qkv.shape(0), T = qkv.shape(1);
    F32 out = output_apart(Shape{B, T, C}, {qkv.data()}), lse(Shape{B, n_head, T});
    {
        py::gil_scoped_release nogil;
        kernel(out.mutable_data(), lse.mutable_data(), qkv.data(), B, T, C, n_head);
    }
    return py::make_tuple(out, lse);
}

template <class Kernel>
F32 attention_backward_with(Kernel kernel, const char* k, py::handle dout_, py::handle qkv_,
                            py::handle out_, py::handle lse_, int64_t n_head) {
    F32 qkv = input_f32(qkv_, k, "qkv"), dout = input_f32(dout_, k, "dout");
    F32 out = input_f32(out_, k, "out"), lse = input_f32(lse_, k, "lse");
    const int64_t C = attention_channels(qkv, n_head, k);
    const int64_t B = qkv.shape(0), T = qkv.shape(1);
    expect_shape(dout, {B, T, C}, k, "dout");
    expect_shape(out, {B, T, C}, k, "out");
    expect_shape(lse, {B, n_head, T}, k, "lse");
    F32 dqkv = output_apart(shape_of(qkv), {dout.data(), qkv.data(), out.data()});
    {
        py::gil_scoped_release nogil;
        kernel(dqkv.mutable_data(), dout.data(), qkv.data(), out.data(), lse.data(), B, T, C,
               n_head);
    }
    return dqkv;
}

py::tuple attention_forward(py::handle qkv, int64_t n_head) {
    return attention_forward_with(tinyroots::attention_forward, "attention_forward", qkv, n_head);
}

py::tuple attention_forward_plain(py::handle qkv, int64_t n_head) {
    return attention_forward_with(tinyroots::attention_forward_plain, "attention_forward_plain",
                                  qkv, n_head);
}

F32 attention_backward(py::handle dout, py::handle qkv, py::handle out, py::handle lse,
                       int64_t n_head) {
    return attention_backward_with(tinyroots::attention_backward, "attention_backward", dout, qkv,
                                   out, lse, n_head);
}

F32 attention_backward_plain(py::handle dout, py::handle qkv, py::handle out, py::handle lse,
                             int64_t n_head) {
    return attention_backward_with(tinyroots::attention_backward_plain,
                                   "attention_backward_plain", dout, qkv, out, lse, n_head);
}

py::tuple attention_forward_bf16(py::handle qkv, int64_t n_head) {
    return attention_forward_with(tinyroots::attention_forward_bf16, "attention_forward_bf16", qkv,
                                  n_head);
}

F32 attention_backward_bf16(py::handle dout, py::handle qkv, py::handle out, py::handle lse,
                            int64_t n_head) {
    return attention_backward_with(tinyroots::attention_backward_bf16, "attention_backward_bf16",
                                   dout, qkv, out, lse, n_head);
}

py::tuple attention_forward_dropout(py::handle qkv, int64_t n_head, double p, uint64_t seed) {
    return attention_forward_with(
        [p, seed](float* out, float* lse, const float* x, int64_t B, int64_t T, int64_t C,
                  int64_t NH) {
            tinyroots::attention_forward_dropout(out, lse, x, B, T, C, NH, p, seed);
        },
        "attention_forward_dropout", qkv, n_head);
}

F32 attention_backward_dropout(py::handle dout, py::handle qkv, py::handle out, py::handle lse,
                               int64_t n_head, double p, uint64_t seed) {
    return attention_backward_with(
        [p, seed](float* dqkv, const float* dy, const float* x, const float* y, const float* l,
                  int64_t B, int64_t T, int64_t C, int64_t NH) {
            tinyroots::attention_backward_dropout(dqkv, dy, x, y, l, B, T, C, NH, p, seed);
        },
        "attention_backward_dropout", dout, qkv, out, lse, n_head);
}

tinyroots::HeadsView heads_view(const F32& a) {
    return tinyroots::HeadsView{a.data(), stride_f32(a, 0), stride_f32(a, 1), stride_f32(a, 2)};
}

F32 attention_decode(py::handle q_, py::handle k_, py::handle v_, int64_t n_past) {
    const char* kn = "attention_decode";
    // q, k, v may be strided views (e.g. a slice of a preallocated KV cache): only their last
    // axis must be contiguous, so the cache is read in place, not copied each token.
    F32 q = input_f32_rows(q_, kn, "q"), k = input_f32_rows(k_, kn, "k");
    F32 v = input_f32_rows(v_, kn, "v");
    if (q.ndim() != 4) fail(kn, "q must be 4-D (B, NH, Tq, HS), got " + shape_str(q));
    const int64_t B = q.shape(0), NH = q.shape(1), Tq = q.shape(2), HS = q.shape(3);
    expect_shape(k, {B, NH, -1, HS}, kn, "k");
    const int64_t Tk = k.shape(2);
    expect_shape(v, {B, NH, Tk, HS}, kn, "v");
    if (n_past < 0 || n_past + Tq > Tk)
        fail(kn, "n_past = " + std::to_string(n_past) + " with Tq = " + std::to_string(Tq) +
                     " new queries needs k and v to hold n_past + Tq keys, and they hold " +
                     std::to_string(Tk));
    F32 out(Shape{B, NH, Tq, HS});
    {
        ReleaseGilFor nogil(B * NH * Tq * Tk * HS);
        tinyroots::attention_decode(out.mutable_data(), heads_view(q), heads_view(k),
                                    heads_view(v), B, NH, Tq, HS, n_past);
    }
    return out;
}

// With k_new and v_new (B, NH, Tq, HS), the new positions' keys and values are first written into
// each row's cache (kv_append_rows): one call per layer does a decoding step's cache work.
F32 attention_decode_rows(py::handle q_, py::sequence ks_, py::sequence vs_,
                          std::vector<int64_t> n_past, py::handle k_new_, py::handle v_new_) {
    const char* kn = "attention_decode_rows";
    F32 q = input_f32_rows(q_, kn, "q");
    if (q.ndim() != 4) fail(kn, "q must be 4-D (B, NH, Tq, HS), got " + shape_str(q));
    const int64_t B = q.shape(0), NH = q.shape(1), Tq = q.shape(2), HS = q.shape(3);
    if (k_new_.is_none() != v_new_.is_none())
        fail(kn, "k_new and v_new come together (both arrays, or both None)");
    const bool append = !k_new_.is_none();
    F32 k_new, v_new;
    if (append) {
        k_new = input_f32_rows(k_new_, kn, "k_new");
        expect_shape(k_new, {B, NH, Tq, HS}, kn, "k_new");
        v_new = input_f32_rows(v_new_, kn, "v_new");
        expect_shape(v_new, {B, NH, Tq, HS}, kn, "v_new");
    }
    if ((int64_t)ks_.size() != B || (int64_t)vs_.size() != B || (int64_t)n_past.size() != B)
        fail(kn, "ks, vs and n_past must each hold one entry per row of q (" +
                     std::to_string(B) + "), got " + std::to_string(ks_.size()) + ", " +
                     std::to_string(vs_.size()) + " and " + std::to_string(n_past.size()));
    std::vector<F32> keep;  // the arrays stay alive (and converted) while the kernel runs
    std::vector<tinyroots::HeadsView> ks, vs;
    // the caches are written into when appending: then a converted copy would lose the write
    const auto cache = append ? inplace_f32 : input_f32_rows;
    for (int64_t b = 0; b < B; b++) {
        const std::string where = "[" + std::to_string(b) + "]";
        F32 k = cache(ks_[b], kn, ("ks" + where).c_str());
        expect_shape(k, {1, NH, -1, HS}, kn, ("ks" + where).c_str());
        F32 v = cache(vs_[b], kn, ("vs" + where).c_str());
        expect_shape(v, {1, NH, k.shape(2), HS}, kn, ("vs" + where).c_str());
        if (n_past[b] < 0 || n_past[b] + Tq > k.shape(2))
            fail(kn, "n_past" + where + " = " + std::to_string(n_past[b]) + " with Tq = " +
                         std::to_string(Tq) + " new queries needs its cache to hold n_past + Tq "
                         "keys, and it holds " + std::to_string(k.shape(2)));
        ks.push_back(heads_view(k));
        vs.push_back(heads_view(v));
        keep.push_back(std::move(k));
        keep.push_back(std::move(v));
    }
    int64_t keys = 0;
    for (int64_t b = 0; b < B; b++) keys += n_past[b] + Tq;
    F32 out(Shape{B, NH, Tq, HS});
    {
        ReleaseGilFor nogil(keys * NH * Tq * HS);
        if (append)
            tinyroots::kv_append_rows(heads_view(k_new), heads_view(v_new), ks.data(), vs.data(),
                                      n_past.data(), B, NH, Tq, HS);
        tinyroots::attention_decode_rows(out.mutable_data(), heads_view(q), ks.data(), vs.data(),
                                         n_past.data(), B, NH, Tq, HS);
    }
    return out;
}

// ---------------------------------------------------------------------------------------------
// optimizer updates (in place)

void adamw_update(py::handle param_, py::handle grad_, py::handle m_, py::handle v_, double lr,
                  double beta1, double beta2, double eps, double weight_decay, double step) {
    const char* k = "adamw_update";
    F32 param = inplace_f32(param_, k, "param"), m = inplace_f32(m_, k, "m");
    F32 v = inplace_f32(v_, k, "v"), grad = input_f32(grad_, k, "grad");
    expect_shape(grad, shape_of(param), k, "grad");
    expect_shape(m, shape_of(param), k, "m");
    expect_shape(v, shape_of(param), k, "v");
    if (!(step >= 1)) fail(k, "step counts from 1, got " + std::to_string(step));
    {
        py::gil_scoped_release nogil;
        tinyroots::adamw_update(param.mutable_data(), grad.data(), m.mutable_data(),
                                v.mutable_data(), (int64_t)param.size(), lr, beta1, beta2, eps,
                                weight_decay, step);
    }
}

void sgd_update(py::handle param_, py::handle grad_, py::handle buf_, double lr, double momentum,
                double weight_decay, bool nesterov) {
    const char* k = "sgd_update";
    F32 param = inplace_f32(param_, k, "param"), grad = input_f32(grad_, k, "grad");
    expect_shape(grad, shape_of(param), k, "grad");
    F32 buf;
    if (momentum != 0.0) {
        if (buf_.is_none())
            fail(k, "momentum = " + std::to_string(momentum) +
                        " needs a momentum buffer buf (zeros like param), got None");
        buf = inplace_f32(buf_, k, "buf");
        expect_shape(buf, shape_of(param), k, "buf");
    }
    {
        py::gil_scoped_release nogil;
        tinyroots::sgd_update(param.mutable_data(), grad.data(),
                              momentum != 0.0 ? buf.mutable_data() : nullptr,
                              (int64_t)param.size(), lr, momentum, weight_decay, nesterov);
    }
}

// ---------------------------------------------------------------------------------------------
// for the tests only: the kernels' vectorized exp, so its stated error can be checked

F32 exp_approx(py::handle x_) {
    F32 x = input_f32(x_, "_exp_approx", "x");
    F32 y(shape_of(x));
    {
        py::gil_scoped_release nogil;
        tinyroots::exp_approx_array(y.mutable_data(), x.data(), (int64_t)x.size());
    }
    return y;
}

// for the benchmarks only: STREAM's triad a = b + s * c, the memory-bandwidth yardstick
void stream_triad(py::handle a_, py::handle b_, py::handle c_, float s) {
    const char* k = "_stream_triad";
    F32 a = inplace_f32(a_, k, "a"), b = input_f32(b_, k, "b"), c = input_f32(c_, k, "c");
    expect_shape(b, shape_of(a), k, "b");
    expect_shape(c, shape_of(a), k, "c");
    py::gil_scoped_release nogil;
    tinyroots::stream_triad(a.mutable_data(), b.data(), c.data(), s, (int64_t)a.size());
}

}  // namespace

PYBIND11_MODULE(_C, m) {
    m.doc() = "tinyroots C++/OpenMP kernels (see tinyroots/ref.py for the NumPy twin of each)";

    // -- runtime information --------------------------------------------------------------
    m.def("set_num_threads", &tinyroots::set_num_threads, py::arg("n"),
          "Set the number of OpenMP threads the kernels use.");
    m.def("get_num_threads", &tinyroots::max_threads);
    m.def("simd_isa", &tinyroots::simd_isa,
          "Instruction set of the hand-written SIMD kernels: avx512, avx2 or portable.");
#ifdef _OPENMP
    m.attr("openmp") = true;
#else
    m.attr("openmp") = false;
#endif
    malloc_tuned = tinyroots::tune_allocator();
    m.attr("malloc_tuned") = malloc_tuned;
    m.attr("FEW_ROWS_MAX") = tinyroots::GEMM_FEW_ROWS_MAX;

    // -- kernels -------------------------------------------------------------------------
    // linear / matmul (gemm.h)
    m.def("linear_forward", &linear_forward, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none());
    m.def("linear_backward", &linear_backward, py::arg("dout"), py::arg("x"), py::arg("w"),
          py::arg("need_dx") = true);
    m.def("linear_gelu_forward", &linear_gelu_forward, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none());
    m.def("linear_residual_forward", &linear_residual_forward, py::arg("x"), py::arg("w"),
          py::arg("b"), py::arg("residual"));
    m.def("matmul_forward", &matmul_forward, py::arg("a"), py::arg("b"));
    m.def("matmul_backward", &matmul_backward, py::arg("dout"), py::arg("a"), py::arg("b"));
    m.def("matmul_forward_bf16", &matmul_forward_bf16, py::arg("a"), py::arg("b"));
    m.def("matmul_backward_bf16", &matmul_backward_bf16, py::arg("dout"), py::arg("a"),
          py::arg("b"));
    m.def("matmul_nt", &matmul_nt, py::arg("a"), py::arg("b"));
    m.def("matmul_tn", &matmul_tn, py::arg("a"), py::arg("b"));
    // bf16 mixed precision (gemm_bf16.h)
    m.def("bf16_isa", &tinyroots::bf16_isa,
          "Path of the bf16 GEMM: amx, avx512bf16 or portable.");
    m.def("linear_forward_bf16", &linear_forward_bf16, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none());
    m.def("linear_gelu_forward_bf16", &linear_gelu_forward_bf16, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none());
    m.def("linear_residual_forward_bf16", &linear_residual_forward_bf16, py::arg("x"),
          py::arg("w"), py::arg("b"), py::arg("residual"));
    m.def("linear_backward_bf16", &linear_backward_bf16, py::arg("dout"), py::arg("x"),
          py::arg("w"), py::arg("need_dx") = true);
    m.def("matmul_nt_bf16", &matmul_nt_bf16, py::arg("a"), py::arg("b"));
    m.def("matmul_tn_bf16", &matmul_tn_bf16, py::arg("a"), py::arg("b"));
    m.def("to_bf16", &to_bf16, py::arg("x"));
    m.def("from_bf16", &from_bf16, py::arg("h"));

    m.def("layernorm_forward", &layernorm_forward, py::arg("x"), py::arg("w"),
          py::arg("b") = py::none(), py::arg("eps") = 1e-5f);
    m.def("layernorm_backward", &layernorm_backward, py::arg("dout"), py::arg("x"), py::arg("w"),
          py::arg("mean"), py::arg("rstd"));

    // gelu
    m.def("gelu_forward", &gelu_forward, py::arg("x"));
    m.def("gelu_backward", &gelu_backward, py::arg("dout"), py::arg("x"));

    // softmax and log-softmax
    m.def("softmax_forward", &softmax_forward, py::arg("x"));
    m.def("softmax_backward", &softmax_backward, py::arg("dout"), py::arg("y"));
    m.def("log_softmax_forward", &log_softmax_forward, py::arg("x"));
    m.def("log_softmax_backward", &log_softmax_backward, py::arg("dout"), py::arg("y"));

    // cross-entropy
    m.def("cross_entropy_forward", &cross_entropy_forward, py::arg("logits"), py::arg("targets"),
          py::arg("ignore_index") = -100);
    m.def("cross_entropy_backward", &cross_entropy_backward, py::arg("dlosses"),
          py::arg("logits"), py::arg("targets"), py::arg("lse"), py::arg("ignore_index") = -100);
    m.def("cross_entropy_forward_backward", &cross_entropy_forward_backward, py::arg("logits"),
          py::arg("targets"), py::arg("ignore_index") = -100, py::arg("inplace") = false);

    // embedding
    m.def("embedding_forward", &embedding_forward, py::arg("weight"), py::arg("ids"));
    m.def("embedding_backward", &embedding_backward, py::arg("dout"), py::arg("ids"),
          py::arg("V"), py::arg("dweight") = py::none());

    // attention
    m.def("attention_forward", &attention_forward, py::arg("qkv"), py::arg("n_head"));
    m.def("attention_backward", &attention_backward, py::arg("dout"), py::arg("qkv"),
          py::arg("out"), py::arg("lse"), py::arg("n_head"));
    m.def("attention_decode", &attention_decode, py::arg("q"), py::arg("k"), py::arg("v"),
          py::arg("n_past"));
    m.def("attention_decode_rows", &attention_decode_rows, py::arg("q"), py::arg("ks"),
          py::arg("vs"), py::arg("n_past"), py::arg("k_new") = py::none(),
          py::arg("v_new") = py::none());
    m.def("attention_forward_dropout", &attention_forward_dropout, py::arg("qkv"),
          py::arg("n_head"), py::arg("p"), py::arg("seed"));
    m.def("attention_backward_dropout", &attention_backward_dropout, py::arg("dout"),
          py::arg("qkv"), py::arg("out"), py::arg("lse"), py::arg("n_head"), py::arg("p"),
          py::arg("seed"));
    m.def("attention_forward_bf16", &attention_forward_bf16, py::arg("qkv"), py::arg("n_head"));
    m.def("attention_backward_bf16", &attention_backward_bf16, py::arg("dout"), py::arg("qkv"),
          py::arg("out"), py::arg("lse"), py::arg("n_head"));
    // the plain loops of attention.cpp, on their own (tested against ref like the rest)
    m.def("attention_forward_plain", &attention_forward_plain, py::arg("qkv"), py::arg("n_head"));
    m.def("attention_backward_plain", &attention_backward_plain, py::arg("dout"), py::arg("qkv"),
          py::arg("out"), py::arg("lse"), py::arg("n_head"));

    // optimizer updates (in place, return None)
    m.def("adamw_update", &adamw_update, py::arg("param"), py::arg("grad"), py::arg("m"),
          py::arg("v"), py::arg("lr"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
          py::arg("weight_decay"), py::arg("step"));
    m.def("sgd_update", &sgd_update, py::arg("param"), py::arg("grad"), py::arg("buf"),
          py::arg("lr"), py::arg("momentum"), py::arg("weight_decay"), py::arg("nesterov"));

    // for the tests only (not a kernel of ref.py)
    m.def("_exp_approx", &exp_approx, py::arg("x"),
          "e^x with the kernels' vectorized exp (max relative error 8.6e-8); for tests.");
    m.def("_stream_triad", &stream_triad, py::arg("a"), py::arg("b"), py::arg("c"), py::arg("s"),
          "a = b + s * c in place (STREAM's triad); the bandwidth yardstick of the benchmarks.");
}
