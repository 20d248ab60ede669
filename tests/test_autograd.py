"""Finite-difference checks (float64) of every op's backward, and the autograd machinery."""

import sys

import numpy as np
import pytest

import tinyroots as tr
from tinyroots import ops
from tinyroots.ops import ShapeError
from tinyroots.tensor import Tensor, no_grad

F64 = np.float64


def t64(rng, *shape, positive=False):
    x = rng.standard_normal(shape)
    if positive:
        x = np.abs(x) + 0.5
    return Tensor(x, requires_grad=True, dtype=F64)


def gradcheck(fn, inputs, eps=1e-6, tol=1e-6, seed=0):
    """Compare autograd's gradients of sum(fn(*inputs) * R) with central differences.

    float64 throughout: with eps=1e-6 the central difference has truncation error ~eps^2 and
    rounding error ~1e-16/eps, so ~1e-9 relative agreement is expected; we allow 1e-6.
    """
    rng = np.random.default_rng(seed)
    out = fn(*inputs)
    R = rng.standard_normal(out.shape)
    loss = (out * Tensor(R, dtype=F64)).sum()
    for x in inputs:
        x.grad = None
    loss.backward()
    for i, x in enumerate(inputs):
        if not x.requires_grad:
            continue
        analytic = x.grad
        assert analytic is not None, f"input {i} got no gradient"
        numeric = np.zeros_like(x.data)
        flat = x.data.reshape(-1)
        nflat = numeric.reshape(-1)
        for j in range(flat.size):
            old = flat[j]
            flat[j] = old + eps
            with no_grad():
                plus = float((fn(*inputs).data * R).sum())
            flat[j] = old - eps
            with no_grad():
                minus = float((fn(*inputs).data * R).sum())
            flat[j] = old
            nflat[j] = (plus - minus) / (2 * eps)
        scale = max(np.abs(numeric).max(), 1e-3)
        err = np.abs(analytic - numeric).max() / scale
        assert err < tol, f"input {i}: relative gradient error {err:.2e}"


rng = np.random.default_rng(1234)


# ---------------------------------------------------------------------------------------------
# elementwise and broadcasting


@pytest.mark.parametrize("op", [ops.add, ops.sub, ops.mul, ops.div])
def test_binary_broadcast(op):
    a = t64(rng, 3, 4, 5)
    b = t64(rng, 4, 1, positive=True)     # broadcast over the leading and last axes
    gradcheck(op, [a, b])
    c = t64(rng, 5, positive=True)
    gradcheck(op, [a, c])


def test_scalar_operands_and_reflected_operators():
    a = t64(rng, 3, 2, positive=True)
    gradcheck(lambda x: 2.0 - x * 3.0 + 1.0 / x, [a])
    gradcheck(lambda x: -x ** 3, [a])


@pytest.mark.parametrize("name", ["exp", "log", "tanh", "abs", "relu", "gelu"])
def test_unary(name):
    a = t64(rng, 4, 7, positive=(name == "log"))
    gradcheck(getattr(ops, name), [a])


def test_where():
    a, b = t64(rng, 3, 4), t64(rng, 3, 4)
    mask = rng.random((3, 4)) > 0.5
    gradcheck(lambda x, y: ops.where(mask, x, y), [a, b])


@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (-1, True), ((0, 2), False)])
def test_sum_mean(axis, keepdims):
    a = t64(rng, 2, 3, 4)
    gradcheck(lambda x: ops.sum(x, axis, keepdims), [a])
    gradcheck(lambda x: ops.mean(x, axis, keepdims), [a])


# ---------------------------------------------------------------------------------------------
# shapes


def test_reshape_transpose_getitem():
    a = t64(rng, 2, 3, 4)
    gradcheck(lambda x: ops.reshape(x, (4, -1)), [a])
    gradcheck(lambda x: ops.transpose(x, (2, 0, 1)), [a])
    gradcheck(lambda x: x[:, 1:, ::2], [a])
    idx = np.array([0, 2, 2, 1])         # repeated index: gradients must add up
    gradcheck(lambda x: ops.getitem(x, (slice(None), idx)), [a])


def test_split_concat():
    a = t64(rng, 2, 3, 6)
    gradcheck(lambda x: ops.concat(ops.split(x, 3, axis=-1)[::-1], axis=-1), [a])
    b = t64(rng, 2, 3, 2)
    gradcheck(lambda x, y: ops.concat([x, y], axis=-1), [a, b])
    parts = ops.split(a, [1, 5], axis=2)
    assert [p.shape for p in parts] == [(2, 3, 1), (2, 3, 5)]


# ---------------------------------------------------------------------------------------------
# matrix products


