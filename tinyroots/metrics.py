"""Evaluation metrics: accuracy, macro-F1, BLEU, perplexity. Plain Python and NumPy.

    accuracy(["a", "b", "b"], ["a", "b", "a"])           # 0.666...
    macro_f1(["a", "b", "b"], ["a", "b", "a"])           # 0.666...: F1 per class, averaged
    corpus_bleu(["the cat sat"], ["the cat sat down"])   # 0-100, sacreBLEU's definition
    perplexity(2.0)                                      # exp(mean loss) = 7.389...

BLEU here is sacreBLEU's default ``BLEU()`` (tokenizer 13a, 4-grams, "exp" smoothing, one
reference per sentence) written out so the number needs no dependency; when sacrebleu is
installed, ``bleu(..., use_sacrebleu=True)`` calls it instead, and the tests check the two
agree. Scores are on sacreBLEU's 0-100 scale.

Scoring a fine-tuned checkpoint on a data file, `python -m tinyroots.evaluate`, uses these
(finetune/evaluate.py).
"""

import math
import re
from collections import Counter

import numpy as np

# ---------------------------------------------------------------------------------------------
# classification


def accuracy(y_true, y_pred):
    """Fraction of positions where the prediction equals the label."""
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"accuracy: {len(y_true)} labels but {len(y_pred)} predictions")
    if not y_true:
        raise ValueError("accuracy: no examples")
    return sum(t == p for t, p in zip(y_true, y_pred)) / len(y_true)


def f1_per_class(y_true, y_pred, labels=None):
    """{label: (precision, recall, f1)}; a 0/0 precision or recall counts as 0 (scikit-learn's
    zero_division=0). Labels default to every label seen in y_true or y_pred, sorted.

        y_true a a b, y_pred a b b:  a: P=1/1 R=1/2 F1=2/3;  b: P=1/2 R=1/1 F1=2/3
    """
    y_true, y_pred = list(y_true), list(y_pred)
    if len(y_true) != len(y_pred):
        raise ValueError(f"f1: {len(y_true)} labels but {len(y_pred)} predictions")
    if labels is None:
        labels = sorted(set(y_true) | set(y_pred), key=str)
    out = {}
    for c in labels:
        tp = sum(t == c and p == c for t, p in zip(y_true, y_pred))
        fp = sum(t != c and p == c for t, p in zip(y_true, y_pred))
        fn = sum(t == c and p != c for t, p in zip(y_true, y_pred))
        precision = tp / (tp + fp) if tp + fp else 0.0
        recall = tp / (tp + fn) if tp + fn else 0.0
        f1 = 2 * precision * recall / (precision + recall) if precision + recall else 0.0
        out[c] = (precision, recall, f1)
    return out


def macro_f1(y_true, y_pred, labels=None):
    """Unweighted mean of the per-class F1 scores (every class counts the same, however rare)."""
    per_class = f1_per_class(y_true, y_pred, labels)
    if not per_class:
        raise ValueError("macro_f1: no examples")
    return sum(f for _, _, f in per_class.values()) / len(per_class)


def confusion_matrix(y_true, y_pred, labels):
    """(K, K) int array: row = true label, column = predicted label, in ``labels`` order."""
    index = {c: i for i, c in enumerate(labels)}
    m = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for t, p in zip(y_true, y_pred):
        m[index[t], index[p]] += 1
    return m


# ---------------------------------------------------------------------------------------------
# perplexity


def perplexity(mean_loss):
    """exp(mean cross-entropy in nats per token); inf when that overflows."""
    try:
        return math.exp(mean_loss)
    except OverflowError:
        return math.inf


# ---------------------------------------------------------------------------------------------
# BLEU (Papineni et al. 2002), as sacreBLEU computes it

# sacreBLEU's "13a" tokenizer: mteval-v13a.pl's, used by WMT. Applied in this order.
_13A_RULES = [
    (re.compile(r"([\{-\~\[-\` -\&\(-\+\:-\@\/])"), r" \1 "),   # most punctuation
    (re.compile(r"([^0-9])([\.,])"), r"\1 \2 "),                 # . and , unless after a digit
    (re.compile(r"([\.,])([^0-9])"), r" \1 \2"),                 # . and , unless before a digit
    (re.compile(r"([0-9])(-)"), r"\1 \2 "),                      # - after a digit
]


def tokenize_13a(line):
    """Split punctuation off words, as mteval-v13a does; returns the tokens joined by spaces.

        >>> tokenize_13a("Hello, world! It costs $3.50.")
        'Hello , world ! It costs $ 3.50 .'
    """
    line = line.replace("<skipped>", "").replace("-\n", "").replace("\n", " ")
    if "&" in line:
        line = (line.replace("&quot;", '"').replace("&amp;", "&").replace("&lt;", "<")
                .replace("&gt;", ">"))
    line = f" {line} "
    for pattern, repl in _13A_RULES:
        line = pattern.sub(repl, line)
    return " ".join(line.split())


