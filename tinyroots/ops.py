"""Every differentiable operation in one place: forward and backward side by side.

Each op takes Tensors (or arrays / Python numbers, treated as constants), computes its output
with NumPy or with a kernel from ``kernels`` (C++ or the NumPy reference), and returns a Tensor
whose ``_backward(g)`` adds the gradient for each input. Read one op and you have read them all:

    def mul(a, b):
        out = a * b
        def backward(g):                # g = dL/dout
            a._accum(g * b)             # dL/da = g * b
            b._accum(g * a)             # dL/db = g * a

Conventions: shapes in docstrings use B, T, C, NH, HS, V (see ref.py). A backward never writes
into ``g`` (the same array may be handed to several parents). Shape and dtype mistakes raise
ShapeError / TypeError naming the op and the shapes, before any NumPy traceback can happen.
"""

import builtins
import contextlib
import contextvars
import math
import sys

import numpy as np

from . import kernels, ref
from .random import generator
from .tensor import Tensor, is_grad_enabled


class ShapeError(ValueError):
    """An op got tensors whose shapes do not fit together."""


# ---------------------------------------------------------------------------------------------
# helpers


def _as_tensor(x, like=None):
    """Tensors pass through; arrays and numbers become constants (no gradient)."""
    if isinstance(x, Tensor):
        return x
    dtype = like.dtype if like is not None else np.float32
    return Tensor(np.asarray(x), dtype=dtype)


def _pair(op, a, b):
    if not isinstance(a, Tensor) and not isinstance(b, Tensor):
        raise TypeError(f"{op}: expected at least one Tensor, got {type(a).__name__} and "
                        f"{type(b).__name__}")
    a = _as_tensor(a, like=b if isinstance(b, Tensor) else None)
    b = _as_tensor(b, like=a)
    if a.dtype != b.dtype:
        raise TypeError(f"{op}: dtype mismatch, {a.dtype} {a.shape} and {b.dtype} {b.shape}; "
                        "convert one of them first")
    return a, b


# ---------------------------------------------------------------------------------------------
# mixed precision: the products of the linear ops and of attention in bfloat16
#
# Inside ``with autocast("bf16")`` the four linear ops (linear, linear_gelu, linear_residual,
# linear_transposed) round both operands of each product, forward and backward, to bf16 and sum
# in float32 (kernels.*_bf16; on AMX / AVX512-BF16 units that is several times the float32 rate).
# So does the fused attention op: q k^T, P v and the backward's five products take bf16
# operands (q, k, v, dout, the probabilities P and dS), while its softmax stays float32; and so
# does matmul (float32 operands), which attention composed from products uses (with dropout).
# Everything else stays float32, as mixed-precision training does it: the master weights and
# their gradients (so the optimizer, its moments and weight decay see float32), layernorm and its
# statistics, the softmax, GELU, cross-entropy, and every Tensor between the ops. An
# op reads the setting when it runs forward; its backward makes the same choice. A weight stored
# in bf16 (uint16 bits: a model loaded with dtype="bf16" for decoding) always multiplies in bf16.
#
# What the backward keeps: a linear op's input x (saved for dw = x^T @ g) is not copied to bf16
# here, because the Tensor graph holds x's float32 array anyway (it is another op's output), and
# a second, bf16 copy would add memory, not save it. The backward's product rounds x to bf16 as
# it packs it, so the arithmetic is the same as storing it rounded.
_DTYPES = ("fp32", "bf16")
_GEMM_BF16 = contextvars.ContextVar("tinyroots_gemm_bf16", default=False)


def check_dtype(dtype, name="dtype"):
    """dtype if it is one tinyroots computes in ('fp32' or 'bf16'), else a ValueError."""
    if dtype not in _DTYPES:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, _DTYPES))}, got {dtype!r}")
    return dtype


@contextlib.contextmanager
def autocast(dtype="bf16"):
    """Run the linear ops' products in ``dtype`` ('bf16' or 'fp32') inside the block."""
    token = _GEMM_BF16.set(check_dtype(dtype) == "bf16")
    try:
        yield
    finally:
        _GEMM_BF16.reset(token)


def _bf16_gemm(w):
    """True when the product with weight w runs in bf16: autocast, or w stored in bf16."""
    return _GEMM_BF16.get() or w.dtype == np.uint16


def _gemm_pair(op, x, w):
    """_pair for the linear ops, which also take a weight stored as bf16 bits (uint16)."""
    if isinstance(w, Tensor) and w.dtype == np.uint16:
        return _as_tensor(x), w
    return _pair(op, x, w)


def _broadcast_error(op, a, b):
    return ShapeError(f"{op}: shapes {a.shape} and {b.shape} cannot be broadcast together")


def _unbroadcast(g, shape):
    """Sum g over the axes that broadcasting added or stretched, so it has ``shape`` again.

        (B, T, C) gradient for a (C,) bias -> summed over B and T -> (C,)
    """
    if g.shape == shape:
        return g
    extra = g.ndim - len(shape)
    if extra:
        g = g.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and g.shape[i] != 1)
    if stretched:
        g = g.sum(axis=stretched, keepdims=True)
    return g


def _rows(x):
    """(..., C) -> (N, C), a view when possible."""
    return x.reshape(-1, x.shape[-1])


# ---------------------------------------------------------------------------------------------
# elementwise arithmetic with broadcasting