def test_matmul_batched_and_broadcast():
    a, b = t64(rng, 2, 3, 4), t64(rng, 2, 4, 5)
    gradcheck(ops.matmul, [a, b])
    w = t64(rng, 4, 5)                   # batch axes broadcast: (2, 3, 4) @ (4, 5)
    gradcheck(ops.matmul, [a, w])


def test_linear_family():
    x, w, b = t64(rng, 2, 3, 4), t64(rng, 4, 5), t64(rng, 5)
    gradcheck(ops.linear, [x, w, b])
    gradcheck(lambda x, w: ops.linear(x, w), [x, w])
    gradcheck(ops.linear_gelu, [x, w, b])
    r = t64(rng, 2, 3, 5)
    gradcheck(ops.linear_residual, [x, w, b, r])
    gradcheck(lambda x, w, r: ops.linear_residual(x, w, None, r), [x, w, r])
    wt = t64(rng, 6, 4)
    gradcheck(ops.linear_transposed, [x, wt])


def test_residual_add_reuses_a_fresh_branch_output_and_nothing_else():
    # x + proj(h) writes the sum into proj's fresh output (ops._plus) instead of a new array;
    # the values and gradients must be those of a plain add, and an output anyone still holds
    # must never be overwritten
    x, w, b = t64(rng, 2, 3, 4), t64(rng, 4, 4), t64(rng, 4)
    gradcheck(lambda x, w, b: x + ops.linear(x, w, b), [x, w, b])
    h = ops.linear(x, w, b)
    before = h.data.copy()
    z = x + h                                        # h is named: a new array
    np.testing.assert_array_equal(h.data, before)
    np.testing.assert_array_equal(z.data, x.data + before)
    kept = [ops.linear(x, w, b)]
    z = x + kept[0]                                  # held by a list: a new array
    assert not np.shares_memory(z.data, kept[0].data)
    z = x + ops.tanh(ops.linear(x, w, b))            # tanh's backward reads its output
    assert z._parents[1]._op == "tanh" and not np.shares_memory(z.data, z._parents[1].data)
    if ops._TEMPORARY_REFS is not None:              # this Python tells temporaries apart
        z = x + ops.linear(x, w, b)
        assert np.shares_memory(z.data, z._parents[1].data)
        np.testing.assert_array_equal(z.data, x.data + before)


def test_block_reads_as_its_formula_and_lora_layers_still_train():
    cfg = tr.GPTConfig(n_layer=1, n_head=2, n_embd=8, vocab_size=11, block_size=6)
    model = tr.GPT(cfg)
    block = model.transformer.h[0]
    x = Tensor(rng.standard_normal((2, 5, 8)).astype(np.float32), requires_grad=True)
    want = x.data + block.attn(block.ln_1(x)).data   # the formula, term by term
    want = want + block.mlp(block.ln_2(Tensor(want))).data
    np.testing.assert_allclose(block(x).data, want, rtol=1e-6, atol=1e-6)
    block.mlp.c_fc = tr.nn.LoRALinear(block.mlp.c_fc, r=2)
    block(x).sum().backward()
    assert block.mlp.c_fc.lora_A.grad is not None and x.grad.shape == x.shape


# ---------------------------------------------------------------------------------------------
# GPT ops


def test_embedding_repeated_ids():
    w = t64(rng, 7, 3)
    ids = np.array([[1, 3, 1], [6, 1, 0]])
    gradcheck(lambda w: ops.embedding(w, ids), [w])


def test_layernorm():
    x, w, b = t64(rng, 2, 3, 8), t64(rng, 8), t64(rng, 8)
    gradcheck(ops.layernorm, [x, w, b])
    gradcheck(lambda x, w: ops.layernorm(x, w, None), [x, w])


def test_softmax_log_softmax():
    x = t64(rng, 3, 5)
    gradcheck(ops.softmax, [x])
    gradcheck(ops.log_softmax, [x])


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_cross_entropy_with_ignore_index(reduction):
    logits = t64(rng, 2, 4, 6)
    targets = np.array([[1, -100, 5, 0], [2, 2, -100, 3]])
    gradcheck(lambda z: ops.cross_entropy(z, targets, reduction=reduction), [logits])
    # the ignored positions get exactly zero gradient
    logits.grad = None
    ops.cross_entropy(logits, targets, reduction=reduction).sum().backward()
    assert np.all(logits.grad[targets == -100] == 0)


def test_cross_entropy_value_matches_definition():
    z = rng.standard_normal((5, 7))
    t = np.array([0, 6, -100, 3, 3])
    loss = float(ops.cross_entropy(Tensor(z, dtype=F64), t))
    lse = np.log(np.exp(z).sum(-1))
    keep = t != -100
    expected = np.mean(lse[keep] - z[np.arange(5)[keep], t[keep]])
    assert abs(loss - expected) < 1e-12


