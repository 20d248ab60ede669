"""What the model computes for one text, as plain arrays and dicts (no printing, no plotting).

Each function takes a GPT and a 1-D list of token ids and returns what `python -m
tinyroots.inspect` shows; views.py prints it, report.py puts it in a page. Everything here is
NumPy plus tinyroots' own autograd (attribution): no other framework.

    next_token       P(x_t | x_<t) over the vocabulary: the article's formula with real numbers
    attention        the softmax weights of every layer and head (forward(output_attentions))
    logit_lens       ln_f and the tied head applied to every layer's hidden state
    attribute        gradient x input and integrated gradients of one prediction
    nearest_tokens   the embedding table's nearest neighbours of a token, by cosine
    pca_2d           a 2-D map of chosen embeddings (principal components)
    surprise         per-token log-probability and perplexity
"""

import math

import numpy as np

from .. import ops
from ..tensor import Tensor, no_grad

# ---------------------------------------------------------------------------------------------
# text <-> ids, and the checks a user's input needs


def token_text(tokenizer, i):
    """How token i reads on screen: its decoded text, with newlines and tabs made visible."""
    text = tokenizer.decode([int(i)])
    return text.replace("\n", "\\n").replace("\t", "\\t").replace("\r", "\\r")


def encode_text(model, tokenizer, text):
    """text -> its token ids, checked against the model's context and vocabulary."""
    if not text:
        raise ValueError("--text is empty: give the text to inspect (--text 'ROMEO:')")
    ids = list(tokenizer.encode(text))
    block = model.config.block_size
    if not 1 <= len(ids) <= block:
        raise ValueError(f"--text is {len(ids)} tokens long; the model's context holds 1.."
                         f"{block} tokens (block_size={block})")
    V = model.config.vocab_size
    bad = [i for i in ids if not 0 <= i < V]
    if bad:
        raise ValueError(f"--text encodes to token id {bad[0]}, outside the model's vocabulary "
                         f"0..{V - 1} (tokenizer and model do not match)")
    return ids


def resolve_token(tokenizer, word, vocab_size, what="--token"):
    """A token given as its vocab.json spelling ('Ġthe') or as text that is one token (' the')."""
    to_id = getattr(tokenizer, "token_to_id", None)
    i = to_id(word) if to_id is not None else None
    if i is None:
        ids = list(tokenizer.encode(word)) if word else []
        if len(ids) != 1:
            pieces = ", ".join(repr(tokenizer.decode([t])) for t in ids[:6])
            raise ValueError(f"{what} {word!r} is not one token of the vocabulary (ids 0.."
                             f"{vocab_size - 1}): it encodes to {len(ids)} tokens"
                             f"{' (' + pieces + ')' if ids else ''}; give a single token, "
                             "e.g. ' the' with its leading space")
        i = ids[0]
    if not 0 <= i < vocab_size:
        raise ValueError(f"{what} {word!r} is id {i}, outside the model's vocabulary "
                         f"0..{vocab_size - 1}")
    return int(i)


def check_index(value, count, flag, what):
    """A layer or head number in 0..count-1, or an error naming both."""
    if value is not None and not 0 <= value < count:
        raise ValueError(f"{flag} {value} is out of range: the model has {count} {what} "
                         f"(0..{count - 1})")


def softmax(z):
    """Rows of logits -> probabilities, in float64 (subtract the max: exp overflows)."""
    z = np.asarray(z, dtype=np.float64)
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def _run(model, ids, **kwargs):
    """model(ids) in eval mode without a graph: the ModelOutput for one row (1, T)."""
    with no_grad():
        return model(np.asarray([ids], dtype=np.int64), **kwargs)


# ---------------------------------------------------------------------------------------------
# next-token distribution


def run_all(model, ids):
    """One forward pass that keeps everything (attentions, hidden states, logits) for the
    functions below, which otherwise each run their own (the report shares this one)."""
    return _run(model, ids, output_attentions=True, output_hidden_states=True)


