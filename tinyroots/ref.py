"""The pure-NumPy reference of every kernel: the living definition of what each one computes.

Every function here has a C++ twin in ``csrc/`` with the same name and the same arguments in the
same order; ``kernels.py`` picks one or the other. These functions are written to be read, not to
be fast: when a fast kernel and this file disagree, this file is right (and it is itself tested
against PyTorch in tests/).

Conventions
-----------
* Size letters: B batch, T time, C channels, NH heads, HS head size (C // NH), V vocabulary,
  N rows of a flattened (B*T, C) matrix, OC output channels.
* A forward returns its output plus whatever the backward needs that is cheaper to keep than to
  recompute (e.g. layernorm's mean and rstd, two floats per row).
* A backward takes ``dout`` first, then the forward's inputs and saved values, and returns fresh
  arrays ``d<name>`` for each input. It never writes into its arguments.
* Functions keep the dtype they are given (float32 in training, float64 in gradient checks).
"""

import math

import numpy as np

# ---------------------------------------------------------------------------------------------
# linear: GPT-2's Conv1D, out = x @ w + b with w stored (in, out)


def linear_forward(x, w, b=None):
    """x (N, C) @ w (C, OC) + b (OC,) -> out (N, OC).

    GPT-2 stores its projection weights as (in, out) ("Conv1D"), which is exactly the layout
    ``x @ w`` wants, so no transpose is needed anywhere.
    """
    out = x @ w
    if b is not None:
        out += b
    return out


def linear_backward(dout, x, w, need_dx=True):
    """Backward of out = x @ w + b.  dout (N, OC), x (N, C), w (C, OC) -> (dx, dw, db).

    forward was out = x @ w + b, so
        dx = dout @ w.T      (N, C)     -- skipped (None) when need_dx is False
        dw = x.T @ dout      (C, OC)
        db = sum_n dout      (OC,)
    """
    dx = dout @ w.T if need_dx else None
    dw = x.T @ dout
    db = dout.sum(axis=0)
    return dx, dw, db


def linear_gelu_forward(x, w, b=None):
    """Fused out = gelu(x @ w + b) -> (pre, out). The pre-activation is kept for the backward."""
    pre = linear_forward(x, w, b)
    return pre, gelu_forward(pre)


def linear_residual_forward(x, w, b, residual):
    """Fused out = x @ w + b + residual: a block's output projection plus its skip connection,
    x = x + attn(ln_1(x)) in one pass. residual (N, OC); b may be None. The backward is
    linear_backward's, with dresidual = dout."""
    return linear_forward(x, w, b) + residual


# ---------------------------------------------------------------------------------------------
# matmul: batched, for the attention path that is built from primitive ops


def matmul_forward(a, b):
    """a (..., M, K) @ b (..., K, N) -> (..., M, N), batch axes broadcast as in np.matmul."""
    return np.matmul(a, b)


def matmul_backward(dout, a, b):
    """Backward of out = a @ b -> (da, db), each with the broadcast batch shape of dout.

    forward was out = a @ b, so da = dout @ b^T and db = a^T @ dout. Reducing over broadcast
    batch axes is the caller's job (ops.matmul), as for every broadcasting op.
    """
    da = np.matmul(dout, np.swapaxes(b, -1, -2))
    db = np.matmul(np.swapaxes(a, -1, -2), dout)
    return da, db


def matmul_nt(a, b):
    """a (M, K) @ b (N, K)^T -> (M, N). The weight-tied LM head: logits = x @ wte^T, with wte
    stored (V, C) as an embedding table, so no transposed copy of it is ever made."""
    return a @ b.T


def matmul_tn(a, b):
    """a (K, M)^T @ b (K, N) -> (M, N). The weight gradient of a linear map: dw = x^T @ dout."""
    return a.T @ b


# ---------------------------------------------------------------------------------------------
# layernorm over the last axis


