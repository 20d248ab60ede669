"""Terminal views and PNG pictures of what analysis.py computed.

Every ``show_*`` takes the dict (or array) an analysis function returned and gives the text
`python -m tinyroots.inspect` prints; every ``plot_*`` writes a PNG with matplotlib (the
``plot`` extra: pip install "tinyroots[plot]").
"""

import math

import numpy as np

SHADES = " .:-=+*#%@"      # 10 levels of weight, light to dark, for heat maps in a terminal


def _bar(fraction, width=30):
    """A bar of block characters, fraction in [0, 1]."""
    n = int(round(max(0.0, min(1.0, fraction)) * width))
    return "#" * n + "." * (width - n)


def _cell(text, width):
    """A token cut or padded to ``width`` columns; its spaces shown as the visible '␣'."""
    q = text.replace(" ", "\u2423") if text else "''"
    q = q if len(q) <= width else q[:width - 1] + "~"
    return q.ljust(width)


# ---------------------------------------------------------------------------------------------
# next


def show_next(d):
    top = d["top"]
    lines = [f"next-token distribution after {d['context_tokens']} tokens "
             f"(vocabulary {d['vocab_size']}, entropy {d['entropy_bits']:.2f} bits)", ""]
    temp = d["temperature"]
    extra = f"  p(T={temp:g})" if temp != 1.0 else ""
    lines.append(f"{'rank':>4}  {'id':>6}  {'token':<14} {'logit':>8}  {'prob':>7}  "
                 f"{'cum':>7}{extra}")
    for r, t in enumerate(top, 1):
        pt = f"  {t['prob_at_temperature']:8.4f}" if temp != 1.0 else ""
        lines.append(f"{r:>4}  {t['id']:>6}  {_cell(t['token'], 14)} {t['logit']:8.3f}  "
                     f"{t['prob']:7.4f}  {t['cum_prob']:7.4f}{pt}  {_bar(t['prob'], 20)}")
    lines += ["", "the formula, with these numbers:",
              "  P(x_t = y | x_<t) = exp(f(x_<t, y)) / sum_y' exp(f(x_<t, y'))",
              f"  log sum_y' exp(f(y')) = {d['log_Z']:.4f}"]
    for t in top[:3]:
        lines.append(f"  P({t['token']!r}) = exp({t['logit']:.4f} - {d['log_Z']:.4f}) = "
                     f"{math.exp(t['logit'] - d['log_Z']):.4f}")
    if temp != 1.0:
        lines.append(f"  at temperature {temp:g} every f is divided by {temp:g} first: "
                     f"{'sharper' if temp < 1 else 'flatter'} (last column)")
    return "\n".join(lines)


def plot_next(d, path):
    plt = pyplot()
    top = d["top"]
    fig, ax = plt.subplots(figsize=(7, 0.35 * len(top) + 1.2))
    labels = [repr(t["token"]) for t in top][::-1]
    ax.barh(labels, [t["prob"] for t in top][::-1], color="#4a7bd0", label="T=1")
    if d["temperature"] != 1.0:
        ax.barh(labels, [t["prob_at_temperature"] for t in top][::-1], color="none",
                edgecolor="#d0584a", label=f"T={d['temperature']:g}")
        ax.legend()
    ax.set_xlabel("probability of the next token")
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# attention


def show_attention(weights, tokens, layer=None, head=None):
    """weights (L, NH, T, T). One head: a heat map; otherwise where each head looks from the
    last token."""
    L, NH, T, _ = weights.shape
    if layer is not None and head is not None:
        w = weights[layer, head]
        lines = [f"attention of layer {layer}, head {head}: row = the token looking, "
                 f"column = the token looked at; '{SHADES[1]}' low .. '{SHADES[-1]}' high", ""]
        width = 12
        for t in range(T):
            # every position the token can see gets at least '.', so the causal triangle shows
            row = "".join(SHADES[1 + min(8, int(w[t, s] * 9))] if s <= t else " "
                          for s in range(T))
            best = int(w[t].argmax())
            lines.append(f"{t:>3} {_cell(tokens[t], width)} |{row}|  max {w[t, best]:.2f} "
                         f"on {best}:{_cell(tokens[best], 12).strip()}")
        return "\n".join(lines)
    layers = range(L) if layer is None else [layer]
    heads = range(NH) if head is None else [head]
    lines = [f"where each head looks from the last token {tokens[-1]!r} (position {T - 1}): "
             "the most-attended token and its weight", ""]
    for lay in layers:
        cells = []
        for h in heads:
            s = int(weights[lay, h, -1].argmax())
            cells.append(f"h{h}:{_cell(tokens[s], 8)}{weights[lay, h, -1, s]:.2f}")
        lines.append(f"layer {lay:>2}  " + "  ".join(cells))
    lines += ["", "--layer L --head H shows one head as a heat map; --out FILE.png draws them"]
    return "\n".join(lines)