def next_token(model, tokenizer, ids, top_k=10, temperature=1.0, out=None):
    """The distribution of the token after ``ids``: the article's formula, evaluated.

        P(x_t = y | x_<t) = exp(f(x_<t, y)) / sum_y' exp(f(x_<t, y'))

    f is the logit the model gives token y. ``temperature`` divides the logits first
    (T < 1 sharpens, T > 1 flattens); both distributions are returned.
    """
    if not temperature > 0:         # NaN too
        raise ValueError(f"--temperature must be > 0, got {temperature}")
    out = out if out is not None else _run(model, ids, last_only=True)
    logits = out.logits.data[0, -1].astype(np.float64)                         # (V,)
    p = softmax(logits)
    p_t = softmax(logits / temperature)
    V = logits.shape[0]
    top_k = max(1, min(top_k, V))
    order = np.argsort(-p, kind="stable")[:top_k]
    z_max = logits.max()
    log_Z = z_max + math.log(np.exp(logits - z_max).sum())     # log sum_y exp(f(y))
    top, cum = [], 0.0
    for i in order:
        cum += p[i]
        top.append({"id": int(i), "token": token_text(tokenizer, i), "logit": float(logits[i]),
                    "prob": float(p[i]), "cum_prob": float(cum),
                    "prob_at_temperature": float(p_t[i])})
    return {"context_tokens": len(ids), "vocab_size": V, "temperature": float(temperature),
            "log_Z": float(log_Z), "entropy_bits": float(-(p * np.log2(p + 1e-300)).sum()),
            "top": top}


# ---------------------------------------------------------------------------------------------
# attention weights and the logit lens


def attention(model, ids, out=None):
    """(L, NH, T, T) softmax weights: [l, h, t, s] is how much position t looks at s."""
    out = out if out is not None else _run(model, ids, output_attentions=True, last_only=True)
    return np.stack([a[0] for a in out.attentions])


def logit_lens(model, tokenizer, ids, out=None):
    """What each layer would predict if the model stopped there.

    Hidden state l (the embeddings, then each block's input, and ln_f's output last) goes
    through ln_f and the tied head, as the real output does; the last layer's lens is therefore
    exactly the model's logits (ln_f is already applied there, so it is not applied twice).
    Returns per layer and position the top token and its probability, and the rank (1 = top)
    of the token that actually comes next in the text.
    """
    layers = [_lens_row(tokenizer, ids, logits) for logits in lens_logits(model, ids, out)]
    return {"tokens": [token_text(tokenizer, i) for i in ids], "layers": layers}


def lens_logits(model, ids, out=None):
    """(n_layer + 1, T, V): the logits each hidden state would give (see logit_lens)."""
    out = out if out is not None else _run(model, ids, output_hidden_states=True, last_only=True)
    tr = model.transformer
    last = len(out.hidden_states) - 1
    rows = []
    with no_grad():
        for layer, h in enumerate(out.hidden_states):
            x = Tensor(h) if layer == last else tr.ln_f(Tensor(h))                  # (1, T, C)
            rows.append(ops.linear_transposed(x, tr.wte.weight).data[0])            # (T, V)
    return np.stack(rows)


def _lens_row(tokenizer, ids, logits):
    p = softmax(logits)                                                             # (T, V)
    top = p.argmax(axis=-1)
    cells = []
    for t, i in enumerate(top):
        cell = {"top_id": int(i), "top_token": token_text(tokenizer, i),
                "top_prob": float(p[t, i])}
        if t + 1 < len(ids):
            nxt = ids[t + 1]
            cell["next_rank"] = int((logits[t] > logits[t, nxt]).sum()) + 1
            cell["next_prob"] = float(p[t, nxt])
        cells.append(cell)
    return cells


# ---------------------------------------------------------------------------------------------
# attribution: which input tokens drove a prediction