def add(a, b):
    """a + b, NumPy broadcasting. backward: g, summed back over broadcast axes."""
    a, b = _pair("add", a, b)
    try:
        out = a.data + b.data
    except ValueError:
        raise _broadcast_error("add", a, b) from None
    return _sum_of(out, a, b)


def _sum_of(out, a, b):
    """The Tensor out = a + b, whatever buffer out is."""
    def backward(g):
        if a.requires_grad:
            a._accum(_unbroadcast(g, a.shape))
        if b.requires_grad:
            b._accum(_unbroadcast(g, b.shape))

    return Tensor._from_op(out, (a, b), backward, "add")


def sub(a, b):
    """a - b. backward: g for a, -g for b."""
    a, b = _pair("sub", a, b)
    try:
        out = a.data - b.data
    except ValueError:
        raise _broadcast_error("sub", a, b) from None

    def backward(g):
        if a.requires_grad:
            a._accum(_unbroadcast(g, a.shape))
        if b.requires_grad:
            b._accum(_unbroadcast(-g, b.shape))

    return Tensor._from_op(out, (a, b), backward, "sub")


def mul(a, b):
    """a * b. backward: forward was out = a * b, so da = g * b and db = g * a."""
    a, b = _pair("mul", a, b)
    try:
        out = a.data * b.data
    except ValueError:
        raise _broadcast_error("mul", a, b) from None

    def backward(g):
        if a.requires_grad:
            a._accum(_unbroadcast(g * b.data, a.shape))
        if b.requires_grad:
            b._accum(_unbroadcast(g * a.data, b.shape))

    return Tensor._from_op(out, (a, b), backward, "mul")


def div(a, b):
    """a / b. backward: da = g / b, db = -g * a / b^2."""
    a, b = _pair("div", a, b)
    try:
        out = a.data / b.data
    except ValueError:
        raise _broadcast_error("div", a, b) from None

    def backward(g):
        if a.requires_grad:
            a._accum(_unbroadcast(g / b.data, a.shape))
        if b.requires_grad:
            b._accum(_unbroadcast(-g * out / b.data, b.shape))

    return Tensor._from_op(out, (a, b), backward, "div")


def neg(a):
    """-a. backward: -g."""
    a = _as_tensor(a)
    return Tensor._from_op(-a.data, (a,), lambda g: a._accum(-g), "neg")


def power(a, exponent):
    """a ** p for a constant Python number p. backward: p * a^(p-1) * g."""
    a = _as_tensor(a)
    if isinstance(exponent, Tensor) or not np.isscalar(exponent):
        raise TypeError("power: the exponent must be a Python number")
    p = float(exponent)
    out = a.data ** a.dtype.type(p)

    def backward(g):
        a._accum(g * (p * a.data ** a.dtype.type(p - 1.0)))

    return Tensor._from_op(out, (a,), backward, "power")


def abs(a):  # noqa: A001  (shadows the builtin inside this module only, as NumPy does)
    """|a|. backward: sign(a) * g (0 at a == 0, as in PyTorch)."""
    a = _as_tensor(a)
    return Tensor._from_op(np.abs(a.data), (a,), lambda g: a._accum(g * np.sign(a.data)), "abs")


def exp(a):
    """e^a. backward: forward was out = exp(a), so da = g * out."""
    a = _as_tensor(a)
    out = np.exp(a.data)
    return Tensor._from_op(out, (a,), lambda g: a._accum(g * out), "exp")


def log(a):
    """natural log. backward: g / a."""
    a = _as_tensor(a)
    return Tensor._from_op(np.log(a.data), (a,), lambda g: a._accum(g / a.data), "log")


def tanh(a):
    """tanh(a). backward: forward was out = tanh(a), so da = g * (1 - out^2)."""
    a = _as_tensor(a)
    out = np.tanh(a.data)
    return Tensor._from_op(out, (a,), lambda g: a._accum(g * (1.0 - out * out)), "tanh")


def relu(a):
    """max(a, 0). backward: g where a > 0."""
    a = _as_tensor(a)
    return Tensor._from_op(np.maximum(a.data, 0), (a,),
                           lambda g: a._accum(g * (a.data > 0)), "relu")


def gelu(a):
    """GPT-2's GELU, tanh form: 0.5 a (1 + tanh(sqrt(2/pi) (a + 0.044715 a^3)))."""
    a = _as_tensor(a)
    out = kernels.gelu_forward(a.data)
    return Tensor._from_op(out, (a,), lambda g: a._accum(kernels.gelu_backward(g, a.data)), "gelu")


def where(mask, a, b):
    """Elementwise mask ? a : b with a boolean constant mask. backward: g routed by the mask."""
    a, b = _pair("where", a, b)
    mask = np.asarray(mask, dtype=bool)
    try:
        out = np.where(mask, a.data, b.data)
    except ValueError:
        raise ShapeError(f"where: shapes {mask.shape}, {a.shape} and {b.shape} cannot be "
                         "broadcast together") from None

    def backward(g):
        zero = np.zeros((), dtype=g.dtype)
        if a.requires_grad:
            a._accum(_unbroadcast(np.where(mask, g, zero), a.shape))
        if b.requires_grad:
            b._accum(_unbroadcast(np.where(mask, zero, g), b.shape))

    return Tensor._from_op(out, (a, b), backward, "where")


# ---------------------------------------------------------------------------------------------
# reductions