def layernorm_forward(x, w, b=None, eps=1e-5):
    """x (..., C) -> (out (..., C), mean (...), rstd (...)).

        mean = mean(x), var = mean((x - mean)^2)  (biased, as GPT-2 and PyTorch)
        rstd = 1 / sqrt(var + eps),  xhat = (x - mean) * rstd,  out = xhat * w + b
    """
    mean = x.mean(axis=-1)
    xc = x - mean[..., None]
    var = (xc * xc).mean(axis=-1)
    rstd = 1.0 / np.sqrt(var + eps)
    out = xc * rstd[..., None] * w
    if b is not None:
        out = out + b
    return out.astype(x.dtype, copy=False), mean, rstd.astype(x.dtype, copy=False)


def layernorm_backward(dout, x, w, mean, rstd):
    """Backward of layernorm -> (dx, dw, db), dw and db summed over all leading axes.

    forward was out = xhat * w + b, so dw = sum(dout * xhat), db = sum(dout), and with
    dxhat = dout * w:  dx = rstd * (dxhat - mean(dxhat) - xhat * mean(dxhat * xhat)).
    """
    C = x.shape[-1]
    xhat = (x - mean[..., None]) * rstd[..., None]
    dxhat = dout * w
    dx = rstd[..., None] * (dxhat - dxhat.mean(axis=-1, keepdims=True)
                            - xhat * (dxhat * xhat).mean(axis=-1, keepdims=True))
    dw = (dout * xhat).reshape(-1, C).sum(axis=0)
    db = dout.reshape(-1, C).sum(axis=0)
    return dx, dw, db


# ---------------------------------------------------------------------------------------------
# GELU, GPT-2's tanh approximation ("gelu_new")

GELU_SCALE = math.sqrt(2.0 / math.pi)


def gelu_forward(x):
    """out = 0.5 * x * (1 + tanh(sqrt(2/pi) * (x + 0.044715 x^3)))."""
    return 0.5 * x * (1.0 + np.tanh(GELU_SCALE * (x + 0.044715 * x * x * x)))


def gelu_backward(dout, x):
    """forward was 0.5 x (1 + tanh(u)) with u = s (x + 0.044715 x^3), so
    dx = dout * (0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) s (1 + 3 * 0.044715 x^2))."""
    u = GELU_SCALE * (x + 0.044715 * x * x * x)
    t = np.tanh(u)
    du = GELU_SCALE * (1.0 + 3.0 * 0.044715 * x * x)
    return dout * (0.5 * (1.0 + t) + 0.5 * x * (1.0 - t * t) * du)


# ---------------------------------------------------------------------------------------------
# softmax and log-softmax over the last axis