def target_score_and_grad(model, ids, embeds, target, score="logprob", batch=8):
    """f and df/d(embeds) for each row of ``embeds`` (S, T, C), with tinyroots' autograd.

    f is the target token's log-probability (or its logit) at the last position, with the
    given token embeddings in place of wte[ids] (positions are added as usual). The weights are
    frozen for the duration, so backward computes no weight gradients.
    """
    params = list(model.parameters())
    flags = [p.requires_grad for p in params]
    was_training = model.training
    model.eval()
    S, T, _ = embeds.shape
    f, grad = np.zeros(S), np.zeros(embeds.shape, dtype=np.float64)
    try:
        for p in params:
            p.requires_grad = False
        for lo in range(0, S, batch):
            e = Tensor(embeds[lo:lo + batch], requires_grad=True)                   # (b, T, C)
            row_ids = np.broadcast_to(np.asarray(ids, dtype=np.int64), (e.shape[0], T))
            x = model.hidden_states(row_ids, inputs_embeds=e)                       # (b, T, C)
            logits = ops.linear_transposed(x[:, -1, :], model.transformer.wte.weight)  # (b, V)
            scores = ops.log_softmax(logits) if score == "logprob" else logits
            picked = scores[:, target]                                              # (b,)
            picked.sum().backward()     # rows are independent: d(sum)/d(row) = d(f_row)/d(row)
            f[lo:lo + batch] = picked.data
            grad[lo:lo + batch] = e.grad
    finally:
        for p, flag in zip(params, flags):
            p.requires_grad = flag
        model.train(was_training)
    return f, grad


def attribute(model, tokenizer, ids, target, steps=20, score="logprob"):
    """Gradient x input and integrated gradients of f = the target's score after ``ids``.

    Both attribute f to the input tokens' embeddings e_t (the rows wte[ids]); a token's
    attribution is the sum over its C channels.

      gradient x input      a_t = e_t . df/de_t (the first-order Taylor term)
      integrated gradients  a_t = (e_t - b_t) . integral_0^1 df/de_t(b + alpha (e - b)) dalpha
                            with the baseline b = zero token embeddings (position embeddings
                            kept): "no token information at all". The integral is Gauss-Legendre
                            quadrature with ``steps`` nodes (exact for polynomials of degree
                            2 steps - 1, so it converges much faster than a Riemann sum).

    IG is complete: sum_t a_t = f(e) - f(b). The relative error of that sum is reported, and
    tells whether ``steps`` was enough.
    """
    if steps < 1:
        raise ValueError(f"--steps must be >= 1, got {steps}")
    if score not in ("logprob", "logit"):
        raise ValueError(f"--score must be logprob or logit, got {score!r}")
    wte = model.transformer.wte.weight.data
    e = wte[np.asarray(ids)].astype(np.float32)                                     # (T, C)
    base = np.zeros_like(e)
    nodes, weights = np.polynomial.legendre.leggauss(steps)  # on [-1, 1]; weights sum to 2
    alphas, weights = (nodes + 1) / 2, weights / 2           # on [0, 1]; weights sum to 1
    path = base[None] + alphas[:, None, None] * (e - base)[None]                    # (S, T, C)
    # one batch of rows: the input, the baseline, then the S points on the path between them
    rows = np.concatenate([e[None], base[None], path]).astype(np.float32)           # (S+2, T, C)
    f, grads = target_score_and_grad(model, ids, rows, target, score)
    gxi = (grads[0] * e).sum(axis=-1)                                               # (T,)
    avg_grad = np.tensordot(weights, grads[2:], axes=1)                             # (T, C)
    ig = ((e - base) * avg_grad).sum(axis=-1)                                       # (T,)
    f_x, f_b = f[:1], f[1:2]
    delta = float(f_x[0] - f_b[0])
    error = abs(float(ig.sum()) - delta) / max(abs(delta), 1e-12)
    return {"tokens": [token_text(tokenizer, i) for i in ids], "target_id": int(target),
            "target": token_text(tokenizer, target), "score": score,
            "f_input": float(f_x[0]), "f_baseline": float(f_b[0]),
            "baseline": "zero token embeddings (position embeddings kept)",
            "steps": int(steps), "gradient_x_input": gxi.tolist(),
            "integrated_gradients": ig.tolist(), "completeness_error": error}


# ---------------------------------------------------------------------------------------------
# the embedding table