def plot_attention(weights, tokens, path, layer=None, head=None):
    plt = pyplot()
    layers = list(range(weights.shape[0])) if layer is None else [layer]
    heads = list(range(weights.shape[1])) if head is None else [head]
    size = 5 if len(layers) * len(heads) == 1 else 2
    fig, axes = plt.subplots(len(layers), len(heads), squeeze=False,
                             figsize=(size * len(heads) + 1, size * len(layers) + 1))
    for r, lay in enumerate(layers):
        for c, h in enumerate(heads):
            ax = axes[r][c]
            ax.imshow(weights[lay, h], cmap="Blues", vmin=0, vmax=1)
            ax.set_title(f"layer {lay} head {h}", fontsize=8)
            if size == 5 and len(tokens) <= 40:
                ax.set_xticks(range(len(tokens)), [repr(t) for t in tokens], rotation=90,
                              fontsize=7)
                ax.set_yticks(range(len(tokens)), [repr(t) for t in tokens], fontsize=7)
            else:
                ax.set_xticks([])
                ax.set_yticks([])
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# logit lens


def show_lens(d, last=8):
    tokens, layers = d["tokens"], d["layers"]
    T = len(tokens)
    cols = list(range(max(0, T - last), T))
    lines = [f"logit lens: the top token (and its probability) each layer would predict; "
             f"'r' is the rank of the real next token (1 = top). Last {len(cols)} of {T} "
             "positions; --json has all.", ""]
    lines.append("layer    " + "".join(f"{_cell(tokens[t], 17)}" for t in cols))
    for i, row in enumerate(layers):
        name = "emb" if i == 0 else ("final" if i == len(layers) - 1 else str(i))
        cells = []
        for t in cols:
            c = row[t]
            rank = f" r{c['next_rank']}" if "next_rank" in c else ""
            cells.append(f"{_cell(c['top_token'], 6).strip()} {c['top_prob']:.2f}{rank}"
                         .ljust(17))
        lines.append(f"{name:<8} " + "".join(cells))
    return "\n".join(lines)


def plot_lens(d, path):
    plt = pyplot()
    layers = d["layers"]
    p = np.array([[c["top_prob"] for c in row] for row in layers])
    fig, ax = plt.subplots(figsize=(min(0.6 * p.shape[1] + 2, 30), 0.45 * p.shape[0] + 1.5))
    ax.imshow(p, cmap="Greens", vmin=0, vmax=1, aspect="auto")
    if p.shape[1] <= 40:
        for i, row in enumerate(layers):
            for t, c in enumerate(row):
                ax.text(t, i, repr(c["top_token"])[1:-1][:6], ha="center", va="center",
                        fontsize=6)
        ax.set_xticks(range(p.shape[1]), [repr(t) for t in d["tokens"]], rotation=90,
                      fontsize=7)
    ax.set_yticks(range(p.shape[0]), ["emb"] + [str(i) for i in range(1, p.shape[0] - 1)]
                  + ["final"])
    ax.set_ylabel("layer")
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# attribution


def show_attribution(d):
    lines = [f"why {d['target']!r} (id {d['target_id']}) comes next: the attribution of its "
             f"{d['score']} to each input token", ""]
    gxi, ig = np.array(d["gradient_x_input"]), np.array(d["integrated_gradients"])
    scale = max(np.abs(ig).max(), np.abs(gxi).max(), 1e-12)
    lines.append(f"{'pos':>4}  {'token':<14} {'grad x input':>12}  {'integrated gradients':>20}")
    for t, tok in enumerate(d["tokens"]):
        bar = ("+" if ig[t] >= 0 else "-") * int(round(abs(ig[t]) / scale * 20))
        lines.append(f"{t:>4}  {_cell(tok, 14)} {gxi[t]:12.4f}  {ig[t]:20.4f}  {bar}")
    lines += ["", f"f(input) = {d['f_input']:.4f}, f(baseline) = {d['f_baseline']:.4f}, "
              f"baseline: {d['baseline']}",
              f"integrated gradients, {d['steps']} Gauss-Legendre steps: sum = {ig.sum():.4f}, "
              f"completeness error |sum - (f(x) - f(b))| / |f(x) - f(b)| = "
              f"{100 * d['completeness_error']:.3f}%"]
    return "\n".join(lines)