def _norm_axis(op, axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if np.isscalar(axis) else tuple(axis)
    out = []
    for ax in axes:
        if not -ndim <= ax < ndim:
            raise ShapeError(f"{op}: axis {ax} is out of range for a tensor with {ndim} axes")
        out.append(ax % ndim)
    return tuple(out)


def sum(a, axis=None, keepdims=False):  # noqa: A001
    """Sum over axis (all axes by default). backward: g broadcast back to a's shape."""
    a = _as_tensor(a)
    axes = _norm_axis("sum", axis, a.ndim)
    out = a.data.sum(axis=axes, keepdims=keepdims)

    def backward(g):
        if not keepdims:
            g = np.expand_dims(g, axes)
        a._accum(np.broadcast_to(g, a.shape))

    return Tensor._from_op(np.asarray(out, dtype=a.dtype), (a,), backward, "sum")


def mean(a, axis=None, keepdims=False):
    """Mean over axis. backward: g / n broadcast back."""
    a = _as_tensor(a)
    axes = _norm_axis("mean", axis, a.ndim)
    n = int(np.prod([a.shape[i] for i in axes])) if axes else 1
    return mul(sum(a, axes, keepdims), 1.0 / max(n, 1))


# ---------------------------------------------------------------------------------------------
# shape manipulation


def reshape(a, shape):
    """Same data, new shape (one -1 allowed). backward: g reshaped back."""
    a = _as_tensor(a)
    shape = (shape,) if np.isscalar(shape) else tuple(shape)
    try:
        out = a.data.reshape(shape)
    except ValueError:
        raise ShapeError(f"reshape: cannot reshape a tensor of shape {a.shape} "
                         f"({a.size} elements) into {shape}") from None
    return Tensor._from_op(out, (a,), lambda g: a._accum(g.reshape(a.shape)), "reshape")


def transpose(a, axes=None):
    """Permute axes (reverse them by default). backward: the inverse permutation."""
    a = _as_tensor(a)
    if axes is not None and len(axes) == 1 and not np.isscalar(axes[0]):
        axes = tuple(axes[0])
    axes = tuple(reversed(range(a.ndim))) if not axes else tuple(axes)
    if sorted(ax % a.ndim for ax in axes) != list(range(a.ndim)) or len(axes) != a.ndim:
        raise ShapeError(f"transpose: axes {axes} are not a permutation of a tensor with shape "
                         f"{a.shape}")
    inverse = tuple(np.argsort([ax % a.ndim for ax in axes]))
    return Tensor._from_op(a.data.transpose(axes), (a,),
                           lambda g: a._accum(g.transpose(inverse)), "transpose")


def _is_basic_index(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis
               for i in items)


def getitem(a, index):
    """a[index] (slices, integers, or integer/boolean arrays). backward: g scattered back."""
    a = _as_tensor(a)
    if isinstance(index, Tensor):
        raise TypeError("getitem: index with a NumPy array, not a Tensor")
    try:
        out = a.data[index]
    except IndexError as exc:
        raise ShapeError(f"getitem: index {index!r} does not fit a tensor of shape "
                         f"{a.shape}: {exc}") from None
    basic = _is_basic_index(index)

    def backward(g):
        full = np.zeros_like(a.data)
        if basic:
            full[index] = g
        else:
            np.add.at(full, index, g)  # the same element may be picked twice
        a._accum(full)

    return Tensor._from_op(np.ascontiguousarray(out), (a,), backward, "getitem")


def split(a, sections, axis=-1):
    """Split along axis into equal parts (sections=int) or parts of the given sizes (list).

        split(qkv (B, T, 3C), 3) -> [q, k, v], each (B, T, C)
    """
    a = _as_tensor(a)
    axis = _norm_axis("split", axis, a.ndim)[0]
    n = a.shape[axis]
    if np.isscalar(sections):
        if sections <= 0 or n % sections:
            raise ShapeError(f"split: axis {axis} of size {n} does not split into {sections} "
                             "equal parts")
        sizes = [n // sections] * sections
    else:
        sizes = list(sections)
        if builtins.sum(sizes) != n:
            raise ShapeError(f"split: sizes {sizes} do not add up to {n} (axis {axis} of "
                             f"{a.shape})")
    parts, start = [], 0
    for size in sizes:
        index = (slice(None),) * axis + (slice(start, start + size),)
        parts.append(getitem(a, index))
        start += size
    return parts


def concat(tensors, axis=-1):
    """Join tensors along an existing axis. backward: g cut back into the pieces."""
    tensors = [_as_tensor(t) for t in tensors]
    if not tensors:
        raise ShapeError("concat: need at least one tensor")
    try:
        out = np.concatenate([t.data for t in tensors], axis=axis)
    except ValueError:
        raise ShapeError("concat: shapes " + ", ".join(str(t.shape) for t in tensors)
                         + f" do not match outside axis {axis}") from None
    bounds = np.cumsum([t.shape[axis] for t in tensors])[:-1]

    def backward(g):
        for t, piece in zip(tensors, np.split(g, bounds, axis=axis)):
            if t.requires_grad:
                t._accum(np.ascontiguousarray(piece))

    return Tensor._from_op(out, tuple(tensors), backward, "concat")


# ---------------------------------------------------------------------------------------------
# matrix products


def matmul(a, b):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N); batch axes broadcast. Inside
    ``autocast("bf16")`` float32 operands are rounded to bf16 (products summed in float32).

    backward: da = g @ b^T, db = a^T @ g, each summed over batch axes it was broadcast along.
    """
    a, b = _pair("matmul", a, b)
    if a.ndim < 2 or b.ndim < 2 or a.shape[-1] != b.shape[-2]:
        raise ShapeError(f"matmul: shapes {a.shape} and {b.shape} do not line up "
                         "(need (..., M, K) @ (..., K, N))")
    same_batch = a.ndim == b.ndim and a.shape[:-2] == b.shape[:-2]
    # the C++ kernel wants equal batch axes; broadcasting ones go to the NumPy reference
    impl = kernels if same_batch else ref
    bf16 = _GEMM_BF16.get() and a.dtype == np.float32
    forward = impl.matmul_forward_bf16 if bf16 else impl.matmul_forward
    try:
        out = forward(a.data, b.data)
    except ValueError:
        raise ShapeError(f"matmul: batch axes of {a.shape} and {b.shape} cannot be "
                         "broadcast together") from None

    def backward(g):
        backward = impl.matmul_backward_bf16 if bf16 else impl.matmul_backward
        da, db = backward(g, a.data, b.data)
        if a.requires_grad:
            a._accum(_unbroadcast(da, a.shape), owned=True)
        if b.requires_grad:
            b._accum(_unbroadcast(db, b.shape), owned=True)

    return Tensor._from_op(out, (a, b), backward, "matmul")


def linear(x, w, b=None):
    """GPT-2's Conv1D: x (..., C) @ w (C, OC) + b (OC,) -> (..., OC).

    backward (with x flattened to (N, C)): dx = g @ w^T, dw = x^T @ g, db = sum_n g.
    """
    x, w = _gemm_pair("linear", x, w)
    if w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"linear: input {x.shape} does not fit weight {w.shape} "
                         "(need x (..., C) and w (C, OC))")
    if b is not None:
        b = _as_tensor(b, like=w)
        if b.shape != (w.shape[1],):
            raise ShapeError(f"linear: bias has shape {b.shape}, expected ({w.shape[1]},)")
    lead = x.shape[:-1]
    x2 = _rows(x.data)
    bf16 = _bf16_gemm(w)
    forward = kernels.linear_forward_bf16 if bf16 else kernels.linear_forward
    out = forward(x2, w.data, None if b is None else b.data)
    out = out.reshape(*lead, w.shape[1])

    def backward(g):
        _linear_backward(_rows(g), x, x2, w, b, bf16)

    parents = (x, w) if b is None else (x, w, b)
    return Tensor._from_op(out, parents, backward, "linear")


def linear_residual(x, w, b, residual):
    """Fused residual + linear(x, w, b): a block's output projection and its skip connection,
    written in one pass (the add happens in the GEMM's epilogue, while the tile is in registers).

    x (..., C), w (C, OC), residual (..., OC). backward: dresidual = g, and linear's backward.
    """
    x, w = _gemm_pair("linear_residual", x, w)
    residual = _as_tensor(residual, like=x)
    if w.ndim != 2 or x.shape[-1] != w.shape[0] or residual.shape != x.shape[:-1] + w.shape[1:]:
        raise ShapeError(f"linear_residual: input {x.shape}, weight {w.shape} and residual "
                         f"{residual.shape} do not fit (need (..., C), (C, OC), (..., OC))")
    if b is not None:
        b = _as_tensor(b, like=w)
    x2 = _rows(x.data)
    bf16 = _bf16_gemm(w)
    forward = kernels.linear_residual_forward_bf16 if bf16 else kernels.linear_residual_forward
    out = forward(x2, w.data, None if b is None else b.data,
                  _rows(residual.data)).reshape(residual.shape)

    def backward(g):
        residual._accum(g)
        _linear_backward(_rows(g), x, x2, w, b, bf16)

    parents = (x, w, residual) if b is None else (x, w, b, residual)
    return Tensor._from_op(out, parents, backward, "linear_residual")


def _linear_backward(g2, x, x2, w, b, bf16=False):
    """The shared backward of linear and linear_gelu, given g2 = dL/d(x @ w + b) as (N, OC).

    A frozen weight (requires_grad False: fine-tuning with LoRA or frozen blocks) costs no
    dw GEMM: only dx = g2 @ w^T is made. bf16: the products in bf16, as the forward's were.
    """
    if w.requires_grad:
        backward = kernels.linear_backward_bf16 if bf16 else kernels.linear_backward
        dx, dw, db = backward(g2, x2, w.data, x.requires_grad)
        w._accum(dw, owned=True)
    else:
        matmul_nt = kernels.matmul_nt_bf16 if bf16 else kernels.matmul_nt
        dx = matmul_nt(g2, w.data) if x.requires_grad else None
        db = g2.sum(axis=0) if b is not None and b.requires_grad else None
    if x.requires_grad:
        x._accum(dx.reshape(x.shape))
    if b is not None and b.requires_grad:
        b._accum(db, owned=True)


def linear_gelu(x, w, b=None):
    """Fused gelu(linear(x, w, b)), GPT-2's MLP expansion: one pass writes both the
    pre-activation (kept for backward) and the activation."""
    x, w = _gemm_pair("linear_gelu", x, w)
    if w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"linear_gelu: input {x.shape} does not fit weight {w.shape}")
    if b is not None:
        b = _as_tensor(b, like=w)
        if b.shape != (w.shape[1],):
            raise ShapeError(f"linear_gelu: bias has shape {b.shape}, expected ({w.shape[1]},)")
    lead = x.shape[:-1]
    x2 = _rows(x.data)
    bf16 = _bf16_gemm(w)
    forward = kernels.linear_gelu_forward_bf16 if bf16 else kernels.linear_gelu_forward
    pre, out = forward(x2, w.data, None if b is None else b.data)

    def backward(g):
        _linear_backward(kernels.gelu_backward(_rows(g), pre), x, x2, w, b, bf16)

    parents = (x, w) if b is None else (x, w, b)
    return Tensor._from_op(out.reshape(*lead, w.shape[1]), parents, backward, "linear_gelu")


def linear_transposed(x, w):
    """x (..., C) @ w (OC, C)^T -> (..., OC): a weight stored (out, in).

    This is GPT-2's weight-tied head, logits = x @ wte^T with wte the (V, C) embedding table;
    the kernel reads wte as it is instead of materialising a (C, V) transposed copy.
    backward: dx = g @ w, dw = g^T @ x.
    """
    x, w = _gemm_pair("linear_transposed", x, w)
    if w.ndim != 2 or x.shape[-1] != w.shape[1]:
        raise ShapeError(f"linear_transposed: input {x.shape} does not fit weight {w.shape} "
                         "(need x (..., C) and w (OC, C))")
    lead = x.shape[:-1]
    x2 = _rows(x.data)
    bf16 = _bf16_gemm(w)
    out = (kernels.matmul_nt_bf16 if bf16 else kernels.matmul_nt)(x2, w.data)
    out = out.reshape(*lead, w.shape[0])

    def backward(g):
        g2 = _rows(g)
        if x.requires_grad:
            forward = kernels.linear_forward_bf16 if bf16 else kernels.linear_forward
            x._accum(forward(g2, w.data, None).reshape(x.shape))
        if w.requires_grad:
            w._accum((kernels.matmul_tn_bf16 if bf16 else kernels.matmul_tn)(g2, x2),
                     owned=True)

    return Tensor._from_op(out, (x, w), backward, "linear_transposed")


# ---------------------------------------------------------------------------------------------
# embedding, normalisation, softmax


def embedding(weight, ids):
    """weight (V, C), ids (...) integers -> (..., C). backward: scatter-add g into rows of ids."""
    weight = _as_tensor(weight)
    ids = np.asarray(ids)
    if ids.dtype.kind not in "iu":
        raise TypeError(f"embedding: ids must be an integer array, got dtype {ids.dtype}")
    V = weight.shape[0]
    if ids.size and (ids.min() < 0 or ids.max() >= V):
        bad = ids.max() if ids.max() >= V else ids.min()
        raise IndexError(f"embedding: id {int(bad)} is out of range for a table of {V} rows "
                         f"(valid ids are 0..{V - 1})")
    if weight.dtype == np.uint16:  # a table stored in bf16 (decoding): widen the rows looked up
        out = kernels.from_bf16(weight.data[ids])
    else:
        out = kernels.embedding_forward(weight.data, ids)

    def backward(g):
        into = weight._leaf_grad()
        if into is not None and into.dtype == g.dtype:
            # the tied wte already holds the LM head's gradient: add the rows into it in place
            # instead of building a second (V, C) table and summing the two
            kernels.embedding_backward(g, ids, V, into)
        else:
            weight._accum(kernels.embedding_backward(g, ids, V), owned=True)

    return Tensor._from_op(out, (weight,), backward, "embedding")


def layernorm(x, w, b=None, eps=1e-5):
    """LayerNorm over the last axis: (x - mean) / sqrt(var + eps) * w + b."""
    x = _as_tensor(x)
    w = _as_tensor(w, like=x)
    if w.shape != (x.shape[-1],):
        raise ShapeError(f"layernorm: weight has shape {w.shape}, expected ({x.shape[-1]},) "
                         f"for input {x.shape}")
    if b is not None:
        b = _as_tensor(b, like=x)
        if b.shape != w.shape:
            raise ShapeError(f"layernorm: bias has shape {b.shape}, expected {w.shape}")
    out, mu, rstd = kernels.layernorm_forward(x.data, w.data, None if b is None else b.data, eps)

    def backward(g):
        dx, dw, db = kernels.layernorm_backward(g, x.data, w.data, mu, rstd)
        x._accum(dx)
        w._accum(dw, owned=True)
        if b is not None:
            b._accum(db, owned=True)

    parents = (x, w) if b is None else (x, w, b)
    return Tensor._from_op(out, parents, backward, "layernorm")


def softmax(x):
    """Softmax over the last axis. backward: y * (g - sum(g * y))."""
    x = _as_tensor(x)
    y = kernels.softmax_forward(x.data)
    return Tensor._from_op(y, (x,), lambda g: x._accum(kernels.softmax_backward(g, y)), "softmax")


def log_softmax(x):
    """x - logsumexp(x) over the last axis. backward: g - softmax(x) * sum(g)."""
    x = _as_tensor(x)
    y = kernels.log_softmax_forward(x.data)
    return Tensor._from_op(y, (x,), lambda g: x._accum(kernels.log_softmax_backward(g, y)),
                           "log_softmax")


# ---------------------------------------------------------------------------------------------
# loss


def cross_entropy(logits, targets, ignore_index=-100, reduction="mean", inplace=False):
    """Softmax cross-entropy: logits (..., V), integer targets (...) -> loss.

    reduction "mean" averages over the targets that are not ``ignore_index`` (as PyTorch does),
    "sum" adds them, "none" returns one loss per position (0 where ignored).

    For "mean" and "sum", when a gradient is needed, the loss and d(loss)/d(logits) are made
    together in one pass over the (N, V) logits (``cross_entropy_forward_backward``); backward
    then only scales that array by the incoming gradient. ``inplace=True`` lets that gradient
    overwrite the logits buffer (the training loop does this: it never reads logits again).

    subtle: when every target is ignored the mean is 0/0; PyTorch returns nan, we return 0 with
    a zero gradient, so a batch with nothing to learn from cannot poison a run.
    """
    logits = _as_tensor(logits)
    t = _check_targets(logits, targets, ignore_index, reduction)    # (N,) int64
    if reduction == "none":
        return _cross_entropy_each(logits, t, ignore_index).reshape(np.shape(targets))
    return _cross_entropy_reduced(logits, t, ignore_index, reduction, inplace)


def _check_targets(logits, targets, ignore_index, reduction):
    """targets as a flat int64 array, after checking them against logits (..., V)."""
    targets = np.asarray(targets)
    if targets.dtype.kind not in "iu":
        raise TypeError(f"cross_entropy: targets must be integers, got dtype {targets.dtype}")
    if logits.shape[:-1] != targets.shape:
        raise ShapeError(f"cross_entropy: logits {logits.shape} and targets {targets.shape} "
                         "do not match (need logits (..., V) and targets (...))")
    if reduction not in ("mean", "sum", "none"):
        raise ValueError(f"cross_entropy: reduction must be 'mean', 'sum' or 'none', "
                         f"got {reduction!r}")
    V = logits.shape[-1]
    t = targets.reshape(-1).astype(np.int64, copy=False)
    valid = t != ignore_index
    if valid.any() and (t[valid].min() < 0 or t[valid].max() >= V):
        bad = t[valid].max() if t[valid].max() >= V else t[valid].min()
        raise IndexError(f"cross_entropy: target {int(bad)} is out of range for {V} classes "
                         f"(use {ignore_index} to ignore a position)")
    return t


def _cross_entropy_each(logits, t, ignore_index):
    """reduction="none": one loss per row (N,). backward: cross_entropy_backward, which scales
    each row's softmax - onehot by that row's incoming gradient."""
    x2 = _rows(logits.data)
    losses, lse = kernels.cross_entropy_forward(x2, t, ignore_index)

    def backward(g):
        dl = kernels.cross_entropy_backward(g.reshape(-1), x2, t, lse, ignore_index)
        logits._accum(dl.reshape(logits.shape))

    return Tensor._from_op(losses, (logits,), backward, "cross_entropy")


def _cross_entropy_reduced(logits, t, ignore_index, reduction, inplace):
    """reduction "mean" or "sum": one number. The gradient of the mean is made in the forward
    pass (cross_entropy_forward_backward); "sum" is the mean's gradient times n_valid."""
    x2 = _rows(logits.data)
    n_valid = int((t != ignore_index).sum())
    scale = 1.0 if reduction == "mean" else float(max(n_valid, 1))
    need_grad = logits.requires_grad and is_grad_enabled()
    if need_grad:
        losses, dlogits = kernels.cross_entropy_forward_backward(x2, t, ignore_index, inplace)
    else:
        losses, _ = kernels.cross_entropy_forward(x2, t, ignore_index)
    total = float(losses.sum(dtype=np.float64))
    value = total / n_valid if reduction == "mean" and n_valid else total
    out = np.array(value, dtype=logits.dtype)

    def backward(g):
        s = float(g) * scale
        d = dlogits if s == 1.0 else dlogits * logits.dtype.type(s)
        logits._accum(d.reshape(logits.shape))

    return Tensor._from_op(out, (logits,), backward if need_grad else None, "cross_entropy")


# ---------------------------------------------------------------------------------------------
# attention and dropout


def attention(qkv, n_head, dropout_p=0.0, training=False):
    """Causal multi-head self-attention as one op: qkv (B, T, 3C) -> (B, T, C).

    q, k, v are packed along the last axis (GPT-2's c_attn output). Each of the NH heads of
    size HS = C / NH computes softmax(q k^T / sqrt(HS), causally masked) v.

    The fused kernel stores only the output and one log-sum-exp per query row for backward.
    Inside ``autocast("bf16")`` its products take bf16 operands (kernels.attention_*_bf16; for
    float32 qkv, as for matmul). Attention dropout in training is fused too
    (kernels.attention_*_dropout): the mask is a hash of a seed drawn here from the generator,
    which the backward replays instead of storing it. Under autocast, or with heads past 256,
    dropout takes the op composed from primitives (attention_composed).
    """
    qkv = _as_tensor(qkv)
    if qkv.ndim != 3 or qkv.shape[-1] % 3 or (qkv.shape[-1] // 3) % n_head:
        raise ShapeError(f"attention: qkv must be (B, T, 3C) with C divisible by n_head={n_head}"
                         f", got {qkv.shape}")
    bf16 = _GEMM_BF16.get() and qkv.dtype == np.float32
    if dropout_p and training:
        if bf16 or qkv.shape[-1] // 3 // n_head > MAX_FUSED_DROPOUT_HEAD:
            return attention_composed(qkv, n_head, dropout_p, training)
        return _attention_dropout(qkv, n_head, dropout_p)
    forward = kernels.attention_forward_bf16 if bf16 else kernels.attention_forward
    out, lse = forward(qkv.data, n_head)

    def backward(g):
        backward = kernels.attention_backward_bf16 if bf16 else kernels.attention_backward
        qkv._accum(backward(g, qkv.data, out, lse, n_head))

    return Tensor._from_op(out, (qkv,), backward, "attention")


MAX_FUSED_DROPOUT_HEAD = 256  # head sizes the fused dropout kernels take (csrc: kMaxTiledHS)


def _attention_dropout(qkv, n_head, p):
    seed = int(generator().integers(0, 2 ** 63))
    out, lse = kernels.attention_forward_dropout(qkv.data, n_head, p, seed)

    def backward(g):
        qkv._accum(kernels.attention_backward_dropout(g, qkv.data, out, lse, n_head, p, seed))

    return Tensor._from_op(out, (qkv,), backward, "attention")


def attention_composed(qkv, n_head, dropout_p=0.0, training=False):
    """The same attention written with primitive ops (and attention-probability dropout)."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    HS = C // n_head
    q, k, v = [transpose(reshape(part, (B, T, n_head, HS)), (0, 2, 1, 3))
               for part in split(qkv, 3, axis=-1)]                      # (B, NH, T, HS)
    scores = mul(matmul(q, transpose(k, (0, 1, 3, 2))), 1.0 / math.sqrt(HS))  # (B, NH, T, T)
    causal = np.tril(np.ones((T, T), dtype=bool))
    scores = where(causal, scores, np.array(-np.inf, dtype=qkv.dtype))
    p = dropout(softmax(scores), dropout_p, training)
    y = matmul(p, v)                                                    # (B, NH, T, HS)
    return reshape(transpose(y, (0, 2, 1, 3)), (B, T, C))


def dropout(x, p, training=True):
    """Zero each element with probability p and scale the rest by 1/(1-p) ("inverted" dropout,
    so evaluation needs no rescaling). Identity when not training or p == 0."""
    x = _as_tensor(x)
    if not 0.0 <= p < 1.0:
        raise ValueError(f"dropout: p must be in [0, 1), got {p}")
    if not training or p == 0.0:
        return x
    keep = generator().random(x.shape, dtype=np.float32) >= p
    mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - p))
    return Tensor._from_op(x.data * mask, (x,), lambda g: x._accum(g * mask), "dropout")


# ---------------------------------------------------------------------------------------------
# LoRA


def lora_linear(x, w, b, lora_a, lora_b, scale, dropout_p=0.0, training=False):
    """A linear layer plus a low-rank update (Hu et al. 2021, "LoRA"), as one op:

        out = x @ w + b + scale * dropout(x) @ A @ B

    x (..., C); w (C, OC) and b (OC,) or None: the pretrained layer, normally frozen;
    A (C, R) and B (R, OC): the adapter, R much smaller than C and OC; scale = alpha / R.
    Dropout (inverted, training only) acts on the adapter's input alone, as in PEFT.

    backward, with x flattened to (N, C), xd = dropout(x), h = xd @ A (N, R), g = dL/dout:
        forward was out = ... + scale * h @ B, so
        dB = (scale * h)^T @ g             (R, OC)
        dh = scale * g @ B^T               (N, R)
        dA = xd^T @ dh                     (C, R)
        dx = g @ w^T + (dh @ A^T) * mask   (N, C)   -- the mask is dropout's, 1/(1-p) or 0
        dw = x^T @ g, db = sum_n g         -- computed only when w (b) requires grad: a frozen
                                              base weight costs no (C, OC) gradient at all
    The adapter path costs 2 N R (C + OC) multiply-adds next to x @ w's N C OC.
    """
    x, w = _pair("lora_linear", x, w)
    lora_a, lora_b = _as_tensor(lora_a, like=w), _as_tensor(lora_b, like=w)
    b = None if b is None else _as_tensor(b, like=w)
    _check_lora(x, w, b, lora_a, lora_b, dropout_p)
    lead, OC = x.shape[:-1], w.shape[1]
    x2 = _rows(x.data)                                                     # (N, C)
    s = x.dtype.type(scale)
    mask = None
    if training and dropout_p > 0.0:
        keep = generator().random(x2.shape, dtype=np.float32) >= dropout_p
        mask = keep.astype(x.dtype) * x.dtype.type(1.0 / (1.0 - dropout_p))
    xd = x2 if mask is None else x2 * mask                                 # (N, C)
    # every product goes through the kernels (one thread pool, no BLAS threads beside it)
    hs = kernels.linear_forward(xd, lora_a.data, None) * s                 # (N, R)
    out = kernels.linear_forward(x2, w.data, None if b is None else b.data)  # (N, OC)
    out += kernels.linear_forward(hs, lora_b.data, None)

    def backward(g):
        _lora_backward(_rows(g), x, x2, xd, mask, w, b, lora_a, lora_b, hs, s)

    parents = (x, w, lora_a, lora_b) + (() if b is None else (b,))
    return Tensor._from_op(out.reshape(*lead, OC), parents, backward, "lora_linear")


def _check_lora(x, w, b, lora_a, lora_b, dropout_p):
    """lora_linear's argument checks: shapes that fit, one dtype, a dropout probability."""
    if w.ndim != 2 or x.shape[-1] != w.shape[0]:
        raise ShapeError(f"lora_linear: input {x.shape} does not fit weight {w.shape} "
                         "(need x (..., C) and w (C, OC))")
    C, OC = w.shape
    if lora_a.ndim != 2 or lora_b.ndim != 2 or lora_a.shape[0] != C or lora_b.shape[1] != OC \
            or lora_a.shape[1] != lora_b.shape[0]:
        raise ShapeError(f"lora_linear: adapter A {lora_a.shape} and B {lora_b.shape} do not fit "
                         f"weight {w.shape} (need A (C, R) and B (R, OC) = ({C}, R), (R, {OC}))")
    if b is not None and b.shape != (OC,):
        raise ShapeError(f"lora_linear: bias has shape {b.shape}, expected ({OC},)")
    for t in (lora_a, lora_b) + (() if b is None else (b,)):
        if t.dtype != w.dtype:
            raise TypeError(f"lora_linear: dtype mismatch, weight {w.dtype} and {t.dtype}")
    if not 0.0 <= dropout_p < 1.0:
        raise ValueError(f"lora_linear: dropout_p must be in [0, 1), got {dropout_p}")


def _lora_backward(g2, x, x2, xd, mask, w, b, lora_a, lora_b, hs, s):
    """lora_linear's backward, g2 = dL/dout as (N, OC); the formulas are in its docstring."""
    if lora_b.requires_grad:
        lora_b._accum(kernels.matmul_tn(hs, g2), owned=True)               # dB = (s h)^T g
    dh = kernels.matmul_nt(g2, lora_b.data) * s                            # (N, R)
    if lora_a.requires_grad:
        lora_a._accum(kernels.matmul_tn(xd, dh), owned=True)               # dA = xd^T dh
    if x.requires_grad:
        dxa = kernels.matmul_nt(dh, lora_a.data)                           # (N, C)
        if mask is not None:
            dxa *= mask
        dx = kernels.matmul_nt(g2, w.data)                                 # g @ w^T
        dx += dxa
        x._accum(dx.reshape(x.shape))
    if w.requires_grad:
        w._accum(kernels.matmul_tn(x2, g2), owned=True)                   # dw = x^T g
    if b is not None and b.requires_grad:
        b._accum(g2.sum(axis=0), owned=True)


# ---------------------------------------------------------------------------------------------
# Tensor's operators: ``a + b``, ``a @ b``, ``a[i]``, ``a.sum()`` are the ops above. tensor.py
# knows only the graph; the operators are attached here, so neither module imports the other
# in a circle.


def _reflected(op):
    """``2 - a`` calls a.__rsub__(2), which is sub(2, a)."""
    return lambda self, other: op(other, self)


# The ops whose backward never reads their own output, so that buffer may be overwritten.
_OUTPUT_UNREAD = frozenset({"linear", "lora_linear", "dropout"})


def _count_refs(t):
    return sys.getrefcount(t)


def _plus(self, other):
    """``self + other``, written into other's buffer when other is a fresh output no one else
    can see: the branch in ``x = x + attn(ln_1(x))``. The residual stream then needs no new
    (B, T, C) array per branch (kept alive until backward), and the sum is the same, bit for bit.
    This is NumPy's own trick for temporaries: a reference count that says nothing but the
    expression holds the array (_TEMPORARY_REFS, measured below)."""
    if (_TEMPORARY_REFS is not None and type(other) is Tensor and type(self) is Tensor
            and other._op in _OUTPUT_UNREAD and _count_refs(other) <= _TEMPORARY_REFS
            and other.shape == self.shape and other.dtype == self.dtype
            and other.data.flags.writeable):
        out = other.data
        out += self.data
        return _sum_of(out, self, other)
    return add(self, other)


def _temporary_refs():
    """The reference count _plus sees for an operand that is a temporary, if a named variable
    shows a larger one (else None: no elision). Measured, not assumed: Python versions differ
    (3.14 lends references to locals without counting them)."""
    seen = []

    class Probe:
        def __add__(self, other):
            seen.append(_count_refs(other))

    def make():
        return Probe()

    Probe() + make()                    # a temporary   # noqa: B018
    named = make()
    Probe() + named                     # a variable    # noqa: B018
    return seen[0] if seen[0] < seen[1] else None


_TEMPORARY_REFS = _temporary_refs()

Tensor.__add__, Tensor.__radd__ = _plus, _reflected(add)
Tensor.__sub__, Tensor.__rsub__ = sub, _reflected(sub)
Tensor.__mul__, Tensor.__rmul__ = mul, _reflected(mul)
Tensor.__truediv__, Tensor.__rtruediv__ = div, _reflected(div)
Tensor.__neg__ = neg
Tensor.__pow__ = power
Tensor.__matmul__ = matmul
Tensor.__getitem__ = getitem
Tensor.sum = sum
Tensor.mean = mean
Tensor.reshape = lambda self, *shape: reshape(self, shape[0] if len(shape) == 1 else shape)
Tensor.transpose = lambda self, *axes: transpose(self, axes if axes else None)
Tensor.T = property(lambda self: transpose(self, None))
Tensor.exp = exp
Tensor.log = log
Tensor.tanh = tanh