def test_cross_entropy_all_ignored_is_zero_not_nan():
    z = Tensor(rng.standard_normal((3, 4)), requires_grad=True)
    loss = ops.cross_entropy(z, np.full(3, -100))
    loss.backward()
    assert float(loss) == 0.0 and np.all(z.grad == 0)


@pytest.mark.parametrize("B,T,C,NH", [(2, 5, 8, 2), (1, 1, 6, 3), (1, 7, 4, 1)])
def test_attention_fused_and_composed(B, T, C, NH):
    qkv = t64(rng, B, T, 3 * C)
    gradcheck(lambda x: ops.attention(x, NH), [qkv])
    gradcheck(lambda x: ops.attention_composed(x, NH), [qkv])
    with no_grad():
        fused = ops.attention(qkv, NH).data
        composed = ops.attention_composed(qkv, NH).data
    np.testing.assert_allclose(fused, composed, rtol=1e-12, atol=1e-12)


def test_attention_is_causal():
    qkv = rng.standard_normal((1, 6, 12))
    out1 = ops.attention(Tensor(qkv, dtype=F64), 2).data
    qkv2 = qkv.copy()
    qkv2[:, 4:] += 10.0                    # change the future
    out2 = ops.attention(Tensor(qkv2, dtype=F64), 2).data
    np.testing.assert_array_equal(out1[:, :4], out2[:, :4])
    assert not np.allclose(out1[:, 4:], out2[:, 4:])


def test_dropout_train_and_eval():
    x = t64(rng, 200, 50)
    assert ops.dropout(x, 0.3, training=False) is x
    tr.manual_seed(0)
    y = ops.dropout(x, 0.3, training=True)
    kept = y.data != 0
    assert 0.65 < kept.mean() < 0.75
    np.testing.assert_allclose(y.data[kept], x.data[kept] / 0.7)
    y.sum().backward()
    np.testing.assert_allclose(x.grad, kept / 0.7)
    with pytest.raises(ValueError, match="dropout"):
        ops.dropout(x, 1.0)


# ---------------------------------------------------------------------------------------------
# the machinery


def test_gradients_accumulate_over_backward_calls():
    w = Tensor([1.0, 2.0], requires_grad=True)
    (w * 3.0).sum().backward()
    (w * 4.0).sum().backward()
    np.testing.assert_allclose(w.grad, [7.0, 7.0])


def test_shared_gradient_is_not_aliased_between_leaves():
    a = Tensor([1.0, 2.0], requires_grad=True)
    b = Tensor([3.0, 4.0], requires_grad=True)
    (a + b).sum().backward()
    a.grad *= 10                             # an in-place edit of one leaf's gradient ...
    np.testing.assert_allclose(b.grad, [1.0, 1.0])   # ... must not change the other's


def test_deep_graph_has_no_recursion_limit():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(sys.getrecursionlimit() * 3):
        y = y + 1.0
    y.sum().backward()
    np.testing.assert_allclose(x.grad, [1.0])


def test_diamond_graph():
    x = Tensor([2.0], requires_grad=True)
    a = x * x            # x^2
    b = a * x            # x^3
    (a + b).sum().backward()   # d/dx (x^2 + x^3) = 2x + 3x^2 = 16
    np.testing.assert_allclose(x.grad, [16.0])


def test_no_grad_records_nothing():
    x = Tensor([1.0], requires_grad=True)
    with no_grad():
        y = x * 2.0
    assert not y.requires_grad and y._parents == ()
    with pytest.raises(RuntimeError, match="does not require grad"):
        y.backward()

    @no_grad()
    def f(t):
        return t * 2.0

    assert not f(x).requires_grad


def test_backward_with_explicit_grad_and_errors():
    x = Tensor([1.0, 2.0], requires_grad=True)
    y = x * 3.0
    with pytest.raises(RuntimeError, match="single-element"):
        y.backward()
    y.backward(np.array([1.0, 10.0]))
    np.testing.assert_allclose(x.grad, [3.0, 30.0])
    with pytest.raises(RuntimeError, match="already freed"):
        y.backward(np.array([1.0, 1.0]))
    z = x * 2.0
    with pytest.raises(ValueError, match="grad has shape"):
        z.backward(np.ones(3))


def test_graph_is_freed_after_backward():
    x = Tensor(np.ones((4, 4)), requires_grad=True)
    h = ops.tanh(x)
    h.retain_grad()
    y = ops.exp(h).sum()
    y.backward()
    assert y._parents == () and y._backward is None
    assert h._parents == () and h.grad is not None     # retained on request
    assert x.grad is not None