def softmax_forward(x):
    """y = exp(x - max) / sum(exp(x - max)).

    subtle: subtract the row max first; exp overflows near 88 in float32.
    """
    e = np.exp(x - x.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def softmax_backward(dout, y):
    """forward was y = softmax(x), so dx = y * (dout - sum(dout * y))."""
    return y * (dout - (dout * y).sum(axis=-1, keepdims=True))


def log_softmax_forward(x):
    """y = x - logsumexp(x)."""
    m = x.max(axis=-1, keepdims=True)
    return x - (m + np.log(np.exp(x - m).sum(axis=-1, keepdims=True)))


def log_softmax_backward(dout, y):
    """forward was y = x - lse(x), so dx = dout - exp(y) * sum(dout)."""
    return dout - np.exp(y) * dout.sum(axis=-1, keepdims=True)


# ---------------------------------------------------------------------------------------------
# cross-entropy over the vocabulary


def cross_entropy_forward(logits, targets, ignore_index=-100):
    """logits (N, V), targets (N,) int -> (losses (N,), lse (N,)).

    losses[i] = lse(logits[i]) - logits[i, targets[i]], and 0 where targets[i] == ignore_index.
    The log-sum-exp of each row is returned so the backward can rebuild the softmax in one pass
    without keeping an (N, V) probability matrix.
    """
    m = logits.max(axis=-1)
    lse = m + np.log(np.exp(logits - m[:, None]).sum(axis=-1))
    valid = targets != ignore_index
    safe = np.where(valid, targets, 0)
    picked = logits[np.arange(logits.shape[0]), safe]
    losses = np.where(valid, lse - picked, 0.0).astype(logits.dtype, copy=False)
    return losses, lse.astype(logits.dtype, copy=False)


def cross_entropy_backward(dlosses, logits, targets, lse, ignore_index=-100):
    """forward was losses[i] = lse_i - logits[i, t_i], so
    dlogits[i] = dlosses[i] * (softmax(logits[i]) - onehot(t_i)), and 0 on ignored rows."""
    valid = targets != ignore_index
    p = np.exp(logits - lse[:, None])
    p[np.arange(logits.shape[0])[valid], targets[valid]] -= 1.0
    return p * np.where(valid, dlosses, 0.0)[:, None].astype(logits.dtype, copy=False)


def cross_entropy_forward_backward(logits, targets, ignore_index=-100, inplace=False):
    """The training-time fusion: mean loss over non-ignored rows and its gradient, in one pass.

    logits (N, V), targets (N,) -> (losses (N,), dlogits (N, V)), where dlogits is the gradient
    of mean(losses over valid rows) -- i.e. already divided by the number of valid rows. With
    inplace=True the gradient overwrites ``logits`` (and the returned dlogits *is* logits), which
    saves one (N, V) buffer when the caller does not need the logits afterwards.
    """
    losses, lse = cross_entropy_forward(logits, targets, ignore_index)
    n_valid = max(int((targets != ignore_index).sum()), 1)
    dl = np.full(logits.shape[0], 1.0 / n_valid, dtype=logits.dtype)
    dlogits = cross_entropy_backward(dl, logits, targets, lse, ignore_index)
    if inplace:
        logits[...] = dlogits
        return losses, logits
    return losses, dlogits


# ---------------------------------------------------------------------------------------------
# embedding lookup


def embedding_forward(weight, ids):
    """weight (V, C), ids (...) int -> out (..., C) = weight[ids]."""
    return weight[ids]


def embedding_backward(dout, ids, V, dweight=None):
    """forward was out = weight[ids], so dweight[v] = sum of dout over positions where ids == v.

    A scatter-add: the same id can appear many times, so plain indexed assignment would lose
    all but one of the updates; np.add.at accumulates them. Given ``dweight`` (V, C), the rows
    are added into it in place (and it is returned) instead of into a fresh zero table.
    """
    C = dout.shape[-1]
    if dweight is None:
        dweight = np.zeros((V, C), dtype=dout.dtype)
    np.add.at(dweight, ids.reshape(-1), dout.reshape(-1, C))
    return dweight


# ---------------------------------------------------------------------------------------------
# causal multi-head self-attention, fused


def _split_heads(qkv, n_head):
    """qkv (B, T, 3C): q, k, v packed along the last axis -> three (B, NH, T, HS) arrays."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = qkv[..., :C], qkv[..., C:2 * C], qkv[..., 2 * C:]
    return [a.reshape(B, T, n_head, C // n_head).transpose(0, 2, 1, 3) for a in (q, k, v)]


def _causal_scores(q, k):
    """S = q k^T / sqrt(HS) (B, NH, T, T), -inf where a query would see a later key."""
    T = q.shape[-2]
    s = (q @ np.swapaxes(k, -1, -2)) * (1.0 / math.sqrt(q.shape[-1]))
    return np.where(np.tril(np.ones((T, T), dtype=bool)), s, -np.inf)


def attention_forward(qkv, n_head):
    """qkv (B, T, 3C) -> (out (B, T, C), lse (B, NH, T)).

    For each head: out = softmax(q k^T / sqrt(HS) + causal mask) v. Query t sees keys 0..t.
    We store lse, the log-sum-exp of each score row, and not the (T, T) probabilities: the
    backward rebuilds P = exp(S - lse) from q and k, trading a little compute for O(T) memory
    instead of O(T^2) -- the same bargain FlashAttention makes.
    """
    return _attention_forward(qkv, n_head)


def _attention_forward(qkv, n_head, dropout=None):
    """attention_forward; dropout = (keep, scale) replaces P by P * keep * scale before v."""
    B, T, C3 = qkv.shape
    q, k, v = _split_heads(qkv, n_head)
    s = _causal_scores(q, k)                                      # (B, NH, T, T)
    m = s.max(axis=-1, keepdims=True)
    lse = m + np.log(np.exp(s - m).sum(axis=-1, keepdims=True))   # (B, NH, T, 1)
    p = np.exp(s - lse)
    if dropout is not None:
        keep, scale_d = dropout
        p = np.where(keep, p * scale_d, 0).astype(qkv.dtype, copy=False)
    y = p @ v                                                     # (B, NH, T, HS)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)
    return out.astype(qkv.dtype, copy=False), lse[..., 0].astype(qkv.dtype, copy=False)


def attention_forward_online(qkv, n_head, block_q=32, block_k=64):
    """attention_forward computed the way the fast kernel does it (csrc/attention_tiled.h):
    tile by tile, with an "online" softmax, never holding more than a (block_q, block_k) piece
    of S. Same inputs and outputs; tests check it equals attention_forward.

    For a tile of queries, walk the key tiles left to right keeping, per query row,
        m  the largest score seen so far        l  the sum of exp(s - m) over the keys seen
        o  sum of exp(s - m) v over the keys seen
    A new key tile with scores s may raise the max to m_new; everything summed so far was
    relative to the old m, so it is rescaled by c = exp(m - m_new) before the tile is added:
        l = c l + rowsum(exp(s - m_new)),   o = c o + exp(s - m_new) v,   m = m_new
    At the end out = o / l and lse = m + log(l): the same numbers as the full softmax, because
    exp(s - m_new) = exp(s - m) exp(m - m_new) for every key, whenever it was added.
    """
    B, T, C3 = qkv.shape
    q, k, v = _split_heads(qkv, n_head)                           # (B, NH, T, HS) each
    scale = 1.0 / math.sqrt(q.shape[-1])
    y = np.empty_like(q)
    lse = np.empty(q.shape[:-1], dtype=qkv.dtype)                 # (B, NH, T)
    for q0 in range(0, T, block_q):
        q1 = min(q0 + block_q, T)
        m = np.full(q.shape[:2] + (q1 - q0, 1), -np.inf, dtype=qkv.dtype)  # (B, NH, bq, 1)
        lsum = np.zeros_like(m)                                   # l
        o = np.zeros(q.shape[:2] + (q1 - q0, q.shape[-1]), dtype=qkv.dtype)  # (B, NH, bq, HS)
        for k0 in range(0, q1, block_k):                         # causal: keys < q1 only
            k1 = min(k0 + block_k, q1)
            s = (q[:, :, q0:q1] @ np.swapaxes(k[:, :, k0:k1], -1, -2)) * scale  # (.., bq, bk)
            seen = np.arange(k0, k1)[None, :] <= np.arange(q0, q1)[:, None]
            s = np.where(seen, s, -np.inf)
            m_new = np.maximum(m, s.max(axis=-1, keepdims=True))  # finite: key 0 is in tile 0
            c = np.exp(m - m_new)                                 # 0 on the first tile
            p = np.exp(s - m_new)
            lsum = c * lsum + p.sum(axis=-1, keepdims=True)
            o = c * o + p @ v[:, :, k0:k1]
            m = m_new
        y[:, :, q0:q1] = o / lsum
        lse[:, :, q0:q1] = (m + np.log(lsum))[..., 0]
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)
    return out.astype(qkv.dtype, copy=False), lse


def attention_backward(dout, qkv, out, lse, n_head):
    """Backward of attention_forward -> dqkv (B, T, 3C), the forward's lines taken in reverse.

    Per head the forward was
        S = q k^T * scale          (T, T), masked: query i sees keys j <= i
        P = softmax(S)             row by row; = exp(S - lse), so P is rebuilt from lse
        Y = P v                    (T, HS): out
    and with dY = dout (T, HS), each line gives the gradients of its inputs:
        Y = P v        ->  dV = P^T dY             (T, HS)
                           dP = dY v^T             (T, T)
        P = softmax(S) ->  dS = softmax_backward(dP, P) = P * (dP - D),
                           D_i = sum_j dP_ij P_ij = sum_j (dY_i . v_j) P_ij = dY_i . Y_i,
                           so D = rowsum(dY * Y): O(T HS) work instead of an O(T^2) sum
        S = q k^T * scale  ->  dq = (dS * scale) k,   dk = (dS * scale)^T q
    The scale is folded into dS once, here and in csrc/ alike. Masked entries have P = 0, so
    dS = 0 there: nothing flows to keys a query did not see.
    """
    return _attention_backward(dout, qkv, out, lse, n_head)


def _attention_backward(dout, qkv, out, lse, n_head, dropout=None):
    """attention_backward; with dropout = (keep, scale) that of _attention_forward's dropout."""
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = _split_heads(qkv, n_head)                           # (B, NH, T, HS)
    HS = q.shape[-1]
    scale = 1.0 / math.sqrt(HS)
    dy = dout.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)     # (B, NH, T, HS)
    y = out.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)
    p = np.exp(_causal_scores(q, k) - lse[..., None])             # P  (B, NH, T, T)
    pd = p if dropout is None else np.where(dropout[0], p * dropout[1], 0)
    dv = np.swapaxes(pd, -1, -2) @ dy                             # dV = P^T dY (P dropped)
    dp = dy @ np.swapaxes(v, -1, -2)                              # dP = dY v^T
    if dropout is not None:                                       # ... through the mask
        dp = np.where(dropout[0], dp * dropout[1], 0)
    D = (dy * y).sum(axis=-1, keepdims=True)                      # D = rowsum(dY * Y)
    ds = p * (dp - D) * scale                                     # dS, times the scale
    dq = ds @ k                                                   # dq = (dS * scale) k
    dk = np.swapaxes(ds, -1, -2) @ q                              # dk = (dS * scale)^T q
    dqkv = np.empty_like(qkv)
    for i, d in enumerate((dq, dk, dv)):
        dqkv[..., i * C:(i + 1) * C] = d.transpose(0, 2, 1, 3).reshape(B, T, C)
    return dqkv