def nearest_tokens(model, tokenizer, token_id, k=10):
    """The k tokens whose embedding rows have the largest cosine similarity to token_id's."""
    wte = model.transformer.wte.weight.data.astype(np.float64)                      # (V, C)
    norms = np.linalg.norm(wte, axis=1)
    cos = wte @ wte[token_id] / np.maximum(norms * norms[token_id], 1e-12)          # (V,)
    cos[token_id] = -np.inf                                                         # not itself
    k = max(1, min(k, len(cos) - 1))
    order = np.argsort(-cos, kind="stable")[:k]
    return [{"id": int(i), "token": token_text(tokenizer, i), "cosine": float(cos[i])}
            for i in order]


def pca_2d(vectors):
    """(N, C) -> (N, 2): the coordinates along the two directions of largest variance.

    Centre the rows; the principal directions are the eigenvectors of the covariance matrix
    X^T X / (N - 1) with the largest eigenvalues. Each direction's sign is fixed so that its
    largest-magnitude entry is positive (eigenvectors are only defined up to sign).
    """
    X = np.asarray(vectors, dtype=np.float64)
    X = X - X.mean(axis=0)
    cov = X.T @ X / max(len(X) - 1, 1)                                              # (C, C)
    eigvals, eigvecs = np.linalg.eigh(cov)                 # ascending eigenvalues
    top = eigvecs[:, ::-1][:, :2]                                                   # (C, 2)
    signs = np.sign(top[np.abs(top).argmax(axis=0), [0, 1]])
    top = top * np.where(signs == 0, 1.0, signs)
    explained = eigvals[::-1][:2] / max(eigvals.sum(), 1e-300)
    return X @ top, explained


def embeddings(model, tokenizer, token_id, k=10, chosen=None):
    """Nearest neighbours of a token and a 2-D PCA map of it, its neighbours and ``chosen``."""
    near = nearest_tokens(model, tokenizer, token_id, k)
    ids = [token_id] + [n["id"] for n in near] + [i for i in (chosen or []) if i != token_id]
    ids = list(dict.fromkeys(ids))
    coords, explained = pca_2d(model.transformer.wte.weight.data[ids])
    return {"token_id": int(token_id), "token": token_text(tokenizer, token_id),
            "nearest": near,
            "map": [{"id": int(i), "token": token_text(tokenizer, i), "x": float(x),
                     "y": float(y)} for i, (x, y) in zip(ids, coords)],
            "explained_variance": [float(v) for v in explained]}


# ---------------------------------------------------------------------------------------------
# surprise: what the model expected


def surprise(model, tokenizer, ids, out=None):
    """Per-token log-probability log P(x_t | x_<t) (t >= 1) and the text's perplexity.

    A token is marked surprising when its surprisal -log2 P is more than one standard
    deviation above the text's mean surprisal.
    """
    if len(ids) < 2:
        raise ValueError("--text must be at least 2 tokens long to score (the first token "
                         "has no context)")
    out = out if out is not None else _run(model, ids)
    logits = out.logits.data[0].astype(np.float64)                                  # (T, V)
    z = logits[:-1]
    log_Z = z.max(axis=-1) + np.log(np.exp(z - z.max(axis=-1, keepdims=True)).sum(axis=-1))
    nxt = np.asarray(ids[1:])
    logp = z[np.arange(len(nxt)), nxt] - log_Z                                      # (T-1,)
    ranks = (z > z[np.arange(len(nxt)), nxt][:, None]).sum(axis=-1) + 1
    bits = -logp / math.log(2)
    threshold = bits.mean() + bits.std()
    rows = [{"position": 0, "id": int(ids[0]), "token": token_text(tokenizer, ids[0]),
             "logprob": None, "surprisal_bits": None, "rank": None, "surprising": False}]
    for t in range(len(nxt)):
        rows.append({"position": t + 1, "id": int(nxt[t]), "token": token_text(tokenizer, nxt[t]),
                     "logprob": float(logp[t]), "surprisal_bits": float(bits[t]),
                     "rank": int(ranks[t]), "surprising": bool(bits[t] > threshold)})
    return {"tokens": rows, "mean_nll": float(-logp.mean()),
            "perplexity": float(math.exp(-logp.mean())), "threshold_bits": float(threshold)}