def _ngrams(tokens, max_n):
    """Counter of every n-gram (as a tuple), n = 1..max_n."""
    counts = Counter()
    for n in range(1, max_n + 1):
        for i in range(len(tokens) - n + 1):
            counts[tuple(tokens[i:i + n])] += 1
    return counts


def bleu_stats(hypothesis, reference, max_n=4, lowercase=False):
    """(matches[n], totals[n], hyp_len, ref_len) for one sentence pair, after 13a tokenization.

    matches[n-1]: hypothesis n-grams also in the reference, each counted at most as often as
    it occurs there ("clipped"); totals[n-1]: all hypothesis n-grams.
    """
    if lowercase:
        hypothesis, reference = hypothesis.lower(), reference.lower()
    hyp = tokenize_13a(hypothesis.rstrip()).split()
    ref = tokenize_13a(reference.rstrip()).split()
    h, r = _ngrams(hyp, max_n), _ngrams(ref, max_n)
    matches, totals = [0] * max_n, [0] * max_n
    for gram, count in h.items():
        n = len(gram)
        totals[n - 1] += count
        matches[n - 1] += min(count, r.get(gram, 0))
    return matches, totals, len(hyp), len(ref)


def bleu_from_stats(matches, totals, hyp_len, ref_len, smooth="exp", effective_order=False):
    """BLEU (0-100) = brevity penalty * geometric mean of the n-gram precisions.

    brevity penalty: 1 if the hypotheses are at least as long as the references, else
    exp(1 - ref_len / hyp_len). smooth="exp" (sacreBLEU's default): the k-th precision that has
    no match at all counts as 1 / (2^k * total) instead of 0; smooth="none": any zero precision
    makes BLEU 0. effective_order: average only over the orders the hypothesis has n-grams of
    (sentence-level BLEU of short sentences).
    """
    max_n = len(matches)
    if smooth not in ("exp", "none"):
        raise ValueError(f"bleu: smooth must be 'exp' or 'none', got {smooth!r}")
    if hyp_len < ref_len:
        bp = math.exp(1.0 - ref_len / hyp_len) if hyp_len > 0 else 0.0
    else:
        bp = 1.0
    if not any(matches):
        return 0.0
    precisions = [0.0] * max_n
    order = max_n
    smooth_k = 1.0
    for n in range(1, max_n + 1):
        if totals[n - 1] == 0:
            break
        if effective_order:
            order = n
        if matches[n - 1] == 0:
            if smooth == "exp":
                smooth_k *= 2.0
                precisions[n - 1] = 100.0 / (smooth_k * totals[n - 1])
        else:
            precisions[n - 1] = 100.0 * matches[n - 1] / totals[n - 1]
    # subtle: sacreBLEU stands in -9999999999 for log(0), so a zero precision gives 0
    logs = [math.log(p) if p > 0 else -9999999999.0 for p in precisions[:order]]
    return bp * math.exp(sum(logs) / order)


def corpus_bleu(hypotheses, references, max_n=4, smooth="exp", lowercase=False,
                use_sacrebleu=False):
    """Corpus-level BLEU (0-100) of hypotheses against one reference each.

    Statistics are summed over the corpus before the precisions are formed -- not an average
    of sentence scores. use_sacrebleu=True computes it with the sacrebleu package instead.
    """
    hypotheses, references = list(hypotheses), list(references)
    if len(hypotheses) != len(references):
        raise ValueError(f"corpus_bleu: {len(hypotheses)} hypotheses but {len(references)} "
                         "references")
    if use_sacrebleu:
        import sacrebleu
        return sacrebleu.corpus_bleu(hypotheses, [references], smooth_method=smooth,
                                     lowercase=lowercase, tokenize="13a").score
    matches, totals = [0] * max_n, [0] * max_n
    hyp_len = ref_len = 0
    for h, r in zip(hypotheses, references):
        m, t, hl, rl = bleu_stats(h, r, max_n, lowercase)
        matches = [a + b for a, b in zip(matches, m)]
        totals = [a + b for a, b in zip(totals, t)]
        hyp_len += hl
        ref_len += rl
    return bleu_from_stats(matches, totals, hyp_len, ref_len, smooth)


def sentence_bleu(hypothesis, reference, max_n=4, smooth="exp"):
    """BLEU of one sentence, with effective_order as sacreBLEU's sentence_bleu uses it."""
    m, t, hl, rl = bleu_stats(hypothesis, reference, max_n)
    return bleu_from_stats(m, t, hl, rl, smooth, effective_order=True)


def sacrebleu_available():
    try:
        import sacrebleu  # noqa: F401
    except ImportError:
        return False
    return True


def bleu(hypotheses, references):
    """(score, implementation): sacrebleu's corpus BLEU when installed, else ours (the same
    number, see tests/test_finetune_metrics.py)."""
    if sacrebleu_available():
        return corpus_bleu(hypotheses, references, use_sacrebleu=True), "sacrebleu"
    return corpus_bleu(hypotheses, references), "tinyroots"