# ---------------------------------------------------------------------------------------------
# attention dropout, fused (csrc/attention_tiled.h, Dropout): the mask is a hash, not stored

GOLDEN32 = 0x9E3779B9      # 2^32 / golden ratio: spreads consecutive indices over 32 bits


def _mix32(x):
    """The kernels' 32-bit integer hash (xorshift-multiply rounds) of a uint32 array."""
    x = x ^ (x >> np.uint32(16))
    x = x * np.uint32(0x7FEB352D)
    x = x ^ (x >> np.uint32(15))
    x = x * np.uint32(0x846CA68B)
    return x ^ (x >> np.uint32(16))


def dropout_threshold_scale(p):
    """Attention dropout with probability p keeps P_ij when its hash is >= threshold
    (round(p 2^32)) and scales it by 1 / (1 - p), as float32: what the kernels compute."""
    if not 0.0 <= p < 1.0:
        raise ValueError(f"attention dropout: p must be in [0, 1), got {p}")
    return min(2 ** 32 - 1, math.floor(p * 2 ** 32 + 0.5)), np.float32(1.0 / (1.0 - p))


def attention_dropout_keep(seed, B, NH, T, p):
    """(B, NH, T, T) bool: the probabilities attention dropout keeps for this seed.

    Row i of head bh = b NH + h gets a key from (seed, bh T + i), and column j of the row
    hashes that key with j: keep = hash >= round(p 2^32), so each survives with probability
    1 - p, independently enough for dropout, and the backward redraws the very same mask from
    the seed instead of storing (T, T) bits per head.
    """
    threshold, _ = dropout_threshold_scale(p)
    with np.errstate(over="ignore"):
        r = np.arange(B * NH * T, dtype=np.uint64)                   # bh * T + i
        lo, hi = (r & 0xFFFFFFFF).astype(np.uint32), (r >> np.uint64(32)).astype(np.uint32)
        s_lo, s_hi = np.uint32(seed & 0xFFFFFFFF), np.uint32((seed >> 32) & 0xFFFFFFFF)
        key = _mix32(_mix32(s_lo ^ lo) ^ s_hi ^ (hi * np.uint32(GOLDEN32)))
        cols = np.arange(T, dtype=np.uint32) * np.uint32(GOLDEN32)
        u = _mix32(key[:, None] ^ cols[None, :])
    return (u >= threshold).reshape(B, NH, T, T)


