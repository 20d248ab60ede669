"""Metrics of tinyroots.evaluate: values computed by hand, and sacreBLEU when installed."""

import math

import pytest

from tinyroots.metrics import (accuracy, bleu_stats, confusion_matrix, corpus_bleu,
                                f1_per_class, macro_f1, perplexity, sentence_bleu,
                                tokenize_13a)


def test_accuracy_and_macro_f1_by_hand():
    y_true = ["a", "a", "b", "c"]
    y_pred = ["a", "b", "b", "b"]
    assert accuracy(y_true, y_pred) == 0.5
    per = f1_per_class(y_true, y_pred)
    # a: P 1/1, R 1/2 -> F1 2/3; b: P 1/3, R 1/1 -> F1 1/2; c: never predicted -> 0
    assert per["a"] == pytest.approx((1.0, 0.5, 2 / 3))
    assert per["b"] == pytest.approx((1 / 3, 1.0, 0.5))
    assert per["c"] == (0.0, 0.0, 0.0)
    assert macro_f1(y_true, y_pred) == pytest.approx((2 / 3 + 1 / 2 + 0) / 3)
    assert macro_f1(y_true, y_true) == 1.0
    assert confusion_matrix(y_true, y_pred, ["a", "b", "c"]).tolist() == [[1, 1, 0],
                                                                          [0, 1, 0],
                                                                          [0, 1, 0]]
    with pytest.raises(ValueError, match="2 labels but 1"):
        accuracy([1, 2], [1])


def test_perplexity():
    assert perplexity(math.log(7.0)) == pytest.approx(7.0)
    assert perplexity(1e6) == math.inf


def test_13a_tokenizer():
    assert tokenize_13a("Hello, world! It costs $3.50.") == "Hello , world ! It costs $ 3.50 ."
    assert tokenize_13a("pages 10-12 (see \"notes\")") == 'pages 10 - 12 ( see " notes " )'
    assert tokenize_13a("don't  stop") == "don't stop"          # the apostrophe stays
    assert tokenize_13a("a &amp; b") == "a & b"


def test_bleu_by_hand():
    # the cat sat on the mat / the cat sat on a mat: clipped matches 5/6, 3/5, 2/4, 1/3,
    # equal lengths (no brevity penalty): BLEU = 100 * (5/6 * 3/5 * 2/4 * 1/3) ** (1/4)
    m, t, hl, rl = bleu_stats("the cat sat on the mat", "the cat sat on a mat")
    assert (m, t, hl, rl) == ([5, 3, 2, 1], [6, 5, 4, 3], 6, 6)
    expected = 100 * (5 / 6 * 3 / 5 * 2 / 4 * 1 / 3) ** 0.25          # 53.728...
    assert corpus_bleu(["the cat sat on the mat"], ["the cat sat on a mat"]) == \
        pytest.approx(expected, rel=1e-12)

    # "exp" smoothing: a b c d / a b x d e: 3/4, 1/3, then 0/2 -> 100/(2*2), 0/1 -> 100/(4*1);
    # brevity penalty exp(1 - 5/4)
    expected = (75 * 100 / 3 * 25 * 25) ** 0.25 * math.exp(1 - 5 / 4)   # 27.53...
    assert corpus_bleu(["a b c d"], ["a b x d e"]) == pytest.approx(expected, rel=1e-12)
    assert corpus_bleu(["a b c d"], ["a b x d e"], smooth="none") == 0.0

    # too short for 3-grams: corpus BLEU 0; sentence BLEU uses the orders present
    assert corpus_bleu(["the cat"], ["the cat sat on the mat"]) == 0.0
    assert sentence_bleu("the cat", "the cat sat on the mat") == \
        pytest.approx(100 * math.exp(1 - 6 / 2), rel=1e-12)
    assert corpus_bleu(["x y z w"], ["a b c d"]) == 0.0
    assert corpus_bleu(["Le chat dort."], ["Le chat dort."]) == pytest.approx(100.0)


def test_corpus_bleu_sums_statistics_over_sentences():
    hyps = ["the cat sat on the mat", "a b c d"]
    refs = ["the cat sat on a mat", "a b x d e"]
    # 1-grams (5+3)/(6+4), 2-grams (3+1)/(5+3), 3-grams (2+0)/(4+2), 4-grams (1+0)/(3+1);
    # lengths 10 vs 11
    p = [8 / 10, 4 / 8, 2 / 6, 1 / 4]
    expected = 100 * math.prod(p) ** 0.25 * math.exp(1 - 11 / 10)
    assert corpus_bleu(hyps, refs) == pytest.approx(expected, rel=1e-12)


def test_bleu_agrees_with_sacrebleu():
    sacrebleu = pytest.importorskip("sacrebleu")
    hyps = ["Le chat mange la pomme rouge.", "Il ne voit pas de chien.",
            "Nous achetons des fleurs bleues le matin.", "Tu fermes un livre ce soir!",
            "Les enfants, 3 ou 4, regardent (souvent) le cheval.", "oui"]
    refs = ["Le chat mange la pomme rouge.", "Il ne voit pas le chien.",
            "Nous achetons de jolies fleurs le matin.", "Tu fermes le livre ce soir.",
            "Les 3 enfants regardent souvent le cheval.", "non merci"]
    ours = corpus_bleu(hyps, refs)
    theirs = sacrebleu.corpus_bleu(hyps, [refs]).score
    assert ours == pytest.approx(theirs, abs=1e-9)
    for h, r in zip(hyps, refs):
        assert sentence_bleu(h, r) == pytest.approx(sacrebleu.sentence_bleu(h, [r]).score,
                                                    abs=1e-9)
