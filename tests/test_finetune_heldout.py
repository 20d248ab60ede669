"""finetune --test: held-out files scored after training, beside the validation metrics."""

import io
import json

import pytest

from tinyroots.finetune import DataError, evaluate_checkpoint, finetune, read_examples
from tinyroots.finetune.sft import reply_intent, word_f1

from test_finetune import WORDS, cfg, make_pretrained, make_text, quiet, write_jsonl

pytestmark = pytest.mark.usefixtures("one_thread")  # tests/conftest.py

ANSWERS = {"fruit": "your fruit is near the dog", "tool": "the tool saw a cat today"}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    run = tmp_path_factory.mktemp("pretrained_run")
    make_pretrained(run / "best")
    return str(run)


# ---------------------------------------------------------------------------------------------
# which intent a reply answers


def test_word_f1_counts_shared_words():
    assert word_f1("I checked #123: it left.", "i checked 123 it left") == 1.0
    assert word_f1("a b", "c d") == 0.0
    # 2 of 4 words shared each way: precision = recall = 0.5
    assert word_f1("a b c d", "a b e f") == pytest.approx(0.5)


def test_reply_intent_takes_the_closest_answer_and_refuses_nonsense_and_ties():
    answers = {"track": ["I checked #12345: it left our warehouse and arrives in 3 days.",
                         "I checked your order: it left our warehouse and arrives in 2 days."],
               "cancel": ["I can cancel #555 as long as it has not shipped."],
               "address": ["I can change the address while #555 has not shipped."]}
    # other details (an order number, a day count) than any reference: still its intent
    assert reply_intent("I checked #99999: it left our warehouse and arrives in 5 days.",
                        answers) == "track"
    assert reply_intent("I can cancel #777 as long as it has not shipped.", answers) == "cancel"
    assert reply_intent("You doccurseds. ANIEEEEEEEEDWARD:LEONTES:", answers) is None
    assert reply_intent("", answers) is None
    # as close to two answers: no intent
    assert reply_intent("I can not shipped", {"x": ["I can"], "y": ["not shipped"]}) \
        is None


# ---------------------------------------------------------------------------------------------
# classify


@pytest.fixture(scope="module")
def classify_files(tmp_path_factory):
    import numpy as np
    d = tmp_path_factory.mktemp("heldout_classify")
    rng = np.random.default_rng(3)
    labels = sorted(WORDS)

    def rows(n):
        return [{"text": make_text(rng, labels[i % 3]), "label": labels[i % 3]} for i in range(n)]
    return (write_jsonl(d / "train.jsonl", rows(240)), write_jsonl(d / "val.jsonl", rows(30)),
            write_jsonl(d / "para.jsonl", rows(45)))


def test_classify_test_file_is_scored_like_evaluate_scores_it(pretrained, classify_files,
                                                              tmp_path):
    train, val, para = classify_files
    run = finetune(cfg("classify", pretrained, (train, val), tmp_path, learning_rate=3e-3,
                       max_steps=40, test=para), out=quiet)
    test = run.metrics["test"]["para"]
    assert test["n"] == 45 and test["accuracy"] > 0.6
    with open(tmp_path / "eval.json") as f:
        assert json.load(f)["test"]["para"] == test
    buf = io.StringIO()
    assert evaluate_checkpoint(["--checkpoint", str(tmp_path), "--task", "classify",
                                "--data", para], out=buf) == 0
    scored = json.loads(buf.getvalue())
    assert scored["accuracy"] == pytest.approx(test["accuracy"], abs=1e-6)
    assert scored["f1"] == pytest.approx(test["f1"], abs=1e-6)


def test_a_missing_test_file_or_an_unseen_label_stops_the_run(pretrained, classify_files,
                                                              tmp_path):
    train, val, _ = classify_files
    with pytest.raises(DataError, match="nope.jsonl: data file not found"):
        finetune(cfg("classify", pretrained, (train, val), tmp_path / "a",
                     test="nope.jsonl"), out=quiet)
    bad = write_jsonl(tmp_path / "bad.jsonl", [{"text": "a dog", "label": "vehicle"}])
    with pytest.raises(DataError, match="bad.jsonl line 1: label 'vehicle' does not occur"):
        finetune(cfg("classify", pretrained, (train, val), tmp_path / "b", max_steps=1,
                     test=bad), out=quiet)


# ---------------------------------------------------------------------------------------------
# chat: is the greedy reply the right intent's answer?


@pytest.fixture(scope="module")
def chat_files(tmp_path_factory):
    d = tmp_path_factory.mktemp("heldout_chat")
    rows = [{"messages": [{"role": "user", "content": f"where is my {w}"},
                          {"role": "assistant", "content": ANSWERS[kind]}], "intent": kind}
            for kind in ANSWERS for w in WORDS[kind]]
    return (write_jsonl(d / "train.jsonl", rows), write_jsonl(d / "val.jsonl", rows[:4]),
            write_jsonl(d / "tagged.jsonl", rows[::2]))


def test_chat_lines_keep_their_intent(chat_files):
    examples, _ = read_examples(chat_files[2], "chat")
    assert [ex["intent"] for ex in examples] == ["fruit"] * 3 + ["tool"] * 3


def test_chat_intent_accuracy_is_one_when_learnt_and_zero_before(pretrained, chat_files,
                                                                 tmp_path):
    train, val, tagged = chat_files
    untrained = finetune(cfg("chat", pretrained, (train, val), tmp_path / "a", max_steps=1,
                             learning_rate=1e-9, test=tagged, max_new_tokens=12), out=quiet)
    assert untrained.metrics["test"]["tagged"]["intent_accuracy"] == 0.0
    run = finetune(cfg("chat", pretrained, (train, val), tmp_path / "b", max_steps=80,
                       learning_rate=1e-2, warmup_steps=5, test=tagged, max_new_tokens=12),
                   out=quiet)
    test = run.metrics["test"]["tagged"]
    assert test["intent_examples"] == 6 and test["n"] == 6
    assert test["intent_accuracy"] == 1.0, run.metrics["samples"]
    assert test["loss"] < untrained.metrics["test"]["tagged"]["loss"]


def test_lm_test_text_scores_like_the_validation_text(pretrained, tmp_path):
    text = write_jsonl(tmp_path / "t.jsonl", [{"text": "the cat is a chat . le chien mange ."}
                                              for _ in range(20)])
    run = finetune(cfg("lm", pretrained, (text, text), tmp_path / "r", max_steps=5,
                       batch_size=4, test=text), out=quiet)
    assert run.metrics["test"]["t"]["loss"] == pytest.approx(run.metrics["val_loss"], rel=1e-6)