def attention_forward_dropout(qkv, n_head, p, seed):
    """attention_forward with dropout on the probabilities (training):
        out = (P * keep / (1 - p)) v,   keep = attention_dropout_keep(seed, ...)
    lse is the softmax's, as without dropout (dropout comes after the softmax)."""
    B, T, _ = qkv.shape
    keep = attention_dropout_keep(seed, B, n_head, T, p)
    return _attention_forward(qkv, n_head, (keep, dropout_threshold_scale(p)[1]))


def attention_backward_dropout(dout, qkv, out, lse, n_head, p, seed):
    """Backward of attention_forward_dropout. With Pd = P * keep / (1 - p) and out = Pd v:
        dV = Pd^T dY,   dPd = dY v^T,   dP = dPd * keep / (1 - p),   dS = P * (dP - D)
    and D = rowsum(dY * Y) still: sum_j P_ij dP_ij = sum_j Pd_ij dPd_ij = dY_i . Y_i."""
    B, T, _ = qkv.shape
    keep = attention_dropout_keep(seed, B, n_head, T, p)
    return _attention_backward(dout, qkv, out, lse, n_head, (keep, dropout_threshold_scale(p)[1]))


def attention_decode(q, k, v, n_past):
    """Inference attention against a KV cache (no backward) -> y (B, NH, Tq, HS).

    q (B, NH, Tq, HS) are the new queries at positions n_past .. n_past+Tq-1; k, v
    (B, NH, Tmax, HS) are the cache buffers, whose first n_past+Tq rows hold every key and value
    so far (rows beyond are unused space and ignored, so the cache is never copied).
    Query i sees keys 0 .. n_past+i. With n_past=0 this is the causal attention_forward.
    """
    Tq, Tk = q.shape[2], n_past + q.shape[2]
    k, v = k[:, :, :Tk], v[:, :, :Tk]
    scale = 1.0 / math.sqrt(q.shape[-1])
    s = (q @ np.swapaxes(k, -1, -2)) * scale                        # (B, NH, Tq, Tk)
    visible = np.arange(Tk)[None, :] <= (n_past + np.arange(Tq))[:, None]
    s = np.where(visible, s, -np.inf)
    return softmax_forward(s).astype(q.dtype, copy=False) @ v