def test_shape_and_dtype_errors_name_the_op():
    a = Tensor(np.ones((2, 3)))
    with pytest.raises(ShapeError, match=r"add: shapes \(2, 3\) and \(4,\)"):
        ops.add(a, Tensor(np.ones(4)))
    with pytest.raises(ShapeError, match=r"matmul: shapes \(2, 3\) and \(2, 3\)"):
        ops.matmul(a, a)
    with pytest.raises(TypeError, match="mul: dtype mismatch"):
        ops.mul(a, Tensor(np.ones(3), dtype=F64))
    with pytest.raises(ShapeError, match="reshape"):
        ops.reshape(a, (4, 2))
    with pytest.raises(TypeError, match="embedding: ids must be an integer"):
        ops.embedding(Tensor(np.ones((5, 2))), np.array([0.0, 1.0]))
    with pytest.raises(IndexError, match="id 9 is out of range"):
        ops.embedding(Tensor(np.ones((5, 2))), np.array([0, 9]))
    with pytest.raises(ShapeError, match="attention"):
        ops.attention(Tensor(np.ones((1, 2, 10))), 2)
    with pytest.raises(ShapeError, match="linear"):
        ops.linear(a, Tensor(np.ones((4, 2))))
    with pytest.raises(IndexError, match="target 7 is out of range"):
        ops.cross_entropy(Tensor(np.ones((2, 5))), np.array([1, 7]))


def test_tensor_basics():
    assert Tensor(2.0).shape == () and Tensor(np.float64(2.0)).dtype == np.float32
    t = tr.tensor([[1, 2], [3, 4]])
    assert t.dtype == np.float32 and t.shape == (2, 2) and not t.requires_grad
    assert float(t.sum()) == 10.0
    with pytest.raises(ValueError, match="item"):
        t.item()
    with pytest.raises(TypeError, match="dtype"):
        Tensor([1.0], dtype=np.int32)
    assert "requires_grad=True" in repr(Tensor([1.0], requires_grad=True))


def test_tied_weight_gets_both_gradients():
    """wte is read by the embedding and by the head; its grad is the sum of both parts, and the
    embedding's part is added into the head's in place."""
    w = t64(rng, 6, 4)
    ids = np.array([[1, 2, 2, 5]])
    gradcheck(lambda w: ops.linear_transposed(ops.embedding(w, ids), w), [w])
    # float32 runs the C++ kernels (in-place scatter); it must match the float64 reference
    w64 = Tensor(rng.standard_normal((6, 4)), requires_grad=True, dtype=F64)
    w32 = Tensor(w64.data, requires_grad=True)
    for w_ in (w64, w32):
        ops.linear_transposed(ops.embedding(w_, ids), w_).sum().backward()
    np.testing.assert_allclose(w32.grad, w64.grad, rtol=1e-5, atol=1e-5)


def test_leaf_gradient_is_its_own_array_even_when_owned():
    w = Tensor(np.ones((3, 2)), requires_grad=True)
    x = Tensor(np.ones((4, 3)))
    ops.linear(x, w).sum().backward()
    g1 = w.grad
    ops.linear(x, w).sum().backward()          # accumulates in place into the same buffer
    assert w.grad is g1
    np.testing.assert_allclose(w.grad, 8.0)


def test_interior_gradient_sums_in_place_only_into_its_own_array():
    # u and q receive the same array from the add's backward; u then gets a second gradient
    # (from u * 2). Summing that into the shared array in place would change q's gradient too.
    x = Tensor([1.0, 2.0], requires_grad=True)
    u, q = (x * 3.0).retain_grad(), (x * 5.0).retain_grad()
    ((u + q).sum() + (u * 2.0).sum()).backward()
    np.testing.assert_allclose(u.grad, [3.0, 3.0])
    np.testing.assert_allclose(q.grad, [1.0, 1.0])
    np.testing.assert_allclose(x.grad, [3.0 * 3.0 + 5.0] * 2)
    # the residual pattern of a GPT block, out = h + f(h), in float32 through the kernels:
    # layernorm's own (owned) gradient and the add's shared one meet in h, in either order
    w = Tensor(np.ones(2, np.float32), requires_grad=True)
    b = Tensor(np.zeros(2, np.float32), requires_grad=True)
    weights = Tensor(np.array([[1.0, 2.0]], np.float32))
    for branch_first in (True, False):
        h = (Tensor(np.array([[1.0, 3.0]], np.float32), requires_grad=True) * 1.0).retain_grad()
        branch = ops.layernorm(h, w, b) * 4.0
        out = (branch + h) if branch_first else (h + branch)
        (out * weights).sum().backward()
        alone = Tensor(h.data, requires_grad=True)   # the branch's part on its own
        (ops.layernorm(alone, w, b) * 4.0 * weights).sum().backward()
        np.testing.assert_allclose(h.grad, alone.grad + weights.data, rtol=1e-6, atol=1e-6)