def plot_attribution(d, path):
    plt = pyplot()
    T = len(d["tokens"])
    fig, ax = plt.subplots(figsize=(min(0.4 * T + 2, 30), 3.5))
    x = np.arange(T)
    ax.bar(x - 0.2, d["gradient_x_input"], 0.4, label="gradient x input", color="#999999")
    ax.bar(x + 0.2, d["integrated_gradients"], 0.4, label="integrated gradients",
           color="#d0584a")
    ax.set_xticks(x, [repr(t) for t in d["tokens"]], rotation=90, fontsize=7)
    ax.axhline(0, color="black", lw=0.5)
    ax.set_title(f"attribution of {d['target']!r}")
    ax.legend()
    _save(fig, path)


# ---------------------------------------------------------------------------------------------
# embeddings and surprise


def show_embeddings(d):
    lines = [f"nearest tokens to {d['token']!r} (id {d['token_id']}) by cosine similarity of "
             "their embedding rows", ""]
    for n in d["nearest"]:
        lines.append(f"  {n['id']:>6}  {_cell(n['token'], 16)} {n['cosine']:7.4f}  "
                     f"{_bar((n['cosine'] + 1) / 2, 20)}")
    ev = d["explained_variance"]
    lines += ["", f"2-D PCA map ({100 * sum(ev):.1f}% of these rows' variance; --out FILE.png "
              "draws it):"]
    for m in d["map"]:
        lines.append(f"  {_cell(m['token'], 16)} ({m['x']:8.4f}, {m['y']:8.4f})")
    return "\n".join(lines)


def plot_embeddings(d, path):
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(6, 6))
    for i, m in enumerate(d["map"]):
        ax.scatter(m["x"], m["y"], color="#d0584a" if i == 0 else "#4a7bd0")
        ax.annotate(repr(m["token"]), (m["x"], m["y"]), fontsize=8)
    ev = d["explained_variance"]
    ax.set_xlabel(f"PC 1 ({100 * ev[0]:.1f}%)")
    ax.set_ylabel(f"PC 2 ({100 * ev[1]:.1f}%)")
    ax.set_title(f"embeddings near {d['token']!r}")
    _save(fig, path)


def show_surprise(d):
    lines = [f"how surprised the model is by each token: surprisal = -log2 P(x_t | x_<t); "
             f"'!' marks more than {d['threshold_bits']:.2f} bits (mean + 1 std)", ""]
    lines.append(f"{'pos':>4}  {'token':<14} {'log P':>8}  {'bits':>6}  {'rank':>6}")
    for r in d["tokens"]:
        if r["logprob"] is None:
            lines.append(f"{r['position']:>4}  {_cell(r['token'], 14)} {'(first token: '}"
                         "no context)")
            continue
        mark = "!" if r["surprising"] else " "
        lines.append(f"{r['position']:>4}  {_cell(r['token'], 14)} {r['logprob']:8.3f}  "
                     f"{r['surprisal_bits']:6.2f}  {r['rank']:>6} {mark} "
                     f"{_bar(r['surprisal_bits'] / 20, 20)}")
    lines += ["", f"perplexity {d['perplexity']:.2f} (mean negative log-likelihood "
              f"{d['mean_nll']:.4f} nats per token)"]
    return "\n".join(lines)


def plot_surprise(d, path):
    plt = pyplot()
    rows = d["tokens"][1:]
    fig, ax = plt.subplots(figsize=(min(0.4 * len(rows) + 2, 30), 3.5))
    ax.bar(range(len(rows)), [r["surprisal_bits"] for r in rows],
           color=["#d0584a" if r["surprising"] else "#4a7bd0" for r in rows])
    ax.set_xticks(range(len(rows)), [repr(r["token"]) for r in rows], rotation=90, fontsize=7)
    ax.set_ylabel("surprisal (bits)")
    ax.set_title(f"perplexity {d['perplexity']:.2f}")
    _save(fig, path)


# ---------------------------------------------------------------------------------------------


def pyplot():
    """matplotlib.pyplot on the file-only Agg backend, or a clear error naming the extra."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("--out FILE.png needs matplotlib, which is not installed: "
                         "pip install \"tinyroots[plot]\" (or leave out --out)") from None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    import matplotlib.pyplot as plt
    plt.close(fig)