def attention_decode_rows(q, ks, vs, n_past, k_new=None, v_new=None):
    """attention_decode for a batch whose rows keep their own caches -> y (B, NH, Tq, HS).

    q (B, NH, Tq, HS); ks[b], vs[b] (1, NH, Tmax_b, HS) are row b's cache buffers and n_past[b]
    its length: each row is exactly attention_decode of that row alone. This is how the
    requests of a server decode together, each at its own position (model.RowCaches).
    k_new, v_new (B, NH, Tq, HS), when given, are the new positions' keys and values: they are
    first written into each row's cache at n_past[b] onwards (in place, like the optimizers).
    """
    if (k_new is None) != (v_new is None):
        raise ValueError("attention_decode_rows: k_new and v_new come together (both arrays, "
                         "or both None)")
    if k_new is not None:
        Tq = q.shape[2]
        for b in range(q.shape[0]):
            ks[b][0, :, n_past[b]:n_past[b] + Tq] = k_new[b]
            vs[b][0, :, n_past[b]:n_past[b] + Tq] = v_new[b]
    return np.concatenate([attention_decode(q[b:b + 1], ks[b], vs[b], n_past[b])
                           for b in range(q.shape[0])], axis=0)


# ---------------------------------------------------------------------------------------------
# optimizer updates (in place: with attention_decode_rows' appending, the only kernels that
# write into their arguments)


def adamw_update(param, grad, m, v, lr, beta1, beta2, eps, weight_decay, step):
    """One AdamW step on one parameter, in place (Loshchilov & Hutter, decoupled decay).

        m = beta1 m + (1 - beta1) g           v = beta2 v + (1 - beta2) g^2
        param -= lr * weight_decay * param    (decay the weight itself, not the gradient)
        param -= lr / (1 - beta1^step) * m / (sqrt(v) / sqrt(1 - beta2^step) + eps)

    ``step`` counts from 1. The order and form follow torch.optim.AdamW so results match it.
    """
    m *= beta1
    m += (1.0 - beta1) * grad
    v *= beta2
    v += (1.0 - beta2) * grad * grad
    bias1 = 1.0 - beta1 ** step
    bias2 = 1.0 - beta2 ** step
    if weight_decay:
        param *= 1.0 - lr * weight_decay
    denom = np.sqrt(v) / math.sqrt(bias2) + eps
    param -= (lr / bias1) * m / denom


def sgd_update(param, grad, buf, lr, momentum, weight_decay, nesterov):
    """One SGD step in place, in PyTorch's form (buf is the momentum buffer, or None).

        g = grad + weight_decay * param;  buf = momentum * buf + g
        param -= lr * (g + momentum * buf if nesterov else buf)
    """
    g = grad + weight_decay * param if weight_decay else grad
    if momentum:
        buf *= momentum
        buf += g
        g = g + momentum * buf if nesterov else buf
    param -= lr * g


# ---------------------------------------------------------------------------------------------
# bfloat16 mixed precision: the same products with both inputs rounded to bf16, summed in float32
#
# bf16 is the top 16 bits of a float32: the same 8-bit exponent (so the same range), 8
# significant bits instead of 24 (relative rounding error at most 2^-8). NumPy has no bfloat16,
# so a bf16 array is stored as uint16 bit patterns. The product of two bf16 numbers has at most
# 16 significant bits and is exact in float32; only the float32 sum rounds. Every *_bf16 kernel
# takes float32 (rounded here) or uint16 (already bf16) operands and returns float32.


def to_bf16(x):
    """float32 array -> uint16 bf16 bit patterns, rounded to nearest, ties to even.

        to_bf16(np.float32([1.0, 1 + 2**-8, 1 + 3 * 2**-8])) -> [0x3F80, 0x3F80, 0x3F82]
        (1 + 2^-8 lies halfway between 1 and 1 + 2^-7 and goes to the even one, 1.0)
    """
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32)
    rounded = ((u + np.uint32(0x7FFF) + ((u >> 16) & 1)) >> 16).astype(np.uint16)
    # subtle: a NaN with only low payload bits would round up to inf; keep it a (quiet) NaN
    nan = (u & np.uint32(0x7FFFFFFF)) > np.uint32(0x7F800000)
    return np.where(nan, ((u >> 16) | 0x40).astype(np.uint16), rounded)


def from_bf16(h):
    """uint16 bf16 bit patterns -> float32 (exact: the low 16 bits become zeros)."""
    return (np.asarray(h, dtype=np.uint16).astype(np.uint32) << 16).view(np.float32)


def _bf16_values(a):
    """An operand's values after rounding to bf16, as float32."""
    return from_bf16(a if a.dtype == np.uint16 else to_bf16(a))


def linear_forward_bf16(x, w, b=None):
    """linear_forward with x and w rounded to bf16: x (N, C) @ w (C, OC) + b -> float32 (N, OC)."""
    return linear_forward(_bf16_values(x), _bf16_values(w), b)


def linear_gelu_forward_bf16(x, w, b=None):
    """linear_gelu_forward with x and w rounded to bf16 -> (pre, out), float32."""
    return linear_gelu_forward(_bf16_values(x), _bf16_values(w), b)


def linear_residual_forward_bf16(x, w, b, residual):
    """linear_residual_forward with x and w rounded to bf16; the residual is added in float32."""
    return linear_residual_forward(_bf16_values(x), _bf16_values(w), b, residual)


def linear_backward_bf16(dout, x, w, need_dx=True):
    """linear_backward with dout, x and w rounded to bf16 in the two products (dx, dw); the bias
    gradient db = sum_n dout is summed from float32 dout."""
    dx, dw, _ = linear_backward(_bf16_values(dout), _bf16_values(x), _bf16_values(w), need_dx)
    return dx, dw, dout.sum(axis=0)


def matmul_nt_bf16(a, b):
    """matmul_nt with a and b rounded to bf16: a (M, K) @ b (N, K)^T -> float32 (M, N)."""
    return matmul_nt(_bf16_values(a), _bf16_values(b))


def matmul_tn_bf16(a, b):
    """matmul_tn with a and b rounded to bf16: a (K, M)^T @ b (K, N) -> float32 (M, N)."""
    return matmul_tn(_bf16_values(a), _bf16_values(b))


def matmul_forward_bf16(a, b):
    """matmul_forward with a and b rounded to bf16: a (..., M, K) @ b (..., K, N), float32 sums."""
    return matmul_forward(_bf16_values(a), _bf16_values(b))


def matmul_backward_bf16(dout, a, b):
    """matmul_backward with dout, a and b rounded to bf16 in both products -> (da, db)."""
    return matmul_backward(_bf16_values(dout), _bf16_values(a), _bf16_values(b))


def attention_forward_bf16(qkv, n_head):
    """attention_forward with bf16 products: (out (B, T, C), lse (B, NH, T)), float32.

    The operands of the two products are rounded to bf16: q and k for S = q k^T, and the
    probabilities and v for out = P v. The softmax itself (scores, max, exp, sums, lse) is
    float32. P is rounded before it is divided by the row sum l, as the kernel does it:
        out = bf16(exp(S - m)) @ bf16(v) / l,   l = sum exp(S - m),   m = row max
    (the kernel's m is the running max of the key blocks seen so far, so on rows longer than
    its 64-key block it rounds different values, with the same 2^-9 bound on each).
    """
    B, T, C3 = qkv.shape
    q, k, v = (_bf16_values(np.ascontiguousarray(a)) for a in _split_heads(qkv, n_head))
    s = _causal_scores(q, k)                                       # float32, as q and k
    m = s.max(axis=-1, keepdims=True)
    e = np.exp(s - m)
    total = e.sum(axis=-1, keepdims=True)                          # l
    y = (_bf16_values(e.astype(np.float32)) @ v) / total           # (B, NH, T, HS)
    out = y.transpose(0, 2, 1, 3).reshape(B, T, C3 // 3)
    return out.astype(np.float32), (m + np.log(total))[..., 0].astype(np.float32)


def attention_backward_bf16(dout, qkv, out, lse, n_head):
    """attention_backward with bf16 products -> dqkv (B, T, 3C), float32.

    The lines of attention_backward, with every product's operands rounded to bf16: q, k, v and
    dout where they enter a product, and P and dS = P * (dP - D) * scale, which are formed in
    float32 and rounded as they enter theirs. D = rowsum(dout * out) uses the float32 dout.
    """
    B, T, C3 = qkv.shape
    C = C3 // 3
    q, k, v = (_bf16_values(np.ascontiguousarray(a)) for a in _split_heads(qkv, n_head))
    HS = q.shape[-1]
    scale = np.float32(1.0 / math.sqrt(HS))
    dy32 = dout.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)
    dy = _bf16_values(np.ascontiguousarray(dy32))
    y = out.reshape(B, T, n_head, HS).transpose(0, 2, 1, 3)
    p = np.exp(_causal_scores(q, k) - lse[..., None]).astype(np.float32)
    dv = np.swapaxes(_bf16_values(p), -1, -2) @ dy
    dp = dy @ np.swapaxes(v, -1, -2)
    D = (dy32 * y).sum(axis=-1, keepdims=True)
    ds = _bf16_values((p * (dp - D) * scale).astype(np.float32))
    dq = ds @ k
    dk = np.swapaxes(ds, -1, -2) @ q
    dqkv = np.empty(qkv.shape, dtype=np.float32)
    for i, d in enumerate((dq, dk, dv)):
        dqkv[..., i * C:(i + 1) * C] = d.transpose(0, 2, 1, 3).reshape(B, T, C)
    return dqkv
